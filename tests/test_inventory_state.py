"""State from events, session details, and throttling on a task.Clock."""

from __future__ import annotations

from hypothesis import given, strategies as st
from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory import state as states
from callhome_mux.inventory.inventory import address_host
from callhome_mux.inventory.model import Device
from callhome_mux.inventory.throttle import BackOff, Throttle

from tests.test_inventory_helpers import FakeSession, InventoryTestMixin, ssh_fp, ssh_identity

R1 = Device("r1", ssh_host_keys=(ssh_fp("r1"),))



class EventMappingTests(unittest.TestCase):
    def test_table_and_suffixes(self):
        self.assertEqual(states.state_for_event("session.up"), (states.CONNECTED, None))
        self.assertEqual(states.state_for_event("ssh.hostkey.mismatch"), (states.FAILED, states.HOST_KEY_MISMATCH))
        self.assertEqual(states.state_for_event("tls.certificate.refused"), (states.FAILED, states.CERTIFICATE_REFUSED))
        self.assertEqual(states.state_for_event("ssh.kex.timeout"), (states.FAILED, states.TIMEOUT))
        self.assertEqual(states.state_for_event("netconf.framing.protocol.error"), (states.FAILED, states.PROTOCOL_ERROR))
        self.assertIsNone(states.state_for_event("inventory.throttled"))
        self.assertIsNone(states.state_for_event("connection.accepted"))
        for name, (state, reason) in states.EVENT_STATES.items():
            self.assertIn(state, states.STATES, name)
            self.assertTrue(reason is None or reason in states.FAILURE_REASONS, name)

    def test_address_host(self):
        self.assertEqual(address_host("192.0.2.1:830"), "192.0.2.1")
        self.assertEqual(address_host("[2001:db8::1]:830"), "2001:db8::1")
        self.assertEqual(address_host("2001:db8::1"), "2001:db8::1")
        self.assertIsNone(address_host("?"))
        self.assertIsNone(address_host(None))


class StateTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_life_of_a_device(self):
        inventory = yield self.open_inventory([R1])
        self.assertEqual(inventory.state("r1").state, states.NEVER_SEEN)
        self.assertEqual(inventory.states()["r1"].state, states.NEVER_SEEN)

        self.bus.emit("ssh.hostkey.accepted", device_id="r1", peer="192.0.2.1:5000", fingerprint=ssh_fp("r1"))
        self.assertEqual(inventory.state("r1").state, states.AUTHENTICATING)
        self.clock.advance(1)
        self.bus.emit("session.up", device_id="r1", transport="netconf-ssh", peer="192.0.2.1:5000")
        up = inventory.state("r1")
        self.assertEqual((up.state, up.transport, up.last_address, up.since), (states.CONNECTED, "netconf-ssh", "192.0.2.1:5000", self.clock.seconds()))
        self.clock.advance(1)
        self.bus.emit("session.lost", device_id="r1", transport="netconf-ssh", peer="192.0.2.1:5000", reason="connection reset")
        lost = inventory.state("r1")
        self.assertEqual((lost.state, lost.reason), (states.DISCONNECTED, "connection reset"))
        self.bus.emit("ssh.auth.failed", device_id="r1", peer="192.0.2.1:5001")
        self.assertEqual((inventory.state("r1").state, inventory.state("r1").reason), (states.FAILED, states.AUTHENTICATION_FAILED))
        self.bus.emit("session.replaced", device_id="r1", old_peer="a", new_peer="b")

        yield inventory.flush()
        history = yield inventory.history("r1")
        self.assertEqual(
            [h["event"] for h in history],
            ["session.replaced", "ssh.auth.failed", "session.lost", "session.up", "ssh.hostkey.accepted"],
        )
        inventory = yield self.reopen(inventory, [R1])
        self.assertEqual(inventory.state("r1").reason, states.AUTHENTICATION_FAILED)

    @defer.inlineCallbacks
    def test_history_rows_and_state_fields_from_events(self):
        # A history row is the event's fields without event, time and
        # device_id (they have columns), timed by the inventory's clock; a
        # state move keeps the address and transport an event leaves out.
        inventory = yield self.open_inventory([R1])
        t0 = self.clock.seconds()
        self.clock.advance(5)
        self.bus.emit("ssh.hostkey.accepted", device_id="r1", peer="192.0.2.1:5000", fingerprint=ssh_fp("r1"),
                      connection_id=7, source="directory")
        first = inventory.state("r1")
        self.assertEqual((first.since, first.last_seen, first.last_address, first.transport), (t0 + 5, t0 + 5, "192.0.2.1:5000", None))
        self.clock.advance(1)
        self.bus.emit("session.up", device_id="r1", transport="netconf-ssh", peer="192.0.2.1:5000")
        self.clock.advance(1)
        self.bus.emit("ssh.auth.failed", device_id="r1", reason="wrong password", n=[1, (2, 3)])
        failed = inventory.state("r1")
        self.assertEqual(
            (failed.state, failed.since, failed.last_seen, failed.last_address, failed.transport, failed.details),
            (states.FAILED, t0 + 7, t0 + 7, "192.0.2.1:5000", "netconf-ssh", {}),
        )
        yield inventory.flush()
        history = yield inventory.history("r1")
        self.assertEqual(
            history,
            [
                {"event": "ssh.auth.failed", "time": t0 + 7, "reason": "wrong password", "n": [1, [2, 3]]},
                {"event": "session.up", "time": t0 + 6, "transport": "netconf-ssh", "peer": "192.0.2.1:5000"},
                {"event": "ssh.hostkey.accepted", "time": t0 + 5, "peer": "192.0.2.1:5000", "fingerprint": ssh_fp("r1"),
                 "connection_id": 7, "source": "directory"},
            ],
        )

    @defer.inlineCallbacks
    def test_loss_of_a_replaced_session_keeps_the_device_connected(self):
        inventory = yield self.open_inventory([R1])
        self.bus.emit("session.up", device_id="r1", transport="ssh", peer="192.0.2.1:5000")
        self.bus.emit("session.replaced", device_id="r1", old_peer="192.0.2.1:5000", new_peer="192.0.2.1:5001")
        self.bus.emit("session.up", device_id="r1", transport="ssh", peer="192.0.2.1:5001")
        self.bus.emit("session.lost", device_id="r1", transport="ssh", peer="192.0.2.1:5000", reason="replaced")
        self.assertEqual(inventory.state("r1").state, states.CONNECTED)
        self.bus.emit("session.lost", device_id="r1", transport="ssh", peer="192.0.2.1:5001", reason="gone")
        self.assertEqual(inventory.state("r1").state, states.DISCONNECTED)

    @defer.inlineCallbacks
    def test_unknown_device_ids_write_nothing(self):
        inventory = yield self.open_inventory([R1])
        for n in range(50):
            self.bus.emit("session.lost", device_id=f"ghost{n}", reason="x")
        yield inventory.flush()
        self.assertEqual((yield inventory.store.count_history()), 0)
        self.assertNotIn("ghost0", inventory.states())

    @defer.inlineCallbacks
    def test_session_details(self):
        from callhome_mux.sessions import SessionRegistry

        inventory = yield self.open_inventory([R1])
        registry = SessionRegistry(self.bus)
        inventory.watch_sessions(registry)
        details = {
            "transport": "netconf-ssh", "peer": "192.0.2.1:1",
            "algorithms": {"kex": "curve25519-sha256", "cipher": "aes256-ctr"},
            "capabilities": ("urn:ietf:params:netconf:base:1.1",),
        }
        registry.register(FakeSession("r1", details))
        current = inventory.state("r1")
        self.assertEqual(current.state, states.CONNECTED)
        self.assertEqual(current.details["algorithms"]["kex"], "curve25519-sha256")
        self.assertEqual(current.details["capabilities"], ["urn:ietf:params:netconf:base:1.1"])
        yield inventory.flush()
        inventory = yield self.reopen(inventory, [R1])
        self.assertEqual(inventory.state("r1").details["algorithms"]["cipher"], "aes256-ctr")

    @defer.inlineCallbacks
    def test_explicit_state_is_checked(self):
        inventory = yield self.open_inventory([R1])
        yield self.assertFailure(inventory.set_state("r1", "sleeping"), ValueError)
        yield self.assertFailure(inventory.set_state("r1", states.FAILED, "bad luck"), ValueError)
        yield inventory.set_state("r1", states.FAILED, states.TIMEOUT)
        self.assertEqual(inventory.state("r1").reason, states.TIMEOUT)


class ThrottleUnitTests(unittest.TestCase):
    def test_back_off_doubles_up_to_the_cap(self):
        policy = BackOff(failures_before=3, base_delay=2.0, max_delay=30.0)
        self.assertEqual([policy.delay(n) for n in range(1, 9)], [0, 0, 2, 4, 8, 16, 30, 30])
        self.assertEqual(policy.delay(10**6), 30.0)

    def test_tracking_is_bounded(self):
        from twisted.internet import task

        throttle = Throttle(BackOff(1, 1.0, 10.0), task.Clock(), max_tracked=100)
        for n in range(1000):
            throttle.failed(f"198.51.100.{n}")
        self.assertEqual(len(throttle), 100)


class ThrottlePropertyTests(unittest.TestCase):
    @given(
        st.integers(1, 10), st.floats(0.1, 100), st.floats(100, 1000),
        st.lists(st.tuples(st.booleans(), st.floats(0, 2000)), max_size=60),
    )
    def test_back_off_is_bounded_and_success_clears(self, before, base, cap, steps):
        from twisted.internet import task

        clock = task.Clock()
        throttle = Throttle(BackOff(before, base, cap), clock)
        for failed, wait in steps:
            if failed:
                delay = throttle.failed("k")
                self.assertLessEqual(delay, cap)
                self.assertLessEqual(throttle.remaining("k"), cap)
                if throttle.failures("k") < before:
                    self.assertEqual(delay, 0)
            else:
                throttle.succeeded("k")
                self.assertEqual(throttle.remaining("k"), 0)
            clock.advance(wait)


class ThrottlingTests(InventoryTestMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_identity_back_off(self):
        inventory = yield self.open_inventory(
            [R1], throttle_failures=3, throttle_base_delay=10.0, throttle_max_delay=40.0, address_throttle_failures=100
        )
        for _ in range(2):
            self.bus.emit("ssh.auth.failed", device_id="r1", peer="192.0.2.1:1")
        self.assertIsNone(inventory.is_throttled("r1"))
        self.bus.emit("ssh.auth.failed", device_id="r1", peer="192.0.2.1:1")
        reason = inventory.is_throttled("r1")
        self.assertIn("r1", reason)
        self.assertIsNotNone(inventory.is_throttled(ssh_identity("r1")))
        self.assertEqual(inventory.identify(ssh_identity("r1")).action, "throttled")
        event = self.last("inventory.throttled")
        self.assertEqual((event["device_id"], event["failures"], event["delay"]), ("r1", 3, 10.0))

        self.clock.advance(10)
        self.assertIsNone(inventory.is_throttled("r1"))
        self.bus.emit("ssh.auth.failed", device_id="r1", peer="192.0.2.1:1")
        self.assertEqual(self.last("inventory.throttled")["delay"], 20.0)
        self.clock.advance(19)
        self.assertIsNotNone(inventory.is_throttled("r1"))
        self.clock.advance(1)
        for expected in (40.0, 40.0):
            self.bus.emit("ssh.auth.failed", device_id="r1", peer="192.0.2.1:1")
            self.assertEqual(self.last("inventory.throttled")["delay"], expected)
            self.clock.advance(expected)

        # Success clears it.
        self.bus.emit("session.up", device_id="r1", peer="192.0.2.1:1", transport="ssh")
        self.bus.emit("ssh.auth.failed", device_id="r1", peer="192.0.2.1:1")
        self.assertIsNone(inventory.is_throttled("r1"))

    @defer.inlineCallbacks
    def test_fingerprint_back_off_from_events(self):
        # A proven failure counts against the fingerprint in the event (any
        # spelling of the sha256: prefix) and the device; a session clears both.
        inventory = yield self.open_inventory([R1], throttle_failures=2, address_throttle_failures=100)
        tls = "SHA256:" + "ab" * 32
        for _ in range(2):
            self.bus.emit("ssh.auth.failed", device_id="r1", fingerprint=tls, peer="192.0.2.1:1")
        self.assertIsNotNone(inventory.is_throttled(tls))
        self.assertIsNotNone(inventory.is_throttled("r1"))
        self.assertEqual(self.last("inventory.throttled").get("fingerprint"), None)  # the device's came last
        self.assertEqual(
            [e.get("fingerprint") or e.get("device_id") for e in self.events if e["event"] == "inventory.throttled"],
            [tls, "r1"],
        )
        self.bus.emit("session.up", device_id="r1", fingerprint=tls, peer="192.0.2.1:2", transport="ssh")
        self.assertIsNone(inventory.is_throttled(tls))
        self.assertIsNone(inventory.is_throttled("r1"))

    @defer.inlineCallbacks
    def test_proven_device_failures_do_not_throttle_its_address(self):
        # Behind one NAT address: r1's credentials are wrong, r2 is fine.
        r2 = Device("r2", ssh_host_keys=(ssh_fp("r2"),))
        inventory = yield self.open_inventory([R1, r2], throttle_failures=2, address_throttle_failures=2)
        for n in range(5):
            self.bus.emit("ssh.auth.failed", device_id="r1", peer=f"198.51.100.7:{5000 + n}")
            self.bus.emit("tls.protocol.refused", device_id="r1", peer=f"198.51.100.7:{6000 + n}")
        self.assertIsNotNone(inventory.is_throttled("r1"))
        self.assertIsNone(inventory.is_throttled(address="198.51.100.7"))
        self.assertEqual(inventory.identify(ssh_identity("r2", address="198.51.100.7:7000")).action, "accept")

    @defer.inlineCallbacks
    def test_address_back_off_for_unknown_callers(self):
        inventory = yield self.open_inventory(address_throttle_failures=2, address_throttle_base_delay=5.0, throttle_failures=50)
        for n in range(2):
            self.bus.emit("ssh.hostkey.unknown", fingerprint=ssh_fp(f"k{n}"), peer=f"203.0.113.9:{4000 + n}")
        self.assertIsNotNone(inventory.is_throttled(address="203.0.113.9:5555"))
        self.assertIsNotNone(inventory.is_throttled(address="203.0.113.9"))
        self.assertIsNone(inventory.is_throttled(address="203.0.113.10:1"))
        self.assertEqual(inventory.identify(ssh_identity("k9", address="203.0.113.9:1")).action, "throttled")
        self.assertEqual(self.last("inventory.throttled")["address"], "203.0.113.9")
        self.clock.advance(5)
        self.assertIsNone(inventory.is_throttled(address="203.0.113.9"))

    @defer.inlineCallbacks
    def test_unproven_claims_are_not_throttle_keys(self):
        # A preamble claim travels as claimed_device_id, and host-key events
        # come before the key is proven: neither may lock the real device
        # out or mark it failed.  Only the address pays.
        inventory = yield self.open_inventory([R1], throttle_failures=1, address_throttle_failures=3)
        yield inventory.set_state("r1", states.CONNECTED, transport="ssh")
        self.bus.emit("ssh.hostkey.unknown", claimed_device_id="r1", fingerprint=ssh_fp("x"), peer="203.0.113.1:1")
        self.bus.emit("ssh.hostkey.mismatch", claimed_device_id="r2", fingerprint=ssh_fp("r1"), peer="203.0.113.1:2")
        self.bus.emit("ssh.preamble.rejected", device_id="r1", fingerprint=ssh_fp("r1"), peer="203.0.113.1:3", reason="bad HMAC")
        self.assertIsNone(inventory.is_throttled("r1"))
        self.assertIsNone(inventory.is_throttled(ssh_identity("r1")))
        self.assertIsNone(inventory.is_throttled(ssh_identity("x")))
        self.assertIsNotNone(inventory.is_throttled(address="203.0.113.1"))
        self.assertEqual(inventory.state("r1").state, states.CONNECTED)
        yield inventory.flush()
        history = yield inventory.history("r1")
        self.assertEqual(history[0]["event"], "ssh.preamble.rejected")

    @defer.inlineCallbacks
    def test_tls_refusal_reasons(self):
        inventory = yield self.open_inventory([R1])
        self.bus.emit("tls.certificate.refused", device_id="r1", reason="expired", peer="192.0.2.1:1")
        self.assertEqual(inventory.state("r1").reason, states.CERTIFICATE_REFUSED)
        self.bus.emit("tls.certificate.refused", device_id="r1", reason="device-disabled", peer="192.0.2.1:1")
        self.assertEqual(inventory.state("r1").reason, states.NOT_ALLOWED)
