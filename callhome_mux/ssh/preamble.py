"""
Juniper outbound-ssh preamble check.

A Junos device configured with a C{secret} sends, before SSH starts::

    MSG-ID: DEVICE-CONN-INFO
    MSG-VER: V1
    DEVICE-ID: <device-id>
    HOST-KEY: <public host key>
    HMAC: <hex HMAC-SHA1 of the HOST-KEY value, keyed with the secret>

The demultiplexer hands these claims on unverified.  Once the SSH key
exchange has proved which device this is, a device configured with an
C{outbound_ssh_secret} must have sent a preamble whose HMAC is right and
whose HOST-KEY is the key the handshake proved.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Mapping, Optional

from callhome_mux.ssh.trust import key_blob_from_text


def outbound_ssh_hmac(secret: str, host_key_value: str) -> str:
    """The hex HMAC-SHA1 Junos sends: keyed with the secret, over the HOST-KEY value."""
    return hmac.new(secret.encode("utf-8"), host_key_value.encode("utf-8"), hashlib.sha1).hexdigest()


def preamble_problem(secret: Optional[str], preamble: Mapping[str, str], proven_blob: bytes) -> Optional[str]:
    """
    Why the preamble is not acceptable for a device with C{secret}, or
    C{None} when it is (or when the device has no secret: nothing to check).

    The reason never contains the secret or the expected HMAC.
    """
    if not secret:
        return None
    host_key = preamble.get("HOST-KEY")
    claimed_hmac = preamble.get("HMAC")
    if not host_key or not claimed_hmac:
        return "the device has an outbound-ssh secret but sent no HOST-KEY/HMAC preamble"
    expected = outbound_ssh_hmac(secret, host_key.strip())
    if not hmac.compare_digest(expected, claimed_hmac.strip().lower()):
        return "the preamble HMAC does not match the shared secret"
    if key_blob_from_text(host_key) != proven_blob:
        return "the preamble HOST-KEY differs from the host key proven in the SSH handshake"
    return None
