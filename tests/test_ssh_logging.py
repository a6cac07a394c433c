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


class QuietLoggerTests(unittest.TestCase):
    """conch's lines through QuietLogger: debug dropped, the rest kept, nothing built for nobody."""

    def test_info_kept_debug_dropped(self):
        from twisted.logger import LogPublisher

        from callhome_mux.ssh.conch_log import QuietLogger

        seen = []
        publisher = LogPublisher(seen.append)
        log = QuietLogger(namespace="twisted.conch.ssh.connection", observer=publisher)
        log.debug("sending request {requestType}", requestType=b"subsystem")
        log.info("opening channel {id}", id=0)
        log.error("too much data")
        self.assertEqual([(e["log_level"], e["log_format"]) for e in seen],
                         [(LogLevel.info, "opening channel {id}"), (LogLevel.error, "too much data")])
        self.assertEqual(seen[0]["id"], 0)
        self.assertEqual(seen[0]["log_namespace"], "twisted.conch.ssh.connection")

    def test_failure_warn_critical_as_logger(self):
        from twisted.logger import LogPublisher

        from callhome_mux.ssh.conch_log import QuietLogger

        seen = []
        log = QuietLogger(namespace="twisted.conch.ssh.transport", observer=LogPublisher(seen.append))
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("Error decompressing payload")
        log.warn("odd {x}", x=1)
        log.critical("worse")
        self.assertEqual([e["log_level"] for e in seen], [LogLevel.critical, LogLevel.warn, LogLevel.critical])
        self.assertTrue(seen[0]["log_failure"].check(ZeroDivisionError))
        self.assertEqual(seen[1]["x"], 1)

    def test_not_a_descriptor(self):
        # conch reads self._log ~9 times per call home: a plain attribute,
        # not a __get__ call (twisted's Logger re-binds on every access).
        from callhome_mux.ssh.client import CallHomeClientTransport, CallHomeConnection, NetconfChannel
        from callhome_mux.ssh.conch_log import QuietLogger
        from callhome_mux.ssh.userauth import DeviceUserAuth

        self.assertFalse(hasattr(QuietLogger, "__get__"))
        for cls in (CallHomeClientTransport, CallHomeConnection, NetconfChannel, DeviceUserAuth):
            self.assertIsInstance(cls.__dict__["_log"], QuietLogger)

    def test_nothing_built_without_observers(self):
        from twisted.logger import LogPublisher

        from callhome_mux.ssh.conch_log import QuietLogger

        built = []

        class RecordingPublisher(LogPublisher):
            def __call__(self, event):
                built.append(event)
                LogPublisher.__call__(self, event)

        publisher = RecordingPublisher()
        QuietLogger(namespace="x", observer=publisher).info("opening channel")
        self.assertEqual(built, [])
        publisher.addObserver(lambda event: None)
        QuietLogger(namespace="x", observer=publisher).info("opening channel")
        self.assertEqual([e["log_format"] for e in built], ["opening channel"])

    @defer.inlineCallbacks
    def test_channel_open_still_logged_by_default(self):
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        device = SSHCallHomeDevice(password="pw")
        manager = yield Manager(self, [device_entry(device, password="pw")], settings=SSHSettings()).start()
        yield manager.callHome(device)
        yield manager.registry.whenConnected("r1")
        opened = [e for e in seen if e.get("log_namespace") == "twisted.conch.ssh.connection"
                  and e.get("log_level") is LogLevel.info]
        self.assertTrue(opened)
        self.assertFalse([e for e in seen if e.get("log_namespace", "").startswith("twisted.conch.ssh.")
                          and e.get("log_level") is LogLevel.debug and e.get("log_source") is None])
