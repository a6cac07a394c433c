"""
Shared pieces of the inventory tests: an inventory on a temporary
directory with a L{task.Clock}, and the events it emitted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from typing import Any, Dict, List

from twisted.internet import defer, task

from callhome_mux.events import EventBus
from callhome_mux.inventory.identity import SSH_HOST_KEY, TLS_CERTIFICATE, Identity
from callhome_mux.inventory.inventory import Inventory
from callhome_mux.inventory.model import DeviceDirectory
from callhome_mux.inventory.settings import InventorySettings


def ssh_fp(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def tls_fp(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def ssh_identity(name: str, **kw) -> Identity:
    return Identity(SSH_HOST_KEY, ssh_fp(name), **kw)


def tls_identity(name: str, **kw) -> Identity:
    return Identity(TLS_CERTIFICATE, tls_fp(name), **kw)


class InventoryTestMixin:
    """Opens inventories under C{self.mktemp()} and closes them after the test."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.events: List[Dict[str, Any]] = []
        self.bus = EventBus(clock=self.clock)
        self.bus.addObserver(self.events.append)
        self.state_dir = os.path.abspath(self.mktemp())
        self._open: List[Inventory] = []
        self.addCleanup(self._close_all)

    def _close_all(self):
        return defer.gatherResults([inventory.close() for inventory in self._open])

    def rows(self, query):
        """C{query}'s rows, read from the inventory's database file by a connection of its own."""
        connection = sqlite3.connect(os.path.join(self.state_dir, "inventory.sqlite3"))
        try:
            return connection.execute(query).fetchall()
        finally:
            connection.close()

    @defer.inlineCallbacks
    def open_inventory(self, config_devices=(), **settings):
        inventory = yield Inventory.open(
            InventorySettings(**settings), self.state_dir, self.bus, DeviceDirectory(), self.clock, config_devices
        )
        self._open.append(inventory)
        return inventory

    @defer.inlineCallbacks
    def reopen(self, inventory, config_devices=(), **settings):
        """Close C{inventory} (its database connection too) and open the same directory again."""
        self._open.remove(inventory)
        yield inventory.close()
        reopened = yield self.open_inventory(config_devices, **settings)
        return reopened

    def names(self, prefix="inventory."):
        return [event["event"] for event in self.events if event["event"].startswith(prefix)]

    def last(self, name):
        matching = [event for event in self.events if event["event"] == name]
        return matching[-1] if matching else None


class FakeSession:
    """A registered session's face to the registry: details, whenLost, close (which loses it)."""

    def __init__(self, device_id, details):
        self.device_id = device_id
        self.details = details
        self._lost = defer.Deferred()

    def whenLost(self):
        return self._lost

    def close(self, reason="closed"):
        self._lost.callback(None)
