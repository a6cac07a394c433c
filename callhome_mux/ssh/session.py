"""
The registry's view of a NETCONF-over-SSH session (L{ManagedSession}).

Applications get this from C{SessionRegistry.whenConnected(device_id)}; the
NETCONF operations are on C{.netconf} (attributes not found here are looked
up there too, so C{session.rpc(...)} works).
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import defer

from callhome_mux.sessions import ManagedSession


class SSHNetconfSession(ManagedSession):
    def __init__(self, device_id: str, details: Dict[str, Any], netconf: Any, owner):
        self.device_id = device_id
        self.details = details
        self.netconf = netconf
        self._owner = owner
        self._lost_waiters: List[defer.Deferred] = []
        self.lost_reason: str | None = None

    def close(self, reason: str = "closed") -> None:
        """Close the SSH connection (the device will call home again if it wants)."""
        self._owner.close(reason)

    def whenLost(self) -> defer.Deferred:
        """Fires with the reason (a string) once the session has ended."""
        if self.lost_reason is not None:
            return defer.succeed(self.lost_reason)
        waiter: defer.Deferred = defer.Deferred()
        self._lost_waiters.append(waiter)
        return waiter

    def lost(self, reason: str) -> None:
        """Called by the connection when it ends."""
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(reason)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not defined here: delegate to NETCONF.
        netconf = self.__dict__.get("netconf")
        if netconf is None:
            raise AttributeError(name)
        return getattr(netconf, name)

    def __repr__(self) -> str:
        return f"<SSHNetconfSession {self.device_id} {self.details.get('peer')}>"
