"""The live event stream: filters, visibility, keepalives, and slow readers cut off."""

from __future__ import annotations

import json
import socket
from typing import Any, Dict, List

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from callhome_mux.api.events import EventClient, EventHub
from callhome_mux.api.tokens import Principal
from callhome_mux.events import EventBus
from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from tests.test_api_harness import APIServer, ssh_device_table


class SSEClient(protocol.Protocol):
    """A raw HTTP/1.0 client of the event stream (no chunking), parsing events as they come."""

    def __init__(self, path: str, token: str):
        self.request = f"GET {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self.buffer = b""
        self.head = None
        self.events: List[Dict[str, Any]] = []
        self.comments: List[str] = []
        self.lost = defer.Deferred()
        self._waiters: List[tuple] = []

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.buffer += data
        if self.head is None:
            if b"\r\n\r\n" not in self.buffer:
                return
            self.head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self._check()
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(": ")
                    fields[name] = value
            if "data" in fields:
                self.events.append(dict(json.loads(fields["data"]), _id=fields.get("id")))
                self._check()

    def connectionLost(self, reason):
        self.lost.callback(None)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def when(self, predicate) -> defer.Deferred:
        waiter = defer.Deferred()
        self._waiters.append((predicate, waiter))
        self._check()
        return waiter

    def whenHead(self):
        return self.when(lambda client: client.head is not None)

    def whenEvent(self, name, **match):
        return self.when(lambda client: any(
            e["event"] == name and all(e.get(k) == v for k, v in match.items()) for e in client.events
        ))

    def _check(self):
        for entry in list(self._waiters):
            predicate, waiter = entry
            if predicate(self):
                self._waiters.remove(entry)
                waiter.callback(self)


class EventStreamTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.ups = SSHCallHomeDevice(password="pw")
        self.core = SSHCallHomeDevice(password="pw")
        self.server = yield APIServer(
            self,
            [
                ssh_device_table(self.ups, "ups-1", labels={"owner": "ups-team"}),
                ssh_device_table(self.core, "core-1", labels={"owner": "core-team"}),
            ],
            sse_max_queued=20,
        ).start()
        self.clients: List[SSEClient] = []

    def tearDown(self):
        for client in self.clients:
            if client.transport is not None and client.transport.connected:
                client.transport.abortConnection()
        return defer.gatherResults([client.lost for client in self.clients])

    @defer.inlineCallbacks
    def open(self, path: str, token: str = None) -> SSEClient:
        client = SSEClient(path, token or self.server.admin_token)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(self.server.url.rsplit(":", 1)[1]))
        yield connectProtocol(endpoint, client)
        self.clients.append(client)
        yield client.whenHead()
        return client

    @defer.inlineCallbacks
    def test_session_events_stream_live(self):
        client = yield self.open("/api/v1/events")
        self.assertEqual(client.status, 200)
        self.assertIn(b"content-type: text/event-stream", client.head.lower())
        yield self.server.connect(self.ups, "ups-1")
        yield client.whenEvent("session.up", device_id="ups-1")
        kinds = {event["event"] for event in client.events}
        self.assertTrue({"connection.accepted", "connection.classified", "ssh.hostkey.accepted"} <= kinds, kinds)

    @defer.inlineCallbacks
    def test_device_and_kind_filters(self):
        client = yield self.open("/api/v1/events?device=ups-1&kind=session.,ssh.auth")
        yield self.server.connect(self.core, "core-1")
        yield self.server.connect(self.ups, "ups-1")
        yield client.whenEvent("session.up", device_id="ups-1")
        self.assertEqual({event["device_id"] for event in client.events}, {"ups-1"})
        self.assertTrue(all(event["event"].startswith(("session.", "ssh.auth")) for event in client.events))

    @defer.inlineCallbacks
    def test_label_limited_token_never_sees_other_devices(self):
        token = yield self.server.token("read", {"owner": "ups-team"})
        client = yield self.open("/api/v1/events", token)
        yield self.server.connect(self.core, "core-1")
        yield self.server.connect(self.ups, "ups-1")
        self.server.service.events.emit("listener.noise", peer="10.0.0.9:1")
        yield client.whenEvent("session.up", device_id="ups-1")
        self.assertEqual({event.get("device_id") for event in client.events}, {"ups-1"})
        # Asking for a device it cannot see is asking about one that does not exist.
        reply = yield self.server.http("GET", "/api/v1/events?device=core-1", token=token)
        self.assertEqual(reply.status, 404, reply)

    @defer.inlineCallbacks
    def test_slow_reader_is_cut_off_with_bounded_memory(self):
        server = self.server
        slow = yield self.open("/api/v1/events?kind=test.")
        fast = yield self.open("/api/v1/events?kind=test.fast")
        # The slow client stops reading, with a small receive buffer so the
        # kernel does not soak up megabytes first.
        slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.transport.pauseProducing()
        dropped = server.whenEvent("api.events.client.dropped")
        hub = server.api.ctx.hub
        padding = "x" * 8192
        for batch in range(2000):
            for _ in range(10):
                server.service.events.emit("test.flood", reason=padding)
            for client in hub.clients:
                self.assertLessEqual(len(client.queue), hub.max_queued)
            if dropped.called:
                break
            yield task.deferLater(reactor, 0, lambda: None)  # let the reactor write
        self.assertTrue(dropped.called, "the slow client was never cut off")
        event = dropped.result
        self.assertGreater(event["queued"], 20)
        self.assertEqual(len(hub.clients), 1)
        slow.transport.resumeProducing()
        yield slow.lost
        # The other client was not affected.
        server.service.events.emit("test.fast", marker=1)
        yield fast.whenEvent("test.fast", marker=1)
        metrics = yield server.http("GET", "/metrics")
        self.assertIn(b"callhome_api_event_clients_dropped_total 1.0", metrics.body)


class FakeTransport:
    def __init__(self):
        self.aborted = False
        self.connected = True

    def abortConnection(self):
        self.aborted = True

    def loseConnection(self):
        self.connected = False


class FakeRequest:
    """The parts of a twisted.web request an EventClient uses."""

    def __init__(self):
        self.headers = {}
        self.written: List[bytes] = []
        self.producer = None
        self.transport = FakeTransport()
        self._finish = defer.Deferred()

    def setHeader(self, name, value):
        self.headers[name] = value

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def notifyFinish(self):
        return self._finish

    def write(self, data):
        self.written.append(data)


class EventClientUnitTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.bus = EventBus(clock=self.clock)
        self.hub = EventHub(self.bus, lambda principal, device_id: device_id != "hidden", self.clock, 15.0, 3)
        self.hub.start()
        self.addCleanup(self.hub.stop)

    def client(self, **filters):
        request = FakeRequest()
        client = EventClient(self.hub, request, Principal("t1", "read"), **filters)
        self.hub.add(client)
        return client, request

    def test_keepalive_only_when_idle(self):
        client, request = self.client()
        self.assertEqual(request.headers[b"content-type"], b"text/event-stream; charset=utf-8")
        start = len(request.written)
        self.clock.advance(15)
        self.assertEqual(request.written[start:], [b": keepalive\n\n"])
        client.pauseProducing()
        self.clock.advance(15)
        self.assertEqual(len(request.written), start + 1)

    def test_filters_and_visibility(self):
        client, request = self.client(devices=["a", "hidden"], kinds=["session."])
        for name, device in (("session.up", "a"), ("ssh.auth.failed", "a"), ("session.up", "b"), ("session.up", "hidden")):
            self.bus.emit(name, device_id=device)
        events = [chunk for chunk in request.written if chunk.startswith(b"id:")]
        self.assertEqual(len(events), 1)
        self.assertIn(b"event: session.up\n", events[0])
        self.assertIn(b'"device_id": "a"', events[0])

    def test_paused_client_queues_then_flushes_in_order(self):
        client, request = self.client()
        client.pauseProducing()
        self.bus.emit("one")
        self.bus.emit("two")
        self.assertEqual(len(client.queue), 2)
        before = len(request.written)
        client.resumeProducing()
        flushed = request.written[before:]
        self.assertEqual([b"event: one" in flushed[0], b"event: two" in flushed[1]], [True, True])
        self.assertEqual(len(client.queue), 0)

    def test_paused_client_past_the_limit_is_cut_off(self):
        client, request = self.client()
        other, other_request = self.client()
        seen = []
        self.bus.addObserver(seen.append)
        client.pauseProducing()
        for n in range(4):
            self.bus.emit("flood", n=n)
        self.assertTrue(request.transport.aborted)
        self.assertTrue(client.closed)
        self.assertEqual(len(client.queue), 0)
        self.assertEqual(self.hub.clients, {other})
        [dropped] = [e for e in seen if e["event"] == "api.events.client.dropped"]
        self.assertEqual(dropped["queued"], 4)  # one past the limit of 3
        self.assertNotIn("token", dropped)
        # The other client got everything, and the drop notice.
        names = [chunk.split(b"\n")[1] for chunk in other_request.written if chunk.startswith(b"id:")]
        self.assertEqual(names.count(b"event: flood"), 4)
        self.assertEqual(names.count(b"event: api.events.client.dropped"), 1)
        # Its keepalive timer is gone.
        self.assertEqual([call for call in self.clock.getDelayedCalls() if call.active()].__len__(), 1)


class ClientLimitTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_clients_beyond_the_limit_are_refused(self):
        server = yield APIServer(self, sse_max_clients=1).start()
        first = SSEClient("/api/v1/events", server.admin_token)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        yield connectProtocol(endpoint, first)
        self.addCleanup(lambda: first.lost)
        self.addCleanup(lambda: first.transport.abortConnection())
        yield first.whenHead()
        reply = yield server.http("GET", "/api/v1/events")
        self.assertEqual(reply.status, 503, reply)
        self.assertIn("too many", reply.json()["error"]["message"])
