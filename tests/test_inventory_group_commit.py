"""
Group commit of what events report: state and history rows wait up to
C{state_write_delay} and are written together; explicit writes and flushes
do not wait.
"""

from __future__ import annotations

import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory import state as states
from callhome_mux.inventory.model import Device
from callhome_mux.sessions import SessionRegistry

from tests.test_inventory_helpers import FakeSession, InventoryTestMixin, ssh_fp

R1 = Device("r1", ssh_host_keys=(ssh_fp("r1"),))
R2 = Device("r2", ssh_host_keys=(ssh_fp("r2"),))



class GroupCommitTests(InventoryTestMixin, unittest.TestCase):
    def count_transactions(self, store):
        """Wrap the pool so that each batch (one transaction) is counted; returns the list of their Deferreds."""
        batches = []
        original = store._pool.runInteraction

        def counted(*args, **kwargs):
            d = original(*args, **kwargs)
            batches.append(d)
            return d

        store._pool.runInteraction = counted
        return batches

    @defer.inlineCallbacks
    def test_event_rows_wait_for_the_delay_and_go_in_one_transaction(self):
        inventory = yield self.open_inventory([R1, R2], state_write_delay=0.5)
        yield inventory.flush()
        batches = self.count_transactions(inventory.store)
        for device_id, port in (("r1", 1), ("r2", 2)):
            peer = f"192.0.2.1:{port}"
            self.bus.emit("ssh.hostkey.accepted", device_id=device_id, peer=peer, fingerprint=ssh_fp(device_id))
            self.bus.emit("ssh.auth.succeeded", device_id=device_id, peer=peer)
            self.bus.emit("session.up", device_id=device_id, transport="netconf-ssh", peer=peer)
        # In memory at once; nothing written yet.
        self.assertEqual(inventory.state("r1").state, states.CONNECTED)
        self.assertEqual(batches, [])
        self.clock.advance(0.4)
        self.assertEqual(batches, [])
        self.clock.advance(0.1)
        self.assertEqual(len(batches), 1)
        yield batches[0]
        self.assertEqual(self.rows("SELECT count(*) FROM history")[0][0], 6)
        self.assertEqual(
            sorted(self.rows("SELECT device_id, state FROM device_state")), [("r1", "connected"), ("r2", "connected")]
        )

    @defer.inlineCallbacks
    def test_flush_and_reads_do_not_wait_for_the_delay(self):
        inventory = yield self.open_inventory([R1], state_write_delay=60.0)
        self.bus.emit("ssh.hostkey.accepted", device_id="r1", peer="192.0.2.1:1", fingerprint=ssh_fp("r1"))
        history = yield inventory.history("r1")
        self.assertEqual([h["event"] for h in history], ["ssh.hostkey.accepted"])
        self.bus.emit("session.up", device_id="r1", transport="netconf-ssh", peer="192.0.2.1:1")
        yield inventory.flush()
        self.assertEqual(self.rows("SELECT state FROM device_state"), [("connected",)])

    @defer.inlineCallbacks
    def test_explicit_writes_fire_after_their_commit(self):
        inventory = yield self.open_inventory([R1], state_write_delay=60.0)
        yield inventory.record_event("r1", "custom.thing", n=1)
        yield inventory.set_state("r1", states.CONNECTED, transport="ssh")
        # No clock advance: both are on disk already.
        self.assertEqual(self.rows("SELECT event FROM history"), [("custom.thing",)])
        self.assertEqual(self.rows("SELECT state FROM device_state"), [("connected",)])

    @defer.inlineCallbacks
    def test_close_writes_what_is_buffered(self):
        inventory = yield self.open_inventory([R1], state_write_delay=60.0)
        self.bus.emit("session.up", device_id="r1", transport="netconf-ssh", peer="192.0.2.1:1")
        inventory = yield self.reopen(inventory, [R1])
        history = yield inventory.history("r1")
        self.assertEqual([h["event"] for h in history], ["session.up"])
        # Restored as disconnected: the session did not survive the restart.
        self.assertEqual(inventory.state("r1").reason, "callhome-mux restarted")

    @defer.inlineCallbacks
    def test_count_retention_trims_in_steps_and_history_never_shows_more(self):
        inventory = yield self.open_inventory([R1], history_max_events=20, state_write_delay=0.5)
        for n in range(57):
            self.bus.emit("session.replaced", device_id="r1", n=n, old_peer="a", new_peer="b")
        yield inventory.flush()
        history = yield inventory.history("r1", limit=1000)
        self.assertEqual([h["n"] for h in history], list(range(56, 36, -1)))
        stored = self.rows("SELECT count(*) FROM history WHERE device_id = 'r1'")[0][0]
        # Trimmed every 20 // 10 = 2 rows: at most one step over the limit.
        self.assertGreaterEqual(stored, 20)
        self.assertLessEqual(stored, 22)

    @defer.inlineCallbacks
    def test_a_failed_buffered_write_is_reported(self):
        inventory = yield self.open_inventory([R1], state_write_delay=0.5)
        yield inventory.store._pool.runInteraction(lambda c: c.execute("DROP TABLE history"))
        self.bus.emit("session.up", device_id="r1", transport="netconf-ssh", peer="192.0.2.1:1")
        yield inventory.flush()
        failed = self.last("inventory.store.failed")
        self.assertIsNotNone(failed)
        self.assertIn("no such table: history", failed["reason"])
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)

    @defer.inlineCallbacks
    def test_sessions_with_the_same_capabilities_share_them_in_the_state(self):
        inventory = yield self.open_inventory([R1, R2], state_write_delay=0.5)
        registry = SessionRegistry(self.bus)
        inventory.watch_sessions(registry)
        capabilities = tuple(f"urn:example:capability:{n}" for n in range(20))
        for device_id in ("r1", "r2"):
            registry.register(FakeSession(device_id, {"transport": "netconf-ssh", "peer": f"{device_id}:1",
                                                      "capabilities": capabilities, "session_id": 7}))
        first, second = inventory.state("r1").details, inventory.state("r2").details
        self.assertEqual(first["capabilities"], list(capabilities))
        self.assertIs(first["capabilities"], second["capabilities"])
        inventory = yield self.reopen(inventory, [R1, R2])
        self.assertEqual(inventory.state("r2").details["capabilities"], list(capabilities))
        self.assertEqual(inventory.state("r2").details["session_id"], 7)

    @defer.inlineCallbacks
    def test_a_batch_of_many_rows_is_written_whole_and_in_order(self):
        # More rows than one multi-row statement holds, and a remainder:
        # 75 states (2 full statements + 11) and 225 history rows (7 + 1).
        devices = [Device(f"d{n:02d}", ssh_host_keys=(ssh_fp(f"d{n:02d}"),)) for n in range(75)]
        inventory = yield self.open_inventory(devices, state_write_delay=0.5)
        yield inventory.flush()
        batches = self.count_transactions(inventory.store)
        emitted = []
        for n, device in enumerate(devices):
            peer = f"192.0.2.1:{1000 + n}"
            for name, extra in (("ssh.hostkey.accepted", {"fingerprint": ssh_fp(device.id)}),
                                ("ssh.auth.succeeded", {}), ("session.up", {"transport": "netconf-ssh"})):
                self.bus.emit(name, device_id=device.id, peer=peer, **extra)
                emitted.append((device.id, name))
        self.clock.advance(0.5)
        self.assertEqual(len(batches), 1)
        yield batches[0]
        self.assertEqual(self.rows("SELECT device_id, event FROM history ORDER BY id"), emitted)
        self.assertEqual(
            sorted(self.rows("SELECT device_id, state, last_address, transport FROM device_state")),
            [(d.id, "connected", f"192.0.2.1:{1000 + n}", "netconf-ssh") for n, d in enumerate(devices)],
        )
        reopened = yield self.reopen(inventory, devices, state_write_delay=0.5)
        self.assertEqual(reopened.state("d74").last_address, "192.0.2.1:1074")

    @defer.inlineCallbacks
    def test_text_columns_keep_none_and_text_apart(self):
        # None is bound as 0 and made NULL again in SQL (store._NULLABLE):
        # a text "0" must stay text, and None must come back as None.
        inventory = yield self.open_inventory([R1, R2])
        store = inventory.store
        yield store.save_state(states.DeviceState("r1", states.DISCONNECTED, reason="0", since=1.0, last_seen=2.0,
                                                  last_address="0", transport="0", details={}))
        yield store.save_state(states.DeviceState("r2", states.DISCONNECTED, since=1.0, last_seen=2.0, details={}))
        self.assertEqual(
            sorted(self.rows("SELECT device_id, reason, last_address, transport, capability_set FROM device_state")),
            [("r1", "0", "0", "0", None), ("r2", None, None, None, None)],
        )
        snapshot = yield store.load()
        self.assertEqual((snapshot.states["r1"].reason, snapshot.states["r1"].transport), ("0", "0"))
        self.assertEqual((snapshot.states["r2"].reason, snapshot.states["r2"].last_address), (None, None))
