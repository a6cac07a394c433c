"""Configuration reload with sessions up: in process, and SIGHUP to a real twistd."""

import os
import signal
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from callhome_mux.config import load_config
from callhome_mux.service import CallHomeService
from callhome_mux.testing.ssh_device import SSHCallHomeDevice

from tests.helpers import EventLog
from tests.test_plugin import REPO, ProcessProtocol


def device_table(device_id, device, password="pw"):
    return (
        f'[[devices]]\nid = "{device_id}"\nssh_host_keys = ["{device.host_key_line}"]\n'
        f'credentials = {{ username = "admin", password = "{password}" }}\n'
    )


class ReloadTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.devices = {name: SSHCallHomeDevice(username="admin", password="pw") for name in ("r1", "r2", "r3")}
        self.path = self.mktemp()
        self.write(device_table("r1", self.devices["r1"]) + device_table("r2", self.devices["r2"]))
        config = load_config(self.path, listen=["tcp:0:interface=127.0.0.1"], state_dir=self.mktemp())
        self.service = CallHomeService(config)
        self.log = EventLog(self.service.events)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.whenStarted()
        self.port = self.service.listeners[0].port.getHost().port

    def write(self, text):
        with open(self.path, "w") as handle:
            handle.write('state_dir = "ignored-by-command-line"\n' + text)

    @defer.inlineCallbacks
    def call_home(self, name):
        waiting = self.service.whenConnected(name)
        yield self.devices[name].callHome(reactor, "127.0.0.1", self.port)
        session = yield waiting
        return session

    @defer.inlineCallbacks
    def test_reload_keeps_unchanged_sessions(self):
        first = yield self.call_home("r1")
        second = yield self.call_home("r2")
        second_lost = second.whenLost()
        # r2's credentials change, r3 is added, r1 stays as it was.
        self.write(
            device_table("r1", self.devices["r1"])
            + device_table("r2", self.devices["r2"], password="new")
            + device_table("r3", self.devices["r3"])
        )
        changes = yield self.service.reload()
        self.assertEqual(changes.added, ("r3",))
        self.assertEqual(changes.changed, ("r2",))
        self.assertEqual(changes.removed, ())
        yield second_lost
        self.assertIs(self.service.registry.get("r1"), first)
        self.assertIsNone(self.service.registry.get("r2"))
        [reloaded] = self.log.named("config.reloaded")
        self.assertEqual(reloaded["restart_needed"], [])
        # The added device may call home now.
        third = yield self.call_home("r3")
        self.assertEqual(third.device_id, "r3")
        reply = yield first.get_config(source="running")
        self.assertTrue(reply.tag.endswith("data"))

    @defer.inlineCallbacks
    def test_removed_device_is_refused_afterwards(self):
        session = yield self.call_home("r1")
        lost = session.whenLost()
        self.write(device_table("r2", self.devices["r2"]))
        changes = yield self.service.reload()
        self.assertEqual(changes.removed, ("r1",))
        yield lost
        self.assertIsNone(self.service.registry.get("r1"))
        unknown = defer.Deferred()
        self.service.events.addObserver(
            lambda e: e["event"] == "ssh.hostkey.unknown" and not unknown.called and unknown.callback(e)
        )
        self.devices["r1"].callHome(reactor, "127.0.0.1", self.port).addErrback(lambda _: None)
        event = yield unknown
        self.assertEqual(event["fingerprint"], self.devices["r1"].fingerprint)

    @defer.inlineCallbacks
    def test_broken_file_is_refused_as_a_whole(self):
        session = yield self.call_home("r1")
        self.write(device_table("r1", self.devices["r1"]) + '[[devices]]\nid = "r9"\nprotocol = "telnet"\n')
        result = yield self.service.reload()
        self.assertIsNone(result)
        [failed] = self.log.named("config.reload.failed")
        self.assertIn("devices[1].protocol", failed["reason"])
        self.assertIs(self.service.registry.get("r1"), session)
        self.assertIsNotNone(self.service.directory.get("r2"))
        # Two devices claiming one host key: refused too, nothing changes.
        self.write(device_table("r1", self.devices["r1"]) + device_table("r5", self.devices["r1"]))
        result = yield self.service.reload()
        self.assertIsNone(result)
        self.assertEqual(len(self.log.named("config.reload.failed")), 2)
        self.assertEqual(sorted(d.id for d in self.service.directory.all()), ["r1", "r2"])

    @defer.inlineCallbacks
    def test_settings_changes_are_reported_not_applied(self):
        self.write(device_table("r1", self.devices["r1"]) + device_table("r2", self.devices["r2"]) + "[demux]\nsilence_timeout = 2.0\n")
        yield self.service.reload()
        [reloaded] = self.log.named("config.reloaded")
        self.assertEqual(reloaded["restart_needed"], ["demux"])
        self.assertEqual(self.service.config.demux.silence_timeout, 1.0)


class SighupTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_sighup_reloads_a_real_server(self):
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        first, second = SSHCallHomeDevice(), SSHCallHomeDevice()
        config = os.path.join(workdir, "callhome.toml")
        with open(config, "w") as handle:
            handle.write(device_table("r1", first))
        process = ProcessProtocol(b"service.started")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
             "callhome-mux", "--config", config, "--listen", "tcp:0:interface=127.0.0.1",
             "--set", "api.listen=tcp:0:interface=127.0.0.1"],
            env=env,
            path=workdir,
        )
        self.addCleanup(lambda: transport.pid and transport.signalProcess("KILL"))
        yield process.ready
        with open(config, "w") as handle:
            handle.write(device_table("r1", first) + device_table("r2", second))
        process.marker, process.ready = b"config.reloaded", defer.Deferred()
        os.kill(transport.pid, signal.SIGHUP)
        output = yield process.ready
        reloaded = [line for line in output.decode().splitlines() if "config.reloaded" in line][0]
        self.assertIn("added=['r2']", reloaded)
        transport.signalProcess("TERM")
        yield process.ended
