"""
The deciding step of L{TLSCallHome} without sockets: held bytes, chunking, timers.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.connection import ClassifiedConnection, ConnectionKind
from callhome_mux.events import EventBus
from callhome_mux.inventory.model import Device
from callhome_mux.timers import shared_timers
from callhome_mux.tls import handler as handler_module
from callhome_mux.tls.settings import TLSSettings
from callhome_mux.tls.verify import Identified

HELLO = b'<?xml version="1.0"?><hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities/></hello>]]>]]>'


class Recorder(protocol.Protocol):
    def __init__(self, *args, **kwargs):
        self.received = b""

    def dataReceived(self, data):
        self.received += data


class FakeHandler:
    def __init__(self, clock):
        self.clock = clock
        self.settings = TLSSettings(protocol_decision_wait=2.0)
        self.events = EventBus(clock=clock)
        self.records = []
        self.events.addObserver(self.records.append)
        self.restconf = []
        self.restconf_factory = self._restconf
        self.registered = []
        self.registry = type("Registry", (), {"register": staticmethod(self.registered.append)})()
        self.late_netconf_devices = {}

    remember_late_netconf = handler_module.TLSHandler.remember_late_netconf
    recall_late_netconf = handler_module.TLSHandler.recall_late_netconf

    def _restconf(self, device_id, events, details=None, clock=None):
        built = Recorder()
        self.restconf.append(built)
        return built


def deciding(clock=None, fake=None):
    """A TLSCallHome whose handshake and verification are done, at the decision step."""
    clock = clock or task.Clock()
    fake = fake or FakeHandler(clock)
    address = IPv4Address("TCP", "192.0.2.1", 4334)
    connection = ClassifiedConnection("c1", ConnectionKind.TLS_SILENT, StringTransport(), address, address)
    callhome = handler_module.TLSCallHome(fake, connection)
    callhome.makeConnection(StringTransport())
    callhome._cancel_timer()
    callhome.identified = Identified(Device("d1"), "sha256:" + "0" * 64, "CN=d1", "pinned-fingerprint", ())
    callhome.details["device_id"] = "d1"  # as handshakeCompleted sets it
    callhome.state = "deciding"
    netconf = []
    callhome._netconf_protocol = lambda: netconf.append(Recorder()) or netconf[-1]
    return callhome, fake, netconf


class DecidingTests(TestCase):
    @settings(max_examples=60, deadline=None)
    @given(st.text(" \r\n\t", max_size=4).map(str.encode), st.lists(st.integers(1, len(HELLO)), max_size=6))
    def test_hello_in_any_chunks(self, leading, cuts):
        """However the <hello> is split, NETCONF is chosen and receives every byte, in order."""
        callhome, fake, netconf = deciding()
        callhome._decide(None)
        stream = leading + HELLO
        points = sorted(set(cut for cut in cuts if cut < len(stream)))
        for start, end in zip([0] + points, points + [len(stream)]):
            callhome.dataReceived(stream[start:end])
        self.assertEqual(len(netconf), 1)
        self.assertEqual(netconf[0].received, stream)
        self.assertEqual(fake.restconf, [])

    def test_bytes_before_the_decision_step(self):
        """A <hello> that arrived with the handshake's last record is held and replayed."""
        callhome, fake, netconf = deciding()
        callhome.state = "deciding"
        callhome._held = [HELLO[:10]]
        callhome._decide(None)
        self.assertEqual(netconf[0].received, HELLO[:10])

    def test_whitespace_then_silence_is_restconf(self):
        clock = task.Clock()
        callhome, fake, netconf = deciding(clock)
        callhome._decide(None)
        callhome.dataReceived(b"\r\n")
        clock.advance(2.0)
        self.assertEqual(netconf, [])
        self.assertEqual(fake.restconf[0].received, b"\r\n")
        decided = [r for r in fake.records if r["event"] == "tls.protocol.decided"]
        self.assertEqual(decided[0]["decided_by"], "silence")

    def test_alpn_wins_over_first_bytes(self):
        callhome, fake, netconf = deciding()
        callhome._held = [HELLO]
        callhome._decide(b"http/1.1")
        self.assertEqual(netconf, [])
        self.assertEqual(fake.restconf[0].received, HELLO)

    def test_flood_before_decision(self):
        callhome, fake, netconf = deciding()
        callhome._decide(None)
        callhome.dataReceived(b" " * (handler_module.MAX_UNDECIDED_BYTES + 1))
        refused = [r for r in fake.records if r["event"] == "tls.protocol.refused"]
        self.assertIn("bytes before the protocol was known", refused[0]["reason"])
        self.assertTrue(callhome.transport.disconnecting)


class Session:
    device_id = "d1"


class ReadyAtOnce(Recorder):
    """A NETCONF protocol that handles the held <hello> and is ready at once."""

    def __init__(self):
        super().__init__()
        self.ready_session = None
        self.asked = 0

    def dataReceived(self, data):
        super().dataReceived(data)
        self.ready_session = Session()

    def whenReady(self):
        self.asked += 1
        return defer.succeed(self.ready_session)


class NeverReady(ReadyAtOnce):
    def dataReceived(self, data):
        Recorder.dataReceived(self, data)

    def whenReady(self):
        self.asked += 1
        return defer.fail(RuntimeError("the session ended"))


class LaterReady(Recorder):
    """
    A session protocol that gets ready later (a RESTCONF one has no
    ready_session at all); as NetconfClientProtocol's, its C{session} is
    set only once the hellos are exchanged, so the one to come is kept apart.
    """

    def __init__(self):
        super().__init__()
        self.coming = Session()
        self.ready = defer.Deferred()

    def whenReady(self):
        return self.ready


class RegistrationTests(TestCase):
    def decided_with(self, protocol):
        """The handler's fake registry after NETCONF was chosen, by the held <hello>, with C{protocol}."""
        callhome, fake, netconf = deciding()
        callhome._netconf_protocol = lambda: protocol
        callhome._held = [HELLO]
        callhome._decide(None)
        return fake.registered

    def test_session_ready_with_the_held_hello_is_registered_without_waiting(self):
        protocol = ReadyAtOnce()
        self.assertEqual(self.decided_with(protocol), [protocol.ready_session])
        self.assertEqual(protocol.asked, 0)

    def test_session_not_ready_is_registered_when_ready(self):
        protocol = LaterReady()
        registered = self.decided_with(protocol)
        self.assertEqual(registered, [])
        protocol.ready.callback(protocol.coming)
        self.assertEqual(registered, [protocol.coming])

    def test_session_that_ends_is_not_registered(self):
        protocol = NeverReady()
        self.assertEqual(self.decided_with(protocol), [])
        self.assertEqual(protocol.asked, 1)


class BusyReactorTests(TestCase):
    """The silence timer may run before a hello already waiting in the socket is read."""

    def test_hello_read_right_after_the_timer_still_means_netconf(self):
        clock = task.Clock()
        callhome, fake, netconf = deciding(clock)
        callhome._decide(None)
        # Time passes, and the reactor runs the due (shared) timer first ...
        clock.rightNow += fake.settings.protocol_decision_wait
        shared_timers(clock)._fire()
        self.assertEqual((netconf, fake.restconf), ([], []))
        # ... then reads the socket, which already held the hello.
        callhome.dataReceived(HELLO)
        clock.advance(0)
        self.assertEqual(len(netconf), 1)
        self.assertEqual(netconf[0].received, HELLO)
        self.assertEqual(fake.restconf, [])

    def test_decision_timers_share_one_reactor_timer(self):
        """Connections waiting for the device to speak first add no reactor timer each."""
        clock = task.Clock()
        for _ in range(3):
            callhome, fake, netconf = deciding(clock)
            callhome._decide(None)
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_true_silence_still_means_restconf(self):
        clock = task.Clock()
        callhome, fake, netconf = deciding(clock)
        callhome._decide(None)
        clock.advance(fake.settings.protocol_decision_wait)
        self.assertEqual(len(fake.restconf), 1)
        self.assertEqual(netconf, [])
        [decided] = [r for r in fake.records if r["event"] == "tls.protocol.decided"]
        self.assertEqual(decided["decided_by"], "silence")


class LateHelloTests(TestCase):
    """
    A NETCONF device that speaks after the decision wait (a busy device) was
    taken for RESTCONF by silence, and its <hello> went to the HTTP client.
    """

    def taken_for_restconf(self, fake=None):
        clock = task.Clock()
        callhome, fake, netconf = deciding(clock, fake)
        callhome._decide(None)
        clock.advance(fake.settings.protocol_decision_wait)
        self.assertEqual(len(fake.restconf), 1)
        return callhome, fake, netconf

    def refusals(self, fake):
        return [r for r in fake.records if r["event"] == "tls.protocol.refused"]

    def test_hello_after_a_silence_decision_closes_with_the_reason(self):
        callhome, fake, netconf = self.taken_for_restconf()
        for chunk in (b"\n", HELLO[:20], HELLO[20:]):
            callhome.dataReceived(chunk)
        [refused] = self.refusals(fake)
        self.assertEqual((refused["decided_by"], refused["protocol"], refused["device_id"]), ("silence", "netconf", "d1"))
        self.assertIn("sent a NETCONF <hello>, not an HTTP response", refused["reason"])
        self.assertTrue(callhome.transport.disconnecting)
        # The HTTP client never sees the <hello> (no confusing parse error).
        self.assertEqual(fake.restconf[0].received, b"\n")
        self.assertEqual(netconf, [])

    def test_http_reply_goes_to_restconf(self):
        callhome, fake, netconf = self.taken_for_restconf()
        callhome.dataReceived(b"HTTP/1.1 200 OK\r\n")
        callhome.dataReceived(b"<xrd/>")
        self.assertEqual(fake.restconf[0].received, b"HTTP/1.1 200 OK\r\n<xrd/>")
        self.assertEqual(self.refusals(fake), [])
        self.assertFalse(callhome.transport.disconnecting)
        self.assertEqual(fake.late_netconf_devices, {})

    def test_next_call_home_runs_netconf_at_once_then_by_first_bytes_again(self):
        callhome, fake, netconf = self.taken_for_restconf()
        callhome.dataReceived(HELLO)
        again, _, netconf = deciding(task.Clock(), fake)
        again._decide(None)
        self.assertEqual(len(netconf), 1)
        decided = [r for r in fake.records if r["event"] == "tls.protocol.decided"]
        self.assertEqual(decided[-1]["decided_by"], "late-hello-before")
        # Once only: a device that became RESTCONF is decided by silence again.
        self.taken_for_restconf(fake)

    def test_pinned_or_alpn_restconf_is_not_second_guessed(self):
        callhome, fake, netconf = deciding()
        callhome._decide(b"http/1.1")
        callhome.dataReceived(HELLO)
        self.assertEqual(fake.restconf[0].received, HELLO)
        self.assertEqual(self.refusals(fake), [])

    def test_remembered_devices_are_bounded(self):
        fake = FakeHandler(task.Clock())
        self.patch(handler_module, "MAX_REMEMBERED_LATE_HELLOS", 2)
        for device_id in ("a", "b", "c"):
            fake.remember_late_netconf(device_id)
        self.assertEqual(list(fake.late_netconf_devices), ["b", "c"])


class PeerTextTests(TestCase):
    def test_peer_address_formatted_once_per_connection(self):
        """Every event and the verifier get the device's address as text, formatted once per connection."""
        from callhome_mux.connection import format_address

        formatted = []
        original = ClassifiedConnection.peer_text
        self.patch(ClassifiedConnection, "peer_text", property(lambda c: formatted.append(c) or original.fget(c)))
        callhome, fake, netconf = deciding()
        callhome._decide(None)
        callhome.dataReceived(HELLO)
        with_peer = [r for r in fake.records if "peer" in r]
        self.assertEqual([r["event"] for r in with_peer], ["tls.handshake.started", "tls.protocol.decided"])
        expected = format_address(IPv4Address("TCP", "192.0.2.1", 4334))
        self.assertEqual({r["peer"] for r in with_peer}, {expected})
        self.assertEqual(callhome.details["peer"], expected)
        self.assertEqual(len(formatted), 1)


class HandshakeTimerTests(TestCase):
    def _started(self, clock, fake, number):
        address = IPv4Address("TCP", "192.0.2.1", 4334 + number)
        connection = ClassifiedConnection(f"c{number}", ConnectionKind.TLS_SILENT, StringTransport(), address, address)
        callhome = handler_module.TLSCallHome(fake, connection)
        callhome.makeConnection(StringTransport())
        return callhome

    def test_handshakes_in_flight_share_one_reactor_timer(self):
        """Handshake timeouts of many connections are one DelayedCall, still exact, and none is left once all are done."""
        clock = task.Clock()
        fake = FakeHandler(clock)
        calls = [self._started(clock, fake, number) for number in range(3)]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        calls[0]._cancel_timer()
        clock.advance(fake.settings.handshake_timeout - 0.5)
        self.assertEqual([r for r in fake.records if r["event"] == "tls.handshake.timeout"], [])
        clock.advance(0.5)
        timed_out = [r["connection_id"] for r in fake.records if r["event"] == "tls.handshake.timeout"]
        self.assertEqual(timed_out, ["c1", "c2"])
        self.assertTrue(all(call.transport.disconnected for call in calls[1:]))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_finished_handshakes_leave_no_timer(self):
        clock = task.Clock()
        fake = FakeHandler(clock)
        calls = [self._started(clock, fake, number) for number in range(2)]
        for call in calls:
            call._cancel_timer()
        self.assertEqual(clock.getDelayedCalls(), [])
