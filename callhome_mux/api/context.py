"""
What every API handler needs: the call-home service, the rules of who
sees what, and per-session bookkeeping (uptime, counters).

Visibility is one rule, used by every list, lookup, event and session: a
token limited to labels sees a device only if the device carries all of
them; everything else does not exist for it (404, absent from lists).
Things that belong to no device (pending callers, listener events) are
seen only by unlimited tokens.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from callhome_mux.api.errors import APIError, not_found
from callhome_mux.api.settings import APISettings
from callhome_mux.api.tokens import Principal
from callhome_mux.inventory.model import Device


class APIContext:
    def __init__(self, callhome_service, settings: APISettings, metrics, clock):
        self.service = callhome_service
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.tokens = None  # the TokenStore, once started
        self.hub = None  # the EventHub
        #: device id -> (session, when it came up): uptime for sessions we saw start.
        self._up: Dict[str, Tuple[Any, float]] = {}
        #: device id -> counters of the current session.
        self._counters: Dict[str, Dict[str, int]] = {}

    # -- the service's parts -------------------------------------------------

    @property
    def inventory(self):
        return getattr(self.service, "inventory", None)

    @property
    def directory(self):
        inventory = self.inventory
        return inventory.directory if inventory is not None else self.service.directory

    @property
    def registry(self):
        return self.service.registry

    def need_inventory(self):
        inventory = self.inventory
        if inventory is None:
            raise APIError(503, "the device inventory is not open (yet); try again shortly")
        return inventory

    # -- visibility ------------------------------------------------------------

    def visible(self, principal: Principal, device_id: Optional[str]) -> bool:
        if not principal.limited:
            return True
        if not isinstance(device_id, str):
            return False
        device = self.directory.get(device_id)
        return device is not None and principal.sees_labels(device.labels)

    def device(self, principal: Principal, device_id: str) -> Device:
        """The device, or 404 if it does not exist or this token may not see it."""
        device = self.directory.get(device_id)
        if device is None or not self.visible(principal, device_id):
            raise not_found(f"device {device_id!r}")
        return device

    def session(self, principal: Principal, device_id: str):
        """The device's session; 404 if unseen, 503 if it is not connected."""
        known = self.directory.get(device_id) is not None
        session = self.registry.get(device_id)
        if not self.visible(principal, device_id) or (not known and session is None):
            raise not_found(f"device {device_id!r}")
        if session is None:
            raise APIError(503, f"device {device_id!r} is not connected")
        return session

    # -- sessions: uptime and counters ---------------------------------------

    def session_up(self, session) -> None:
        self._up[session.device_id] = (session, self.clock.seconds())
        self._counters[session.device_id] = {"rpcs": 0, "rpc_errors": 0, "restconf_requests": 0}

    def session_lost(self, session) -> None:
        entry = self._up.get(session.device_id)
        if entry is not None and entry[0] is session:
            del self._up[session.device_id]
            self._counters.pop(session.device_id, None)

    def up_since(self, session) -> Optional[float]:
        entry = self._up.get(session.device_id)
        if entry is not None and entry[0] is session:
            return entry[1]
        # Up before the API started: the inventory knows when it connected.
        inventory = self.inventory
        if inventory is not None:
            state = inventory.state(session.device_id)
            if state.state == "connected":
                return state.since
        return None

    def counters(self, session) -> Dict[str, int]:
        if self.up_since(session) is None:
            return {}
        return self._counters.get(session.device_id, {})

    def count(self, session, name: str) -> None:
        if self.up_since(session) is not None:
            counters = self._counters.setdefault(session.device_id, {})
            counters[name] = counters.get(name, 0) + 1
