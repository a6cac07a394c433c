"""
Review of 1d31e57: a failure in the middle of the 2 -> 3 migration (here:
inside its function step, after capability sets were inserted and state
rows rewritten, or in the history copy after it) leaves the file exactly
at version 2, and the next start migrates it completely.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, task
from twisted.trial import unittest

from callhome_mux.inventory import schema
from callhome_mux.inventory.state import DeviceState
from callhome_mux.inventory.store import InventoryStore
from tests.test_inventory_schema_v3 import MODEL_A, MODEL_B, version_2_reading, write_v2_database


class MigrationCrashTests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        write_v2_database(self.path)
        self.before = version_2_reading(self.path)
        self.original = schema.MIGRATIONS

    def tables(self, connection):
        return sorted(name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))

    def migrate_failing_at(self, index):
        steps = list(schema.MIGRATIONS[2])

        def boom(connection):
            raise RuntimeError("crash")

        steps.insert(index, boom)
        self.patch(schema, "MIGRATIONS", schema.MIGRATIONS[:2] + [tuple(steps)])
        connection = sqlite3.connect(self.path)
        try:
            tables = self.tables(connection)
            self.assertRaises(RuntimeError, schema.migrate, connection)
        finally:
            connection.close()
        return tables

    def assertStillVersion2(self, tables):
        connection = sqlite3.connect(self.path)
        try:
            self.assertEqual(schema.schema_version(connection), 2)
            self.assertEqual(self.tables(connection), tables)
            columns = [row[1] for row in connection.execute("PRAGMA table_info(device_state)")]
            self.assertNotIn("capability_set", columns)
        finally:
            connection.close()
        self.assertEqual(version_2_reading(self.path), self.before)

    def test_failure_after_the_function_step(self):
        function_at = next(i for i, step in enumerate(schema.MIGRATIONS[2]) if callable(step))
        self.assertStillVersion2(self.migrate_failing_at(function_at + 1))

    def test_failure_after_the_history_is_dropped(self):
        drop_at = schema.MIGRATIONS[2].index("DROP TABLE history")
        self.assertStillVersion2(self.migrate_failing_at(drop_at + 1))

    def test_next_start_migrates_completely(self):
        self.assertStillVersion2(self.migrate_failing_at(len(schema.MIGRATIONS[2])))
        self.patch(schema, "MIGRATIONS", self.original)  # the release's migrations, on the next start
        connection = sqlite3.connect(self.path)
        try:
            self.assertEqual(schema.migrate(connection), (2, schema.CURRENT_VERSION))
            sets = connection.execute("SELECT count(*) FROM capability_sets").fetchone()[0]
            self.assertEqual(sets, 3)  # MODEL_A, MODEL_B and the empty list
        finally:
            connection.close()


class CollectionAgainstBufferedRowsTests(unittest.TestCase):
    """
    A capability set written before (so the store skips its INSERT) that no
    stored state names any more is collected; a state naming it that was
    buffered meanwhile and is written after the collection must bring it
    back, or the state would name a set that is not there (its capability
    list lost at the next start).
    """

    @defer.inlineCallbacks
    def test_state_buffered_during_a_collection_brings_its_set_back(self):
        clock = task.Clock()
        path = os.path.abspath(self.mktemp())
        store = yield InventoryStore.open(path, clock=clock, write_behind=5.0)
        self.addCleanup(lambda: None if store._closed else store.close())
        a, b = list(MODEL_A), list(MODEL_B)
        yield store.save_state(DeviceState("r1", "connected", details={"capabilities": a}))
        yield store.save_state(DeviceState("r1", "connected", details={"capabilities": b}))
        # MODEL_A: written (the store knows it), named by nobody now.
        collecting = store.collect_capability_sets()
        # While the collection runs, r2 reports MODEL_A (the same list
        # object, as devices of one model share it): buffered, not written.
        store.buffer_state(DeviceState("r2", "connected", details={"capabilities": a}))
        self.assertEqual((yield collecting), 1)
        clock.advance(5.0)
        yield store.flush()
        yield store.close()
        reopened = yield InventoryStore.open(path)
        self.addCleanup(reopened.close)
        snapshot = yield reopened.load()
        self.assertEqual(snapshot.states["r2"].details, {"capabilities": MODEL_A})
        self.assertEqual(snapshot.states["r1"].details, {"capabilities": MODEL_B})
