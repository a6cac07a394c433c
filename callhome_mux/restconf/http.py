"""
HTTP/1.1 over the one connection the device opened: one request at a time, in order.

Why Twisted's own C{HTTP11ClientProtocol} (C{twisted.web._newclient}) and
not a hand-written client: its response parser (status line, headers,
chunked and Content-Length bodies, 1xx interim replies, HEAD and 204
bodies, trailer limits) is the one Twisted's Agent has used and hardened
for years, and it connects to any transport with C{makeConnection}, which
is exactly what a call-home connection is.  What it leaves to its user,
and this module supplies:

  - C{request()} refuses (C{RequestNotSent}) while a request is in
    progress, so requests are queued here and sent one at a time.
  - It sends C{Connection: close} unless the C{Request} is built with
    C{persistent=True}; we always keep the connection, it is the only one.
  - It never adds C{Host}; HTTP/1.1 requires exactly one, so we add it.
  - The next request must not be issued from its quiescent callback (the
    parser of the finished reply is disconnected after that callback
    runs); we issue it once the previous reply body has been delivered.
  - It has no bound on body size and no timeout: the body collector
    discards a reply over C{max_body} (the request fails, the connection
    stays in step) and each request has a timer on an injectable clock.

The module is private by name; we use only C{HTTP11ClientProtocol}
(C{request}, C{state}, the IProtocol methods), C{Request} and
C{ResponseDone}, and the tests in C{tests/test_restconf_http.py} pin the
behaviour relied on (wire format, Host, persistence, order, splits).
Header lines are bounded by the parser (16 KiB each); how many there are
is bounded only by the request timeout.

A request that times out while still queued just leaves the queue.  One
that times out on the wire costs the connection: HTTP/1.1 has no way to
skip a reply, so the only safe move is to report the connection broken
(C{on_broken}) and let the owner close it.  The same goes for a reply
HTTP cannot parse, and for bytes the device sends when no request is
outstanding: after either, request and reply are out of step for good.

C{on_broken(why, kind)} gets one of L{TIMEOUT}, L{ABANDONED},
L{PROTOCOL_ERROR} as C{kind}.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol, Request, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from callhome_mux.restconf.errors import RequestTimeout, ResponseTooLarge, SessionLost, TooManyRequests


#: Headers a caller may not set: the framing and the life of the one
#: connection are ours (a stray "Connection: close" would end the session,
#: a second Content-Length would desynchronise it).
_OURS = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"})

#: Kinds of C{on_broken} report.
TIMEOUT = "timeout"
ABANDONED = "abandoned"
PROTOCOL_ERROR = "protocol-error"


@dataclass
class HTTPReply:
    """A complete reply: status, headers (lower-case names), body."""

    status: int
    headers: Dict[str, List[str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory: written at once, length known (no chunking)."""

    def __init__(self, body: bytes):
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


@dataclass(eq=False)
class _Exchange:
    method: bytes
    target: bytes
    headers: Dict[str, str]
    body: Optional[bytes]
    request: Request = field(repr=False, default=None)
    deferred: defer.Deferred = field(repr=False, default=None)
    timer: object = field(repr=False, default=None)
    on_wire: bool = False
    done: bool = False
    #: Failed as too large, its reply still streaming through: the timer
    #: stays armed so an endless reply cannot hold the connection forever.
    draining: bool = False

    @property
    def label(self) -> str:
        return f"{self.method.decode('ascii')} {self.target.decode('ascii', 'replace')}"


class _BodyCollector(Protocol):
    """Gathers one reply body up to C{limit} bytes; past it, keeps reading and discards."""

    def __init__(self, limit: int, too_large: Callable[[], None], finished: Callable[[bytes, Optional[Failure], bool], None]):
        self._limit = limit
        self._too_large = too_large
        self._finished = finished
        self._chunks: List[bytes] = []
        self._size = 0
        self.too_large = False

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self.too_large:
            return
        if self._size > self._limit:
            # Drop what we have; the rest streams through unkept so the
            # connection stays in step for the next request.
            self.too_large = True
            self._chunks = []
            self._too_large()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = None) -> None:
        ok = reason is None or reason.check(ResponseDone, PotentialDataLoss)
        self._finished(b"".join(self._chunks), None if ok else reason, self.too_large)


class SerialHTTPClient:
    """
    Persistent HTTP/1.1 client on one transport; requests queued and sent in order.

    The owner forwards C{makeConnection}, C{dataReceived} and
    C{connectionLost} from the protocol that holds the transport.
    """

    def __init__(
        self,
        host: str,
        clock: IReactorTime,
        max_body: int,
        timeout: float,
        max_queued: int = 1000,
        on_broken: Callable[[str, str], None] = lambda why, kind: None,
    ):
        self._host = host.encode("idna" if not host.isascii() else "ascii")
        self._clock = clock
        self._max_body = max_body
        self._timeout = timeout
        self._max_queued = max_queued
        self._on_broken = on_broken
        #: Set once the connection is reported broken: nothing more is sent
        #: or read on it, and it is reported once.
        self._broken = False
        self._http = HTTP11ClientProtocol()
        self._queue: Deque[_Exchange] = deque()
        self._current: Optional[_Exchange] = None
        self._lost: Optional[SessionLost] = None
        #: Requests sent on the wire so far (for tests and metrics).
        self.sent = 0

    # -- the transport side ---------------------------------------------

    def makeConnection(self, transport) -> None:
        self._transport = transport
        self._http.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._broken:
            return
        if self._current is None and self._lost is None and data:
            # Nothing asked, yet the device talks: whatever this is, the
            # next reply could no longer be told from it.
            self._break(f"the device sent {len(data)} bytes with no request outstanding", PROTOCOL_ERROR)
            return
        self._http.dataReceived(data)

    def connectionLost(self, why: str) -> None:
        """The connection is gone: everything outstanding fails now with L{SessionLost}."""
        if self._lost is None:
            self._lost = SessionLost(why)
        self._http.connectionLost(Failure(self._lost))
        self.fail_all(self._lost)

    def fail_all(self, error: Exception) -> None:
        current, self._current = self._current, None
        pending = list(self._queue)
        self._queue.clear()
        for exchange in ([current] if current is not None else []) + pending:
            exchange.draining = False
            self._finish(exchange, Failure(error))

    @property
    def pending(self) -> int:
        """Requests whose callers still wait: the one on the wire plus the queue."""
        waiting = [self._current] if self._current is not None else []
        return sum(1 for exchange in waiting + list(self._queue) if not exchange.done)

    # -- the caller side ------------------------------------------------

    def request(
        self,
        method: str,
        target: str,
        headers: Optional[Dict[str, str]] = None,
        body: Optional[bytes] = None,
        timeout: Optional[float] = None,
    ) -> defer.Deferred:
        """
        Queue a request; the Deferred fires with an L{HTTPReply} (any status).

        It fails with L{SessionLost}, L{RequestTimeout}, L{ResponseTooLarge}
        or L{TooManyRequests}.  Cancelling it drops a queued request; a
        request already on the wire costs the connection, as a timeout does.
        """
        if self._lost is not None:
            return defer.fail(SessionLost(str(self._lost)))
        if len(self._queue) >= self._max_queued:
            return defer.fail(TooManyRequests(f"{len(self._queue)} requests already queued"))
        try:
            exchange = self._exchange(method, target, headers or {}, body)
        except (ValueError, TypeError) as error:
            # Refused before queueing: a bad request must never wedge the queue.
            return defer.fail(error)
        exchange.deferred = defer.Deferred(lambda d: self._cancelled(exchange))
        exchange.timer = self._clock.callLater(
            self._timeout if timeout is None else timeout, self._timed_out, exchange
        )
        self._queue.append(exchange)
        self._pump()
        return exchange.deferred

    # -- internals ---------------------------------------------------------

    def _exchange(self, method: str, target: str, headers: Dict[str, str], body: Optional[bytes]) -> _Exchange:
        exchange = _Exchange(method.encode("ascii"), target.encode("ascii"), dict(headers), body)
        raw = Headers({b"host": [self._host]})
        for name, value in exchange.headers.items():
            if name.lower() in _OURS:
                continue
            raw.setRawHeaders(name.encode("ascii"), [value.encode("latin-1")])
        producer = _BytesProducer(body) if body is not None else None
        # Request() checks the method and target for characters HTTP forbids.
        exchange.request = Request(exchange.method, exchange.target, raw, producer, persistent=True)
        return exchange

    def _pump(self) -> None:
        """Send the next queued request if the connection is idle."""
        if self._current is not None or self._lost is not None or self._broken:
            return
        if self._http.state != "QUIESCENT" or getattr(self._transport, "disconnecting", False):
            # Busy, or the device asked to close (Connection: close): the
            # coming connectionLost fails whatever is queued.
            return
        while self._queue:
            exchange = self._queue.popleft()
            if not exchange.done:
                break
        else:
            return
        self._current = exchange
        exchange.on_wire = True
        self.sent += 1
        self._http.request(exchange.request).addCallbacks(
            self._got_response, self._request_failed, callbackArgs=(exchange,), errbackArgs=(exchange,)
        )

    def _got_response(self, response, exchange: _Exchange) -> None:
        def too_large() -> None:
            # Fail the caller now; the rest of the reply is read and dropped.
            error = ResponseTooLarge(f"reply to {exchange.label} is over {self._max_body} bytes; discarded")
            self._finish(exchange, Failure(error), keep_timer=True)
            exchange.draining = True

        def finished(body: bytes, failure: Optional[Failure], too_large: bool) -> None:
            self._reply_done(exchange, response, body, failure)

        response.deliverBody(_BodyCollector(self._max_body, too_large, finished))

    def _reply_done(self, exchange, response, body, failure) -> None:
        if self._current is exchange:
            self._current = None
        exchange.draining = False
        self._cancel_timer(exchange)
        if failure is not None:
            self._finish(exchange, Failure(self._lost or SessionLost(f"reply to {exchange.label} cut short: {failure.getErrorMessage()}")))
        else:
            headers = {
                name.decode("latin-1").lower(): [value.decode("latin-1") for value in values]
                for name, values in response.headers.getAllRawHeaders()
            }
            self._finish(exchange, HTTPReply(response.code, headers, body))
        # The reply is fully delivered and the protocol is quiescent: the
        # next request can go out on the same connection.
        self._pump()

    def _request_failed(self, failure: Failure, exchange: _Exchange) -> None:
        if self._current is exchange:
            self._current = None
        if self._lost is None:
            # Not a loss we know of: the reply could not be parsed (the
            # HTTP protocol is already dropping the connection) or the
            # request could not be written.  Say so before the loss does.
            why = f"{exchange.label} failed: {_describe(failure)}"
            self._finish(exchange, Failure(SessionLost(why)))
            self._break(why, PROTOCOL_ERROR)
            return
        self._finish(exchange, Failure(self._lost))

    def _timed_out(self, exchange: _Exchange) -> None:
        exchange.timer = None
        error = RequestTimeout(f"{exchange.label}: no complete reply within the request timeout")
        if exchange.draining:
            self._break(f"the oversized reply to {exchange.label} was still streaming at the request timeout", TIMEOUT)
        elif exchange.on_wire:
            self._finish(exchange, Failure(error))
            self._break(f"{exchange.label} timed out on the wire; HTTP/1.1 cannot skip its reply", TIMEOUT)
        else:
            self._drop_queued(exchange)
            self._finish(exchange, Failure(error))

    def _cancelled(self, exchange: _Exchange) -> None:
        # The Deferred errbacks with CancelledError itself once we return.
        was_on_wire = exchange.on_wire and not exchange.done
        self._mark_done(exchange)
        if was_on_wire:
            self._break(f"{exchange.label} cancelled on the wire; HTTP/1.1 cannot skip its reply", ABANDONED)
        else:
            self._drop_queued(exchange)

    def _break(self, why: str, kind: str) -> None:
        if self._broken or self._lost is not None:
            return
        self._broken = True
        self._on_broken(why, kind)

    def _drop_queued(self, exchange: _Exchange) -> None:
        try:
            self._queue.remove(exchange)
        except ValueError:
            pass

    def _mark_done(self, exchange: _Exchange, keep_timer: bool = False) -> None:
        exchange.done = True
        if not keep_timer:
            self._cancel_timer(exchange)

    @staticmethod
    def _cancel_timer(exchange: _Exchange) -> None:
        if exchange.timer is not None and exchange.timer.active():
            exchange.timer.cancel()
        exchange.timer = None

    def _finish(self, exchange: _Exchange, result, keep_timer: bool = False) -> None:
        if exchange.done:
            # Already answered (too large, cancelled): only the timer may remain.
            if not keep_timer and not exchange.draining:
                self._cancel_timer(exchange)
            return
        self._mark_done(exchange, keep_timer)
        if isinstance(result, Failure):
            exchange.deferred.errback(result)
        else:
            exchange.deferred.callback(result)


def _describe(failure: Failure) -> str:
    # ResponseFailed and friends wrap the real reasons in a list.
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(reason.getErrorMessage() for reason in reasons)
    return failure.getErrorMessage()
