"""
The API as a Twisted service: routes, tokens, event hub, metrics, listener.

    api = make_api_service(callhome_service, callhome_service.config.api)
    api.setServiceParent(callhome_service)
    port = await api.whenListening()

Once listening it writes its URL to C{api-address} in the state directory
(the CLI reads it); on first start it writes a local admin token to
C{api-token} (mode 0600) and reports where, never what.
"""

from __future__ import annotations

import os
from typing import Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.web import server

from callhome_mux.listening import PortWaiter
from callhome_mux.api.admin import AdminHandlers
from callhome_mux.api.context import APIContext
from callhome_mux.api.device_io import DeviceIOHandlers
from callhome_mux.api.devices import DeviceHandlers
from callhome_mux.api.errors import APIError, bad_request, not_found
from callhome_mux.api.events import EventClient, EventHub
from callhome_mux.api.metrics import Metrics
from callhome_mux.api.routing import STREAMING, Call, LimitedRequest, Router
from callhome_mux.api.settings import APISettings
from callhome_mux.api.tokens import ADMIN, OPERATE, READ, TokenStore, write_private_file

V1 = "/api/v1"


def build_router(ctx: APIContext) -> Router:
    devices = DeviceHandlers(ctx)
    io = DeviceIOHandlers(ctx)
    admin = AdminHandlers(ctx)

    def authenticate(token: Optional[str]):
        return ctx.tokens.authenticate(token) if ctx.tokens is not None else None

    def finished(request) -> None:
        ctx.metrics.api_requests.labels(request.method.decode("ascii", "replace"), f"{request.code // 100}xx").inc()

    router = Router(authenticate, finished)
    add = router.add
    add("GET", "/healthz", admin.healthz, None)
    add("GET", "/metrics", admin.metrics, READ if ctx.settings.metrics_auth else None)
    add("GET", V1 + "/openapi.json", admin.openapi, None)
    add("GET", V1 + "/whoami", admin.whoami, READ)
    add("GET", V1 + "/devices", devices.list_devices, READ)
    add("POST", V1 + "/devices", devices.add_device, ADMIN)
    add("GET", V1 + "/devices/{id}", devices.show_device, READ)
    add("PATCH PUT", V1 + "/devices/{id}", devices.change_device, ADMIN)
    add("DELETE", V1 + "/devices/{id}", devices.remove_device, ADMIN)
    add("POST", V1 + "/devices/{id}/netconf/rpc", io.rpc, OPERATE)
    add("GET", V1 + "/devices/{id}/netconf/get-config", io.get_config, READ)
    add("GET", V1 + "/devices/{id}/netconf/get", io.get, READ)
    add("POST", V1 + "/devices/{id}/netconf/subscription", io.subscribe, OPERATE)
    add("GET HEAD POST PUT PATCH DELETE OPTIONS", V1 + "/devices/{id}/restconf/{path*}", io.restconf, OPERATE)
    add("GET", V1 + "/pending", devices.list_pending, READ)
    add("POST", V1 + "/pending/{pid}/approve", devices.approve, OPERATE)
    add("POST", V1 + "/pending/{pid}/deny", devices.deny, OPERATE)
    add("GET", V1 + "/sessions", devices.list_sessions, READ)
    add("GET", V1 + "/sessions/{device_id}", devices.show_session, READ)
    add("DELETE", V1 + "/sessions/{device_id}", devices.close_session, OPERATE)
    add("GET", V1 + "/events", lambda call: stream_events(ctx, call), READ)
    add("GET", V1 + "/tokens", admin.list_tokens, ADMIN)
    add("POST", V1 + "/tokens", admin.add_token, ADMIN)
    add("DELETE", V1 + "/tokens/{token_id}", admin.remove_token, ADMIN)
    return router


def stream_events(ctx: APIContext, call: Call):
    devices = [d for text in call.query_all("device") for d in text.split(",") if d]
    kinds = [k for text in call.query_all("kind") for k in text.split(",") if k]
    for device_id in devices:
        # For a label-limited token, a device it cannot see does not exist.
        if call.principal.limited and not ctx.visible(call.principal, device_id):
            raise not_found(f"device {device_id!r}")
    if call.request.method == b"HEAD":
        raise bad_request("the event stream is GET only")
    if len(ctx.hub.clients) >= ctx.settings.sse_max_clients:
        raise APIError(503, f"too many event-stream clients ({ctx.settings.sse_max_clients}); try again later")
    ctx.hub.add(EventClient(ctx.hub, call.request, call.principal, devices, kinds))
    return STREAMING


class APIService(service.Service):
    name = "api"

    def __init__(self, callhome_service, settings: Optional[APISettings] = None, reactor=None):
        if reactor is None:
            reactor = getattr(callhome_service, "reactor", None)
        if reactor is None:
            from twisted.internet import reactor
        self.callhome = callhome_service
        self.settings = settings or APISettings()
        self.reactor = reactor
        self.metrics = Metrics(callhome_service)
        self.ctx = APIContext(callhome_service, self.settings, self.metrics, reactor)
        self.ctx.hub = EventHub(
            callhome_service.events, self.ctx.visible, reactor,
            self.settings.sse_keepalive, self.settings.sse_max_queued, self.metrics,
        )
        self.router = build_router(self.ctx)
        self.site = server.Site(self.router)
        self.site.requestFactory = LimitedRequest
        self.site.max_body = self.settings.max_body
        self.site.noisy = False
        self._port = PortWaiter()
        self.url: Optional[str] = None

    # -- paths -------------------------------------------------------------------

    def _state_path(self, name: str) -> str:
        if os.path.isabs(name):
            return name
        return os.path.join(os.path.abspath(self.callhome.config.state_dir), name)

    # -- life cycle ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        os.makedirs(self._state_path(""), mode=0o700, exist_ok=True)
        self._open_tokens()
        events = self.callhome.events
        events.addObserver(self.metrics.observe)
        self.ctx.hub.start()
        registry = self.callhome.registry
        registry.addConnectedObserver(self.ctx.session_up)
        registry.addLostObserver(self.ctx.session_lost)
        endpoint = serverFromString(self.reactor, self.settings.listen)
        endpoint.listen(self.site).addCallbacks(self._listening, self._failed)

    def _open_tokens(self) -> None:
        tokens = TokenStore(self._state_path(self.settings.tokens_file), self.reactor).load()
        self.ctx.tokens = tokens
        if len(tokens) == 0 and self.settings.admin_token_file:
            token, stored = tokens.add(ADMIN, name="local admin (generated on first start)")
            path = self._state_path(self.settings.admin_token_file)
            write_private_file(path, token + "\n")
            self.callhome.events.emit("api.token.generated", path=path, token_id=stored.id, role=ADMIN)

    def _listening(self, port) -> None:
        self.url = api_url(self.settings.listen, port.getHost())
        write_private_file(self._state_path(self.settings.address_file), self.url + "\n")
        self.callhome.events.emit("api.started", url=self.url, listen=self.settings.listen)
        self._port.listening(port)

    def _failed(self, failure) -> None:
        self.callhome.events.emit("api.failed", listen=self.settings.listen, reason=failure.getErrorMessage())
        self._port.failed(failure)

    @property
    def port(self):
        return self._port.port

    def whenListening(self) -> defer.Deferred:
        return self._port.whenListening()

    def stopService(self):
        super().stopService()
        events = self.callhome.events
        events.removeObserver(self.metrics.observe)
        self.ctx.hub.stop()
        registry = self.callhome.registry
        for remove, observer in ((registry.removeConnectedObserver, self.ctx.session_up),
                                 (registry.removeLostObserver, self.ctx.session_lost)):
            try:
                remove(observer)
            except ValueError:
                pass
        address_file = self._state_path(self.settings.address_file)
        if os.path.exists(address_file):
            os.unlink(address_file)
        return self._port.stop()


def api_url(listen: str, address) -> str:
    """The URL a local client uses to reach the listener at C{address}."""
    scheme = "https" if listen.split(":", 1)[0] in ("ssl", "tls") else "http"
    host = getattr(address, "host", "127.0.0.1")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("::", "::0"):
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{address.port}"


def make_api_service(callhome_service, settings: Optional[APISettings] = None, reactor=None) -> APIService:
    """The API service for C{callhome_service}; add it as a child of that service."""
    return APIService(callhome_service, settings, reactor)
