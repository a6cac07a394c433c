"""
Schema version 3: capability lists stored once and named by the state
rows, history without AUTOINCREMENT; the migration from a real version 2
file, and the collection of unused capability sets.
"""

from __future__ import annotations

import json
import os
import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory import schema
from callhome_mux.inventory.model import Device
from callhome_mux.inventory.state import DeviceState
from callhome_mux.inventory.store import InventoryStore

from tests.test_inventory_helpers import InventoryTestMixin, ssh_fp

MODEL_A = [f"urn:example:model-a:{n}?module=m{n}&revision=2024-01-{n % 28 + 1:02d}" for n in range(71)]
MODEL_B = ["urn:ietf:params:netconf:base:1.1", "urn:example:\u00e9t\u00e9", "urn:example:b"]

# Version 2 state rows as the version 2 code wrote them (sorted keys,
# json.dumps(sort_keys=True, default=str)).
V2_STATES = [
    ("r1", "connected", None, 10.0, 11.0, "192.0.2.1:830", "netconf-ssh",
     {"peer": "192.0.2.1:830", "algorithms": {"kex": "curve25519-sha256"}, "capabilities": MODEL_A,
      "session_id": 4, "capability_count": 71}),
    ("r2", "disconnected", "gone", 12.0, 13.0, "192.0.2.2:830", "netconf-ssh",
     {"capabilities": MODEL_A, "zzz": [1, 2], "aaa": None}),
    ("r3", "failed", "timeout", 14.0, 15.0, None, None, {"capabilities": MODEL_B}),
    ("r4", "never-seen", None, None, None, None, None, {}),
    ("r5", "connected", None, 16.0, 17.0, "h:1", "restconf", {"capabilities": "not a list", "yang": {"m": 1}}),
    ("r6", "connected", None, 18.0, 19.0, "h:2", "netconf-tls", {"capabilities": []}),
]


def write_v2_database(path: str, unreadable: bool = False) -> None:
    connection = sqlite3.connect(path)
    schema.migrate(connection, 2)
    for row in V2_STATES:
        connection.execute(
            "INSERT INTO device_state (device_id, state, reason, since, last_seen, last_address, transport, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row[:7] + (json.dumps(row[7], sort_keys=True, default=str),),
        )
    if unreadable:
        # Neither version can load this; the migration leaves it as it is.
        connection.execute("INSERT INTO device_state (device_id, state, details) VALUES ('bad', 'connected', '{oops')")
    for n in range(6):
        device_id = "r1" if n % 2 else "r2"
        connection.execute(
            "INSERT INTO history (device_id, time, event, data) VALUES (?, ?, ?, ?)",
            (device_id, 100.0 + n, f"e{n}", json.dumps({"n": n, "peer": "p"}, sort_keys=True)),
        )
    # Rows deleted by the count retention: AUTOINCREMENT kept their ids out of use.
    connection.execute("DELETE FROM history WHERE id <= 2")
    connection.commit()
    connection.close()


def version_2_reading(path: str):
    """What the version 2 code read from the file: states and history, before the migration."""
    connection = sqlite3.connect(path)
    try:
        states = {}
        for row in connection.execute(
            "SELECT device_id, state, reason, since, last_seen, last_address, transport, details FROM device_state"
        ):
            states[row[0]] = DeviceState(*row[:7], json.loads(row[7]))
        history = {}
        for device_id in ("r1", "r2"):
            history[device_id] = [
                dict(json.loads(data), time=time, event=event)
                for time, event, data in connection.execute(
                    "SELECT time, event, data FROM history WHERE device_id = ? ORDER BY id DESC", (device_id,)
                )
            ]
        return states, history
    finally:
        connection.close()


class MigrationToV3Tests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        write_v2_database(self.path)

    def rows(self, query, *args):
        connection = sqlite3.connect(self.path)
        try:
            return connection.execute(query, args).fetchall()
        finally:
            connection.close()

    @defer.inlineCallbacks
    def open_store(self):
        store = yield InventoryStore.open(self.path)
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def test_states_details_and_history_read_back_identical(self):
        states, history = version_2_reading(self.path)
        store = yield self.open_store()
        snapshot = yield store.load()
        for device_id, expected in states.items():
            got = snapshot.states[device_id]
            self.assertEqual(got, expected)
            # The same key order too (what the API would show first).
            self.assertEqual(list(got.details), list(expected.details))
        for device_id, expected in history.items():
            self.assertEqual((yield store.history(device_id)), expected)
        self.assertEqual(self.rows("SELECT version FROM schema_version"), [(schema.CURRENT_VERSION,)])

    def test_each_distinct_list_is_stored_once_and_named_by_the_states(self):
        os.remove(self.path)
        write_v2_database(self.path, unreadable=True)
        connection = sqlite3.connect(self.path)
        self.assertEqual(schema.migrate(connection, 3), (2, 3))
        connection.close()
        sets = dict(self.rows("SELECT digest, capabilities FROM capability_sets"))
        self.assertEqual(sorted(json.loads(text) for text in sets.values()), sorted([MODEL_A, MODEL_B, []]))
        named = dict(self.rows("SELECT device_id, capability_set FROM device_state"))
        self.assertEqual(named["r1"], named["r2"])
        self.assertEqual(json.loads(sets[named["r1"]]), MODEL_A)
        self.assertEqual(json.loads(sets[named["r3"]]), MODEL_B)
        self.assertEqual((named["r4"], named["r5"], named["bad"]), (None, None, None))
        details = dict(self.rows("SELECT device_id, details FROM device_state"))
        self.assertNotIn("capabilities", json.loads(details["r1"]))
        self.assertEqual(json.loads(details["r5"])["capabilities"], "not a list")
        self.assertEqual(details["bad"], "{oops")

    @defer.inlineCallbacks
    def test_history_keeps_its_ids_and_loses_autoincrement(self):
        ids_before = self.rows("SELECT id FROM history ORDER BY id")
        store = yield self.open_store()
        self.assertEqual(self.rows("SELECT id FROM history ORDER BY id"), ids_before)
        [(sql,)] = self.rows("SELECT sql FROM sqlite_master WHERE name = 'history'")
        self.assertNotIn("AUTOINCREMENT", sql.upper())
        self.assertEqual(self.rows("SELECT count(*) FROM sqlite_sequence WHERE name = 'history'"), [(0,)])
        indexes = {name for (name,) in self.rows("SELECT name FROM sqlite_master WHERE tbl_name = 'history'"
                                                 " AND type = 'index'")}
        self.assertEqual(indexes, {"history_by_device", "history_by_time"})
        # New rows come after the old ones, newest first as before.
        yield store.append_history("r1", 200.0, "new", {})
        self.assertEqual([h["event"] for h in (yield store.history("r1"))], ["new", "e5", "e3"])


class CapabilitySetTests(InventoryTestMixin, unittest.TestCase):
    def sets(self):
        return sorted(json.loads(text) for (text,) in self.rows("SELECT capabilities FROM capability_sets"))

    @defer.inlineCallbacks
    def test_states_of_one_model_share_one_stored_list(self):
        devices = [Device(f"r{n}", ssh_host_keys=(ssh_fp(f"r{n}"),)) for n in range(3)]
        inventory = yield self.open_inventory(devices)
        for device in devices:
            yield inventory.set_state(device.id, "connected", details={"capabilities": tuple(MODEL_A), "n": 1})
        self.assertEqual(self.sets(), [MODEL_A])
        for (text,) in self.rows("SELECT details FROM device_state"):
            self.assertEqual(json.loads(text), {"n": 1})
        inventory = yield self.reopen(inventory, devices)
        self.assertEqual(inventory.state("r2").details, {"capabilities": MODEL_A, "n": 1})

    @defer.inlineCallbacks
    def test_unused_sets_are_collected_with_the_prune(self):
        r1, r2 = Device("r1", ssh_host_keys=(ssh_fp("r1"),)), Device("r2", ssh_host_keys=(ssh_fp("r2"),))
        inventory = yield self.open_inventory([r1, r2], prune_interval=600.0)
        yield inventory.set_state("r1", "connected", details={"capabilities": list(MODEL_A)})
        yield inventory.set_state("r2", "connected", details={"capabilities": list(MODEL_B)})
        # r2 now reports another list: MODEL_B is named by nobody.
        yield inventory.set_state("r2", "disconnected")
        yield inventory.set_state("r2", "connected", details={"capabilities": ["urn:c"]})
        self.assertEqual(self.sets(), sorted([MODEL_A, MODEL_B, ["urn:c"]]))
        self.clock.advance(600)  # the periodic prune
        yield inventory.flush()
        self.assertEqual(self.sets(), sorted([MODEL_A, ["urn:c"]]))
        # A list collected and then reported again is stored again.
        yield inventory.set_state("r1", "disconnected")
        yield inventory.set_state("r1", "connected", details={"capabilities": list(MODEL_B)})
        self.assertEqual((yield inventory.store.collect_capability_sets()), 1)  # MODEL_A
        yield inventory.set_state("r2", "disconnected")
        yield inventory.set_state("r2", "connected", details={"capabilities": list(MODEL_A)})
        self.assertEqual(self.sets(), sorted([MODEL_A, MODEL_B, ["urn:c"]]))  # ["urn:c"]: until the next prune
        inventory = yield self.reopen(inventory, [r1, r2])
        self.assertEqual(inventory.state("r1").details["capabilities"], MODEL_B)
        self.assertEqual(inventory.state("r2").details["capabilities"], MODEL_A)

    @defer.inlineCallbacks
    def test_removed_devices_sets_are_collected(self):
        inventory = yield self.open_inventory()
        yield inventory.add_device(Device("r1", ssh_host_keys=(ssh_fp("r1"),)))
        yield inventory.set_state("r1", "connected", details={"capabilities": list(MODEL_A)})
        yield inventory.remove_device("r1")
        yield inventory.prune()
        yield inventory.flush()
        self.assertEqual(self.sets(), [])

    @defer.inlineCallbacks
    def test_a_set_rolled_back_with_a_failed_batch_is_written_again(self):
        r1 = Device("r1", ssh_host_keys=(ssh_fp("r1"),))
        inventory = yield self.open_inventory([r1])
        store = inventory.store
        # The batch fails after the set's INSERT: both are rolled back.
        yield store._pool.runInteraction(lambda c: c.execute("ALTER TABLE device_state RENAME TO gone"))
        yield inventory.set_state("r1", "connected", details={"capabilities": list(MODEL_A)}).addErrback(
            lambda _: None
        )
        self.flushLoggedErrors(sqlite3.OperationalError)
        self.assertEqual(self.sets(), [])
        yield store._pool.runInteraction(lambda c: c.execute("ALTER TABLE gone RENAME TO device_state"))
        yield inventory.set_state("r1", "disconnected")
        yield inventory.set_state("r1", "connected", details={"capabilities": list(MODEL_A)})
        self.assertEqual(self.sets(), [MODEL_A])
        inventory = yield self.reopen(inventory, [r1])
        self.assertEqual(inventory.state("r1").details, {"capabilities": MODEL_A})
