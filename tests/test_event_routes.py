"""Observers that take only some event names: the bus asks once per name and skips the rest."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from callhome_mux import events
from callhome_mux.events import EventBus
from callhome_mux.inventory import inventory as inventory_module
from tests.test_inventory_helpers import InventoryTestMixin
from tests.test_inventory_state import R1


class RoutedObserverTests(unittest.TestCase):
    def test_only_the_names_it_wants_asked_once_per_name(self):
        bus = EventBus(clock=task.Clock())
        asked, seen, everything = [], [], []

        def wants(name):
            asked.append(name)
            return name.startswith("ssh.")

        bus.addObserver(lambda event: seen.append(event["event"]), wants=wants)
        bus.addObserver(lambda event: everything.append(event["event"]))
        for name in ("ssh.a", "tls.b", "ssh.a", "tls.b", "ssh.c"):
            bus.emit(name)
        self.assertEqual(seen, ["ssh.a", "ssh.a", "ssh.c"])
        self.assertEqual(everything, ["ssh.a", "tls.b", "ssh.a", "tls.b", "ssh.c"])
        self.assertEqual(asked, ["ssh.a", "tls.b", "ssh.c"])

    def test_names_routed_again_after_a_change(self):
        bus = EventBus(clock=task.Clock())
        seen = []
        bus.addObserver(lambda event: seen.append(("all", event["event"])))
        bus.emit("a")  # the route of "a" is kept: the first observer only
        picky = lambda event: seen.append(("picky", event["event"]))  # noqa: E731
        bus.addObserver(picky, wants=lambda name: name == "a")
        bus.emit("a")
        bus.emit("b")
        bus.removeObserver(picky)
        bus.emit("a")
        self.assertEqual(seen, [("all", "a"), ("all", "a"), ("picky", "a"), ("all", "b"), ("all", "a")])

    def test_removed_observer_with_a_filter_sees_nothing_more(self):
        bus = EventBus(clock=task.Clock())
        seen = []
        bus.addObserver(seen.append, wants=lambda name: True)
        bus.emit("a")
        bus.removeObserver(seen.append)
        bus.emit("a")
        self.assertEqual(len(seen), 1)

    def test_routes_are_bounded(self):
        bus = EventBus(clock=task.Clock())
        seen = []
        bus.addObserver(lambda event: seen.append(event["event"]), wants=lambda name: name.endswith("0"))
        names = [f"e.{n}" for n in range(events._MAX_ROUTES + 10)]
        for name in names:
            bus.emit(name)
        self.assertEqual(seen, [name for name in names if name.endswith("0")])
        self.assertLessEqual(len(bus._routes), events._MAX_ROUTES)


class InventoryNameFilterTests(InventoryTestMixin, unittest.TestCase):
    def test_the_names_the_inventory_takes(self):
        wanted = inventory_module._wanted
        for name in ("session.up", "session.lost", "ssh.hostkey.accepted", "ssh.auth.failed", "session.replaced",
                     "tls.certificate.refused", "ssh.something.timeout", "netconf.other.protocol.error"):
            self.assertTrue(wanted(name), name)
        for name in ("connection.accepted", "connection.classified", "ssh.connection.started",
                     "ssh.subsystem.started", "netconf.hello.done", "inventory.throttled", "inventory.x.timeout"):
            self.assertFalse(wanted(name), name)

    @defer.inlineCallbacks
    def test_skipped_names_reach_no_history(self):
        # The observer is attached with the filter: an event it would have
        # ignored anyway still writes nothing, one it maps still counts.
        inventory = yield self.open_inventory([R1])
        self.bus.emit("netconf.hello.done", device_id="r1", peer="192.0.2.1:4000")
        self.bus.emit("session.up", device_id="r1", peer="192.0.2.1:4000", transport="netconf-ssh")
        yield inventory.flush()
        history = yield inventory.history("r1")
        self.assertEqual([h["event"] for h in history], ["session.up"])
        self.assertEqual(inventory.state("r1").state, "connected")


class BrokenFilterTests(unittest.TestCase):
    def test_a_filter_that_raises_is_logged_and_its_observer_still_served(self):
        bus = EventBus(clock=task.Clock())
        seen, others = [], []

        def wants(name):
            raise RuntimeError("broken filter")

        bus.addObserver(lambda event: seen.append(event["event"]), wants=wants)
        bus.addObserver(lambda event: others.append(event["event"]))
        record = bus.emit("ssh.a")  # does not raise into the emitter
        bus.emit("ssh.a")
        self.assertEqual(record["event"], "ssh.a")
        self.assertEqual(seen, ["ssh.a", "ssh.a"])
        self.assertEqual(others, ["ssh.a", "ssh.a"])
        # Logged once: the route of a name is found once.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
