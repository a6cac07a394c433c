"""
The sessions that are up, by device: what applications wait on.

A transport layer (SSH, TLS) registers a session once the device is
identified and the NETCONF hello (or RESTCONF discovery) is done, and
unregisters it when it is lost.  Applications call L{whenConnected} to get
a device's session (now, or when it next calls home), list the sessions
that are up, and observe sessions coming and going.

When a device calls home while it already has a session, the newer one
wins: the older is closed, and both facts are events.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer

from callhome_mux.events import EventBus


class ManagedSession:
    """
    What every session type (NETCONF over SSH or TLS, RESTCONF) offers the registry.

    Subclasses or duck-typed equivalents provide: C{device_id}, C{details}
    (a JSON-able dict: transport, peer, algorithms, capabilities ...),
    C{close()} and C{whenLost()} (a Deferred that fires when the session ends).
    They may also provide C{watchLost()}, which the registry prefers.
    """

    device_id: str
    details: Dict[str, Any]

    def close(self, reason: str = "closed") -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def whenLost(self) -> defer.Deferred:  # pragma: no cover - interface
        raise NotImplementedError

    def watchLost(self, watcher: "SessionRegistry") -> bool:
        """
        Optional: call C{watcher.sessionLost(self, reason)} once, when the
        session ends (at once if it has ended), as C{whenLost()} would fire
        with C{reason}; return whether it will.  The registry watches every
        session for its whole life: a Deferred, its callbacks and their
        tuples were ~7 objects kept per session.  False (the default): the
        registry uses C{whenLost()}.
        """
        return False


SessionObserver = Callable[[Any], None]


class SessionRegistry:
    def __init__(self, events: EventBus):
        self._events = events
        self._sessions: Dict[str, Any] = {}
        self._waiters: Dict[str, List[defer.Deferred]] = {}
        # Tuples, replaced on change: nothing copied per session.
        self._connected_observers: Tuple[SessionObserver, ...] = ()
        self._lost_observers: Tuple[SessionObserver, ...] = ()

    # -- for applications ------------------------------------------------

    def whenConnected(self, device_id: str) -> defer.Deferred:
        """A Deferred firing with C{device_id}'s session: now if it is up, else when it calls home."""
        session = self._sessions.get(device_id)
        if session is not None:
            return defer.succeed(session)
        waiter: defer.Deferred = defer.Deferred(lambda d: self._forget_waiter(device_id, d))
        self._waiters.setdefault(device_id, []).append(waiter)
        return waiter

    def get(self, device_id: str) -> Optional[Any]:
        return self._sessions.get(device_id)

    def sessions(self) -> List[Any]:
        """The sessions that are up now."""
        return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    def addConnectedObserver(self, observer: SessionObserver) -> None:
        self._connected_observers += (observer,)

    def addLostObserver(self, observer: SessionObserver) -> None:
        self._lost_observers += (observer,)

    def removeConnectedObserver(self, observer: SessionObserver) -> None:
        self._connected_observers = _without(self._connected_observers, observer)

    def removeLostObserver(self, observer: SessionObserver) -> None:
        self._lost_observers = _without(self._lost_observers, observer)

    # -- for transport layers --------------------------------------------

    def register(self, session: Any) -> None:
        """Make C{session} the device's session; a previous one is closed (newer wins)."""
        device_id = session.device_id
        details = session.details
        sessions = self._sessions
        previous = sessions.get(device_id)
        sessions[device_id] = session
        if previous is not None and previous is not session:
            self._events.emit(
                "session.replaced",
                device_id=device_id,
                reason="the device called home again; the newer session wins",
                old_peer=previous.details.get("peer"),
                new_peer=details.get("peer"),
            )
            previous.close("replaced by a newer session from the same device")
        watch = getattr(session, "watchLost", None)
        if watch is None or not watch(self):
            session.whenLost().addBoth(self._lost, session)
        self._events.emit(
            "session.up",
            device_id=device_id,
            transport=details.get("transport"),
            peer=details.get("peer"),
        )
        for observer in self._connected_observers:
            self._call(observer, session)
        if self._waiters:
            for waiter in self._waiters.pop(device_id, ()):
                waiter.callback(session)

    def _lost(self, reason, session) -> None:
        self.sessionLost(session, reason)

    def sessionLost(self, session: Any, reason: Any) -> None:
        """C{session} has ended, for C{reason} (text, or a Failure); see L{ManagedSession.watchLost}."""
        device_id = session.device_id
        if self._sessions.get(device_id) is session:
            del self._sessions[device_id]
        why = getattr(getattr(reason, "value", None), "args", None)
        details = session.details
        self._events.emit(
            "session.lost",
            device_id=device_id,
            transport=details.get("transport"),
            peer=details.get("peer"),
            reason=str(why[0]) if why else str(getattr(reason, "value", reason)),
        )
        for observer in self._lost_observers:
            self._call(observer, session)

    def _forget_waiter(self, device_id: str, waiter: defer.Deferred) -> None:
        waiters = self._waiters.get(device_id, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(device_id, None)

    def _call(self, observer, session) -> None:
        try:
            observer(session)
        except Exception as error:  # an observer must not break the session
            self._events.emit("observer.error", device_id=session.device_id, reason=repr(error))


def _without(observers: tuple, observer) -> tuple:
    """C{observers} without the first C{observer}; C{ValueError} if it is not there (as list.remove)."""
    index = observers.index(observer)
    return observers[:index] + observers[index + 1 :]
