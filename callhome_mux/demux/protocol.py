"""
The Twisted side of the demultiplexer: timers, limits, handoff.

L{DemuxProtocol} owns an accepted connection until the L{Classifier}
decides its kind, then hands the live transport to the protocol that the
handler registered for that kind returns, replaying the bytes already read.
After the handoff it only forwards bytes and the end of the connection, so
the next layer sees exactly the stream the device sent.

L{Admission} bounds the connections that are still unclassified, in total
and per source address, so that a flood of silent or one-byte connections
cannot starve well-behaved devices: per source, new connections past the
limit are refused; in total, the oldest unclassified connection is dropped
to make room (a device that talks is classified within milliseconds and is
rarely the oldest, while a flood's connections sit and age).
"""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType
from typing import Callable, Dict, Mapping, Optional

from twisted.internet import abstract, protocol
from twisted.internet.interfaces import IProtocol

from callhome_mux.connection import (
    ClassifiedConnection,
    ConnectionHandler,
    ConnectionKind,
    format_address,
    next_connection_id,
)
from callhome_mux.demux.classifier import Classifier, Decision
from callhome_mux.demux.settings import DemuxSettings
from callhome_mux.events import EventBus
from callhome_mux.timers import shared_timers


#: The kinds' names for events (an Enum's C{.value} is a property lookup each time).
_KIND_NAMES = {kind: kind.value for kind in ConnectionKind}


class Admission:
    """Counts unclassified connections, in total and per source address."""

    def __init__(self, settings: DemuxSettings):
        self.settings = settings
        self._waiting: "OrderedDict[DemuxProtocol, str]" = OrderedDict()
        self._per_source: Dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def from_source(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def admit(self, connection: "DemuxProtocol", source: str) -> Optional[str]:
        """Admit C{connection}; return why not, or C{None}.  May drop the oldest waiting connection."""
        if self._per_source.get(source, 0) >= self.settings.max_unclassified_per_source:
            return f"too many unclassified connections from {source} (limit {self.settings.max_unclassified_per_source})"
        if len(self._waiting) >= self.settings.max_unclassified:
            oldest = next(iter(self._waiting))
            self.release(oldest)
            oldest.drop(f"dropped to make room: {self.settings.max_unclassified} connections unclassified, oldest first")
        self._waiting[connection] = source
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return None

    def release(self, connection: "DemuxProtocol") -> None:
        source = self._waiting.pop(connection, None)
        if source is None:
            return
        remaining = self._per_source[source] - 1
        if remaining:
            self._per_source[source] = remaining
        else:
            del self._per_source[source]


class DemuxProtocol(protocol.Protocol):
    """One accepted connection: classify it, then pass it on."""

    def __init__(self, factory: "DemuxFactory"):
        self.factory = factory
        self.connection_id = next_connection_id()
        self.kind: Optional[ConnectionKind] = None
        self._classifier: Optional[Classifier] = None
        self._delegate: Optional[IProtocol] = None
        self._timer = None  # the silence, then the classification timeout
        self._accepted_at = 0.0
        self._done = False  # decided, refused or lost: no more classification
        self._peer_text = "?"
        self._peer = None  # the address from connectionMade, for the handoff

    # -- connection start ------------------------------------------------

    def connectionMade(self) -> None:
        share_write_buffer_keys(self.transport)
        factory = self.factory
        clock = factory.clock
        self._accepted_at = clock.seconds()
        peer = self._peer = self.transport.getPeer()
        self._peer_text = format_address(peer)
        factory.events.emit(
            "connection.accepted",
            connection_id=self.connection_id,
            peer=self._peer_text,
            listener=factory.listener_name,
        )
        source = getattr(peer, "host", self._peer_text)
        if factory.address_policy is not None:
            refusal = factory.address_policy(source)
            if refusal is not None:
                self._refuse(refusal, 0)
                return
        if factory.pinned_kind is not None:
            self._hand_off(Decision(factory.pinned_kind, "pinned listener"))
            return
        refusal = factory.admission.admit(self, source)
        if refusal is not None:
            self._refuse(refusal, 0)
            return
        settings = factory.settings
        self._classifier = Classifier(settings)
        # Nearly always cancelled within milliseconds: a shared timer, not
        # reactor DelayedCalls (callhome_mux.timers); one at a time, the
        # silence timeout first, then the classification timeout (at the
        # time it would have had if started now).
        if settings.silence_timeout <= settings.classify_timeout:
            self._timer = shared_timers(clock).callLater(settings.silence_timeout, self._silence_timer)
        else:  # (settings refuse this; as two timers would have run it)
            self._timer = shared_timers(clock).callLater(settings.classify_timeout, self._timeout)

    # -- bytes -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        delegate = self._delegate
        if delegate is not None:
            delegate.dataReceived(data)
            return
        if self._done:
            return
        decision = self._classifier.feed(data)
        if decision is not None:
            self._decided(decision)

    def _silence_timer(self) -> None:
        # A busy reactor can run this timer before it reads a banner that is
        # already waiting in the socket (a storm under load made SSH devices
        # look like silent TLS ones).  Give reads one more reactor turn
        # first; bytes read meanwhile decide as they always do.
        self._timer = shared_timers(self.factory.clock).callLater(0, self._silence_confirmed)

    def _silence_confirmed(self) -> None:
        self._timer = None
        settings = self.factory.settings
        decision = self._classifier.silence()
        if decision is not None:
            self._decided(decision)
        if self._done:
            return
        if settings.classify_timeout <= settings.silence_timeout:
            self._timeout()  # both due now: silence first, as two timers ran
        else:
            self._timer = shared_timers(self.factory.clock).callAt(
                self._accepted_at + settings.classify_timeout, self._timeout
            )

    def _timeout(self) -> None:
        self._timer = None
        if not self._done:
            self._decided(self._classifier.timeout())

    def drop(self, reason: str) -> None:
        """Refuse this connection from outside (the admission limit)."""
        if not self._done:
            self._refuse(reason, self._classifier.bytes_read if self._classifier else 0)

    # -- decisions -------------------------------------------------------

    def _decided(self, decision: Decision) -> None:
        self._done = True
        self._cancel_timers()
        self.factory.admission.release(self)
        # Its buffer and decision are not needed any more (~0.5-1 KiB per
        # held session, bench/hold.py).
        self._classifier = None
        if decision.accepted:
            self._hand_off(decision)
        else:
            self._refuse(decision.reason, len(decision.data))

    def _hand_off(self, decision: Decision) -> None:
        self._done = True
        factory = self.factory
        kind = decision.kind
        self.kind = kind
        elapsed_ms = (factory.clock.seconds() - self._accepted_at) * 1000.0
        factory.events.emit(
            "connection.classified",
            connection_id=self.connection_id,
            peer=self._peer_text,
            kind=_KIND_NAMES[kind],
            bytes=len(decision.data),
            ms=round(elapsed_ms, 3),
            reason=decision.reason,
        )
        handler = factory.handlers.get(kind)
        if handler is None:
            self._refuse(f"no handler for {kind.value} connections on this server", len(decision.data))
            return
        transport = self.transport
        connection = ClassifiedConnection(
            connection_id=self.connection_id,
            kind=kind,
            transport=transport,
            # The transport builds a new address object per getPeer();
            # the one read at accept is the same address.
            peer=self._peer if self._peer is not None else transport.getPeer(),
            # host: asked of the transport when wanted (SSH's channel; TLS never).
            initial_bytes=decision.data,
            listener=factory.listener_name,
            preamble=decision.preamble,
            preamble_lines=decision.preamble_lines,
            details=factory.pinned_details,
        )
        try:
            delegate = handler.protocolFor(connection)
        except Exception as error:
            factory.events.emit(
                "connection.handler.error",
                connection_id=self.connection_id,
                peer=self._peer_text,
                kind=_KIND_NAMES[kind],
                reason=repr(error),
            )
            transport.loseConnection()
            return
        if delegate is None:
            transport.loseConnection()  # the handler has said why
            return
        self._delegate = delegate
        delegate.makeConnection(transport)
        if decision.data and self._delegate is not None:
            delegate.dataReceived(decision.data)
        # Replayed: the handler keeps the connection for the session's
        # life, the bytes (banner + KEXINIT, ~0.6 KiB) need not stay.
        connection.initial_bytes = b""

    def _refuse(self, reason: str, bytes_read: int) -> None:
        self._done = True
        self._cancel_timers()
        self.factory.admission.release(self)
        self.factory.events.emit(
            "connection.rejected",
            connection_id=self.connection_id,
            peer=self._peer_text,
            listener=self.factory.listener_name,
            bytes=bytes_read,
            reason=reason,
        )
        # Abort rather than close: nothing is owed to a refused peer, and a
        # peer that does not read must not keep the socket open.
        self.transport.abortConnection()

    # -- connection end --------------------------------------------------

    def connectionLost(self, reason) -> None:
        self._cancel_timers()
        self.factory.admission.release(self)
        delegate, self._delegate = self._delegate, None
        if not self._done:
            self._done = True
            self.factory.events.emit(
                "connection.rejected",
                connection_id=self.connection_id,
                peer=self._peer_text,
                listener=self.factory.listener_name,
                bytes=self._classifier.bytes_read if self._classifier else 0,
                reason="closed by the peer before it could be classified",
            )
        if delegate is not None:
            delegate.connectionLost(reason)
        self.factory.events.emit(
            "connection.closed",
            connection_id=self.connection_id,
            peer=self._peer_text,
            kind=_KIND_NAMES[self.kind] if self.kind else None,
            seconds=round(self.factory.clock.seconds() - self._accepted_at, 3),
        )

    def _cancel_timers(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()  # a no-op once it has run


class DemuxFactory(protocol.Factory):
    """Builds a L{DemuxProtocol} for each connection accepted by one listener."""

    protocol = DemuxProtocol
    noisy = False

    def __init__(
        self,
        settings: DemuxSettings,
        events: EventBus,
        handlers: Mapping[ConnectionKind, ConnectionHandler],
        admission: Optional[Admission] = None,
        clock=None,
        listener_name: str = "",
        pinned_kind: Optional[ConnectionKind] = None,
        pinned_details: Optional[Mapping[str, object]] = None,
        address_policy: Optional[Callable[[str], Optional[str]]] = None,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.settings = settings
        self.events = events
        #: A live mapping: handlers registered later are seen by new connections.
        self.handlers = handlers
        self.admission = admission if admission is not None else Admission(settings)
        self.clock = clock
        self.listener_name = listener_name
        self.pinned_kind = pinned_kind
        #: Read-only: every connection's C{details} is this very mapping.
        self.pinned_details: Mapping[str, object] = MappingProxyType(dict(pinned_details or {}))
        #: C{address -> reason or None}, asked first for every connection
        #: (the inventory's per-address back-off); must be cheap and synchronous.
        self.address_policy = address_policy

    def buildProtocol(self, addr) -> DemuxProtocol:
        return DemuxProtocol(self)


def share_write_buffer_keys(transport) -> None:
    """
    Give a fresh socket transport its write-buffer attributes at once.

    Twisted's C{FileDescriptor} first sets C{dataBuffer} and C{offset} on
    the instance at its first write.  CPython 3.11 keeps a class's instance
    attributes in one key table shared by all its instances, but stops
    adding keys to it once ~30 instances exist; an attribute first set after
    that gives its instance a dict of its own.  In a storm the first write
    comes after hundreds of accepts, so every connection of the process
    paid ~0.8 KiB for that dict (bench/hold.py).  Set on the first
    connections, before any write, the two names join the shared keys.
    (Twisted would only need to set them in C{FileDescriptor.__init__}.)
    """
    if isinstance(transport, abstract.FileDescriptor) and transport.dataBuffer == b"" and transport.offset == 0:
        transport.dataBuffer = b""
        transport.offset = 0
