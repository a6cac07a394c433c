"""
Shared fixtures for the API and CLI tests (no tests here).

L{APIServer} is the real L{CallHomeService} (demultiplexer, SSH and TLS
handlers, inventory) listening on 127.0.0.1 port 0, with the API service
as its child on another loopback port; devices are the simulators in
L{callhome_mux.testing} dialling it over loopback.  L{http} is a small
Agent-based client returning (status, headers, body).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from callhome_mux.api import make_api_service
from callhome_mux.api.settings import APISettings
from callhome_mux.config import config_from_document
from callhome_mux.service import CallHomeService
from callhome_mux.testing.ssh_device import SSHCallHomeDevice


@implementer(IBodyProducer)
class _Bytes:
    def __init__(self, data: bytes, chunked: bool = False):
        from twisted.web.iweb import UNKNOWN_LENGTH

        self.data = data
        # Unknown length: the Agent sends the body chunked.
        self.length = UNKNOWN_LENGTH if chunked else len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass

    def resumeProducing(self):
        pass


class Reply:
    def __init__(self, status: int, headers: Headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:300]!r}>"


def ssh_device_table(device: SSHCallHomeDevice, device_id: str, **extra) -> Dict[str, Any]:
    return {
        "id": device_id,
        "ssh_host_keys": [device.host_key_line],
        "credentials": {"username": device.username, "password": device.password},
        **extra,
    }


def temporary_directory(testcase) -> str:
    path = tempfile.mkdtemp(prefix="callhome-api-test-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


class APIServer:
    def __init__(self, testcase, devices=(), policy: str = "pending", sections=None, state_dir=None, **api_settings):
        self.testcase = testcase
        # Not testcase.mktemp(): under pytest that lands in the working tree.
        self.state_dir = state_dir or temporary_directory(testcase)
        document = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "state_dir": self.state_dir,
            "inventory": {"unknown_device_policy": policy},
            "devices": list(devices),
            **(sections or {}),
        }
        self.service = CallHomeService(config_from_document(document), reactor)
        settings = {"listen": "tcp:0:interface=127.0.0.1", **api_settings}
        existing = self.service.namedServices.get("api")
        if existing is not None:
            # The service made its own (on the default port): use ours, on port 0.
            self.service.removeService(existing)
        self.api = make_api_service(self.service, APISettings(**settings))
        self.api.setServiceParent(self.service)
        self.events: List[Dict[str, Any]] = []
        self._waiters: List[tuple] = []
        self.service.events.addObserver(self._observe)
        self.agent = Agent(reactor)
        self._devices: List[Any] = []

    @defer.inlineCallbacks
    def start(self):
        self.service.startService()
        self.testcase.addCleanup(self.stop)
        yield self.service.whenStarted()
        port = yield self.api.whenListening()
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.port = self.service.listeners[0].port.getHost().port
        with open(f"{self.state_dir}/api-token") as handle:
            self.admin_token = handle.read().strip()
        return self

    # -- events ------------------------------------------------------------------

    def _observe(self, event) -> None:
        self.events.append(event)
        for entry in list(self._waiters):
            name, match, waiter = entry
            if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                self._waiters.remove(entry)
                waiter.callback(event)

    def whenEvent(self, name: str, **match) -> defer.Deferred:
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append((name, match, waiter))
        return waiter

    def named(self, name: str) -> List[Dict[str, Any]]:
        return [event for event in self.events if event["event"] == name]

    # -- devices -----------------------------------------------------------------

    @defer.inlineCallbacks
    def connect(self, device: SSHCallHomeDevice, device_id: str):
        """Call home with C{device}; fire with its session once registered."""
        self._devices.append(device)
        up = self.service.registry.whenConnected(device_id)
        yield device.callHome(reactor, "127.0.0.1", self.port)
        session = yield up
        return session

    def call_home(self, device) -> defer.Deferred:
        self._devices.append(device)
        return device.callHome(reactor, "127.0.0.1", self.port)

    # -- HTTP --------------------------------------------------------------------

    @defer.inlineCallbacks
    def http(self, method: str, path: str, token: Any = "admin", body: Any = None,
             headers: Optional[Dict[str, str]] = None, chunked: bool = False):
        """C{token}: "admin", None (no header), or a token string."""
        raw = Headers()
        if token == "admin":
            token = self.admin_token
        if token is not None:
            raw.addRawHeader("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            raw.addRawHeader(name, value)
        producer = None
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
                raw.addRawHeader("Content-Type", "application/json")
            producer = _Bytes(body.encode("utf-8") if isinstance(body, str) else body, chunked)
        response = yield self.agent.request(method.encode("ascii"), (self.url + path).encode("utf-8"), raw, producer)
        data = yield readBody(response)
        return Reply(response.code, response.headers, data)

    @defer.inlineCallbacks
    def token(self, role: str, labels: Optional[Dict[str, str]] = None) -> str:
        reply = yield self.http("POST", "/api/v1/tokens", body={"role": role, "labels": labels or {}})
        assert reply.status == 201, reply
        return reply.json()["secret"]

    # -- teardown ----------------------------------------------------------------

    @defer.inlineCallbacks
    def stop(self):
        for device in self._devices:
            for connection in list(getattr(device, "connections", [])):
                connection.transport.abortConnection()
        yield self.service.stopService()
        yield defer.gatherResults(
            [c.lost for d in self._devices for c in getattr(d, "history", [])], consumeErrors=True
        )
        pool = getattr(self.agent, "_pool", None)
        if pool is not None:
            yield pool.closeCachedConnections()
