"""
One SSH call-home connection, from the device's version line to a
registered NETCONF session and until it ends.

The order is fixed by RFC 8071: prove the host key first (who is this?),
then the Juniper preamble if the device has a secret, then log in with that
device's credentials only, then the C{netconf} subsystem and the hello,
then register the session.  Every refusal is one event and a closed
connection.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.conch.ssh import transport
from twisted.internet import defer
from twisted.python import failure

from callhome_mux.connection import ClassifiedConnection
from callhome_mux.events import EventBus
from callhome_mux.inventory.model import Credentials, Device
from callhome_mux.sessions import SessionRegistry
from callhome_mux.ssh import netconf_link
from callhome_mux.ssh.client import (
    CallHomeClientTransport,
    CallHomeConnection,
    ChannelTransport,
    NetconfChannel,
    keep_conch_log,
)
from callhome_mux.ssh.keepalive import KeepaliveMonitor
from callhome_mux.ssh.preamble import preamble_problem
from callhome_mux.ssh.settings import SSHSettings
from callhome_mux.ssh.trust import HOSTKEY_MISMATCH, HostKeyTrust, PresentedHostKey
from callhome_mux.ssh.userauth import CredentialError, DeviceUserAuth, load_private_key
from callhome_mux.timers import shared_timers


#: What every event of a call home carries first (L{SSHCallHome._emit}).
_BASE_FIELDS = frozenset(("connection_id", "peer", "device_id"))


class HostKeyRefused(Exception):
    """The host key (or the preamble that goes with it) is not accepted."""


class SSHConnectionEnded(Exception):
    """Why the SSH connection under a NETCONF session ended (str() is the reason)."""


class SSHCallHome:
    """The state of one call-home connection; the SSH classes report to it."""

    def __init__(
        self,
        connection: ClassifiedConnection,
        trust: HostKeyTrust,
        registry: SessionRegistry,
        events: EventBus,
        settings: SSHSettings,
        netconf_settings: Any,
        clock,
        offer,
        calls: Optional[Dict[str, "SSHCallHome"]] = None,
    ):
        self.connection = connection
        self.trust = trust
        self.registry = registry
        self.events = events
        self.settings = settings
        self.netconf_settings = netconf_settings
        self.clock = clock
        self.transport = CallHomeClientTransport(self, offer, debug_log=settings.conch_debug_log)
        self.device: Optional[Device] = None
        #: The host key presented, until the transport is secured; then only its blob (for re-keys).
        self.host_key: Optional[PresentedHostKey] = None
        self._host_key_blob = b""
        self._candidate = None
        #: Completed key exchanges (the first one and any re-keys).
        self.key_exchanges = 0
        self.details: Dict[str, Any] = {
            "transport": "netconf-ssh",
            "peer": connection.peer_text,
            "connection_id": connection.connection_id,
            "listener": connection.listener,
        }
        #: The registered NETCONF session, once the hello is done.
        self.session = None
        self.stage = "key-exchange"
        self.global_requests_answered = 0
        self._close_reason: Optional[str] = None
        self._keepalive: Optional[KeepaliveMonitor] = None
        self._setup_timer = None
        self._netconf_protocol = None
        # The handler's calls in progress or up, by connection id: this one
        # leaves them when it ends (the dict, not a bound method kept per call).
        self._calls = calls

    # -- reporting -----------------------------------------------------------

    def _emit(self, event: str, **fields) -> None:
        # The peer as text was written into the details once.  Fields go
        # straight into emit's keywords (one dict, not three), unless one
        # names a base field: then it replaces that field in its place.
        if _BASE_FIELDS.isdisjoint(fields):
            if self.device is None:
                self.events.emit(event, connection_id=self.connection.connection_id, peer=self.details["peer"], **fields)
            else:
                self.events.emit(
                    event, connection_id=self.connection.connection_id, peer=self.details["peer"],
                    device_id=self.device.id, **fields,
                )
            return
        base = {"connection_id": self.connection.connection_id, "peer": self.details["peer"]}
        if self.device is not None:
            base["device_id"] = self.device.id
        base.update(fields)
        self.events.emit(event, **base)

    def close(self, reason: str, code: int = transport.DISCONNECT_BY_APPLICATION) -> None:
        """End the connection with an SSH DISCONNECT (the reason goes to the device too)."""
        if self._close_reason is None:
            self._close_reason = reason
        t = self.transport
        if t.transport is None or t.transport.disconnecting:
            return
        t.sendDisconnect(code, reason.encode("utf-8", "replace")[:200])

    # -- from the transport --------------------------------------------------

    def started(self) -> None:
        self._setup_timer = shared_timers(self.clock).callLater(self.settings.auth_timeout, self._setupTimedOut)

    def verifyHostKey(self, blob: bytes) -> defer.Deferred:
        if self.device is not None:
            return defer.maybeDeferred(self._rekeyHostKey, blob)
        key = PresentedHostKey(blob)
        self.host_key = key
        claimed = self.connection.preamble.get("DEVICE-ID")
        # The usual trust answers at once: judge it at once too, without a
        # Deferred chain per connection; conch gets an already-fired one.
        try:
            verdict = self.trust(key, claimed, self.details["peer"])
            if isinstance(verdict, defer.Deferred):
                return verdict.addCallback(self._judgeHostKey, key, claimed)
            self._judgeHostKey(verdict, key, claimed)
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def _judgeHostKey(self, verdict, key: PresentedHostKey, claimed: Optional[str]) -> None:
        who = {"fingerprint": key.fingerprint, "algorithm": key.algorithm, "host_key": key.openssh_line}
        if claimed is not None:
            who["claimed_device_id"] = claimed
        if not verdict.trusted:
            self._close_reason = verdict.reason
            self._emit(verdict.event, reason=verdict.reason, **who)
            raise HostKeyRefused(verdict.reason)
        device = verdict.device
        problem = preamble_problem(device.outbound_ssh_secret, self.connection.preamble, key.blob)
        if problem is not None:
            self._close_reason = problem
            self._emit("ssh.preamble.rejected", device_id=device.id, reason=problem, **who)
            raise HostKeyRefused(problem)
        # conch checks the exchange-hash signature only after this returns:
        # the key is proven (and the device known) once the transport is
        # secured, not yet here.
        self._candidate = (device, verdict.source, who)

    def _rekeyHostKey(self, blob: bytes) -> None:
        # A re-key must show the key that identified the device.
        if blob == self._host_key_blob:
            return
        key = PresentedHostKey(blob)
        reason = "the host key changed during a re-key"
        self._close_reason = reason
        self._emit(HOSTKEY_MISMATCH, reason=reason, fingerprint=key.fingerprint, algorithm=key.algorithm, host_key=key.openssh_line)
        raise HostKeyRefused(reason)

    def transportSecured(self, t: CallHomeClientTransport) -> None:
        self.key_exchanges += 1
        if self.device is not None:
            # conch reports every NEWKEYS; after a re-key only the
            # algorithms may have changed.
            self.details["algorithms"] = t.negotiated()
            return
        device, source, who = self._candidate
        self._candidate = None
        self.device = device
        key = self.host_key
        # Once secured only the blob is needed (re-keys must show it again).
        self.host_key = None
        self._host_key_blob = key.blob
        self.details.update(device_id=device.id, host_key_fingerprint=key.fingerprint, host_key_algorithm=key.algorithm)
        self._emit("ssh.hostkey.accepted", source=source, **who)
        self.details["algorithms"] = t.negotiated()
        self.stage = "authentication"
        credentials = self._credentials()
        try:
            private_key = load_private_key(credentials)
        except CredentialError as error:
            self._authFailed(str(error), [], [], credentials.username)
            return
        self.details["username"] = credentials.username
        auth = DeviceUserAuth(
            credentials,
            private_key,
            CallHomeConnection(self),
            on_failed=self._authRefused,
            on_succeeded=self._authSucceeded,
        )
        if self.settings.conch_debug_log:
            keep_conch_log(auth)
        t.requestService(auth)

    def _credentials(self) -> Credentials:
        # RFC 8071 C7: this device's credentials, or the configured default;
        # never another device's.
        own = self.device.credentials
        if own.password is not None or own.private_key_file is not None:
            return own
        return self.settings.default_credentials() or own

    def _authFailed(self, reason: str, tried, offered, username: str) -> None:
        self._emit(
            "ssh.auth.failed",
            reason=reason,
            username=username,
            methods_tried=list(tried),
            methods_offered=list(offered),
        )
        self.close(f"authentication failed: {reason}", transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE)

    def _authRefused(self, reason: str, tried, offered) -> None:
        # The username tried is the one noted in transportSecured.
        self._authFailed(reason, tried, offered, self.details["username"])

    def _authSucceeded(self, method: str) -> None:
        self.details["auth_method"] = method
        self._emit("ssh.auth.succeeded", method=method, username=self.details.get("username"))

    def peerDisconnected(self, code: Optional[int], description: Optional[str], lost=None) -> None:
        """The device sent DISCONNECT (code, description) or TCP ended (lost)."""
        if self._close_reason is not None:
            return
        if lost is not None:
            self._close_reason = f"connection lost: {lost.getErrorMessage()}"
        else:
            self._close_reason = f"the device disconnected: {description or code}"

    def transportLost(self, reason: failure.Failure) -> None:
        self._cancelSetupTimer()
        if self._keepalive is not None:
            self._keepalive.stop()
        why = self._close_reason or f"connection lost: {reason.getErrorMessage()}"
        self._emit("ssh.connection.closed", stage=self.stage, reason=why)
        self._endNetconf(why)
        if self._calls is not None:
            self._calls.pop(self.connection.connection_id, None)

    # -- from the connection service -----------------------------------------

    def connectionServiceStarted(self, conn: CallHomeConnection) -> None:
        self.stage = "channel"
        self.transport.forgetPeerExtensions()
        self._keepalive = KeepaliveMonitor(
            self.clock, self.settings.keepalive_interval, self.settings.keepalive_max_missed, conn
        )
        self._keepalive.start()
        self.transport.keepalive = self._keepalive
        conn.openChannel(
            NetconfChannel(
                self,
                self.settings.subsystem.encode("ascii"),
                self.settings.channel_window,
                self.settings.channel_max_packet,
                conn=conn,
            )
        )

    def globalRequestReceived(self, name: str) -> None:
        self.global_requests_answered += 1

    def keepaliveLost(self, missed: int) -> None:
        reason = f"no answer to {missed} keepalives sent {self.settings.keepalive_interval:g} s apart"
        self._emit("ssh.keepalive.lost", missed=missed, interval=self.settings.keepalive_interval, reason=reason)
        self.close(reason)
        # A device that ignores keepalives may ignore DISCONNECT too.
        if self.transport.transport is not None:
            self.transport.transport.loseConnection()

    # -- from the channel ----------------------------------------------------

    def channelOpenFailed(self, reason) -> None:
        text = getattr(reason, "desc", None) or str(reason)
        self._emit("ssh.channel.failed", reason=str(text))
        self.close(f"session channel refused: {text}")

    def subsystemRefused(self, channel: NetconfChannel, reason) -> None:
        subsystem = self.settings.subsystem
        self._emit("ssh.subsystem.refused", subsystem=subsystem, reason=f"the device refused subsystem {subsystem!r}")
        self.close(f"subsystem {subsystem} refused")

    def subsystemStarted(self, channel: NetconfChannel) -> None:
        self.stage = "hello"
        self._emit("ssh.subsystem.started", subsystem=self.settings.subsystem)
        channel_transport = ChannelTransport(channel, self.connection)
        protocol = netconf_link.start_client(
            channel_transport,
            self.device.id,
            self.connection.connection_id,
            self.details,
            self.netconf_settings,
            self.clock,
            self.events,
        )
        self._netconf_protocol = protocol
        channel.attach(protocol)
        # The device's <hello> usually came with (or before) the answer to
        # the subsystem request: the session is ready now, no Deferred
        # chain needed for it.  Registered whenever the hellos were
        # exchanged, also if what came after them already broke the session
        # (it is up, then lost), as when whenReady() fired during attach().
        session = protocol.session
        if session is not None:
            self._netconfReady(session)
        else:
            protocol.whenReady().addCallbacks(self._netconfReady, self._netconfFailed)

    def channelClosed(self, channel: NetconfChannel) -> None:
        # One channel per connection: when it ends, so does the connection.
        if self._close_reason is None:
            self._close_reason = "the NETCONF channel was closed"
        self._endNetconf(self._close_reason)
        self.close(self._close_reason)

    def _endNetconf(self, reason: str) -> None:
        protocol, self._netconf_protocol = self._netconf_protocol, None
        if protocol is not None:
            protocol.connectionLost(failure.Failure(SSHConnectionEnded(reason)))

    # -- NETCONF ---------------------------------------------------------------

    def _netconfReady(self, netconf_session) -> None:
        self._cancelSetupTimer()
        self.stage = "session"
        self.details.update(netconf_link.describe(netconf_session))
        self.session = netconf_session
        self.registry.register(netconf_session)

    def _netconfFailed(self, reason: failure.Failure) -> None:
        text = reason.getErrorMessage()
        self._emit("ssh.netconf.failed", reason=text)
        self.close(f"NETCONF session failed: {text}")

    # -- timers ------------------------------------------------------------------

    def _setupTimedOut(self) -> None:
        self._setup_timer = None
        reason = f"no NETCONF session within {self.settings.auth_timeout:g} s (stuck in {self.stage})"
        self._emit("ssh.setup.timeout", stage=self.stage, reason=reason)
        self.close(reason)
        if self.transport.transport is not None:
            self.transport.transport.loseConnection()

    def _cancelSetupTimer(self) -> None:
        if self._setup_timer is not None and self._setup_timer.active():
            self._setup_timer.cancel()
        self._setup_timer = None
