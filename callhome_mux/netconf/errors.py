"""
What can go wrong in a NETCONF session, as exceptions callers can tell apart.

No Twisted imports: the sans-IO framing and XML modules raise these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from callhome_mux.netconf.namespaces import BASE_NS


class NetconfError(Exception):
    """Base class of every error this package raises."""


class NetconfProtocolError(NetconfError):
    """The peer broke RFC 6241/6242: the session cannot be trusted any more."""


class FramingError(NetconfProtocolError):
    """The byte stream does not follow RFC 6242 framing (or breaks a size limit)."""


class UnsafeXMLError(NetconfProtocolError):
    """A message is not well-formed XML, or uses a feature we refuse (DOCTYPE, entities)."""


class SessionLostError(NetconfError):
    """The session ended before the operation finished."""


class HelloTimeoutError(NetconfError):
    """The device did not send its <hello> in time."""


class RPCTimeoutError(NetconfError):
    """No <rpc-reply> arrived for an RPC in time."""

    def __init__(self, message_id: str, timeout: float, operation: str = ""):
        super().__init__(f"no reply to {operation or 'rpc'} (message-id {message_id}) within {timeout:g} s")
        self.message_id = message_id
        self.timeout = timeout
        self.operation = operation


class CapabilityError(NetconfError):
    """The operation needs a capability the device did not advertise."""


@dataclass(frozen=True)
class RPCErrorItem:
    """One <rpc-error> (RFC 6241 §4.3); absent fields are None."""

    type: Optional[str]
    tag: Optional[str]
    severity: Optional[str]
    app_tag: Optional[str] = None
    path: Optional[str] = None
    message: Optional[str] = None
    message_lang: Optional[str] = None
    #: The <error-info> element itself (lxml), or None.
    info: Any = None

    @classmethod
    def from_element(cls, element) -> "RPCErrorItem":
        def text(name: str) -> Optional[str]:
            child = element.find(f"{{{BASE_NS}}}{name}")
            if child is None or child.text is None:
                return None
            return child.text.strip()

        message = element.find(f"{{{BASE_NS}}}error-message")
        return cls(
            type=text("error-type"),
            tag=text("error-tag"),
            severity=text("error-severity"),
            app_tag=text("error-app-tag"),
            path=text("error-path"),
            message=text("error-message"),
            message_lang=None if message is None else message.get("{http://www.w3.org/XML/1998/namespace}lang"),
            info=element.find(f"{{{BASE_NS}}}error-info"),
        )

    def __str__(self) -> str:
        parts = [f"{self.type}/{self.tag}"]
        if self.app_tag:
            parts.append(f"app-tag={self.app_tag}")
        if self.path:
            parts.append(f"path={self.path}")
        if self.message:
            parts.append(repr(self.message))
        return " ".join(parts)


class RPCError(NetconfError):
    """
    The device answered with <rpc-error>: C{errors} holds every one of them.

    C{reply} is the whole <rpc-reply> element, for callers that need more.
    """

    def __init__(self, errors: List[RPCErrorItem], reply=None, operation: str = ""):
        self.errors = list(errors)
        self.reply = reply
        self.operation = operation
        what = operation or "rpc"
        summary = "; ".join(str(item) for item in self.errors) or "no details"
        super().__init__(f"{what} failed: {summary}")

    # Shortcuts to the first error, the one most callers look at.
    @property
    def tag(self) -> Optional[str]:
        return self.errors[0].tag if self.errors else None

    @property
    def type(self) -> Optional[str]:
        return self.errors[0].type if self.errors else None

    @property
    def message(self) -> Optional[str]:
        return self.errors[0].message if self.errors else None
