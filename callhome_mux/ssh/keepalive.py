"""
Keepalive: notice a device that went away without closing TCP.

After C{interval} seconds without a byte from the device we send a probe
(an SSH global request with want-reply: any reply, even a refusal, is
traffic).  After C{max_missed} probes in a row with no traffic at all, the
session is declared lost.  Any received byte resets the count, so a busy
session never sends probes.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from callhome_mux.timers import long_lived_timers


class KeepaliveMonitor:
    """
    @param link: what probes and hears of the loss: C{link.sendKeepalive()}
        sends a probe, C{link.keepaliveLost(missed)} is called once the
        probes went unanswered.  An object rather than two callables: a
        monitor lives as long as its session, and bound methods are objects
        kept per session.
    """

    def __init__(self, clock: IReactorTime, interval: float, max_missed: int, link):
        self._clock = clock
        self._interval = interval
        self._max_missed = max_missed
        self._link = link
        self._timers = long_lived_timers(clock)
        self._last_traffic = clock.seconds()
        self._call: Optional[IDelayedCall] = None
        #: Probes sent since the last traffic.
        self.missed = 0

    def start(self) -> None:
        self._last_traffic = self._clock.seconds()
        self._schedule(self._interval)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def trafficSeen(self) -> None:
        # Cheap on purpose (called for every chunk): just note the time; the
        # timer looks at it when it fires instead of being rescheduled here.
        self._last_traffic = self._clock.seconds()
        self.missed = 0

    def _schedule(self, delay: float) -> None:
        # One per session for its whole life: a shared timer (~100 bytes),
        # not a reactor DelayedCall (~450 bytes) each, among the other
        # long-lived ones.  The timer calls the monitor itself (__call__):
        # no bound method kept per session.
        self._call = self._timers.callLater(delay, self)

    def __call__(self) -> None:
        """The timer is due."""
        self._call = None
        # Quiet for less than the interval: wait until it has passed since
        # the last traffic, at that absolute time.  (Not now - last < interval
        # and a delay of interval - (now - last): a difference of floats can
        # fall a hair short of the interval, a timer armed for "now" again.)
        due = self._last_traffic + self._interval
        if self.missed == 0 and self._clock.seconds() < due:
            self._call = self._timers.callAt(due, self)
            return
        if self.missed >= self._max_missed:
            self._link.keepaliveLost(self.missed)
            return
        self.missed += 1
        self._link.sendKeepalive()
        self._schedule(self._interval)
