"""
A device that calls home over TLS, in either direction, for tests and demos.

L{TLSCallHomeDevice} dials the manager and then either

- C{"silent"}: waits as the TLS *server* (RFC 8071 §4: the manager sends
  the ClientHello), or
- C{"client-hello"}: sends a ClientHello itself, as TLS *client*, or
- C{"client-hello-stall"}: sends a ClientHello and then nothing at all (to
  test the manager's handshake timeout).

Inside TLS it runs whatever C{protocol_factory} builds (any
C{IProtocolFactory}, or a zero-argument callable returning a protocol);
by default a L{NetconfServerProtocol}, so the device speaks NETCONF and
sends its <hello> first.  The RESTCONF simulator reuses the dialling and
TLS part by passing its own HTTP server factory (and C{alpn=["http/1.1"]}).

L{HandoffListener} is the stand-in for the one-port demultiplexer in tests:
it listens, labels every connection with a fixed kind, and hands it to a
handler exactly as the demultiplexer does (C{makeConnection}, then the
bytes already read, then everything else).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from callhome_mux.connection import ClassifiedConnection, ConnectionKind, next_connection_id
from callhome_mux.tls.context import ConnectionCreator

DIRECTIONS = ("silent", "client-hello", "client-hello-stall")

ProtocolSource = Union[IProtocolFactory, Callable[[], protocol.Protocol]]


class TLSCallHomeDevice:
    """
    @param certificate_pem: the device's certificate chain (leaf first), PEM.
    @param key_pem: its private key, PEM.
    @param trust_anchors: CA certificates (C{cryptography}) the manager's
        certificate must chain to; empty: accept any manager certificate.
    @param alpn: ALPN ids to offer (as client) or accept (as server).
    @param present_certificate: C{False}: as TLS client, show no certificate.
    @param resume_sessions: as TLS client, offer the session of the previous
        call home (a device with a TLS session cache).
    """

    def __init__(
        self,
        certificate_pem: bytes,
        key_pem: bytes,
        trust_anchors: Sequence[x509.Certificate] = (),
        protocol_factory: Optional[ProtocolSource] = None,
        alpn: Sequence[str] = (),
        present_certificate: bool = True,
        max_version: Optional[str] = None,
        resume_sessions: bool = False,
    ):
        self.certificate_pem = certificate_pem
        self.key_pem = key_pem
        self.trust_anchors = tuple(trust_anchors)
        self.protocol_factory = protocol_factory
        self.alpn = [name.encode("ascii") for name in alpn]
        self.present_certificate = present_certificate
        self.max_version = max_version
        #: As TLS client, offer the session of the previous call home (as
        #: devices with a TLS session cache do).
        self.resume_sessions = resume_sessions
        self.last_session: Optional[SSL.Session] = None
        self._client_context: Optional[SSL.Context] = None
        #: The protocols run inside TLS, one per call home, in order.
        self.protocols: List[protocol.Protocol] = []
        #: Open connections (TLS wrappers or stalled raw ones) -> Deferred fired when lost.
        self._open: Dict[protocol.Protocol, defer.Deferred] = {}

    # -- calling home ----------------------------------------------------

    def callHome(self, reactor, host: str, port: int, direction: str = "silent") -> defer.Deferred:
        """Dial C{host:port}; fires with the connected (TLS or raw) protocol once TCP is up."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        endpoint = TCP4ClientEndpoint(reactor, host, port)
        if direction == "client-hello-stall":
            hello = self.client_hello()
            return endpoint.connect(protocol.Factory.forProtocol(lambda: _StalledClientHello(self, hello)))
        is_client = direction == "client-hello"
        if is_client and self.resume_sessions:
            if self._client_context is None:
                self._client_context = self.context(True)
            creator = _ResumingCreator(self, self._client_context)
        else:
            creator = ConnectionCreator(self.context(is_client))
        return endpoint.connect(_TrackingTLSFactory(self, creator, is_client, _Inner(self)))

    def whenLost(self, connection) -> defer.Deferred:
        """Fires when C{connection} (what L{callHome} gave) has closed."""
        lost = self._open.get(connection)
        if lost is None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        lost.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

    def disconnect(self) -> defer.Deferred:
        """Abort every open connection; fires once all are closed (test clean-up)."""
        waiting = []
        for connection in list(self._open):
            waiting.append(self.whenLost(connection))
            connection.transport.abortConnection()
        return defer.gatherResults(waiting)

    def _opened(self, connection) -> None:
        self._open[connection] = defer.Deferred()

    def _closed(self, connection) -> None:
        lost = self._open.pop(connection, None)
        if lost is not None:
            lost.callback(None)

    def client_hello(self) -> bytes:
        """The bytes of a ClientHello this device would send."""
        connection = SSL.Connection(self.context(True), None)
        connection.set_connect_state()
        try:
            connection.do_handshake()
        except SSL.WantReadError:
            pass
        return connection.bio_read(65536)

    # -- TLS configuration -----------------------------------------------

    def context(self, is_client: bool) -> SSL.Context:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.max_version == "1.2":
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
        if not is_client or self.present_certificate:
            certificates = x509.load_pem_x509_certificates(self.certificate_pem)
            key = serialization.load_pem_private_key(self.key_pem, None)
            context.use_certificate(certificates[0])
            for extra in certificates[1:]:
                context.add_extra_chain_cert(extra)
            context.use_privatekey(key)
        store = context.get_cert_store()
        for anchor in self.trust_anchors:
            store.add_cert(crypto.X509.from_cryptography(anchor))
        check_manager = bool(self.trust_anchors)
        context.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            lambda conn, cert, errno, depth, ok: bool(ok) or not check_manager,
        )
        if self.alpn:
            if is_client:
                context.set_alpn_protos(self.alpn)
            else:
                ours = self.alpn
                context.set_alpn_select_callback(
                    lambda conn, offered: next((p for p in ours if p in offered), SSL.NO_OVERLAPPING_PROTOCOLS)
                )
        return context

    def build_inner(self) -> protocol.Protocol:
        source = self.protocol_factory
        if source is None:
            from callhome_mux.testing.netconf_device import NetconfServerProtocol

            built = NetconfServerProtocol()
        elif IProtocolFactory.providedBy(source):
            built = source.buildProtocol(None)
        else:
            built = source()
        self.protocols.append(built)
        return built


class _TrackingTLSFactory(TLSMemoryBIOFactory):
    def __init__(self, device: TLSCallHomeDevice, creator, is_client: bool, inner):
        super().__init__(creator, is_client, inner)
        self.device = device
        self.is_client = is_client

    def registerProtocol(self, p):
        super().registerProtocol(p)
        self.device._opened(p)

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        if self.device.resume_sessions and self.is_client:
            session = p.getHandle().get_session()
            if session is not None:
                self.device.last_session = session
        self.device._closed(p)


class _ResumingCreator(ConnectionCreator):
    """A TLS client connection that offers the device's last session."""

    def __init__(self, device: TLSCallHomeDevice, context: SSL.Context):
        super().__init__(context)
        self.device = device

    def clientConnectionForTLS(self, protocol) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self.device.last_session is not None:
            connection.set_session(self.device.last_session)
        return connection


class _Inner(protocol.Factory):
    def __init__(self, device: TLSCallHomeDevice):
        self.device = device

    def buildProtocol(self, addr):
        return self.device.build_inner()


class _StalledClientHello(protocol.Protocol):
    """Sends a ClientHello, then ignores everything: a device stuck mid-handshake."""

    def __init__(self, device: TLSCallHomeDevice, hello: bytes):
        self.device = device
        self.hello = hello
        self.received = b""

    def connectionMade(self):
        self.device._opened(self)
        self.transport.write(self.hello)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.device._closed(self)


# -- the manager side's stand-in demultiplexer -------------------------------


class HandoffListener(protocol.Factory):
    """
    Label each accepted connection C{kind} and hand it to C{handler}.

    For C{TLS_CLIENT_HELLO} the handoff waits for the first bytes (as the
    real demultiplexer does) and passes them as C{initial_bytes}.
    C{details} is copied into every connection's C{details} (e.g.
    C{{"protocol": "restconf"}} to play a pinned listener).
    """

    def __init__(self, handler, kind: ConnectionKind, details: Optional[dict] = None):
        self.handler = handler
        self.kind = kind
        self.details = dict(details or {})
        self.handoffs: List["_Handoff"] = []

    def disconnect(self) -> defer.Deferred:
        """Abort every connection handed off; fires once all are closed (test clean-up)."""
        waiting = []
        for handoff in self.handoffs:
            if not handoff.lost.called:
                lost = defer.Deferred()
                handoff.lost.addBoth(lambda result, d=lost: (d.callback(None), result)[1])
                waiting.append(lost)
                handoff.transport.abortConnection()
        return defer.gatherResults(waiting)

    def buildProtocol(self, addr):
        handoff = _Handoff(self)
        self.handoffs.append(handoff)
        return handoff


class _Handoff(protocol.Protocol):
    def __init__(self, listener: HandoffListener):
        self.listener = listener
        self.next: Optional[protocol.Protocol] = None
        self.lost = defer.Deferred()

    def connectionMade(self):
        if self.listener.kind is ConnectionKind.TLS_SILENT:
            self._hand_over(b"")

    def dataReceived(self, data):
        if self.next is None:
            self._hand_over(data)
        else:
            self.next.dataReceived(data)

    def _hand_over(self, initial: bytes):
        connection = ClassifiedConnection(
            connection_id=next_connection_id(),
            kind=self.listener.kind,
            transport=self.transport,
            peer=self.transport.getPeer(),
            initial_bytes=initial,
            listener="test",
            details=dict(self.listener.details),
        )
        self.next = self.listener.handler.protocolFor(connection)
        if self.next is None:
            self.transport.loseConnection()
            return
        self.next.makeConnection(self.transport)
        if initial:
            self.next.dataReceived(initial)

    def connectionLost(self, reason=None):
        if self.next is not None:
            self.next.connectionLost(reason)
        self.lost.callback(None)
