"""Settings of the northbound HTTP API: the C{[api]} section."""

from __future__ import annotations

from dataclasses import dataclass

from callhome_mux.settings import ConfigError, at_least, positive

SECTION = "api"


@dataclass(frozen=True)
class APISettings:
    #: Twisted endpoint string.  Loopback only until an operator says
    #: otherwise; TLS is one string away (C{ssl:8334:privateKey=...:certKey=...}).
    listen: str = "tcp:8334:interface=127.0.0.1"
    #: Hashed bearer tokens (JSON).  Relative names are in the state directory.
    tokens_file: str = "api-tokens.json"
    #: Where the first start writes the local admin token (mode 0600);
    #: relative names are in the state directory.  Empty: never write one.
    admin_token_file: str = "api-token"
    #: Where the API writes its own URL once listening, so the CLI finds it.
    address_file: str = "api-address"
    #: Seconds between SSE keepalive comments.
    sse_keepalive: float = 15.0
    #: Events queued for one SSE client that is not reading; past this the
    #: client is cut off instead of growing memory without bound.
    sse_max_queued: int = 1000
    #: Most event-stream clients at once; more are answered 503.
    sse_max_clients: int = 100
    #: Seconds a NETCONF RPC made through the API may take unless the
    #: request asks for another (C{?timeout=}); RESTCONF requests use the
    #: C{[restconf]} request timeout.
    rpc_timeout: float = 60.0
    #: Largest request body accepted, in bytes (bigger: 413).
    max_body: int = 4 * 1024 * 1024
    #: Whether C{/metrics} needs a token (Prometheus can send a bearer token).
    metrics_auth: bool = True
    #: History entries shown by C{GET /api/v1/devices/{id}}.
    history_entries: int = 20

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("must be a Twisted endpoint string, e.g. tcp:8334:interface=127.0.0.1", "listen")
        if not self.tokens_file:
            raise ConfigError("must name a file", "tokens_file")
        positive(self.sse_keepalive, "sse_keepalive")
        at_least(self.sse_max_queued, 1, "sse_max_queued")
        at_least(self.sse_max_clients, 1, "sse_max_clients")
        positive(self.rpc_timeout, "rpc_timeout")
        at_least(self.max_body, 1, "max_body")
        at_least(self.history_entries, 0, "history_entries")
