"""
TCP keepalive on the device's socket.

RFC 8071 C4 asks for a keepalive on call-home connections.  TLS heartbeats
(RFC 6520) would be the TLS-level answer, but current OpenSSL builds no
longer ship them, so liveness is checked twice over: TCP keepalive here
notices a dead path or peer host, and the session layer above (a NETCONF
RPC, a RESTCONF request) notices a device whose stack is up but whose
server is not.
"""

from __future__ import annotations

import socket

from callhome_mux.tls.settings import TLSSettings


#: The keepalive timings' TCP options this system has, with the setting
#: each takes its value from (Linux names; other systems keep their
#: defaults for what they lack).
_TCP_OPTIONS = tuple(
    (getattr(socket, option), setting)
    for option, setting in (
        ("TCP_KEEPIDLE", "keepalive_idle"),
        ("TCP_KEEPINTVL", "keepalive_interval"),
        ("TCP_KEEPCNT", "keepalive_count"),
    )
    if hasattr(socket, option)
)


def set_tcp_keepalive(transport, settings: TLSSettings) -> bool:
    """
    Turn on keepalive with our timings where C{transport} has a socket;
    return whether it did.  A transport without one (a test's, a PROXY
    wrapper's) is left alone.
    """
    if not settings.tcp_keepalive:
        return False
    sock = _socket_of(transport)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, setting in _TCP_OPTIONS:
            sock.setsockopt(socket.IPPROTO_TCP, option, getattr(settings, setting))
    except OSError:
        return False
    return True


def _socket_of(transport):
    # Wrappers (PROXY header readers, TLS) keep the real transport in .transport.
    for _ in range(4):
        if transport is None:
            return None
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None
