"""
Devices from the configuration file: C{[[devices]]} tables -> L{Device}.

Errors name the exact key (C{devices[2].credentials.password_file}) and never
quote a secret.  A password may be written inline (C{password}) or, better,
kept in a file of its own (C{password_file}, read here, at every start and
reload); a private key is always a file (C{private_key_file}).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, List, Mapping

from callhome_mux.inventory.model import (
    Credentials,
    Device,
    normalise_tls_fingerprint,
    ssh_key_fingerprint_from_text,
)
from callhome_mux.settings import ConfigError, from_table

# Keys of a credentials table; password_file is resolved here, not by Credentials.
_CREDENTIAL_KEYS = ("username", "password", "password_file", "private_key_file", "private_key_passphrase")
_SECRET_FILE_KEYS = ("password_file", "outbound_ssh_secret_file")


def devices_from_tables(tables: Iterable[Mapping[str, Any]] | None, section: str = "devices") -> List[Device]:
    """All C{[[devices]]} tables; refuses duplicate ids and shared keys."""
    devices = []
    seen = {}
    for index, table in enumerate(tables or ()):
        device = device_from_table(table, index, section)
        if device.id in seen:
            raise ConfigError(f"id {device.id!r} is already used by {section}[{seen[device.id]}]", f"{section}[{index}].id")
        seen[device.id] = index
        devices.append(device)
    # The directory refuses a host key or certificate claimed by two devices.
    from callhome_mux.inventory.model import DeviceDirectory

    DeviceDirectory(devices)
    return devices


def device_from_table(table: Mapping[str, Any], index: int, section: str = "devices") -> Device:
    """One C{[[devices]]} table (number C{index}, from 0) as a L{Device}."""
    where = f"{section}[{index}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table, got {type(table).__name__}", where)
    values = {key.replace("-", "_"): value for key, value in table.items()}

    credentials = _credentials(values.pop("credentials", None), f"{where}.credentials")
    secret_file = values.pop("outbound_ssh_secret_file", None)
    if secret_file is not None:
        if "outbound_ssh_secret" in values:
            raise ConfigError("give outbound_ssh_secret or outbound_ssh_secret_file, not both", f"{where}.outbound_ssh_secret_file")
        values["outbound_ssh_secret"] = _read_secret_file(secret_file, f"{where}.outbound_ssh_secret_file")

    _check_identities(values, where)
    labels = values.get("labels")
    if labels is not None:
        if not isinstance(labels, Mapping):
            raise ConfigError(f"expected a table, got {labels!r}", f"{where}.labels")
        for name, value in labels.items():
            if not isinstance(value, str):
                raise ConfigError(f"label values are strings, got {value!r}", f"{where}.labels.{name}")

    device = from_table(Device, values, where)
    return _with(device, credentials=credentials) if credentials is not None else device


def _credentials(table: Any, where: str) -> Credentials | None:
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError("expected a table (username, password or password_file, private_key_file)", where)
    values = {key.replace("-", "_"): value for key, value in table.items()}
    for key in values:
        if key not in _CREDENTIAL_KEYS:
            raise ConfigError(f"unknown setting (known: {', '.join(_CREDENTIAL_KEYS)})", f"{where}.{key}")
    for key, value in values.items():
        if not isinstance(value, str):
            # Never echo the value: it may be a password of the wrong type.
            raise ConfigError(f"expected a string, got {type(value).__name__}", f"{where}.{key}")
    if "password" in values and "password_file" in values:
        raise ConfigError("give password or password_file, not both", f"{where}.password_file")
    if "password_file" in values:
        values["password"] = _read_secret_file(values["password_file"], f"{where}.password_file")
    key_file = values.get("private_key_file")
    if key_file is not None and not os.path.isfile(os.path.expanduser(key_file)):
        raise ConfigError(f"no such file: {key_file}", f"{where}.private_key_file")
    if not values.get("username", "netconf"):
        raise ConfigError("must not be empty", f"{where}.username")
    return Credentials(**values)


def _read_secret_file(path: Any, key: str) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError("expected a file name", key)
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            secret = handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}", key) from None
    # A trailing newline is how editors save files, not part of the secret.
    secret = secret.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{path} is empty", key)
    return secret


def _check_identities(values: Mapping[str, Any], where: str) -> None:
    """Name the exact list entry that is not a key or fingerprint."""
    for key, check in (("ssh_host_keys", ssh_key_fingerprint_from_text), ("tls_fingerprints", normalise_tls_fingerprint)):
        entries = values.get(key)
        if entries is None or not isinstance(entries, (list, tuple)):
            continue  # from_table reports the wrong type
        for position, entry in enumerate(entries):
            if not isinstance(entry, str):
                continue
            try:
                check(entry)
            except ConfigError as error:
                raise ConfigError(str(error), f"{where}.{key}[{position}]") from None


def _with(device: Device, **changes: Any) -> Device:
    import dataclasses

    return dataclasses.replace(device, **changes)


def inventory_from_config(document: Mapping[str, Any]):
    """
    C{(InventorySettings, [Device, ...])} from a whole parsed configuration
    file: its C{[inventory]} table and its C{[[devices]]} tables.
    """
    from callhome_mux.inventory.settings import InventorySettings

    settings = from_table(InventorySettings, document.get("inventory"), "inventory")
    tables = document.get("devices", ())
    if not isinstance(tables, (list, tuple)):
        raise ConfigError("expected [[devices]] tables (an array of tables)", "devices")
    return settings, devices_from_tables(tables)
