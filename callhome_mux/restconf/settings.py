"""
Settings of the RESTCONF client (section C{[restconf]}).

Every request travels over the one connection the device opened, so the
limits here protect that connection as much as this process: a reply that
is too large is discarded (the connection stays usable), a request that
outlives its timeout on the wire costs the connection (HTTP/1.1 cannot
skip a reply it no longer wants).
"""

from __future__ import annotations

from dataclasses import dataclass

from callhome_mux.settings import ConfigError, at_least, positive

ENCODINGS = ("json", "xml")


@dataclass(frozen=True)
class RestconfSettings:
    #: Seconds from queueing a request to its complete reply.
    request_timeout: float = 60.0
    #: Largest reply body kept, in bytes; a larger one fails its request.
    max_response_body: int = 16 * 1024 * 1024
    #: Seconds for root discovery plus the YANG library after the handoff.
    discovery_timeout: float = 30.0
    #: Encoding of request bodies and the preferred reply encoding.
    default_encoding: str = "json"
    #: RESTCONF root used when the device has no host-meta resource
    #: (RFC 8040 §3.1 says it must; some do not).  Empty: require host-meta.
    fallback_root: str = "/restconf"
    #: Requests waiting behind the one on the wire before new ones are refused.
    max_queued_requests: int = 1000

    def __post_init__(self):
        positive(self.request_timeout, "request_timeout")
        at_least(self.max_response_body, 1024, "max_response_body")
        positive(self.discovery_timeout, "discovery_timeout")
        at_least(self.max_queued_requests, 1, "max_queued_requests")
        if self.default_encoding not in ENCODINGS:
            raise ConfigError(
                f"expected one of {', '.join(ENCODINGS)}, got {self.default_encoding!r}", "default_encoding"
            )
        if self.fallback_root and not self.fallback_root.startswith("/"):
            raise ConfigError(f"must be an absolute path, got {self.fallback_root!r}", "fallback_root")
