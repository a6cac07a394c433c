"""
The TLS call-home handler end to end over real loopback connections.

A L{TLSCallHomeDevice} dials a L{HandoffListener} (the demultiplexer's
stand-in) on 127.0.0.1; nothing sleeps: every step waits on an event or a
Deferred, and timers that matter run on a L{task.Clock}.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import tempfile
from typing import Any, Dict, List

from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from callhome_mux.connection import ConnectionKind
from callhome_mux.events import EventBus
from callhome_mux.inventory.model import CertToNameRule, Device, DeviceDirectory
from callhome_mux.netconf.settings import NetconfSettings
from callhome_mux.sessions import SessionRegistry
from callhome_mux.settings import ConfigError
from callhome_mux.testing.certs import test_pki
from callhome_mux.testing.tls_device import HandoffListener, TLSCallHomeDevice
from callhome_mux.tls.handler import TLSHandler
from callhome_mux.tls.settings import TLSSettings

SILENT = ConnectionKind.TLS_SILENT
CLIENT_HELLO = ConnectionKind.TLS_CLIENT_HELLO
DIRECTION = {SILENT: "silent", CLIENT_HELLO: "client-hello"}


class EventLog:
    """Collects events; C{when(name, **fields)} waits for one (already seen or still to come)."""

    def __init__(self):
        self.records: List[Dict[str, Any]] = []
        self._waiting: List[tuple] = []

    def __call__(self, record):
        self.records.append(record)
        for entry in list(self._waiting):
            name, fields, waiter = entry
            if _matches(record, name, fields):
                self._waiting.remove(entry)
                # Fired on the next reactor turn, not inside the emitter:
                # the code that emitted finishes its step first, as it
                # would for any real observer.
                reactor.callLater(0, waiter.callback, record)

    def when(self, name: str, **fields) -> defer.Deferred:
        for record in self.records:
            if _matches(record, name, fields):
                return defer.succeed(record)
        waiter = defer.Deferred()
        self._waiting.append((name, fields, waiter))
        return waiter

    def named(self, name: str) -> List[Dict[str, Any]]:
        return [record for record in self.records if record["event"] == name]


def _matches(record, name, fields) -> bool:
    return record["event"] == name and all(record.get(key) == value for key, value in fields.items())


class StandInRestconf(protocol.Protocol):
    """A RESTCONF client stand-in: its own session, ready at once; records what the device sent."""

    def __init__(self, device_id, events, details=None, clock=None):
        self.device_id = device_id
        self.details = dict(details or {}, transport="restconf")
        self.received = b""
        self._lost = defer.Deferred()

    def whenReady(self):
        return defer.succeed(self)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        if not self._lost.called:
            self._lost.callback("lost")

    def close(self, reason="closed"):
        self.transport.loseConnection()

    def whenLost(self):
        waiter = defer.Deferred()
        self._lost.addBoth(lambda result: (waiter.callback(result), result)[1])
        return waiter


class SilentServer(protocol.Protocol):
    """Inside TLS on the device: says nothing first, as an HTTP server would."""

    received = b""

    def dataReceived(self, data):
        self.received += data


class Manager:
    """The manager side of one test: handler, stand-in listener on 127.0.0.1, events, registry."""

    def __init__(self, case: TestCase, kind: ConnectionKind, devices=(), clock=None, listener_details=None, **settings):
        pki = test_pki()
        directory = temp_dir(case)
        self.paths = pki.write(directory)
        options = dict(
            certificate_file=self.paths["manager.crt"],
            private_key_file=self.paths["manager.key"],
            trust_anchor_files=(self.paths["ca.crt"],),
            crl_files=(self.paths["crl.pem"],),
            cert_to_name=(
                CertToNameRule(pki.ca.fingerprint, "san-dns-name"),
                CertToNameRule(pki.ca.fingerprint, "serial-number", priority=5),
            ),
        )
        options.update(settings)
        self.log = EventLog()
        self.events = EventBus()
        self.events.addObserver(self.log)
        self.registry = SessionRegistry(self.events)
        self.restconf = []
        self.handler = TLSHandler(
            DeviceDirectory(list(devices) or [Device("device1.example.net")]),
            self.registry,
            self.events,
            TLSSettings(**options),
            NetconfSettings(),
            directory,
            clock=clock,
            restconf_factory=self._restconf,
        )
        self.listener = HandoffListener(self.handler, kind, listener_details)
        self.port = reactor.listenTCP(0, self.listener, interface="127.0.0.1")
        case.addCleanup(self.port.stopListening)
        case.addCleanup(self.listener.disconnect)

    def _restconf(self, device_id, events, details=None, clock=None):
        built = StandInRestconf(device_id, events, details, clock)
        self.restconf.append(built)
        return built

    def call_home(self, case, device: TLSCallHomeDevice, direction: str) -> defer.Deferred:
        case.addCleanup(device.disconnect)
        return device.callHome(reactor, "127.0.0.1", self.port.getHost().port, direction)


def temp_dir(case: TestCase) -> str:
    """A fresh directory removed after the test (trial's mktemp would write under the cwd when pytest runs)."""
    directory = tempfile.mkdtemp(prefix="callhome-tls-test-")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def device_with(issued, **options) -> TLSCallHomeDevice:
    options.setdefault("trust_anchors", [test_pki().ca.certificate])
    return TLSCallHomeDevice(issued.chain_pem, issued.key_pem, **options)


class NetconfEndToEndTests(TestCase):
    @defer.inlineCallbacks
    def assertNetconfSession(self, kind, issued=None, device_id="device1.example.net", devices=()):
        manager = Manager(self, kind, devices)
        device = device_with(issued or test_pki().device)
        yield manager.call_home(self, device, DIRECTION[kind])
        session = yield manager.registry.whenConnected(device_id)
        self.assertEqual(session.details["transport"], "netconf-tls")
        self.assertEqual(session.details["tls_direction"], DIRECTION[kind])
        self.assertEqual(session.details["certificate_fingerprint"], (issued or test_pki().device).fingerprint)
        self.assertIn(session.details["tls_version"], ("TLSv1.2", "TLSv1.3"))
        reply = yield session.rpc("<get-config><source><running/></source></get-config>")
        self.assertTrue(reply.tag.endswith("rpc-reply"))
        decided = manager.log.named("tls.protocol.decided")[0]
        self.assertEqual((decided["protocol"], decided["decided_by"]), ("netconf", "spoke-first"))
        return (manager, session)

    def test_silent_device(self):
        """RFC 8071 §4: the device waits as TLS server; we send the ClientHello."""
        return self.assertNetconfSession(SILENT)

    @defer.inlineCallbacks
    def test_large_reply_parsed_in_the_worker(self):
        """A reply of stream_after bytes or more is parsed in the parse worker, as over SSH."""
        from callhome_mux.netconf import parse_stream
        from callhome_mux.testing.datastore import Datastore
        from callhome_mux.testing.netconf_device import NetconfServerFactory

        submitted = []

        class Recording(parse_stream.ParseWorker):
            def submit(self, function, *args):
                submitted.append(function)
                super().submit(function, *args)

        self.patch(parse_stream, "WORKER", Recording())
        running = '<top xmlns="urn:x">' + "".join(f"<item><name>n{i}</name></item>" for i in range(8000)) + "</top>"
        manager = Manager(self, SILENT)
        device = device_with(test_pki().device, protocol_factory=NetconfServerFactory(Datastore(running)))
        yield manager.call_home(self, device, DIRECTION[SILENT])
        session = yield manager.registry.whenConnected("device1.example.net")
        data = yield session.get_config("running")
        self.assertGreater(len(running), 2 * 64 * 1024)
        self.assertEqual(len(data.find("{urn:x}top")), 8000)
        self.assertEqual(len(submitted), 1)

    def test_client_hello_device(self):
        """The device sends a ClientHello; we are the TLS server."""
        return self.assertNetconfSession(CLIENT_HELLO)

    def test_chain_through_intermediate(self):
        """The device sends its sub-CA; the chain is built to the configured root."""
        pki = test_pki()
        return self.assertNetconfSession(
            CLIENT_HELLO, pki.device_via_intermediate, "device2.example.net", [Device("device2.example.net")]
        )

    def test_idevid_serial_number(self):
        """RFC 8071 C6: the IDevID subject serialNumber names the device."""
        serial = "PID:ER-1 SN:FOC12345678"
        return self.assertNetconfSession(SILENT, test_pki().idevid, serial, [Device(serial)])

    def test_pinned_self_signed(self):
        pki = test_pki()
        device = Device("pinned-router", tls_fingerprints=(pki.self_signed.fingerprint,))
        return self.assertNetconfSession(CLIENT_HELLO, pki.self_signed, "pinned-router", [device])

    def test_pinned_self_signed_silent(self):
        """The same as the device's TLS server: its self-signed certificate, pinned, is accepted."""
        pki = test_pki()
        device = Device("pinned-router", tls_fingerprints=(pki.self_signed.fingerprint,))
        return self.assertNetconfSession(SILENT, pki.self_signed, "pinned-router", [device])

    @defer.inlineCallbacks
    def test_running_session_keeps_only_what_it_needs(self):
        """
        Once the session runs, the call home lets go of the accepted
        connection's record and the verification outcome (thousands of idle
        sessions per process); events and the registration still name the
        connection and the device.
        """
        manager, session = yield self.assertNetconfSession(SILENT)
        callhome = session.protocol.transport.wrappedProtocol
        self.assertEqual((callhome.connection, callhome.identified, callhome._held), (None, None, None))
        self.assertEqual(session.device_id, "device1.example.net")
        started = manager.log.named("tls.handshake.started")[0]
        self.assertEqual(manager.log.named("tls.protocol.decided")[0]["connection_id"], started["connection_id"])
        self.assertEqual(session.details["connection_id"], started["connection_id"])

    @defer.inlineCallbacks
    def test_tls_1_2_device(self):
        manager = Manager(self, SILENT)
        yield manager.call_home(self, device_with(test_pki().device, max_version="1.2"), "silent")
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["tls_version"], "TLSv1.2")

    @defer.inlineCallbacks
    def test_device_offering_its_last_session(self):
        """
        A device that caches TLS sessions offers the last one when it calls
        home again: it gets a full handshake and its certificate is checked
        again (OpenSSL would otherwise fail the whole handshake: "session id
        context uninitialized").
        """
        manager = Manager(self, CLIENT_HELLO)
        device = device_with(test_pki().device, resume_sessions=True)
        first = yield manager.call_home(self, device, "client-hello")
        yield manager.registry.whenConnected("device1.example.net")
        # A clean TLS close: OpenSSL keeps a session resumable only then.
        first.loseConnection()
        yield device.whenLost(first)
        self.assertIsNotNone(device.last_session)
        outcome = defer.Deferred()

        def second_outcome(record):
            ended = record["event"] in ("tls.handshake.failed", "tls.certificate.refused")
            accepted_again = record["event"] == "tls.certificate.accepted" and len(manager.log.named(record["event"])) == 2
            if (ended or accepted_again) and not outcome.called:
                reactor.callLater(0, outcome.callback, record)

        manager.events.addObserver(second_outcome)
        yield manager.call_home(self, device, "client-hello")
        record = yield outcome
        self.assertEqual((record["event"], record.get("device_id")), ("tls.certificate.accepted", "device1.example.net"))

    @defer.inlineCallbacks
    def test_configured_groups(self):
        """tls.groups is what OpenSSL offers; the negotiated group is in the session details."""
        manager = Manager(self, SILENT, groups=("secp384r1",))
        yield manager.call_home(self, device_with(test_pki().device), "silent")
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["tls_group"], "secp384r1")

    @defer.inlineCallbacks
    def test_tcp_keepalive_on_socket(self):
        manager = Manager(self, SILENT, keepalive_idle=42, keepalive_interval=7, keepalive_count=3)
        yield manager.call_home(self, device_with(test_pki().device), "silent")
        yield manager.registry.whenConnected("device1.example.net")
        started = manager.log.named("tls.handshake.started")[0]
        self.assertTrue(started["tcp_keepalive"])
        sock = manager.listener.handoffs[0].transport.getHandle()
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 42)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 7)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 3)

    @defer.inlineCallbacks
    def test_unknown_device_policy(self):
        """The unknown-device decision is pluggable (the inventory's pending policy plugs in here)."""
        manager = Manager(self, CLIENT_HELLO, [Device("somebody")])
        candidates = []

        def admit(candidate):
            candidates.append(candidate)
            return Device(candidate.mapped_id, labels={"admitted": "by-policy"})

        manager.handler.unknown_device_policy = admit
        yield manager.call_home(self, device_with(test_pki().device), "client-hello")
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["matched_by"], "policy")
        self.assertEqual(candidates[0].fingerprint, test_pki().device.fingerprint)


class RefusalTests(TestCase):
    """Each refusal over the wire: a tls.certificate.refused event with reason, fingerprint, subject; the connection ends."""

    @defer.inlineCallbacks
    def assertRefused(self, kind, issued, reason, devices=(), **device_options):
        manager = Manager(self, kind, devices)
        device = device_with(issued, **device_options)
        connection = yield manager.call_home(self, device, DIRECTION[kind])
        refused = yield manager.log.when("tls.certificate.refused")
        self.assertEqual(refused["reason"], reason, refused["detail"])
        if device_options.get("present_certificate", True):
            self.assertEqual(refused["fingerprint"], issued.fingerprint)
            self.assertEqual(refused["subject"], issued.certificate.subject.rfc4514_string())
        self.assertEqual(refused["direction"], DIRECTION[kind])
        yield device.whenLost(connection)
        self.assertEqual(manager.registry.sessions(), [])
        self.assertEqual(manager.log.named("tls.protocol.decided"), [])

    def test_expired(self):
        return self.assertRefused(SILENT, test_pki().expired, "expired")

    @defer.inlineCallbacks
    def test_device_gate_turns_a_verified_device_away(self):
        """A known device whose calls keep failing (the inventory's back-off) is refused after verification."""
        manager = Manager(self, SILENT)
        asked = []

        def gate(device, peer):
            asked.append((device.id, peer.split(":")[0]))
            return "device device1.example.net failed 5 times; retry in 30s"

        manager.handler.device_gate = gate
        device = device_with(test_pki().device)
        connection = yield manager.call_home(self, device, "silent")
        throttled = yield manager.log.when("tls.device.throttled")
        self.assertEqual(throttled["device_id"], "device1.example.net")
        self.assertIn("retry in 30s", throttled["reason"])
        self.assertEqual(asked, [("device1.example.net", "127.0.0.1")])
        yield device.whenLost(connection)
        self.assertEqual(manager.log.named("tls.certificate.accepted"), [])
        self.assertEqual(manager.registry.sessions(), [])

    def test_not_yet_valid(self):
        return self.assertRefused(CLIENT_HELLO, test_pki().not_yet_valid, "not-yet-valid")

    def test_wrong_ca(self):
        return self.assertRefused(SILENT, test_pki().wrong_ca, "untrusted-chain")

    def test_self_signed(self):
        return self.assertRefused(CLIENT_HELLO, test_pki().self_signed, "untrusted-chain")

    def test_revoked(self):
        """RFC 8071 C5: a certificate on a configured CRL closes the connection."""
        return self.assertRefused(SILENT, test_pki().revoked, "revoked", [Device("device-revoked.example.net")])

    def test_unknown_device(self):
        return self.assertRefused(CLIENT_HELLO, test_pki().wrong_name, "unknown-device")

    def test_identity_mismatch(self):
        device = Device("device1.example.net", tls_expected_identity="dns:router.example.net")
        return self.assertRefused(SILENT, test_pki().device, "identity-mismatch", [device])

    def test_no_client_certificate(self):
        return self.assertRefused(CLIENT_HELLO, test_pki().device, "no-client-certificate", present_certificate=False)

    def test_not_for_tls(self):
        return self.assertRefused(CLIENT_HELLO, test_pki().email_only, "key-usage")


class HandshakeTests(TestCase):
    @defer.inlineCallbacks
    def test_client_hello_then_stall(self):
        """A device that sends a ClientHello and nothing more is dropped after handshake-timeout."""
        clock = task.Clock()
        manager = Manager(self, CLIENT_HELLO, clock=clock, handshake_timeout=10)
        device = device_with(test_pki().device)
        connection = yield manager.call_home(self, device, "client-hello-stall")
        yield manager.log.when("tls.handshake.started")
        clock.advance(9.9)
        self.assertEqual(manager.log.named("tls.handshake.timeout"), [])
        clock.advance(0.1)
        timeout = yield manager.log.when("tls.handshake.timeout")
        self.assertEqual(timeout["direction"], "client-hello")
        yield device.whenLost(connection)

    @defer.inlineCallbacks
    def test_silent_device_never_answers(self):
        """A 'silent' device that never answers our ClientHello is dropped too."""
        clock = task.Clock()
        manager = Manager(self, SILENT, clock=clock, handshake_timeout=5)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", manager.port.getHost().port)
        mute = yield endpoint.connect(protocol.Factory.forProtocol(SilentServer))
        self.addCleanup(mute.transport.abortConnection)
        yield manager.log.when("tls.handshake.started")
        clock.advance(5)
        yield manager.log.when("tls.handshake.timeout", direction="silent")

    @defer.inlineCallbacks
    def test_device_refuses_our_certificate(self):
        """The device does not trust us: the handshake fails and says so."""
        manager = Manager(self, CLIENT_HELLO)
        device = device_with(test_pki().device, trust_anchors=[test_pki().other_ca.certificate])
        connection = yield manager.call_home(self, device, "client-hello")
        failed = yield manager.log.when("tls.handshake.failed")
        self.assertTrue(failed["reason"])
        yield device.whenLost(connection)
        self.assertEqual(manager.log.named("tls.certificate.accepted"), [])

    @defer.inlineCallbacks
    def test_version_floor(self):
        manager = Manager(self, CLIENT_HELLO, min_version="1.3")
        device = device_with(test_pki().device, max_version="1.2")
        connection = yield manager.call_home(self, device, "client-hello")
        yield manager.log.when("tls.handshake.failed")
        yield device.whenLost(connection)


class DecisionTests(TestCase):
    """NETCONF or RESTCONF: by pin, by ALPN, by who speaks first."""

    @defer.inlineCallbacks
    def decide(self, kind, device_options=None, devices=(), listener_details=None, clock=None):
        manager = Manager(self, kind, devices, clock=clock, listener_details=listener_details)
        device = device_with(test_pki().device, **(device_options or {}))
        yield manager.call_home(self, device, DIRECTION[kind])
        return (manager, device)

    @defer.inlineCallbacks
    def test_listener_pin_restconf(self):
        manager, device = yield self.decide(SILENT, listener_details={"protocol": "restconf"})
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertIs(session, manager.restconf[0])
        decided = manager.log.named("tls.protocol.decided")[0]
        self.assertEqual((decided["protocol"], decided["decided_by"]), ("restconf", "pin"))
        self.assertEqual(session.details["transport"], "restconf")
        self.assertEqual(session.details["certificate_fingerprint"], test_pki().device.fingerprint)

    @defer.inlineCallbacks
    def test_device_pin_netconf(self):
        devices = [Device("device1.example.net", protocol="netconf-tls")]
        manager, device = yield self.decide(CLIENT_HELLO, devices=devices)
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["transport"], "netconf-tls")
        self.assertEqual(manager.log.named("tls.protocol.decided")[0]["decided_by"], "pin")

    @defer.inlineCallbacks
    def test_ssh_pin_refused(self):
        devices = [Device("device1.example.net", protocol="netconf-ssh")]
        manager, device = yield self.decide(SILENT, devices=devices)
        refused = yield manager.log.when("tls.protocol.refused")
        self.assertIn("netconf-ssh", refused["reason"])
        yield device.disconnect()

    @defer.inlineCallbacks
    def test_alpn_http(self):
        options = {"alpn": ["http/1.1"], "protocol_factory": SilentServer}
        manager, device = yield self.decide(SILENT, options)
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["alpn"], "http/1.1")
        decided = manager.log.named("tls.protocol.decided")[0]
        self.assertEqual((decided["protocol"], decided["decided_by"]), ("restconf", "alpn"))

    @defer.inlineCallbacks
    def test_alpn_netconf(self):
        manager, device = yield self.decide(CLIENT_HELLO, {"alpn": ["netconf"]})
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["transport"], "netconf-tls")
        self.assertEqual(manager.log.named("tls.protocol.decided")[0]["decided_by"], "alpn")

    @defer.inlineCallbacks
    def test_silence_means_restconf(self):
        clock = task.Clock()
        manager, device = yield self.decide(SILENT, {"protocol_factory": SilentServer}, clock=clock)
        yield manager.log.when("tls.certificate.accepted")
        clock.advance(manager.handler.settings.protocol_decision_wait - 0.1)
        self.assertEqual(manager.log.named("tls.protocol.decided"), [])
        clock.advance(0.1)
        session = yield manager.registry.whenConnected("device1.example.net")
        decided = manager.log.named("tls.protocol.decided")[0]
        self.assertEqual((decided["protocol"], decided["decided_by"]), ("restconf", "silence"))
        self.assertIs(session, manager.restconf[0])

    @defer.inlineCallbacks
    def test_a_session_that_breaks_right_after_its_held_hello_is_up_then_lost(self):
        # The device's <hello> and a broken frame in one write, both held
        # while the protocol is decided: the hellos were exchanged, so the
        # session was up (session.up, then session.lost), as over SSH
        # (tests/test_ssh_session), not a call home that never came up.
        class HelloThenGarbage(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(
                    b'<?xml version="1.0" encoding="UTF-8"?>'
                    b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
                    b"<capability>urn:ietf:params:netconf:base:1.1</capability>"
                    b"</capabilities><session-id>7</session-id></hello>]]>]]>"
                    b"<not-a-chunk]]>]]>"
                )

        manager, device = yield self.decide(SILENT, {"protocol_factory": HelloThenGarbage})
        yield manager.log.when("netconf.session.lost")
        self.assertEqual(len(manager.log.named("netconf.hello.done")), 1)
        self.assertEqual(len(manager.log.named("session.up")), 1)
        self.assertEqual(len(manager.log.named("session.lost")), 1)
        self.assertIsNone(manager.registry.get("device1.example.net"))

    @defer.inlineCallbacks
    def test_speaking_first_but_not_xml(self):
        class Chatty(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")

        manager, device = yield self.decide(CLIENT_HELLO, {"protocol_factory": Chatty})
        refused = yield manager.log.when("tls.protocol.refused")
        self.assertIn("not XML", refused["reason"])

    @defer.inlineCallbacks
    def test_restconf_without_factory(self):
        manager, device = yield self.decide(SILENT, {"alpn": ["http/1.1"], "protocol_factory": SilentServer})
        manager.handler.restconf_factory = None
        # The factory is read at decision time; this call home was decided
        # already, so make a second one.
        yield manager.call_home(self, device, "silent")
        refused = yield manager.log.when("tls.protocol.refused")
        self.assertIn("no RESTCONF client", refused["reason"])


class ConfigurationTests(TestCase):
    def test_unusable_key_file_names_the_key(self):
        directory = temp_dir(self)
        paths = test_pki().write(directory)
        settings = TLSSettings(certificate_file=paths["manager.crt"], private_key_file=paths["device.key"])
        with self.assertRaises(ConfigError) as caught:
            TLSHandler(DeviceDirectory(), SessionRegistry(EventBus()), EventBus(), settings, NetconfSettings(), directory)
        self.assertTrue(str(caught.exception).startswith("tls.private_key_file"), str(caught.exception))
        self.assertNotIn("BEGIN", str(caught.exception))

    def test_unknown_group_names_the_key(self):
        directory = temp_dir(self)
        settings = TLSSettings(groups=("X25519", "no-such-group"))
        with self.assertRaises(ConfigError) as caught:
            TLSHandler(DeviceDirectory(), SessionRegistry(EventBus()), EventBus(), settings, NetconfSettings(), directory)
        self.assertTrue(str(caught.exception).startswith("tls.groups"), str(caught.exception))

    def test_generated_identity_serves(self):
        """Without a configured certificate the handler generates one and uses it."""
        directory = temp_dir(self)
        events = EventBus()
        seen = []
        events.addObserver(seen.append)
        handler = TLSHandler(DeviceDirectory(), SessionRegistry(events), events, TLSSettings(), NetconfSettings(), directory)
        self.assertTrue(handler.identity.generated)
        self.assertEqual(seen[0]["event"], "tls.identity.generated")
        self.assertEqual(seen[0]["fingerprint"], handler.identity.fingerprint)

    @defer.inlineCallbacks
    def test_reload_trust_picks_up_a_new_crl(self):
        """A CRL reissued on disk revokes a device from its next call home on."""
        manager = Manager(self, CLIENT_HELLO, [Device("device1.example.net")])
        device = device_with(test_pki().device)
        yield manager.call_home(self, device, "client-hello")
        yield manager.registry.whenConnected("device1.example.net")
        yield device.disconnect()
        pki = test_pki()
        crl = pki._crl(pki.ca, [pki.revoked, pki.device], datetime.datetime.now(datetime.timezone.utc))
        with open(manager.paths["crl.pem"], "wb") as handle:
            handle.write(crl.public_bytes(serialization.Encoding.PEM))
        manager.handler.reloadTrust()
        yield manager.call_home(self, device, "client-hello")
        refused = yield manager.log.when("tls.certificate.refused")
        self.assertEqual(refused["reason"], "revoked")


class HardeningTests(TestCase):
    def test_device_certificate_always_obtained(self):
        """
        As TLS server we ask for the device's certificate; as TLS client the
        device (the server) always shows one, so no verification mode is set
        (OpenSSL's verdict is never enforced: the checks follow the handshake).
        """
        from OpenSSL import SSL

        events = EventBus()
        handler = TLSHandler(DeviceDirectory(), SessionRegistry(events), events, TLSSettings(), NetconfSettings(), temp_dir(self))
        self.assertEqual(handler._creators[CLIENT_HELLO].context.get_verify_mode(), SSL.VERIFY_PEER)
        self.assertEqual(handler._creators[SILENT].context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_context_options(self):
        from OpenSSL import SSL

        directory = temp_dir(self)
        events = EventBus()
        handler = TLSHandler(DeviceDirectory(), SessionRegistry(events), events, TLSSettings(), NetconfSettings(), directory)
        for kind in (SILENT, CLIENT_HELLO):
            context = handler._creators[kind].context
            options = context.set_options(0)  # returns the options in force
            self.assertTrue(options & SSL.OP_NO_COMPRESSION, kind)
            self.assertTrue(options & SSL.OP_NO_RENEGOTIATION, kind)
            connection = SSL.Connection(context, None)
            ciphers = connection.get_cipher_list()
            self.assertFalse([c for c in ciphers if "CBC" in c or "RC4" in c or c.startswith("AES") or "NULL" in c], ciphers)


class BusyNetconfDevice(protocol.Protocol):
    """A NETCONF device too busy to send its <hello> before it has read something from us."""

    def __init__(self):
        self.received = b""

    def dataReceived(self, data):
        if not self.received:
            from callhome_mux.netconf.framing import encode_eom
            from callhome_mux.netconf.namespaces import BASE_1_0
            from callhome_mux.netconf.session import hello_message

            self.transport.write(encode_eom(hello_message([BASE_1_0], session_id=7)))
        self.received += data


class LateHelloEndToEndTests(TestCase):
    """
    A NETCONF device whose <hello> comes after the decision wait (its process
    starved in a storm) is taken for RESTCONF by silence, and gets our HTTP
    request instead of our <hello>.
    """

    @defer.inlineCallbacks
    def test_closed_at_once_with_the_reason_then_netconf_next_time(self):
        from callhome_mux.restconf.session import restconf_protocol

        clock = task.Clock()
        manager = Manager(self, SILENT, clock=clock)
        manager.handler.restconf_factory = restconf_protocol
        device = device_with(test_pki().device, protocol_factory=BusyNetconfDevice)
        connection = yield manager.call_home(self, device, "silent")
        yield manager.log.when("tls.certificate.accepted")
        clock.advance(manager.handler.settings.protocol_decision_wait)
        clock.advance(0)
        # Closed at once (no RESTCONF timeout had to run), with the reason,
        # and the HTTP client never parsed the <hello>.
        yield device.whenLost(connection)
        lost = yield manager.log.when("restconf.session.lost")
        [refused] = manager.log.named("tls.protocol.refused")
        self.assertEqual((refused["decided_by"], refused["protocol"]), ("silence", "netconf"))
        self.assertIn("sent a NETCONF <hello>, not an HTTP response", refused["reason"])
        self.assertEqual(lost["reason"], refused["reason"])
        self.assertEqual(manager.log.named("restconf.protocol.error"), [])
        self.assertTrue(device.protocols[0].received.startswith(b"GET /.well-known/host-meta "))
        # The device calls home again, as late as before: NETCONF at once.
        yield manager.call_home(self, device, "silent")
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["transport"], "netconf-tls")
        decided = manager.log.named("tls.protocol.decided")
        self.assertEqual([(d["protocol"], d["decided_by"]) for d in decided],
                         [("restconf", "silence"), ("netconf", "late-hello-before")])
