"""
What a handshake proved about a caller, and what the inventory decides.

An L{Identity} is built by the SSH or TLS layer at handshake time.  Only
C{kind} + C{fingerprint} are ever matched against devices; the address,
the certificate subject and a preamble's DEVICE-ID are shown to operators
but never make a caller trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from twisted.internet import defer

from callhome_mux.inventory.model import Device, normalise_tls_fingerprint

#: An SSH host key (C{fingerprint} is OpenSSH's C{SHA256:...}).
SSH_HOST_KEY = "ssh-host-key"
#: A TLS certificate (C{fingerprint} is C{sha256:hex}).
TLS_CERTIFICATE = "tls-certificate"
IDENTITY_KINDS = (SSH_HOST_KEY, TLS_CERTIFICATE)


@dataclass(frozen=True)
class Identity:
    kind: str
    fingerprint: str
    #: The peer's host (or C{host:port}); for display and address throttling only.
    address: Optional[str] = None
    #: TLS: the certificate subject, as text.  Display only.
    subject: Optional[str] = None
    #: What a preamble (or certificate) claims the device id is.  Unverified; display only.
    claimed_device_id: Optional[str] = None
    #: False when the handshake had not proven possession of the key or the
    #: certificate chain did not validate; shown to the operator.
    verified: bool = True

    def __post_init__(self):
        if self.kind not in IDENTITY_KINDS:
            raise ValueError(f"identity kind must be one of {', '.join(IDENTITY_KINDS)}, got {self.kind!r}")
        if self.kind == TLS_CERTIFICATE:
            object.__setattr__(self, "fingerprint", normalise_tls_fingerprint(self.fingerprint))
        elif not self.fingerprint.startswith("SHA256:"):
            raise ValueError(f"SSH host key fingerprints are SHA256:..., got {self.fingerprint[:20]!r}")

    @property
    def key(self):
        """What identifies the caller: the only part ever matched."""
        return (self.kind, self.fingerprint)

    def fields(self) -> Dict[str, Any]:
        """For events."""
        return {
            "identity_kind": self.kind,
            "fingerprint": self.fingerprint,
            "peer": self.address,
            "subject": self.subject,
            "claimed_device_id": self.claimed_device_id,
            "verified": self.verified,
        }


#: Decision actions.
ACCEPT = "accept"  # a known, enabled device
REJECT = "reject"  # unknown, policy reject (or no room for one more pending entry)
PENDING = "pending"  # unknown, recorded for an operator to approve
DENIED = "denied"  # an operator denied this identity
DISABLED = "disabled"  # a known device that is disabled
THROTTLED = "throttled"  # too many failures lately: back off


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    device: Optional[Device] = None
    #: C{pending}/C{denied}: the pending entry's id.
    pending_id: Optional[int] = None
    #: Fires once the attempt is recorded (C{None} when nothing is written).
    recorded: Optional[defer.Deferred] = field(default=None, compare=False, repr=False)

    @property
    def accepted(self) -> bool:
        return self.action == ACCEPT


@dataclass(frozen=True)
class PendingDevice:
    """An unknown identity that called home, waiting for an operator."""

    id: int
    kind: str
    fingerprint: str
    subject: Optional[str]
    claimed_device_id: Optional[str]
    address: Optional[str]
    first_seen: float
    last_seen: float
    count: int
    #: C{pending} or C{denied}.
    status: str = "pending"
    verified: bool = True

    @property
    def key(self):
        return (self.kind, self.fingerprint)

    def fields(self) -> Dict[str, Any]:
        return {
            "pending_id": self.id,
            "identity_kind": self.kind,
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "claimed_device_id": self.claimed_device_id,
            "peer": self.address,
            "count": self.count,
            "status": self.status,
        }
