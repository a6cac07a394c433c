"""The inventory as the SSH host-key trust and the TLS unknown-device policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.conch.ssh import keys
from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory.hooks import InventoryCertificatePolicy, InventoryHostKeyTrust
from callhome_mux.inventory.model import Device, ssh_fingerprint

from tests.test_inventory_helpers import InventoryTestMixin, tls_fp

_KEY = keys.Key.fromString(
    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
)


@dataclass(frozen=True)
class FakeCandidate:
    fingerprint: str
    subject: str = "CN=box"
    mapped_id: Optional[str] = None
    peer: str = "192.0.2.7:4335"


class SSHTrustTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUpTrust(self, devices=(), **settings):
        from callhome_mux.ssh.trust import DirectoryTrust, PresentedHostKey

        self.inventory = yield self.open_inventory(list(devices), **settings)
        self.trust = InventoryHostKeyTrust(self.inventory, DirectoryTrust(self.inventory.directory))
        self.key = PresentedHostKey(_KEY.blob())

    @defer.inlineCallbacks
    def test_unknown_key_goes_pending_and_approval_admits(self):
        yield self.setUpTrust(unknown_device_policy="pending")
        verdict = self.trust(self.key, "claimed-box", peer="192.0.2.1:1")
        self.assertFalse(verdict.trusted)
        self.assertEqual(verdict.event, "ssh.hostkey.unknown")
        [entry] = self.inventory.pending()
        self.assertEqual((entry.fingerprint, entry.claimed_device_id, entry.verified), (ssh_fingerprint(_KEY.blob()), "claimed-box", False))
        yield self.inventory.flush()
        device = yield self.inventory.approve(entry.id, "box")
        verdict = self.trust(self.key, None)
        self.assertEqual(verdict.device, device)

    @defer.inlineCallbacks
    def test_reject_policy_and_known_devices(self):
        yield self.setUpTrust([Device("r1", ssh_host_keys=(ssh_fingerprint(_KEY.blob()),))])
        self.assertEqual(self.trust(self.key).device.id, "r1")
        # A claim that disagrees with the key is the SSH layer's mismatch.
        self.assertEqual(self.trust(self.key, "r2").event, "ssh.hostkey.mismatch")

    @defer.inlineCallbacks
    def test_asynchronous_fallback(self):
        yield self.setUpTrust(unknown_device_policy="pending")
        fallback = self.trust.fallback
        self.trust.fallback = lambda key, claimed, peer=None: defer.succeed(fallback(key, claimed, peer))
        verdict = yield self.trust(self.key, None, peer="192.0.2.1:1")
        self.assertEqual(verdict.event, "ssh.hostkey.unknown")
        self.assertEqual(self.inventory.pending()[0].address, "192.0.2.1:1")

    @defer.inlineCallbacks
    def test_throttled_device_is_turned_away(self):
        yield self.setUpTrust([Device("r1", ssh_host_keys=(ssh_fingerprint(_KEY.blob()),))], throttle_failures=1)
        self.bus.emit("ssh.auth.failed", device_id="r1", peer="192.0.2.1:1")
        verdict = self.trust(self.key)
        self.assertFalse(verdict.trusted)
        self.assertEqual(verdict.event, "ssh.device.throttled")


class TLSPolicyTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_records_and_never_admits(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending")
        policy = InventoryCertificatePolicy(inventory)
        self.assertIsNone(policy(FakeCandidate(tls_fp("c"), mapped_id="from-cert")))
        [entry] = inventory.pending()
        self.assertEqual((entry.kind, entry.claimed_device_id, entry.address), ("tls-certificate", "from-cert", "192.0.2.7:4335"))
        yield inventory.flush()
        yield inventory.deny(entry.id)
        self.assertIsNone(policy(FakeCandidate(tls_fp("c"))))
        self.assertEqual(inventory.pending()[0].count, 2)

    @defer.inlineCallbacks
    def test_reject_policy_records_nothing(self):
        inventory = yield self.open_inventory()
        self.assertIsNone(InventoryCertificatePolicy(inventory)(FakeCandidate(tls_fp("c"))))
        self.assertEqual(inventory.pending(), [])
