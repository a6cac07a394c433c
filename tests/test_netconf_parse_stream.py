"""
Large messages parsed in the parse worker thread once complete, or in the
reactor thread while they arrive (real reactor, real thread; no sleeping:
the tests wait on Deferreds).
"""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.netconf import parse_stream, xmlsafe
from callhome_mux.netconf.errors import SessionLostError, UnsafeXMLError
from callhome_mux.netconf.framing import encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1, BASE_NS, qn
from callhome_mux.netconf.parse_stream import InlineStream, ParseWorker, WorkerParse
from callhome_mux.netconf.session import NetconfClientProtocol, hello_message
from callhome_mux.netconf.settings import NetconfSettings

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

    def test_worker_parse_gives_the_tree(self):
        d = WorkerParse(reactor, DOCUMENT, ParseWorker()).result
        return d.addCallback(lambda root: self.assertEqual(len(root.find(qn("data"))), 2000))

    def test_inline_and_worker_refuse_the_same(self):
        """The worker refuses what xmlsafe.parse refuses, with its words; inline streaming refuses it too."""
        bad = [DOCUMENT.replace(b"</data>", b"</date>"),
               b'<!DOCTYPE r [<!ENTITY e "x">]>' + DOCUMENT.replace(b"<n>1</n>", b"<n>&e;</n>"),
               DOCUMENT[:-3]]
        results = []
        for document in bad:
            with self.assertRaises(UnsafeXMLError) as raised:
                xmlsafe.parse(document)
            expected = str(raised.exception)
            stream = InlineStream(64)
            try:
                *head, last = pieces(document, 700)
                for piece in head:
                    stream.feed(piece)
                d = stream.finish(last)
            except UnsafeXMLError:
                d = defer.fail()
            results.append(self.assertFailure(d, UnsafeXMLError))
            worker = self.assertFailure(WorkerParse(reactor, document, ParseWorker()).result, UnsafeXMLError)
            worker.addCallback(lambda error, expected=expected: self.assertEqual(str(error), expected))
            results.append(worker)
        return defer.gatherResults(results)

    def test_abandoned_parse_is_skipped_and_reports_nothing(self):
        import threading

        worker = ParseWorker()
        release = threading.Event()
        worker.submit(release.wait)
        parsed = []
        self.patch(xmlsafe, "parse", lambda *args: parsed.append(args))
        job = WorkerParse(reactor, DOCUMENT, worker)
        job.abandon()
        release.set()

        def check(_):
            self.assertEqual(parsed, [], "an abandoned parse is not run")
            self.assertFalse(job.result.called)

        return worker_drained(worker).addCallback(lambda _: worker_drained(worker)).addCallback(check)

    def test_worker_parse_has_a_parser_of_its_own(self):
        """lxml parses one document at a time per parser: the reactor's must never wait for the worker's."""
        used = []
        original = xmlsafe.parse
        self.patch(xmlsafe, "parse", lambda data, parser=None: (used.append(parser), original(data, parser))[1])
        d = WorkerParse(reactor, DOCUMENT, ParseWorker()).result
        return d.addCallback(lambda _: (self.assertEqual(len(used), 1),
                                        self.assertIsNotNone(used[0]),
                                        self.assertIsNot(used[0], xmlsafe._PARSER)))

    def test_each_job_runs_in_a_thread_of_its_own_in_order(self):
        """
        lxml shares one string dictionary among the trees parsed in a thread,
        unlocked: a tree handed to the reactor must not share it with the next
        parse.  One thread per job, one job at a time, in order, all nicer
        than the reactor.
        """
        import os
        import threading

        from callhome_mux.netconf.parse_stream import WORKER_NICENESS

        worker = ParseWorker()
        seen = []
        running = []

        def job(index):
            running.append(index)
            self.assertEqual(len(running), 1, "one job at a time")
            seen.append((index, threading.current_thread(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
            running.remove(index)

        for index in range(5):
            worker.submit(job, index)
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def check(_):
            self.assertEqual([index for index, _, _ in seen], list(range(5)))
            threads = [thread for _, thread, _ in seen]
            self.assertEqual(len({thread.name for thread in threads}), 5, "a thread per job")
            self.assertNotIn(threading.current_thread(), threads)
            self.assertEqual({nice for _, _, nice in seen}, {min(mine + WORKER_NICENESS, 19)})

        return worker_drained(worker).addCallback(check)

    def test_a_job_that_raises_ends_only_its_thread(self):
        import threading

        self.patch(threading, "excepthook", lambda args: None)
        worker = ParseWorker()
        worker.submit(lambda: 1 / 0)
        after = []
        worker.submit(after.append, "ran")
        return worker_drained(worker).addCallback(lambda _: self.assertEqual(after, ["ran"]))


class RecordingWorker(ParseWorker):
    """A parse worker that counts what it is given."""

    def __init__(self):
        super().__init__()
        self.jobs = 0

    def submit(self, function, *args):
        self.jobs += 1
        super().submit(function, *args)


class ThreadedProtocolTests(TestCase):
    """The protocol with parse_threads: order and failures as in the reactor thread."""

    def start(self, base=BASE_1_1, settings=None):
        self.clock = task.Clock()
        self.events = []
        bus = EventBus(clock=self.clock)
        bus.addObserver(self.events.append)
        self.worker = RecordingWorker()
        self.patch(parse_stream, "WORKER", self.worker)
        self.client = NetconfClientProtocol(bus, settings=settings, clock=self.clock, parse_threads=reactor)
        self.client.stream_after = 256
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.client.dataReceived(encode_eom(hello_message([base], 3)))
        return self.successResultOf(self.client.whenReady())

    def test_large_reply_parsed_in_the_worker_once_complete(self):
        session = self.start()
        pending = session.rpc(b"<get/>")
        stream = encode_chunked(DOCUMENT, 3000)
        for piece in pieces(stream[:-1], 4096):
            self.client.dataReceived(piece)
        self.assertEqual(self.worker.jobs, 0, "nothing parsed before the last byte")
        self.assertIsNone(self.client._stream, "not parsed while it arrives")
        self.client.dataReceived(stream[-1:])
        self.assertEqual(self.worker.jobs, 1, "one whole-message parse")
        self.assertNoResult(pending)
        return pending.addCallback(lambda reply: self.assertEqual(len(reply.find(qn("data"))), 2000))

    def test_small_reply_parsed_in_the_reactor_thread(self):
        session = self.start()
        pending = session.rpc(b"<commit/>")
        self.client.dataReceived(encode_chunked(b'<rpc-reply xmlns="' + BASE_NS.encode() + b'" message-id="1"><ok/></rpc-reply>'))
        self.successResultOf(pending)
        self.assertEqual(self.worker.jobs, 0)

    def test_large_single_chunk_reply_in_one_read_parsed_in_the_worker(self):
        """Small replies are taken together from a read, large ones still go to the worker."""
        session = self.start()
        small, big = session.rpc(b"<commit/>"), session.rpc(b"<get/>")
        ok = b'<rpc-reply xmlns="' + BASE_NS.encode() + b'" message-id="1"><ok/></rpc-reply>'
        self.client.dataReceived(encode_chunked(ok) + encode_chunked(DOCUMENT.replace(b'message-id="1"', b'message-id="2"')))
        self.successResultOf(small)
        self.assertEqual(self.worker.jobs, 1)
        return big.addCallback(lambda reply: self.assertEqual(len(reply.find(qn("data"))), 2000))

    def test_large_base10_reply_parsed_in_the_worker(self):
        """base:1.0 messages were never streamed; a large one no longer blocks the reactor either."""
        session = self.start(base=BASE_1_0)
        pending = session.rpc(b"<get/>")
        for piece in pieces(encode_eom(DOCUMENT), 4096):
            self.client.dataReceived(piece)
        self.assertEqual(self.worker.jobs, 1)
        self.assertNoResult(pending)
        return pending.addCallback(lambda reply: self.assertEqual(len(reply.find(qn("data"))), 2000))

    def test_oversized_message_refused_at_its_chunk_header(self):
        """The pieces wait in the decoder, but max_message_size is still enforced before the data."""
        session = self.start(settings=NetconfSettings(max_message_size=10_000))
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(b"\n#6000\n" + DOCUMENT[:6000])
        self.assertNoResult(pending)
        self.client.dataReceived(b"\n#6000\n")
        self.failureResultOf(pending, SessionLostError)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.worker.jobs, 0)
        [event] = [e for e in self.events if e.get("event") == "netconf.protocol.error"] or [None]
        self.assertIn("exceeds the limit of 10000", event["reason"])

    def test_connection_lost_while_the_worker_parses(self):
        import threading

        session = self.start()
        release = threading.Event()
        self.worker.submit(release.wait)
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(DOCUMENT, 3000))
        self.assertIsNotNone(self.client._parsing)
        self.client.connectionLost(None)
        self.failureResultOf(pending, SessionLostError)
        self.assertIsNone(self.client._parsing)
        errors_before = [e for e in self.events if e.get("event") == "netconf.protocol.error"]
        release.set()
        return worker_drained(self.worker).addCallback(lambda _: self.assertEqual(
            [e for e in self.events if e.get("event") == "netconf.protocol.error"], errors_before))

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
        # Complete in one read, it is parsed in the worker all the same (it
        # was parsed in the reactor thread when streaming was the way).
        self.assertEqual(self.worker.jobs, 1)
        d = self.assertFailure(pending, SessionLostError)
        d.addCallback(lambda error: self.assertIn("malformed XML", str(error)))
        # The RPCs fail first, then the transport is closed (as for any
        # failure found off the reactor thread): look once that is done.
        d.addCallback(lambda _: task.deferLater(reactor, 0, lambda: None))
        return d.addCallback(lambda _: self.assertTrue(self.transport.disconnecting))

    def test_connection_lost_while_streaming(self):
        session = self.start()
        pending = session.rpc(b"<get/>")
        self.client.dataReceived(encode_chunked(DOCUMENT, 3000)[:20000])
        self.assertGreater(self.client._decoder.buffered, 0, "the part received waits in the decoder")
        self.client.connectionLost(None)
        self.failureResultOf(pending, SessionLostError)
        self.assertIsNone(self.client._stream)


class LargeMessageTests(TestCase):
    def test_twelve_megabytes_parse_in_the_worker(self):
        """Past libxml2's 10 MB push-buffer limit (no huge mode): a whole-document parse takes it."""
        body = b"".join(b"<n>%07d</n>" % i for i in range(1_000_000))
        document = b'<rpc-reply xmlns="' + BASE_NS.encode() + b'" message-id="1"><data>' + body + b"</data></rpc-reply>"
        self.assertGreater(len(document), 12_000_000)
        d = WorkerParse(reactor, document, ParseWorker()).result
        return d.addCallback(lambda root: self.assertEqual(len(root.find(qn("data"))), 1_000_000))
