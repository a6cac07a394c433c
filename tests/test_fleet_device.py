"""The benchmarks' device (testing.fleet): canned replies, correct framing, paced by the SSH window."""

from __future__ import annotations

from lxml import etree
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.netconf.framing import FrameDecoder, encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1, qn
from callhome_mux.netconf.session import hello_message
from callhome_mux.testing.fleet import FleetNetconfDevice, big_data

BIG = big_data(50_000)


def rpc(message_id: bytes, body: bytes) -> bytes:
    return b'<rpc xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="' + message_id + b'">' + body + b"</rpc>"


class FakeChannel:
    """What the device's pacing reads and calls on a conch channel."""

    def __init__(self, window: int):
        self.remoteWindowLeft = window
        self.buf = b""
        self.written = []

    def write(self, data):
        assert len(data) <= self.remoteWindowLeft, "never beyond the window"
        self.written.append(bytes(data))
        self.remoteWindowLeft -= len(data)

    def addWindowBytes(self, count):
        self.remoteWindowLeft += count


class ChannelTransport(StringTransport):
    def __init__(self, channel):
        super().__init__()
        self._channel = channel

    def write(self, data):
        self._channel.write(data)


def start(transport, bases):
    device = FleetNetconfDevice(hello_message([BASE_1_0, BASE_1_1], session_id=1), big_reply=BIG)
    device.makeConnection(transport)
    device.dataReceived(encode_eom(hello_message(bases)))
    return device


def replies(stream: bytes, chunked: bool):
    decoder = FrameDecoder()
    decoder.push(stream)
    messages = [decoder.next_message()]  # the device's hello
    if chunked:
        decoder.switch_to_chunked()
    while (message := decoder.next_message()) is not None:
        messages.append(message)
    return [etree.fromstring(m) for m in messages[1:]]


class FleetDeviceTests(TestCase):
    def test_get_and_other_replies_in_both_framings(self):
        for bases, chunked in (([BASE_1_0, BASE_1_1], True), ([BASE_1_0], False)):
            transport = StringTransport()
            device = start(transport, bases)
            frame = encode_chunked if chunked else encode_eom
            for _ in range(2):  # the framed rest is built once and reused
                device.dataReceived(frame(rpc(b"41", b"<commit/>")) + frame(rpc(b"42", b"<get/>"))
                                    + frame(rpc(b"43", b"<get-config/>")))
            got = replies(transport.value(), chunked)
            self.assertEqual([r.get("message-id") for r in got], ["41", "42", "43"] * 2)
            self.assertIsNotNone(got[0].find(qn("ok")))
            data = got[1].find(qn("data"))
            self.assertEqual(etree.tostring(data).count(b"<interface "), BIG.count(b"<interface "))
            self.assertEqual(device.rpcs, 6)

    def test_big_reply_paced_by_the_window(self):
        channel = FakeChannel(window=10_000)
        device = start(ChannelTransport(channel), [BASE_1_1])
        device.dataReceived(encode_chunked(rpc(b"7", b"<get/>")))
        while channel.remoteWindowLeft == 0:
            channel.addWindowBytes(5_000)
            device._pump()
        stream = b"".join(channel.written)
        [reply] = replies(stream, True)
        self.assertEqual(reply.get("message-id"), "7")
        self.assertEqual(len(reply.find(qn("data"))), BIG.count(b"<interface "))


class BigReplyPreparedTests(TestCase):
    """The big reply is framed when the fleet starts, so that no benchmark counts it against the manager."""

    def test_framed_both_ways_at_start(self):
        import argparse

        from callhome_mux.testing import fleet

        args = argparse.Namespace(capabilities=2, big_reply=10_000)
        built = fleet._Fleet(args)
        for chunked in (True, False):
            key = (id(built.big), chunked)
            self.assertIn(key, fleet._BIG_REPLY_RESTS)
            self.assertIs(fleet._BIG_REPLY_RESTS[key][0], built.big)
        self.assertTrue(fleet._BIG_REPLY_RESTS[(id(built.big), True)][1].endswith(b"\n##\n"))
        self.assertTrue(fleet._BIG_REPLY_RESTS[(id(built.big), False)][1].endswith(b"]]>]]>"))


class LostBeforeHelloTests(TestCase):
    """A connection the manager ends before its <hello> is a failed device at once, with the reason."""

    def fleet(self):
        import argparse

        from callhome_mux.testing import fleet

        reports = []
        self.patch(fleet, "emit", lambda **fields: reports.append(fields))
        built = fleet._Fleet(argparse.Namespace(capabilities=2, big_reply=0, count=2))
        built.starts = {0: 0.0, 1: 0.0}
        return built, reports

    def test_closed_before_the_managers_hello_is_reported_failed(self):
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        built, reports = self.fleet()
        hello = hello_message([BASE_1_0], session_id=1)
        answered, closed = built._netconf_device(hello, 0), built._netconf_device(hello, 1)
        for device in (answered, closed):
            device.makeConnection(StringTransport())
        answered.dataReceived(encode_eom(hello_message([BASE_1_0])))
        answered.connectionLost(Failure(ConnectionLost("bye")))
        self.assertEqual(reports, [])
        closed.connectionLost(Failure(ConnectionLost("bye")))
        [report] = reports
        self.assertEqual((report["done"], report["failed"], report["timed_out"]), (1, 1, False))
        self.assertEqual(len(report["failures"]), 1)
        self.assertIn("closed before the manager's <hello>", report["failures"][0])
