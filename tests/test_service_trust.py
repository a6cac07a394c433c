"""Trust decisions through the real service: reject, pending, approve, deny."""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from callhome_mux.config import config_from_document
from callhome_mux.inventory.model import Credentials
from callhome_mux.service import CallHomeService
from callhome_mux.testing.ssh_device import SSHCallHomeDevice

from tests.helpers import EventLog


class TrustCase(unittest.TestCase):
    policy = "reject"

    @defer.inlineCallbacks
    def setUp(self):
        document = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "state_dir": self.mktemp(),
            "inventory": {"unknown_device_policy": self.policy},
        }
        self.service = CallHomeService(config_from_document(document))
        self.log = EventLog(self.service.events)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.whenStarted()
        self.port = self.service.listeners[0].port.getHost().port

    def next_event(self, name):
        seen = defer.Deferred()

        def observe(event):
            if event["event"] == name and not seen.called:
                self.service.events.removeObserver(observe)
                seen.callback(event)

        self.service.events.addObserver(observe)
        return seen

    @defer.inlineCallbacks
    def refused_call(self, device, event_name):
        """Call home with C{device}; wait for C{event_name} and for the connection to close."""
        seen = self.next_event(event_name)
        closed = self.next_event("connection.closed")
        device.callHome(reactor, "127.0.0.1", self.port).addErrback(lambda _: None)
        event = yield seen
        yield closed
        return event


class RejectPolicyTests(TrustCase):
    @defer.inlineCallbacks
    def test_unknown_device_is_refused_and_not_recorded(self):
        device = SSHCallHomeDevice(username="admin", password="secret-pw")
        event = yield self.refused_call(device, "ssh.hostkey.unknown")
        self.assertEqual(event["fingerprint"], device.fingerprint)
        self.assertIn("unknown_device_policy is reject", event["reason"])
        self.assertEqual(self.service.inventory.pending(), [])
        self.assertEqual(self.service.sessions(), [])
        # No password was offered to a device nobody trusts.
        self.assertEqual(device.offered_passwords, [])


class PendingPolicyTests(TrustCase):
    policy = "pending"

    @defer.inlineCallbacks
    def test_pending_then_approved_then_accepted(self):
        device = SSHCallHomeDevice(username="admin", password="pw")
        yield self.refused_call(device, "inventory.device.pending")
        [entry] = self.service.inventory.pending()
        self.assertEqual(entry.fingerprint, device.fingerprint)
        self.assertEqual(entry.count, 1)
        self.assertEqual(entry.address.split(":")[0], "127.0.0.1")
        self.assertEqual(self.service.sessions(), [])
        # A second attempt is counted on the same entry, not a new one.
        yield self.refused_call(device, "ssh.hostkey.unknown")
        [entry] = self.service.inventory.pending()
        self.assertEqual(entry.count, 2)

        approved = yield self.service.inventory.approve(
            entry.id, device_id="ups-7", credentials=Credentials(username="admin", password="pw"), labels={"owner": "ups"}
        )
        self.assertEqual(approved.id, "ups-7")
        waiting = self.service.whenConnected("ups-7")
        yield device.callHome(reactor, "127.0.0.1", self.port)
        session = yield waiting
        self.assertEqual(session.details["host_key_fingerprint"], device.fingerprint)
        self.assertEqual(self.service.inventory.pending(), [])

    @defer.inlineCallbacks
    def test_denied_identity_is_refused_cheaply(self):
        device = SSHCallHomeDevice()
        yield self.refused_call(device, "inventory.device.pending")
        [entry] = self.service.inventory.pending()
        yield self.service.inventory.deny(entry.id)
        event = yield self.refused_call(device, "ssh.hostkey.unknown")
        self.assertIn("denied", event["reason"])
        [entry] = self.service.inventory.pending()
        self.assertEqual(entry.status, "denied")
        self.assertEqual(self.service.sessions(), [])
