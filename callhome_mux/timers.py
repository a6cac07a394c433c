"""
Many per-connection timers on one reactor timer.

Each call home used to start five reactor timers (the demultiplexer's
silence and classification timeouts, the SSH setup timeout, the NETCONF
hello timeout, the keepalive), four of them cancelled within milliseconds.
A Twisted C{DelayedCall} costs ~450 bytes and ~5-9 us to schedule and
cancel; the keepalive's stays for the session's whole life.  L{SharedTimers}
keeps its timers in one heap of small entries and asks the clock for a
single C{DelayedCall}, for the earliest: the same times and order as
C{callLater} (exact, also on a L{twisted.internet.task.Clock}), at a
fraction of the cost.

    timers = shared_timers(clock)
    call = timers.callLater(30.0, f, arg)   # .active(), .cancel(), .getTime()

A cancelled entry stays in the heap until its time or the next compaction;
when no timer is active any more, the reactor timer is cancelled too (no
pending call is left behind).
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from typing import Any, Callable, List, Optional, Tuple

from twisted.logger import Logger

_log = Logger(namespace="callhome_mux.timers")


class SharedCall:
    """One timer; the part of C{IDelayedCall} we use."""

    __slots__ = ("time", "_timers", "_f", "_args", "_state")

    _PENDING, _CANCELLED, _CALLED = 0, 1, 2

    def __init__(self, timers: "SharedTimers", when: float, f: Callable, args: tuple):
        self.time = when
        self._timers = timers
        self._f = f
        self._args = args
        self._state = self._PENDING

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return self._state == self._PENDING

    def cancel(self) -> None:
        if self._state != self._PENDING:
            return
        self._state = self._CANCELLED
        self._f = self._args = None
        self._timers._cancelled()


class SharedTimers:
    def __init__(self, clock):
        self._clock = clock
        self._heap: List[Tuple[float, int, SharedCall]] = []
        self._order = itertools.count()
        self._active = 0
        self._call = None  # the clock's DelayedCall, for the earliest entry
        self._call_time: Optional[float] = None
        self._firing = False

    def callLater(self, delay: float, f: Callable, *args: Any) -> SharedCall:
        return self.callAt(self._clock.seconds() + delay, f, *args)

    def callAt(self, when: float, f: Callable, *args: Any) -> SharedCall:
        """Call C{f(*args)} at the clock's time C{when} (at once, on the next turn, if past)."""
        call = SharedCall(self, when, f, args)
        heapq.heappush(self._heap, (when, next(self._order), call))
        self._active += 1
        if not self._firing and (self._call_time is None or when < self._call_time):
            self._schedule(when)
        return call

    def __len__(self) -> int:
        """Timers still to run."""
        return self._active

    def _schedule(self, when: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call_time = when
        self._call = self._clock.callLater(max(0.0, when - self._clock.seconds()), self._fire)

    def _cancelled(self) -> None:
        self._active -= 1
        if self._active == 0:
            # Nothing left to run: no reactor timer either.
            self._heap.clear()
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = self._call_time = None
        elif len(self._heap) > 64 and len(self._heap) > 2 * self._active:
            # Mostly cancelled entries (timeouts that did not happen): compact.
            self._heap = [entry for entry in self._heap if entry[2]._state == SharedCall._PENDING]
            heapq.heapify(self._heap)

    def _fire(self) -> None:
        self._call = self._call_time = None
        heap = self._heap
        now = self._clock.seconds()
        # What is due now, taken out first: timers started by these
        # callbacks run on a later turn, as with callLater.
        due = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        self._firing = True
        try:
            for call in due:
                if call._state != SharedCall._PENDING:
                    continue
                call._state = SharedCall._CALLED
                self._active -= 1
                f, args = call._f, call._args
                call._f = call._args = None
                try:
                    f(*args)
                except Exception:
                    _log.failure("timer {f!r} failed", f=f)
        finally:
            self._firing = False
        heap = self._heap
        while heap and heap[0][2]._state != SharedCall._PENDING:
            heapq.heappop(heap)
        if heap:
            self._schedule(heap[0][0])


_BY_CLOCK: "weakref.WeakKeyDictionary[Any, SharedTimers]" = weakref.WeakKeyDictionary()
# The clock asked for last and its timers: nearly always the reactor, asked
# four times per call home (a WeakKeyDictionary look-up is a Python call).
_last: Tuple[Any, Optional[SharedTimers]] = (None, None)


_LONG_LIVED: "weakref.WeakKeyDictionary[Any, SharedTimers]" = weakref.WeakKeyDictionary()


def long_lived_timers(clock) -> SharedTimers:
    """
    The L{SharedTimers} of C{clock} for timers that live as long as their
    session (keepalives), apart from L{shared_timers}' short ones.  A
    cancelled short timer stays in its heap until the heap is mostly
    cancelled entries; with the long-lived ones in it too, that is never
    after a storm (~1.3 objects per session kept), while on its own it
    empties once the storm's setup timers are done.
    """
    timers = _LONG_LIVED.get(clock)
    if timers is None:
        timers = _LONG_LIVED[clock] = SharedTimers(clock)
    return timers


def shared_timers(clock) -> SharedTimers:
    """The L{SharedTimers} of C{clock} (one per clock: the reactor, or a test's Clock)."""
    global _last
    last_clock, timers = _last
    if last_clock is clock and timers is not None:
        return timers
    timers = _BY_CLOCK.get(clock)
    if timers is None:
        timers = _BY_CLOCK[clock] = SharedTimers(clock)
    _last = (clock, timers)
    return timers
