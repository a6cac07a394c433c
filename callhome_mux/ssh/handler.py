"""
The SSH handler the demultiplexer calls for connections of kind SSH.

    handler = SSHHandler(directory, registry, events, SSHSettings(), NetconfSettings())
    protocol = handler.protocolFor(classified_connection)

The returned protocol is the SSH client transport for that connection; the
demultiplexer connects it to the live TCP transport and replays the bytes
it already read (the device's SSH version line).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet.interfaces import IProtocol

from callhome_mux.connection import ClassifiedConnection, ConnectionKind
from callhome_mux.events import EventBus
from callhome_mux.inventory.model import DeviceDirectory
from callhome_mux.sessions import SessionRegistry
from callhome_mux.ssh.algorithms import offer_for
from callhome_mux.ssh.callhome import SSHCallHome
from callhome_mux.ssh.settings import SSHSettings
from callhome_mux.ssh.trust import DirectoryTrust, HostKeyTrust, KnownHosts


class SSHHandler:
    """
    @param trust: host-key policy; default L{DirectoryTrust} over C{directory}
        and C{settings.known_hosts}.
    @param clock: timers (setup timeout, keepalives); default the reactor.
    """

    def __init__(
        self,
        directory: DeviceDirectory,
        registry: SessionRegistry,
        events: EventBus,
        settings: Optional[SSHSettings] = None,
        netconf_settings: Any = None,
        clock=None,
        trust: Optional[HostKeyTrust] = None,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        if netconf_settings is None:
            from callhome_mux.netconf.settings import NetconfSettings

            netconf_settings = NetconfSettings()
        self.directory = directory
        self.registry = registry
        self.events = events
        self.settings = settings or SSHSettings()
        self.netconf_settings = netconf_settings
        self.clock = clock
        # Fail at start, not per connection, when no configured algorithm works.
        self.offer = offer_for(self.settings)
        if trust is None:
            known_hosts = KnownHosts(self.settings.known_hosts) if self.settings.known_hosts else None
            trust = DirectoryTrust(directory, known_hosts)
        self.trust = trust
        #: Connections in progress or up, by connection id (for inspection).
        self.calls: Dict[str, SSHCallHome] = {}

    def protocolFor(self, connection: ClassifiedConnection) -> Optional[IProtocol]:
        if connection.kind is not ConnectionKind.SSH:
            return None
        call = SSHCallHome(
            connection,
            self.trust,
            self.registry,
            self.events,
            self.settings,
            self.netconf_settings,
            self.clock,
            self.offer,
            calls=self.calls,
        )
        self.calls[connection.connection_id] = call
        self.events.emit(
            "ssh.connection.started", connection_id=connection.connection_id, peer=connection.peer_text
        )
        return call.transport
