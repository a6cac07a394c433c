"""
Exponential back-off for callers that keep failing.

Keys are proven identities (a device id or a key fingerprint) and
addresses, each with its own limits.  Never key on an unproven claim (a
preamble DEVICE-ID): anyone could then get a real device throttled.
The check is a dict lookup, cheap enough for every accepted connection.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class BackOff:
    failures_before: int
    base_delay: float
    max_delay: float

    def delay(self, failures: int) -> float:
        """Seconds to refuse after the C{failures}-th failure in a row (0: not throttled)."""
        over = failures - self.failures_before
        if over < 0:
            return 0.0
        # Cap the exponent: 2**1000 is a float overflow, and max_delay is reached long before.
        return min(self.max_delay, self.base_delay * (2 ** min(over, 64)))


class _Entry:
    __slots__ = ("failures", "until", "last", "delay")

    def __init__(self):
        self.failures = 0
        self.until = 0.0
        self.last = 0.0
        self.delay = 0.0


class Throttle:
    """
    Failures per key, and until when the key is refused.

    @param on_throttled: called C{(key, failures, delay)} each time a key
        (re)enters back-off, for the event.
    """

    def __init__(self, policy: BackOff, clock, max_tracked: int = 100000,
                 on_throttled: Optional[Callable[[str, int, float], None]] = None):
        self.policy = policy
        self._clock = clock
        self._max_tracked = max_tracked
        self._on_throttled = on_throttled
        # Least recently failed first, for eviction.
        self._entries: "OrderedDict[str, _Entry]" = OrderedDict()

    def failed(self, key: str) -> float:
        """Count a failure of C{key}; return the back-off now in force (0: none)."""
        now = self._clock.seconds()
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = _Entry()
        elif now - entry.last > 2 * self.policy.max_delay + max(0.0, entry.until - entry.last):
            # Quiet for long enough: the earlier failures are history.
            entry = _Entry()
        entry.failures += 1
        entry.last = now
        self._entries[key] = entry
        delay = self.policy.delay(entry.failures)
        if delay:
            entry.until = now + delay
            entry.delay = delay
            if self._on_throttled is not None:
                self._on_throttled(key, entry.failures, delay)
        while len(self._entries) > self._max_tracked:
            self._entries.popitem(last=False)
        return delay

    def succeeded(self, key: str) -> None:
        self._entries.pop(key, None)

    def remaining(self, key: str) -> float:
        """Seconds C{key} is still refused (0: not throttled)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        # Never more than the delay set: (now + delay) - now can exceed
        # delay by a rounding error.
        return min(entry.delay, max(0.0, entry.until - self._clock.seconds()))

    def failures(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry.failures if entry is not None else 0

    def __len__(self) -> int:
        return len(self._entries)
