"""
Where the SSH layer meets the NETCONF layer (C{callhome_mux.netconf}).

Kept in one place so that a change in the NETCONF client's API touches one
small module.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from twisted.internet.interfaces import IReactorThreads

from callhome_mux.netconf.session import NetconfClientProtocol


def start_client(transport, device_id: str, connection_id: str, details: Dict[str, Any], settings, clock, events) -> NetconfClientProtocol:
    """
    Start the NETCONF client protocol on C{transport} (the SSH channel).

    C{details} is shared with the protocol (and so with the registered
    session): the SSH facts already in it show in the session's details.

    @return: the protocol, to be fed the channel's bytes; once the hellos
        are exchanged, C{protocol.ready_session} is the L{NetconfSession}
        (C{protocol.whenReady()} fires with it).
    """
    protocol = NetconfClientProtocol(
        events=events,
        settings=settings,
        clock=clock,
        device_id=device_id,
        connection_id=connection_id,
        details=details,
        # Large replies are parsed in a worker thread once complete,
        # when the clock is a real reactor (tests' task.Clock: inline).
        parse_threads=clock if IReactorThreads.providedBy(clock) else None,
    )
    protocol.makeConnection(transport)
    return protocol


# The capabilities of devices of one model are one shared frozenset (see
# netconf.session); their sorted form is shared too, as an immutable tuple
# (no list of ~70 strings per session, no sort per session).
_SORTED: Dict[frozenset, Tuple[str, ...]] = {}
_SORTED_MAX = 1024


def _sorted_capabilities(capabilities) -> Tuple[str, ...]:
    if not isinstance(capabilities, frozenset):
        return tuple(sorted(capabilities))
    ordered = _SORTED.get(capabilities)
    if ordered is None:
        ordered = tuple(sorted(capabilities))
        if len(_SORTED) >= _SORTED_MAX:
            _SORTED.clear()
        _SORTED[capabilities] = ordered
    return ordered


def describe(netconf_session) -> Dict[str, Any]:
    """What the session details add about the NETCONF session (beyond what the protocol notes)."""
    return {"capabilities": _sorted_capabilities(getattr(netconf_session, "capabilities", ()) or ())}
