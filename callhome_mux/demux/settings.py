"""Limits and timers of the one-port demultiplexer (section C{[demux]})."""

from __future__ import annotations

from dataclasses import dataclass

from callhome_mux.settings import ConfigError, positive


@dataclass(frozen=True)
class DemuxSettings:
    #: Seconds of silence after which a connection is taken for an RFC 8071
    #: TLS device waiting for our ClientHello.
    silence_timeout: float = 1.0
    #: Seconds a connection that has started to talk may take to be classified.
    classify_timeout: float = 10.0
    #: Bytes read, at most, before a decision (preamble lines included).
    max_classify_bytes: int = 8192
    #: Text lines accepted before the SSH identification string (RFC 4253 §4.2).
    max_preamble_lines: int = 16
    #: Bytes, at most, in those lines.
    max_preamble_bytes: int = 4096
    #: Connections that may be unclassified at once; past it the oldest is dropped.
    max_unclassified: int = 4096
    #: Unclassified connections from one source address; past it new ones are refused.
    max_unclassified_per_source: int = 256
    #: Seconds a PROXY-protocol listener waits for the header.
    proxy_header_timeout: float = 5.0

    def __post_init__(self):
        for name in ("silence_timeout", "classify_timeout", "proxy_header_timeout"):
            positive(getattr(self, name), name)
        for name in ("max_classify_bytes", "max_unclassified", "max_unclassified_per_source"):
            positive(getattr(self, name), name)
        if self.max_preamble_lines < 0:
            raise ConfigError("must be 0 or more", "max_preamble_lines")
        if self.max_classify_bytes < 64:
            raise ConfigError("must be at least 64 (room for an SSH banner)", "max_classify_bytes")
        if self.silence_timeout >= self.classify_timeout:
            raise ConfigError("must be shorter than classify_timeout", "silence_timeout")
