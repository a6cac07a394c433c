"""
Per-device connection state, and how other layers' events map onto it.

The SSH, TLS, NETCONF and RESTCONF layers do not call the inventory: they
emit events, and L{EVENT_STATES} says which events move a device to which
state.  Event names of other layers may still change; this table is the
one place to follow them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional, Tuple

NEVER_SEEN = "never-seen"
CONNECTING = "connecting"
AUTHENTICATING = "authenticating"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
FAILED = "failed"
STATES = (NEVER_SEEN, CONNECTING, AUTHENTICATING, CONNECTED, DISCONNECTED, FAILED)

# Why a device is in FAILED.
NOT_ALLOWED = "not-allowed"
HOST_KEY_MISMATCH = "host-key-mismatch"
CERTIFICATE_REFUSED = "certificate-refused"
AUTHENTICATION_FAILED = "authentication-failed"
PROTOCOL_ERROR = "protocol-error"
TIMEOUT = "timeout"
FAILURE_REASONS = (NOT_ALLOWED, HOST_KEY_MISMATCH, CERTIFICATE_REFUSED, AUTHENTICATION_FAILED, PROTOCOL_ERROR, TIMEOUT)

#: event name -> (state, failure reason or None).  A failure also counts
#: towards throttling of the identity and the address; CONNECTED clears it.
EVENT_STATES: Dict[str, Tuple[str, Optional[str]]] = {
    "connection.identified": (CONNECTING, None),
    "ssh.hostkey.accepted": (AUTHENTICATING, None),
    "ssh.auth.succeeded": (AUTHENTICATING, None),
    "tls.certificate.accepted": (AUTHENTICATING, None),
    "session.up": (CONNECTED, None),
    "session.lost": (DISCONNECTED, None),
    "ssh.hostkey.unknown": (FAILED, NOT_ALLOWED),
    "ssh.device.refused": (FAILED, NOT_ALLOWED),
    "ssh.preamble.rejected": (FAILED, NOT_ALLOWED),
    "ssh.hostkey.mismatch": (FAILED, HOST_KEY_MISMATCH),
    "tls.certificate.refused": (FAILED, CERTIFICATE_REFUSED),
    "ssh.auth.failed": (FAILED, AUTHENTICATION_FAILED),
    "ssh.channel.failed": (FAILED, PROTOCOL_ERROR),
    "ssh.subsystem.refused": (FAILED, PROTOCOL_ERROR),
    "ssh.netconf.failed": (FAILED, PROTOCOL_ERROR),
    "tls.handshake.failed": (FAILED, PROTOCOL_ERROR),
    "tls.protocol.refused": (FAILED, PROTOCOL_ERROR),
    "netconf.hello.failed": (FAILED, PROTOCOL_ERROR),
    "restconf.discovery.failed": (FAILED, PROTOCOL_ERROR),
    "ssh.setup.timeout": (FAILED, TIMEOUT),
    "tls.handshake.timeout": (FAILED, TIMEOUT),
}

#: (event, its C{reason} field) -> a more exact failure reason.
REASON_REFINEMENTS: Dict[Tuple[str, str], str] = {
    ("tls.certificate.refused", "unknown-device"): NOT_ALLOWED,
    ("tls.certificate.refused", "device-disabled"): NOT_ALLOWED,
}

#: Failures reported before the caller proved its identity: conch checks
#: the host key (verifyHostKey) before it checks the key-exchange
#: signature, so the fingerprint or device in these events may be a
#: stranger replaying a real device's public key.  They count against the
#: address only, and reach the device's history but never its state, so
#: nobody can get a real device throttled or marked failed by naming it.
UNPROVEN_EVENTS = frozenset({"ssh.hostkey.unknown", "ssh.hostkey.mismatch", "ssh.device.refused", "ssh.preamble.rejected"})

#: Name endings understood when a name is not in the table (so a new
#: event of a known kind still counts), tried in order.
SUFFIX_STATES: Tuple[Tuple[str, Tuple[str, Optional[str]]], ...] = (
    (".mismatch", (FAILED, HOST_KEY_MISMATCH)),
    (".timeout", (FAILED, TIMEOUT)),
    ("protocol.error", (FAILED, PROTOCOL_ERROR)),
)

#: Events kept in a device's history even though they change no state.
HISTORY_ONLY = frozenset({"session.replaced", "ssh.keepalive.lost", "tls.protocol.decided"})


def state_for_event(name: str, reason: Any = None) -> Optional[Tuple[str, Optional[str]]]:
    """(state, failure reason) for event C{name} (with its C{reason} field), or C{None}."""
    if name in REFINED_EVENTS:
        return _state_for_event(name, reason)
    # Every event goes through here: the answer for a name is found once
    # (bounded: event names are few, but they come from other layers).
    found = _BY_NAME.get(name, _MISSING)
    if found is _MISSING:
        found = _state_for_event(name, None)
        if len(_BY_NAME) < 4096:
            _BY_NAME[name] = found
    return found


#: Names whose C{reason} field may change the answer.
REFINED_EVENTS = frozenset(name for name, _ in REASON_REFINEMENTS)
_BY_NAME: Dict[str, Optional[Tuple[str, Optional[str]]]] = {}
_MISSING = object()


def _state_for_event(name: str, reason: Any) -> Optional[Tuple[str, Optional[str]]]:
    if name.startswith("inventory."):
        return None  # our own events: never feed them back
    found = EVENT_STATES.get(name)
    if found is not None:
        refined = REASON_REFINEMENTS.get((name, reason)) if isinstance(reason, str) else None
        return (found[0], refined) if refined else found
    if name.startswith(("ssh.", "tls.", "netconf.", "restconf.", "connection.", "session.")):
        for suffix, result in SUFFIX_STATES:
            if name.endswith(suffix):
                if suffix == ".mismatch" and name.startswith("tls."):
                    return (FAILED, CERTIFICATE_REFUSED)
                return result
    return None


@dataclass(frozen=True)
class DeviceState:
    device_id: str
    state: str = NEVER_SEEN
    #: Failure reason (one of L{FAILURE_REASONS}) or what happened, in words.
    reason: Optional[str] = None
    #: When the device entered this state.
    since: Optional[float] = None
    last_seen: Optional[float] = None
    last_address: Optional[str] = None
    transport: Optional[str] = None
    #: What the session reported: negotiated algorithms, NETCONF
    #: capabilities, RESTCONF yang-library summary.
    details: Dict[str, Any] = field(default_factory=dict)

    def moved(self, state: str, reason: Optional[str], now: float, **changes: Any) -> "DeviceState":
        since = self.since if state == self.state and reason == self.reason else now
        # Not dataclasses.replace: it introspects the fields on every call,
        # and this runs for every state change.
        return new_state(
            self.device_id,
            state,
            reason,
            since,
            changes.get("last_seen", self.last_seen),
            changes.get("last_address", self.last_address),
            changes.get("transport", self.transport),
            changes.get("details", self.details),
        )

    def fields(self) -> Dict[str, Any]:
        return {
            "device_id": self.device_id,
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "last_seen": self.last_seen,
            "last_address": self.last_address,
            "transport": self.transport,
            "details": dict(self.details),
        }


_new = object.__new__
_set = object.__setattr__


def new_state(device_id: str, state: str, reason: Optional[str], since: Optional[float], last_seen: Optional[float],
              last_address: Optional[str], transport: Optional[str], details: Dict[str, Any]) -> DeviceState:
    """
    C{DeviceState(...)} with every field given, at half the cost: a frozen
    dataclass's C{__init__} sets each field through C{object.__setattr__};
    this sets the instance dict once.  The result is an ordinary
    L{DeviceState} (equal, frozen, same repr).
    """
    new = _new(DeviceState)
    _set(new, "__dict__", {
        "device_id": device_id, "state": state, "reason": reason, "since": since, "last_seen": last_seen,
        "last_address": last_address, "transport": transport, "details": details,
    })
    return new
