"""The database: persistence across a real re-open, migrations, retention."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory import schema
from callhome_mux.inventory.model import Credentials, Device
from callhome_mux.inventory.settings import InventorySettings
from callhome_mux.inventory.store import InventoryStore

from tests.test_inventory_helpers import InventoryTestMixin, ssh_fp, ssh_identity, tls_fp

# Version 1 exactly as it was released, written by hand rather than by the
# code under test: the migration must work on files real servers wrote.
V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
CREATE TABLE devices (id TEXT PRIMARY KEY, data TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE pending (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, fingerprint TEXT NOT NULL,
  subject TEXT, claimed_device_id TEXT, address TEXT, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
  count INTEGER NOT NULL, status TEXT NOT NULL, UNIQUE (kind, fingerprint));
CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
  time REAL NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL);
"""


def write_v1_database(path: str) -> None:
    device = {
        "id": "old-router", "ssh_host_keys": [ssh_fp("old-router")], "tls_fingerprints": [],
        "tls_expected_identity": None, "protocol": None, "labels": {"site": "basement"}, "enabled": True,
        "outbound_ssh_secret": None,
        "credentials": {"username": "admin", "password": "v1-password", "private_key_file": None,
                        "private_key_passphrase": None},
    }
    connection = sqlite3.connect(path)
    connection.executescript(V1_SCHEMA)
    connection.execute("INSERT INTO devices VALUES (?, ?, ?)", ("old-router", json.dumps(device), 5.0))
    connection.execute(
        "INSERT INTO pending VALUES (7, 'ssh-host-key', ?, NULL, 'stranger', '192.0.2.9', 1.0, 2.0, 3, 'denied')",
        (ssh_fp("stranger"),),
    )
    connection.execute("INSERT INTO history (device_id, time, event, data) VALUES ('old-router', 999999.0, 'session.up', '{}')")
    connection.commit()
    connection.close()


class PersistenceTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_everything_survives_reopen(self):
        inventory = yield self.open_inventory(unknown_device_policy="pending")
        yield inventory.add_device(Device("r1", ssh_host_keys=(ssh_fp("r1"),), credentials=Credentials("u", "pw1")))
        yield inventory.add_device(Device("r2", tls_fingerprints=(tls_fp("r2"),), labels={"a": "b"}))
        yield inventory.set_enabled("r2", False)
        decision = inventory.decide_unknown(ssh_identity("stranger", address="192.0.2.1:4334"))
        yield decision.recorded
        denied = inventory.decide_unknown(ssh_identity("evil"))
        yield denied.recorded
        yield inventory.deny(denied.pending_id)
        yield inventory.set_state("r1", "failed", "authentication-failed", address="192.0.2.2:1")
        yield inventory.record_event("r1", "custom.thing", note="hello")

        inventory = yield self.reopen(inventory, unknown_device_policy="pending")
        self.assertEqual(inventory.get("r1").credentials.password, "pw1")
        self.assertFalse(inventory.get("r2").enabled)
        self.assertEqual(inventory.get("r2").labels, {"a": "b"})
        self.assertEqual(inventory.directory.by_ssh_fingerprint(ssh_fp("r1")).id, "r1")
        self.assertEqual(inventory.source("r1"), "runtime")
        self.assertEqual([p.status for p in inventory.pending()], ["pending", "denied"])
        self.assertEqual(inventory.decide_unknown(ssh_identity("evil")).action, "denied")
        state = inventory.state("r1")
        self.assertEqual((state.state, state.reason, state.last_address), ("failed", "authentication-failed", "192.0.2.2:1"))
        history = yield inventory.history("r1")
        self.assertEqual(history[0]["event"], "custom.thing")
        self.assertEqual(history[0]["note"], "hello")

    @defer.inlineCallbacks
    def test_an_unreadable_row_does_not_stop_the_start(self):
        inventory = yield self.open_inventory()
        yield inventory.add_device(Device("good"))
        yield inventory.store._submit(
            lambda c: c.execute("INSERT INTO devices VALUES ('bad', '{\"id\": \"\"}', 0)")
        )
        inventory = yield self.reopen(inventory)
        self.assertEqual([d.id for d in inventory.devices()], ["good"])
        self.assertEqual(self.last("inventory.device.unreadable")["device_id"], "bad")

    @defer.inlineCallbacks
    def test_live_state_becomes_disconnected_after_restart(self):
        inventory = yield self.open_inventory()
        yield inventory.add_device(Device("r1"))
        yield inventory.set_state("r1", "connected", transport="ssh")
        inventory = yield self.reopen(inventory)
        self.assertEqual(inventory.state("r1").state, "disconnected")
        self.assertEqual(inventory.state("r1").reason, "callhome-mux restarted")

    @defer.inlineCallbacks
    def test_database_settings(self):
        inventory = yield self.open_inventory()
        path = inventory.store.path
        self.assertEqual(path, os.path.join(self.state_dir, "inventory.sqlite3"))
        # Credentials live in this file: only the owner may read it.
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o077, 0)
        pragmas = yield inventory.store._pool.runInteraction(
            lambda c: (c.execute("PRAGMA journal_mode").fetchone()[0], c.execute("PRAGMA synchronous").fetchone()[0])
        )
        self.assertEqual(pragmas, ("wal", 2))  # 2 = FULL

    @defer.inlineCallbacks
    def test_close_is_idempotent(self):
        inventory = yield self.open_inventory()
        first, second = inventory.close(), inventory.close()
        yield first
        yield second
        yield inventory.close()

    @defer.inlineCallbacks
    def test_store_refuses_writes_after_close(self):
        store = yield InventoryStore.open(os.path.join(self.mktemp() + "-db", "x.sqlite3"))
        yield store.close()
        yield self.assertFailure(store.delete_device("x"), RuntimeError)


class WriteQueueTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_failing_write_fails_alone(self):
        inventory = yield self.open_inventory()
        store = inventory.store
        first = store.save_device(Device("a"), 1.0)
        bad = store._submit(lambda cursor: cursor.execute("INSERT INTO no_such_table VALUES (1)"))
        last = store.save_device(Device("b"), 1.0)
        yield first
        yield self.assertFailure(bad, sqlite3.OperationalError)
        yield last
        snapshot = yield store.load()
        self.assertEqual([d.id for d in snapshot.devices], ["a", "b"])

    @defer.inlineCallbacks
    def test_reads_see_queued_writes(self):
        inventory = yield self.open_inventory()
        yield inventory.add_device(Device("r1"))
        inventory.record_event("r1", "x")  # not waited for
        history = yield inventory.history("r1")
        self.assertEqual([h["event"] for h in history], ["x"])


class MigrationTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_v1_file_is_migrated(self):
        os.makedirs(self.state_dir)
        path = os.path.join(self.state_dir, "inventory.sqlite3")
        write_v1_database(path)
        inventory = yield self.open_inventory()
        device = inventory.get("old-router")
        self.assertEqual(device.labels, {"site": "basement"})
        self.assertEqual(device.credentials.password, "v1-password")
        self.assertEqual(device.credentials.password_file, None)
        [entry] = inventory.pending()
        self.assertEqual((entry.id, entry.status, entry.count, entry.verified), (7, "denied", 3, True))
        self.assertEqual(inventory.decide_unknown(ssh_identity("stranger")).action, "denied")
        history = yield inventory.history("old-router")
        self.assertEqual([h["event"] for h in history], ["session.up"])
        # New in version 2: state is stored.
        yield inventory.set_state("old-router", "connected", transport="ssh")
        yield inventory.close()
        self._open.clear()

        connection = sqlite3.connect(path)
        self.assertEqual(schema.schema_version(connection), schema.CURRENT_VERSION)
        indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        self.assertIn("history_by_device", indexes)
        self.assertEqual(connection.execute("SELECT state FROM device_state").fetchall(), [("connected",)])
        connection.close()

    def test_every_version_migrates_stepwise(self):
        path = self.mktemp()
        connection = sqlite3.connect(path)
        for target in range(1, schema.CURRENT_VERSION + 1):
            self.assertEqual(schema.migrate(connection, target), (target - 1, target))
        self.assertEqual(schema.migrate(connection), (schema.CURRENT_VERSION, schema.CURRENT_VERSION))
        connection.close()

    def test_newer_database_is_refused(self):
        path = self.mktemp()
        connection = sqlite3.connect(path)
        schema.migrate(connection)
        connection.execute("UPDATE schema_version SET version = 99")
        connection.commit()
        self.assertRaises(schema.SchemaError, schema.migrate, connection)
        connection.close()

    def test_failed_migration_leaves_previous_version(self):
        path = self.mktemp()
        connection = sqlite3.connect(path)
        schema.migrate(connection, 1)
        # Sabotage: version 2 creates this table, so the migration fails midway.
        connection.execute("CREATE TABLE device_state (x)")
        connection.commit()
        self.assertRaises(sqlite3.OperationalError, schema.migrate, connection)
        self.assertEqual(schema.schema_version(connection), 1)
        indexes = connection.execute("SELECT name FROM sqlite_master WHERE name = 'history_by_device'").fetchall()
        self.assertEqual(indexes, [])
        connection.close()


class RetentionTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_count_retention(self):
        inventory = yield self.open_inventory(history_max_events=5)
        yield inventory.add_device(Device("r1"))
        yield inventory.add_device(Device("r2"))
        yield defer.gatherResults([inventory.record_event("r1", "e", n=n) for n in range(12)])
        yield inventory.record_event("r2", "e", n=0)
        history = yield inventory.history("r1", limit=100)
        self.assertEqual([h["n"] for h in history], [11, 10, 9, 8, 7])
        self.assertEqual(len((yield inventory.history("r2"))), 1)

    @defer.inlineCallbacks
    def test_age_retention(self):
        inventory = yield self.open_inventory(history_max_age_days=1.0, prune_interval=30 * 86400.0)
        yield inventory.add_device(Device("r1"))
        yield inventory.record_event("r1", "old")
        self.clock.advance(12 * 3600)
        yield inventory.record_event("r1", "newer")
        self.clock.advance(13 * 3600)
        removed = yield inventory.prune()
        self.assertEqual(removed, 1)
        self.assertEqual([h["event"] for h in (yield inventory.history("r1"))], ["newer"])

    @defer.inlineCallbacks
    def test_periodic_prune_runs_on_the_clock(self):
        inventory = yield self.open_inventory(history_max_age_days=1.0, prune_interval=600.0)
        yield inventory.add_device(Device("r1"))
        yield inventory.record_event("r1", "old")
        self.clock.advance(86400 + 600)  # the LoopingCall fires: a prune is queued
        yield inventory.flush()
        self.assertEqual((yield inventory.store.count_history()), 0)


class JSONEncodingTests(unittest.TestCase):
    VALUES = [
        {},
        {"b": 1, "a": [1.5, None, True, False, "x\u00e9\n\"", {"z": {}, "y": []}], "c": float("inf")},
        {"nan": float("nan"), "big": 10 ** 30, "neg": -0.0, "obj": complex(1, 2)},
        {2: "int keys", 1: None},
        ["top", "level", "list"],
        "a string",
    ]

    def test_same_text_as_json_dumps(self):
        # Capability lists and version-2 details are written with an
        # encoder made once; the text must be what json.dumps(sort_keys,
        # default=str) gives.
        from callhome_mux.inventory.store import _encode, details_json

        for value in self.VALUES:
            self.assertEqual(_encode(value), json.dumps(value, sort_keys=True, default=str))
        details = {"peer": "p", "capabilities": ["urn:b", "urn:a"], "algorithms": {"mac": "m", "cipher": "c"}}
        self.assertEqual(details_json(details), json.dumps(details, sort_keys=True, default=str))

    def test_rows_keep_the_order_of_their_keys(self):
        # History rows and state details: json.dumps(default=str), keys not sorted.
        from callhome_mux.inventory.store import _encode_row

        for value in self.VALUES:
            self.assertEqual(_encode_row(value), json.dumps(value, default=str))
        self.assertEqual(_encode_row({"b": 1, "a": {"d": 2, "c": 3}}), '{"b": 1, "a": {"d": 2, "c": 3}}')


class RowTextTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_history_and_state_rows_keep_key_order_and_read_back_equal(self):
        inventory = yield self.open_inventory()
        store = inventory.store
        yield store.append_history("r1", 5.0, "e", {"zeta": 1, "alpha": [2, {"y": 1, "x": 2}]})
        [(data,)] = self.rows("SELECT data FROM history")
        self.assertEqual(data, '{"zeta": 1, "alpha": [2, {"y": 1, "x": 2}]}')
        [entry] = yield store.history("r1")
        self.assertEqual(entry, {"zeta": 1, "alpha": [2, {"y": 1, "x": 2}], "time": 5.0, "event": "e"})
        from callhome_mux.inventory.state import DeviceState

        details = {"peer": "p", "algorithms": {"mac": "m", "cipher": "c"}, "capabilities": ["urn:b", "urn:a"]}
        yield store.save_state(DeviceState("r1", "connected", since=1.0, last_seen=1.0, details=details))
        [(text,)] = self.rows("SELECT details FROM device_state")
        self.assertEqual(text, '{"peer": "p", "algorithms": {"mac": "m", "cipher": "c"}}')
        snapshot = yield store.load()
        self.assertEqual(snapshot.states["r1"].details, details)
