"""
A REAL kill -9: what the store reported as saved is on disk.

A child process opens the inventory and writes devices, history and
pending entries as fast as it can, printing one line per write after its
Deferred fired.  The test kills it with SIGKILL at a random moment, then
reopens the database and checks every printed write is there.

Run as a script, this file is the child.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest


def _fingerprint(n: int) -> str:
    import base64
    import hashlib

    return "SHA256:" + base64.b64encode(hashlib.sha256(b"k%d" % n).digest()).decode().rstrip("=")


def child(state_dir: str) -> None:
    from twisted.internet import task

    from callhome_mux.events import EventBus
    from callhome_mux.inventory.identity import SSH_HOST_KEY, Identity
    from callhome_mux.inventory.inventory import Inventory
    from callhome_mux.inventory.model import Device
    from callhome_mux.inventory.settings import InventorySettings

    def report(line: str) -> None:
        # One unbuffered write per line: what the parent reads is exactly
        # what had fired before the kill.
        os.write(1, (line + "\n").encode())

    @defer.inlineCallbacks
    def run(reactor):
        inventory = yield Inventory.open(
            InventorySettings(unknown_device_policy="pending", max_pending=1000000), state_dir, EventBus(), observe=False
        )
        report("ready")
        n = 0
        while True:
            writes = []
            for _ in range(4):  # several writes in flight: batches of more than one
                n += 1
                device_id = f"d{n}"
                d = inventory.add_device(Device(device_id, ssh_host_keys=(_fingerprint(n),)))
                d.addCallback(lambda _, i=device_id: report(f"device {i}"))
                writes.append(d)
                d = inventory.record_event(device_id, "stress.event", n=n)
                d.addCallback(lambda _, i=n: report(f"event {i}"))
                writes.append(d)
                decision = inventory.decide_unknown(Identity(SSH_HOST_KEY, _fingerprint(-n)))
                decision.recorded.addCallback(lambda entry: report(f"pending {entry.fingerprint}"))
                writes.append(decision.recorded)
            yield defer.gatherResults(writes)

    task.react(run)


class _Child(protocol.ProcessProtocol):
    def __init__(self, kill_after: int, delay: float):
        self.kill_after = kill_after
        self.delay = delay
        self.buffer = b""
        self.lines = []
        self.stderr = b""
        self.ended = defer.Deferred()
        self.kill_sent = False

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        self.lines.extend(line.decode() for line in complete)
        if not self.kill_sent and len(self.lines) >= self.kill_after:
            self.kill_sent = True
            # A random moment: not at a line boundary we chose.
            reactor.callLater(self.delay, self._kill)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def _kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")
        except Exception:
            pass

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)


class KillNineTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_nothing_reported_saved_is_lost(self):
        seed = int.from_bytes(os.urandom(4), "big")
        rng = random.Random(seed)
        state_dir = os.path.abspath(self.mktemp())
        os.makedirs(state_dir)
        child_protocol = _Child(kill_after=rng.randint(30, 600), delay=rng.uniform(0, 0.05))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")])
        reactor.spawnProcess(
            child_protocol, sys.executable, [sys.executable, os.path.abspath(__file__), state_dir], env=env
        )
        ended = yield child_protocol.ended
        self.assertTrue(child_protocol.kill_sent, f"child ended by itself: {ended!r} {child_protocol.stderr[-2000:]!r}")
        self.assertEqual(getattr(ended, "signal", None), signal.SIGKILL, repr(ended))
        lines = child_protocol.lines
        self.assertEqual(lines[0], "ready", child_protocol.stderr[-2000:])
        devices = {line.split()[1] for line in lines if line.startswith("device ")}
        events = {int(line.split()[1]) for line in lines if line.startswith("event ")}
        pending = {line.split()[1] for line in lines if line.startswith("pending ")}
        self.assertGreater(len(devices), 0)

        # First a plain connection: the file is consistent after the kill.
        connection = sqlite3.connect(os.path.join(state_dir, "inventory.sqlite3"))
        self.assertEqual(connection.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        stored_events = {n for (n,) in connection.execute("SELECT json_extract(data, '$.n') FROM history")}
        connection.close()

        # Then the inventory itself.
        from callhome_mux.events import EventBus
        from callhome_mux.inventory.inventory import Inventory
        from callhome_mux.inventory.settings import InventorySettings

        inventory = yield Inventory.open(InventorySettings(), state_dir, EventBus(), observe=False)
        try:
            stored_devices = {device.id for device in inventory.devices()}
            stored_pending = {entry.fingerprint for entry in inventory.pending()}
        finally:
            yield inventory.close()
        message = f"seed {seed}, {len(lines)} lines"
        self.assertEqual(devices - stored_devices, set(), message)
        self.assertEqual(events - stored_events, set(), message)
        self.assertEqual(pending - stored_pending, set(), message)


if __name__ == "__main__":
    child(sys.argv[1])
