"""
Large messages parsed while they arrive, in the reactor thread or in the
parse worker thread (real reactor, real thread; no sleeping: the tests wait
on Deferreds).
"""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.netconf.errors import SessionLostError, UnsafeXMLError
from callhome_mux.netconf.framing import encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_1_1, BASE_NS, qn
from callhome_mux.netconf.parse_stream import InlineStream, ParseWorker, ThreadedStream
from callhome_mux.netconf.session import NetconfClientProtocol, hello_message

DOCUMENT = (b'<rpc-reply xmlns="' + BASE_NS.encode() + b'" message-id="1"><data>'
            + b"".join(b"<n>%d</n>" % i for i in range(2000)) + b"</data></rpc-reply>")


def pieces(data: bytes, size: int):
    return [data[i : i + size] for i in range(0, len(data), size)]


def worker_drained(worker: ParseWorker) -> defer.Deferred:
    """Fires (in the reactor thread) once the worker has run everything submitted so far."""
    done = defer.Deferred()
    worker.submit(reactor.callFromThread, done.callback, None)
    return done


class StreamTests(TestCase):
    def test_worker_runs_nicer_than_the_reactor(self):
        """On Linux the worker thread's nice value is WORKER_NICENESS above the reactor thread's."""
        import os
        import sys
        import threading

        from callhome_mux.netconf.parse_stream import WORKER_NICENESS

        if not sys.platform.startswith("linux"):
            raise AssertionError("this project's CI runs on Linux; per-thread nice is Linux's")
        worker = ParseWorker()
        seen = []
        worker.submit(lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def check(_):
            self.assertEqual(seen, [min(mine + WORKER_NICENESS, 19)])

        return worker_drained(worker).addCallback(check)

    def test_threaded_stream_gives_the_tree(self):
        stream = ThreadedStream(reactor, 64, ParseWorker())
        *head, last = pieces(DOCUMENT, 1000)
        for piece in head:
            stream.feed(piece)
        d = stream.finish(last)
        return d.addCallback(lambda root: self.assertEqual(len(root.find(qn("data"))), 2000))

    def test_inline_and_threaded_refuse_the_same(self):
        bad = [DOCUMENT.replace(b"</data>", b"</date>"),
               b'<!DOCTYPE r [<!ENTITY e "x">]>' + DOCUMENT.replace(b"<n>1</n>", b"<n>&e;</n>")]
        results = []
        for document in bad:
            for stream in (InlineStream(64), ThreadedStream(reactor, 64, ParseWorker())):
                try:
                    *head, last = pieces(document, 700)
                    for piece in head:
                        stream.feed(piece)
                    d = stream.finish(last)
                except UnsafeXMLError:
                    d = defer.fail()
                results.append(self.assertFailure(d, UnsafeXMLError))
        return defer.gatherResults(results)

    def test_abandoned_stream_reports_nothing(self):
        worker = ParseWorker()
        stream = ThreadedStream(reactor, 64, worker)
        stream.feed(DOCUMENT[:5000])
        finished = stream.finish(DOCUMENT[5000:])
        stream.abandon()

        def check(_):
            # finish() was queued before abandon(), so it still reports; a stream
            # abandoned before finish() does not.
            self.assertTrue(finished.called)
            second = ThreadedStream(reactor, 64, worker)
            second.feed(DOCUMENT[:5000])
            second.abandon()
            later = second.finish(DOCUMENT[5000:])
            return worker_drained(worker).addCallback(lambda _: worker_drained(worker)).addCallback(
                lambda _: self.assertFalse(later.called))

        return worker_drained(worker).addCallback(lambda _: worker_drained(worker)).addCallback(check)


class ThreadedProtocolTests(TestCase):
    """The protocol with parse_threads: order and failures as in the reactor thread."""

    def start(self):
        self.clock = task.Clock()
        self.events = []
        bus = EventBus(clock=self.clock)
        bus.addObserver(self.events.append)
        self.client = NetconfClientProtocol(bus, clock=self.clock, parse_threads=reactor)
        self.client.stream_after = 256
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.client.dataReceived(encode_eom(hello_message([BASE_1_1], 3)))
        return self.successResultOf(self.client.whenReady())

    def test_messages_after_a_streamed_one_wait_for_it(self):
        session = self.start()
        seen = []
        big = session.rpc(b"<get/>")
        small = session.rpc(b"<commit/>")
        big.addCallback(lambda reply: seen.append(("big", len(reply.find(qn("data"))))))
        small.addCallback(lambda reply: seen.append(("small", reply.get("message-id"))))
        stream = encode_chunked(DOCUMENT, 3000) + encode_chunked(
            b'<rpc-reply xmlns="' + BASE_NS.encode() + b'" message-id="2"><ok/></rpc-reply>')
        for piece in pieces(stream, 4096):
            self.client.dataReceived(piece)
        self.assertEqual(seen, [], "the small reply waits behind the big one")
        return small.addCallback(lambda _: self.assertEqual(seen, [("big", 2000), ("small", "2")]))

    def test_malformed_streamed_reply_ends_the_session(self):
        session = self.start()
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(DOCUMENT.replace(b"</data>", b"</date>"), 3000))
        d = self.assertFailure(pending, SessionLostError)
        return d.addCallback(lambda error: (self.assertIn("malformed XML", str(error)),
                                            self.assertTrue(self.transport.disconnecting)))

    def test_connection_lost_while_streaming(self):
        session = self.start()
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(DOCUMENT, 3000)[:20000])
        self.assertIsNotNone(self.client._stream)
        self.client.connectionLost(None)
        self.failureResultOf(pending, SessionLostError)
        self.assertIsNone(self.client._stream)


class BatchedFeedTests(TestCase):
    def test_pieces_queued_while_the_worker_is_busy_parse_in_bounded_feeds(self):
        """12 MB queued behind a busy worker: joined feeds stay under libxml2's 10 MB push-buffer limit."""
        import threading

        from callhome_mux.netconf import parse_stream

        worker = ParseWorker()
        release = threading.Event()
        worker.submit(release.wait)
        body = b"".join(b"<n>%07d</n>" % i for i in range(1_000_000))
        document = b'<rpc-reply xmlns="' + BASE_NS.encode() + b'" message-id="1"><data>' + body + b"</data></rpc-reply>"
        self.assertGreater(len(document), 12_000_000)
        stream = ThreadedStream(reactor, 64, worker)
        fed = []
        original = stream._feed
        stream._feed = lambda data: (fed.append(len(data)), original(data))
        *head, last = pieces(document, 32768)
        for piece in head:
            stream.feed(piece)
        d = stream.finish(last)
        release.set()

        def check(root):
            self.assertEqual(len(root.find(qn("data"))), 1_000_000)
            self.assertLess(len(fed), len(head) // 10, "pieces were joined")
            self.assertLessEqual(max(fed), parse_stream.FEED_LIMIT)

        return d.addCallback(check)
