"""The command-line client, run as a subprocess against a live server started in the test."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial import unittest

from callhome_mux.testing.datastore import Datastore
from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from tests.test_api_harness import APIServer, ssh_device_table, temporary_directory

SYSTEM = '<system xmlns="urn:example:system"><hostname>edge-1</hostname></system>'


def _environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLHOME_MUX_")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


class CLIResult:
    def __init__(self, out: bytes, err: bytes, code: int):
        self.out = out.decode()
        self.err = err.decode()
        self.code = code

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"<exit {self.code} out={self.out[:400]!r} err={self.err[:400]!r}>"


class Lines(protocol.ProcessProtocol):
    """A long-running CLI (events --follow): collects stdout lines, fires waiters on matches."""

    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()
        self._waiters = []

    def outReceived(self, data):
        self.out += data
        self._check()

    def errReceived(self, data):
        self.err += data

    def lines(self):
        return [line for line in self.out.decode().splitlines() if line]

    def whenLine(self, text):
        waiter = defer.Deferred()
        self._waiters.append((text, waiter))
        self._check()
        return waiter

    def _check(self):
        for entry in list(self._waiters):
            text, waiter = entry
            matching = [line for line in self.lines() if text in line]
            if matching:
                self._waiters.remove(entry)
                waiter.callback(matching[0])

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class CLITests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.device = SSHCallHomeDevice(username="admin", password="Very-Secret-9", datastore=Datastore(running=SYSTEM))
        self.server = yield APIServer(self, [ssh_device_table(self.device, "r1", labels={"site": "lab"})]).start()

    @defer.inlineCallbacks
    def cli(self, *args, state_dir=None):
        """Run the CLI the way a person would: it finds the server through the state directory."""
        argv = ["-m", "callhome_mux.cli", "--state-dir", state_dir or self.server.state_dir, *args]
        out, err, code = yield utils.getProcessOutputAndValue(sys.executable, argv, env=_environment())
        return CLIResult(out, err, code)

    @defer.inlineCallbacks
    def test_devices_table_and_json(self):
        result = yield self.cli("devices")
        self.assertEqual(result.code, 0, result)
        header, row = result.out.splitlines()
        self.assertEqual(header.split()[:3], ["DEVICE", "STATE", "SINCE"])
        self.assertEqual(row.split()[:2], ["r1", "never-seen"])
        self.assertIn("site=lab", row)
        yield self.server.connect(self.device, "r1")
        result = yield self.cli("--json", "devices", "--state", "connected", "--label", "site=lab")
        self.assertEqual(result.code, 0, result)
        self.assertEqual([d["id"] for d in result.json()["devices"]], ["r1"])
        result = yield self.cli("devices", "--json", "--state", "failed")
        self.assertEqual(result.json()["devices"], [])

    @defer.inlineCallbacks
    def test_show_and_sessions(self):
        yield self.server.connect(self.device, "r1")
        result = yield self.cli("show", "r1")
        self.assertEqual(result.code, 0, result)
        self.assertIn("connected", result.out)
        self.assertIn("netconf-ssh", result.out)
        self.assertIn("session.up", result.out)
        self.assertNotIn("Very-Secret-9", result.out)
        result = yield self.cli("sessions")
        self.assertEqual(result.code, 0, result)
        self.assertEqual(result.out.splitlines()[1].split()[:2], ["r1", "netconf-ssh"])
        result = yield self.cli("--json", "sessions")
        self.assertEqual(result.json()["sessions"][0]["device_id"], "r1")

    @defer.inlineCallbacks
    def test_rpc_from_a_file_and_get_config(self):
        yield self.server.connect(self.device, "r1")
        path = os.path.join(temporary_directory(self), "get.xml")
        with open(path, "w") as handle:
            handle.write("<get-config><source><running/></source></get-config>")
        result = yield self.cli("rpc", "r1", path)
        self.assertEqual(result.code, 0, result)
        self.assertIn("<hostname>edge-1</hostname>", result.out)
        self.assertIn("rpc-reply", result.out)
        result = yield self.cli("rpc", "r1", "--get-config", "--filter", '<system xmlns="urn:example:system"/>')
        self.assertEqual(result.code, 0, result)
        self.assertIn("edge-1", result.out)
        with open(path, "w") as handle:
            handle.write("<frobnicate/>")
        result = yield self.cli("rpc", "r1", path)
        self.assertEqual(result.code, 1, result)
        self.assertEqual(len(result.err.strip().splitlines()), 1, result)
        self.assertIn("operation-not-supported", result.err)

    @defer.inlineCallbacks
    def test_pending_approve_deny(self):
        server = self.server
        first, second = SSHCallHomeDevice(password="pw"), SSHCallHomeDevice(password="pw")
        for device in (first, second):
            closed = server.whenEvent("connection.closed")
            server.call_home(device).addErrback(lambda _: None)
            yield closed
        result = yield self.cli("pending")
        self.assertEqual(result.code, 0, result)
        self.assertIn(first.fingerprint, result.out)
        entries = {e["fingerprint"]: e["pending_id"] for e in (yield self.cli("--json", "pending")).json()["pending"]}
        password_file = os.path.join(temporary_directory(self), "pw")
        with open(password_file, "w") as handle:
            handle.write("pw\n")
        result = yield self.cli("approve", str(entries[first.fingerprint]), "--id", "edge-9", "--label", "owner=ups-team",
                                "--username", "netconf", "--password-file", password_file)
        self.assertEqual(result.code, 0, result)
        self.assertIn("edge-9", result.out)
        self.assertEqual(server.service.inventory.get("edge-9").labels, {"owner": "ups-team"})
        result = yield self.cli("deny", str(entries[second.fingerprint]))
        self.assertEqual(result.code, 0, result)
        self.assertIn("denied", result.out)
        session = yield server.connect(first, "edge-9")
        self.assertEqual(session.device_id, "edge-9")

    @defer.inlineCallbacks
    def test_errors_are_one_line_and_non_zero(self):
        result = yield self.cli("show", "nope")
        self.assertEqual((result.code, result.out), (1, ""), result)
        self.assertEqual(result.err.strip(), "callhome-mux: device 'nope' not found (HTTP 404)")
        result = yield self.cli("--token", "chm_wrong", "devices")
        self.assertEqual(result.code, 1, result)
        self.assertIn("HTTP 401", result.err)
        result = yield self.cli("rpc", "r1", "--get")
        self.assertEqual(result.code, 1, result)
        self.assertIn("not connected", result.err)
        empty = temporary_directory(self)
        result = yield self.cli("devices", state_dir=empty)
        self.assertEqual(result.code, 1, result)
        self.assertIn("is the server running", result.err)
        # Connection refused: the address of a server that is gone.
        port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}"
        yield port.stopListening()
        result = yield self.cli("--url", url, "devices")
        self.assertEqual(result.code, 1, result)
        self.assertIn("cannot reach the API", result.err)
        self.assertEqual(len(result.err.strip().splitlines()), 1)

    @defer.inlineCallbacks
    def test_tokens(self):
        result = yield self.cli("tokens", "add", "--role", "read", "--labels", "site=lab", "--name", "dash")
        self.assertEqual(result.code, 0, result)
        token = result.out.strip()
        self.assertTrue(token.startswith("chm_"))
        result = yield self.cli("--token", token, "--json", "devices")
        self.assertEqual([d["id"] for d in result.json()["devices"]], ["r1"])
        result = yield self.cli("--token", token, "tokens", "list")
        self.assertEqual(result.code, 1, result)
        self.assertIn("HTTP 403", result.err)
        result = yield self.cli("tokens", "list")
        self.assertIn("dash", result.out)

    @defer.inlineCallbacks
    def test_events_follow(self):
        lines = Lines()
        argv = [sys.executable, "-m", "callhome_mux.cli", "--state-dir", self.server.state_dir,
                "events", "--follow", "--device", "r1", "--json"]
        streaming = self.server.whenEvent("api.events.client.connected")
        process = reactor.spawnProcess(lines, sys.executable, argv, env=_environment())
        # Wait until the server has the stream open, then call home.
        yield streaming
        yield self.server.connect(self.device, "r1")
        line = yield lines.whenLine('"session.up"')
        event = json.loads(line)
        self.assertEqual((event["event"], event["device_id"]), ("session.up", "r1"))
        self.assertTrue(all(json.loads(l).get("device_id") == "r1" for l in lines.lines()))
        process.signalProcess("TERM")
        yield lines.ended

    @defer.inlineCallbacks
    def test_events_follow_with_netconf_notifications(self):
        yield self.server.connect(self.device, "r1")
        lines = Lines()
        argv = [sys.executable, "-m", "callhome_mux.cli", "--state-dir", self.server.state_dir,
                "events", "--follow", "--subscribe", "--device", "r1", "--kind", "netconf.notification"]
        streaming = self.server.whenEvent("api.events.client.connected")
        process = reactor.spawnProcess(lines, sys.executable, argv, env=_environment())
        yield streaming
        self.assertTrue(self.device.netconf_servers[-1].notify('<alarm xmlns="urn:example:alarms"><id>7</id></alarm>'))
        line = yield lines.whenLine("netconf.notification")
        self.assertIn("[r1]", line)
        self.assertIn("<id>7</id>", line)
        process.signalProcess("TERM")
        yield lines.ended

    @defer.inlineCallbacks
    def test_close_and_history(self):
        session = yield self.server.connect(self.device, "r1")
        lost = session.whenLost()
        result = yield self.cli("close", "r1")
        self.assertEqual(result.code, 0, result)
        yield lost
        result = yield self.cli("events", "--device", "r1")
        self.assertEqual(result.code, 0, result)
        names = [line.split()[2] for line in result.out.splitlines()]
        self.assertLess(names.index("session.up"), names.index("session.lost"))
        result = yield self.cli("events")
        self.assertEqual(result.code, 1, result)
        self.assertIn("--follow", result.err)

    @defer.inlineCallbacks
    def test_restconf_against_a_netconf_device_says_why(self):
        yield self.server.connect(self.device, "r1")
        result = yield self.cli("restconf", "r1", "GET", "/data/x")
        self.assertEqual(result.code, 1, result)
        self.assertIn("not RESTCONF", result.err)


def _turn():
    from twisted.internet import task

    return task.deferLater(reactor, 0, lambda: None)
