"""Configuration devices vs runtime devices, and reload diffs."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory.inventory import ConfigChanges
from callhome_mux.inventory.model import Credentials, Device
from callhome_mux.settings import ConfigError

from tests.test_inventory_helpers import InventoryTestMixin, ssh_fp, ssh_identity


def dev(device_id, key=None, **kw):
    return Device(device_id, ssh_host_keys=(ssh_fp(key or device_id),), **kw)


class ApplyConfigTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_diff(self):
        inventory = yield self.open_inventory([dev("a"), dev("b"), dev("c")])
        changes = yield inventory.apply_config([dev("a"), dev("b", key="b2"), dev("d")])
        self.assertEqual(changes, ConfigChanges(added=("d",), changed=("b",), removed=("c",)))
        self.assertEqual(changes.affected, ("b", "c"))
        self.assertEqual(sorted(d.id for d in inventory.devices()), ["a", "b", "d"])
        self.assertIsNone(inventory.directory.by_ssh_fingerprint(ssh_fp("b")))
        self.assertEqual(inventory.directory.by_ssh_fingerprint(ssh_fp("b2")).id, "b")
        event = self.last("inventory.config.applied")
        self.assertEqual((event["added"], event["changed"], event["removed"]), (["d"], ["b"], ["c"]))

    @defer.inlineCallbacks
    def test_unchanged_config_changes_nothing(self):
        inventory = yield self.open_inventory([dev("a", credentials=Credentials("u", "p"))])
        del self.events[:]
        changes = yield inventory.apply_config([dev("a", credentials=Credentials("u", "p"))])
        self.assertEqual(changes, ConfigChanges())
        self.assertEqual(self.names(), [])

    @defer.inlineCallbacks
    def test_password_change_is_a_change(self):
        inventory = yield self.open_inventory([dev("a", credentials=Credentials("u", "p"))])
        changes = yield inventory.apply_config([dev("a", credentials=Credentials("u", "q"))])
        self.assertEqual(changes.changed, ("a",))

    @defer.inlineCallbacks
    def test_conflict_changes_nothing(self):
        inventory = yield self.open_inventory([dev("a")])
        yield inventory.add_device(dev("r", key="rk"))
        yield self.assertFailure(inventory.apply_config([dev("a"), dev("b", key="a")]), ConfigError)
        yield self.assertFailure(inventory.apply_config([dev("a"), dev("a")]), ConfigError)
        self.assertEqual(sorted(d.id for d in inventory.devices()), ["a", "r"])
        self.assertEqual(inventory.directory.by_ssh_fingerprint(ssh_fp("rk")).id, "r")

    @defer.inlineCallbacks
    def test_config_takes_a_runtime_devices_key(self):
        # Approved at runtime, later written into the file under a real name.
        inventory = yield self.open_inventory([dev("a")])
        yield inventory.add_device(dev("ssh-123", key="rk"))
        inventory = yield self.reopen(inventory, [dev("a"), dev("r5", key="rk")])
        self.assertIsNone(inventory.get("ssh-123"))
        self.assertEqual(inventory.directory.by_ssh_fingerprint(ssh_fp("rk")).id, "r5")
        self.assertIn("inventory.device.superseded", self.names())
        inventory = yield self.reopen(inventory, [dev("a")])
        self.assertIsNone(inventory.get("ssh-123"))

    @defer.inlineCallbacks
    def test_removed_device_loses_state(self):
        inventory = yield self.open_inventory([dev("a")])
        yield inventory.set_state("a", "connected")
        yield inventory.apply_config([])
        self.assertEqual(inventory.states(), {})
        inventory = yield self.reopen(inventory, [dev("a")])
        self.assertEqual(inventory.state("a").state, "never-seen")


class OwnershipTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_config_owns_its_ids(self):
        inventory = yield self.open_inventory([dev("a")])
        yield self.assertFailure(inventory.add_device(dev("a", key="other")), ConfigError)
        yield self.assertFailure(inventory.update_device(dev("a", key="other")), ConfigError)
        yield self.assertFailure(inventory.set_enabled("a", False), ConfigError)
        yield self.assertFailure(inventory.remove_device("a"), ConfigError)
        self.assertEqual(inventory.source("a"), "config")

    @defer.inlineCallbacks
    def test_runtime_owns_the_rest_and_survives_restart(self):
        inventory = yield self.open_inventory([dev("a")])
        yield inventory.add_device(dev("r"))
        yield inventory.add_device(dev("gone"))
        yield inventory.remove_device("gone")
        yield inventory.update_device(dev("r", labels={"v": "2"}))
        inventory = yield self.reopen(inventory, [dev("a")])
        self.assertEqual(sorted(d.id for d in inventory.devices()), ["a", "r"])
        self.assertEqual(inventory.get("r").labels, {"v": "2"})
        self.assertEqual(inventory.source("r"), "runtime")
        # Config devices are not stored: they come from the file on each start.
        inventory = yield self.reopen(inventory, [])
        self.assertEqual([d.id for d in inventory.devices()], ["r"])

    @defer.inlineCallbacks
    def test_config_supersedes_a_runtime_twin(self):
        inventory = yield self.open_inventory()
        yield inventory.add_device(dev("x", key="runtime-key"))
        changes = yield inventory.apply_config([dev("x", key="config-key")])
        self.assertEqual(changes.changed, ("x",))
        self.assertEqual(inventory.source("x"), "config")
        self.assertIn("inventory.device.superseded", self.names())
        inventory = yield self.reopen(inventory, [])
        self.assertEqual(inventory.devices(), [])

    @defer.inlineCallbacks
    def test_runtime_identity_conflicts(self):
        inventory = yield self.open_inventory([dev("a")])
        yield self.assertFailure(inventory.add_device(dev("b", key="a")), ConfigError)
        self.assertIsNone(inventory.get("b"))
        yield inventory.add_device(dev("b"))
        yield self.assertFailure(inventory.update_device(dev("b", key="a")), ConfigError)
        self.assertEqual(inventory.get("b").ssh_host_keys, (ssh_fp("b"),))
        yield self.assertFailure(inventory.remove_device("nope"), KeyError)

    @defer.inlineCallbacks
    def test_directory_is_current_after_each_change(self):
        inventory = yield self.open_inventory()
        yield inventory.add_device(dev("r"))
        self.assertEqual(inventory.identify(ssh_identity("r")).action, "accept")
        d = inventory.remove_device("r")
        # Synchronously: the very next handshake no longer finds it.
        self.assertIsNone(inventory.directory.get("r"))
        yield d

    @defer.inlineCallbacks
    def test_failed_commit_is_undone(self):
        inventory = yield self.open_inventory()
        original = inventory.store.save_device
        inventory.store.save_device = lambda device, now: defer.fail(RuntimeError("disk full"))
        yield self.assertFailure(inventory.add_device(dev("r")), RuntimeError)
        self.assertIsNone(inventory.directory.get("r"))
        inventory.store.save_device = original


class ServiceTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_start_ready_stop(self):
        from callhome_mux.inventory.model import DeviceDirectory
        from callhome_mux.inventory.service import InventoryService
        from callhome_mux.inventory.settings import InventorySettings

        directory = DeviceDirectory()
        service = InventoryService(InventorySettings(), self.state_dir, self.bus, directory, [dev("a")], self.clock)
        waiting = service.whenReady()
        service.startService()
        inventory = yield waiting
        self.assertIs(inventory.directory, directory)
        self.assertEqual(directory.get("a").id, "a")
        yield inventory.add_device(dev("r"))
        yield service.stopService()
        service = InventoryService(InventorySettings(), self.state_dir, self.bus, DeviceDirectory(), [], self.clock)
        service.startService()
        inventory = yield service.whenReady()
        self.assertEqual([d.id for d in inventory.devices()], ["r"])
        yield service.stopService()
