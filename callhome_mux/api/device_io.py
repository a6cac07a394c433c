"""
Handlers that talk to devices: NETCONF RPCs, RESTCONF passthrough,
NETCONF notification subscriptions.

Status codes: the device is unknown (or unseen) 404; not connected 503;
its session is the other protocol 409; the device said no 502 (409 for
the rpc-error tags that mean a conflict: in-use, lock-denied,
resource-denied, data-exists, data-missing); no reply in time 504; the
session dropped mid-request 502.  The client going away cancels the RPC.
"""

from __future__ import annotations

import time
from urllib.parse import unquote
from typing import Any, Dict

from lxml import etree
from twisted.internet import defer
from twisted.python.failure import Failure

from callhome_mux.api.context import APIContext
from callhome_mux.api.errors import APIError, bad_request
from callhome_mux.api.routing import Call, Raw
from callhome_mux.netconf import xmlsafe
from callhome_mux.netconf.errors import (
    CapabilityError,
    NetconfError,
    NetconfProtocolError,
    RPCError,
    RPCTimeoutError,
    SessionLostError,
    UnsafeXMLError,
)
from callhome_mux.netconf.namespaces import BASE_NS, NOTIFICATION_NS, qn
from callhome_mux.netconf.operations import build_filter, datastore
from callhome_mux.restconf.errors import RequestTimeout, ResponseTooLarge, SessionLost, TooManyRequests

XML_TYPE = "application/xml; charset=utf-8"
CONFLICT_TAGS = frozenset({"in-use", "lock-denied", "resource-denied", "data-exists", "data-missing"})
#: Request headers passed on to a RESTCONF device (never Authorization: that is our token).
FORWARDED_REQUEST_HEADERS = (
    "accept", "content-type", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
)
#: Reply headers not passed back: they describe the device's connection, not the resource.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
    "proxy-authenticate", "proxy-connection", "set-cookie", "www-authenticate",
})


def rpc_error_fields(item) -> Dict[str, Any]:
    info = None
    if item.info is not None:
        info = etree.tostring(item.info, encoding="unicode")
    return {
        "error-type": item.type, "error-tag": item.tag, "error-severity": item.severity,
        "error-app-tag": item.app_tag, "error-path": item.path, "error-message": item.message,
        "error-message-lang": item.message_lang, "error-info": info,
    }


def _cancel_when_gone(call: Call, d: defer.Deferred) -> None:
    # The client hung up: forget the RPC (a late reply is then ignored).
    call.request.notifyFinish().addErrback(lambda _: d.cancel() if not d.called else None)


class DeviceIOHandlers:
    def __init__(self, ctx: APIContext):
        self.ctx = ctx

    # -- NETCONF ---------------------------------------------------------------

    def _netconf_session(self, call: Call):
        session = self.ctx.session(call.principal, call.params["id"])
        if not hasattr(session, "get_config"):
            raise APIError(409, f"device {session.device_id!r} has a {session.details.get('transport')} session, not NETCONF")
        return session

    def rpc(self, call: Call):
        session = self._netconf_session(call)
        body = call.body()
        if not body.strip():
            raise bad_request("the request body must be the RPC's XML (the operation, or a whole <rpc>)")
        try:
            root = xmlsafe.parse(body)
        except UnsafeXMLError as error:
            raise bad_request(f"the request body is not acceptable XML: {error}") from None
        if etree.QName(root).localname == "rpc" and etree.QName(root).namespace in (None, BASE_NS):
            children = [child for child in root if isinstance(child.tag, str)]
            if len(children) != 1:
                raise bad_request("an <rpc> must contain exactly one operation element")
            root = children[0]
        return self._send(call, session, root)

    def get_config(self, call: Call):
        session = self._netconf_session(call)
        source = call.query("source", "running")
        if not source or "<" in source:
            raise bad_request("source must be a datastore name (running, candidate, startup) or a URL")
        request = etree.Element(qn("get-config"), nsmap={None: BASE_NS})
        request.append(datastore(source, "source"))
        self._add_filter(call, request)
        return self._send(call, session, request)

    def get(self, call: Call):
        session = self._netconf_session(call)
        request = etree.Element(qn("get"), nsmap={None: BASE_NS})
        self._add_filter(call, request)
        return self._send(call, session, request)

    @staticmethod
    def _add_filter(call: Call, request) -> None:
        text = call.query("filter")
        if not text:
            return
        try:
            spec = ("subtree", text) if text.lstrip().startswith("<") else ("xpath", text)
            request.append(build_filter(spec))
        except UnsafeXMLError as error:
            raise bad_request(f"the subtree filter is not acceptable XML: {error}") from None

    def _send(self, call: Call, session, request) -> defer.Deferred:
        timeout = call.query_float("timeout") or self.ctx.settings.rpc_timeout
        started = time.monotonic()
        self.ctx.count(session, "rpcs")
        try:
            d = session.rpc(request, timeout)
        except ValueError as error:
            raise bad_request(str(error)) from None
        _cancel_when_gone(call, d)

        def done(reply):
            self.ctx.metrics.rpc_done("netconf", "ok", time.monotonic() - started)
            return Raw(200, etree.tostring(reply, xml_declaration=True, encoding="UTF-8"), XML_TYPE)

        def failed(failure: Failure):
            outcome, error = netconf_failure(failure, session.device_id)
            self.ctx.metrics.rpc_done("netconf", outcome, time.monotonic() - started)
            if outcome != "cancelled":
                self.ctx.count(session, "rpc_errors")
            raise error

        return d.addCallbacks(done, failed)

    # -- notifications -----------------------------------------------------------

    @defer.inlineCallbacks
    def subscribe(self, call: Call):
        """
        RFC 5277 <create-subscription> on the device; its notifications then
        arrive on the event stream as C{netconf.notification} events.
        """
        session = self._netconf_session(call)
        body = call.json_object(required=False)
        stream = body.get("stream")
        device_id = session.device_id
        events = self.ctx.service.events

        def publish(notification) -> None:
            event_time = notification.findtext(qn("eventTime", NOTIFICATION_NS))
            content = [etree.tostring(child, encoding="unicode") for child in notification
                       if isinstance(child.tag, str) and child.tag != qn("eventTime", NOTIFICATION_NS)]
            events.emit("netconf.notification", device_id=device_id, event_time=event_time, xml="".join(content))

        try:
            yield session.create_subscription(publish, stream=stream, timeout=call.query_float("timeout") or self.ctx.settings.rpc_timeout)
        except Exception:
            outcome, error = netconf_failure(Failure(), device_id)
            raise error from None
        events.emit("api.netconf.subscribed", device_id=device_id, stream=stream, token_id=call.principal.token_id)
        return 201, {"device_id": device_id, "stream": stream, "events": "netconf.notification"}

    # -- RESTCONF ----------------------------------------------------------------

    def restconf(self, call: Call):
        session = self.ctx.session(call.principal, call.params["id"])
        if not hasattr(session, "request") or not hasattr(session, "root"):
            raise APIError(409, f"device {session.device_id!r} has a {session.details.get('transport')} session, not RESTCONF")
        path = call.params.get("path", "")
        segments = [unquote(segment).strip() for segment in path.split("/")]
        if any(segment in (".", "..") for segment in segments):
            # Passthrough is to the RESTCONF root only, not the device's whole web server.
            raise bad_request("'.' and '..' path segments are not allowed")
        target = session.root.rstrip("/") + "/" + path.lstrip("/")
        query = call.request.uri.partition(b"?")[2].decode("latin-1") or None
        headers = {}
        for name in FORWARDED_REQUEST_HEADERS:
            value = call.header(name)
            if value is not None:
                headers[name] = value
        body = call.body() or None
        method = call.method
        started = time.monotonic()
        self.ctx.count(session, "restconf_requests")
        d = session.request(method, target, query, body, headers)
        _cancel_when_gone(call, d)

        def done(reply):
            status, reply_headers, reply_body = reply
            self.ctx.metrics.rpc_done("restconf", "ok" if status < 400 else f"http-{status // 100}xx", time.monotonic() - started)
            passed = [(name, value) for name, values in reply_headers.items() if name.lower() not in HOP_BY_HOP for value in values]
            return Raw(status, reply_body, None, passed)

        def failed(failure: Failure):
            outcome, error = restconf_failure(failure, session.device_id)
            self.ctx.metrics.rpc_done("restconf", outcome, time.monotonic() - started)
            raise error

        return d.addCallbacks(done, failed)


def netconf_failure(failure: Failure, device_id: str):
    """(metrics outcome, APIError) for a failed RPC."""
    error = failure.value
    if isinstance(error, RPCError):
        items = [rpc_error_fields(item) for item in error.errors]
        status = 409 if error.tag in CONFLICT_TAGS else 502
        reply = etree.tostring(error.reply, encoding="unicode") if error.reply is not None else None
        return "rpc-error", APIError(status, str(error), device_id=device_id, rpc_errors=items, reply=reply)
    if isinstance(error, RPCTimeoutError):
        return "timeout", APIError(504, str(error), device_id=device_id)
    if isinstance(error, SessionLostError):
        return "session-lost", APIError(502, f"the session was lost before the reply: {error}", device_id=device_id)
    if isinstance(error, CapabilityError):
        return "capability", APIError(409, str(error), device_id=device_id)
    if isinstance(error, NetconfProtocolError):
        return "not-ready", APIError(503, str(error), device_id=device_id)
    if isinstance(error, defer.CancelledError):
        return "cancelled", APIError(499, "cancelled: the client went away", device_id=device_id)
    if isinstance(error, (ValueError, NetconfError)):
        return "refused", APIError(400, str(error), device_id=device_id)
    failure.raiseException()


def restconf_failure(failure: Failure, device_id: str):
    error = failure.value
    if isinstance(error, RequestTimeout):
        return "timeout", APIError(504, f"the device did not answer in time: {error}", device_id=device_id)
    if isinstance(error, SessionLost):
        return "session-lost", APIError(502, f"the session was lost before the reply: {error}", device_id=device_id)
    if isinstance(error, ResponseTooLarge):
        return "too-large", APIError(502, f"the device's reply was too large: {error}", device_id=device_id)
    if isinstance(error, TooManyRequests):
        return "busy", APIError(503, f"too many requests queued for this device: {error}", device_id=device_id)
    if isinstance(error, defer.CancelledError):
        return "cancelled", APIError(499, "cancelled: the client went away", device_id=device_id)
    if isinstance(error, (ValueError, TypeError)):
        return "refused", APIError(400, str(error), device_id=device_id)
    failure.raiseException()
