"""
What can go wrong on a RESTCONF session, as exceptions callers can tell apart.

L{RestconfError} is the device saying no: an HTTP error status, with every
C{ietf-restconf:errors} entry (RFC 8040 §7.1) when the body carries them.
The others are about the connection: it was lost (L{SessionLost}), a request
waited too long (L{RequestTimeout}), a reply was refused by our bounds
(L{ResponseTooLarge}, L{UnsafeContent}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple


@dataclass(frozen=True)
class RestconfErrorDetail:
    """One C{error} entry of an C{ietf-restconf:errors} reply."""

    error_type: str
    error_tag: str
    error_app_tag: Optional[str] = None
    error_path: Optional[str] = None
    error_message: Optional[str] = None
    #: JSON: the decoded C{error-info} value; XML: the C{error-info} element.
    error_info: Any = None

    def __str__(self) -> str:
        text = f"{self.error_type}/{self.error_tag}"
        if self.error_app_tag:
            text += f" ({self.error_app_tag})"
        if self.error_path:
            text += f" at {self.error_path}"
        if self.error_message:
            text += f": {self.error_message}"
        return text


class RestconfError(Exception):
    """
    The device answered with an HTTP error status.

    @ivar status: the HTTP status code.
    @ivar errors: every C{ietf-restconf:errors} entry, in order; empty when
        the body was not an errors document (a proxy's HTML page, say).
    @ivar body: the raw reply body, for the rare caller that wants it.
    """

    def __init__(self, status: int, errors: Tuple[RestconfErrorDetail, ...] = (), method: str = "", path: str = "", body: bytes = b""):
        self.status = status
        self.errors = tuple(errors)
        self.method = method
        self.path = path
        self.body = body
        what = "; ".join(str(e) for e in self.errors) or "no ietf-restconf:errors in the reply"
        super().__init__(f"{method} {path}: HTTP {status}: {what}".strip())

    @property
    def error_tags(self) -> Tuple[str, ...]:
        return tuple(e.error_tag for e in self.errors)


class SessionLost(Exception):
    """The connection to the device is gone; the request did not (or may not) complete."""


class RequestTimeout(Exception):
    """A request did not get its complete reply within the request timeout."""


class ResponseTooLarge(Exception):
    """A reply body exceeded C{max_response_body}; it was discarded."""


class UnsafeContent(ValueError):
    """A reply we refuse to parse: XML with a DOCTYPE, malformed JSON or XML."""


class DiscoveryFailed(Exception):
    """Root discovery did not complete: the session never became usable."""


class TooManyRequests(Exception):
    """The queue of requests waiting for the one connection is full."""
