"""
The RESTCONF client behind the real TLS call-home handler, both TLS directions.

One end-to-end check of the contract between the TLS layer and ours: the
handler builds our protocol with C{restconf_protocol(device_id, events,
details=..., clock=...)}, installs it on the TLS connection and registers
the session once discovery is done.  The device is the simulator inside
L{TLSCallHomeDevice}; the demultiplexer is its test stand-in.
"""

import io
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from callhome_mux.connection import ConnectionKind
from callhome_mux.events import EventBus
from callhome_mux.inventory.model import CertToNameRule, Device, DeviceDirectory
from callhome_mux.netconf.settings import NetconfSettings
from callhome_mux.restconf.session import RestconfSession, restconf_protocol
from callhome_mux.sessions import SessionRegistry
from callhome_mux.testing.certs import test_pki
from callhome_mux.testing.cli import build_parser
from callhome_mux.testing.restconf_device import RestconfDevice, restconf_subcommand
from callhome_mux.testing.tls_device import HandoffListener
from callhome_mux.tls.handler import TLSHandler
from callhome_mux.tls.settings import TLSSettings


class RestconfOverTLSTests(TestCase):
    def manager(self, kind: ConnectionKind):
        """The TLS handler with our factory behind the demultiplexer's stand-in; returns (registry, port, paths)."""
        pki = test_pki()
        # Not self.mktemp(): under pytest that lands in the working tree.
        directory = tempfile.mkdtemp(prefix="callhome-restconf-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        paths = pki.write(directory)
        events = EventBus()
        self.seen = []
        events.addObserver(self.seen.append)
        registry = SessionRegistry(events)
        handler = TLSHandler(
            DeviceDirectory([Device("device1.example.net")]),
            registry,
            events,
            TLSSettings(
                certificate_file=paths["manager.crt"],
                private_key_file=paths["manager.key"],
                trust_anchor_files=(paths["ca.crt"],),
                crl_files=(paths["crl.pem"],),
                cert_to_name=(CertToNameRule(pki.ca.fingerprint, "san-dns-name"),),
            ),
            NetconfSettings(),
            directory,
            restconf_factory=restconf_protocol,
        )
        listener = HandoffListener(handler, kind)
        port = reactor.listenTCP(0, listener, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(listener.disconnect)
        return registry, port.getHost().port, paths

    @defer.inlineCallbacks
    def call_home(self, kind: ConnectionKind, direction: str):
        pki = test_pki()
        registry, port, _ = self.manager(kind)
        self.device = RestconfDevice()
        tls_device = self.device.over_tls(pki.device.chain_pem, pki.device.key_pem, [pki.ca.certificate])
        self.addCleanup(tls_device.disconnect)
        yield tls_device.callHome(reactor, "127.0.0.1", port, direction)
        session = yield registry.whenConnected("device1.example.net")
        return session

    @defer.inlineCallbacks
    def assertWorks(self, kind, direction):
        session = yield self.call_home(kind, direction)
        self.assertIsInstance(session, RestconfSession)
        self.assertEqual(session.details["transport"], "restconf")
        self.assertEqual(session.details["module_count"], 5)
        self.assertEqual(session.details["alpn"], "http/1.1")
        reply = yield session.get("example-system:system", fields="hostname")
        self.assertEqual(reply.data, {"example-system:system": {"hostname": "device-1"}})
        yield session.patch("example-system:system", {"example-system:system": {"hostname": "tls-1"}})
        self.assertEqual(self.device.data["example-system:system"]["hostname"], "tls-1")
        self.assertEqual(self.device.connection_count, 1)
        lost = session.whenLost()
        session.close("test over")
        yield lost
        names = [e["event"] for e in self.seen]
        self.assertIn("restconf.session.ready", names)
        self.assertIn("session.up", names)

    def test_silent_device(self):
        """RFC 8071 §4: the device is the TLS server; RESTCONF runs over our TLS client side."""
        return self.assertWorks(ConnectionKind.TLS_SILENT, "silent")

    def test_client_hello_device(self):
        return self.assertWorks(ConnectionKind.TLS_CLIENT_HELLO, "client-hello")

    @defer.inlineCallbacks
    def test_command_line_device(self):
        """C{callhome-mux-device restconf} with the test PKI's files calls home over TLS."""
        registry, port, paths = self.manager(ConnectionKind.TLS_SILENT)
        options = build_parser([restconf_subcommand]).parse_args([
            "restconf", "--connect", f"127.0.0.1:{port}",
            "--certificate", paths["device.crt"], "--key", paths["device.key"], "--trust", paths["ca.crt"],
        ])
        out = io.StringIO()
        running = options.run(reactor, options, out)
        session = yield registry.whenConnected("device1.example.net")
        reply = yield session.get("example-system:system/hostname")
        self.assertEqual(reply.data, {"example-system:hostname": "device-1"})
        session.close("done")
        self.assertEqual((yield running), 0)
        self.assertIn("disconnected after 3 requests", out.getvalue())
