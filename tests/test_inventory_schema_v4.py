"""
Schema version 4: negotiated algorithms stored once and named by the state
rows; the migration from a real version 3 file, and the collection of
unused algorithm sets.
"""

from __future__ import annotations

import json
import os
import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.frozen import FrozenDict
from callhome_mux.inventory import schema
from callhome_mux.inventory.detail_sets import digest
from callhome_mux.inventory.inventory import _plain
from callhome_mux.inventory.model import Device
from callhome_mux.inventory.state import DeviceState
from callhome_mux.inventory.store import InventoryStore

from tests.test_inventory_helpers import InventoryTestMixin, ssh_fp

CAPABILITIES = [f"urn:example:model:{n}" for n in range(20)]
FLEET = FrozenDict(kex="curve25519-sha256", host_key="ssh-ed25519", cipher_out="aes256-ctr", cipher_in="aes256-ctr",
                   mac_out="hmac-sha2-256", mac_in="hmac-sha2-256", server_version="SSH-2.0-device")
OTHER = FrozenDict(kex="mlkem768x25519-sha256", host_key="ssh-ed25519")

# Version 3 state rows as the version 3 code wrote them: details JSON in
# the session's key order without the capability list, which is in
# capability_sets under the SHA-256 of its sorted JSON.
V3_STATES = [
    ("r1", "connected", None, 10.0, 11.0, "192.0.2.1:830", "netconf-ssh",
     {"transport": "netconf-ssh", "peer": "192.0.2.1:830", "algorithms": dict(FLEET), "session_id": 4},
     CAPABILITIES),
    ("r2", "disconnected", "gone", 12.0, 13.0, "192.0.2.2:830", "netconf-ssh",
     {"peer": "192.0.2.2:830", "algorithms": dict(FLEET)}, None),
    ("r3", "never-seen", None, None, None, None, None, {}, None),
]


def write_v3_database(path: str) -> None:
    connection = sqlite3.connect(path)
    schema.migrate(connection, 3)
    text = json.dumps(CAPABILITIES, sort_keys=True)
    connection.execute("INSERT INTO capability_sets (digest, capabilities) VALUES (?, ?)", (digest(text), text))
    for row in V3_STATES:
        capabilities = row[8]
        connection.execute(
            "INSERT INTO device_state (device_id, state, reason, since, last_seen, last_address, transport, details,"
            " capability_set) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row[:7] + (json.dumps(row[7]), None if capabilities is None else digest(text)),
        )
    for n in range(4):
        connection.execute(
            "INSERT INTO history (device_id, time, event, data) VALUES (?, ?, ?, ?)",
            ("r1", 100.0 + n, f"e{n}", json.dumps({"n": n, "peer": "p"})),
        )
    connection.commit()
    connection.close()


def version_3_reading():
    """What the version 3 code read from that file (its loader: list put back, keys sorted)."""
    states = {}
    for row in V3_STATES:
        details = dict(row[7])
        if row[8] is not None:
            details["capabilities"] = row[8]
            details = dict(sorted(details.items()))
        states[row[0]] = DeviceState(*row[:7], details)
    history = [dict({"n": n, "peer": "p"}, time=100.0 + n, event=f"e{n}") for n in reversed(range(4))]
    return states, history


class MigrationToV4Tests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        write_v3_database(self.path)

    def rows(self, query):
        connection = sqlite3.connect(self.path)
        try:
            return connection.execute(query).fetchall()
        finally:
            connection.close()

    @defer.inlineCallbacks
    def test_states_and_history_read_back_identical(self):
        states, history = version_3_reading()
        store = yield InventoryStore.open(self.path)
        self.addCleanup(store.close)
        self.assertEqual(self.rows("SELECT version FROM schema_version"), [(4,)])
        snapshot = yield store.load()
        self.assertEqual(snapshot.states, states)
        for device_id, expected in states.items():
            self.assertEqual(list(snapshot.states[device_id].details), list(expected.details))
        self.assertEqual((yield store.history("r1")), history)
        # The algorithms stay in the old rows' details until their next write.
        self.assertEqual(self.rows("SELECT count(*) FROM algorithm_sets"), [(0,)])
        self.assertEqual(self.rows("SELECT algorithm_set FROM device_state"), [(None,)] * 3)
        yield store.save_state(DeviceState("r2", "connected", since=20.0, last_seen=20.0,
                                           details={"peer": "p", "algorithms": FLEET}))
        [(named,)] = self.rows("SELECT algorithm_set FROM device_state WHERE device_id = 'r2'")
        self.assertEqual(self.rows("SELECT digest, algorithms FROM algorithm_sets"),
                         [(named, json.dumps(FLEET, sort_keys=True))])
        snapshot = yield store.load()
        self.assertEqual(snapshot.states["r1"], states["r1"])
        self.assertEqual(snapshot.states["r2"].details, {"peer": "p", "algorithms": dict(FLEET)})


class AlgorithmSetTests(InventoryTestMixin, unittest.TestCase):
    def sets(self):
        return sorted((json.loads(text) for (text,) in self.rows("SELECT algorithms FROM algorithm_sets")), key=len)

    def test_the_copy_of_details_keeps_frozen_algorithms_as_they_are(self):
        details = {"peer": "p", "algorithms": FLEET}
        self.assertIs(_plain(details)["algorithms"], FLEET)
        self.assertIs(_plain({"nested": {"algorithms": FLEET}})["nested"]["algorithms"], FLEET)

    @defer.inlineCallbacks
    def test_a_fleets_states_share_one_stored_set(self):
        devices = [Device(f"r{n}", ssh_host_keys=(ssh_fp(f"r{n}"),)) for n in range(3)]
        inventory = yield self.open_inventory(devices)
        for device in devices:
            yield inventory.set_state(device.id, "connected", details={
                "peer": device.id, "algorithms": FLEET, "capabilities": tuple(CAPABILITIES)})
        self.assertEqual(self.sets(), [dict(FLEET)])
        [(digest_text,)] = self.rows("SELECT digest FROM algorithm_sets")
        for device_id, text, named in self.rows("SELECT device_id, details, algorithm_set FROM device_state"):
            self.assertEqual(json.loads(text), {"peer": device_id})
            self.assertEqual(named, digest_text)
        expected = {"algorithms": dict(FLEET), "capabilities": CAPABILITIES, "peer": "r1"}
        self.assertEqual(inventory.state("r1").details, expected)
        inventory = yield self.reopen(inventory, devices)
        for device in devices:
            self.assertEqual(inventory.state(device.id).details, dict(expected, peer=device.id))
        # One value shared by the states read back, as it was before.
        self.assertIs(inventory.state("r0").details["algorithms"], inventory.state("r2").details["algorithms"])

    @defer.inlineCallbacks
    def test_unused_sets_are_collected_with_the_prune(self):
        r1, r2 = Device("r1", ssh_host_keys=(ssh_fp("r1"),)), Device("r2", ssh_host_keys=(ssh_fp("r2"),))
        inventory = yield self.open_inventory([r1, r2], prune_interval=600.0)
        yield inventory.set_state("r1", "connected", details={"algorithms": FLEET})
        yield inventory.set_state("r2", "connected", details={"algorithms": OTHER})
        yield inventory.set_state("r2", "disconnected")
        yield inventory.set_state("r2", "connected", details={"algorithms": FLEET})
        self.assertEqual(self.sets(), sorted([dict(FLEET), dict(OTHER)], key=len))
        self.clock.advance(600)  # the periodic prune
        yield inventory.flush()
        self.assertEqual(self.sets(), [dict(FLEET)])
        # A set collected and then negotiated again is stored again.
        yield inventory.set_state("r1", "disconnected")
        yield inventory.set_state("r1", "connected", details={"algorithms": OTHER})
        self.assertEqual(self.sets(), sorted([dict(FLEET), dict(OTHER)], key=len))
        inventory = yield self.reopen(inventory, [r1, r2])
        self.assertEqual(inventory.state("r1").details, {"algorithms": dict(OTHER)})
        self.assertEqual(inventory.state("r2").details, {"algorithms": dict(FLEET)})
