"""
kill -9 of a real server loses nothing it reported as saved.

A real ``twistd callhome-mux`` process is sent devices through its HTTP
API, several requests in flight at once; at a random moment, right after
an acknowledgement, it is killed with SIGKILL.  A new server on the same
state directory must have every device whose creation was acknowledged
(HTTP 201), and must start cleanly on whatever the half-done writes left.
"""

import base64
import json
import os
import random
import signal
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.test_api_harness import _Bytes
from tests.test_plugin import REPO, ProcessProtocol

IN_FLIGHT = 8


def fake_host_key_fingerprint() -> str:
    return "SHA256:" + base64.b64encode(os.urandom(32)).decode().rstrip("=")


class KillNineTests(unittest.TestCase):
    timeout = 120

    def start_server(self, workdir):
        process = ProcessProtocol(b"api.started")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
             "callhome-mux", "--listen", "tcp:0:interface=127.0.0.1", "--set", "api.listen=tcp:0:interface=127.0.0.1"],
            env=env,
            path=workdir,
        )
        def stop():
            if transport.pid:
                transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(stop)
        return process, transport

    def api(self, workdir):
        state = os.path.join(workdir, "callhome-mux-state")
        with open(os.path.join(state, "api-address")) as handle:
            url = handle.read().strip().rstrip("/")
        with open(os.path.join(state, "api-token")) as handle:
            token = handle.read().strip()
        return url, token

    def request(self, agent, url, token, method, path, body=None):
        headers = Headers({"Authorization": [f"Bearer {token}"]})
        producer = None
        if body is not None:
            headers.addRawHeader("Content-Type", "application/json")
            producer = _Bytes(json.dumps(body).encode(), False)
        d = agent.request(method.encode(), (url + path).encode(), headers, producer)

        def read(response):
            return readBody(response).addCallback(lambda data: (response.code, data))

        return d.addCallback(read)

    @defer.inlineCallbacks
    def test_acknowledged_devices_survive(self):
        seed = random.randrange(1 << 30)
        chooser = random.Random(seed)
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        counter = iter(range(100_000))
        acknowledged = []
        # Three rounds on one state directory: the later ones kill a server
        # that has just recovered from the previous kill.
        for round_number in range(3):
            kill_after = len(acknowledged) + chooser.randint(10, 60)
            process, transport = self.start_server(workdir)
            yield process.ready
            url, token = self.api(workdir)
            yield self.verify(url, token, acknowledged, seed, round_number)
            yield self.add_until_killed(url, token, transport, process, counter, acknowledged, kill_after)
        process, _ = self.start_server(workdir)
        yield process.ready
        url, token = self.api(workdir)
        yield self.verify(url, token, acknowledged, seed, 3)

    @defer.inlineCallbacks
    def add_until_killed(self, url, token, transport, process, counter, acknowledged, kill_after):
        agent = Agent(reactor)
        killed = defer.Deferred()

        def send_one():
            if killed.called:
                return None
            device_id = f"d{next(counter)}"
            body = {"id": device_id, "ssh_host_keys": [fake_host_key_fingerprint()], "labels": {"batch": "kill9"}}
            d = self.request(agent, url, token, "POST", "/api/v1/devices", body)

            def answered(result):
                status, data = result
                self.assertEqual(status, 201, data)
                acknowledged.append(device_id)
                if len(acknowledged) >= kill_after and not killed.called:
                    # Right after an acknowledgement, with more writes in flight.
                    os.kill(transport.pid, signal.SIGKILL)
                    killed.callback(None)
                    return None
                return send_one()

            # Requests still in flight when the server dies fail: that is the point.
            return d.addCallback(answered).addErrback(lambda failure: None if killed.called else failure)

        senders = defer.gatherResults([send_one() for _ in range(IN_FLIGHT)], consumeErrors=True)
        yield killed
        yield process.ended
        yield senders

    @defer.inlineCallbacks
    def verify(self, url, token, acknowledged, seed, round_number):
        status, data = yield self.request(Agent(reactor), url, token, "GET", "/api/v1/devices")
        self.assertEqual(status, 200)
        present = {device["id"] for device in json.loads(data)["devices"]}
        missing = [device_id for device_id in acknowledged if device_id not in present]
        self.assertEqual(missing, [], f"acknowledged but lost after kill -9 (seed {seed}, round {round_number})")
