"""
The event observer's shortcuts: the JSON-able copy of session details, the
state constructor, the throttles skipped while nobody has failed, and the
exact outcome of one SSH call home's events.
"""

from __future__ import annotations

import collections
import dataclasses

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory import state as states
from callhome_mux.inventory.inventory import _plain
from callhome_mux.inventory.model import Device
from callhome_mux.inventory.state import DeviceState, new_state
from callhome_mux.sessions import SessionRegistry

from tests.test_inventory_helpers import FakeSession, InventoryTestMixin, ssh_fp

R1 = Device("r1", ssh_host_keys=(ssh_fp("r1"),))


def reference_plain(value):
    """What _plain gave before its dict shortcut (and must still give)."""
    if isinstance(value, dict):
        return {(k if type(k) is str else str(k)): reference_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [reference_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class PlainCopyTests(unittest.TestCase):
    def test_same_result_as_before(self):
        capabilities = tuple(f"urn:example:{n}" for n in range(12))
        values = [
            {"peer": "p", "n": 1, "x": 1.5, "ok": True, "none": None},
            {"algorithms": {"kex": "k", "mac": "m"}, "capabilities": capabilities, "short": ("a", "b")},
            {"nested": {"deeper": {1: b"\xffbytes", "set": frozenset({"z"})}}, "obj": object.__name__},
            {1: "int key first", "b": ("t",)},
            {"a": 1, 2: "int key later", "c": {"d": (1, 2)}},
            {"odd": complex(1, 2), "raw": b"abc", "list": [1, (2, 3)]},
            collections.OrderedDict([("z", 1), ("a", (1,))]),
            {},
        ]
        for value in values:
            got = _plain(value)
            self.assertEqual(got, reference_plain(value))
            self.assertIs(type(got), dict)
            self.assertEqual(list(got), list(reference_plain(value)))

    def test_a_copy_not_a_view(self):
        details = {"peer": "p", "algorithms": {"kex": "k"}}
        copy = _plain(details)
        details["peer"] = "changed"
        details["algorithms"]["kex"] = "changed"
        details["new"] = 1
        self.assertEqual(copy, {"peer": "p", "algorithms": {"kex": "k"}})

    def test_shared_capability_lists(self):
        capabilities = tuple(f"urn:example:{n}" for n in range(12))
        first, second = _plain({"capabilities": capabilities}), _plain({"capabilities": capabilities})
        self.assertEqual(first["capabilities"], list(capabilities))
        self.assertIs(first["capabilities"], second["capabilities"])


class NewStateTests(unittest.TestCase):
    def test_an_ordinary_frozen_device_state(self):
        args = ("r1", states.CONNECTED, None, 1.0, 2.0, "192.0.2.1:1", "netconf-ssh", {"a": 1})
        made, built = new_state(*args), DeviceState(*args)
        self.assertIs(type(made), DeviceState)
        self.assertEqual(made, built)
        self.assertEqual(repr(made), repr(built))
        self.assertEqual(dataclasses.asdict(made), dataclasses.asdict(built))
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, made, "state", states.FAILED)
        self.assertEqual(dataclasses.replace(made, state=states.FAILED).state, states.FAILED)
        self.assertEqual(made.moved(states.DISCONNECTED, "gone", 3.0), built.moved(states.DISCONNECTED, "gone", 3.0))


class ObserverTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_session_clears_its_address_back_off(self):
        inventory = yield self.open_inventory([R1], address_throttle_failures=2, throttle_failures=50)
        for n in range(2):
            self.bus.emit("ssh.hostkey.unknown", fingerprint=ssh_fp(f"k{n}"), peer=f"203.0.113.9:{4000 + n}")
        self.assertIsNotNone(inventory.is_throttled(address="203.0.113.9"))
        self.bus.emit("session.up", device_id="r1", peer="203.0.113.9:4100", transport="netconf-ssh")
        self.assertIsNone(inventory.is_throttled(address="203.0.113.9"))

    @defer.inlineCallbacks
    def test_one_ssh_call_home(self):
        # The events of one call home, as the server emits them.
        inventory = yield self.open_inventory([R1], state_write_delay=0.5)
        registry = SessionRegistry(self.bus)
        inventory.watch_sessions(registry)
        peer = "192.0.2.1:4000"
        self.bus.emit("connection.accepted", connection_id="c1", peer=peer, listener="l")
        self.bus.emit("connection.classified", connection_id="c1", peer=peer, kind="ssh", bytes=5, ms=1.0,
                      reason="SSH identification string")
        self.bus.emit("ssh.connection.started", connection_id="c1", peer=peer)
        self.bus.emit("ssh.hostkey.accepted", connection_id="c1", peer=peer, device_id="r1", source="directory",
                      fingerprint=ssh_fp("r1"), algorithm="ssh-ed25519", host_key="ssh-ed25519 AAAA")
        authenticating = inventory.state("r1")
        self.assertEqual((authenticating.state, authenticating.since, authenticating.last_address),
                         (states.AUTHENTICATING, self.clock.seconds(), peer))
        self.clock.advance(0.1)
        self.bus.emit("ssh.auth.succeeded", connection_id="c1", peer=peer, device_id="r1", method="password",
                      username="netconf")
        self.assertIs(inventory.state("r1"), authenticating)  # nothing changed: no new state
        self.bus.emit("ssh.subsystem.started", connection_id="c1", peer=peer, device_id="r1", subsystem="netconf")
        self.bus.emit("netconf.hello.done", connection_id="c1", device_id="r1", peer=peer, session_id=1,
                      base="1.1", capability_count=9)
        capabilities = tuple(f"urn:example:{n}" for n in range(9))
        details = {"transport": "netconf-ssh", "peer": peer, "algorithms": {"kex": "curve25519-sha256"},
                   "session_id": 1, "capabilities": capabilities}
        self.clock.advance(0.1)
        registry.register(FakeSession("r1", details))
        connected = inventory.state("r1")
        self.assertEqual(
            (connected.state, connected.since, connected.last_seen, connected.last_address, connected.transport),
            (states.CONNECTED, self.clock.seconds(), self.clock.seconds(), peer, "netconf-ssh"),
        )
        self.assertEqual(connected.details, dict(details, capabilities=list(capabilities)))
        self.assertEqual(len(inventory._identity_throttle) + len(inventory._address_throttle), 0)
        inventory = yield self.reopen(inventory, [R1])
        history = yield inventory.history("r1")
        self.assertEqual([h["event"] for h in history], ["session.up", "ssh.auth.succeeded", "ssh.hostkey.accepted"])
        self.assertEqual(history[2], {"connection_id": "c1", "peer": peer, "source": "directory",
                                      "fingerprint": ssh_fp("r1"), "algorithm": "ssh-ed25519",
                                      "host_key": "ssh-ed25519 AAAA", "event": "ssh.hostkey.accepted",
                                      "time": 1_000_000.0})
        restored = inventory.state("r1")
        self.assertEqual((restored.state, restored.details), (states.DISCONNECTED, connected.details))
