"""
PROXY protocol (v1 and v2) in front of the demultiplexer, for listeners
behind a trusted load balancer.

Built on C{twisted.protocols.haproxy}, with two changes that a call-home
port needs:

 - the header may arrive in pieces (Twisted's wrapper drops a connection
   whose first chunk is shorter than 8 or 16 bytes);
 - the wrapped protocol is only connected once the header has been read, so
   the demultiplexer's silence timer, its per-address limits and its events
   all see the device's address, not the load balancer's.

A listener not marked as behind a load balancer never reads a PROXY header:
this wrapper is only installed on those that are.
"""

from __future__ import annotations

import ipaddress

from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory

from callhome_mux.connection import format_address
from callhome_mux.events import EventBus

_V1_PREFIX = b"PROXY "
_V2_HEADER_MINIMUM = 16


class ProxyHeaderProtocol(HAProxyProtocolWrapper):
    def __init__(self, factory, wrappedProtocol):
        super().__init__(factory, wrappedProtocol)
        self._pending = b""
        self._timer = None
        self._connected_inner = False

    def makeConnection(self, transport):
        # ProtocolWrapper.makeConnection would connect the wrapped protocol
        # now; wait for the header instead.
        self.transport = transport
        self.connected = 1
        self.factory.registerProtocol(self)
        self._timer = self.factory.clock.callLater(self.factory.header_timeout, self._header_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self._connected_inner:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._proxyInfo is not None:
            return  # refused, closing
        self._pending += data
        parser = self._parser
        if parser is None:
            parser = self._choose_parser()
            if parser is None:
                return
        pending, self._pending = self._pending, b""
        try:
            info, remaining = parser.feed(pending)
        except (InvalidProxyHeader, ValueError):
            # Twisted's v1 parser raises ValueError for a non-numeric port.
            self._refuse("invalid PROXY protocol header")
            return
        if info is None:
            return
        if not _addresses_valid(info):
            self._refuse("invalid PROXY protocol header: address is not an IP address")
            return
        self._proxyInfo = info
        self._cancel_timer()
        self._connected_inner = True
        self.wrappedProtocol.makeConnection(self)
        if remaining and self._connected_inner:
            self.wrappedProtocol.dataReceived(remaining)

    def _choose_parser(self):
        """The parser for the pending bytes, C{None} to wait for more (or after refusing)."""
        pending = self._pending
        signature = V2Parser.PREFIX
        if pending[: len(signature)] == signature[: len(pending)]:  # still possibly v2
            if len(pending) < _V2_HEADER_MINIMUM:
                return None
            if pending[12] & 0xF0 != 0x20:
                self._refuse("PROXY v2 header with an unknown version")
                return None
            self._parser = V2Parser()
        elif pending[: len(_V1_PREFIX)] == _V1_PREFIX[: len(pending)]:  # still possibly v1
            if len(pending) < len(_V1_PREFIX):
                return None
            self._parser = V1Parser()
        else:
            self._refuse("no PROXY protocol header on a listener that requires one")
            return None
        return self._parser

    def _header_timeout(self) -> None:
        self._timer = None
        self._refuse(f"no complete PROXY protocol header within {self.factory.header_timeout} s")

    def _refuse(self, reason: str) -> None:
        self._cancel_timer()
        self._pending = b""
        self.factory.events.emit(
            "connection.rejected",
            peer=format_address(self.transport.getPeer()),
            listener=self.factory.listener_name,
            reason=reason,
        )
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason) -> None:
        self._cancel_timer()
        self.factory.unregisterProtocol(self)
        if self._connected_inner:
            self._connected_inner = False
            self.wrappedProtocol.connectionLost(reason)


def _addresses_valid(info) -> bool:
    """Twisted's v1 parser takes any word for a host; only IP addresses may pass."""
    for address in (info.source, info.destination):
        host = getattr(address, "host", None)
        if host is None:
            continue  # PROXY UNKNOWN / v2 LOCAL: no address given
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
    return True


class ProxyHeaderFactory(HAProxyWrappingFactory):
    protocol = ProxyHeaderProtocol
    noisy = False

    def __init__(self, wrappedFactory, events: EventBus, clock, header_timeout: float, listener_name: str = ""):
        super().__init__(wrappedFactory)
        self.events = events
        self.clock = clock
        self.header_timeout = header_timeout
        self.listener_name = listener_name
