"""
Tell the kind of a call-home connection from its first bytes.

A sans-IO core: feed it bytes as they arrive, tell it when the silence
timer or the overall timer fires, and it answers with a L{Decision}.  No
sockets, no clocks: the Twisted protocol in L{callhome_mux.demux.protocol}
owns those.

What it recognises:

 - an SSH identification string (C{SSH-2.0-}, C{SSH-1.99-}), possibly after
   other text lines (RFC 4253 §4.2), bounded in count and bytes.  A
   Juniper-style outbound-ssh preamble (C{MSG-ID: DEVICE-CONN-INFO} and its
   C{KEY: value} lines) is parsed into unverified claims;
 - a TLS handshake record carrying a ClientHello;
 - silence until the silence timer: an RFC 8071 TLS device.

Everything else is refused with a reason a person can read.  The cost is
bounded: each byte is looked at a constant number of times, however the
stream is split, and no more than C{max_classify_bytes} are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from callhome_mux.connection import NO_CLAIMS, ConnectionKind, no_claims
from callhome_mux.demux.settings import DemuxSettings

_SSH_PREFIXES = (b"SSH-2.0-", b"SSH-1.99-")
_TLS_HANDSHAKE = 0x16
_TLS_CLIENT_HELLO = 0x01
# A ClientHello record fits in one plaintext record: 2^14 bytes at most.
_TLS_MAX_RECORD = 2**14
_JUNIPER_FIRST_LINE = "MSG-ID: DEVICE-CONN-INFO"
_HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")
# Bytes that may appear in a text line before the SSH banner: printable
# ASCII, tab, CR, LF, and 0x80-0xFF (UTF-8, validated per line).
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0x80, 0x100))


@dataclass(frozen=True)
class Decision:
    """What a connection is; C{kind is None} means refuse it for C{reason}."""

    kind: Optional[ConnectionKind]
    reason: str
    #: Every byte read so far, to replay to the next layer.
    data: bytes = b""
    preamble: Mapping[str, str] = field(default_factory=no_claims)
    preamble_lines: Tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.kind is not None


class Classifier:
    """
    Classify one connection.

    C{feed(data)} returns a L{Decision} once one is reached and C{None}
    while more bytes are needed.  After a decision the classifier must not
    be fed again.
    """

    __slots__ = ("_settings", "_buffer", "_line_start", "_scan_from", "_lines", "_preamble_bytes", "decision")

    def __init__(self, settings: DemuxSettings):
        self._settings = settings
        self._buffer = bytearray()
        self._line_start = 0  # where the line being read starts
        self._scan_from = 0  # where to resume looking for its end
        self._lines: List[str] = []
        self._preamble_bytes = 0
        self.decision: Optional[Decision] = None

    @property
    def bytes_read(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> Optional[Decision]:
        if self.decision is not None:
            raise RuntimeError("classifier fed after its decision")
        if not data:
            return None
        buffer = self._buffer
        buffer += data
        if buffer[0] == _TLS_HANDSHAKE:
            return self._tls()
        if len(buffer) > self._settings.max_classify_bytes:
            return self._refuse(f"no SSH banner within {self._settings.max_classify_bytes} bytes")
        return self._text()

    def silence(self) -> Optional[Decision]:
        """The silence timer fired: a connection that said nothing is a silent TLS device."""
        if self.decision is not None or self._buffer:
            return None
        return self._decide(ConnectionKind.TLS_SILENT, "silent for the silence timeout: RFC 8071 TLS device")

    def timeout(self) -> Decision:
        """The classification timer fired: whatever was read was not enough."""
        if self.decision is not None:
            return self.decision
        return self._refuse(f"not classified in time ({len(self._buffer)} bytes read)")

    # -- TLS -------------------------------------------------------------

    def _tls(self) -> Optional[Decision]:
        buffer = self._buffer
        if len(buffer) >= 2 and buffer[1] != 0x03:
            return self._refuse(f"TLS handshake record with unknown version byte 0x{buffer[1]:02x}")
        if len(buffer) < 6:
            return None
        length = int.from_bytes(buffer[3:5], "big")
        if length < 4 or length > _TLS_MAX_RECORD:
            return self._refuse(f"TLS handshake record of impossible length {length}")
        if buffer[5] != _TLS_CLIENT_HELLO:
            return self._refuse(f"TLS handshake record that is not a ClientHello (type {buffer[5]})")
        return self._decide(ConnectionKind.TLS_CLIENT_HELLO, "TLS ClientHello: the device acts as TLS client")

    # -- SSH and the text lines before it -------------------------------

    def _text(self) -> Optional[Decision]:
        buffer = self._buffer
        settings = self._settings
        while True:
            start = self._line_start
            head = bytes(buffer[start : start + 9])
            if head.startswith(b"SSH-"):
                for prefix in _SSH_PREFIXES:
                    if head.startswith(prefix):
                        return self._decide(ConnectionKind.SSH, "SSH identification string")
                if not any(prefix.startswith(head) for prefix in _SSH_PREFIXES):
                    end = buffer.find(b"\n", start)
                    banner = bytes(buffer[start : end if end >= 0 else start + 40]).decode("ascii", "replace").strip()
                    return self._refuse(f"unsupported SSH protocol version in {banner!r}")
                return None
            if any(prefix.startswith(head) for prefix in _SSH_PREFIXES):
                return None  # still a possible beginning of "SSH-2.0-"
            if start == 0 and self._looks_like_http(buffer):
                return self._refuse("an HTTP request, not a call-home device")
            if start == 0 and buffer.startswith(b"PROXY "):
                return self._refuse("a PROXY protocol header on a listener that does not expect one")
            # A text line before the banner: find its end, scanning new bytes
            # only, and check just this line's bytes (what follows the banner
            # is binary SSH).
            end = buffer.find(b"\n", self._scan_from)
            unchecked = bytes(buffer[self._scan_from : end + 1 if end >= 0 else len(buffer)])
            if unchecked.translate(None, _TEXT_BYTES):
                return self._refuse(f"binary data before any SSH banner (starts {bytes(buffer[:8]).hex()})")
            if end < 0:
                self._scan_from = len(buffer)
                if self._preamble_bytes + len(buffer) - start > settings.max_preamble_bytes:
                    return self._refuse(f"text before the SSH banner exceeds {settings.max_preamble_bytes} bytes")
                return None
            line_bytes = bytes(buffer[start : end + 1])
            self._preamble_bytes += len(line_bytes)
            if self._preamble_bytes > settings.max_preamble_bytes:
                return self._refuse(f"text before the SSH banner exceeds {settings.max_preamble_bytes} bytes")
            if len(self._lines) >= settings.max_preamble_lines:
                return self._refuse(f"more than {settings.max_preamble_lines} lines before the SSH banner")
            try:
                line = line_bytes.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                return self._refuse("a line before the SSH banner is not UTF-8 text")
            self._lines.append(line)
            self._line_start = self._scan_from = end + 1

    @staticmethod
    def _looks_like_http(buffer: bytearray) -> bool:
        return any(buffer.startswith(method) for method in _HTTP_METHODS)

    # -- decisions -------------------------------------------------------

    def _decide(self, kind: ConnectionKind, reason: str) -> Decision:
        preamble = parse_outbound_ssh_preamble(self._lines) if kind is ConnectionKind.SSH else NO_CLAIMS
        self.decision = Decision(kind, reason, bytes(self._buffer), preamble, tuple(self._lines))
        return self.decision

    def _refuse(self, reason: str) -> Decision:
        self.decision = Decision(None, reason, bytes(self._buffer), NO_CLAIMS, tuple(self._lines))
        return self.decision


def parse_outbound_ssh_preamble(lines: List[str]) -> Mapping[str, str]:
    """
    The C{KEY: value} claims of a Juniper-style outbound-ssh preamble.

    The first line must be C{MSG-ID: DEVICE-CONN-INFO}; other text lines
    (RFC 4253 lets a server send any) give no claims.  The values are what
    the device says, nothing more: the SSH layer checks them.
    """
    if not lines or lines[0].strip() != _JUNIPER_FIRST_LINE:
        return NO_CLAIMS
    claims: Dict[str, str] = {}
    for line in lines:
        key, colon, value = line.partition(":")
        if colon and key.strip():
            claims.setdefault(key.strip().upper(), value.strip())
    return claims
