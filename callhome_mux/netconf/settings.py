"""Settings of the NETCONF client layer: the C{[netconf]} section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from callhome_mux.settings import ConfigError, at_least, from_table, positive

from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1

SECTION = "netconf"


@dataclass(frozen=True)
class NetconfSettings:
    #: Seconds to wait for the device's <hello> after the transport is up.
    hello_timeout: float = 30.0
    #: Default seconds to wait for an <rpc-reply>; an RPC may ask for another.
    rpc_timeout: float = 60.0
    #: Seconds C{close()} waits for the <close-session> reply before dropping the transport.
    close_timeout: float = 10.0
    #: Largest message accepted from a device, in bytes (bigger ones end the session).
    max_message_size: int = 64 * 1024 * 1024
    #: Largest base:1.1 chunk accepted (None: up to max_message_size).
    max_chunk_size: Optional[int] = None
    #: Chunk size we use when sending base:1.1 messages.
    send_chunk_size: int = 1024 * 1024
    #: Capabilities we advertise in our <hello>.
    capabilities: Tuple[str, ...] = (BASE_1_0, BASE_1_1)

    def __post_init__(self) -> None:
        positive(self.hello_timeout, "hello_timeout")
        positive(self.rpc_timeout, "rpc_timeout")
        positive(self.close_timeout, "close_timeout")
        at_least(self.max_message_size, 1, "max_message_size")
        if self.max_chunk_size is not None:
            at_least(self.max_chunk_size, 1, "max_chunk_size")
            if self.max_chunk_size > 4294967295:
                raise ConfigError("must be at most 4294967295 (RFC 6242 §4.2)", "max_chunk_size")
        at_least(self.send_chunk_size, 1, "send_chunk_size")
        if self.send_chunk_size > 4294967295:
            raise ConfigError("must be at most 4294967295 (RFC 6242 §4.2)", "send_chunk_size")
        if not isinstance(self.capabilities, tuple):
            object.__setattr__(self, "capabilities", tuple(self.capabilities))
        for index, capability in enumerate(self.capabilities):
            if not capability or any(c.isspace() for c in capability):
                raise ConfigError(f"not a capability URI: {capability!r}", f"capabilities[{index}]")
        if BASE_1_0 not in self.capabilities and BASE_1_1 not in self.capabilities:
            raise ConfigError(f"must include {BASE_1_0} or {BASE_1_1}", "capabilities")

    @property
    def effective_max_chunk_size(self) -> int:
        return self.max_chunk_size if self.max_chunk_size is not None else min(self.max_message_size, 4294967295)

    @classmethod
    def from_table(cls, table: Optional[Mapping[str, Any]]) -> "NetconfSettings":
        """Build from the C{[netconf]} TOML table; a bad key raises L{ConfigError} naming it."""
        return from_table(cls, table, SECTION)
