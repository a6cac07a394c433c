"""
Listen addresses: a Twisted endpoint string, a mode, and whether a trusted
load balancer puts a PROXY header in front.

Modes:

============== ================================================ ==========================
mode           what arrives                                     RFC 8071 port
============== ================================================ ==========================
auto           anything: the demultiplexer tells SSH, TLS,      (one port for all)
               silent TLS apart
ssh            NETCONF over SSH                                 4334
netconf-tls    silent TLS device, NETCONF                       4335
restconf       silent TLS device, RESTCONF                      4336
tls            silent TLS device, NETCONF or RESTCONF decided
               after the handshake
tls-client     the device sends a ClientHello (it is the TLS
               client)
============== ================================================ ==========================

On the command line a listener is C{[MODE][+proxy]@ENDPOINT}, or just
C{ENDPOINT} for C{auto}: C{tcp:4334}, C{ssh@tcp:4334},
C{netconf-tls@tcp:4335}, C{auto+proxy@tcp:4334}.  In the configuration
file it is a table: C{{endpoint = "tcp:4334", mode = "auto", proxy = false}}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from callhome_mux.connection import ConnectionKind
from callhome_mux.settings import ConfigError, from_table

#: mode -> (pinned kind or None for auto, details the handler sees)
MODES: Dict[str, Tuple[Optional[ConnectionKind], Dict[str, str]]] = {
    "auto": (None, {}),
    "ssh": (ConnectionKind.SSH, {}),
    "netconf-tls": (ConnectionKind.TLS_SILENT, {"protocol": "netconf"}),
    "restconf": (ConnectionKind.TLS_SILENT, {"protocol": "restconf"}),
    "tls": (ConnectionKind.TLS_SILENT, {}),
    "tls-client": (ConnectionKind.TLS_CLIENT_HELLO, {}),
}


@dataclass(frozen=True)
class ListenerSpec:
    endpoint: str
    mode: str = "auto"
    proxy: bool = False

    def __post_init__(self):
        if not self.endpoint or ":" not in self.endpoint:
            raise ConfigError(f"expected a Twisted endpoint string such as tcp:4334, got {self.endpoint!r}", "endpoint")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}", "mode")

    @property
    def pinned_kind(self) -> Optional[ConnectionKind]:
        return MODES[self.mode][0]

    @property
    def pinned_details(self) -> Dict[str, str]:
        return dict(MODES[self.mode][1])

    @property
    def name(self) -> str:
        prefix = self.mode + ("+proxy" if self.proxy else "")
        return self.endpoint if prefix == "auto" else f"{prefix}@{self.endpoint}"

    @classmethod
    def parse(cls, text: str) -> "ListenerSpec":
        """C{[MODE][+proxy]@ENDPOINT} or C{ENDPOINT}."""
        text = text.strip()
        head, at, endpoint = text.partition("@")
        if not at:
            return cls(endpoint=text)
        mode, _, flag = head.partition("+")
        if flag and flag != "proxy":
            raise ConfigError(f"unknown listener flag {flag!r} in {text!r} (only +proxy)", "listen")
        return cls(endpoint=endpoint, mode=mode or "auto", proxy=flag == "proxy")

    @classmethod
    def from_config(cls, value: Any, key: str) -> "ListenerSpec":
        try:
            if isinstance(value, str):
                return cls.parse(value)
            if isinstance(value, Mapping):
                return from_table(cls, value, key)
        except ConfigError as error:
            if error.key and error.key.startswith(key):
                raise
            raise ConfigError(str(error).split(": ", 1)[-1], f"{key}.{error.key}" if error.key else key) from None
        raise ConfigError(f"expected an endpoint string or a table, got {value!r}", key)
