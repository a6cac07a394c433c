"""
The inventory as a Twisted service: opened on start, closed (buffered
counters written, database closed) on stop.

The service's C{startService} cannot return a Deferred that twistd waits
for, so whoever needs the inventory waits on L{InventoryService.whenReady}.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from callhome_mux.events import EventBus
from callhome_mux.inventory.inventory import Inventory
from callhome_mux.inventory.model import Device, DeviceDirectory
from callhome_mux.inventory.settings import InventorySettings

_log = Logger(namespace="callhome_mux.inventory")


class InventoryService(service.Service):
    name = "inventory"

    def __init__(
        self,
        settings: InventorySettings,
        state_directory: str,
        events: EventBus,
        directory: DeviceDirectory,
        config_devices: Iterable[Device] = (),
        clock=None,
    ):
        self.settings = settings
        self.state_directory = state_directory
        self.events = events
        self.directory = directory
        self.config_devices = list(config_devices)
        self.clock = clock
        self.inventory: Optional[Inventory] = None
        self._waiters: List[defer.Deferred] = []
        self._failure = None

    def whenReady(self) -> defer.Deferred:
        """Fires with the L{Inventory} once it is open (or with why it could not be)."""
        if self.inventory is not None:
            return defer.succeed(self.inventory)
        if self._failure is not None:
            return defer.fail(self._failure)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d

    def startService(self):
        super().startService()
        d = Inventory.open(
            self.settings, self.state_directory, self.events, self.directory, self.clock, self.config_devices
        )
        d.addCallbacks(self._opened, self._failed)

    def _opened(self, inventory: Inventory) -> None:
        self.inventory = inventory
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(inventory)

    def _failed(self, reason) -> None:
        _log.failure("the inventory could not be opened", reason)
        self._failure = reason
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(reason)

    def stopService(self):
        super().stopService()
        if self.inventory is None:
            return None
        inventory, self.inventory = self.inventory, None
        return inventory.close()
