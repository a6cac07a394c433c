"""
NETCONF or RESTCONF?  Deciding what runs inside a call-home TLS connection.

In order, the first that answers wins:

1. a pin: the listener's (C{connection.details["protocol"]}), else the
   device's (C{Device.protocol});
2. the ALPN id both sides agreed on (see L{callhome_mux.tls.settings.ALPN_MEANING});
3. who speaks first: a NETCONF server sends its <hello> as soon as the
   session opens (RFC 6241 §8.1), an HTTP server never speaks first.  So
   bytes starting with C{<} mean NETCONF, and silence for
   C{protocol_decision_wait} seconds means RESTCONF.
"""

from __future__ import annotations

from typing import Optional

from callhome_mux.tls.settings import ALPN_MEANING

NETCONF = "netconf"
RESTCONF = "restconf"

# What a pin may say, and what it means here.  "netconf-ssh" is a pin to
# the other transport: such a device must not be served over TLS.
_PINS = {"netconf": NETCONF, "netconf-tls": NETCONF, "restconf": RESTCONF, "netconf-ssh": None}


class PinMismatch(ValueError):
    """The device or listener is pinned to a protocol TLS does not carry."""


def pinned(listener_pin: Optional[str], device_pin: Optional[str]) -> Optional[str]:
    """C{NETCONF}, C{RESTCONF} or C{None} (no pin); raise L{PinMismatch} for an SSH pin."""
    for pin in (listener_pin, device_pin):
        if not pin:
            continue
        if pin not in _PINS:
            raise PinMismatch(f"unknown protocol pin {pin!r}")
        if _PINS[pin] is None:
            raise PinMismatch(f"pinned to {pin}, but the device called home over TLS")
        return _PINS[pin]
    return None


def from_alpn(negotiated: Optional[bytes]) -> Optional[str]:
    if not negotiated:
        return None
    return ALPN_MEANING.get(negotiated.decode("ascii", "replace"))


def from_first_bytes(data: bytes) -> Optional[str]:
    """C{NETCONF} if C{data} starts like XML, C{None} if only whitespace so far; raise ValueError otherwise."""
    text = data.lstrip()
    if not text:
        return None
    if text.startswith(b"<"):
        return NETCONF
    raise ValueError(f"the device spoke first, but not XML: {text[:16]!r}")
