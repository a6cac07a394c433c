"""conch's per-connection debug lines: dropped at the source unless asked for."""

from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from callhome_mux.ssh.settings import SSHSettings
from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from tests.test_ssh_harness import Manager
from tests.test_ssh_hostkey_auth import device_entry


class ConchDebugLogTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def conch_debug_events(self, settings):
        seen = []

        def observe(event):
            if event.get("log_level") is LogLevel.debug:
                seen.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        device = SSHCallHomeDevice(password="pw")
        manager = yield Manager(self, [device_entry(device, password="pw")], settings=settings).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        yield session.get_config(source="running")
        # Only the manager's transport counts, not the simulated device's.
        return [e for e in seen if e.get("log_source") is not None and type(e["log_source"]).__name__ == "CallHomeClientTransport"]

    @defer.inlineCallbacks
    def test_dropped_by_default(self):
        events = yield self.conch_debug_events(SSHSettings())
        self.assertEqual(events, [])

    @defer.inlineCallbacks
    def test_kept_when_asked_for(self):
        events = yield self.conch_debug_events(SSHSettings(conch_debug_log=True))
        self.assertTrue(events)
