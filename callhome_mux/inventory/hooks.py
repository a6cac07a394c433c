"""
The inventory plugged into the SSH and TLS layers' decision points.

Both layers already identify known devices through the shared
L{DeviceDirectory}; what they leave pluggable is the rest:

  - SSH: a host-key trust callable C{(presented_key, claimed_device_id)
    -> HostKeyVerdict}.  L{InventoryHostKeyTrust} asks the layer's own
    L{DirectoryTrust} first (directory, known_hosts, mismatch rules) and
    only for a key nobody knows asks L{Inventory.decide_unknown}; it also
    refuses a device that is throttled.
  - TLS: an unknown-device policy C{(candidate) -> Device or None}, called
    for a certificate whose chain validated but that names no known device.
    L{InventoryCertificatePolicy} records it (policy C{pending}) and
    always answers C{None}: only an operator's approval admits a device.

Both are synchronous: they run at handshake time and touch only memory;
recording happens behind, in the inventory's write queue.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer

from callhome_mux.inventory.identity import SSH_HOST_KEY, TLS_CERTIFICATE, Identity
from callhome_mux.ssh.trust import HOSTKEY_UNKNOWN, HostKeyVerdict

#: Event the SSH layer reports when a throttled device is turned away.
SSH_DEVICE_THROTTLED = "ssh.device.throttled"


class InventoryHostKeyTrust:
    """
    A HostKeyTrust for L{callhome_mux.ssh}: C{DirectoryTrust} plus the
    inventory's unknown-device policy and throttling.

    @param fallback: the SSH layer's C{DirectoryTrust} (or any trust
        callable answering synchronously).
    """

    def __init__(self, inventory, fallback):
        self.inventory = inventory
        self.fallback = fallback

    def __call__(self, key, claimed_device_id: Optional[str] = None, peer: Optional[str] = None):
        verdict = self.fallback(key, claimed_device_id, peer)
        if isinstance(verdict, defer.Deferred):  # an asynchronous fallback
            return verdict.addCallback(self._judge, key, claimed_device_id, peer)
        return self._judge(verdict, key, claimed_device_id, peer)

    def _judge(self, verdict, key, claimed_device_id: Optional[str], peer: Optional[str]):
        if verdict.trusted:
            throttled = self.inventory.is_throttled(verdict.device.id, address=peer)
            if throttled is not None:
                return HostKeyVerdict(event=SSH_DEVICE_THROTTLED, reason=throttled)
            return verdict
        if verdict.event != HOSTKEY_UNKNOWN:
            return verdict  # mismatch, disabled: the SSH layer's own answer stands
        # The key-exchange signature is checked after this call, so the
        # key is not proven yet: recorded as unverified, and approval only
        # pins it (the next handshake has to prove it).
        identity = Identity(
            SSH_HOST_KEY, key.fingerprint, address=peer, claimed_device_id=claimed_device_id, verified=False
        )
        decision = self.inventory.decide_unknown(identity)
        return HostKeyVerdict(event=HOSTKEY_UNKNOWN, reason=f"{verdict.reason}; {decision.reason}")


class InventoryCertificatePolicy:
    """An UnknownDevicePolicy for L{callhome_mux.tls.verify}: record, never admit."""

    def __init__(self, inventory):
        self.inventory = inventory

    def __call__(self, candidate: Any) -> None:
        peer = getattr(candidate, "peer", None)
        identity = Identity(
            TLS_CERTIFICATE,
            candidate.fingerprint,
            address=None if peer in (None, "?") else peer,
            subject=getattr(candidate, "subject", None),
            # What cert-to-name made of a validated certificate: a hint for
            # the operator, not a device id anyone trusts.
            claimed_device_id=getattr(candidate, "mapped_id", None),
            verified=True,
        )
        self.inventory.decide_unknown(identity)
        return None
