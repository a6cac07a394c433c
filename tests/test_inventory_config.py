"""Devices and settings from the configuration file."""

from __future__ import annotations

import os

from twisted.trial import unittest

from callhome_mux.inventory.config import device_from_table, devices_from_tables
from callhome_mux.inventory.settings import InventorySettings
from callhome_mux.settings import ConfigError, from_table

from tests.test_inventory_helpers import ssh_fp, tls_fp


class DeviceFromTableTests(unittest.TestCase):
    def test_full_table(self):
        device = device_from_table(
            {
                "id": "r1",
                "ssh-host-keys": [ssh_fp("r1")],
                "tls-fingerprints": [tls_fp("r1").upper()],
                "protocol": "netconf-ssh",
                "labels": {"site": "lab"},
                "enabled": False,
                "credentials": {"username": "admin", "password": "hunter2"},
            },
            0,
        )
        self.assertEqual(device.id, "r1")
        self.assertEqual(device.tls_fingerprints, (tls_fp("r1"),))
        self.assertEqual(device.credentials.username, "admin")
        self.assertEqual(device.credentials.password, "hunter2")
        self.assertFalse(device.enabled)
        self.assertNotIn("hunter2", repr(device))

    def test_password_file(self):
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write("s3cret-from-file\n")
        device = device_from_table({"id": "r1", "credentials": {"password_file": path}}, 0)
        self.assertEqual(device.credentials.password, "s3cret-from-file")
        self.assertEqual(device.credentials.password_file, path)
        self.assertNotIn("s3cret", repr(device))
        self.assertNotIn("s3cret", repr(device.credentials.describe()))

    def test_missing_password_file_names_key(self):
        with self.assertRaises(ConfigError) as caught:
            device_from_table({"id": "r1", "credentials": {"password_file": "/nonexistent/pw"}}, 3)
        self.assertEqual(caught.exception.key, "devices[3].credentials.password_file")

    def test_private_key_file(self):
        path = self.mktemp()
        open(path, "w").close()
        device = device_from_table({"id": "r1", "credentials": {"private_key_file": path}}, 0)
        self.assertEqual(device.credentials.private_key_file, path)
        with self.assertRaises(ConfigError) as caught:
            device_from_table({"id": "r1", "credentials": {"private_key_file": path + ".missing"}}, 1)
        self.assertEqual(caught.exception.key, "devices[1].credentials.private_key_file")

    def test_wrong_password_type_is_named_not_echoed(self):
        with self.assertRaises(ConfigError) as caught:
            device_from_table({"id": "r1", "credentials": {"password": 123456}}, 2)
        self.assertEqual(caught.exception.key, "devices[2].credentials.password")
        self.assertNotIn("123456", str(caught.exception))

    def test_password_and_file_conflict(self):
        with self.assertRaises(ConfigError):
            device_from_table({"id": "r1", "credentials": {"password": "a", "password_file": "b"}}, 0)

    def test_unknown_keys(self):
        with self.assertRaises(ConfigError) as caught:
            device_from_table({"id": "r1", "colour": "red"}, 1)
        self.assertEqual(caught.exception.key, "devices[1].colour")
        with self.assertRaises(ConfigError) as caught:
            device_from_table({"id": "r1", "credentials": {"pasword": "x"}}, 1)
        self.assertEqual(caught.exception.key, "devices[1].credentials.pasword")

    def test_bad_values_name_the_key(self):
        cases = [
            ({"id": "r1", "protocol": "telnet"}, "devices[0].protocol"),
            ({"id": ""}, "devices[0].id"),
            ({"id": "r1", "tls_fingerprints": ["nothex"]}, "devices[0].tls_fingerprints[0]"),
            ({"id": "r1", "ssh_host_keys": [ssh_fp("a"), "garbage"]}, "devices[0].ssh_host_keys[1]"),
            ({"id": "r1", "labels": {"a": 1}}, "devices[0].labels.a"),
            ({"id": "r1", "enabled": "yes"}, "devices[0].enabled"),
        ]
        for table, key in cases:
            with self.assertRaises(ConfigError, msg=key) as caught:
                device_from_table(table, 0)
            self.assertEqual(caught.exception.key, key)

    def test_duplicates(self):
        with self.assertRaises(ConfigError) as caught:
            devices_from_tables([{"id": "a"}, {"id": "a"}])
        self.assertEqual(caught.exception.key, "devices[1].id")
        with self.assertRaises(ConfigError):
            devices_from_tables([{"id": "a", "ssh_host_keys": [ssh_fp("k")]}, {"id": "b", "ssh_host_keys": [ssh_fp("k")]}])

    def test_outbound_ssh_secret_file(self):
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write("hmac-key")
        device = device_from_table({"id": "r1", "outbound_ssh_secret_file": path}, 0)
        self.assertEqual(device.outbound_ssh_secret, "hmac-key")
        self.assertNotIn("hmac-key", repr(device))


class InventorySettingsTests(unittest.TestCase):
    def test_defaults(self):
        settings = from_table(InventorySettings, None, "inventory")
        self.assertEqual(settings.unknown_device_policy, "reject")
        self.assertEqual(settings.database, "inventory.sqlite3")

    def test_policy(self):
        self.assertEqual(from_table(InventorySettings, {"unknown-device-policy": "pending"}, "inventory").unknown_device_policy, "pending")
        with self.assertRaises(ConfigError) as caught:
            from_table(InventorySettings, {"unknown-device-policy": "accept"}, "inventory")
        self.assertEqual(caught.exception.key, "inventory.unknown_device_policy")

    def test_delays(self):
        with self.assertRaises(ConfigError) as caught:
            from_table(InventorySettings, {"throttle_base_delay": 10.0, "throttle_max_delay": 1.0}, "inventory")
        self.assertEqual(caught.exception.key, "inventory.throttle_max_delay")
        with self.assertRaises(ConfigError):
            from_table(InventorySettings, {"history_max_events": 0}, "inventory")


class WholeDocumentTests(unittest.TestCase):
    def test_inventory_from_config(self):
        import tomllib

        from callhome_mux.inventory.config import inventory_from_config

        document = tomllib.loads(
            """
            [inventory]
            unknown-device-policy = "pending"
            history-max-events = 50

            [[devices]]
            id = "r1"
            credentials = { username = "admin", password = "x" }

            [[devices]]
            id = "r2"
            protocol = "restconf"
            """
        )
        settings, devices = inventory_from_config(document)
        self.assertEqual((settings.unknown_device_policy, settings.history_max_events), ("pending", 50))
        self.assertEqual([d.id for d in devices], ["r1", "r2"])
        with self.assertRaises(ConfigError) as caught:
            inventory_from_config(tomllib.loads('[[devices]]\nid = "a"\n[[devices]]\nid = "b"\nprotocol = "x"\n'))
        self.assertEqual(caught.exception.key, "devices[1].protocol")
