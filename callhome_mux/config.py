"""
The whole configuration: a TOML file, command-line overrides, defaults.

Everything has a default, so no file is needed to start.  A file looks like::

    state_dir = "/var/lib/callhome-mux"
    listen = ["tcp:4334", "netconf-tls@tcp:4335", "restconf@tcp:4336"]

    [demux]
    silence_timeout = 1.0

    [ssh]
    keepalive_interval = 30

    [[devices]]
    id = "router-1"
    ssh_host_keys = ["ssh-ed25519 AAAA..."]
    credentials = { username = "admin", password_file = "/etc/callhome-mux/router-1.pw" }

Each section is the settings dataclass of one subsystem (see
L{SECTIONS}); unknown sections and keys are refused with a message that
names them.  The command line wins over the file: C{--listen} replaces the
file's listeners, C{--state-dir} its state directory, and
C{--set section.key=value} (value in TOML syntax) any single setting.
"""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from callhome_mux.listener import ListenerSpec
from callhome_mux.settings import ConfigError, from_table

DEFAULT_STATE_DIR = "callhome-mux-state"
DEFAULT_LISTEN = ("tcp:4334",)

#: section name -> "module:SettingsClass"
SECTIONS: Dict[str, str] = {
    "demux": "callhome_mux.demux.settings:DemuxSettings",
    "ssh": "callhome_mux.ssh.settings:SSHSettings",
    "netconf": "callhome_mux.netconf.settings:NetconfSettings",
    "tls": "callhome_mux.tls.settings:TLSSettings",
    "restconf": "callhome_mux.restconf.settings:RestconfSettings",
    "inventory": "callhome_mux.inventory.settings:InventorySettings",
    "api": "callhome_mux.api.settings:APISettings",
    "process": "callhome_mux.gc_tuning:ProcessSettings",
}


def section_class(section: str):
    module_name, _, class_name = SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


@dataclass(frozen=True)
class Config:
    listeners: Tuple[ListenerSpec, ...] = tuple(ListenerSpec.parse(text) for text in DEFAULT_LISTEN)
    state_dir: str = DEFAULT_STATE_DIR
    #: The settings of every section, by section name.
    sections: Mapping[str, Any] = field(default_factory=dict)
    #: Device tables as written; the inventory turns them into devices.
    devices: Tuple[Mapping[str, Any], ...] = ()
    #: The file this came from, for reloads.
    path: Optional[str] = None

    def __getattr__(self, name: str) -> Any:
        # config.demux, config.ssh ... : a section's settings, defaults if absent.
        if name in SECTIONS:
            sections = self.__dict__.get("sections") or {}
            if name in sections:
                return sections[name]
            return section_class(name)()
        raise AttributeError(name)


def load_config(
    path: Optional[str] = None,
    listen: Sequence[str] = (),
    state_dir: Optional[str] = None,
    overrides: Sequence[str] = (),
) -> Config:
    """
    Read C{path} (if any), apply the command line, fill defaults, validate.

    @raise ConfigError: naming the bad key and why.
    """
    document: Dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except OSError as error:
            raise ConfigError(f"cannot read configuration file: {error.strerror}", path) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"not valid TOML: {error}", path) from None
    for assignment in overrides:
        _apply_override(document, assignment)
    if listen:
        document["listen"] = list(listen)
    if state_dir is not None:
        document["state_dir"] = state_dir
    return config_from_document(document, path)


def config_from_document(document: Mapping[str, Any], path: Optional[str] = None) -> Config:
    document = dict(document)
    listen = document.pop("listen", None)
    listeners_tables = document.pop("listeners", None)
    if listen is not None and listeners_tables is not None:
        raise ConfigError("give either 'listen' or [[listeners]], not both", "listen")
    raw_listeners = listen if listen is not None else listeners_tables
    if raw_listeners is None:
        listeners = tuple(ListenerSpec.parse(text) for text in DEFAULT_LISTEN)
    else:
        if not isinstance(raw_listeners, list) or not raw_listeners:
            raise ConfigError("expected a non-empty list of listeners", "listen")
        listeners = tuple(
            ListenerSpec.from_config(value, f"listen[{index}]") for index, value in enumerate(raw_listeners)
        )
    state_dir = document.pop("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(state_dir, str) or not state_dir:
        raise ConfigError(f"expected a directory path, got {state_dir!r}", "state_dir")
    devices = document.pop("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, Mapping) for d in devices):
        raise ConfigError("expected [[devices]] tables", "devices")
    sections = {}
    for name, table in document.items():
        if name not in SECTIONS:
            known = ", ".join(sorted(["listen", "listeners", "state_dir", "devices", *SECTIONS]))
            raise ConfigError(f"unknown setting or section (known: {known})", name)
        if not isinstance(table, Mapping):
            raise ConfigError(f"expected a [{name}] table", name)
        sections[name] = from_table(section_class(name), table, name)
    _validate_devices(devices)
    return Config(listeners=listeners, state_dir=state_dir, sections=sections, devices=tuple(devices), path=path)


def _validate_devices(devices: List[Mapping[str, Any]]) -> None:
    """Turn the device tables into devices now, so a bad one stops the start."""
    from callhome_mux.inventory.config import devices_from_tables

    devices_from_tables(devices)


def config_devices(config: Config):
    """The configuration's devices, as L{Device} objects."""
    from callhome_mux.inventory.config import devices_from_tables

    return devices_from_tables(config.devices)


def _apply_override(document: Dict[str, Any], assignment: str) -> None:
    """C{section.key=value} with C{value} in TOML syntax (bare words are taken as strings)."""
    target, equals, text = assignment.partition("=")
    if not equals or not target.strip():
        raise ConfigError(f"expected section.key=value, got {assignment!r}", "--set")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    keys = target.strip().split(".")
    node = document
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key} is not a section", target)
    node[keys[-1]] = value


def replace_section(config: Config, name: str, settings: Any) -> Config:
    """A copy of C{config} with section C{name} replaced (for tests and embedding)."""
    sections = dict(config.sections)
    sections[name] = settings
    return dataclasses.replace(config, sections=sections)
