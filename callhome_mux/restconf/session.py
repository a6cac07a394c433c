"""
A RESTCONF client session (RFC 8040) over the connection the device opened.

The TLS handler, once its TLS connection to a RESTCONF device is up, asks
for the protocol that runs on it::

    protocol = restconf_protocol(device_id, events, settings, details, clock=None)
    # -> RestconfClientProtocol; install it on the TLS connection:
    protocol.makeConnection(tls_transport)      # bytes then go to protocol.dataReceived
    protocol.whenReady().addCallback(registry.register)   # Deferred[RestconfSession]
    protocol.whenLost()                         # Deferred firing with the text reason

The TLS handler calls it as C{restconf_factory(device_id, events,
details=details, clock=clock)}; the service binds the settings with
C{functools.partial(restconf_protocol, settings=...)}.

C{device_id} is the identity the TLS layer proved; C{events} the shared
L{EventBus}; C{settings} a L{RestconfSettings} (C{None}: defaults);
C{details} what the TLS layer knows (C{peer}, C{connection_id}, TLS
version, certificate fingerprint ...), copied into the session's
C{details} with C{transport="restconf"} added; C{clock} an C{IReactorTime}
for timeouts (default: the reactor).

On C{connectionMade} the protocol discovers the RESTCONF root
(C{GET /.well-known/host-meta}) and reads the YANG library, then
C{whenReady()} fires with the L{RestconfSession}.  Discovery failing (or
taking longer than C{discovery_timeout}) closes the connection and fails
C{whenReady()} with L{DiscoveryFailed}.

Events (fields C{device_id}, C{connection_id}, C{peer} plus the listed):
  - C{restconf.session.ready}: C{root}, C{yang_library}, C{module_count}, C{content_id}
  - C{restconf.discovery.failed}: C{reason}
  - C{restconf.request.timeout}: C{reason} (a request, or the draining of an
    oversized reply, outlived the request timeout on the wire: the
    connection is closed, since HTTP/1.1 cannot skip a reply)
  - C{restconf.request.abandoned}: C{reason} (a caller cancelled a request
    on the wire: the connection is closed for the same reason)
  - C{restconf.protocol.error}: C{reason} (a reply HTTP cannot parse, or
    bytes with no request outstanding: the connection is closed)
  - C{restconf.session.lost}: C{reason}, C{outstanding} (requests failed by
    the loss), C{was_ready} (discovery had finished)

Every request shares the one connection: HTTP/1.1, persistent, one at a
time, in the order they were made (see L{callhome_mux.restconf.http}).
When the connection goes, the session is lost and every outstanding or
queued request fails at once with L{SessionLost}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from callhome_mux.events import EventBus
from callhome_mux.restconf import encoding as enc
from callhome_mux.restconf.discovery import (
    HOST_META_PATH,
    YANG_LIBRARY_RESOURCES,
    YangLibrary,
    parse_yang_library,
    root_from_host_meta,
)
from callhome_mux.restconf.error_reply import error_from_reply
from callhome_mux.restconf.errors import DiscoveryFailed, UnsafeContent
from callhome_mux.restconf.http import ABANDONED, TIMEOUT, HTTPReply, SerialHTTPClient
from callhome_mux.restconf.query import build_query, join_path
from callhome_mux.restconf.settings import RestconfSettings


@dataclass
class RestconfReply:
    """A successful RESTCONF reply; C{data} is a JSON value, an lxml element, or C{None}."""

    status: int
    headers: Dict[str, List[str]]
    data: Any
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def content_type(self) -> Optional[str]:
        return self.header("content-type")

    @property
    def etag(self) -> Optional[str]:
        return self.header("etag")

    @property
    def last_modified(self) -> Optional[str]:
        return self.header("last-modified")

    @property
    def location(self) -> Optional[str]:
        return self.header("location")


def restconf_protocol(
    device_id: str,
    events: EventBus,
    settings: Optional[RestconfSettings] = None,
    details: Optional[Mapping[str, Any]] = None,
    clock: Optional[IReactorTime] = None,
) -> "RestconfClientProtocol":
    """The protocol the TLS handler installs on a RESTCONF device's connection."""
    return RestconfClientProtocol(device_id, events, settings or RestconfSettings(), details or {}, clock)


class _Waiters:
    """Deferreds for one outcome: each caller gets its own, fired once with the result."""

    def __init__(self):
        self._waiting: List[defer.Deferred] = []
        self._result: Optional[Tuple[bool, Any]] = None

    def wait(self) -> defer.Deferred:
        if self._result is not None:
            ok, value = self._result
            return defer.succeed(value) if ok else defer.fail(value)
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    @property
    def fired(self) -> bool:
        return self._result is not None

    def fire(self, ok: bool, value: Any) -> None:
        if self._result is not None:
            return
        self._result = (ok, value)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(value) if ok else waiter.errback(value)


class RestconfClientProtocol(Protocol):
    """Holds the device's connection: feeds the HTTP client, runs discovery, reports loss."""

    def __init__(self, device_id: str, events: EventBus, settings: RestconfSettings, details: Mapping[str, Any], clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.device_id = device_id
        self.events = events
        self.settings = settings
        self.clock = clock
        self.details: Dict[str, Any] = {**dict(details), "transport": "restconf"}
        self.session: Optional[RestconfSession] = None
        self.http: Optional[SerialHTTPClient] = None
        self._ready = _Waiters()
        self._lost = _Waiters()
        self._close_reason: Optional[str] = None
        self._discovery_timer = None

    # -- IProtocol ---------------------------------------------------------

    def connectionMade(self) -> None:
        host = str(self.details.get("host_header") or self.details.get("peer") or "callhome-device")
        self.http = SerialHTTPClient(
            host=host,
            clock=self.clock,
            max_body=self.settings.max_response_body,
            timeout=self.settings.request_timeout,
            max_queued=self.settings.max_queued_requests,
            on_broken=self._broken,
        )
        self.http.makeConnection(self.transport)
        self._discovery_timer = self.clock.callLater(self.settings.discovery_timeout, self._discovery_timed_out)
        self._discover().addErrback(self._discovery_failed)

    def dataReceived(self, data: bytes) -> None:
        self.http.dataReceived(data)

    def connectionLost(self, reason: Failure = None) -> None:
        if self._close_reason is not None:
            why = self._close_reason
        elif reason is None or reason.check(ConnectionDone):
            why = "the device closed the connection"
        else:
            why = f"connection lost: {reason.getErrorMessage()}"
        outstanding = self.http.pending if self.http is not None else 0
        # whenReady first, so a discovery request failing below is seen as
        # part of this loss and not reported as a discovery failure too.
        self._cancel_discovery_timer()
        self._ready.fire(False, Failure(DiscoveryFailed(why)))
        if self.http is not None:
            self.http.connectionLost(why)
        self._emit("restconf.session.lost", reason=why, outstanding=outstanding, was_ready=self.session is not None)
        self._lost.fire(True, why)

    # -- for the TLS handler and the session ---------------------------------

    def whenReady(self) -> defer.Deferred:
        """Fires with the L{RestconfSession} after discovery; fails with L{DiscoveryFailed}."""
        return self._ready.wait()

    def whenLost(self) -> defer.Deferred:
        """Fires with the text reason when the connection has ended (as NETCONF sessions do)."""
        return self._lost.wait()

    def close(self, reason: str = "closed") -> None:
        if self._close_reason is None:
            self._close_reason = reason
        if self.transport is not None:
            self.transport.loseConnection()

    # -- internals -----------------------------------------------------------

    def _broken(self, why: str, kind: str) -> None:
        event = {TIMEOUT: "restconf.request.timeout", ABANDONED: "restconf.request.abandoned"}.get(kind, "restconf.protocol.error")
        self._emit(event, reason=why)
        if self._close_reason is None:
            self._close_reason = why
        # A hung peer would never let loseConnection finish flushing.
        abort = getattr(self.transport, "abortConnection", None) or self.transport.loseConnection
        abort()

    @defer.inlineCallbacks
    def _discover(self):
        root = yield self._discover_root()
        library = yield self._discover_library(root)
        if self._ready.fired:  # lost or timed out meanwhile
            return
        self._cancel_discovery_timer()
        self.session = RestconfSession(self, root, library)
        summary = library.summary() if library else {"yang_library": None, "module_count": 0, "content_id": None}
        self.details.update(root=root, encoding=self.settings.default_encoding, **summary)
        self._emit("restconf.session.ready", root=root, **summary)
        self._ready.fire(True, self.session)

    @defer.inlineCallbacks
    def _discover_root(self):
        reply = yield self.http.request(
            "GET", HOST_META_PATH, {"Accept": enc.XRD_MEDIA_TYPE}, timeout=self.settings.discovery_timeout
        )
        root = None
        if reply.status == 200:
            root = root_from_host_meta(reply.header("content-type"), reply.body)
        if root is None:
            if not self.settings.fallback_root:
                raise DiscoveryFailed(f"host-meta gave no restconf link (HTTP {reply.status})")
            root = self.settings.fallback_root
        return root

    @defer.inlineCallbacks
    def _discover_library(self, root: str):
        for resource in YANG_LIBRARY_RESOURCES:
            reply = yield self.http.request(
                "GET",
                join_path(root + "/data", resource),
                {"Accept": enc.accept_header(self.settings.default_encoding)},
                timeout=self.settings.discovery_timeout,
            )
            if reply.status == 200:
                return parse_yang_library(reply.header("content-type"), reply.body)
        return None

    def _discovery_failed(self, failure: Failure) -> None:
        if self._ready.fired:
            return  # the connection was lost first; that is the story
        why = f"discovery failed: {failure.getErrorMessage()}"
        if failure.check(UnsafeContent, DiscoveryFailed):
            why = f"discovery failed: {failure.value}"
        self._emit("restconf.discovery.failed", reason=why)
        self._cancel_discovery_timer()
        self._ready.fire(False, Failure(DiscoveryFailed(why)))
        self.close(why)

    def _discovery_timed_out(self) -> None:
        self._discovery_timer = None
        if self._ready.fired:
            return
        why = f"discovery did not finish within {self.settings.discovery_timeout}s"
        self._emit("restconf.discovery.failed", reason=why)
        self._ready.fire(False, Failure(DiscoveryFailed(why)))
        self._close_reason = why
        abort = getattr(self.transport, "abortConnection", None) or self.transport.loseConnection
        abort()

    def _cancel_discovery_timer(self) -> None:
        if self._discovery_timer is not None and self._discovery_timer.active():
            self._discovery_timer.cancel()
        self._discovery_timer = None

    def _emit(self, event: str, **fields: Any) -> None:
        self.events.emit(
            event,
            device_id=self.device_id,
            connection_id=self.details.get("connection_id"),
            peer=self.details.get("peer"),
            **fields,
        )


Body = Union[None, bytes, str, Mapping[str, Any], Any]


class RestconfSession:
    """
    A usable RESTCONF session: the C{ManagedSession} shape plus request helpers.

    Paths are api-paths relative to the datastore resource
    (C{ietf-interfaces:interfaces/interface=eth0}).  Helpers return
    Deferreds firing with a L{RestconfReply}, or failing with
    L{RestconfError} (the device said no), L{SessionLost},
    L{RequestTimeout}, L{ResponseTooLarge} or L{UnsafeContent}.
    C{encoding} is C{"json"} or C{"xml"}; C{None} means the setting.
    """

    def __init__(self, protocol: RestconfClientProtocol, root: str, yang_library: Optional[YangLibrary]):
        self._protocol = protocol
        self.device_id = protocol.device_id
        self.details = protocol.details
        self.root = root
        self.yang_library = yang_library

    # -- ManagedSession --------------------------------------------------

    def close(self, reason: str = "closed") -> None:
        self._protocol.close(reason)

    def whenLost(self) -> defer.Deferred:
        return self._protocol.whenLost()

    # -- raw HTTP ----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: Union[str, Mapping[str, str], None] = None,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> defer.Deferred:
        """
        Any HTTP request on the session's connection; fires with C{(status, headers, body)}.

        C{path} is the absolute request path (C{/restconf/data/...}); error
        statuses are returned, not raised.  For the HTTP API in front of us.
        """
        target = join_path("", path) or "/"
        if query:
            target += "?" + (query if isinstance(query, str) else build_query(**dict(query)))
        d = self._protocol.http.request(method.upper(), target, dict(headers or {}), body)
        return d.addCallback(lambda reply: (reply.status, reply.headers, reply.body))

    # -- RESTCONF helpers ------------------------------------------------

    def get(self, path: str = "", depth=None, fields=None, content=None, with_defaults=None, encoding=None) -> defer.Deferred:
        query = build_query(depth=depth, fields=fields, content=content, with_defaults=with_defaults)
        return self._call("GET", self.data_target(path), query, None, encoding)

    def put(self, path: str, data: Body, encoding=None) -> defer.Deferred:
        """Create or replace the target (201 or 204)."""
        return self._call("PUT", self.data_target(path), "", data, encoding)

    def post(self, path: str, data: Body, encoding=None) -> defer.Deferred:
        """Create a child of the target (201, C{location} header); 409 if it exists."""
        return self._call("POST", self.data_target(path), "", data, encoding)

    def patch(self, path: str, data: Body, encoding=None) -> defer.Deferred:
        """Plain merge into an existing target (RFC 8040 §4.6.1)."""
        return self._call("PATCH", self.data_target(path), "", data, encoding)

    def delete(self, path: str, encoding=None) -> defer.Deferred:
        """Delete the target (204); C{encoding} is the one asked for an error reply."""
        return self._call("DELETE", self.data_target(path), "", None, encoding)

    def invoke(self, operation_path: str, input: Body = None, encoding=None) -> defer.Deferred:
        """
        Invoke an operation (C{module:name}, under C{{root}/operations}) or an
        action (a data path ending in the action, under C{{root}/data}).

        A JSON C{input} not already wrapped is wrapped as
        C{{"module:input": input}} (the module of the operation's last
        prefixed segment).  In XML, C{input} is the C{<input>} element, or a
        dict of parameters made into one in the module's namespace (from the
        YANG library; nested dicts become containers, lists repeat).
        The reply's C{data} is the output, or C{None} (204).
        """
        encoding = encoding or self._protocol.settings.default_encoding
        path = operation_path.strip("/")
        if "/" in path:
            target = self.data_target(path)
        else:
            target = join_path(self.root + "/operations", path)
        module = _module_of(path)
        if isinstance(input, Mapping):
            wrapped = len(input) == 1 and next(iter(input)).endswith(":input")
            if encoding == enc.JSON and not wrapped:
                input = {f"{module}:input": dict(input)}
            elif encoding == enc.XML:
                namespace = self.yang_library.namespace(module) if self.yang_library else None
                if namespace is None:
                    raise ValueError(f"no namespace known for module {module!r}; pass the <input> element")
                input = enc.element_from_dict("input", namespace, next(iter(input.values())) if wrapped else input)
        return self._call("POST", target, "", input, encoding)

    def data_target(self, path: str) -> str:
        """The request path for an api-path relative to the datastore."""
        return join_path(self.root + "/data", path)

    # -- internals ---------------------------------------------------------

    def _call(self, method: str, target: str, query: str, data: Body, encoding: Optional[str]) -> defer.Deferred:
        encoding = encoding or self._protocol.settings.default_encoding
        headers = {"Accept": enc.accept_header(encoding)}
        body = None
        if data is not None:
            body = enc.encode(data, encoding)
            headers["Content-Type"] = enc.MEDIA_TYPES[encoding]
        full = f"{target}?{query}" if query else target
        d = self._protocol.http.request(method, full, headers, body)
        return d.addCallback(self._reply, method, target)

    @staticmethod
    def _reply(reply: HTTPReply, method: str, target: str) -> RestconfReply:
        content_type = reply.header("content-type")
        if reply.status >= 400:
            raise error_from_reply(reply.status, content_type, reply.body, method, target)
        return RestconfReply(reply.status, reply.headers, enc.decode(reply.body, content_type), reply.body)


def _module_of(path: str) -> str:
    """The module of the last prefixed segment of an api-path (where the operation lives)."""
    module = ""
    for segment in path.split("/"):
        name = segment.split("=", 1)[0]
        if ":" in name:
            module = name.split(":", 1)[0]
    return module
