"""
L{Device} <-> JSON text for the database.

The database must keep a runtime device's credentials (there is nowhere
else they could survive a restart), so this encoding includes secrets.  It
is used only for the store; events and reprs use L{Credentials.describe}.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from callhome_mux.inventory.model import Credentials, Device


def device_to_json(device: Device) -> str:
    credentials = device.credentials
    data: Dict[str, Any] = {
        "id": device.id,
        "ssh_host_keys": list(device.ssh_host_keys),
        "tls_fingerprints": list(device.tls_fingerprints),
        "tls_expected_identity": device.tls_expected_identity,
        "protocol": device.protocol,
        "labels": dict(device.labels),
        "enabled": device.enabled,
        "outbound_ssh_secret": device.outbound_ssh_secret,
        "credentials": {
            "username": credentials.username,
            "password": credentials.password,
            "private_key_file": credentials.private_key_file,
            "private_key_passphrase": credentials.private_key_passphrase,
            "password_file": credentials.password_file,
        },
    }
    return json.dumps(data, sort_keys=True)


def device_from_json(text: str) -> Device:
    data = json.loads(text)
    credentials = Credentials(**data.pop("credentials", {}))
    return Device(credentials=credentials, **data)
