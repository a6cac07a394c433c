"""
Where a large message is parsed while it arrives: in the reactor thread, or
in one worker thread so that parsing overlaps receiving and decrypting.

Both kinds take the message's pieces in order (C{feed}) and give its root
element through a Deferred (C{finish}); both use
L{xmlsafe.IncrementalParser}, so both accept and refuse exactly what
L{xmlsafe.parse} does.

L{ThreadedStream} hands the pieces to L{ParseWorker}: one daemon thread for
the whole process, fed through a FIFO queue, so the pieces of one message
are parsed in order and messages of different sessions one after the
other.  libxml2 runs without the GIL, so the reactor keeps receiving (on
the other core) meanwhile.  The tree is built in the worker and handed to
the reactor thread when complete; lxml trees may move between threads when
only one uses them at a time.  The thread is a daemon: a message still
arriving at shutdown never holds the process.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import List, Optional

from twisted.internet import defer

from callhome_mux.netconf import xmlsafe

__all__ = ["InlineStream", "ThreadedStream", "ParseWorker"]


class InlineStream:
    """Parse in the caller's thread: a malformed piece is refused at once."""

    def __init__(self, prolog_window: int):
        self._parser = xmlsafe.IncrementalParser(prolog_window)

    def feed(self, data: bytes) -> None:
        self._parser.feed(data)

    def finish(self, last: bytes) -> defer.Deferred:
        try:
            self._parser.feed(last)
            return defer.succeed(self._parser.close())
        except Exception:
            return defer.fail()

    def abandon(self) -> None:
        self._parser = None


#: How much nicer than the reactor the parse worker runs (Linux thread nice).
#: The reactor carries every other session's I/O, keepalives and timers; a
#: large reply being parsed takes what CPU they leave, not the other way round.
WORKER_NICENESS = 10


def lower_thread_priority(niceness: int) -> bool:
    """
    Make the calling thread C{niceness} steps nicer.  Only on Linux, where
    nice is per thread and C{setpriority} takes a thread id: elsewhere that
    id would name a process, so nothing is done.
    """
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except OSError:
        return False
    return True


class ParseWorker:
    """One daemon thread running submitted calls in order, at a lower priority."""

    def __init__(self, name: str = "callhome-mux-xml-parse", niceness: int = WORKER_NICENESS):
        self._name = name
        self._niceness = niceness
        self._jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def submit(self, function, *args) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._jobs.put((function, args))

    def _run(self) -> None:
        lower_thread_priority(self._niceness)
        while True:
            function, args = self._jobs.get()
            function(*args)  # the jobs below catch their own errors


#: The most given to the parser in one feed when pieces are joined.
FEED_LIMIT = 1024 * 1024

#: The process's parse worker (started on first use).
WORKER = ParseWorker()


class ThreadedStream:
    """
    Parse in L{ParseWorker}'s thread; C{finish} fires in the reactor thread
    (C{reactor.callFromThread}).  A malformed piece is noticed by the worker
    and reported when the message is complete.

    Pieces that arrive while the worker is busy are fed together, joined
    up to L{FEED_LIMIT} bytes at a time (fewer hand-overs between the
    threads).  The limit matters: libxml2's push parser refuses a feed that
    takes it more than 10 MB past the start of its input buffer ("Buffer
    size limit exceeded") unless in huge mode, which we never use.
    """

    def __init__(self, reactor, prolog_window: int, worker: ParseWorker = WORKER):
        self._reactor = reactor
        self._worker = worker
        self._window = prolog_window
        # Worker-thread state: the parser is made and used only there.
        self._parser: Optional[xmlsafe.IncrementalParser] = None
        self._error: Optional[BaseException] = None
        self._abandoned = False
        self._done = defer.Deferred()
        # Pieces not yet taken by the worker, and whether a job will take them.
        self._lock = threading.Lock()
        self._waiting: List[bytes] = []
        self._scheduled = False

    def feed(self, data: bytes) -> None:
        with self._lock:
            self._waiting.append(data)
            if self._scheduled:
                return
            self._scheduled = True
        self._worker.submit(self._drain)

    def finish(self, last: bytes) -> defer.Deferred:
        self.feed(last)
        self._worker.submit(self._finish)
        return self._done

    def abandon(self) -> None:
        """The session is gone: drop the parser in the worker, report nothing."""
        self._worker.submit(self._abandon)

    # -- in the worker thread ---------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._error is not None or self._abandoned:
            return
        try:
            if self._parser is None:
                self._parser = xmlsafe.IncrementalParser(self._window)
            self._parser.feed(data)
        except BaseException as error:
            self._error = error
            self._parser = None

    def _drain(self) -> None:
        with self._lock:
            pieces, self._waiting = self._waiting, []
            self._scheduled = False
        batch: List[bytes] = []
        size = 0
        for piece in pieces:
            if batch and size + len(piece) > FEED_LIMIT:
                self._feed(batch[0] if len(batch) == 1 else b"".join(batch))
                batch, size = [], 0
            batch.append(piece)
            size += len(piece)
        if batch:
            self._feed(batch[0] if len(batch) == 1 else b"".join(batch))

    def _finish(self) -> None:
        self._drain()
        if self._abandoned:
            return
        result = self._error
        if result is None:
            try:
                result = (self._parser or xmlsafe.IncrementalParser(self._window)).close()
            except BaseException as error:
                result = error
        self._parser = None
        self._reactor.callFromThread(self._report, result)

    def _abandon(self) -> None:
        self._abandoned = True
        self._parser = None

    # -- back in the reactor thread -----------------------------------------

    def _report(self, result) -> None:
        if isinstance(result, BaseException):
            self._done.errback(result)
        else:
            self._done.callback(result)
