"""The demultiplexer's Twisted layer: handoff, timers, limits, events."""

import gc

from hypothesis import given, settings as hypothesis_settings, strategies as st
from twisted.internet import abstract, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from callhome_mux.connection import ConnectionKind
from callhome_mux.demux.protocol import Admission, DemuxFactory, share_write_buffer_keys
from callhome_mux.demux.settings import DemuxSettings
from callhome_mux.events import EventBus

from tests import samples
from tests.helpers import EventLog, RecordingHandler


def make_factory(settings=None, handlers=None, pinned_kind=None, pinned_details=None):
    clock = task.Clock()
    events = EventBus(clock=clock)
    log = EventLog(events)
    handlers = handlers if handlers is not None else {kind: RecordingHandler() for kind in ConnectionKind}
    factory = DemuxFactory(
        settings or DemuxSettings(),
        events,
        handlers,
        clock=clock,
        listener_name="test",
        pinned_kind=pinned_kind,
        pinned_details=pinned_details,
    )
    return factory, clock, log, handlers


def connect(factory, host="192.0.2.1", port=50000):
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
    proto.makeConnection(transport)
    return proto, transport


class HandoffTests(unittest.TestCase):
    def feed(self, proto, stream, sizes):
        position, index = 0, 0
        while position < len(stream):
            size = sizes[index % len(sizes)]
            proto.dataReceived(stream[position : position + size])
            position += size
            index += 1

    def check_stream_reaches_handler(self, stream, kind, sizes):
        factory, clock, log, handlers = make_factory()
        proto, transport = connect(factory)
        self.feed(proto, stream, sizes)
        [delegate] = handlers[kind].protocols
        self.assertTrue(delegate.made)
        self.assertIs(delegate.transport, transport)
        self.assertEqual(delegate.received, stream)
        return delegate, log

    def test_ssh_stream_one_byte_at_a_time(self):
        stream = samples.JUNIPER_PREAMBLE + samples.SSH_BANNERS["openssh-junos"] + samples.BINARY_AFTER_BANNER
        delegate, _ = self.check_stream_reaches_handler(stream, ConnectionKind.SSH, [1])
        self.assertEqual(delegate.connection.preamble["DEVICE-ID"], "mx960-lab-1")

    def test_replayed_bytes_are_not_kept_after_the_handoff(self):
        stream = samples.SSH_BANNERS["cisco-ios"] + samples.BINARY_AFTER_BANNER
        delegate, _ = self.check_stream_reaches_handler(stream, ConnectionKind.SSH, [len(stream)])
        self.assertEqual(delegate.connection.initial_bytes, b"")

    def test_handed_off_connection_carries_both_addresses(self):
        for kind, stream, pinned in (
            (ConnectionKind.SSH, samples.SSH_BANNERS["cisco-ios"], None),
            (ConnectionKind.TLS_SILENT, b"", ConnectionKind.TLS_SILENT),
        ):
            factory, clock, log, handlers = make_factory(pinned_kind=pinned)
            proto = factory.buildProtocol(None)
            transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.4", 40001))
            asked = []
            transport.getHost = lambda real=transport.getHost: asked.append(1) or real()
            proto.makeConnection(transport)
            if stream:
                proto.dataReceived(stream)
            [delegate] = handlers[kind].protocols
            self.assertEqual(delegate.connection.peer, IPv4Address("TCP", "198.51.100.4", 40001))
            # The local address is asked of the transport only when wanted (TLS never does).
            self.assertEqual(asked, [])
            self.assertEqual(delegate.connection.local_address(), transport.getHost())
            self.assertEqual(len(asked), 2)
            self.assertIs(delegate.connection.local_address(), delegate.connection.host)
            self.assertEqual(len(asked), 2)

    def test_ssh_stream_odd_splits(self):
        stream = b"notice\r\n" + samples.SSH_BANNERS["cisco-ios"] + samples.BINARY_AFTER_BANNER
        for sizes in ([3, 7, 1], [13], [2, 50], [len(stream)]):
            self.check_stream_reaches_handler(stream, ConnectionKind.SSH, sizes)

    def test_client_hello_stream_odd_splits(self):
        hello = samples.openssl_client_hello() + b"\x14\x03\x03\x00\x01\x01"
        for sizes in ([1], [5, 1, 300], [6], [len(hello)]):
            delegate, _ = self.check_stream_reaches_handler(hello, ConnectionKind.TLS_CLIENT_HELLO, sizes)
            self.assertEqual(delegate.connection.kind, ConnectionKind.TLS_CLIENT_HELLO)

    @hypothesis_settings(max_examples=100, deadline=None)
    @given(sizes=st.lists(st.integers(1, 64), min_size=1, max_size=20))
    def test_any_split_replays_exactly(self, sizes):
        stream = b"x\r\n" + samples.SSH_BANNERS["openssh-debian"] + samples.BINARY_AFTER_BANNER
        self.check_stream_reaches_handler(stream, ConnectionKind.SSH, sizes)

    def test_connection_lost_reaches_handler(self):
        factory, clock, log, handlers = make_factory()
        proto, transport = connect(factory)
        proto.dataReceived(samples.SSH_BANNERS["conch"])
        reason = object()
        proto.connectionLost(reason)
        [delegate] = handlers[ConnectionKind.SSH].protocols
        self.assertIs(delegate.lost, reason)
        self.assertEqual(log.names()[-1], "connection.closed")
        self.assertEqual(log.named("connection.closed")[0]["kind"], "ssh")

    def test_connections_share_their_listeners_read_only_pins(self):
        # Not a copy per connection: the listener's one mapping, which
        # nobody can change through a connection.
        pins = {"protocol": "restconf"}
        factory, clock, log, handlers = make_factory(pinned_kind=ConnectionKind.TLS_SILENT, pinned_details=pins)
        connect(factory)
        connect(factory)
        first, second = handlers[ConnectionKind.TLS_SILENT].protocols
        self.assertIs(first.connection.details, second.connection.details)
        self.assertEqual(first.connection.details, {"protocol": "restconf"})
        with self.assertRaises(TypeError):
            first.connection.details["protocol"] = "netconf"
        pins["protocol"] = "netconf"  # the caller's dict was copied once
        self.assertEqual(second.connection.details, {"protocol": "restconf"})

    def test_pinned_listener_skips_classification(self):
        factory, clock, log, handlers = make_factory(
            pinned_kind=ConnectionKind.TLS_SILENT, pinned_details={"protocol": "restconf"}
        )
        proto, transport = connect(factory)
        [delegate] = handlers[ConnectionKind.TLS_SILENT].protocols
        self.assertEqual(delegate.connection.details, {"protocol": "restconf"})
        self.assertEqual(delegate.connection.initial_bytes, b"")
        # No timers left behind for a pinned connection.
        self.assertEqual(clock.getDelayedCalls(), [])
        # Bytes that look like SSH are not looked at.
        proto.dataReceived(b"SSH-2.0-x\r\n")
        self.assertEqual(delegate.received, b"SSH-2.0-x\r\n")

    def test_no_handler_closes_with_event(self):
        factory, clock, log, handlers = make_factory(handlers={})
        proto, transport = connect(factory)
        proto.dataReceived(samples.SSH_BANNERS["conch"])
        self.assertTrue(transport.disconnecting)
        [rejected] = log.named("connection.rejected")
        self.assertIn("no handler for ssh connections", rejected["reason"])

    def test_handler_refusal_closes(self):
        factory, clock, log, handlers = make_factory(handlers={ConnectionKind.SSH: RecordingHandler(refuse=True)})
        proto, transport = connect(factory)
        proto.dataReceived(samples.SSH_BANNERS["conch"])
        self.assertTrue(transport.disconnecting)

    def test_handler_exception_is_contained(self):
        class Broken:
            def protocolFor(self, connection):
                raise RuntimeError("boom")

        factory, clock, log, handlers = make_factory(handlers={ConnectionKind.SSH: Broken()})
        proto, transport = connect(factory)
        proto.dataReceived(samples.SSH_BANNERS["conch"])
        self.assertTrue(transport.disconnecting)
        [error] = log.named("connection.handler.error")
        self.assertIn("boom", error["reason"])


class TimerTests(unittest.TestCase):
    def test_silence_hands_to_tls_client(self):
        factory, clock, log, handlers = make_factory(DemuxSettings(silence_timeout=1.0))
        proto, transport = connect(factory)
        clock.advance(0.99)
        self.assertEqual(handlers[ConnectionKind.TLS_SILENT].protocols, [])
        clock.advance(0.02)
        [delegate] = handlers[ConnectionKind.TLS_SILENT].protocols
        self.assertEqual(delegate.connection.initial_bytes, b"")
        [classified] = log.named("connection.classified")
        self.assertEqual(classified["kind"], "tls-silent")
        self.assertAlmostEqual(classified["ms"], 1010.0, places=0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_bytes_before_silence_cancel_it(self):
        factory, clock, log, handlers = make_factory()
        proto, transport = connect(factory)
        proto.dataReceived(b"S")
        clock.advance(5)
        self.assertEqual(handlers[ConnectionKind.TLS_SILENT].protocols, [])
        self.assertFalse(transport.disconnecting)
        clock.advance(5)
        self.assertTrue(transport.disconnected or transport.disconnecting)
        [rejected] = log.named("connection.rejected")
        self.assertIn("not classified in time (1 bytes read)", rejected["reason"])

    def _run_silence_timer_only(self, clock):
        # What a busy reactor does: the due timer runs (here: the shared
        # timers' reactor call), the socket is read only afterwards.
        [timer] = clock.getDelayedCalls()
        clock.calls.remove(timer)
        timer.func(*timer.args, **timer.kw)

    def test_a_banner_read_right_after_the_silence_timer_is_still_ssh(self):
        factory, clock, log, handlers = make_factory(DemuxSettings(silence_timeout=1.0))
        proto, transport = connect(factory)
        clock.rightNow += 1.5  # the reactor is behind: the timer is late
        self._run_silence_timer_only(clock)
        self.assertEqual(log.named("connection.classified"), [])
        proto.dataReceived(samples.SSH_BANNERS["conch"])
        clock.advance(0)
        [classified] = log.named("connection.classified")
        self.assertEqual(classified["kind"], "ssh")
        self.assertEqual(handlers[ConnectionKind.TLS_SILENT].protocols, [])
        self.assertEqual(len(handlers[ConnectionKind.SSH].protocols), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_undecided_bytes_right_after_the_silence_timer_wait_for_the_classify_timeout(self):
        factory, clock, log, handlers = make_factory(DemuxSettings(silence_timeout=1.0, classify_timeout=10.0))
        proto, transport = connect(factory)
        clock.rightNow += 1.0
        self._run_silence_timer_only(clock)
        proto.dataReceived(b"SS")
        clock.advance(0)
        self.assertEqual(log.named("connection.classified"), [])
        [timer] = clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), 10.0)
        clock.advance(9.0)
        [rejected] = log.named("connection.rejected")
        self.assertIn("not classified in time (2 bytes read)", rejected["reason"])

    def test_lost_right_after_the_silence_timer(self):
        factory, clock, log, handlers = make_factory(DemuxSettings(silence_timeout=1.0))
        proto, transport = connect(factory)
        clock.rightNow += 1.0
        self._run_silence_timer_only(clock)
        proto.connectionLost(None)
        clock.advance(0)
        self.assertEqual(handlers[ConnectionKind.TLS_SILENT].protocols, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_classify_timeout_exact_after_the_silence_timer(self):
        # One timer at a time per connection; the classification timeout
        # still falls at accept + classify_timeout exactly.
        from callhome_mux.timers import shared_timers

        factory, clock, log, handlers = make_factory(DemuxSettings(silence_timeout=0.3, classify_timeout=0.7))
        clock.advance(0.1)
        proto, transport = connect(factory)
        self.assertEqual(len(shared_timers(clock)), 1)
        proto.dataReceived(b"S")
        clock.advance(0.3)
        self.assertEqual(len(shared_timers(clock)), 1)
        [timer] = clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), 0.1 + 0.7)
        clock.advance(0.7 - 0.3 - 1e-9)
        self.assertEqual(log.named("connection.rejected"), [])
        clock.advance(1e-9)
        [rejected] = log.named("connection.rejected")
        self.assertIn("not classified in time (1 bytes read)", rejected["reason"])
        self.assertEqual(len(shared_timers(clock)), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unvalidated_timeouts_in_either_order(self):
        # DemuxSettings validation refuses these; built directly, they act
        # as two separate timers did.
        for silence, classify, bytes_first, outcome in (
            (2.0, 2.0, False, "tls-silent"),  # both due: silence first
            (2.0, 2.0, True, "rejected"),
            (3.0, 1.0, False, "rejected"),  # the classification timeout first
        ):
            settings = DemuxSettings(silence_timeout=1.0, classify_timeout=10.0)
            object.__setattr__(settings, "silence_timeout", silence)  # a frozen dataclass
            object.__setattr__(settings, "classify_timeout", classify)
            factory, clock, log, handlers = make_factory(settings)
            proto, transport = connect(factory)
            if bytes_first:
                proto.dataReceived(b"S")
            clock.advance(min(silence, classify) - 0.01)
            self.assertEqual(log.named("connection.classified") + log.named("connection.rejected"), [])
            clock.advance(0.01)
            if outcome == "tls-silent":
                [classified] = log.named("connection.classified")
                self.assertEqual(classified["kind"], "tls-silent")
            else:
                [rejected] = log.named("connection.rejected")
                self.assertIn("not classified in time", rejected["reason"])
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_decision_cancels_timers(self):
        factory, clock, log, handlers = make_factory()
        proto, transport = connect(factory)
        proto.dataReceived(samples.SSH_BANNERS["openssh-debian"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_events_in_order_with_fields(self):
        factory, clock, log, handlers = make_factory()
        proto, transport = connect(factory, host="192.0.2.7", port=1234)
        clock.advance(0.25)
        proto.dataReceived(samples.SSH_BANNERS["dropbear"])
        proto.connectionLost(None)
        self.assertEqual(log.names(), ["connection.accepted", "connection.classified", "connection.closed"])
        accepted, classified, closed = log.events
        self.assertEqual(accepted["peer"], "192.0.2.7:1234")
        self.assertEqual(accepted["listener"], "test")
        self.assertEqual(classified["kind"], "ssh")
        self.assertEqual(classified["bytes"], len(samples.SSH_BANNERS["dropbear"]))
        self.assertEqual(classified["ms"], 250.0)
        self.assertEqual(closed["connection_id"], accepted["connection_id"])

    def test_garbage_rejected_and_aborted(self):
        factory, clock, log, handlers = make_factory()
        proto, transport = connect(factory)
        proto.dataReceived(samples.GARBAGE["binary"])
        self.assertTrue(transport.disconnected)  # aborted, not politely closed
        [rejected] = log.named("connection.rejected")
        self.assertEqual(rejected["bytes"], len(samples.GARBAGE["binary"]))
        self.assertIn("binary data", rejected["reason"])
        proto.dataReceived(b"more after refusal")  # ignored, no crash
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_peer_closing_before_classification(self):
        factory, clock, log, handlers = make_factory()
        proto, transport = connect(factory)
        proto.dataReceived(b"SS")
        proto.connectionLost(None)
        [rejected] = log.named("connection.rejected")
        self.assertIn("closed by the peer", rejected["reason"])
        self.assertEqual(len(factory.admission), 0)
        self.assertEqual(clock.getDelayedCalls(), [])


class AdmissionTests(unittest.TestCase):
    def test_per_source_limit(self):
        factory, clock, log, handlers = make_factory(DemuxSettings(max_unclassified_per_source=2))
        first, _ = connect(factory, host="192.0.2.1")
        second, _ = connect(factory, host="192.0.2.1")
        third, third_transport = connect(factory, host="192.0.2.1")
        other, other_transport = connect(factory, host="192.0.2.2")
        self.assertTrue(third_transport.disconnected)
        self.assertFalse(other_transport.disconnected)
        [rejected] = log.named("connection.rejected")
        self.assertIn("too many unclassified connections from 192.0.2.1", rejected["reason"])
        # Once one is classified, the source may connect again.
        first.dataReceived(samples.SSH_BANNERS["conch"])
        fourth, fourth_transport = connect(factory, host="192.0.2.1")
        self.assertFalse(fourth_transport.disconnected)
        self.assertEqual(factory.admission.from_source("192.0.2.1"), 2)

    def test_global_limit_drops_the_oldest(self):
        factory, clock, log, handlers = make_factory(DemuxSettings(max_unclassified=3))
        transports = [connect(factory, host=f"192.0.2.{n}")[1] for n in range(1, 4)]
        newest, newest_transport = connect(factory, host="192.0.2.9")
        self.assertTrue(transports[0].disconnected)
        self.assertFalse(transports[1].disconnected)
        self.assertFalse(newest_transport.disconnected)
        self.assertEqual(len(factory.admission), 3)
        [rejected] = log.named("connection.rejected")
        self.assertIn("oldest first", rejected["reason"])
        self.assertEqual(rejected["peer"], "192.0.2.1:50000")
        # The newcomer is classified normally.
        newest.dataReceived(samples.SSH_BANNERS["openssh-debian"])
        self.assertEqual(len(handlers[ConnectionKind.SSH].protocols), 1)

    def test_address_policy_refuses_first(self):
        factory, clock, log, handlers = make_factory(pinned_kind=ConnectionKind.SSH)
        factory.address_policy = lambda host: "throttled: 5 failures" if host == "192.0.2.66" else None
        _, refused = connect(factory, host="192.0.2.66")
        _, served = connect(factory, host="192.0.2.67")
        self.assertTrue(refused.disconnected)
        self.assertFalse(served.disconnected)
        [rejected] = log.named("connection.rejected")
        self.assertEqual(rejected["reason"], "throttled: 5 failures")
        self.assertEqual(len(handlers[ConnectionKind.SSH].protocols), 1)

    def test_admission_shared_between_listeners(self):
        settings = DemuxSettings(max_unclassified_per_source=1)
        admission = Admission(settings)
        first, _, _, _ = make_factory(settings)
        second, _, _, _ = make_factory(settings)
        first.admission = second.admission = admission
        connect(first, host="192.0.2.1")
        _, transport = connect(second, host="192.0.2.1")
        self.assertTrue(transport.disconnected)


def _own_dict(instance) -> bool:
    """Does C{instance} keep a dict of its own (rather than CPython's shared-key attribute array)?"""
    marker = object()
    return any(
        type(referent) is dict and referent and all(getattr(instance, k, marker) is v for k, v in referent.items())
        for referent in gc.get_referents(instance)
    )


class WriteBufferKeysTests(unittest.TestCase):
    """share_write_buffer_keys: what an idle connection's socket transport keeps."""

    def test_storm_of_transports_keeps_no_dict_after_writes(self):
        class Reactor:
            def addWriter(self, writer):
                pass

            def removeWriter(self, writer):
                pass

        class FreshTransport(abstract.FileDescriptor):
            # A class of its own: its own table of shared instance keys, as
            # tcp.Server's when the process starts.
            def writeSomeData(self, data):
                return len(data)

        transports = []
        for _ in range(200):  # accepted (connectionMade) before any write, as in a storm
            transport = FreshTransport(Reactor())
            share_write_buffer_keys(transport)
            transports.append(transport)
        for transport in transports:
            transport.write(b"<hello/>")
            transport.doWrite()
        self.assertEqual([t for t in transports if _own_dict(t)], [])
        self.assertEqual((transports[0].dataBuffer, transports[0].offset), (b"", 0))

    def test_other_transports_and_pending_data_left_alone(self):
        transport = StringTransport()
        share_write_buffer_keys(transport)  # not a FileDescriptor: nothing set
        self.assertFalse(hasattr(transport, "offset"))
        busy = abstract.FileDescriptor(object())
        busy.dataBuffer, busy.offset = b"half-sent", 4
        share_write_buffer_keys(busy)
        self.assertEqual((busy.dataBuffer, busy.offset), (b"half-sent", 4))

    def test_accepted_connection_gets_the_keys(self):
        factory, _, _, _ = make_factory()
        protocol = factory.buildProtocol(None)

        class Accepted(abstract.FileDescriptor):
            def getPeer(self):
                return IPv4Address("TCP", "192.0.2.7", 4000)

            def getHost(self):
                return IPv4Address("TCP", "192.0.2.1", 4334)

        transport = Accepted(object())
        protocol.makeConnection(transport)
        self.assertIn("dataBuffer", vars(transport))
        self.assertIn("offset", vars(transport))
