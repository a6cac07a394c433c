"""
Where a large message is parsed: in one worker thread once it is complete
(L{WorkerParse}), or, without a worker (tests on a C{task.Clock}), in the
reactor thread while it arrives (L{InlineStream}).

L{ParseWorker} is one for the whole process, fed through a FIFO queue, so
messages are parsed one after the other, in order, each in a daemon
thread of its own (lxml's per-thread string dictionary, see there).  libxml2
runs without the GIL (C{etree.fromstring} releases it for the whole parse),
so the reactor keeps serving every other session meanwhile.  The tree is
built in the worker and handed to the reactor thread when complete; lxml
trees may move between threads when only one uses them at a time.  The
thread is a daemon: a message still being parsed at shutdown never holds
the process.  Both ways accept and refuse exactly what L{xmlsafe.parse}
does.
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
from typing import Optional

from twisted.internet import defer

from callhome_mux.netconf import xmlsafe

__all__ = ["InlineStream", "WorkerParse", "ParseWorker"]


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
    """
    Runs submitted calls one after the other, in order, at a lower priority
    than the reactor, each in a daemon thread of its own.

    A thread per call, not one thread for all: lxml gives each thread one
    libxml2 string dictionary, shared by every tree parsed in that thread,
    and libxml2 does not lock it.  A tree parsed here is used in the
    reactor thread (a C{find} looks its names up in that dictionary, a new
    element adds one) while the next message is being parsed; with one
    thread for all, the two threads used the same dictionary at once: a
    stress test (/tmp/bulk_mb/dictrace.py: the reactor thread adding
    elements to trees parsed in the worker while it parsed more) had
    well-formed documents refused ("Opening and ending tag mismatch" naming
    an element the other thread had added) or the process crash
    (SIGSEGV) within seconds; with a thread per parse, none in ~10,000
    parses.  A thread costs ~0.1 ms, against >= 0.6 ms for the parse of a
    message large enough to come here.  The threads inherit the
    dispatching thread's nice value.
    """

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
        for number in itertools.count(1):
            function, args = self._jobs.get()
            # The calls catch their own errors; one that does not ends only its thread.
            job = threading.Thread(target=function, args=args, name=f"{self._name}-{number}", daemon=True)
            job.start()
            job.join()


#: The process's parse worker (started on first use).
WORKER = ParseWorker()


class WorkerParse:
    """
    Parse one complete message in L{ParseWorker}'s thread with
    L{xmlsafe.parse}; C{result} fires in the reactor thread
    (C{reactor.callFromThread}) with the root element or fails with what
    L{xmlsafe.parse} raised.  Nothing is parsed before the last byte is in:
    while the message arrives the reactor (receiving, decrypting) and the
    device's sending have the CPU to themselves, and one whole-document
    parse costs ~40% less CPU than libxml2's push parser fed the pieces
    (190 against 300 ms for 20 MB here).

    The parse has a parser of its own: lxml runs one parse at a time per
    parser, so sharing the reactor thread's would make a small reply wait
    for a large one.
    """

    def __init__(self, reactor, message: bytes, worker: Optional[ParseWorker] = None):
        self._reactor = reactor
        self._message: Optional[bytes] = message
        self.result = defer.Deferred()
        (worker or WORKER).submit(self._parse)

    def abandon(self) -> None:
        """The session is gone: skip the parse if not started, report nothing."""
        self._message = None
        self._reactor = None

    # -- in the worker thread ---------------------------------------------

    def _parse(self) -> None:
        message, reactor = self._message, self._reactor
        self._message = None
        if message is None or reactor is None:
            return
        try:
            result = xmlsafe.parse(message, xmlsafe.make_parser())
        except BaseException as error:
            result = error
        del message
        if self._reactor is not None:
            reactor.callFromThread(self._report, result)

    # -- back in the reactor thread -----------------------------------------

    def _report(self, result) -> None:
        if self._reactor is None:
            return
        if isinstance(result, BaseException):
            self.result.errback(result)
        else:
            self.result.callback(result)
