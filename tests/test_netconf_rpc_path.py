"""
The per-RPC fast path: small replies taken from the decoder together
(FrameDecoder.next_small_messages) and handled in one loop, the RPC framed
in one format.  Each must behave exactly as the general path.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.netconf.errors import FramingError, RPCError, RPCTimeoutError, SessionLostError
from callhome_mux.netconf.framing import FrameDecoder, encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1, BASE_NS, NOTIFICATION_NS, RPC_REPLY
from callhome_mux.netconf.session import NetconfClientProtocol, hello_message
from callhome_mux.netconf.settings import NetconfSettings

BASE = BASE_NS.encode()


def reply(message_id, body=b"<ok/>"):
    return b'<rpc-reply xmlns="' + BASE + b'" message-id="' + message_id + b'">' + body + b"</rpc-reply>"


def chunk(message):
    return b"\n#%d\n%s\n##\n" % (len(message), message)


def decode_general(stream):
    decoder = FrameDecoder()
    decoder.switch_to_chunked()
    return decoder.feed(stream)


class NextSmallMessagesTests(TestCase):
    def chunked(self, **limits):
        decoder = FrameDecoder(**limits)
        decoder.switch_to_chunked()
        return decoder

    def test_takes_every_whole_single_chunk_message_of_the_read(self):
        decoder = self.chunked()
        decoder.push(chunk(b"<a/>") + chunk(b"<b/>") + chunk(b"<c/>"))
        self.assertEqual(decoder.next_small_messages(), [b"<a/>", b"<b/>", b"<c/>"])
        self.assertEqual(decoder.buffered, 0)
        self.assertIsNone(decoder.next_message())

    def test_stops_at_an_incomplete_message_which_the_general_path_finishes(self):
        decoder = self.chunked()
        stream = chunk(b"<a/>") + chunk(b"<bb/>")
        decoder.push(stream[:-3])
        self.assertEqual(decoder.next_small_messages(), [b"<a/>"])
        self.assertEqual(decoder.next_small_messages(), [])
        self.assertIsNone(decoder.next_message())
        decoder.push(stream[-3:])
        self.assertEqual(decoder.next_message(), b"<bb/>")

    def test_stops_at_a_message_of_several_chunks(self):
        decoder = self.chunked()
        decoder.push(chunk(b"<a/>") + b"\n#2\n<b\n#2\n/>\n##\n" + chunk(b"<c/>"))
        self.assertEqual(decoder.next_small_messages(), [b"<a/>"])
        self.assertEqual(decoder.next_small_messages(), [])
        self.assertEqual(decoder.next_message(), b"<b/>")
        self.assertEqual(decoder.next_small_messages(), [b"<c/>"])

    def test_nothing_in_end_of_message_framing(self):
        decoder = FrameDecoder()
        decoder.push(encode_eom(b"<a/>"))
        self.assertEqual(decoder.next_small_messages(), [])
        self.assertEqual(decoder.next_message(), b"<a/>")

    def test_malformed_headers_are_left_to_the_general_path_which_refuses_them(self):
        for bad in (b"\n#04\n<a/>\n##\n", b"\n#0\n\n##\n", b"\n#12345678901\n", b"\n#4\n<a/>\n#\n",
                    b"\n#x\n", b"\n##\n", b"\n#\n", b"#4\n<a/>\n##\n", b"\n#5\n<a/>\n##\n"):
            decoder = self.chunked()
            decoder.push(chunk(b"<ok/>") + bad)
            self.assertEqual(decoder.next_small_messages(), [b"<ok/>"], bad)
            self.assertEqual(decoder.next_small_messages(), [], bad)
            self.assertRaises(FramingError, decoder.next_message)
            self.assertEqual(decoder.next_small_messages(), [], "a broken decoder hands out nothing")

    def test_limits_are_left_to_the_general_path(self):
        for limits in ({"max_message_size": 3}, {"max_message_size": 100, "max_chunk_size": 3}):
            decoder = self.chunked(**limits)
            decoder.push(chunk(b"<a/>"))
            self.assertEqual(decoder.next_small_messages(), [], limits)
            self.assertRaises(FramingError, decoder.next_message)

    def test_only_messages_shorter_than_asked(self):
        decoder = self.chunked()
        decoder.push(chunk(b"<a/>") + chunk(b"<bbbb/>") + chunk(b"<c/>"))
        self.assertEqual(decoder.next_small_messages(below=5), [b"<a/>"])
        self.assertEqual(decoder.next_small_messages(below=5), [])
        self.assertEqual(decoder.next_message(), b"<bbbb/>")
        self.assertEqual(decoder.next_small_messages(below=5), [b"<c/>"])

    def test_not_in_the_middle_of_a_message(self):
        decoder = self.chunked()
        decoder.push(b"\n#2\n<a")
        self.assertIsNone(decoder.next_message())
        decoder.push(b"\n#2\n/>\n##\n" + chunk(b"<b/>"))
        self.assertEqual(decoder.next_small_messages(), [])
        self.assertEqual(decoder.next_message(), b"<a/>")
        self.assertEqual(decoder.next_small_messages(), [b"<b/>"])

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8),
        st.lists(st.integers(min_value=0, max_value=400), max_size=6),
        st.lists(st.booleans(), min_size=1, max_size=20),
    )
    def test_same_messages_as_next_message_however_the_stream_is_cut(self, messages, cuts, small_first):
        stream = b"".join(chunk(m) if len(m) % 3 else encode_chunked(m, 7) for m in messages)
        decoder = self.chunked()
        got = []
        start = 0
        for cut in sorted(set(c % (len(stream) + 1) for c in cuts)) + [len(stream)]:
            decoder.push(stream[start:cut])
            start = cut
            for use_small in small_first * 8:
                taken = decoder.next_small_messages() if use_small else [decoder.next_message()]
                got.extend(m for m in taken if m is not None)
        while (message := decoder.next_message()) is not None:
            got.append(message)
        self.assertEqual(got, messages)
        self.assertEqual(got, decode_general(stream))


class Harness:
    def __init__(self, testcase, settings=None, capabilities=(BASE_1_0, BASE_1_1)):
        self.clock = task.Clock()
        self.events = []
        bus = EventBus(clock=self.clock)
        bus.addObserver(self.events.append)
        self.client = NetconfClientProtocol(bus, settings, clock=self.clock, device_id="dev-1")
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.client.dataReceived(encode_eom(hello_message(capabilities, 7)))
        self.session = testcase.successResultOf(self.client.whenReady())
        self.transport.clear()

    def named(self, name):
        return [event for event in self.events if event["event"] == name]


class BatchOfRepliesTests(TestCase):
    def test_replies_notifications_and_errors_in_one_read_keep_their_order(self):
        harness = Harness(self)
        seen = []
        harness.session._subscribe(lambda notification: seen.append("notification"))
        first, second, third, fourth = (harness.session.rpc(b"<get/>") for _ in range(4))
        for number, deferred in enumerate((first, second, third, fourth), 1):
            deferred.addBoth(lambda result, number=number: seen.append(number) or result)
        notification = (b'<notification xmlns="' + NOTIFICATION_NS.encode() + b'"><eventTime>2026-01-01T00:00:00Z'
                        b"</eventTime><e/></notification>")
        prefixed = (b'<nc:rpc-reply xmlns:nc="' + BASE + b'" message-id="3"><nc:ok/></nc:rpc-reply>')
        error = reply(b"4", b"<rpc-error><error-type>rpc</error-type><error-tag>in-use</error-tag>"
                            b"<error-severity>error</error-severity></rpc-error>")
        harness.client.dataReceived(b"".join(map(chunk, (reply(b"2"), notification, reply(b"1"), prefixed, error))))
        self.assertEqual(seen, [2, "notification", 1, 3, 4])
        self.assertEqual(self.successResultOf(third).tag, RPC_REPLY)
        self.assertEqual(self.failureResultOf(fourth, RPCError).value.tag, "in-use")

    def test_a_look_alike_in_another_namespace_is_not_a_reply(self):
        harness = Harness(self)
        pending = harness.session.rpc(b"<get/>")
        other = b'<rpc-reply xmlns="' + BASE + b'/not" message-id="1"><ok/></rpc-reply>'
        harness.client.dataReceived(chunk(other))
        self.assertNoResult(pending)
        [event] = harness.named("netconf.protocol.error")
        self.assertFalse(event["fatal"])
        harness.client.dataReceived(chunk(reply(b"1")))
        self.successResultOf(pending)

    def test_a_reply_declaring_the_default_namespace_twice_ends_the_session(self):
        harness = Harness(self)
        pending = harness.session.rpc(b"<get/>")
        harness.client.dataReceived(chunk(b'<rpc-reply xmlns="' + BASE + b'" xmlns="urn:x" message-id="1"/>'))
        self.failureResultOf(pending, SessionLostError)
        self.assertTrue(harness.named("netconf.protocol.error")[0]["fatal"])

    def test_replies_after_a_malformed_one_are_not_handled(self):
        harness = Harness(self)
        first, second, third = (harness.session.rpc(b"<get/>") for _ in range(3))
        harness.client.dataReceived(chunk(reply(b"1")) + chunk(b"<rpc-reply") + chunk(reply(b"2")))
        self.successResultOf(first)
        self.failureResultOf(second, SessionLostError)
        self.failureResultOf(third, SessionLostError)
        self.assertTrue(self.transport_closed(harness))

    def transport_closed(self, harness):
        return harness.transport.disconnecting

    def test_the_session_ending_in_a_callback_stops_the_batch(self):
        harness = Harness(self)
        first, second = harness.session.rpc(b"<get/>"), harness.session.rpc(b"<get/>")
        first.addCallback(lambda _: harness.client.connectionLost(None))
        harness.client.dataReceived(chunk(reply(b"1")) + chunk(reply(b"2")))
        self.successResultOf(first)
        self.failureResultOf(second, SessionLostError)
        self.assertEqual(harness.named("netconf.protocol.error"), [])

    def test_replies_still_handled_while_closing(self):
        harness = Harness(self)
        first, second = harness.session.rpc(b"<get/>"), harness.session.rpc(b"<get/>")
        first.addCallback(lambda _: harness.session.close("done"))
        harness.client.dataReceived(chunk(reply(b"1")) + chunk(reply(b"2")))
        self.successResultOf(first)
        self.successResultOf(second)


class RPCBytesTests(TestCase):
    def test_chunked_rpc_bytes(self):
        harness = Harness(self)
        for _ in range(12):
            harness.session.rpc(b"<commit/>")
        expected = b"".join(
            chunk(b'<rpc xmlns="' + BASE + b'" message-id="%d"><commit/></rpc>' % number) for number in range(1, 13)
        )
        self.assertEqual(harness.transport.value(), expected)

    def test_end_of_message_rpc_bytes(self):
        harness = Harness(self, capabilities=(BASE_1_0,))
        harness.session.rpc("<get-config><source><running/></source></get-config>")
        self.assertEqual(
            harness.transport.value(),
            b'<rpc xmlns="' + BASE + b'" message-id="1"><get-config><source><running/></source></get-config></rpc>]]>]]>',
        )

    def test_rpc_larger_than_the_send_chunk_size(self):
        harness = Harness(self, settings=NetconfSettings(send_chunk_size=16))
        harness.session.rpc(b"<get/>")
        message = b'<rpc xmlns="' + BASE + b'" message-id="1"><get/></rpc>'
        self.assertEqual(harness.transport.value(), encode_chunked(message, 16))

    def test_declaration_and_leading_space_are_dropped_as_before(self):
        harness = Harness(self)
        harness.session.rpc(b'  <?xml version="1.0"?><get/>')
        harness.session.rpc(bytearray(b"<lock/>"))
        self.assertEqual(
            harness.transport.value(),
            chunk(b'<rpc xmlns="' + BASE + b'" message-id="1"><get/></rpc>')
            + chunk(b'<rpc xmlns="' + BASE + b'" message-id="2"><lock/></rpc>'),
        )


class CountingClock(task.Clock):
    """A Clock that counts the timers scheduled."""

    scheduled = 0

    def callLater(self, delay, callable, *args, **kw):
        self.scheduled += 1
        return super().callLater(delay, callable, *args, **kw)


class SequentialTimerTests(TestCase):
    """Sequential RPCs (each sent by the previous reply's callback) keep the one deadline timer."""

    def start(self):
        harness = Harness(self)
        harness.clock = harness.client.clock = CountingClock()
        return harness

    def chain(self, harness, count, timeout=None):
        results = []

        def send(reply=None):
            if len(results) < count:
                deferred = harness.session.rpc(b"<commit/>", timeout=timeout)
                results.append(deferred)
                deferred.addCallback(send)
            return reply

        send()
        return results

    def test_no_timer_scheduled_per_rpc(self):
        harness = self.start()
        results = self.chain(harness, 5)
        for number in range(1, 6):
            harness.client.dataReceived(chunk(reply(b"%d" % number)))
        self.assertEqual([self.successResultOf(d).get("message-id") for d in results], ["1", "2", "3", "4", "5"])
        self.assertEqual(harness.clock.scheduled, 1, "the first RPC's timer, kept for the next ones")
        self.assertEqual(harness.clock.getDelayedCalls(), [], "nothing outstanding: no timer left")

    def test_timer_kept_only_while_something_is_outstanding(self):
        harness = self.start()
        self.chain(harness, 2)
        harness.client.dataReceived(chunk(reply(b"1")))
        self.assertEqual(len(harness.clock.getDelayedCalls()), 1)
        harness.client.dataReceived(chunk(reply(b"2")))
        self.assertEqual(harness.clock.getDelayedCalls(), [])

    def test_each_rpc_still_times_out_at_its_own_deadline(self):
        harness = self.start()
        results = self.chain(harness, 2, timeout=10)
        harness.clock.advance(6)
        harness.client.dataReceived(chunk(reply(b"1")))  # the second is sent at t=6, due at t=16
        harness.clock.advance(4)  # t=10: the first RPC's deadline, the timer only re-arms
        self.assertNoResult(results[1])
        harness.clock.advance(5.9)
        self.assertNoResult(results[1])
        harness.clock.advance(0.1)
        self.assertEqual(self.failureResultOf(results[1], RPCTimeoutError).value.timeout, 10)
        self.assertEqual(harness.clock.getDelayedCalls(), [])
        [event] = harness.named("netconf.rpc.timeout")
        self.assertEqual(event["message_id"], "2")


class PlainReplyStartTests(TestCase):
    def test_the_plain_start_tag_is_root_first(self):
        from callhome_mux.netconf import xmlsafe
        from callhome_mux.netconf.session import _PLAIN_REPLY_START

        self.assertTrue(xmlsafe.root_first(_PLAIN_REPLY_START))
        self.assertTrue(_PLAIN_REPLY_START.endswith(b'"'), "the namespace's closing quote is part of it")

    def test_parse_root_first_refuses_as_parse_does(self):
        from callhome_mux.netconf import xmlsafe

        for bad in (b"<rpc-reply", b"<a></b>", b"<a>&undefined;</a>"):
            with self.assertRaises(xmlsafe.UnsafeXMLError) as parse_error:
                xmlsafe.parse(bad)
            with self.assertRaises(xmlsafe.UnsafeXMLError) as fast_error:
                xmlsafe.parse_root_first(bad)
            self.assertEqual(str(fast_error.exception), str(parse_error.exception))
