"""A listening port that callers can wait for (useful with port 0)."""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import defer


class PortWaiter:
    """Holds the port once listening, and fires the Deferreds waiting for it."""

    def __init__(self):
        self.port = None
        self._waiters: List[defer.Deferred] = []

    def whenListening(self) -> defer.Deferred:
        if self.port is not None:
            return defer.succeed(self.port)
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def listening(self, port) -> None:
        self.port = port
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(port)

    def failed(self, failure) -> bool:
        """Fail the waiters; C{False} if nobody was waiting (the caller must report it)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)
        return bool(waiters)

    def stop(self) -> Optional[defer.Deferred]:
        """Stop listening; forget the port."""
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
