"""
What the demultiplexer hands to the protocol that runs a session.

The demultiplexer owns a connection until it knows its kind; then it builds
a L{ClassifiedConnection} and asks the handler registered for that kind for
an C{IProtocol}.  From then on every byte the device sends (starting with
C{initial_bytes}, the ones the demultiplexer already read) goes to that
protocol, and the protocol writes to C{transport} as to any transport.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Protocol as TypingProtocol

from twisted.internet.interfaces import IAddress, IProtocol, ITransport


class ConnectionKind(enum.Enum):
    #: The device sent an SSH identification string: NETCONF over SSH.
    SSH = "ssh"
    #: The device sent a TLS ClientHello: it acts as TLS client, we are the TLS server.
    TLS_CLIENT_HELLO = "tls-clienthello"
    #: The device stayed silent (RFC 8071): it is the TLS server, we start the handshake.
    TLS_SILENT = "tls-silent"

    @classmethod
    def parse(cls, text: str) -> "ConnectionKind":
        for kind in cls:
            if kind.value == text:
                return kind
        raise ValueError(f"unknown connection kind {text!r}; expected one of {', '.join(k.value for k in cls)}")


_connection_ids = itertools.count(1)

#: The preamble claims of a connection that sent none (nearly all): one
#: read-only mapping for all of them, not an empty dict each.
NO_CLAIMS: Mapping[str, str] = MappingProxyType({})


def no_claims() -> Mapping[str, str]:
    """L{NO_CLAIMS}, as a dataclass field's default (a mapping default is refused as mutable)."""
    return NO_CLAIMS


def next_connection_id() -> str:
    """A short id unique in this process, for correlating one connection's events."""
    return f"c{next(_connection_ids)}"


def format_address(address: IAddress | None) -> str:
    """C{host:port} (C{[host]:port} for IPv6) for events; C{?} when unknown."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return "?" if address is None else str(address)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass
class ClassifiedConnection:
    """One accepted connection whose kind is known."""

    connection_id: str
    kind: ConnectionKind
    #: The live transport.  Write to it; close it with loseConnection().
    transport: ITransport
    #: The device's address: from the PROXY header when the listener reads one.
    peer: IAddress
    #: Our local address (the PROXY header's destination when there is
    #: one); C{None}: the transport's, asked when first wanted
    #: (L{local_address}: a getsockname that the TLS path never needs).
    host: Optional[IAddress] = None
    #: Bytes already read by the demultiplexer, to be replayed first.
    initial_bytes: bytes = b""
    #: Name of the listener that accepted the connection (its endpoint string).
    listener: str = ""
    #: Unverified claims from a Juniper-style outbound-ssh preamble, e.g.
    #: {"DEVICE-ID": "...", "HOST-KEY": "...", "HMAC": "...", "MSG-ID": ..., "MSG-VER": ...}.
    #: Never trust these until the handshake proves them.
    preamble: Mapping[str, str] = field(default_factory=no_claims)
    #: The raw preamble lines in order, for HMAC checks that need them verbatim.
    preamble_lines: tuple = ()
    #: What the listener pinned, e.g. C{{"protocol": "netconf"}}: from the
    #: demultiplexer, its listener's read-only mapping, shared by all its
    #: connections (not a copy each).
    details: Mapping[str, Any] = field(default_factory=dict)
    # The peer's text and the peer it is of: the layers above ask for the
    # text more than once.  Two fields, not a tuple: nothing more for the
    # collector to track for the connection's life.  Until worked out, the
    # text of no peer (format_address(None)): a peer of None reads as "?".
    _peer_text: str = field(default="?", init=False, repr=False, compare=False)
    _peer_text_of: Optional[IAddress] = field(default=None, init=False, repr=False, compare=False)

    def local_address(self) -> IAddress:
        """L{host}, asked of the transport the first time if the demultiplexer left it out."""
        if self.host is None:
            self.host = self.transport.getHost()
        return self.host

    @property
    def peer_text(self) -> str:
        peer = self.peer
        if self._peer_text_of is not peer:
            self._peer_text = format_address(peer)
            self._peer_text_of = peer
        return self._peer_text


class ConnectionHandler(TypingProtocol):
    """
    Runs the sessions of one connection kind.

    C{protocolFor} returns the protocol that takes over the connection, or
    C{None} to refuse it (the handler has then already reported why; the
    demultiplexer closes the connection).
    """

    def protocolFor(self, connection: ClassifiedConnection) -> Optional[IProtocol]:
        ...
