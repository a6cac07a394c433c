"""
The HTTP plumbing of the API: routes, authentication, JSON in and out.

One leaf resource dispatches on (method, path pattern).  A handler gets a
L{Call} and returns (or fires a Deferred with) a JSON-able value, a
L{Raw} reply, or L{STREAMING} when it writes the response itself (SSE).
Exceptions become JSON errors: L{APIError} with its status, anything else
a 500 whose message does not leak the exception text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from callhome_mux.api.errors import UNAUTHORIZED, APIError, bad_request, forbidden
from callhome_mux.api.tokens import Principal, bearer

_log = Logger(namespace="callhome_mux.api")

#: A handler's result meaning "I write and finish the response myself".
STREAMING = object()

JSON_TYPE = b"application/json"


@dataclass
class Raw:
    """A reply that is not JSON (XML, a RESTCONF passthrough, metrics)."""

    status: int
    body: bytes
    content_type: Optional[str] = None
    headers: List[Tuple[str, str]] = field(default_factory=list)


class LimitedRequest(server.Request):
    """
    A request whose body is refused past the site's C{max_body}: the
    excess is discarded as it arrives (memory stays bounded) and the
    handler is answered 413 instead of run.
    """

    too_large = False

    def _limit(self) -> int:
        return getattr(getattr(self.channel, "site", None), "max_body", 1 << 62)

    def gotLength(self, length):
        if length is not None and length > self._limit():
            self.too_large = True
            length = 0  # keep nothing: the body goes to a small in-memory buffer
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.too_large:
            return
        if self.content.tell() + len(data) > self._limit():
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


class Call:
    """One API request as handlers see it."""

    def __init__(self, request: server.Request, principal: Optional[Principal], params: Dict[str, str]):
        self.request = request
        self.principal = principal
        self.params = params
        self._finished = False
        request.notifyFinish().addBoth(self._mark_finished)

    def _mark_finished(self, _):
        self._finished = True

    @property
    def finished(self) -> bool:
        """The response is done or the client went away."""
        return self._finished

    @property
    def method(self) -> str:
        return self.request.method.decode("ascii", "replace").upper()

    def query(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.request.args.get(name.encode("utf-8"))
        return values[-1].decode("utf-8", "replace") if values else default

    def query_all(self, name: str) -> List[str]:
        return [value.decode("utf-8", "replace") for value in self.request.args.get(name.encode("utf-8"), [])]

    def query_float(self, name: str) -> Optional[float]:
        text = self.query(name)
        if text is None or text == "":
            return None
        try:
            value = float(text)
        except ValueError:
            raise bad_request(f"query parameter {name} must be a number, got {text!r}") from None
        if not value > 0:
            raise bad_request(f"query parameter {name} must be greater than 0")
        return value

    def body(self) -> bytes:
        self.request.content.seek(0)
        return self.request.content.read()

    def json(self, required: bool = True) -> Any:
        data = self.body()
        if not data.strip():
            if required:
                raise bad_request("a JSON request body is required")
            return {}
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise bad_request(f"the request body is not valid JSON: {error}") from None

    def json_object(self, required: bool = True) -> Dict[str, Any]:
        value = self.json(required)
        if not isinstance(value, dict):
            raise bad_request("the request body must be a JSON object")
        return value

    def header(self, name: str) -> Optional[str]:
        value = self.request.getHeader(name)
        return value.decode("latin-1") if isinstance(value, bytes) else value


Handler = Callable[[Call], Any]


@dataclass
class Route:
    methods: Tuple[str, ...]
    pattern: "re.Pattern[str]"
    handler: Handler
    #: Least role needed; C{None}: no token needed.
    role: Optional[str]
    #: Parameters passed on still percent-encoded (a RESTCONF path keeps
    #: its encoded key values: C{interface=eth0%2F1} is one key).
    raw: Tuple[str, ...] = ()


def compile_path(template: str) -> "re.Pattern[str]":
    """C{/api/v1/devices/{id}} -> a regex with named groups; C{{path*}} takes the rest."""
    pattern = ""
    for part in re.split(r"(\{[a-z_]+\*?\})", template):
        if part.startswith("{"):
            name = part[1:-1]
            pattern += f"(?P<{name[:-1]}>.*)" if name.endswith("*") else f"(?P<{name}>[^/]+)"
        else:
            pattern += re.escape(part)
    return re.compile(f"^{pattern}$")


class Router(resource.Resource):
    isLeaf = True

    def __init__(
        self,
        authenticate: Callable[[Optional[str]], Optional[Principal]],
        on_finished: Optional[Callable[[server.Request], None]] = None,
    ):
        super().__init__()
        self._authenticate = authenticate
        self._on_finished = on_finished
        self.routes: List[Route] = []

    def add(self, methods: str, template: str, handler: Handler, role: Optional[str]) -> None:
        raw = tuple(re.findall(r"\{([a-z_]+)\*\}", template))
        self.routes.append(Route(tuple(methods.split()), compile_path(template), handler, role, raw))

    def render(self, request: server.Request):
        if self._on_finished is not None:
            request.notifyFinish().addBoth(lambda _: self._on_finished(request))
        call = None
        try:
            route, params = self._match(request)
            principal = None
            if route.role is not None:
                principal = self._authenticate(bearer(request.getHeader(b"authorization")))
                if principal is None:
                    request.setHeader(b"www-authenticate", b'Bearer realm="callhome-mux"')
                    raise APIError(401, UNAUTHORIZED)
                if not principal.may(route.role):
                    raise forbidden(route.role)
            if getattr(request, "too_large", False):
                limit = getattr(getattr(request.channel, "site", None), "max_body", None)
                raise APIError(413, f"the request body is larger than the limit ({limit} bytes)")
            call = Call(request, principal, params)
            result = defer.maybeDeferred(route.handler, call)
        except APIError as error:
            self._error(request, error)
            return server.NOT_DONE_YET
        result.addCallbacks(self._reply, self._failed, callbackArgs=(call,), errbackArgs=(call,))
        return server.NOT_DONE_YET

    def _match(self, request) -> Tuple[Route, Dict[str, str]]:
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace").upper()
        allowed = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                params = {
                    key: value if key in route.raw else unquote(value) for key, value in match.groupdict().items()
                }
                return route, params
            allowed.extend(route.methods)
        if allowed:
            methods = sorted(set(allowed))
            request.setHeader(b"allow", ", ".join(methods).encode("ascii"))
            raise APIError(405, f"{method} is not allowed here (allowed: {', '.join(methods)})")
        raise APIError(404, f"no such resource: {path}")

    def _reply(self, result: Any, call: Call) -> None:
        if result is STREAMING or call.finished:
            return
        request = call.request
        if isinstance(result, Raw):
            request.setResponseCode(result.status)
            # No text/html default: a passthrough reply keeps exactly the device's headers.
            request.defaultContentType = None
            if result.content_type:
                request.setHeader(b"content-type", result.content_type.encode("latin-1"))
            for name, value in result.headers:
                request.responseHeaders.addRawHeader(name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
            request.write(result.body)
        else:
            status = 200
            if isinstance(result, tuple):
                status, result = result
            request.setResponseCode(status)
            if status == 204:
                request.finish()
                return
            request.setHeader(b"content-type", JSON_TYPE)
            request.write(json.dumps(result, indent=1, sort_keys=True).encode("utf-8") + b"\n")
        request.finish()

    def _failed(self, failure: Failure, call: Call) -> None:
        if call.finished:
            return
        if failure.check(APIError):
            error = failure.value
        else:
            _log.failure("API handler failed on {method} {path}", failure, method=call.method, path=call.request.path)
            error = APIError(500, f"internal error ({failure.type.__name__}); see the server log")
        self._error(call.request, error)

    @staticmethod
    def _error(request, error: APIError):
        request.setResponseCode(error.status)
        request.setHeader(b"content-type", JSON_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps(error.document(), indent=1, sort_keys=True).encode("utf-8") + b"\n")
        request.finish()
