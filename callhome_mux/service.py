"""
The callhome-mux service: listeners, handlers, sessions, as one IService.

The twistd plugin builds exactly this; an application that embeds
callhome-mux builds it too::

    from callhome_mux.config import load_config
    from callhome_mux.service import CallHomeService

    service = CallHomeService(load_config("callhome-mux.toml"))
    service.setServiceParent(application)       # or service.startService()
    session = await service.whenConnected("router-1")
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any, Dict, List, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure

from callhome_mux.config import SECTIONS, Config, config_devices
from callhome_mux.connection import ConnectionHandler, ConnectionKind
from callhome_mux.demux.protocol import Admission, DemuxFactory
from callhome_mux.demux.proxy import ProxyHeaderFactory
from callhome_mux.events import EventBus, EventObserver
from callhome_mux.gc_tuning import CollectorTuning
from callhome_mux.inventory.model import DeviceDirectory
from callhome_mux.listener import ListenerSpec
from callhome_mux.listening import PortWaiter
from callhome_mux.sessions import SessionRegistry


class ListenerService(service.Service):
    """One listening endpoint; C{whenListening()} gives its port (useful with port 0)."""

    def __init__(self, spec: ListenerSpec, factory, reactor, events: EventBus):
        self.spec = spec
        self.factory = factory
        self._reactor = reactor
        self._events = events
        self._port = PortWaiter()
        self.setName(spec.name)

    @property
    def port(self):
        return self._port.port

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self.spec.endpoint)
        endpoint.listen(self.factory).addCallbacks(self._listening, self._failed)

    def _listening(self, port) -> None:
        address = port.getHost()
        self._events.emit(
            "listener.started",
            listener=self.spec.name,
            mode=self.spec.mode,
            proxy=self.spec.proxy,
            address=f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}",
        )
        self._port.listening(port)

    def _failed(self, failure) -> None:
        self._events.emit("listener.failed", listener=self.spec.name, reason=failure.getErrorMessage())
        if not self._port.failed(failure):
            failure.raiseException()

    def whenListening(self) -> defer.Deferred:
        return self._port.whenListening()

    def stopService(self):
        super().stopService()
        return self._port.stop()


class CallHomeService(service.MultiService):
    """
    Everything callhome-mux runs, for twistd or an embedding application.

    @ivar events: the L{EventBus}; C{addObserver} to watch every event.
    @ivar registry: the L{SessionRegistry} of sessions that are up.
    @ivar directory: the L{DeviceDirectory} the SSH and TLS layers consult.
    @ivar handlers: connection kind -> handler; L{registerHandler} to change.
    """

    def __init__(
        self,
        config: Optional[Config] = None,
        reactor=None,
        install_default_handlers: bool = True,
        config_loader=None,
    ):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config if config is not None else Config()
        self.reactor = reactor
        self.events = EventBus(clock=reactor)
        self.registry = SessionRegistry(self.events)
        self.directory = DeviceDirectory()
        self.handlers: Dict[ConnectionKind, ConnectionHandler] = {}
        self.admission = Admission(self.config.demux)
        self.listeners: List[ListenerService] = []
        #: The L{Inventory}, open from L{startService} until L{stopService}.
        self.inventory = None
        self._install_default_handlers_on_start = install_default_handlers
        #: Re-reads the configuration for L{reload}: the plugin passes one that
        #: re-applies the same command line; by default, the same file again.
        self._config_loader = config_loader or self._reload_same_file
        #: Set by the twistd plugin: a server that cannot start stops the process.
        self.stop_reactor_on_start_failure = False
        self._start_outcome = None  # the service once started, or the Failure
        self._collector = CollectorTuning(self.config.process)
        self._start_waiters: List[defer.Deferred] = []
        for spec in self.config.listeners:
            self._add_listener(spec)

    # -- assembly --------------------------------------------------------

    def _add_listener(self, spec: ListenerSpec) -> ListenerService:
        settings = self.config.demux
        factory = demux = DemuxFactory(
            settings,
            self.events,
            self.handlers,
            admission=self.admission,
            clock=self.reactor,
            listener_name=spec.name,
            pinned_kind=spec.pinned_kind,
            pinned_details=spec.pinned_details,
        )
        if spec.proxy:
            factory = ProxyHeaderFactory(
                factory, self.events, self.reactor, settings.proxy_header_timeout, listener_name=spec.name
            )
        listener = ListenerService(spec, factory, self.reactor, self.events)
        listener.demux = demux
        listener.setServiceParent(self)
        self.listeners.append(listener)
        return listener

    def _install_default_handlers(self) -> None:
        """The SSH handler, and the TLS handler for both TLS directions."""
        from functools import partial

        from callhome_mux.inventory.hooks import InventoryCertificatePolicy, InventoryHostKeyTrust
        from callhome_mux.restconf.session import restconf_protocol
        from callhome_mux.ssh.handler import SSHHandler
        from callhome_mux.ssh.trust import DirectoryTrust, KnownHosts
        from callhome_mux.tls.handler import TLSHandler

        config = self.config
        # Known devices are identified through the directory (and known_hosts);
        # the inventory decides about the unknown (reject or pending) and
        # throttles devices whose calls keep failing.
        known_hosts = KnownHosts(config.ssh.known_hosts) if config.ssh.known_hosts else None
        ssh = SSHHandler(
            self.directory,
            self.registry,
            self.events,
            config.ssh,
            config.netconf,
            clock=self.reactor,
            trust=InventoryHostKeyTrust(self.inventory, DirectoryTrust(self.directory, known_hosts)),
        )
        tls = TLSHandler(
            self.directory,
            self.registry,
            self.events,
            config.tls,
            config.netconf,
            self.state_dir,
            clock=self.reactor,
            restconf_factory=partial(restconf_protocol, settings=config.restconf),
            unknown_device_policy=InventoryCertificatePolicy(self.inventory),
        )
        inventory = self.inventory
        tls.device_gate = lambda device, peer: inventory.is_throttled(device.id, address=peer)
        self.registerHandler(ConnectionKind.SSH, ssh)
        self.registerHandler(ConnectionKind.TLS_SILENT, tls)
        self.registerHandler(ConnectionKind.TLS_CLIENT_HELLO, tls)

    def registerHandler(self, kind: ConnectionKind, handler: Optional[ConnectionHandler]) -> None:
        """Run C{kind} connections with C{handler}; C{None} closes them (with an event)."""
        if handler is None:
            self.handlers.pop(kind, None)
        else:
            self.handlers[kind] = handler

    @property
    def state_dir(self) -> str:
        return self.config.state_dir

    def prepare_state_dir(self) -> str:
        """Create the state directory (mode 0700) if needed; warn if others can read it."""
        path = os.path.abspath(self.config.state_dir)
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)
            self.events.emit("state.created", path=path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            self.events.emit(
                "state.permissions.error",
                path=path,
                reason=f"state directory mode is {oct(mode)}; it holds keys and tokens, use 0700",
            )
        return path

    # -- lifecycle -------------------------------------------------------

    def startService(self) -> None:
        """
        Prepare the state directory, open the inventory, then listen.

        Listeners start only once the inventory is loaded, so that no device
        is judged against an empty directory.  L{whenStarted} fires then.
        """
        service.Service.startService(self)
        self.events.emit("service.starting", listeners=[spec.name for spec in self.config.listeners])
        defer.maybeDeferred(self._start).addCallbacks(self._running, self._start_failed)

    @defer.inlineCallbacks
    def _start(self):
        from callhome_mux.inventory.inventory import Inventory

        state_dir = self.prepare_state_dir()
        self.inventory = yield Inventory.open(
            self.config.inventory,
            state_dir,
            self.events,
            directory=self.directory,
            clock=self.reactor,
            config_devices=config_devices(self.config),
        )
        # Session details (algorithms, capabilities) reach the device state.
        self.inventory.watch_sessions(self.registry)
        # Addresses whose calls keep failing are refused before any work.
        inventory = self.inventory
        for listener in self.listeners:
            listener.demux.address_policy = lambda host: inventory.is_throttled(address=host)
        if self._install_default_handlers_on_start:
            self._install_default_handlers()
        for child in self:
            child.startService()
        yield self.whenListening()

    def _running(self, _):
        # Everything loaded at start is alive for good: out of the
        # collector's way from now on (see callhome_mux.gc_tuning).
        self._collector.apply()
        self._start_outcome = self
        self.events.emit("service.started", devices=len(self.directory))
        self._notify_start_waiters()

    def _start_failed(self, failure):
        self._start_outcome = failure
        self.events.emit("service.start.failed", reason=failure.getErrorMessage())
        if self.stop_reactor_on_start_failure and self.reactor.running:
            # Under twistd nobody waits on us: a server that cannot start stops.
            from twisted.python import log

            log.err(failure, "callhome-mux could not start")
            self.reactor.stop()
        self._notify_start_waiters()

    def _notify_start_waiters(self):
        waiters, self._start_waiters = self._start_waiters, []
        for waiter in waiters:
            self._fire_start_waiter(waiter)

    def _fire_start_waiter(self, waiter: defer.Deferred) -> None:
        if isinstance(self._start_outcome, Failure):
            waiter.errback(self._start_outcome)
        else:
            waiter.callback(self._start_outcome)

    def whenStarted(self) -> defer.Deferred:
        """Fires with the service once the inventory is open and every listener listens."""
        waiter: defer.Deferred = defer.Deferred()
        if self._start_outcome is None:
            self._start_waiters.append(waiter)
        else:
            self._fire_start_waiter(waiter)
        return waiter

    #: Seconds a stop waits for sessions to close cleanly (NETCONF close-session).
    stop_grace = 5.0

    @defer.inlineCallbacks
    def stopService(self):
        # Listeners first (no new calls), then close every session and give
        # them a bounded time to end cleanly, then the inventory.
        yield defer.maybeDeferred(super().stopService)
        closing = []
        for session in list(self.registry.sessions()):
            closing.append(session.whenLost())
            session.close("callhome-mux is stopping")
        if closing:
            everything = defer.DeferredList(closing, consumeErrors=True)
            timer = self.reactor.callLater(self.stop_grace, everything.cancel)
            try:
                yield everything
            except defer.CancelledError:
                pass
            if timer.active():
                timer.cancel()
        if self.inventory is not None:
            inventory, self.inventory = self.inventory, None
            yield inventory.close()
        self._collector.undo()
        self.events.emit("service.stopped")

    # -- reload ------------------------------------------------------------

    def _reload_same_file(self) -> Config:
        from callhome_mux.config import load_config

        config = self.config
        if config.path is None:
            return config
        return load_config(
            config.path, listen=[spec.name for spec in config.listeners], state_dir=config.state_dir
        )

    @defer.inlineCallbacks
    def reload(self):
        """
        Re-read the configuration and apply its devices (what SIGHUP does).

        Devices added, changed or removed take effect at once; sessions of
        unchanged devices stay up, those of changed or removed devices are
        closed.  A file that does not load, or whose devices conflict, is
        refused as a whole and the running configuration stays.  Other
        settings (listeners, timers) need a restart: a change to them is
        reported, not applied.  Fires with the inventory's changes, or
        C{None} when the new file was refused.
        """
        from callhome_mux.settings import ConfigError

        self.events.emit("config.reload.started", path=self.config.path)
        try:
            new = self._config_loader()
            devices = config_devices(new)
        except (ConfigError, OSError) as error:
            self.events.emit("config.reload.failed", path=self.config.path, reason=str(error))
            return None
        try:
            changes = yield self.inventory.apply_config(devices)
        except ConfigError as error:
            self.events.emit("config.reload.failed", path=self.config.path, reason=str(error))
            return None
        for device_id in changes.affected:
            session = self.registry.get(device_id)
            if session is not None:
                session.close("the device's configuration changed")
        restart_needed = sorted(
            name for name in ("listeners", "state_dir", *SECTIONS) if getattr(self.config, name) != getattr(new, name)
        )
        self.config = dataclasses.replace(self.config, devices=new.devices)
        self.events.emit(
            "config.reloaded",
            path=self.config.path,
            added=list(changes.added),
            changed=list(changes.changed),
            removed=list(changes.removed),
            restart_needed=restart_needed,
        )
        return changes

    def installSignalHandlers(self) -> None:
        """Reload on SIGHUP (the twistd plugin calls this)."""
        import signal

        def on_hangup(signum, frame):
            self.reactor.callFromThread(self.reload)

        signal.signal(signal.SIGHUP, on_hangup)

    # -- for applications ------------------------------------------------

    def whenConnected(self, device_id: str) -> defer.Deferred:
        """A Deferred firing with the device's session, now or when it calls home."""
        return self.registry.whenConnected(device_id)

    def sessions(self) -> List[Any]:
        return self.registry.sessions()

    def addEventObserver(self, observer: EventObserver) -> None:
        self.events.addObserver(observer)

    def removeEventObserver(self, observer: EventObserver) -> None:
        self.events.removeObserver(observer)

    def whenListening(self) -> defer.Deferred:
        """A Deferred firing with the listening ports, in listener order, once all listen."""
        return defer.gatherResults([listener.whenListening() for listener in self.listeners], consumeErrors=True)
