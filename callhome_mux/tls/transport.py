"""
Twisted's TLS transport, made to give back the memory its BIOs keep.

C{TLSMemoryBIOProtocol} (here its buffering subclass, what
C{TLSMemoryBIOFactory} builds) runs OpenSSL over two pyOpenSSL memory BIOs:
every TCP read is written into one, every record OpenSSL produces is read
out of the other.  A memory BIO never shrinks: its buffer keeps the largest
size it ever held (plus a third), for as long as the connection lives.
After the handshake flights and a device's 8 KB NETCONF <hello>, which
arrives in one TCP read, that is ~12 KiB per idle session; after one 64 KiB
read (a large RPC reply), ~85 KiB.

L{CallHomeTLSTransport} swaps such a BIO for a fresh, empty one once it
has been drained: after the first read and write that follow the handshake
(the handshake flights grew both), and after a read or write of at least
L{RENEW_ABOVE} bytes.  pyOpenSSL has no API for this (it would need
a way to release a C{Connection}'s BIO buffers, or OpenSSL a memory BIO
that frees its buffer when drained), so this uses cryptography's OpenSSL
bindings and pyOpenSSL's private BIO attributes; L{bios_renewable} tells
whether they are there, and without them nothing is swapped.

One L{TLSTransportFactory} per TLS role serves every connection (Twisted's
own factory would be built per connection, as its C{buildProtocol} asks a
wrapped factory for the protocol).  L{CallHomeTLSTransport.makeConnection}
also skips a loop of Twisted's whose result is overwritten at once (Twisted
would need to drop that loop from C{TLSMemoryBIOProtocol.makeConnection}
when it connects the wrapped protocol).
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import directlyProvides, providedBy

try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _NEEDED = ("BIO_new", "BIO_s_mem", "BIO_get_mem_data", "SSL_set_bio")
    _BINDINGS = all(hasattr(_lib, name) for name in _NEEDED)
except ImportError:  # pragma: no cover - a pyOpenSSL without the private module
    _BINDINGS = False

#: A BIO that held at least this many bytes is renewed once drained.
RENEW_ABOVE = 4096


def bios_renewable(connection: SSL.Connection) -> bool:
    """Can L{CallHomeTLSTransport} renew the memory BIOs of C{connection}?"""
    return _BINDINGS and getattr(connection, "_into_ssl", None) is not None and getattr(connection, "_ssl", None) is not None


class CallHomeTLSTransport(BufferingTLSTransport):
    """C{BufferingTLSTransport} whose drained memory BIOs are renewed (see the module docstring)."""

    def __init__(self, factory, wrappedProtocol):
        super().__init__(factory, wrappedProtocol)
        # Every attribute the handshake and BIO renewal set, set from the
        # start: CPython 3.11 stops adding keys to a class's shared instance
        # keys once ~30 instances exist, and in a storm the first handshake
        # ends after hundreds of connections began; an attribute first set
        # then gives each transport a dict of its own (~0.8 KiB per session).
        self._handshakeDone = False
        self._into_grown = self._from_grown = self._renewable = False
        self._into_after_handshake = self._from_after_handshake = False
        #: How many times a BIO was renewed (tests and curiosity).
        self.renewed = 0

    def makeConnection(self, transport):
        if not self._connectWrapped:
            super().makeConnection(transport)
        else:
            # TLSMemoryBIOProtocol.makeConnection without its loop declaring
            # the transport's interfaces on this wrapper one at a time, each
            # replacing the last (~20 us per connection), and with
            # ProtocolWrapper.makeConnection's declaration of them all at
            # once (directlyProvides, ~8 us) taken from a cache.
            self._tlsConnection = self.factory._creatorCallable(self)
            self._appSendBuffer = []
            _declare_like(self, transport)
            Protocol.makeConnection(self, transport)
            self.factory.registerProtocol(self)
            self.wrappedProtocol.makeConnection(self)
            self._checkHandshakeStatus()
        self._renewable = bios_renewable(self._tlsConnection)

    def _checkHandshakeStatus(self):
        finished_before = self._handshakeDone
        super()._checkHandshakeStatus()
        if self._handshakeDone and not finished_before:
            # Both BIOs carried the handshake flights.  They are renewed
            # after the first read and the first write that follow (a
            # NETCONF <hello> each way, which would grow a fresh BIO again
            # at once): one renewal each instead of two.
            self._into_after_handshake = self._from_after_handshake = True

    def dataReceived(self, data):
        if len(data) >= RENEW_ABOVE or self._into_after_handshake:
            self._into_grown = True
        super().dataReceived(data)
        if self._into_grown and self._handshakeDone and self._renewable:
            self._renew_into()

    def _write(self, data):
        if len(data) >= RENEW_ABOVE or self._from_after_handshake:
            self._from_grown = True
        super()._write(data)

    def _flushSendBIO(self):
        super()._flushSendBIO()
        if self._from_grown and self._handshakeDone and self._renewable:
            self._renew_from()

    def _renew_into(self) -> None:
        connection = self._tlsConnection
        if _lib.BIO_get_mem_data(connection._into_ssl, _ffi.NULL) != 0:
            return  # part of a record is still waiting for the rest: later
        fresh = _lib.BIO_new(_lib.BIO_s_mem())
        if fresh == _ffi.NULL:
            return
        # SSL_set_bio frees the old read BIO and hands the new one to the record layer.
        _lib.SSL_set_bio(connection._ssl, fresh, connection._from_ssl)
        connection._into_ssl = fresh
        self._into_grown = self._into_after_handshake = False
        self.renewed += 1

    def _renew_from(self) -> None:
        connection = self._tlsConnection
        if _lib.BIO_get_mem_data(connection._from_ssl, _ffi.NULL) != 0:
            return
        fresh = _lib.BIO_new(_lib.BIO_s_mem())
        if fresh == _ffi.NULL:
            return
        _lib.SSL_set_bio(connection._ssl, connection._into_ssl, fresh)
        connection._from_ssl = fresh
        self._from_grown = self._from_after_handshake = False
        self.renewed += 1


#: (wrapper class, the spec its transport provides) -> the declaration
#: C{directlyProvides(wrapper, providedBy(transport))} gave the first
#: wrapper: the same for every wrapper of that class on such a transport
#: (zope itself caches it by its arguments), at ~1.4 instead of ~8 us per
#: connection.  Bounded; one entry per wrapper class and kind of socket
#: transport in practice.
_DECLARATIONS: dict = {}


def _declare_like(wrapper, transport) -> None:
    """C{directlyProvides(wrapper, providedBy(transport))}, as C{ProtocolWrapper.makeConnection} does it."""
    spec = providedBy(transport)
    key = (type(wrapper), spec)
    declaration = _DECLARATIONS.get(key)
    if declaration is not None:
        wrapper.__provides__ = declaration
        return
    directlyProvides(wrapper, spec)
    if len(_DECLARATIONS) < 64:
        _DECLARATIONS[key] = wrapper.__provides__


class _Unused(Factory):
    """The wrapped factory of L{TLSTransportFactory}: protocols are handed in, never built."""

    def buildProtocol(self, addr):
        raise NotImplementedError("TLSTransportFactory.wrap takes the protocol to run")


class TLSTransportFactory(TLSMemoryBIOFactory):
    """One per TLS role and configuration: wraps protocols built elsewhere in L{CallHomeTLSTransport}."""

    protocol = CallHomeTLSTransport

    def __init__(self, creator, is_client: bool, clock=None):
        super().__init__(creator, is_client, _Unused(), clock)

    def wrap(self, protocol) -> CallHomeTLSTransport:
        """A TLS transport running C{protocol} inside; connect it with C{makeConnection(tcp_transport)}."""
        return self.protocol(self, protocol)

    def logPrefix(self):
        return "callhome-mux TLS"
