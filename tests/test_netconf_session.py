"""The NETCONF client protocol: hello, RPC matching, timeouts, loss, notifications, close."""

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.netconf.errors import (
    HelloTimeoutError,
    NetconfProtocolError,
    RPCError,
    RPCTimeoutError,
    SessionLostError,
)
from callhome_mux.netconf.framing import FrameDecoder, encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1, BASE_NS, HELLO, RPC_REPLY, qn
from callhome_mux.netconf.session import NetconfClientProtocol, NetconfSession, hello_message
from callhome_mux.netconf.settings import NetconfSettings as Settings
from callhome_mux.sessions import SessionRegistry
from callhome_mux.testing.netconf_device import Datastore, NetconfServerProtocol, connect_in_memory


def reply(message_id, body=b"<ok/>"):
    return b'<rpc-reply xmlns="' + BASE_NS.encode() + b'" message-id="' + message_id + b'">' + body + b"</rpc-reply>"


class Recorder:
    """An EventBus plus the list of events it emitted."""

    def __init__(self, clock):
        self.bus = EventBus(clock=clock)
        self.events = []
        self.bus.addObserver(self.events.append)

    def named(self, name):
        return [event for event in self.events if event["event"] == name]


class InMemoryMixin:
    """A client and a test device joined in memory, both on one Clock."""

    def connect(self, settings=None, datastore=None, **device_options):
        self.clock = task.Clock()
        self.recorder = Recorder(self.clock)
        self.device = NetconfServerProtocol(datastore or Datastore(), clock=self.clock, **device_options)
        self.client = NetconfClientProtocol(
            self.recorder.bus, settings, clock=self.clock, device_id="dev-1", connection_id="c1",
            details={"transport": "test", "peer": "192.0.2.1:4334"},
        )
        self.pump = connect_in_memory(self.device, self.client)
        self.pump.flush()
        return self.successResultOf(self.client.whenReady())


class ScriptedMixin:
    """A client on a StringTransport: the test plays the device byte by byte."""

    def start(self, settings=None):
        self.clock = task.Clock()
        self.recorder = Recorder(self.clock)
        self.client = NetconfClientProtocol(self.recorder.bus, settings, clock=self.clock, device_id="dev-9")
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.ready = self.client.whenReady()
        return self.client

    def send_hello(self, capabilities=(BASE_1_0, BASE_1_1), session_id=7):
        self.client.dataReceived(encode_eom(hello_message(capabilities, session_id)))

    def sent_messages(self, chunked=True):
        """Everything the client wrote, decoded: the hello and then the RPCs."""
        decoder = FrameDecoder()
        decoder.push(self.transport.value())
        messages = [decoder.next_message()]
        if chunked:
            decoder.switch_to_chunked()
        while (message := decoder.next_message()) is not None:
            messages.append(message)
        return [etree.fromstring(m) for m in messages]


class HelloTests(ScriptedMixin, InMemoryMixin, TestCase):
    def test_client_sends_hello_with_its_capabilities_first(self):
        self.start()
        [hello] = self.sent_messages()
        self.assertEqual(hello.tag, HELLO)
        self.assertEqual([c.text for c in hello.iter(qn("capability"))], [BASE_1_0, BASE_1_1])
        self.assertIsNone(hello.find(qn("session-id")), "a client hello carries no session-id")

    def test_session_after_hello(self):
        session = self.connect()
        self.assertIsInstance(session, NetconfSession)
        self.assertEqual(session.session_id, self.device.session_id)
        self.assertEqual(session.base, "1.1")
        self.assertIn(BASE_1_1, session.capabilities)
        self.assertIsInstance(session.capabilities, frozenset)
        self.assertEqual(session.device_id, "dev-1")
        self.assertEqual(session.details["session_id"], self.device.session_id)
        self.assertEqual(session.details["capability_count"], len(self.device.capabilities))
        self.assertEqual(session.details["transport"], "test")
        [done] = self.recorder.named("netconf.hello.done")
        self.assertEqual((done["device_id"], done["base"], done["peer"]), ("dev-1", "1.1", "192.0.2.1:4334"))
        self.assertIs(self.successResultOf(self.client.whenReady()), session)

    def test_base_1_0_device_uses_end_of_message_framing(self):
        session = self.connect(bases=("1.0",))
        self.assertEqual(session.base, "1.0")
        self.assertEqual(self.device.base, "1.0")
        done = session.rpc(b"<get/>")
        self.pump.flush()
        self.assertEqual(self.successResultOf(done).tag, RPC_REPLY)

    def test_client_limited_to_1_0(self):
        session = self.connect(settings=Settings(capabilities=(BASE_1_0,)))
        self.assertEqual(session.base, "1.0")

    def test_no_common_base_ends_session(self):
        self.start(Settings(capabilities=(BASE_1_1,)))
        self.send_hello(capabilities=(BASE_1_0,))
        failure = self.failureResultOf(self.ready, NetconfProtocolError)
        self.assertIn("no common NETCONF base", str(failure.value))
        self.assertTrue(self.transport.disconnecting)

    def test_capability_parameters_do_not_hide_base(self):
        self.start()
        self.send_hello(capabilities=(BASE_1_1 + "?x=1", "urn:example:cap?module=m&revision=2020-01-01"))
        session = self.successResultOf(self.ready)
        self.assertEqual(session.base, "1.1")
        self.assertTrue(session.has_capability("urn:example:cap"))
        self.assertEqual(session.capability_parameters("urn:example:cap"), {"module": "m", "revision": "2020-01-01"})

    def test_hello_timeout(self):
        self.start()
        self.clock.advance(29.9)
        self.assertNoResult(self.ready)
        self.clock.advance(0.2)
        failure = self.failureResultOf(self.ready, HelloTimeoutError)
        self.assertIn("30 s", str(failure.value))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.recorder.named("netconf.hello.timeout")), 1)
        self.failureResultOf(self.client.whenReady(), HelloTimeoutError)

    def test_hello_in_time_cancels_timer(self):
        self.start()
        self.send_hello()
        self.successResultOf(self.ready)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_hello_without_session_id(self):
        self.start()
        self.client.dataReceived(encode_eom(hello_message([BASE_1_1])))
        failure = self.failureResultOf(self.ready, NetconfProtocolError)
        self.assertIn("session-id", str(failure.value))
        [event] = self.recorder.named("netconf.protocol.error")
        self.assertTrue(event["fatal"])
        self.assertTrue(self.transport.disconnecting)

    def test_hello_with_bad_session_id(self):
        for bad in (b"0", b"abc", b"4294967296"):
            self.start()
            hello = hello_message([BASE_1_1], 1).replace(b">1<", b">" + bad + b"<")
            self.client.dataReceived(encode_eom(hello))
            self.failureResultOf(self.ready, NetconfProtocolError)

    def test_second_hello_ends_session_and_fails_rpcs(self):
        self.start()
        self.send_hello()
        session = self.successResultOf(self.ready)
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(hello_message([BASE_1_1], 8)))
        failure = self.failureResultOf(pending, SessionLostError)
        self.assertIn("second <hello>", str(failure.value))
        self.assertTrue(self.transport.disconnecting)

    def test_reply_before_hello_is_protocol_error(self):
        self.start()
        self.client.dataReceived(encode_eom(reply(b"1")))
        failure = self.failureResultOf(self.ready, NetconfProtocolError)
        self.assertIn("expected <hello>", str(failure.value))

    def test_lost_during_hello(self):
        self.start()
        self.client.connectionLost(None)
        self.failureResultOf(self.ready, SessionLostError)
        self.assertEqual(self.successResultOf(self.client.whenLost()), "connection closed")
        [event] = self.recorder.named("netconf.session.lost")
        self.assertEqual(event["during"], "hello")

    def test_when_ready_after_session_ended(self):
        self.start()
        self.send_hello()
        self.successResultOf(self.ready)
        self.client.connectionLost(None)
        self.failureResultOf(self.client.whenReady(), SessionLostError)

    def test_ready_session_only_while_whenReady_would_succeed(self):
        """ready_session (what the TLS handler registers without a Deferred) is whenReady's session, and only then."""
        self.start()
        self.assertIsNone(self.client.ready_session)
        self.send_hello()
        session = self.successResultOf(self.ready)
        self.assertIs(self.client.ready_session, session)
        self.client.connectionLost(None)
        self.assertIsNone(self.client.ready_session)
        self.assertIsNotNone(self.client.session)

    def test_close_before_connection_is_harmless(self):
        client = NetconfClientProtocol(clock=task.Clock())
        client.close("never mind")
        self.failureResultOf(client.whenReady(), SessionLostError)

    def test_rpc_before_ready_refused(self):
        self.start()
        self.failureResultOf(self.client.rpc(b"<get/>"), NetconfProtocolError)


class RPCTests(ScriptedMixin, InMemoryMixin, TestCase):
    def test_rpc_sends_message_ids_and_matches_reply(self):
        self.start()
        self.send_hello()
        session = self.successResultOf(self.ready)
        first = session.rpc(b'<?xml version="1.0"?><get/>')
        second = session.rpc(etree.Element(qn("get-config")))
        hello, rpc1, rpc2 = self.sent_messages()
        self.assertEqual((rpc1.get("message-id"), rpc2.get("message-id")), ("1", "2"))
        self.assertEqual(rpc1[0].tag, qn("get"))
        self.assertEqual(rpc2[0].tag, qn("get-config"))
        self.client.dataReceived(encode_chunked(reply(b"2", b"<data/>")))
        self.assertNoResult(first)
        self.assertEqual(self.successResultOf(second).find(qn("data")).tag, qn("data"))
        self.client.dataReceived(encode_chunked(reply(b"1")))
        self.assertEqual(self.successResultOf(first).get("message-id"), "1")

    def test_no_dict_of_outstanding_rpcs_before_the_first_rpc(self):
        # An idle session (most of those held) keeps no dict of its own for
        # its outstanding RPCs; its first RPC gets one, the shared one stays empty.
        self.start()
        self.send_hello()
        session = self.successResultOf(self.ready)
        other = NetconfClientProtocol(clock=task.Clock())
        self.assertIs(self.client._pending, other._pending)
        first = session.rpc(b"<get/>")
        self.assertIsNot(self.client._pending, other._pending)
        self.assertEqual(other._pending, {})
        self.client.dataReceived(encode_chunked(reply(b"1")))
        self.successResultOf(first)
        self.assertEqual(other._pending, {})
        self.client.connectionLost(None)
        self.assertIs(self.client._pending, other._pending)
        self.assertEqual(other._pending, {})

    def test_rpc_error_carries_every_field_of_every_error(self):
        self.start()
        self.send_hello()
        session = self.successResultOf(self.ready)
        pending = session.rpc(b"<edit-config/>")
        body = b"""
          <rpc-error>
            <error-type>application</error-type><error-tag>invalid-value</error-tag>
            <error-severity>error</error-severity><error-app-tag>too-big</error-app-tag>
            <error-path xmlns:t="urn:t">/t:top/t:mtu</error-path>
            <error-message xml:lang="en">MTU too large</error-message>
            <error-info><bad-element>mtu</bad-element></error-info>
          </rpc-error>
          <rpc-error>
            <error-type>protocol</error-type><error-tag>lock-denied</error-tag>
            <error-severity>error</error-severity>
            <error-info><session-id>4</session-id></error-info>
          </rpc-error>"""
        self.client.dataReceived(encode_chunked(reply(b"1", body)))
        error = self.failureResultOf(pending, RPCError).value
        self.assertEqual(len(error.errors), 2)
        first, second = error.errors
        self.assertEqual(
            (first.type, first.tag, first.severity, first.app_tag, first.path, first.message, first.message_lang),
            ("application", "invalid-value", "error", "too-big", "/t:top/t:mtu", "MTU too large", "en"),
        )
        self.assertEqual(first.info.findtext(qn("bad-element")), "mtu")
        self.assertEqual((second.tag, second.app_tag, second.path, second.message), ("lock-denied", None, None, None))
        self.assertEqual(second.info.findtext(qn("session-id")), "4")
        self.assertEqual(error.tag, "invalid-value")
        self.assertEqual(error.operation, "edit-config")
        self.assertIn("MTU too large", str(error))
        self.assertEqual(error.reply.tag, RPC_REPLY)

    def test_warnings_only_is_success(self):
        self.start()
        self.send_hello()
        pending = self.successResultOf(self.ready).rpc(b"<commit/>")
        warning = (b"<rpc-error><error-type>application</error-type><error-tag>operation-failed</error-tag>"
                   b"<error-severity>warning</error-severity></rpc-error><ok/>")
        self.client.dataReceived(encode_chunked(reply(b"1", warning)))
        self.assertIsNotNone(self.successResultOf(pending).find(qn("ok")))

    def test_pipelined_rpcs_answered_out_of_order(self):
        session = self.connect()
        self.device.hold_replies = True
        pending = [session.rpc(b"<get/>") for _ in range(10)]
        self.pump.flush()
        self.assertEqual(len(self.device.held), 10)
        fired = []
        for index, deferred in enumerate(pending):
            deferred.addCallback(lambda result, index=index: fired.append((index, result.get("message-id"))))
        self.device.hold_replies = False
        self.device.release_replies()  # newest first
        self.pump.flush()
        self.assertEqual(fired, [(i, str(i + 1)) for i in reversed(range(10))])

    def test_per_rpc_timeout(self):
        session = self.connect(settings=Settings(rpc_timeout=60))
        self.device.stop_answering = True
        short = session.rpc(b"<get/>", timeout=5)
        default = session.rpc(b"<get/>")
        self.pump.flush()
        self.clock.advance(5)
        failure = self.failureResultOf(short, RPCTimeoutError)
        self.assertEqual((failure.value.message_id, failure.value.operation), ("1", "get"))
        self.assertNoResult(default)
        self.clock.advance(55)
        self.failureResultOf(default, RPCTimeoutError)
        self.assertEqual(len(self.recorder.named("netconf.rpc.timeout")), 2)
        self.assertTrue(session.is_up, "a timed-out RPC does not end the session")

    def test_timeout_zero_means_no_timer(self):
        session = self.connect()
        self.device.stop_answering = True
        pending = session.rpc(b"<get/>", timeout=0)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()], [])
        self.clock.advance(10000)
        self.assertNoResult(pending)
        pending.cancel()
        self.failureResultOf(pending, defer.CancelledError)

    def test_reply_after_timeout_is_ignored_quietly(self):
        session = self.connect()
        self.device.hold_replies = True
        pending = session.rpc(b"<get/>", timeout=1)
        self.pump.flush()
        self.clock.advance(1)
        self.failureResultOf(pending, RPCTimeoutError)
        self.device.release_replies()
        self.pump.flush()
        self.assertEqual(len(self.recorder.named("netconf.rpc.late-reply")), 1)
        self.assertEqual(self.recorder.named("netconf.protocol.error"), [])
        self.assertTrue(session.is_up)

    def test_cancelled_rpc_forgets_reply(self):
        session = self.connect()
        self.device.hold_replies = True
        pending = session.rpc(b"<get/>")
        self.pump.flush()
        pending.cancel()
        self.failureResultOf(pending, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.device.release_replies()
        self.pump.flush()
        self.assertEqual(len(self.recorder.named("netconf.rpc.late-reply")), 1)

    def test_unknown_message_id_is_reported_and_dropped(self):
        self.start()
        self.send_hello()
        session = self.successResultOf(self.ready)
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(reply(b"99")))
        [event] = self.recorder.named("netconf.protocol.error")
        self.assertIn("unknown message-id '99'", event["reason"])
        self.assertFalse(event["fatal"])
        self.assertNoResult(pending)
        self.assertFalse(self.transport.disconnecting)

    def test_reply_without_message_id_is_reported(self):
        self.start()
        self.send_hello()
        self.client.dataReceived(encode_chunked(b'<rpc-reply xmlns="%s"><ok/></rpc-reply>' % BASE_NS.encode()))
        [event] = self.recorder.named("netconf.protocol.error")
        self.assertIn("without a message-id", event["reason"])

    def test_session_loss_fails_every_outstanding_rpc_at_once(self):
        session = self.connect()
        self.device.stop_answering = True
        pending = [session.rpc(b"<get/>") for _ in range(3)]
        lost = session.whenLost()
        self.pump.flush()
        self.device.transport.loseConnection()
        self.pump.flush()
        for deferred in pending:
            failure = self.failureResultOf(deferred, SessionLostError)
            self.assertIn("session lost before the reply", str(failure.value))
        self.assertIsInstance(self.successResultOf(lost), str)
        self.assertEqual(self.clock.getDelayedCalls(), [], "RPC timers are cancelled")
        self.failureResultOf(session.rpc(b"<get/>"), SessionLostError)
        self.assertEqual(len(self.recorder.named("netconf.session.lost")), 1)
        self.assertFalse(session.is_up)

    def test_framing_error_from_device_ends_session(self):
        self.start()
        self.send_hello()
        pending = self.successResultOf(self.ready).rpc(b"<get/>")
        self.client.dataReceived(b"\n#0\n")
        failure = self.failureResultOf(pending, SessionLostError)
        self.assertIn("protocol error", str(failure.value))
        self.assertIn("zero", str(failure.value))
        self.assertTrue(self.transport.disconnecting)
        self.client.dataReceived(encode_chunked(reply(b"1")))  # ignored once failing

    def test_oversized_reply_ends_session(self):
        self.start(Settings(max_message_size=1000))
        self.send_hello()
        pending = self.successResultOf(self.ready).rpc(b"<get/>")
        self.client.dataReceived(b"\n#2000\n")
        self.failureResultOf(pending, SessionLostError)
        [event] = self.recorder.named("netconf.protocol.error")
        self.assertIn("exceeds the configured limit of 1000", event["reason"])

    def test_doctype_from_device_ends_session(self):
        self.start()
        self.send_hello()
        pending = self.successResultOf(self.ready).rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(b'<!DOCTYPE r [<!ENTITY e "x">]>' + reply(b"1", b"<data>&e;</data>")))
        failure = self.failureResultOf(pending, SessionLostError)
        self.assertIn("DOCTYPE", str(failure.value))

    def test_doctype_hello_refused(self):
        self.start()
        self.client.dataReceived(encode_eom(b"<!DOCTYPE hello>" + hello_message([BASE_1_1], 1)))
        self.failureResultOf(self.ready, NetconfProtocolError)

    def test_eom_delimiter_inside_rpc_refused_under_1_0(self):
        session = self.connect(bases=("1.0",))
        self.failureResultOf(session.rpc(b"<get><x>]]>]]></x></get>"), ValueError)

    def test_large_reply_through_chunked_framing(self):
        big = "<leaf>" + "x" * 2_000_000 + "</leaf>"
        datastore = Datastore(running=f'<top xmlns="urn:t">{big}</top>')
        session = self.connect(datastore=datastore)
        data = session.get_config()
        self.pump.flush()
        self.assertEqual(len(self.successResultOf(data).find("{urn:t}top/{urn:t}leaf").text), 2_000_000)


class ReplyStreamPropertyTests(ScriptedMixin, TestCase):
    @given(st.integers(1, 12).flatmap(lambda n: st.permutations(range(n))),
           st.lists(st.integers(min_value=0), max_size=25), st.booleans())
    @settings(max_examples=100, deadline=None)
    def test_any_order_any_split_matches_every_reply(self, order, cuts, chunked):
        self.start(Settings(capabilities=(BASE_1_1,) if chunked else (BASE_1_0,)))
        self.send_hello()
        session = self.successResultOf(self.ready)
        pending = [session.rpc(b"<get/>") for _ in order]
        frame = encode_chunked if chunked else encode_eom
        stream = b"".join(frame(reply(b"%d" % (i + 1), b"<data><n>%d</n></data>" % i)) for i in order)
        points = sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]
        start = 0
        for point in points:
            self.client.dataReceived(stream[start:point])
            start = point
        for index, deferred in enumerate(pending):
            self.assertEqual(self.successResultOf(deferred).findtext(f"{qn('data')}/{qn('n')}"), str(index))

    def test_send_chunk_size_is_respected(self):
        self.start(Settings(send_chunk_size=16))
        self.send_hello()
        self.successResultOf(self.ready).rpc(b"<get><filter>" + b"x" * 100 + b"</filter></get>")
        written = self.transport.value().split(b"]]>]]>", 1)[1]
        sizes = [int(line[1:]) for line in written.split(b"\n") if line.startswith(b"#") and line != b"##"]
        self.assertTrue(sizes and max(sizes) == 16, sizes)
        self.assertEqual(self.sent_messages()[1][0][0].text, "x" * 100)

    def test_notification_and_replies_in_one_read_keep_order(self):
        self.start()
        self.send_hello()
        session = self.successResultOf(self.ready)
        seen = []
        session.create_subscription(lambda n: seen.append("notification"))
        second = session.rpc(b"<get/>")
        second.addCallback(lambda r: seen.append("reply 2"))
        note = (b'<notification xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0">'
                b"<eventTime>2026-01-01T00:00:00Z</eventTime><e/></notification>")
        self.client.dataReceived(b"".join(encode_chunked(m) for m in (reply(b"1"), note, reply(b"2"), note)))
        self.assertEqual(seen, ["notification", "reply 2", "notification"])


class NotificationTests(InMemoryMixin, ScriptedMixin, TestCase):
    def test_notifications_delivered_in_order(self):
        session = self.connect()
        received = []
        subscribed = session.create_subscription(received.append)
        self.pump.flush()
        self.successResultOf(subscribed)
        for index in range(20):
            self.assertTrue(self.device.notify(f'<event xmlns="urn:e"><n>{index}</n></event>'))
        self.pump.flush()
        self.assertEqual([n.findtext("{urn:e}event/{urn:e}n") for n in received], [str(i) for i in range(20)])
        self.assertIsNotNone(received[0].find("{urn:ietf:params:xml:ns:netconf:notification:1.0}eventTime"))

    def test_event_time_comes_from_the_device_clock(self):
        session = self.connect()
        received = []
        session.create_subscription(received.append)
        self.pump.flush()
        self.clock.advance(86400)
        self.device.notify('<tick xmlns="urn:e"/>')
        self.pump.flush()
        event_time = received[0].findtext("{urn:ietf:params:xml:ns:netconf:notification:1.0}eventTime")
        self.assertTrue(event_time.startswith("1970-01-02T00:00"), event_time)

    def test_failing_callback_does_not_stop_delivery(self):
        session = self.connect()
        received = []

        def callback(notification):
            received.append(notification)
            if len(received) == 1:
                raise RuntimeError("dashboard broke")

        session.create_subscription(callback)
        self.pump.flush()
        self.device.notify('<a xmlns="urn:e"/>')
        self.device.notify('<b xmlns="urn:e"/>')
        self.pump.flush()
        self.assertEqual(len(received), 2)
        [event] = self.recorder.named("netconf.notification.callback.error")
        self.assertIn("dashboard broke", event["reason"])
        self.assertTrue(session.is_up)

    def test_refused_subscription_removes_callback(self):
        session = self.connect()
        refused = session.create_subscription(lambda n: None, stream="NOPE")
        self.pump.flush()
        self.assertEqual(self.failureResultOf(refused, RPCError).value.tag, "invalid-value")
        self.assertIsNone(self.client._subscriber)

    def test_notification_without_subscription_is_reported(self):
        self.start()
        self.send_hello()
        self.client.dataReceived(encode_chunked(
            b'<notification xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0">'
            b"<eventTime>2026-01-01T00:00:00Z</eventTime><e/></notification>"))
        self.assertEqual(len(self.recorder.named("netconf.notification.unexpected")), 1)

    def test_notification_filter_applied_by_device(self):
        session = self.connect()
        received = []
        session.create_subscription(received.append, filter='<alarm xmlns="urn:e"/>')
        self.pump.flush()
        self.assertFalse(self.device.notify('<heartbeat xmlns="urn:e"/>'))
        self.assertTrue(self.device.notify('<alarm xmlns="urn:e"><sev>major</sev></alarm>'))
        self.pump.flush()
        self.assertEqual([etree.QName(n[1]).localname for n in received], ["alarm"])


class CloseTests(InMemoryMixin, TestCase):
    def test_close_sends_close_session_and_ends(self):
        session = self.connect()
        lost = session.whenLost()
        session.close("operator asked")
        self.failureResultOf(session.rpc(b"<get/>"), SessionLostError)
        self.pump.flush()
        self.assertEqual(self.device.received[-1][0].tag, qn("close-session"))
        self.assertEqual(self.successResultOf(lost), "operator asked")
        self.assertEqual(len(self.recorder.named("netconf.session.closing")), 1)
        [closed] = self.recorder.named("netconf.session.closed")
        self.assertEqual(closed["reason"], "operator asked")

    def test_close_drops_transport_when_device_is_silent(self):
        session = self.connect(settings=Settings(close_timeout=3))
        self.device.stop_answering = True
        lost = session.whenLost()
        session.close()
        self.pump.flush()
        self.assertNoResult(lost)
        self.clock.advance(3)
        self.pump.flush()
        self.assertEqual(self.successResultOf(lost), "closed")

    def test_close_session_returns_reply(self):
        session = self.connect()
        closing = session.close_session()
        self.pump.flush()
        self.assertIsNotNone(self.successResultOf(closing).find(qn("ok")))
        self.assertEqual(self.client.state, "lost")
        self.failureResultOf(session.close_session(), SessionLostError)

    def test_close_session_answered_even_when_replies_are_held(self):
        session = self.connect()
        self.device.hold_replies = True
        held = session.rpc(b"<get/>")
        closing = session.close_session()
        self.pump.flush()
        self.assertIsNotNone(self.successResultOf(closing).find(qn("ok")))
        self.failureResultOf(held, SessionLostError)

    def test_close_twice_and_after_loss_is_harmless(self):
        session = self.connect()
        session.close()
        session.close()
        self.pump.flush()
        session.close()
        self.assertEqual(len(self.device.received), 1)

    def test_registry_sees_session_come_and_go(self):
        session = self.connect()
        registry = SessionRegistry(self.recorder.bus)
        registry.register(session)
        self.assertIs(self.successResultOf(registry.whenConnected("dev-1")), session)
        self.device.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(len(registry), 0)
        [event] = self.recorder.named("session.lost")
        self.assertEqual(event["transport"], "test")

    def test_registry_watches_the_session_without_a_deferred(self):
        # The registry is told of the end directly (watchLost): nothing is
        # kept per session for it but one reference.
        session = self.connect()
        registry = SessionRegistry(self.recorder.bus)
        registry.register(session)
        self.assertIsNone(self.client._lost_waiters)
        self.assertIs(self.client._lost_watcher, registry)
        # whenLost() still works for everyone else, and fires after the registry is told.
        order = []
        registry.addLostObserver(lambda s: order.append("registry"))
        session.whenLost().addCallback(order.append)
        self.device.transport.loseConnection()
        self.pump.flush()
        [event] = self.recorder.named("session.lost")
        self.assertEqual(order, ["registry", event["reason"]])
        self.assertIsNone(self.client._lost_watcher)
        self.assertEqual(len(registry), 0)

    def test_registering_a_lost_session_reports_it_lost_at_once(self):
        session = self.connect()
        self.device.transport.loseConnection()
        self.pump.flush()
        registry = SessionRegistry(self.recorder.bus)
        registry.register(session)
        self.assertEqual(len(registry), 0)
        [event] = self.recorder.named("session.lost")
        self.assertEqual(event["reason"], self.successResultOf(session.whenLost()))

    def test_a_second_registry_is_told_through_when_lost(self):
        session = self.connect()
        first, second = SessionRegistry(self.recorder.bus), SessionRegistry(self.recorder.bus)
        first.register(session)
        second.register(session)
        self.assertEqual(len(self.client._lost_waiters), 1)
        self.device.transport.loseConnection()
        self.pump.flush()
        self.assertEqual((len(first), len(second)), (0, 0))
        self.assertEqual(len(self.recorder.named("session.lost")), 2)

    def test_registering_a_lost_session_with_a_failing_watcher_still_registers(self):
        # A session that ended before it was registered: the registry is
        # told at once.  If that fails, register() goes on (session.up, the
        # observers, whenConnected()), as the whenLost() callback that
        # failed did: the failure is logged, not raised to the transport.
        session = self.connect()
        self.device.transport.loseConnection()
        self.pump.flush()

        class Failing(SessionRegistry):
            def sessionLost(self, session, reason):
                raise RuntimeError("broken registry")

        registry = Failing(self.recorder.bus)
        waiting = registry.whenConnected(session.device_id)
        registry.register(session)
        self.assertIs(self.successResultOf(waiting), session)
        self.assertEqual(len(self.recorder.named("session.up")), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_failing_lost_watcher_is_logged_and_waiters_still_fire(self):
        session = self.connect()
        lost = session.whenLost()

        class Broken:
            def sessionLost(self, session, reason):
                raise RuntimeError("broken watcher")

        self.assertTrue(session.watchLost(Broken()))
        self.device.transport.loseConnection()
        self.pump.flush()
        self.assertIn("closed", self.successResultOf(lost))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class RecordingTransport(StringTransport):
    """A StringTransport that also keeps each write() call's bytes."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, data):
        self.writes.append(data)
        super().write(data)


class CoalescedWriteTests(ScriptedMixin, TestCase):
    def start_recording(self, settings=None):
        self.clock = task.Clock()
        self.recorder = Recorder(self.clock)
        self.client = NetconfClientProtocol(self.recorder.bus, settings, clock=self.clock, device_id="dev-9")
        self.transport = RecordingTransport()
        self.client.makeConnection(self.transport)
        self.ready = self.client.whenReady()

    def test_rpcs_sent_by_reply_callbacks_go_out_in_one_write(self):
        for chunked in (True, False):
            self.start_recording(Settings(capabilities=(BASE_1_1,) if chunked else (BASE_1_0,)))
            self.send_hello()
            session = self.successResultOf(self.ready)
            first = [session.rpc(b"<get/>") for _ in range(5)]
            followers = []
            for deferred in first:
                deferred.addCallback(lambda _: followers.append(session.rpc(b"<commit/>")))
            del self.transport.writes[:]
            frame = encode_chunked if chunked else encode_eom
            self.client.dataReceived(b"".join(frame(reply(b"%d" % i)) for i in range(1, 6)))
            self.assertEqual(len(followers), 5)
            self.assertEqual(len(self.transport.writes), 1, "five RPCs, one write")
            rpcs = self.sent_messages(chunked)[6:]
            self.assertEqual([r.get("message-id") for r in rpcs], ["6", "7", "8", "9", "10"])
            self.assertEqual({r[0].tag for r in rpcs}, {qn("commit")})

    def test_rpc_outside_a_read_is_written_at_once(self):
        self.start_recording()
        self.send_hello()
        del self.transport.writes[:]
        self.successResultOf(self.ready).rpc(b"<get/>")
        self.assertEqual(len(self.transport.writes), 1)

    def test_large_rpc_during_a_read_keeps_order(self):
        self.start_recording()
        self.send_hello()
        session = self.successResultOf(self.ready)
        big = b"<edit-config><config>" + b"x" * 100_000 + b"</config></edit-config>"
        sent = session.rpc(b"<get/>")
        sent.addCallback(lambda _: [session.rpc(b"<commit/>"), session.rpc(big), session.rpc(b"<validate/>")])
        del self.transport.writes[:]
        self.client.dataReceived(encode_chunked(reply(b"1")))
        self.assertEqual(len(self.transport.writes), 3, "held small one, the big one at once, then the last")
        rpcs = self.sent_messages()[2:]
        self.assertEqual([r[0].tag for r in rpcs], [qn("commit"), qn("edit-config"), qn("validate")])

    def test_held_rpcs_are_written_before_a_protocol_error_closes(self):
        self.start_recording()
        self.send_hello()
        session = self.successResultOf(self.ready)
        session.rpc(b"<get/>").addCallback(lambda _: session.rpc(b"<commit/>").addErrback(lambda f: None))
        self.client.dataReceived(encode_chunked(reply(b"1")) + b"\n#0\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.sent_messages()[-1][0].tag, qn("commit"))


class StreamedReplyTests(ScriptedMixin, TestCase):
    """Replies larger than stream_after are parsed while they arrive."""

    BODY = b"<data>" + b"".join(b"<n>%d</n>" % i for i in range(40)) + b"</data>"

    def start_streaming(self, settings=None, stream_after=16):
        self.start(settings)
        self.client.stream_after = stream_after
        self.send_hello()
        return self.successResultOf(self.ready)

    def test_reply_split_at_every_byte_boundary(self):
        stream = encode_chunked(reply(b"1", self.BODY), 50) + encode_chunked(reply(b"2"))
        for cut in range(len(stream) + 1):
            session = self.start_streaming()
            first, second = session.rpc(b"<get/>"), session.rpc(b"<commit/>")
            self.client.dataReceived(stream[:cut])
            self.client.dataReceived(stream[cut:])
            data = self.successResultOf(first).find(qn("data"))
            self.assertEqual([n.text for n in data], [str(i) for i in range(40)], f"cut at {cut}")
            self.assertEqual(self.successResultOf(second).get("message-id"), "2")

    def test_streamed_reply_one_byte_at_a_time(self):
        session = self.start_streaming()
        pending = session.rpc(b"<get/>")
        for byte in encode_chunked(reply(b"1", self.BODY), 7):
            self.client.dataReceived(bytes([byte]))
        self.assertEqual(len(self.successResultOf(pending).find(qn("data"))), 40)

    def test_oversized_streamed_message_still_refused(self):
        session = self.start_streaming(Settings(max_message_size=400))
        pending = session.rpc(b"<get/>")
        message = reply(b"1", self.BODY)
        self.assertGreater(len(message), 400)
        stream = encode_chunked(message, 100)
        self.client.dataReceived(stream[:250])
        self.assertNoResult(pending)
        self.client.dataReceived(stream[250:])
        self.failureResultOf(pending, SessionLostError)
        [event] = self.recorder.named("netconf.protocol.error")
        self.assertIn("exceeds the limit of 400", event["reason"])

    def test_malformed_streamed_reply_ends_session(self):
        session = self.start_streaming()
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(reply(b"1", self.BODY.replace(b"</data>", b"</date>")), 30))
        failure = self.failureResultOf(pending, SessionLostError)
        self.assertIn("malformed XML", str(failure.value))

    def test_doctype_in_streamed_reply_ends_session(self):
        session = self.start_streaming()
        pending = session.rpc(b"<get/>")
        message = b'<!DOCTYPE r [<!ENTITY e "x">]>' + reply(b"1", b"<data>&e;" + b"x" * 100 + b"</data>")
        self.client.dataReceived(encode_chunked(message, 20))
        self.assertIn("DOCTYPE", str(self.failureResultOf(pending, SessionLostError).value))

    def test_default_threshold_streams_a_large_reply(self):
        session = self.start_streaming(stream_after=NetconfClientProtocol.stream_after)
        pending = session.rpc(b"<get/>")
        body = b"<data>" + b"<n>x</n>" * 50_000 + b"</data>"
        stream = encode_chunked(reply(b"1", body))
        for start in range(0, len(stream), 32768):
            self.client.dataReceived(stream[start : start + 32768])
            if NetconfClientProtocol.stream_after < start + 32768 < len(stream):
                self.assertIsNotNone(self.client._stream, "parsing while the reply arrives")
        self.assertGreater(len(stream), 4 * NetconfClientProtocol.stream_after)
        self.assertEqual(len(self.successResultOf(pending).find(qn("data"))), 50_000)


class DeadlineSweepTests(InMemoryMixin, TestCase):
    """RPC timeouts: one timer for every deadline, on the Clock."""

    def test_each_rpc_times_out_at_its_own_deadline(self):
        session = self.connect()
        self.device.stop_answering = True
        pending = {timeout: session.rpc(b"<get/>", timeout=timeout) for timeout in (30, 5, 20, 10)}
        self.pump.flush()
        self.assertEqual(len([c for c in self.clock.getDelayedCalls() if c.active()]), 1, "one timer, not one per RPC")
        for due in (5, 10, 20, 30):
            self.clock.advance(due - 1 - self.clock.seconds())
            self.assertNoResult(pending[due])
            self.clock.advance(1)
            self.assertEqual(self.failureResultOf(pending[due], RPCTimeoutError).value.timeout, due)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_shorter_timeout_added_later_fires_first(self):
        session = self.connect()
        self.device.stop_answering = True
        long = session.rpc(b"<get/>", timeout=60)
        self.clock.advance(10)
        short = session.rpc(b"<get/>", timeout=1)
        self.clock.advance(1)
        self.failureResultOf(short, RPCTimeoutError)
        self.assertNoResult(long)
        self.clock.advance(49)
        self.failureResultOf(long, RPCTimeoutError)

    def test_answered_rpcs_leave_the_timer_for_the_rest(self):
        session = self.connect()
        self.device.hold_replies = True
        answered = session.rpc(b"<get/>", timeout=5)
        waiting = session.rpc(b"<get/>", timeout=8)
        self.pump.flush()
        self.device.held[:] = self.device.held[:1]  # the device answers only the first
        self.device.release_replies()
        self.pump.flush()
        self.successResultOf(answered)
        self.clock.advance(5)
        self.assertNoResult(waiting)
        self.clock.advance(3)
        self.failureResultOf(waiting, RPCTimeoutError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_timer_while_nothing_is_outstanding(self):
        session = self.connect()
        for _ in range(3):
            deferred = session.rpc(b"<get/>")
            self.pump.flush()
            self.successResultOf(deferred)
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rpc_sent_from_a_timeout_errback_gets_its_deadline(self):
        session = self.connect()
        self.device.stop_answering = True
        retried = []
        session.rpc(b"<get/>", timeout=2).addErrback(lambda f: retried.append(session.rpc(b"<get/>", timeout=3)))
        self.clock.advance(2)
        [retry] = retried
        self.clock.advance(2)
        self.assertNoResult(retry)
        self.clock.advance(1)
        self.failureResultOf(retry, RPCTimeoutError)


class ReplyErrorDetectionTests(ScriptedMixin, TestCase):
    def test_prefixed_rpc_error_is_found(self):
        self.start()
        self.send_hello()
        pending = self.successResultOf(self.ready).rpc(b"<commit/>")
        body = (b'<rpc-reply xmlns:nc="' + BASE_NS.encode() + b'" message-id="1" xmlns="' + BASE_NS.encode() + b'">'
                b"<nc:rpc-error><nc:error-type>rpc</nc:error-type><nc:error-tag>lock-denied</nc:error-tag>"
                b"<nc:error-severity>error</nc:error-severity></nc:rpc-error></rpc-reply>")
        self.client.dataReceived(encode_chunked(body))
        self.assertEqual(self.failureResultOf(pending, RPCError).value.tag, "lock-denied")

    def test_rpc_error_in_a_non_ascii_first_byte_document_is_found(self):
        self.start()
        self.send_hello()
        pending = self.successResultOf(self.ready).rpc(b"<commit/>")
        body = reply(b"1", b"<rpc-error><error-type>rpc</error-type><error-tag>in-use</error-tag>"
                           b"<error-severity>error</error-severity></rpc-error>")
        self.client.dataReceived(encode_chunked(body.decode().encode("utf-16")))
        self.assertEqual(self.failureResultOf(pending, RPCError).value.tag, "in-use")


class IdleMemoryTests(InMemoryMixin, TestCase):
    """What an idle session keeps (bench/hold.py: thousands of them per process)."""

    def test_idle_session_attributes_share_keys(self):
        # CPython 3.11 keeps up to 29 instance attributes in an array whose
        # keys all instances of the class share; the 30th gives the instance
        # a dict of its own, ~1.3 KiB more per session.  Rarely set
        # attributes are class defaults until they are set.
        self.connect()
        d = self.client.session.rpc(b"<get-config><source><running/></source></get-config>")
        self.pump.flush()
        self.successResultOf(d)
        self.assertLessEqual(len(vars(self.client)), 29, sorted(vars(self.client)))
