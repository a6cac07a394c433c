"""
Live events as Server-Sent Events (C{GET /api/v1/events}).

The hub observes the event bus and hands every event to each connected
client, which filters it (device, event-name prefix, what its token may
see) and writes it.  A client that does not read is detected through
Twisted's producer protocol: when the socket's send buffer is full the
HTTP channel pauses our producer; events then wait in a queue, and once
that queue passes C{sse_max_queued} the client is cut off.  Memory per
client is bounded by the transport's buffer plus that queue.
"""

from __future__ import annotations

import collections
import json
from typing import Callable, Deque, Optional, Sequence, Set

from twisted.internet import task
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from callhome_mux.api.tokens import Principal
from callhome_mux.api.views import plain
from callhome_mux.events import Event, EventBus


def encode_event(event_id: int, event: Event) -> bytes:
    name = str(event.get("event", "message"))
    # json.dumps never emits a raw newline, so one data: line suffices.
    data = json.dumps(plain(event), sort_keys=True)
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode("utf-8")


@implementer(IPushProducer)
class EventClient:
    """One SSE response: filter, write or queue, keep alive, cut off."""

    def __init__(
        self,
        hub: "EventHub",
        request,
        principal: Principal,
        devices: Sequence[str] = (),
        kinds: Sequence[str] = (),
    ):
        self.hub = hub
        self.request = request
        self.principal = principal
        self.devices = frozenset(devices)
        self.kinds = tuple(kinds)
        self.queue: Deque[bytes] = collections.deque()
        self.paused = False
        self.closed = False
        self.sent = 0
        self._keepalive: Optional[task.LoopingCall] = None

    def start(self) -> None:
        request = self.request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(lambda _: self._closed())
        request.write(b": callhome-mux events\nretry: 2000\n\n")
        self._keepalive = task.LoopingCall(self._send_keepalive)
        self._keepalive.clock = self.hub.clock
        self._keepalive.start(self.hub.keepalive, now=False)

    # -- filtering ---------------------------------------------------------

    def wants(self, event: Event) -> bool:
        device_id = event.get("device_id")
        if self.devices and device_id not in self.devices:
            return False
        if self.kinds and not str(event.get("event", "")).startswith(self.kinds):
            return False
        return self.hub.visible(self.principal, device_id)

    # -- writing -----------------------------------------------------------

    def deliver(self, chunk: bytes) -> None:
        if self.closed:
            return
        if self.paused or self.queue:
            self.queue.append(chunk)
            if len(self.queue) > self.hub.max_queued:
                self.cut_off()
            return
        self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        self.sent += 1
        self.request.write(chunk)

    def _send_keepalive(self) -> None:
        # Only when idle: a paused client would just queue it.
        if not self.closed and not self.paused and not self.queue:
            self.request.write(b": keepalive\n\n")

    def cut_off(self) -> None:
        """The client is not reading: drop it and everything queued for it."""
        if self.closed:
            return
        queued = len(self.queue)
        transport = getattr(self.request, "transport", None) or getattr(self.request.channel, "transport", None)
        self._closed()
        self.hub.dropped(self, queued)
        if transport is not None:
            transport.abortConnection()

    # -- IPushProducer -------------------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.queue and not self.paused and not self.closed:
            self._write(self.queue.popleft())

    def stopProducing(self) -> None:
        self._closed()

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue.clear()
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self.hub.remove(self)


class EventHub:
    """
    The event bus as seen by SSE clients.

    @param visible: C{(principal, device_id or None) -> bool}; what a
        token may see (the API's label rules).
    """

    def __init__(
        self,
        events: EventBus,
        visible: Callable[[Principal, Optional[str]], bool],
        clock,
        keepalive: float,
        max_queued: int,
        metrics=None,
    ):
        self.events = events
        self.visible = visible
        self.clock = clock
        self.keepalive = keepalive
        self.max_queued = max_queued
        self.metrics = metrics
        self.clients: Set[EventClient] = set()
        self._next_id = 1
        self._observing = False

    def start(self) -> None:
        if not self._observing:
            self.events.addObserver(self.observe)
            self._observing = True

    def stop(self) -> None:
        if self._observing:
            self.events.removeObserver(self.observe)
            self._observing = False
        for client in list(self.clients):
            transport = getattr(client.request, "transport", None)
            client._closed()
            if transport is not None:
                transport.loseConnection()

    def add(self, client: EventClient) -> None:
        self.clients.add(client)
        if self.metrics is not None:
            self.metrics.event_clients.set(len(self.clients))
        client.start()
        self.events.emit(
            "api.events.client.connected",
            token_id=client.principal.token_id,
            devices=sorted(client.devices),
            kinds=list(client.kinds),
        )

    def remove(self, client: EventClient) -> None:
        self.clients.discard(client)
        if self.metrics is not None:
            self.metrics.event_clients.set(len(self.clients))

    def dropped(self, client: EventClient, queued: int) -> None:
        if self.metrics is not None:
            self.metrics.event_clients_dropped.inc()
        self.events.emit(
            "api.events.client.dropped",
            token_id=client.principal.token_id,
            queued=queued,
            reason=f"the client stopped reading; more than {self.max_queued} events were waiting",
        )

    def observe(self, event: Event) -> None:
        if not self.clients:
            return
        chunk = None
        for client in list(self.clients):
            if client.closed or not client.wants(event):
                continue
            if chunk is None:
                # Encoded once, and only if someone wants it.
                chunk = encode_event(self._next_id, event)
                self._next_id += 1
            client.deliver(chunk)
