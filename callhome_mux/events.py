"""
Structured events: one mechanism for everything callhome-mux reports.

Every subsystem reports what happened through an L{EventBus}.  Each event
is a flat dict with an C{event} name (dotted, subsystem first:
C{connection.accepted}, C{ssh.hostkey.unknown}, C{netconf.session.up}) and
plain JSON-able fields (C{connection_id}, C{peer}, C{device_id}, C{reason},
...).  The bus sends each event to C{twisted.logger} as a structured event
(the fields become log-event keys, so a JSON log observer keeps them) and
to observers that embedding code registers.

Secrets never go into an event: callers pass identities and fingerprints,
never passwords or keys, and L{EventBus.emit} refuses field names that look
like secrets so a slip is caught by the tests rather than by a log reader.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.logger import Logger, LogLevel

Event = Dict[str, Any]
EventObserver = Callable[[Event], None]
#: Whether an observer wants the events of a name (see EventBus.addObserver).
NameFilter = Callable[[str], bool]
#: Event names whose observers EventBus keeps (more are routed per event).
_MAX_ROUTES = 4096

# Field names that must never reach a log or an observer.
_SECRET_FIELDS = frozenset({"password", "passphrase", "secret", "private_key", "token", "shared_secret"})

# Events whose name ends in one of these words are logged as warnings; the
# rest are informational.  Observers see every event regardless.
_WARNING_SUFFIXES = ("rejected", "refused", "failed", "lost", "mismatch", "unknown", "error", "timeout", "throttled")

_log = Logger(namespace="callhome_mux")


class EventBus:
    """
    Fan structured events out to C{twisted.logger} and to observers.

    @ivar clock: anything with C{seconds()}; events carry C{time} from it,
        so tests driving a L{task.Clock} see their own time.
    """

    def __init__(self, clock=None, log: Logger | None = None):
        # (observer, wants) pairs in a tuple, replaced on change: emit
        # iterates without a copy, and an observer added or removed during
        # an emit takes effect from the next event, as before.
        self._entries: Tuple[Tuple[EventObserver, Optional[NameFilter]], ...] = ()
        # Event name -> the observers that see it, found once per name.
        self._routes: Dict[str, Tuple[EventObserver, ...]] = {}
        self._clock = clock
        self._log = log if log is not None else _log

    def addObserver(self, observer: EventObserver, wants: Optional[NameFilter] = None) -> None:
        """
        Send every event to C{observer}; with C{wants}, only the events
        whose name it accepts.  C{wants} is asked once per event name (the
        answer is kept), so it must depend on the name alone: an observer
        that ignores most events then costs nothing for them.
        """
        self._entries += ((observer, wants),)
        self._routes = {}

    def removeObserver(self, observer: EventObserver) -> None:
        entries = self._entries
        for index, (each, _) in enumerate(entries):
            if each == observer:
                self._entries = entries[:index] + entries[index + 1 :]
                self._routes = {}
                return

    def _route(self, event: str) -> Tuple[EventObserver, ...]:
        observers = tuple(observer for observer, wants in self._entries if wants is None or self._wants(wants, event))
        # Names come from code, so they are few; still, never grow without bound.
        if len(self._routes) < _MAX_ROUTES:
            self._routes[event] = observers
        return observers

    def _wants(self, wants: NameFilter, event: str) -> bool:
        # A filter that raises is logged and its observer gets the events of
        # that name: as for an observer, the emitter must not see the error,
        # and a broken filter must not silence an observer.
        try:
            return bool(wants(event))
        except Exception:
            self._log.failure("event filter {wants!r} failed on {event}", wants=wants, event=event)
            return True

    def emit(self, event: str, **fields: Any) -> Event:
        """
        Report C{event} with C{fields}; return the event dict.

        An observer that raises is logged and does not stop the others or
        the caller: a broken dashboard must not break a device session.
        """
        if not _SECRET_FIELDS.isdisjoint(fields):
            leaked = _SECRET_FIELDS.intersection(fields)
            raise ValueError(f"secret field(s) {sorted(leaked)} must not be put in an event")
        now = self._clock.seconds() if self._clock is not None else time.time()
        record: Event = {"event": event, "time": now, **fields}
        log = self._log
        log_observer = log.observer
        # A LogPublisher nobody listens to (no log configured) would drop
        # the log event: then it is not built at all.
        if getattr(log_observer, "_observers", True):
            level = LogLevel.warn if event.endswith(_WARNING_SUFFIXES) else LogLevel.info
            # The format names only the event and the fields every event may
            # carry; the full record is attached as structured keys.  The log
            # event is built here, as Logger.emit would build it, and handed to
            # the logger's observer: Logger.emit first checks the level against
            # LogLevel.iterconstants() (sorting the constants) on every call,
            # which was a third of an event's cost (bench/classify.py).
            log_observer(
                {
                    **record,
                    "_summary": _summarise(fields),
                    "log_logger": log,
                    "log_level": level,
                    "log_namespace": log.namespace,
                    "log_source": log.source,
                    "log_format": "{event} {_summary}",
                    "log_time": time.time(),
                }
            )
        if not self._entries:
            return record
        try:
            observers = self._routes[event]
        except KeyError:
            observers = self._route(event)
        for observer in observers:
            try:
                observer(record)
            except Exception:
                self._log.failure("event observer {observer!r} failed on {event}", observer=observer, event=event)
        return record


def _summarise(fields: Dict[str, Any]) -> str:
    # Rendered lazily by the log observer only: no formatting cost when
    # nothing writes text logs.
    return _Summary(fields)


class _Summary:
    __slots__ = ("_fields",)

    def __init__(self, fields: Dict[str, Any]):
        self._fields = fields

    def __format__(self, spec: str) -> str:
        return " ".join(f"{key}={value}" for key, value in self._fields.items())

    def __repr__(self) -> str:
        return format(self, "")
