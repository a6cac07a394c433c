"""
Where the SSH layer meets the NETCONF layer (C{callhome_mux.netconf}).

Kept in one place so that a change in the NETCONF client's API touches one
small module.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from twisted.internet import defer


def start_client(transport, device_id: str, settings, clock, events) -> Tuple[Any, defer.Deferred]:
    """
    Start the NETCONF client protocol on C{transport} (the SSH channel).

    @return: the protocol (to be fed the channel's bytes) and a Deferred
        firing with the NETCONF session once the hellos are exchanged.
    """
    from callhome_mux.netconf.session import NetconfClientProtocol

    protocol = NetconfClientProtocol(settings=settings, clock=clock, events=events, device_id=device_id)
    protocol.makeConnection(transport)
    return protocol, protocol.whenReady()


def describe(netconf_session) -> Dict[str, Any]:
    """What the registry's session details show about the NETCONF session."""
    return {
        "session_id": getattr(netconf_session, "session_id", None),
        "capabilities": sorted(getattr(netconf_session, "server_capabilities", ()) or ()),
    }
