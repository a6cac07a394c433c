"""The per-session paths shared by SSH and TLS call homes: event bus, session registry, throttle check, metrics."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from callhome_mux.api.metrics import Metrics
from callhome_mux.events import EventBus
from callhome_mux.sessions import SessionRegistry
from tests.test_api_metrics import samples, value
from tests.test_inventory_helpers import InventoryTestMixin, ssh_identity
from tests.test_inventory_state import R1


class Session:
    def __init__(self, device_id, transport="netconf-ssh", peer="192.0.2.1:1"):
        self.device_id = device_id
        self.details = {"transport": transport, "peer": peer}
        self.lost = defer.Deferred()
        self.closed = []

    def whenLost(self):
        return self.lost

    def close(self, reason="closed"):
        self.closed.append(reason)


class EventBusObserverTests(unittest.TestCase):
    def test_observers_in_order_changes_from_the_next_event(self):
        bus = EventBus(clock=task.Clock())
        seen = []
        late = lambda event: seen.append(("late", event["event"]))  # noqa: E731

        def first(event):
            seen.append(("first", event["event"]))
            if event["event"] == "a":
                bus.addObserver(late)
                bus.removeObserver(second)

        def second(event):
            seen.append(("second", event["event"]))

        bus.addObserver(first)
        bus.addObserver(second)
        bus.emit("a")
        bus.emit("b")
        # Added during "a": from "b" on; removed during "a": still got "a".
        self.assertEqual(seen, [("first", "a"), ("second", "a"), ("first", "b"), ("late", "b")])

    def test_remove_takes_one_and_ignores_strangers(self):
        bus = EventBus(clock=task.Clock())
        seen = []
        observer = seen.append
        bus.addObserver(observer)
        bus.addObserver(observer)
        bus.removeObserver(lambda event: None)  # never added: no error
        bus.removeObserver(observer)
        bus.emit("a")
        self.assertEqual(len(seen), 1)
        bus.removeObserver(observer)
        bus.emit("b")
        self.assertEqual(len(seen), 1)


class RegistryObserverTests(unittest.TestCase):
    def test_connected_and_lost_observers(self):
        bus = EventBus(clock=task.Clock())
        events = []
        bus.addObserver(events.append)
        registry = SessionRegistry(bus)
        seen = []
        up = lambda s: seen.append(("up", s.device_id))  # noqa: E731
        lost = lambda s: seen.append(("lost", s.device_id))  # noqa: E731
        registry.addConnectedObserver(up)
        registry.addLostObserver(lost)
        waiter = registry.whenConnected("r1")
        session = Session("r1")
        registry.register(session)
        self.assertIs(self.successResultOf(waiter), session)
        session.lost.callback(None)
        self.assertEqual(seen, [("up", "r1"), ("lost", "r1")])
        self.assertEqual(
            [(e["event"], e["transport"], e["peer"]) for e in events],
            [("session.up", "netconf-ssh", "192.0.2.1:1"), ("session.lost", "netconf-ssh", "192.0.2.1:1")],
        )
        registry.removeConnectedObserver(up)
        registry.removeLostObserver(lost)
        self.assertRaises(ValueError, registry.removeConnectedObserver, up)
        self.assertRaises(ValueError, registry.removeLostObserver, lost)
        again = Session("r1")
        registry.register(again)
        again.lost.callback(None)
        self.assertEqual(len(seen), 2)

    def test_newer_session_wins(self):
        bus = EventBus(clock=task.Clock())
        events = []
        bus.addObserver(events.append)
        registry = SessionRegistry(bus)
        old, new = Session("r1", peer="192.0.2.1:1"), Session("r1", peer="192.0.2.1:2")
        registry.register(old)
        registry.register(new)
        self.assertEqual(old.closed, ["replaced by a newer session from the same device"])
        replaced = [e for e in events if e["event"] == "session.replaced"][0]
        self.assertEqual((replaced["old_peer"], replaced["new_peer"]), ("192.0.2.1:1", "192.0.2.1:2"))
        self.assertIs(registry.get("r1"), new)


class ThrottleCheckTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_nothing_failed_yet(self):
        inventory = yield self.open_inventory([R1], throttle_failures=1, address_throttle_failures=1)
        self.assertIsNone(inventory.is_throttled())
        self.assertIsNone(inventory.is_throttled("r1", address="192.0.2.1:1"))
        self.assertIsNone(inventory.is_throttled(ssh_identity("r1"), address="192.0.2.1"))
        # A wrong identity type is refused whether or not anything failed.
        self.assertRaises(TypeError, inventory.is_throttled, 42)
        inventory.record_failure(address="192.0.2.9:1")
        self.assertRaises(TypeError, inventory.is_throttled, 42)
        self.assertIsNone(inventory.is_throttled("r1", address="192.0.2.1:1"))
        self.assertIsNotNone(inventory.is_throttled("r1", address="192.0.2.9:2"))
        self.assertIsNotNone(inventory.is_throttled(address="192.0.2.9"))
        inventory.record_failure("r1")
        self.assertIsNotNone(inventory.is_throttled(ssh_identity("r1")))


class MetricsChildrenTests(unittest.TestCase):
    def test_sessions_by_transport(self):
        metrics = Metrics()
        for transport in ("netconf-ssh", "netconf-ssh", "netconf-tls", None, ""):
            metrics.observe({"event": "session.up", "transport": transport})
        metrics.observe({"event": "session.up"})
        metrics.observe({"event": "session.lost", "transport": "netconf-tls"})
        metrics.observe({"event": "session.lost", "transport": 7})
        from prometheus_client import generate_latest

        found = samples(generate_latest(metrics.registry))
        self.assertEqual(value(found, "callhome_sessions_opened_total", transport="netconf-ssh"), 2)
        self.assertEqual(value(found, "callhome_sessions_opened_total", transport="netconf-tls"), 1)
        self.assertEqual(value(found, "callhome_sessions_opened_total", transport="unknown"), 3)
        self.assertEqual(value(found, "callhome_sessions_lost_total", transport="netconf-tls"), 1)
        self.assertEqual(value(found, "callhome_sessions_lost_total", transport="7"), 1)


class PeerTextTests(unittest.TestCase):
    def test_the_peer_text_is_worked_out_once_and_follows_a_new_peer(self):
        from twisted.internet.address import IPv4Address, IPv6Address
        from twisted.internet.testing import StringTransport

        from callhome_mux import connection as connection_module
        from callhome_mux.connection import ClassifiedConnection, ConnectionKind

        calls = []
        original = connection_module.format_address

        def counting(address):
            calls.append(address)
            return original(address)

        self.patch(connection_module, "format_address", counting)
        peer = IPv4Address("TCP", "192.0.2.7", 4334)
        connection = ClassifiedConnection("c1", ConnectionKind.SSH, StringTransport(), peer, peer)
        self.assertEqual([connection.peer_text, connection.peer_text], ["192.0.2.7:4334", "192.0.2.7:4334"])
        self.assertEqual(len(calls), 1)
        connection.peer = IPv6Address("TCP", "2001:db8::1", 830)
        self.assertEqual(connection.peer_text, "[2001:db8::1]:830")
        self.assertEqual(len(calls), 2)
        # Not part of what the connection is (equality, repr).
        again = ClassifiedConnection("c1", ConnectionKind.SSH, connection.transport, connection.peer, peer)
        self.assertEqual(again, connection)
        self.assertNotIn("_peer_text", repr(connection))
        # Kept as plain fields: no tuple for the collector to track.
        import gc

        self.assertEqual([value for value in vars(connection).values() if type(value) is tuple and gc.is_tracked(value)], [])


    def test_an_unknown_peer_reads_as_format_address_gives_it(self):
        from twisted.internet.testing import StringTransport

        from callhome_mux.connection import ClassifiedConnection, ConnectionKind, format_address

        connection = ClassifiedConnection("c1", ConnectionKind.SSH, StringTransport(), None, None)
        self.assertEqual(connection.peer_text, format_address(None))
        self.assertEqual(connection.peer_text, "?")

class SSHCallHomeEventFieldsTests(unittest.TestCase):
    """Every SSH call-home event carries connection_id, peer and (once known) device_id first."""

    def call_home(self):
        from callhome_mux.inventory.model import Device
        from callhome_mux.ssh.callhome import SSHCallHome

        call = SSHCallHome.__new__(SSHCallHome)  # only what _emit reads
        call.connection = type("Connection", (), {"connection_id": "c7"})()
        call.details = {"peer": "192.0.2.9:4000"}
        call.device = None
        call.events = EventBus(clock=task.Clock())
        seen = []
        call.events.addObserver(seen.append)
        return call, seen, Device(id="r1")

    def test_fields_and_their_order(self):
        call, seen, device = self.call_home()
        call._emit("ssh.hostkey.unknown", reason="no", fingerprint="SHA256:x")
        call._emit("ssh.preamble.rejected", device_id="r2", reason="bad")
        call.device = device
        call._emit("ssh.auth.succeeded", method="password", username="u")
        call._emit("odd", reason="r", device_id="r3", peer="elsewhere")
        self.assertEqual(
            [list(event.items())[2:] for event in seen],  # after "event" and "time"
            [
                [("connection_id", "c7"), ("peer", "192.0.2.9:4000"), ("reason", "no"), ("fingerprint", "SHA256:x")],
                [("connection_id", "c7"), ("peer", "192.0.2.9:4000"), ("device_id", "r2"), ("reason", "bad")],
                [("connection_id", "c7"), ("peer", "192.0.2.9:4000"), ("device_id", "r1"), ("method", "password"),
                 ("username", "u")],
                # A field naming a base field replaces it in its place.
                [("connection_id", "c7"), ("peer", "elsewhere"), ("device_id", "r3"), ("reason", "r")],
            ],
        )
        self.assertEqual([event["event"] for event in seen],
                         ["ssh.hostkey.unknown", "ssh.preamble.rejected", "ssh.auth.succeeded", "odd"])
