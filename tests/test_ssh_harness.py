"""
Shared fixtures for the SSH tests (no tests here).

L{Manager} is the real L{CallHomeService} (demultiplexer and all) with the
SSH handler registered, listening on 127.0.0.1 port 0; devices are
L{SSHCallHomeDevice} simulators dialling it over loopback.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from twisted.conch.ssh import keys
from twisted.internet import defer, reactor

from callhome_mux.config import Config
from callhome_mux.connection import ConnectionKind
from callhome_mux.events import Event
from callhome_mux.listener import ListenerSpec
from callhome_mux.service import CallHomeService
from callhome_mux.ssh.handler import SSHHandler
from callhome_mux.ssh.settings import SSHSettings


class Manager:
    def __init__(self, testcase, devices=(), settings: Optional[SSHSettings] = None, clock=None, trust=None):
        self.testcase = testcase
        config = Config(listeners=(ListenerSpec.parse("tcp:0:interface=127.0.0.1"),), state_dir=testcase.mktemp())
        self.service = CallHomeService(config, reactor, install_default_handlers=False)
        self.events: List[Event] = []
        self._event_waiters: List[tuple] = []
        self._accepted = 0
        self._closed = 0
        self._idle_waiters: List[defer.Deferred] = []
        self.service.addEventObserver(self._observe)
        self._initial_devices = list(devices)
        self.handler = SSHHandler(
            self.service.directory,
            self.service.registry,
            self.service.events,
            settings or SSHSettings(),
            clock=clock,
            trust=trust,
        )
        self.service.registerHandler(ConnectionKind.SSH, self.handler)
        self.registry = self.service.registry
        self.port: Optional[int] = None
        self._devices: List[Any] = []

    @defer.inlineCallbacks
    def start(self):
        self.service.startService()
        self.testcase.addCleanup(self.stop)
        yield self.service.whenStarted()
        (port,) = yield self.service.whenListening()
        self.port = port.getHost().port
        yield self.addDevices(self._initial_devices)
        return self

    @defer.inlineCallbacks
    def addDevices(self, devices):
        """Add devices the way an operator would at run time (the inventory owns the directory)."""
        inventory = getattr(self.service, "inventory", None)
        if inventory is None:
            self.service.directory.replace(list(self.service.directory.all()) + list(devices))
            return
        for device in devices:
            yield inventory.add_device(device)

    def callHome(self, device) -> defer.Deferred:
        self._devices.append(device)
        return device.callHome(reactor, "127.0.0.1", self.port)

    # -- events -------------------------------------------------------------

    def _observe(self, event: Event) -> None:
        self.events.append(event)
        if event["event"] == "connection.accepted":
            self._accepted += 1
        elif event["event"] == "connection.closed":
            self._closed += 1
            self._check_idle()
        for entry in list(self._event_waiters):
            name, match, waiter = entry
            if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                self._event_waiters.remove(entry)
                waiter.callback(event)

    def whenEvent(self, name: str, **match) -> defer.Deferred:
        """The next event called C{name} whose fields include C{match}."""
        waiter: defer.Deferred = defer.Deferred()
        self._event_waiters.append((name, match, waiter))
        return waiter

    def named(self, name: str) -> List[Event]:
        return [event for event in self.events if event["event"] == name]

    # -- teardown -------------------------------------------------------------

    def _check_idle(self) -> None:
        if self._closed >= self._accepted:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def whenIdle(self) -> defer.Deferred:
        """Fires once every accepted connection has closed."""
        waiter: defer.Deferred = defer.Deferred()
        self._idle_waiters.append(waiter)
        self._check_idle()
        return waiter

    @defer.inlineCallbacks
    def stop(self):
        for device in self._devices:
            for connection in list(device.connections):
                connection.transport.abortConnection()
        for call in list(self.handler.calls.values()):
            if call.transport.transport is not None:
                call.transport.transport.abortConnection()
        yield self.whenIdle()
        yield defer.gatherResults([c.lost for d in self._devices for c in d.history])
        yield self.service.stopService()


def write_private_key(testcase, key: keys.Key, passphrase: Optional[bytes] = None) -> str:
    """Write C{key} in OpenSSH format to a temp file (mode 0600); return its path."""
    path = testcase.mktemp()
    with open(path, "wb") as handle:
        handle.write(key.toString("openssh", subtype="v1", passphrase=passphrase))
    os.chmod(path, 0o600)
    return path


def generate_key(kind: str) -> keys.Key:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if kind == "ed25519":
        return keys.Key(ed25519.Ed25519PrivateKey.generate())
    if kind == "ecdsa":
        return keys.Key(ec.generate_private_key(ec.SECP256R1()))
    if kind == "rsa":
        return keys.Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    raise ValueError(kind)
