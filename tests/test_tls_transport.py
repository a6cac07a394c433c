"""
CallHomeTLSTransport: drained memory BIOs are renewed, and no byte is lost doing it.

In memory (the device is a bare pyOpenSSL server connection, the TCP
transport a StringTransport, the write coalescing on a task.Clock), then
once end to end over loopback with a large <hello> and a large reply.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.interfaces import ITransport
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase
from zope.interface import Interface, alsoProvides, providedBy

from callhome_mux.inventory.model import Device
from callhome_mux.testing.certs import test_pki
from callhome_mux.testing.fleet import FleetNetconfDevice, big_data, default_capabilities
from callhome_mux.netconf.session import hello_message
from callhome_mux.tls.context import ConnectionCreator, client_context
from callhome_mux.tls.identity import Identity
from callhome_mux.tls.settings import TLSSettings
from callhome_mux.tls.transport import RENEW_ABOVE, CallHomeTLSTransport, TLSTransportFactory, bios_renewable

from tests.test_tls_handler import SILENT, Manager, device_with, temp_dir


class IRicher(Interface):
    """An interface only some transports provide."""


class Recorder(protocol.Protocol):
    def __init__(self):
        self.received = b""
        self.handshakes = 0

    def dataReceived(self, data):
        self.received += data


class Pair:
    """Our TLS client transport and a device's pyOpenSSL server connection, wired through memory."""

    def __init__(self, case: TestCase, transport_factory=TLSTransportFactory, wire=None):
        pki = test_pki()
        paths = pki.write(temp_dir(case))
        settings = TLSSettings(certificate_file=paths["manager.crt"], private_key_file=paths["manager.key"])
        identity = Identity(paths["manager.crt"], paths["manager.key"], pki.manager.certificate)
        self.clock = task.Clock()
        creator = ConnectionCreator(client_context(settings, identity))
        if transport_factory is TLSTransportFactory:
            factory = TLSTransportFactory(creator, True, clock=self.clock)
            self.inner = Recorder()
            self.tls = factory.wrap(self.inner)
        else:
            self.inner = Recorder()
            factory = TLSMemoryBIOFactory(creator, True, protocol.Factory.forProtocol(lambda: self.inner), clock=self.clock)
            self.tls = factory.buildProtocol(None)
        self.wire = wire if wire is not None else StringTransport()
        device_context = SSL.Context(SSL.TLS_METHOD)
        device_context.use_certificate(pki.device.certificate)
        device_context.use_privatekey(pki.device.key)
        device_context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        self.device = SSL.Connection(device_context, None)
        self.device.set_accept_state()
        self.tls.makeConnection(self.wire)
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to say."""
        for _ in range(20):
            self.clock.advance(0)
            moved = False
            outgoing = self.wire.value()
            if outgoing:
                self.wire.clear()
                self.device.bio_write(outgoing)
                moved = True
            try:
                self.device.do_handshake()
            except SSL.WantReadError:
                pass
            while True:
                try:
                    chunk = self.device.bio_read(1 << 20)
                except SSL.WantReadError:
                    break
                self.tls.dataReceived(chunk)
                moved = True
            if not moved:
                return

    def device_sends(self, data: bytes) -> None:
        sent = 0
        while sent < len(data):
            sent += self.device.send(data[sent : sent + 16384])
        self.pump()

    def device_received(self) -> bytes:
        received = b""
        while True:
            try:
                received += self.device.recv(1 << 20)
            except SSL.WantReadError:
                return received

    def bios(self):
        connection = self.tls.getHandle()
        return connection._into_ssl, connection._from_ssl


class RenewalTests(TestCase):
    def test_bindings_available(self):
        """The bindings this relies on are there (else every other test here would prove nothing)."""
        pair = Pair(self)
        self.assertTrue(bios_renewable(pair.tls.getHandle()))
        self.assertIsInstance(pair.tls, CallHomeTLSTransport)

    def test_renewed_after_the_first_read_and_write_after_the_handshake(self):
        """
        Both BIOs carried the handshake flights; each is renewed once, after
        the first read and the first write that follow the handshake (not
        at the handshake and again after the <hello> each way).
        """
        pair = Pair(self)
        self.assertTrue(pair.tls._handshakeDone)
        # The read BIO at the read after the handshake (the device's session
        # tickets), the write BIO not yet.
        self.assertEqual(pair.tls.renewed, 1)
        pair.tls.write(b"x")
        pair.pump()
        self.assertEqual(pair.tls.renewed, 2)
        pair.tls.write(b"y")
        pair.device_sends(b"z")
        self.assertEqual(pair.tls.renewed, 2)
        self.assertEqual((pair.device_received(), pair.inner.received), (b"xy", b"z"))

    def test_handshake_and_renewal_add_no_attribute(self):
        """
        An idle transport has no attribute that its handshake or a BIO
        renewal set first: CPython 3.11 would give it a dict of its own
        when the first handshake ends after many connections began.
        """
        pair = Pair(self)
        pair.device_sends(b"x" * (2 * RENEW_ABOVE))
        pair.tls.write(b"y")
        pair.pump()
        self.assertGreater(pair.tls.renewed, 2)
        connecting = type(pair.tls)(pair.tls.factory, Recorder())
        connecting.makeConnection(StringTransport())
        self.assertFalse(connecting._handshakeDone)
        self.assertEqual(sorted(set(vars(pair.tls)) - set(vars(connecting))), [])

    def test_large_read_renews_the_read_bio_and_loses_nothing(self):
        pair = Pair(self)
        before_in, before_out = pair.bios()
        data = bytes(range(256)) * 200  # 51,200 bytes: several records
        pair.device_sends(data)
        self.assertEqual(pair.inner.received, data)
        after_in, after_out = pair.bios()
        self.assertNotEqual(after_in, before_in)
        self.assertEqual(after_out, before_out)

    def test_small_reads_keep_the_bio(self):
        pair = Pair(self)
        pair.device_sends(b"x" * 100)  # also brings the device's session tickets
        renewed, bios = pair.tls.renewed, pair.bios()
        for _ in range(5):
            pair.device_sends(b"y" * 100)
        self.assertEqual((pair.tls.renewed, pair.bios()), (renewed, bios))
        self.assertEqual(pair.inner.received, b"x" * 100 + b"y" * 500)

    def test_large_write_renews_the_write_bio_and_loses_nothing(self):
        pair = Pair(self)
        pair.device_sends(b"x")
        before_in, before_out = pair.bios()
        data = bytes(range(256)) * 300
        pair.tls.write(data)
        pair.pump()
        self.assertEqual(pair.device_received(), data)
        after_in, after_out = pair.bios()
        self.assertNotEqual(after_out, before_out)
        # And the renewed BIOs carry on in both directions.
        pair.tls.write(b"more")
        pair.device_sends(b"back")
        self.assertEqual(pair.device_received(), b"more")
        self.assertTrue(pair.inner.received.endswith(b"back"))

    def test_declares_what_twisteds_transport_declares(self):
        """makeConnection skips Twisted's per-interface loop; the wrapper provides the same interfaces."""
        ours, twisteds = Pair(self), Pair(self, transport_factory=TLSMemoryBIOFactory)
        self.assertEqual(set(providedBy(ours.tls)), set(providedBy(twisteds.tls)))
        self.assertTrue(ITransport.providedBy(ours.tls))
        self.assertIn(ours.tls, ours.tls.factory.protocols)

    def test_declaration_follows_each_transports_interfaces(self):
        """
        The wrapper's declaration is cached per transport specification:
        wrappers on like transports share it, a transport that provides
        more gets a wrapper that provides more.
        """
        first, second = Pair(self), Pair(self)
        self.assertIs(first.tls.__provides__, second.tls.__provides__)
        richer = StringTransport()
        alsoProvides(richer, IRicher)
        third = Pair(self, wire=richer)
        self.assertTrue(IRicher.providedBy(third.tls))
        self.assertFalse(IRicher.providedBy(first.tls))
        twisteds = Pair(self, transport_factory=TLSMemoryBIOFactory, wire=richer)
        self.assertEqual(set(providedBy(third.tls)), set(providedBy(twisteds.tls)))

    def test_twisted_keeps_its_bios(self):
        """
        What the subclass is for: Twisted's own transport keeps the BIO that
        held a large read (and a memory BIO keeps its largest buffer).  When
        this fails, Twisted or pyOpenSSL gives the memory back by itself and
        L{CallHomeTLSTransport} can go.
        """
        pair = Pair(self, transport_factory=TLSMemoryBIOFactory)
        before = pair.bios()
        pair.device_sends(b"z" * (4 * RENEW_ABOVE))
        self.assertEqual(pair.inner.received, b"z" * (4 * RENEW_ABOVE))
        self.assertEqual(pair.bios(), before)


class EndToEndTests(TestCase):
    @defer.inlineCallbacks
    def test_large_hello_and_reply_over_loopback(self):
        """A device with 7 + 64 capabilities (an 8 KB <hello>) and a 300 KB reply, over renewed BIOs."""
        manager = Manager(self, SILENT, [Device("device1.example.net")])
        hello = hello_message(default_capabilities(64), session_id=7)
        self.assertGreater(len(hello), RENEW_ABOVE)
        big = big_data(300_000)
        device = device_with(test_pki().device, protocol_factory=lambda: FleetNetconfDevice(hello, big_reply=big))
        yield manager.call_home(self, device, "silent")
        session = yield manager.registry.whenConnected("device1.example.net")
        transport = session.protocol.transport
        self.assertIsInstance(transport, CallHomeTLSTransport)
        # The session is up inside the read of the device's <hello>; ours
        # leaves on a later reactor turn (write coalescing).
        for _ in range(2):
            yield task.deferLater(reactor, 0, lambda: None)
        renewed = transport.renewed
        # Both BIOs, after the <hello>s that followed the handshake.
        self.assertGreaterEqual(renewed, 2)
        reply = yield session.rpc("<get/>")
        self.assertTrue(reply.tag.endswith("rpc-reply"))
        self.assertGreater(transport.renewed, renewed)
        request = "<edit-config><target><running/></target><config>" + "<x>1</x>" * 2000 + "</config></edit-config>"
        reply = yield session.rpc(request)
        self.assertTrue(reply.tag.endswith("rpc-reply"))
