"""
What the API shows of devices, pending callers and sessions: plain JSON.

Credentials appear only as C{Credentials.describe()} (who we log in as,
whether a password is set), secrets never.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from callhome_mux.inventory.model import Device


def plain(value: Any) -> Any:
    """A JSON-able copy: tuples and sets to lists, bytes and objects to text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def device_view(device: Device, inventory=None, session=None) -> Dict[str, Any]:
    view: Dict[str, Any] = {
        "id": device.id,
        "enabled": device.enabled,
        "protocol": device.protocol,
        "labels": dict(device.labels),
        "ssh_host_keys": list(device.ssh_host_keys),
        "tls_fingerprints": list(device.tls_fingerprints),
        "tls_expected_identity": device.tls_expected_identity,
        "credentials": plain(device.credentials.describe()),
        "outbound_ssh_secret": device.outbound_ssh_secret is not None,
        "source": inventory.source(device.id) if inventory is not None else None,
        "connected": session is not None,
    }
    if inventory is not None:
        state = inventory.state(device.id).fields()
        state.pop("device_id", None)
        view["state"] = plain(state)
    return view


def pending_view(entry) -> Dict[str, Any]:
    view = plain(entry.fields())
    view.update(first_seen=entry.first_seen, last_seen=entry.last_seen, verified=entry.verified)
    return view


def session_view(session, up_since: Optional[float], now: float, counters: Dict[str, int]) -> Dict[str, Any]:
    details = plain(dict(getattr(session, "details", {}) or {}))
    return {
        "device_id": session.device_id,
        "transport": details.get("transport"),
        "peer": details.get("peer"),
        "algorithms": details.get("algorithms"),
        "capabilities": details.get("capabilities"),
        "up_since": up_since,
        "uptime": None if up_since is None else round(max(0.0, now - up_since), 3),
        "counters": dict(counters),
        "details": details,
    }
