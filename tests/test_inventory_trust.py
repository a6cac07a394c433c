"""Unknown devices: policies, approval, denial, floods, unproven claims, secrets."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory.model import Credentials, Device
from callhome_mux.settings import ConfigError

from tests.test_inventory_helpers import InventoryTestMixin, ssh_fp, ssh_identity, tls_fp, tls_identity


class PolicyTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_reject_policy_records_nothing(self):
        inventory = yield self.open_inventory()
        decision = inventory.identify(ssh_identity("stranger", address="192.0.2.1:1"))
        self.assertEqual(decision.action, "reject")
        self.assertIsNone(decision.recorded)
        self.assertEqual(inventory.pending(), [])
        self.assertNotIn("inventory.device.pending", self.names())

    @defer.inlineCallbacks
    def test_known_device_is_accepted(self):
        device = Device("r1", ssh_host_keys=(ssh_fp("r1"),), tls_fingerprints=(tls_fp("r1"),))
        inventory = yield self.open_inventory([device])
        self.assertEqual(inventory.identify(ssh_identity("r1")).device, device)
        self.assertEqual(inventory.identify(tls_identity("r1")).action, "accept")

    @defer.inlineCallbacks
    def test_disabled_device(self):
        inventory = yield self.open_inventory()
        yield inventory.add_device(Device("r1", ssh_host_keys=(ssh_fp("r1"),), enabled=False))
        self.assertEqual(inventory.identify(ssh_identity("r1")).action, "disabled")
        yield inventory.set_enabled("r1", True)
        self.assertEqual(inventory.identify(ssh_identity("r1")).action, "accept")

    @defer.inlineCallbacks
    def test_pending_policy_records_once_and_counts(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending", count_flush_interval=5.0)
        identity = tls_identity("new", address="192.0.2.5:4335", subject="CN=new", claimed_device_id="new-box")
        first = inventory.identify(identity)
        self.assertEqual(first.action, "pending")
        entry = yield first.recorded
        self.assertEqual(
            (entry.kind, entry.fingerprint, entry.subject, entry.claimed_device_id, entry.address, entry.count),
            ("tls-certificate", tls_fp("new"), "CN=new", "new-box", "192.0.2.5:4335", 1),
        )
        self.assertEqual(self.names(), ["inventory.device.pending"])
        self.clock.advance(1)
        again = inventory.identify(identity)
        self.assertEqual((again.action, again.pending_id, again.recorded), ("pending", entry.id, None))
        [updated] = inventory.pending()
        self.assertEqual((updated.count, updated.first_seen, updated.last_seen), (2, entry.first_seen, entry.first_seen + 1))
        # Counters reach the disk in a batch, on the clock.
        self.clock.advance(5)
        inventory = yield self.reopen(inventory, unknown_device_policy="pending")
        self.assertEqual(inventory.pending()[0].count, 2)

    @defer.inlineCallbacks
    def test_pending_list_is_bounded(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending", max_pending=3)
        decisions = [inventory.decide_unknown(ssh_identity(f"k{n}")) for n in range(7)]
        self.assertEqual([d.action for d in decisions], ["pending"] * 3 + ["reject"] * 4)
        # Rejections 1, 2 and 4 are reported; 3 is not.
        self.assertEqual([e["rejections"] for e in self.events if e["event"] == "inventory.attempt.refused"], [1, 2, 4])
        yield defer.gatherResults([d.recorded for d in decisions[:3]])
        self.assertEqual(len(inventory.pending()), 3)


class ApprovalTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_approve_makes_next_call_accepted(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending")
        identity = ssh_identity("new", claimed_device_id="r9")
        decision = inventory.identify(identity)
        yield decision.recorded
        device = yield inventory.approve(decision.pending_id, "r9", Credentials("admin", "pw"), {"site": "x"})
        self.assertEqual(device.ssh_host_keys, (ssh_fp("new"),))
        self.assertEqual(device.labels, {"site": "x"})
        self.assertEqual(inventory.identify(identity).device, device)
        self.assertEqual(inventory.pending(), [])
        approved = self.last("inventory.device.approved")
        self.assertEqual((approved["device_id"], approved["fingerprint"]), ("r9", ssh_fp("new")))
        inventory = yield self.reopen(inventory, unknown_device_policy="pending")
        self.assertEqual(inventory.identify(identity).action, "accept")
        self.assertEqual(inventory.get("r9").credentials.password, "pw")

    @defer.inlineCallbacks
    def test_tls_approval_pins_the_certificate(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending")
        decision = inventory.identify(tls_identity("cert"))
        yield decision.recorded
        device = yield inventory.approve(decision.pending_id)
        self.assertEqual(device.tls_fingerprints, (tls_fp("cert"),))
        self.assertEqual(device.ssh_host_keys, ())
        self.assertTrue(device.id.startswith("tls-"))

    @defer.inlineCallbacks
    def test_claims_never_make_a_device_trusted(self):
        # r1 is known by its key; a caller with another key claiming to be
        # r1, from r1's address, is still unknown.
        inventory = yield self.open_inventory([Device("r1", ssh_host_keys=(ssh_fp("r1"),))], unknown_device_policy="pending")
        yield inventory.set_state("r1", "connected", address="192.0.2.1:5000")
        impostor = ssh_identity("impostor", claimed_device_id="r1", address="192.0.2.1:5000", verified=False)
        decision = inventory.identify(impostor)
        self.assertEqual(decision.action, "pending")
        self.assertIsNone(decision.device)
        entry = yield decision.recorded
        self.assertFalse(entry.verified)
        # Approval without an explicit id does not take the claimed one.
        device = yield inventory.approve(entry.id)
        self.assertNotEqual(device.id, "r1")
        self.assertEqual(inventory.get("r1").ssh_host_keys, (ssh_fp("r1"),))

    @defer.inlineCallbacks
    def test_approve_refuses_taken_ids(self):
        inventory = yield self.open_inventory([Device("r1")], unknown_device_policy="pending")
        decision = inventory.identify(ssh_identity("new"))
        yield decision.recorded
        yield self.assertFailure(inventory.approve(decision.pending_id, "r1"), ConfigError)
        self.assertEqual(len(inventory.pending()), 1)
        yield self.assertFailure(inventory.approve(12345), KeyError)

    @defer.inlineCallbacks
    def test_approve_a_denied_identity(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending")
        decision = inventory.identify(ssh_identity("x"))
        yield decision.recorded
        yield inventory.deny(decision.pending_id)
        yield inventory.approve(decision.pending_id, "x")
        self.assertEqual(inventory.identify(ssh_identity("x")).action, "accept")


class DenialTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_denied_identity_is_refused_cheaply(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending", count_flush_interval=10.0)
        decision = inventory.identify(ssh_identity("bad"))
        yield decision.recorded
        denied = yield inventory.deny(decision.pending_id)
        self.assertEqual(denied.status, "denied")
        self.assertEqual(self.last("inventory.device.denied")["pending_id"], decision.pending_id)

        writes = []
        original = inventory.store._submit
        inventory.store._submit = lambda operation: writes.append(operation) or original(operation)
        del self.events[:]
        for _ in range(1000):
            refused = inventory.identify(ssh_identity("bad", address="198.51.100.7:1"))
            self.assertEqual(refused.action, "denied")
            self.assertIsNone(refused.recorded)
        # No write per attempt; events at 2, 4, 8 ... 512 attempts only.
        self.assertEqual(writes, [])
        self.assertEqual(len(self.names("inventory.attempt.refused")), 9)
        self.clock.advance(10)
        self.assertEqual(len(writes), 1)
        yield inventory.flush()
        inventory = yield self.reopen(inventory, unknown_device_policy="pending")
        [entry] = inventory.pending()
        self.assertEqual((entry.status, entry.count), ("denied", 1001))

    @defer.inlineCallbacks
    def test_denial_holds_under_reject_policy_and_forget_lifts_it(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending")
        decision = inventory.identify(ssh_identity("bad"))
        yield decision.recorded
        yield inventory.deny(decision.pending_id)
        inventory = yield self.reopen(inventory)  # policy: reject
        self.assertEqual(inventory.identify(ssh_identity("bad")).action, "denied")
        yield inventory.forget(decision.pending_id)
        self.assertEqual(inventory.identify(ssh_identity("bad")).action, "reject")
        self.assertEqual(inventory.pending(), [])


class SecretTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_secrets_stay_out_of_events_and_reprs(self):
        secrets = ["pw-SECRET-1", "pass-SECRET-2", "hmac-SECRET-3", "pw-SECRET-4"]
        inventory = yield self.open_inventory(
            [Device("c1", credentials=Credentials("u", secrets[0], private_key_passphrase=secrets[1]),
                    outbound_ssh_secret=secrets[2])],
            unknown_device_policy="pending",
        )
        yield inventory.add_device(Device("r1", ssh_host_keys=(ssh_fp("r1"),), credentials=Credentials("u", secrets[3])))
        yield inventory.update_device(Device("r1", ssh_host_keys=(ssh_fp("r1"),), credentials=Credentials("v", secrets[3])))
        decision = inventory.identify(ssh_identity("n"))
        yield decision.recorded
        yield inventory.approve(decision.pending_id, "n", Credentials("u", secrets[3]))
        self.bus.emit("session.up", device_id="r1", transport="ssh", peer="192.0.2.1:1")
        yield inventory.flush()
        shown = repr(self.events) + repr(inventory.devices()) + repr(inventory.states()) + repr(inventory.pending())
        shown += repr((yield inventory.history("r1"))) + repr([d.credentials.describe() for d in inventory.devices()])
        for secret in secrets:
            self.assertNotIn(secret, shown)
