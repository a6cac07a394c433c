"""
The TLS call-home handler: what the demultiplexer calls for both TLS kinds.

For C{TLS_SILENT} (the device is the TLS server and waits, RFC 8071 §4) we
run the TLS client over the accepted socket; for C{TLS_CLIENT_HELLO} (the
device sent a ClientHello) we run the TLS server, and the bytes the
demultiplexer already read are simply the first the TLS layer receives.

Per connection, L{TLSCallHome} (the protocol inside Twisted's
C{TLSMemoryBIOProtocol}) then:

1. bounds the handshake by C{handshake_timeout} (a device that sends a
   ClientHello and stalls is dropped, C{tls.handshake.timeout});
2. verifies the device certificate and identifies the device
   (L{callhome_mux.tls.verify}); a refusal is a C{tls.certificate.refused}
   event and the end of the connection;
3. decides NETCONF or RESTCONF (L{callhome_mux.tls.decide}), holding any
   bytes the device sends meanwhile; a RESTCONF decision by silence whose
   first reply is a NETCONF <hello> is a mistake it closes the connection for, and the
   device's next call home runs NETCONF (see L{TLSCallHome._netconf_instead_of_http});
4. runs L{NetconfClientProtocol} or the RESTCONF factory's protocol over
   the TLS transport and registers its session once it is ready.

RESTCONF factory contract (C{callhome_mux.restconf.session.restconf_protocol}
fits as is, or with its settings bound by C{functools.partial})::

    restconf_factory(device_id, events, details=details, clock=clock) -> IProtocol

The returned protocol gets C{makeConnection(tls_transport)} and every
decrypted byte; if it has C{whenReady()} (a Deferred firing with a
L{ManagedSession} once RESTCONF discovery is done) that session is
registered.  C{details} holds C{transport="restconf"}, C{peer},
C{connection_id}, C{device_id} and the TLS facts (C{tls_version},
C{tls_cipher}, C{tls_group}, C{alpn}, C{certificate_fingerprint} ...).

Events: C{tls.handshake.started}, C{tls.handshake.timeout},
C{tls.handshake.failed}, C{tls.certificate.refused} (C{reason}, C{detail},
C{fingerprint}, C{subject}), C{tls.certificate.accepted}, C{tls.verify.error}
(an unknown-device policy raised), C{tls.protocol.decided} (C{protocol},
C{decided_by}: C{pin}, C{alpn}, C{spoke-first}, C{silence} or
C{late-hello-before}), C{tls.protocol.refused} (C{reason}; a RESTCONF
decision by silence answered by a NETCONF <hello> adds
C{decided_by="silence"} and C{protocol="netconf"}).  All carry C{connection_id} and C{peer}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.internet.interfaces import IHandshakeListener, IProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from callhome_mux.connection import ClassifiedConnection, ConnectionKind
from callhome_mux.events import EventBus
from callhome_mux.inventory.model import DeviceDirectory
from callhome_mux.sessions import SessionRegistry
from callhome_mux.timers import shared_timers
from callhome_mux.tls import decide
from callhome_mux.tls.context import ConnectionCreator, client_context, server_context
from callhome_mux.tls.identity import load_identity
from callhome_mux.tls.keepalive import set_tcp_keepalive
from callhome_mux.tls.negotiated import negotiated
from callhome_mux.tls.settings import TLSSettings
from callhome_mux.tls.transport import TLSTransportFactory
from callhome_mux.tls.trust import TrustStore
from callhome_mux.tls.verify import (
    PEER_IS_CLIENT,
    PEER_IS_SERVER,
    CertificateRefused,
    CertificateVerifier,
    UnknownDevicePolicy,
    refuse_unknown_devices,
)

#: Devices remembered as having sent a NETCONF <hello> after we took their
#: silence for RESTCONF (bounded: the oldest is forgotten first).
MAX_REMEMBERED_LATE_HELLOS = 65536

#: Bytes a device may send before we know which protocol to run: a NETCONF
#: <hello> with a long capability list fits; a flood does not.
MAX_UNDECIDED_BYTES = 1024 * 1024

_DIRECTIONS = {
    ConnectionKind.TLS_SILENT: ("silent", PEER_IS_SERVER),
    ConnectionKind.TLS_CLIENT_HELLO: ("client-hello", PEER_IS_CLIENT),
}


class TLSHandler:
    """
    Runs TLS call-home connections; see the module docstring.

    @param restconf_factory: see the contract above; C{None}: devices that
        turn out to be RESTCONF are refused (C{tls.protocol.refused}).
    @param unknown_device_policy: decides about trusted certificates of
        unknown devices (L{callhome_mux.tls.verify.UnknownDevicePolicy});
        default: refuse.  Also settable later as C{unknown_device_policy}.
    """

    def __init__(
        self,
        directory: DeviceDirectory,
        registry: SessionRegistry,
        events: EventBus,
        settings: TLSSettings,
        netconf_settings,
        state_dir: str,
        clock=None,
        restconf_factory=None,
        unknown_device_policy: Optional[UnknownDevicePolicy] = None,
        hostname: Optional[str] = None,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.directory = directory
        self.registry = registry
        self.events = events
        self.settings = settings
        self.netconf_settings = netconf_settings
        self.clock = clock
        self.restconf_factory = restconf_factory
        self._netconf = None
        #: Device ids whose last call home was taken for RESTCONF by silence
        #: but then sent a NETCONF <hello>: their next one runs NETCONF at once.
        self.late_netconf_devices: Dict[str, None] = {}
        #: C{(device, peer) -> reason or None}: a last word on a verified,
        #: known device (the inventory's back-off); C{None} admits all.
        self.device_gate = None
        self.identity = load_identity(settings, state_dir, events, hostname)
        self.trust = TrustStore.from_settings(settings)
        self.verifier = CertificateVerifier(
            self.trust, settings.cert_to_name, directory, unknown_device_policy or refuse_unknown_devices
        )
        client = client_context(settings, self.identity)
        server = server_context(settings, self.identity)
        # OpenSSL checks the device's chain in the handshake anyway (as TLS
        # client without a verification mode, as TLS server through the
        # verify callback that accepts whatever it finds): with our store
        # it does the check the verifier would otherwise repeat after it.
        # Each connection notes the store in force when it began: a chain
        # OpenSSL verified before a trust reload is verified again after.
        self._creators = {
            ConnectionKind.TLS_SILENT: self._creator(client),
            ConnectionKind.TLS_CLIENT_HELLO: self._creator(server),
        }
        # One TLS transport factory per role for every connection.  Its
        # write coalescing runs on the real reactor (the default); our own
        # timers use self.clock.
        self._transports = {
            kind: TLSTransportFactory(creator, kind is ConnectionKind.TLS_SILENT) for kind, creator in self._creators.items()
        }

    def netconf_protocol(self):
        """
        C{(NetconfClientProtocol, parse_threads)}, found at the first NETCONF
        session: the NETCONF layer pulls in lxml, which a RESTCONF-only
        deployment need not pay for at start.
        """
        if self._netconf is None:
            from twisted.internet.interfaces import IReactorThreads

            from callhome_mux.netconf.session import NetconfClientProtocol

            # Large replies are parsed in the worker thread once complete,
            # as over SSH (tests' task.Clock: in the reactor thread).
            self._netconf = (NetconfClientProtocol, self.clock if IReactorThreads.providedBy(self.clock) else None)
        return self._netconf

    def remember_late_netconf(self, device_id: str) -> None:
        late = self.late_netconf_devices
        if len(late) >= MAX_REMEMBERED_LATE_HELLOS:
            del late[next(iter(late))]
        late[device_id] = None

    def recall_late_netconf(self, device_id: str) -> bool:
        """Whether C{device_id} was remembered by L{remember_late_netconf}; forgets it."""
        return self.late_netconf_devices.pop(device_id, False) is None

    def _creator(self, context) -> ConnectionCreator:
        in_handshake = self.verifier.verify_during_handshake(context)
        return ConnectionCreator(context, self.verifier.handshake_connection if in_handshake else None)

    def reloadTrust(self) -> None:
        """
        Read the trust anchor and CRL files again (CRLs are reissued
        regularly); new connections use them.  A broken file raises
        L{ConfigError} and leaves the current ones in force.
        """
        trust = TrustStore.from_settings(self.settings)
        self.trust = self.verifier.trust = trust
        self.events.emit("tls.trust.reloaded", anchors=len(trust.anchors), crls=len(trust.crls))

    @property
    def unknown_device_policy(self) -> UnknownDevicePolicy:
        return self.verifier.unknown_device_policy

    @unknown_device_policy.setter
    def unknown_device_policy(self, policy: UnknownDevicePolicy) -> None:
        self.verifier.unknown_device_policy = policy

    def protocolFor(self, connection: ClassifiedConnection) -> Optional[IProtocol]:
        if connection.kind not in self._creators:
            self.events.emit(
                "tls.connection.refused",
                connection_id=connection.connection_id,
                peer=connection.peer_text,
                kind=connection.kind.value,
                reason="not a TLS connection",
            )
            return None
        return self._transports[connection.kind].wrap(TLSCallHome(self, connection))


@implementer(IHandshakeListener)
class TLSCallHome(Protocol):
    """One TLS call-home connection, from handshake to a running session (see the module docstring)."""

    #: RESTCONF was decided by silence and its first reply is awaited (see
    #: L{_netconf_instead_of_http}); a class default: NETCONF sessions keep
    #: no such field.
    _http_reply_awaited = False

    def __init__(self, handler: TLSHandler, connection: ClassifiedConnection):
        self.handler = handler
        self.connection = connection
        self.direction, self.peer_role = _DIRECTIONS[connection.kind]
        #: The device's address as text, formatted once (six uses per connection).
        self.peer = connection.peer_text
        #: handshake -> deciding -> running -> closed
        self.state = "handshake"
        self.identified = None
        #: The session protocol (NETCONF or RESTCONF) once decided.
        self.delegate: Optional[IProtocol] = None
        self.details: Dict[str, Any] = {
            "peer": self.peer,
            "connection_id": connection.connection_id,
            "listener": connection.listener,
            "tls_direction": self.direction,
        }
        self._held: List[bytes] = []
        self._held_size = 0
        self._timer = None

    # -- IProtocol / IHandshakeListener ---------------------------------

    def connectionMade(self) -> None:
        keepalive = set_tcp_keepalive(self.connection.transport, self.handler.settings)
        # One shared reactor timer for every handshake in flight (a storm
        # has hundreds), not a DelayedCall each: callhome_mux.timers.
        self._timer = shared_timers(self.handler.clock).callLater(
            self.handler.settings.handshake_timeout, self._handshake_timed_out
        )
        self._emit("tls.handshake.started", direction=self.direction, tcp_keepalive=keepalive)

    def handshakeCompleted(self) -> None:
        self._cancel_timer()
        if self.state != "handshake":
            return
        handle = self.transport.getHandle()
        version, cipher, group, alpn = negotiated(handle)
        details = self.details
        details["tls_version"] = version
        details["tls_cipher"] = cipher
        details["tls_group"] = group
        details["alpn"] = alpn_text = alpn.decode("ascii", "replace") if alpn else None
        try:
            identified = self.handler.verifier.verify_connection(handle, self.peer_role, self.peer)
        except CertificateRefused as refusal:
            self._emit("tls.certificate.refused", direction=self.direction, **refusal.event_fields())
            self._close()
            return
        except Exception as error:  # a broken unknown-device policy must not leave the connection hanging
            self._emit("tls.verify.error", direction=self.direction, reason=repr(error))
            self._close()
            return
        gate = self.handler.device_gate
        refusal = gate(identified.device, self.peer) if gate is not None else None
        if refusal is not None:
            self._emit("tls.device.throttled", device_id=identified.device_id, reason=refusal)
            self._close()
            return
        self.identified = identified
        details["device_id"] = device_id = identified.device.id
        details["certificate_fingerprint"] = fingerprint = identified.fingerprint
        details["certificate_subject"] = subject = identified.subject
        details["matched_by"] = matched_by = identified.matched_by
        self._emit(
            "tls.certificate.accepted",
            device_id=device_id,
            fingerprint=fingerprint,
            subject=subject,
            matched_by=matched_by,
            tls_version=version,
            cipher=cipher,
            alpn=alpn_text,
        )
        self.state = "deciding"
        self._decide(alpn)

    def dataReceived(self, data: bytes) -> None:
        delegate = self.delegate
        if delegate is not None:
            if self._http_reply_awaited and self._netconf_instead_of_http(data):
                return
            delegate.dataReceived(data)
            return
        if self.state == "closed":
            return
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size > MAX_UNDECIDED_BYTES:
            self._refuse_protocol(f"more than {MAX_UNDECIDED_BYTES} bytes before the protocol was known")
        elif self.state == "deciding" and self._timer is not None:
            self._decide_from_bytes()

    def connectionLost(self, reason: Failure = None) -> None:
        self._cancel_timer()
        if self.state == "handshake":
            self._emit("tls.handshake.failed", direction=self.direction, reason=_describe(reason))
        self.state = "closed"
        if self.delegate is not None:
            self.delegate.connectionLost(reason)

    # -- deciding --------------------------------------------------------

    def _decide(self, alpn: Optional[bytes]) -> None:
        device = self.identified.device
        try:
            pin = decide.pinned(self.connection.details.get("protocol"), device.protocol)
        except decide.PinMismatch as error:
            self._refuse_protocol(str(error))
            return
        if pin is not None:
            self._start(pin, "pin")
        elif decide.from_alpn(alpn) is not None:
            self._start(decide.from_alpn(alpn), "alpn")
        elif self.handler.recall_late_netconf(device.id):
            # Its last call home was taken for RESTCONF by silence, then
            # sent a NETCONF <hello>: NETCONF at once (RFC 6241 §8.1, both
            # peers send their <hello> as the session opens); once only,
            # so a device that changed to RESTCONF is tried by silence again.
            self._start(decide.NETCONF, "late-hello-before")
        else:
            # Who speaks first.  The device may already have.  (A NETCONF
            # device speaks at once: a shared timer, as the handshake's.)
            self._timer = shared_timers(self.handler.clock).callLater(
                self.handler.settings.protocol_decision_wait, self._silence_elapsed
            )
            self._decide_from_bytes()

    def _silence_elapsed(self) -> None:
        # A busy reactor can run this timer before it reads a hello that is
        # already waiting in the socket (a storm made NETCONF devices look
        # like RESTCONF ones).  Give reads one more reactor turn first.
        self._timer = self.handler.clock.callLater(0, self._start, decide.RESTCONF, "silence")

    def _decide_from_bytes(self) -> None:
        try:
            kind = decide.from_first_bytes(b"".join(self._held))
        except ValueError as error:
            self._refuse_protocol(str(error))
            return
        if kind is not None:
            self._start(kind, "spoke-first")

    def _start(self, kind: str, decided_by: str) -> None:
        self._cancel_timer()
        if self.state != "deciding":
            return
        self._emit("tls.protocol.decided", device_id=self.identified.device_id, protocol=kind, decided_by=decided_by)
        if kind == decide.NETCONF:
            self.details["transport"] = "netconf-tls"
            protocol = self._netconf_protocol()
        elif self.handler.restconf_factory is None:
            self._refuse_protocol("the device speaks RESTCONF, but no RESTCONF client is configured")
            return
        else:
            self.details["transport"] = "restconf"
            # Silence was a guess: the first reply shows if it was wrong.
            self._http_reply_awaited = decided_by == "silence"
            try:
                protocol = self.handler.restconf_factory(
                    self.identified.device_id, self.handler.events, details=self.details, clock=self.handler.clock
                )
            except Exception as error:
                self._refuse_protocol(f"the RESTCONF client could not start: {error!r}")
                return
        self.state = "running"
        self.delegate = protocol
        protocol.makeConnection(self.transport)
        held, self._held = b"".join(self._held), None
        if held and self.delegate is not None:
            protocol.dataReceived(held)
        # A NETCONF session past its hellos (the device's <hello> was held)
        # is registered at once, no Deferred; also if what came after the
        # <hello> already broke it: it was up, then lost, as over SSH.
        ready = getattr(protocol, "ready_session", None)
        if ready is None and kind == decide.NETCONF:
            ready = getattr(protocol, "session", None)
        if ready is not None:
            self._register(ready)
        else:
            when_ready = getattr(protocol, "whenReady", None)
            if when_ready is not None:
                when_ready().addCallbacks(self._register, _ignore)
        if self.state == "running":
            # What the handshake and the decision needed (the accepted
            # connection's record with its addresses, the verified chain)
            # need not stay for the session's life: idle sessions are
            # thousands (bench/hold.py --kind tls).
            self.connection = self.identified = None

    def _netconf_instead_of_http(self, data: bytes) -> bool:
        """
        Whether the first bytes after a RESTCONF decision are a NETCONF
        <hello> and not an HTTP response (which starts C{HTTP/}): the device
        spoke after the decision wait (a busy device).  Our HTTP request has
        reached it, so NETCONF cannot start on this connection; it is closed
        at once with the reason, and the device's next call home runs NETCONF.
        """
        if self.state == "closed":
            return True  # the rest of a refused <hello>
        text = data.lstrip()
        if not text:
            return False
        if text[:1] != b"<":
            self._http_reply_awaited = False
            return False
        self.state = "closed"
        device_id = self.details["device_id"]
        self.handler.remember_late_netconf(device_id)
        reason = (
            f"no <hello> within {self.handler.settings.protocol_decision_wait:g} seconds, so RESTCONF was tried, "
            "but the device then sent a NETCONF <hello>, not an HTTP response; closed, its next call home runs NETCONF"
        )
        self._emit("tls.protocol.refused", device_id=device_id, reason=reason, decided_by="silence", protocol=decide.NETCONF)
        close = getattr(self.delegate, "close", None)
        if close is not None:
            close(reason)
        else:
            self.transport.loseConnection()
        return True

    def _netconf_protocol(self) -> IProtocol:
        handler = self.handler
        protocol_class, parse_threads = handler.netconf_protocol()
        return protocol_class(
            events=handler.events,
            settings=handler.netconf_settings,
            clock=handler.clock,
            device_id=self.identified.device_id,
            connection_id=self.connection.connection_id,
            details=self.details,
            parse_threads=parse_threads,
        )

    def _register(self, session) -> None:
        if self.state != "running":
            return
        if not getattr(session, "device_id", None):
            session.device_id = self.details["device_id"]
        self.handler.registry.register(session)

    # -- endings ---------------------------------------------------------

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.state != "handshake":
            return
        self.state = "closed"
        self._emit(
            "tls.handshake.timeout",
            direction=self.direction,
            reason=f"no finished TLS handshake within {self.handler.settings.handshake_timeout:g} seconds",
        )
        self.transport.abortConnection()

    def _refuse_protocol(self, reason: str) -> None:
        device_id = self.identified.device_id if self.identified is not None else None
        self._emit("tls.protocol.refused", device_id=device_id, reason=reason)
        self._close()

    def _close(self) -> None:
        self._cancel_timer()
        self.state = "closed"
        self._held = []
        self.transport.loseConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _emit(self, event: str, **fields) -> None:
        self.handler.events.emit(event, connection_id=self.details["connection_id"], peer=self.peer, **fields)


def _ignore(failure: Failure) -> None:
    """A session that never got ready has said why (its own events)."""


def _describe(reason: Optional[Failure]) -> str:
    value = getattr(reason, "value", None)
    if value is None:
        return "connection closed"
    # pyOpenSSL errors carry [(library, function, reason), ...].
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list) and args[0] and isinstance(args[0][0], tuple):
        return "; ".join(str(item[-1]) for item in args[0])
    return str(value) or type(value).__name__
