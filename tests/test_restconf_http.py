"""
The serial HTTP/1.1 client and the protocol's discovery, driven byte by
byte over a StringTransport: exact wire format, ordering, bounds, timeouts
and losses, with no network and a task.Clock.
"""

from hypothesis import given, settings as hypothesis_settings, strategies as st
from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from callhome_mux.events import EventBus
from callhome_mux.restconf.errors import (
    DiscoveryFailed,
    RequestTimeout,
    ResponseTooLarge,
    SessionLost,
    TooManyRequests,
    UnsafeContent,
)
from callhome_mux.restconf.http import SerialHTTPClient
from callhome_mux.restconf.session import restconf_protocol
from callhome_mux.restconf.settings import RestconfSettings


def reply(status=200, body=b"", content_type="application/yang-data+json", extra=b""):
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n".encode()
    if body:
        head += f"Content-Type: {content_type}\r\n".encode()
    return head + extra + b"\r\n" + body


def chunked(body: bytes, content_type="application/yang-data+json"):
    head = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: {content_type}\r\n\r\n".encode()
    middle = len(body) // 2
    parts = [body[:middle], body[middle:]]
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


class SerialClientTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.broken = []
        self.transport = StringTransport()
        self.client = SerialHTTPClient(
            "device.example:4336", self.clock, max_body=1024, timeout=10, max_queued=3,
            on_broken=lambda why, kind: self.broken.append((why, kind)),
        )
        self.client.makeConnection(self.transport)

    def sent(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def test_request_is_persistent_with_host(self):
        d = self.client.request("GET", "/a", {"Accept": "application/yang-data+json"})
        wire = self.sent()
        self.assertTrue(wire.startswith(b"GET /a HTTP/1.1\r\n"))
        self.assertIn(b"host: device.example:4336\r\n", wire.lower())
        self.assertNotIn(b"connection: close", wire.lower())
        self.client.dataReceived(reply(200, b'{"x": 1}'))
        result = self.successResultOf(d)
        self.assertEqual((result.status, result.body, result.header("Content-Type")), (200, b'{"x": 1}', "application/yang-data+json"))

    def test_connection_headers_stay_ours(self):
        self.client.request("POST", "/a", {"Connection": "close", "Content-Length": "99", "Upgrade": "h2c", "If-Match": "x"}, b"{}")
        wire = self.sent().lower()
        self.assertNotIn(b"connection:", wire)
        self.assertNotIn(b"upgrade:", wire)
        self.assertEqual(wire.count(b"content-length:"), 1)
        self.assertIn(b"content-length: 2\r\n", wire)
        self.assertIn(b"if-match: x\r\n", wire)

    def test_body_sent_with_content_length(self):
        self.client.request("PUT", "/a", {"Content-Type": "application/yang-data+json"}, b'{"a": 1}')
        wire = self.sent()
        self.assertIn(b"Content-Length: 8\r\n", wire)
        self.assertTrue(wire.endswith(b'\r\n\r\n{"a": 1}'))

    def test_one_at_a_time_in_order(self):
        first = self.client.request("GET", "/1")
        second = self.client.request("GET", "/2")
        third = self.client.request("DELETE", "/3")
        self.assertTrue(self.sent().startswith(b"GET /1 "))
        self.assertEqual(self.client.pending, 3)
        self.client.dataReceived(chunked(b'{"n": 1}'))
        self.assertEqual(self.successResultOf(first).body, b'{"n": 1}')
        self.assertTrue(self.sent().startswith(b"GET /2 "))
        self.assertNoResult(third)
        self.client.dataReceived(reply(204))
        self.assertEqual(self.successResultOf(second).status, 204)
        self.assertTrue(self.sent().startswith(b"DELETE /3 "))
        self.client.dataReceived(reply(404, b"{}"))
        self.assertEqual(self.successResultOf(third).status, 404)
        self.assertEqual(self.client.sent, 3)

    def test_reply_split_across_reads(self):
        d = self.client.request("GET", "/a")
        for byte in reply(200, b'{"a": "b"}'):
            self.client.dataReceived(bytes([byte]))
        self.assertEqual(self.successResultOf(d).body, b'{"a": "b"}')

    def test_body_too_large_fails_and_connection_stays_usable(self):
        big = self.client.request("GET", "/big")
        after = self.client.request("GET", "/after")
        self.sent()
        self.client.dataReceived(chunked(b"x" * 5000))
        self.failureResultOf(big, ResponseTooLarge)
        self.assertFalse(self.transport.disconnecting)
        self.assertTrue(self.sent().startswith(b"GET /after "))
        self.client.dataReceived(reply(200, b"{}"))
        self.assertEqual(self.successResultOf(after).status, 200)

    def test_too_large_fails_at_once_and_endless_reply_breaks_at_timeout(self):
        big = self.client.request("GET", "/endless")
        after = self.client.request("GET", "/after", timeout=30)
        self.sent()
        self.client.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.client.dataReceived(b"800\r\n" + b"y" * 2048 + b"\r\n")
        self.failureResultOf(big, ResponseTooLarge)
        self.assertEqual(self.sent(), b"")  # the connection is still busy with the reply
        self.clock.advance(10)
        self.assertEqual(len(self.broken), 1)
        self.assertIn("still streaming", self.broken[0][0])
        self.client.connectionLost("aborted")
        self.failureResultOf(after, SessionLost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unasked_bytes_break_the_connection(self):
        d = self.client.request("GET", "/a")
        self.client.dataReceived(reply(200, b"{}"))
        self.successResultOf(d)
        self.client.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(self.broken, [("the device sent 17 bytes with no request outstanding", "protocol-error")])

    def test_unparseable_reply_breaks_the_connection(self):
        d = self.client.request("GET", "/a")
        self.client.dataReceived(b"HTTP/1.1 abc nonsense\r\n\r\n")
        failure = self.failureResultOf(d, SessionLost)
        self.assertIn("non-integer status code", str(failure.value))
        self.assertEqual(self.broken[0][1], "protocol-error")
        self.assertTrue(self.transport.disconnecting)

    def test_bad_target_refused_before_queueing(self):
        self.failureResultOf(self.client.request("GET", "/a b"), ValueError)
        d = self.client.request("GET", "/ok")
        self.assertTrue(self.sent().startswith(b"GET /ok "))
        self.assertNoResult(d)

    def test_queued_request_times_out_alone(self):
        on_wire = self.client.request("GET", "/slow", timeout=30)
        queued = self.client.request("GET", "/queued", timeout=5)
        self.clock.advance(5)
        self.failureResultOf(queued, RequestTimeout)
        self.assertNoResult(on_wire)
        self.assertEqual(self.broken, [])
        self.client.dataReceived(reply(200, b"{}"))
        self.successResultOf(on_wire)
        self.assertEqual(self.client.pending, 0)

    def test_timeout_on_the_wire_breaks_the_connection(self):
        d = self.client.request("GET", "/slow")
        self.clock.advance(10)
        self.failureResultOf(d, RequestTimeout)
        self.assertEqual(len(self.broken), 1)
        self.assertEqual(self.broken[0][1], "timeout")
        self.assertIn("GET /slow", self.broken[0][0])

    def test_cancel_queued_request(self):
        self.client.request("GET", "/1")
        queued = self.client.request("GET", "/2")
        queued.cancel()
        self.assertEqual(self.client.pending, 1)
        self.assertEqual(self.broken, [])
        self.failureResultOf(queued)

    def test_connection_lost_fails_everything(self):
        ds = [self.client.request("GET", f"/{n}") for n in range(3)]
        self.client.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        self.client.connectionLost("the device closed the connection")
        for d in ds:
            failure = self.failureResultOf(d, SessionLost)
            self.assertIn("the device closed the connection", str(failure.value))
        self.failureResultOf(self.client.request("GET", "/later"), SessionLost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_queue_bound(self):
        self.client.request("GET", "/wire")
        for n in range(3):
            self.client.request("GET", f"/{n}")
        self.failureResultOf(self.client.request("GET", "/one-too-many"), TooManyRequests)

    def test_connection_close_reply_stops_sending(self):
        first = self.client.request("GET", "/1")
        second = self.client.request("GET", "/2")
        self.sent()
        self.client.dataReceived(reply(200, b"{}", extra=b"Connection: close\r\n"))
        self.successResultOf(first)
        self.assertEqual(self.sent(), b"")
        self.client.connectionLost("the device closed the connection")
        self.failureResultOf(second, SessionLost)


_REPLIES = st.lists(
    st.tuples(st.sampled_from(["length", "chunked", "empty"]), st.binary(min_size=1, max_size=300), st.data()),
    min_size=1,
    max_size=6,
)


class ArbitrarySplitTests(unittest.TestCase):
    @hypothesis_settings(max_examples=60, deadline=None)
    @given(_REPLIES)
    def test_replies_split_anywhere_arrive_whole_and_in_order(self, replies):
        transport = StringTransport()
        client = SerialHTTPClient("d", task.Clock(), max_body=1024, timeout=10)
        client.makeConnection(transport)
        ds = [client.request("GET", f"/{n}") for n in range(len(replies))]
        expected = []
        for (framing, body, data), d in zip(replies, ds):
            wire = {"length": lambda: reply(200, body), "chunked": lambda: chunked(body), "empty": lambda: reply(204)}[framing]()
            expected.append(b"" if framing == "empty" else body)
            cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
            for start, end in zip([0] + cuts, cuts + [len(wire)]):
                if end > start:
                    client.dataReceived(wire[start:end])
        self.assertEqual([self.successResultOf(d).body for d in ds], expected)
        self.assertEqual(transport.value().count(b"HTTP/1.1\r\n"), len(replies))


HOST_META = b'<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"><Link rel="restconf" href="/top"/></XRD>'
LIBRARY = b'{"ietf-yang-library:yang-library": {"content-id": "9", "module-set": [{"name": "a", "module": [{"name": "m"}]}]}}'


class ProtocolOverStringTransportTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.events = EventBus(clock=self.clock)
        self.seen = []
        self.events.addObserver(self.seen.append)
        self.transport = StringTransport()

    def start(self, **settings):
        protocol = restconf_protocol(
            "dev-1", self.events, RestconfSettings(**settings), {"peer": "192.0.2.1:4336", "connection_id": "c7"}, self.clock
        )
        protocol.makeConnection(self.transport)
        return protocol

    def answer(self, protocol, data: bytes) -> bytes:
        request = self.transport.value()
        self.transport.clear()
        protocol.dataReceived(data)
        return request

    def names(self):
        return [event["event"] for event in self.seen]

    def ready(self):
        protocol = self.start()
        self.assertIn(b"Accept: application/xrd+xml", self.answer(protocol, reply(200, HOST_META, "application/xrd+xml")))
        self.assertTrue(self.answer(protocol, reply(200, LIBRARY)).startswith(b"GET /top/data/ietf-yang-library:yang-library "))
        return protocol, self.successResultOf(protocol.whenReady())

    def test_discovery(self):
        protocol, session = self.ready()
        self.assertEqual(session.root, "/top")
        self.assertEqual(session.details["transport"], "restconf")
        self.assertEqual((session.details["module_count"], session.details["content_id"]), (1, "9"))
        ready = [e for e in self.seen if e["event"] == "restconf.session.ready"][0]
        self.assertEqual((ready["device_id"], ready["connection_id"], ready["root"]), ("dev-1", "c7", "/top"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_xml_reply_with_doctype_refused(self):
        protocol, session = self.ready()
        d = session.get("x:y", encoding="xml")
        self.answer(protocol, reply(200, b'<!DOCTYPE y [<!ENTITY a "b">]><y xmlns="urn:x">&a;</y>', "application/yang-data+xml"))
        self.failureResultOf(d, UnsafeContent)
        # The reply was read in full: the connection is still in step.
        d = session.get("x:y")
        self.answer(protocol, reply(200, b'{"x:y": 1}'))
        self.assertEqual(self.successResultOf(d).data, {"x:y": 1})

    def test_host_meta_with_doctype_fails_discovery(self):
        protocol = self.start()
        self.answer(protocol, reply(200, b"<!DOCTYPE XRD><XRD/>", "application/xrd+xml"))
        failure = self.failureResultOf(protocol.whenReady(), DiscoveryFailed)
        self.assertIn("DOCTYPE", str(failure.value))
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("restconf.discovery.failed", self.names())

    def test_missing_host_meta_falls_back(self):
        protocol = self.start()
        self.answer(protocol, reply(404, b""))
        self.assertTrue(self.answer(protocol, reply(200, LIBRARY)).startswith(b"GET /restconf/data/"))
        self.assertEqual(self.successResultOf(protocol.whenReady()).root, "/restconf")

    def test_missing_host_meta_without_fallback_fails(self):
        protocol = self.start(fallback_root="")
        self.answer(protocol, reply(404, b""))
        self.failureResultOf(protocol.whenReady(), DiscoveryFailed)
        self.assertTrue(self.transport.disconnecting)

    def test_library_falls_back_to_modules_state_then_none(self):
        protocol = self.start()
        self.answer(protocol, reply(200, HOST_META, "application/xrd+xml"))
        self.answer(protocol, reply(404, b""))
        request = self.answer(protocol, reply(404, b""))
        self.assertTrue(request.startswith(b"GET /top/data/ietf-yang-library:modules-state "))
        session = self.successResultOf(protocol.whenReady())
        self.assertIsNone(session.yang_library)
        self.assertEqual(session.details["module_count"], 0)

    def test_discovery_timeout(self):
        protocol = self.start(discovery_timeout=3)
        self.clock.advance(3)
        failure = self.failureResultOf(protocol.whenReady(), DiscoveryFailed)
        self.assertIn("discovery", str(failure.value))
        self.assertTrue(self.transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        lost = [e for e in self.seen if e["event"] == "restconf.session.lost"][0]
        self.assertIn("discovery did not finish", lost["reason"])

    def test_loss_fails_outstanding_and_reports(self):
        protocol, session = self.ready()
        lost = session.whenLost()
        ds = [session.get("x:a"), session.put("x:a", {"x:a": 1}), session.delete("x:a")]
        protocol.connectionLost(Failure(ConnectionDone()))
        for d in ds:
            self.failureResultOf(d, SessionLost)
        self.assertEqual(self.successResultOf(lost), "the device closed the connection")
        event = [e for e in self.seen if e["event"] == "restconf.session.lost"][0]
        self.assertEqual((event["outstanding"], event["reason"]), (3, "the device closed the connection"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_request_timeout_closes_session(self):
        protocol, session = self.ready()
        d = session.get("x:a")
        self.clock.advance(RestconfSettings().request_timeout)
        self.failureResultOf(d, RequestTimeout)
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("restconf.request.timeout", self.names())

    def test_unasked_bytes_end_the_session_with_a_reason(self):
        protocol, session = self.ready()
        protocol.dataReceived(b"surprise")
        self.assertTrue(self.transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        error = [e for e in self.seen if e["event"] == "restconf.protocol.error"][0]
        lost = [e for e in self.seen if e["event"] == "restconf.session.lost"][0]
        self.assertEqual(error["reason"], lost["reason"])
        self.assertIn("no request outstanding", lost["reason"])
        self.assertTrue(lost["was_ready"])

    def test_passthrough_request(self):
        protocol, session = self.ready()
        d = session.request("get", "/top/data/x:a", {"depth": 1}, None, {"Accept": "text/plain"})
        wire = self.answer(protocol, reply(418, b"teapot", "text/plain"))
        self.assertTrue(wire.startswith(b"GET /top/data/x:a?depth=1 HTTP/1.1"))
        status, headers, body = self.successResultOf(d)
        self.assertEqual((status, headers["content-type"], body), (418, ["text/plain"], b"teapot"))
