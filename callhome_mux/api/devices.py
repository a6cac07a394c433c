"""Handlers: devices, pending callers, sessions."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from twisted.internet import defer

from callhome_mux.api.context import APIContext
from callhome_mux.api.errors import APIError, bad_request, not_found
from callhome_mux.api.routing import Call
from callhome_mux.api.views import device_view, pending_view, session_view
from callhome_mux.inventory.config import device_from_table
from callhome_mux.inventory.inventory import CONFIG
from callhome_mux.inventory.state import STATES
from callhome_mux.settings import ConfigError

_WHERE = "device[0]"
# Keys a device table may have (besides id), as written in the configuration.
_DEVICE_KEYS = {f.name for f in dataclasses.fields(__import__("callhome_mux.inventory.model", fromlist=["Device"]).Device)}
_DEVICE_KEYS |= {"outbound_ssh_secret_file"}


_SECRET_WORDS = ("password", "passphrase", "secret")


def _secret_values(value, key: str = ""):
    """Every value under a key that names a secret, as text (to scrub from messages)."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _secret_values(item, str(name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _secret_values(item, key)
    elif value is not None and any(word in key.lower() for word in _SECRET_WORDS) and not key.endswith("_file"):
        text = str(value)
        if len(text) >= 3:
            yield text
            yield repr(value)


def _config_error(error: ConfigError, body=None) -> APIError:
    # device_from_table names keys as devices[0].x; the API's body has no index.
    message = str(error).replace(_WHERE + ".", "").replace(_WHERE + ": ", "")
    # A validation message may quote a value; never one that is a secret.
    for secret in sorted(set(_secret_values(body or {})), key=len, reverse=True):
        message = message.replace(secret, "***")
    return bad_request(message)


def parse_device(device_id: str, body: Dict[str, Any]):
    if "id" in body and body["id"] != device_id:
        raise bad_request("the body's id differs from the device id (renaming is not supported)")
    unknown = sorted(key for key in body if key.replace("-", "_") not in _DEVICE_KEYS)
    if unknown:
        raise bad_request(f"unknown device field(s): {', '.join(unknown)}")
    try:
        return device_from_table({**body, "id": device_id}, 0, "device")
    except ConfigError as error:
        raise _config_error(error, body) from None


def parse_labels(call: Call) -> Dict[str, str]:
    labels = {}
    for text in call.query_all("label"):
        key, equals, value = text.partition("=")
        if not equals or not key:
            raise bad_request(f"label filters are key=value, got {text!r}")
        labels[key] = value
    return labels


class DeviceHandlers:
    def __init__(self, ctx: APIContext):
        self.ctx = ctx

    # -- devices ---------------------------------------------------------------

    def list_devices(self, call: Call):
        ctx = self.ctx
        wanted_states = {s for text in call.query_all("state") for s in text.split(",") if s}
        unknown = wanted_states - set(STATES)
        if unknown:
            raise bad_request(f"unknown state(s) {', '.join(sorted(unknown))}; states are {', '.join(STATES)}")
        labels = parse_labels(call)
        inventory = ctx.inventory
        devices = []
        for device in sorted(ctx.directory.all(), key=lambda d: d.id):
            if not ctx.visible(call.principal, device.id):
                continue
            if any(device.labels.get(k) != v for k, v in labels.items()):
                continue
            view = device_view(device, inventory, ctx.registry.get(device.id))
            if wanted_states and view.get("state", {}).get("state") not in wanted_states:
                continue
            devices.append(view)
        return {"devices": devices}

    @defer.inlineCallbacks
    def show_device(self, call: Call):
        ctx = self.ctx
        device = ctx.device(call.principal, call.params["id"])
        session = ctx.registry.get(device.id)
        view = device_view(device, ctx.inventory, session)
        view["session"] = self._session_view(session) if session is not None else None
        view["history"] = []
        if ctx.inventory is not None and ctx.settings.history_entries:
            view["history"] = yield ctx.inventory.history(device.id, ctx.settings.history_entries)
        return view

    @defer.inlineCallbacks
    def add_device(self, call: Call):
        inventory = self.ctx.need_inventory()
        body = call.json_object()
        device_id = body.get("id")
        if not isinstance(device_id, str) or not device_id:
            raise bad_request("a device needs a non-empty string id")
        device = parse_device(device_id, body)
        if inventory.source(device_id) is not None:
            raise APIError(409, f"device {device_id!r} already exists")
        try:
            device = yield inventory.add_device(device)
        except ConfigError as error:
            raise _conflict(error) from None
        return 201, device_view(device, inventory, None)

    @defer.inlineCallbacks
    def change_device(self, call: Call):
        inventory = self.ctx.need_inventory()
        current = self._runtime_device(call)
        body = call.json_object()
        if call.method == "PUT":
            device = parse_device(current.id, body)
        else:
            parsed = parse_device(current.id, {**_editable(current), **body}) if body else current
            changes = {}
            for key in body:
                name = key.replace("-", "_")
                if name == "outbound_ssh_secret_file":
                    name = "outbound_ssh_secret"
                if name != "id":
                    changes[name] = getattr(parsed, name)
            device = dataclasses.replace(current, **changes)
        try:
            device = yield inventory.update_device(device)
        except ConfigError as error:
            raise _conflict(error) from None
        return device_view(device, inventory, self.ctx.registry.get(device.id))

    @defer.inlineCallbacks
    def remove_device(self, call: Call):
        inventory = self.ctx.need_inventory()
        device = self._runtime_device(call)
        yield inventory.remove_device(device.id)
        session = self.ctx.registry.get(device.id)
        if session is not None:
            # No longer trusted: its session goes too.
            session.close("device removed through the API")
        return 204, None

    def _runtime_device(self, call: Call):
        inventory = self.ctx.need_inventory()
        device = self.ctx.device(call.principal, call.params["id"])
        if inventory.source(device.id) == CONFIG:
            raise APIError(409, f"device {device.id!r} is defined in the configuration file; change it there")
        return device

    # -- pending ---------------------------------------------------------------

    def list_pending(self, call: Call):
        inventory = self.ctx.need_inventory()
        if call.principal.limited:
            return {"pending": []}  # pending callers carry no labels yet
        return {"pending": [pending_view(entry) for entry in inventory.pending()]}

    def _pending_id(self, call: Call) -> int:
        if call.principal.limited:
            raise not_found(f"pending entry {call.params['pid']!r}")
        try:
            return int(call.params["pid"])
        except ValueError:
            raise not_found(f"pending entry {call.params['pid']!r}") from None

    @defer.inlineCallbacks
    def approve(self, call: Call):
        inventory = self.ctx.need_inventory()
        pending_id = self._pending_id(call)
        body = call.json_object(required=False)
        unknown = sorted(set(body) - {"id", "credentials", "labels"})
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(unknown)} (approve takes id, credentials, labels)")
        device_id = body.get("id")
        if device_id is not None and (not isinstance(device_id, str) or not device_id):
            raise bad_request("id must be a non-empty string")
        credentials = labels = None
        if "credentials" in body or "labels" in body:
            table = {"id": device_id or "pending"}
            for key in ("credentials", "labels"):
                if key in body:
                    table[key] = body[key]
            try:
                parsed = device_from_table(table, 0, "device")
            except ConfigError as error:
                raise _config_error(error, body) from None
            credentials = parsed.credentials if "credentials" in body else None
            labels = parsed.labels if "labels" in body else None
        if device_id is not None and inventory.source(device_id) is not None:
            raise APIError(409, f"device {device_id!r} already exists")
        try:
            device = yield inventory.approve(pending_id, device_id, credentials, labels)
        except KeyError:
            raise not_found(f"pending entry {pending_id}") from None
        except ConfigError as error:
            raise _conflict(error) from None
        return 201, device_view(device, inventory, None)

    @defer.inlineCallbacks
    def deny(self, call: Call):
        inventory = self.ctx.need_inventory()
        pending_id = self._pending_id(call)
        try:
            entry = yield inventory.deny(pending_id)
        except KeyError:
            raise not_found(f"pending entry {pending_id}") from None
        return pending_view(entry)

    # -- sessions --------------------------------------------------------------

    def _session_view(self, session) -> Dict[str, Any]:
        ctx = self.ctx
        return session_view(session, ctx.up_since(session), ctx.clock.seconds(), ctx.counters(session))

    def list_sessions(self, call: Call):
        sessions: List[Dict[str, Any]] = [
            self._session_view(session)
            for session in sorted(self.ctx.registry.sessions(), key=lambda s: s.device_id)
            if self.ctx.visible(call.principal, session.device_id)
        ]
        return {"sessions": sessions}

    def show_session(self, call: Call):
        return self._session_view(self.ctx.session(call.principal, call.params["device_id"]))

    def close_session(self, call: Call):
        session = self.ctx.session(call.principal, call.params["device_id"])
        view = self._session_view(session)
        session.close("closed through the API")
        return 202, {"closing": view}


def _editable(device) -> Dict[str, Any]:
    """A device as a table device_from_table accepts (credentials kept apart: they are not re-read)."""
    return {
        "ssh_host_keys": list(device.ssh_host_keys),
        "tls_fingerprints": list(device.tls_fingerprints),
        "labels": dict(device.labels),
        "enabled": device.enabled,
        **({"protocol": device.protocol} if device.protocol else {}),
        **({"tls_expected_identity": device.tls_expected_identity} if device.tls_expected_identity else {}),
    }


def _conflict(error: ConfigError) -> APIError:
    text = str(error)
    if "already exists" in text or "claimed by" in text or "configuration file" in text:
        return APIError(409, text)
    return _config_error(error)
