"""
The SSH client side of a call-home connection: transport, connection
service and the NETCONF channel.

These classes only do SSH mechanics; every decision (is this host key
trusted? which credentials? what to report?) is delegated to the
per-connection L{callhome_mux.ssh.callhome.SSHCallHome}, the "owner".
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Dict, Optional

from twisted.conch.ssh import channel, common, connection, transport
from twisted.internet import defer
from twisted.internet.interfaces import IAddress
from twisted.python import failure

from callhome_mux.frozen import FrozenDict
from callhome_mux.ssh.conch_log import QuietLogger, keep_conch_log
from callhome_mux.ssh.hybrid_kex import HybridKexClientMixin
from callhome_mux.ssh.mac import PrecomputedMACCiphers
from callhome_mux.ssh.receive_buffer import ReceiveBufferMixin
from callhome_mux.ssh.send_packet import SendPacketMixin
from callhome_mux.ssh.windowed import WindowedWriteChannel

if TYPE_CHECKING:
    from callhome_mux.connection import ClassifiedConnection


_NO_COMPRESSION = [b"none"]


def _service_name(packet: bytes):
    """The service a SERVICE_ACCEPT names, or C{None} when its payload holds no whole string."""
    if len(packet) < 4:
        return None
    (length,) = struct.unpack_from(">L", packet)
    return packet[4 : 4 + length] if len(packet) >= 4 + length else None


def _wants_conch_log(owner) -> bool:
    return bool(getattr(getattr(owner, "settings", None), "conch_debug_log", False))


class CallHomeClientTransport(ReceiveBufferMixin, SendPacketMixin, HybridKexClientMixin, transport.SSHClientTransport):
    """SSH client over a TCP connection the device opened."""

    #: True while a TCP read is being handled (see L{ChannelTransport.write}).
    reading = False
    #: The service requested and not yet accepted (conch's attribute).
    instance = None
    #: Told of every read once the connection service runs (set by the
    #: owner): directly, not through the owner, as this is per read.
    keepalive = None
    _log = QuietLogger(namespace="twisted.conch.ssh.transport")

    def __init__(self, owner, offer, debug_log: bool = False):
        self.owner = owner
        # Channel transports holding writes until the current read is handled
        # (a list only while there are some: idle sessions keep none).
        self._held_writers = None
        if debug_log:
            keep_conch_log(self)
        # Instance attributes shadow the class-wide lists conch reads when
        # it builds our KEXINIT.  The offer's lists are shared by every
        # connection (conch copies them before use): no five lists per
        # connection.
        self.supportedKeyExchanges = offer.key_exchanges
        self.supportedPublicKeys = offer.host_key_algorithms
        self.supportedCiphers = offer.ciphers
        self.supportedMACs = offer.macs
        self.supportedCompressions = _NO_COMPRESSION

    def connectionMade(self) -> None:
        transport.SSHClientTransport.connectionMade(self)
        self.owner.started()

    def dataReceived(self, data: bytes) -> None:
        keepalive = self.keepalive
        if keepalive is not None:
            keepalive.trafficSeen()
        if self.reading:  # re-entered: the outer call flushes
            super().dataReceived(data)
            return
        self.reading = True
        try:
            super().dataReceived(data)
        finally:
            self.reading = False
            if self._held_writers is not None:
                self._flush_held_writes()

    def hold_write(self, writer) -> None:
        """C{writer} has data to send once the current read is handled."""
        if self._held_writers is None:
            self._held_writers = []
        self._held_writers.append(writer)

    def _flush_held_writes(self) -> None:
        writers, self._held_writers = self._held_writers, None
        for writer in writers:
            writer.flush()

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred:
        # conch disconnects with HOST_KEY_NOT_VERIFIABLE if this fails.
        return self.owner.verifyHostKey(hostKey)

    def _keySetup(self, sharedSecret: bytes, exchangeHash: bytes) -> None:
        # conch made the next ciphers in ssh_KEXINIT; before it sets their
        # keys, make them ours (HMAC states prepared once per key).
        # Built anew rather than given another class: assigning __class__
        # makes CPython 3.11 give the object a dict of its own.
        made = self.nextEncryptions
        if type(made) is transport.SSHCiphers:
            self.nextEncryptions = PrecomputedMACCiphers(made.outCipType, made.inCipType, made.outMACType, made.inMACType)
        super()._keySetup(sharedSecret, exchangeHash)

    def connectionSecure(self) -> None:
        self._forgetKeyExchange()
        self.owner.transportSecured(self)

    #: What only a key exchange in progress needs: both KEXINIT payloads
    #: (for the exchange hash) and our ephemeral keys.  conch keeps them for
    #: the connection's life (~1-4 KiB per idle session, more with the
    #: ML-KEM hybrid); a re-key sets them again.
    _KEX_ONLY = ("ourKexInitPayload", "otherKexInitPayload", "ecPriv", "ecPub",
                 "_hybridClassic", "_hybridPQ", "_hybridInit")

    def _forgetKeyExchange(self) -> None:
        # (A transport has more attributes than CPython 3.11 keeps without
        # a dict of its own, ~32 once up: reading __dict__ costs nothing more.)
        state = self.__dict__
        for name in self._KEX_ONLY:
            state.pop(name, None)

    def forgetPeerExtensions(self) -> None:
        """
        The user authentication is over: the device's EXT_INFO extensions
        (RFC 8308; server-sig-algs, read only by the authentication) go,
        ~0.3 KiB per idle session.  conch's class default (empty) answers
        any later reader; an EXT_INFO sent again sets them again.
        """
        self.__dict__.pop("peerExtensions", None)

    def ssh_SERVICE_ACCEPT(self, packet: bytes) -> None:
        requested = self.instance
        if requested is None or (packet and _service_name(packet) != requested.name):
            # Nothing requested, already accepted, or another service named:
            # conch would start a service again (or fail on a missing
            # attribute), and for another name it disconnected and then
            # started ours anyway, which sent a USERAUTH_REQUEST after our
            # DISCONNECT (RFC 4253 §11.1: nothing may follow it).
            self.instance = None
            self.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"received accept for service we did not request")
            return
        super().ssh_SERVICE_ACCEPT(packet)
        # conch keeps the requested service (the user authentication, with
        # its lists and callbacks, ~8 objects) as self.instance for the
        # connection's life; only this message reads it.
        self.instance = None

    def negotiated(self) -> Dict[str, Any]:
        """
        The algorithms agreed in the key exchange, for session details.

        Devices of one fleet agree on the same: sessions share one dict per
        combination (~0.8 KiB per idle session otherwise); it is replaced,
        never changed, and says so (a L{FrozenDict}: the inventory keeps it
        in device states without copying it per session).
        """
        current = self.currentEncryptions
        key = (
            self.kexAlg,
            self.keyAlg,
            getattr(current, "outCipType", None),
            getattr(current, "inCipType", None),
            getattr(current, "outMACType", None),
            getattr(current, "inMACType", None),
            self.otherVersionString,
        )
        shared = _NEGOTIATED.get(key)
        if shared is None:
            shared = FrozenDict(zip(_NEGOTIATED_NAMES, (_text(value) for value in key)))
            if len(_NEGOTIATED) >= 1024:
                _NEGOTIATED.clear()
            _NEGOTIATED[key] = shared
        return shared

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # The device sent DISCONNECT: keep its words for the closing event.
        self.owner.peerDisconnected(reasonCode, description.decode("utf-8", "replace"))

    def connectionLost(self, reason: failure.Failure) -> None:
        # Note the TCP-level reason first: conch closes the channels while
        # stopping, and their closing must not pass for the cause.
        self.owner.peerDisconnected(None, None, reason)
        transport.SSHClientTransport.connectionLost(self, reason)
        self.owner.transportLost(reason)


_NEGOTIATED_NAMES = ("kex", "host_key", "cipher_out", "cipher_in", "mac_out", "mac_in", "server_version")
_NEGOTIATED: Dict[tuple, Dict[str, Any]] = {}


def _text(value) -> Any:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class CallHomeConnection(connection.SSHConnection):
    """The ssh-connection service: one NETCONF channel, keepalives, global requests."""

    _log = QuietLogger(namespace="twisted.conch.ssh.connection")

    def __init__(self, owner):
        connection.SSHConnection.__init__(self)
        self.owner = owner
        if _wants_conch_log(owner):
            keep_conch_log(self)

    def serviceStarted(self) -> None:
        connection.SSHConnection.serviceStarted(self)
        self.owner.connectionServiceStarted(self)

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> bool:
        # RFC 8071 §7: answer every request at once.  conch sends the reply
        # (REQUEST_FAILURE for False) right after this returns; OpenSSH does
        # the same for keepalive@openssh.com, and devices accept it.
        self.owner.globalRequestReceived(requestType.decode("ascii", "replace"))
        return False

    def ssh_CHANNEL_SUCCESS(self, packet: bytes) -> None:
        connection.SSHConnection.ssh_CHANNEL_SUCCESS(self, packet)
        self._forgetAnsweredRequests(packet)

    def ssh_CHANNEL_FAILURE(self, packet: bytes) -> None:
        connection.SSHConnection.ssh_CHANNEL_FAILURE(self, packet)
        self._forgetAnsweredRequests(packet)

    def _forgetAnsweredRequests(self, packet: bytes) -> None:
        # conch keeps a channel's list of pending requests, empty once the
        # subsystem request is answered, for the channel's life; it reads
        # it with .get(), so an absent list is the same as an empty one.
        if len(packet) >= 4:
            (local,) = struct.unpack_from(">L", packet)
            if not self.deferreds.get(local, True):
                del self.deferreds[local]

    # The keepalive monitor's link (callhome_mux.ssh.keepalive).

    def sendKeepalive(self) -> None:
        d = self.sendGlobalRequest(b"keepalive@openssh.com", b"", wantReply=True)
        # A refusal is an answer too; a lost connection fails it: both fine.
        d.addErrback(lambda _: None)

    def keepaliveLost(self, missed: int) -> None:
        self.owner.keepaliveLost(missed)


class NetconfChannel(WindowedWriteChannel):
    """A session channel running the C{netconf} subsystem (RFC 6242)."""

    name = b"session"

    _log = QuietLogger(namespace="twisted.conch.ssh.channel")

    def __init__(self, owner, subsystem: bytes, window: int, max_packet: int, **kw):
        channel.SSHChannel.__init__(self, localWindow=window, localMaxPacket=max_packet, **kw)
        self.owner = owner
        if _wants_conch_log(owner):
            keep_conch_log(self)
        self.subsystem = subsystem
        self.protocol = None
        # A device may start talking (its <hello>) before it answers the
        # subsystem request: those bytes are kept for the protocol (a list
        # only when there are some).
        self._early = None

    def channelOpen(self, specificData: bytes) -> None:
        d = self.conn.sendRequest(self, b"subsystem", common.NS(self.subsystem), wantReply=True)
        d.addCallbacks(lambda _: self.owner.subsystemStarted(self), lambda f: self.owner.subsystemRefused(self, f))

    def openFailed(self, reason) -> None:
        self.owner.channelOpenFailed(reason)

    def attach(self, protocol) -> None:
        """Hand the channel's bytes (those already received first) to C{protocol}."""
        self.protocol = protocol
        early, self._early = self._early, None
        for data in early or ():
            protocol.dataReceived(data)

    def dataReceived(self, data: bytes) -> None:
        if self.protocol is not None:
            self.protocol.dataReceived(data)
        elif self._early is None:
            self._early = [data]
        else:
            self._early.append(data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        # stderr of the device's subsystem: not NETCONF, never parse it.
        pass

    def eofReceived(self) -> None:
        self.loseConnection()

    def closed(self) -> None:
        self.owner.channelClosed(self)


class ChannelTransport:
    """
    What the NETCONF protocol sees as its transport: the SSH channel, with
    the connection's addresses: the device's real one as peer (the
    PROXY-header one when present), and ours, asked of the connection only
    if someone wants it (nothing in a session does: no getsockname and no
    address object kept per call home).

    Writes made while the SSH transport handles a TCP read (typically the
    next RPCs, sent by the callbacks of the replies in that read) are held
    and written to the channel together when the read is done: one SSH
    packet (one encryption, one MAC) for many RPCs instead of one each.
    Nothing waits longer than that read: the bytes would have stayed in the
    TCP transport's buffer until the reactor's next write anyway.
    """

    disconnecting = False
    # Small writes coalesced; a write this big goes at once (after the held ones).
    hold_below = 64 * 1024

    def __init__(self, channel: NetconfChannel, classified: Optional[ClassifiedConnection]):
        self._channel = channel
        self._classified = classified
        self._held = None  # writes held during a read (a list only then)

    def write(self, data: bytes) -> None:
        if self.disconnecting or not data:
            return
        ssh = self._channel.conn.transport
        if getattr(ssh, "reading", False) and len(data) < self.hold_below:
            if self._held is None:
                self._held = []
                ssh.hold_write(self)
            self._held.append(data)
            return
        if self._held is not None:
            self.flush()
        self._channel.write(data)

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def flush(self) -> None:
        """Write what was held (L{write}) to the channel, as one write."""
        held, self._held = self._held, None
        if held and not self.disconnecting:
            self._channel.write(held[0] if len(held) == 1 else b"".join(held))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.flush()
            self.disconnecting = True
            self._channel.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._held = None
        self._channel.conn.transport.transport.abortConnection()

    def getPeer(self) -> IAddress:
        return self._classified.peer

    def getHost(self) -> IAddress:
        return self._classified.local_address()
