"""
The TLS handler behind the real one-port demultiplexer.

The demultiplexer classifies (silence -> TLS_SILENT, a ClientHello ->
TLS_CLIENT_HELLO, with the bytes it read replayed into the TLS layer); the
handler takes over.  The demultiplexer's silence timer runs on a
L{task.Clock}, advanced once the connection is accepted.
"""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from callhome_mux.connection import ConnectionKind
from callhome_mux.demux.protocol import DemuxFactory
from callhome_mux.demux.settings import DemuxSettings
from callhome_mux.events import EventBus
from callhome_mux.inventory.model import CertToNameRule, Device, DeviceDirectory
from callhome_mux.netconf.settings import NetconfSettings
from callhome_mux.sessions import SessionRegistry
from callhome_mux.testing.certs import test_pki
from callhome_mux.testing.tls_device import TLSCallHomeDevice
from callhome_mux.tls.handler import TLSHandler
from callhome_mux.tls.settings import TLSSettings
from tests.test_tls_handler import EventLog, temp_dir


class DemuxToTLSTests(TestCase):
    def setUp(self):
        pki = test_pki()
        directory = temp_dir(self)
        paths = pki.write(directory)
        self.log = EventLog()
        self.events = EventBus()
        self.events.addObserver(self.log)
        self.registry = SessionRegistry(self.events)
        handler = TLSHandler(
            DeviceDirectory([Device("device1.example.net")]),
            self.registry,
            self.events,
            TLSSettings(
                certificate_file=paths["manager.crt"],
                private_key_file=paths["manager.key"],
                trust_anchor_files=(paths["ca.crt"],),
                cert_to_name=(CertToNameRule(pki.ca.fingerprint, "san-dns-name"),),
            ),
            NetconfSettings(),
            directory,
        )
        self.demux_clock = task.Clock()
        factory = DemuxFactory(
            DemuxSettings(),
            self.events,
            {ConnectionKind.TLS_SILENT: handler, ConnectionKind.TLS_CLIENT_HELLO: handler},
            clock=self.demux_clock,
            listener_name="test",
        )
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.device = TLSCallHomeDevice(pki.device.chain_pem, pki.device.key_pem, [pki.ca.certificate])
        self.addCleanup(self.device.disconnect)

    @defer.inlineCallbacks
    def call_home(self, direction):
        yield self.device.callHome(reactor, "127.0.0.1", self.port.getHost().port, direction)
        session = yield self.registry.whenConnected("device1.example.net")
        reply = yield session.rpc("<get><filter type='subtree'><system/></filter></get>")
        self.assertTrue(reply.tag.endswith("rpc-reply"))
        return session

    @defer.inlineCallbacks
    def test_client_hello_classified_and_replayed(self):
        session = yield self.call_home("client-hello")
        [classified] = self.log.named("connection.classified")
        self.assertEqual(classified["kind"], ConnectionKind.TLS_CLIENT_HELLO.value)
        self.assertEqual(session.details["tls_direction"], "client-hello")

    @defer.inlineCallbacks
    def test_silent_device(self):
        connecting = self.device.callHome(reactor, "127.0.0.1", self.port.getHost().port, "silent")
        yield self.log.when("connection.accepted")
        self.demux_clock.advance(DemuxSettings().silence_timeout)
        yield connecting
        session = yield self.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["tls_direction"], "silent")
        [classified] = self.log.named("connection.classified")
        self.assertEqual(classified["kind"], ConnectionKind.TLS_SILENT.value)
