"""
The NETCONF client over any Twisted transport (RFC 6241, RFC 6242).

L{NetconfClientProtocol} is handed a transport by the SSH or TLS layer.  It
sends our <hello>, waits (under C{hello_timeout}) for the device's, agrees on
the framing, and then offers a L{NetconfSession}: RPCs matched to replies by
message-id, any number outstanding, each under its own timeout, and
notifications passed in order to one subscriber.

The protocol only calls C{transport.write} and C{transport.loseConnection},
so an SSH channel adapter and a TLS transport fit equally.  The hot path (one
reply in, one Deferred fired) emits no events and formats no strings.
"""

from __future__ import annotations

import collections
import functools
import re
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from lxml import etree
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from callhome_mux.events import EventBus
from callhome_mux.netconf import hello as hello_templates
from callhome_mux.netconf import parse_stream, xmlsafe
from callhome_mux.netconf.errors import (
    HelloTimeoutError,
    NetconfProtocolError,
    RPCError,
    RPCErrorItem,
    RPCTimeoutError,
    SessionLostError,
)
from callhome_mux.netconf.framing import FrameDecoder, encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import (
    BASE_1_0,
    BASE_1_1,
    BASE_NS,
    HELLO,
    NOTIFICATION_TAG,
    RPC_ERROR,
    RPC_REPLY,
    qn,
)
from callhome_mux.netconf.operations import NetconfOperations
from callhome_mux.netconf.settings import NetconfSettings
from callhome_mux.sessions import ManagedSession
from callhome_mux.timers import shared_timers

__all__ = ["NetconfClientProtocol", "NetconfSession", "hello_message"]

_RPC_OPEN = b'<rpc xmlns="' + BASE_NS.encode() + b'" message-id="'
# An <rpc> around its message-id and body, framed in one %-format (one copy).
_RPC = _RPC_OPEN + b'%d">%s</rpc>'
_CHUNKED_RPC = b"\n#%d\n" + _RPC + b"\n##\n"
_EOM_RPC = _RPC + b"]]>]]>"
_RPC_WRAPPING_SIZE = len(_RPC_OPEN) + len(b'">') + len(b"</rpc>")
# How most devices start a reply: the element name ends at the space, and
# the default namespace (the element's own: it has no prefix) is the base
# namespace, closing quote included.  An element cannot declare it twice.
_PLAIN_REPLY_START = b'<rpc-reply xmlns="' + BASE_NS.encode() + b'"'
_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")
_OPERATION_NAME = re.compile(rb"\s*<(?:[\w.-]+:)?([\w.-]+)")
_EOM = b"]]>]]>"
# The RPCs outstanding of a session that has sent none yet (most of a
# storm's, and every idle one's): this one empty dict, never written to
# (an RPC gives its session a dict of its own first), not one each.
_NOTHING_PENDING: Dict[str, tuple] = {}
_CAPABILITY_PATH = f"{{{BASE_NS}}}capabilities/{{{BASE_NS}}}capability"
# How many timed-out or cancelled message-ids we remember, so that a late
# reply is recognised rather than reported as a protocol error.
_ABANDONED_MEMORY = 4096
_MAX_SESSION_ID = 4294967295

_log = Logger(namespace="callhome_mux.netconf.session")


# Devices of one model send the same capabilities: every session of theirs
# shares one frozenset (and one set of URIs) instead of holding its own
# copy of each string (~19 KiB per session with 71 capabilities, measured
# by bench/hold.py).  Bounded by the bytes of the strings kept; past the
# budget new sets are simply not shared.
_SHARED_CAPABILITIES: Dict[frozenset, tuple] = {}
_SHARED_CAPABILITIES_BUDGET = 32 * 1024 * 1024
_shared_capabilities_bytes = 0


def _shared_capabilities(capabilities: frozenset) -> tuple:
    """C{(capabilities, uris)}: the copies shared by every session with this set."""
    global _shared_capabilities_bytes
    shared = _SHARED_CAPABILITIES.get(capabilities)
    if shared is None:
        shared = (capabilities, frozenset(capability.split("?", 1)[0] for capability in capabilities))
        size = sum(len(capability) for capability in capabilities)
        if _shared_capabilities_bytes + size <= _SHARED_CAPABILITIES_BUDGET:
            _shared_capabilities_bytes += size
            _SHARED_CAPABILITIES[capabilities] = shared
    return shared


def hello_message(capabilities, session_id: Optional[int] = None) -> bytes:
    """A <hello> document advertising C{capabilities} (and C{session_id} for a server)."""
    hello = etree.Element(HELLO, nsmap={None: BASE_NS})
    container = etree.SubElement(hello, qn("capabilities"))
    for capability in capabilities:
        etree.SubElement(container, qn("capability")).text = capability
    if session_id is not None:
        etree.SubElement(hello, qn("session-id")).text = str(session_id)
    return etree.tostring(hello, xml_declaration=True, encoding="UTF-8")


@functools.lru_cache(maxsize=16)
def _our_hello(capabilities: tuple) -> bytes:
    """Our framed <hello>: the same bytes for every session with these capabilities, built once."""
    return encode_eom(hello_message(capabilities))


def _rpc_body(request):
    """C{(request as kept for error messages, body bytes)} of an RPC given as str, bytes or element."""
    if isinstance(request, str):
        request = request.encode("utf-8")
    if isinstance(request, (bytes, bytearray)):
        body = bytes(request)
        if body[:1] != b"<" or body.startswith(b"<?xml"):
            # Whitespace or an XML declaration first (rare): drop the declaration.
            body = _XML_DECLARATION.sub(b"", body, count=1)
        return request, body
    return request, etree.tostring(request)


def operation_name(request) -> str:
    """The local name of an RPC's operation, for error messages."""
    if isinstance(request, (bytes, bytearray)):
        match = _OPERATION_NAME.match(_XML_DECLARATION.sub(b"", bytes(request[:512])))
        return match.group(1).decode("ascii", "replace") if match else "rpc"
    return etree.QName(request).localname


# An outstanding RPC is a tuple (deferred, request, timeout, deadline):
# deadline is the clock time after which it times out, or None.  (A tuple
# is made in a tenth of the time of an instance with an __init__.)

# A timer armed for a deadline may fire a rounding error early.
_DEADLINE_SLACK = 1e-7
# A message of this many bytes or more is parsed off the reactor thread
# (or, without a worker thread, while it arrives).
_STREAM_AFTER = 64 * 1024
# Frames we write at the end of the read that produced them (coalesced into
# one channel write) when smaller than this; bigger ones go at once.
_COALESCE_BELOW = 64 * 1024


class NetconfClientProtocol(Protocol):
    """
    The manager's side of one NETCONF session.

    @param events: where session events go (C{netconf.hello.done},
        C{netconf.protocol.error}, C{netconf.session.lost} ...).
    @param clock: C{IReactorTime} for the hello and RPC timers (tests pass a
        L{twisted.internet.task.Clock}); default the global reactor.
    @param device_id: the device, when the transport layer knows it already;
        it may also set C{device_id} later, before the session is registered.
    @param details: the dict the transport layer fills (transport, peer,
        algorithms); shared, not copied, and extended with what NETCONF learns.
    @param parse_threads: a reactor (C{IReactorThreads}) to parse large
        messages in a worker thread once complete (see
        L{callhome_mux.netconf.parse_stream}); None: in the reactor thread,
        while they arrive.
    """

    #: A message of at least this many bytes is parsed in the worker thread
    #: once complete (with C{parse_threads}); without, a message still
    #: incomplete after this many bytes is parsed as it arrives.
    stream_after = _STREAM_AFTER
    #: The worker's parse of a complete large message, while it runs
    #: (class default: idle sessions keep no attribute for it).
    _parsing = None

    # Set only when something happens (class defaults until then).  CPython
    # 3.11 stores up to 29 instance attributes in a compact, key-sharing
    # array; one more and the instance gets a dict of its own: ~1.6 instead
    # of ~0.3 KiB per session (tests/test_netconf_session.py,
    # test_idle_session_attributes_share_keys).
    #: Abandoned RPCs' ids, made on the first one (an empty set and deque
    #: are ~0.9 KiB per idle session).
    _abandoned: Optional[Set[str]] = None
    _abandoned_order: Optional[Deque[str]] = None
    _ready_failure: Optional[Exception] = None
    _lost_reason: Optional[str] = None
    _end_reason: Optional[str] = None
    _subscriber: Optional[Callable[[Any], None]] = None
    #: Those waiting for the end (a list only while there are some).
    _lost_waiters: Optional[List[defer.Deferred]] = None

    def __init__(
        self,
        events: Optional[EventBus] = None,
        settings: Optional[NetconfSettings] = None,
        clock=None,
        device_id: str = "",
        connection_id: Optional[str] = None,
        details: Optional[Dict[str, Any]] = None,
        parse_threads=None,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.events = events if events is not None else EventBus(clock=clock)
        self.settings = settings if settings is not None else NetconfSettings()
        self.device_id = device_id
        self.connection_id = connection_id
        self.details: Dict[str, Any] = details if details is not None else {}
        #: The session, once the hellos are exchanged.
        self.session: Optional[NetconfSession] = None
        self._state = "new"  # new -> hello -> ready -> closing -> lost
        self._decoder = FrameDecoder(self.settings.max_message_size, self.settings.effective_max_chunk_size)
        self._chunked = False
        self._hello_timer = None
        # One timer for every RPC deadline: armed for the earliest, it
        # sweeps what has expired and re-arms for the next (no callLater per RPC).
        self._sweep_call = None
        self._sweep_at = 0.0
        # While a read is handled: frames written meanwhile, sent together after it.
        self._outgoing: Optional[List[bytes]] = None
        # The parser of a large message that is being parsed as it arrives,
        # and whether we wait for it to finish (messages after it wait too).
        self._parse_threads = parse_threads
        self._stream = None
        self._stream_finishing = False
        self._processing = False
        # The last message-id used (an int, not an itertools.count object).
        self._last_id = 0
        self._pending: Dict[str, tuple] = _NOTHING_PENDING
        # Those waiting for the hellos (a list only while there are some).
        self._ready_waiters: Optional[List[defer.Deferred]] = None
        # The session registry, told of the end without a Deferred (see
        # watchLost; set here so that the attribute shares keys).
        self._lost_watcher = None

    # -- what the transport layer and applications use --------------------

    @property
    def ready_session(self) -> Optional[NetconfSession]:
        """The L{NetconfSession} that L{whenReady} would fire with at once, else C{None}."""
        if self._state in ("ready", "closing"):
            return self.session
        return None

    def whenReady(self) -> defer.Deferred:
        """Fires with the L{NetconfSession} after the hellos; fails if the session never gets there."""
        session = self.ready_session
        if session is not None:
            return defer.succeed(session)
        if self._ready_failure is not None:
            return defer.fail(self._ready_failure)
        if self._state in ("failing", "lost"):
            return defer.fail(SessionLostError(f"the NETCONF session ended: {self._end_reason or self._lost_reason}"))
        waiter: defer.Deferred = defer.Deferred()
        if self._ready_waiters is None:
            self._ready_waiters = []
        self._ready_waiters.append(waiter)
        return waiter

    def whenLost(self) -> defer.Deferred:
        """Fires with a text reason when the connection has ended."""
        if self._state == "lost":
            return defer.succeed(self._lost_reason)
        waiter: defer.Deferred = defer.Deferred()
        if self._lost_waiters is None:
            self._lost_waiters = []
        self._lost_waiters.append(waiter)
        return waiter

    def watchLost(self, session: "NetconfSession", watcher) -> bool:
        """See L{callhome_mux.sessions.ManagedSession.watchLost} (one watcher: the registry)."""
        if session is not self.session or self._lost_watcher is not None:
            return False
        if self._state == "lost":
            self._tell_watcher(watcher, session, self._lost_reason)
        else:
            self._lost_watcher = watcher
        return True

    @staticmethod
    def _tell_watcher(watcher, session: "NetconfSession", reason: str) -> None:
        try:
            watcher.sessionLost(session, reason)
        except Exception:
            # As a failing callback of a whenLost() Deferred would be: logged,
            # not raised to whoever registered or lost the session.
            _log.failure("the session's lost watcher failed")

    @property
    def state(self) -> str:
        return self._state

    # -- IProtocol --------------------------------------------------------

    def connectionMade(self) -> None:
        self._state = "hello"
        self.transport.write(_our_hello(self.settings.capabilities))
        self._hello_timer = shared_timers(self.clock).callLater(self.settings.hello_timeout, self._hello_timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._state not in ("hello", "ready", "closing"):
            return
        try:
            self._decoder.push(data)
        except NetconfProtocolError as error:
            self._fail_session(str(error))
            return
        self._process()

    def _process(self) -> None:
        """Handle every complete message buffered (unless a streamed one is still being parsed)."""
        if self._stream_finishing or self._processing:
            return
        outermost = self._outgoing is None
        if outermost:
            # RPCs sent by the callbacks of these replies go out together.
            self._outgoing = []
        decoder = self._decoder
        self._processing = True
        try:
            while self._state in ("hello", "ready", "closing") and not self._stream_finishing:
                if self._stream is None and self._state != "hello":
                    # Small replies, dozens to a read when pipelined: taken
                    # together (large ones below, maybe in the worker).
                    messages = decoder.next_small_messages(self.stream_after)
                    if messages:
                        self._small_messages_received(messages)
                        continue
                message = decoder.next_message()
                if message is None:
                    # With a worker the pieces stay in the decoder (bounded
                    # by max_message_size) until the message is complete.
                    if self._parse_threads is None and (
                        self._stream is not None or decoder.partial_size >= self.stream_after
                    ):
                        self._stream_partial()
                    break
                if self._stream is not None:
                    stream, self._stream = self._stream, None
                    self._stream_finishing = True
                    stream.finish(message).addCallbacks(self._stream_parsed, self._stream_failed)
                elif (
                    self._parse_threads is not None
                    and len(message) >= self.stream_after
                    and self._state != "hello"
                ):
                    self._parse_in_worker(message)
                else:
                    self._message_received(message)
        except NetconfProtocolError as error:
            self._abandon_stream()
            self._fail_session(str(error))
        finally:
            self._processing = False
            if not self._pending and self._sweep_call is not None:
                self._cancel_sweep()  # nothing outstanding: no timer left
            if outermost:
                self._flush_outgoing()

    def _stream_partial(self) -> None:
        """Feed what has arrived of a large message to its incremental parser (reactor thread)."""
        if self._stream is None:
            self._stream = parse_stream.InlineStream(self.stream_after)
        for piece in self._decoder.take_partial():
            self._stream.feed(piece)

    def _parse_in_worker(self, message: bytes) -> None:
        """Parse a complete large message in the worker; later messages wait for it (order kept)."""
        self._stream_finishing = True
        self._parsing = parse_stream.WorkerParse(self._parse_threads, message)
        self._parsing.result.addCallbacks(self._stream_parsed, self._stream_failed)

    def _stream_parsed(self, root) -> None:
        self._stream_finishing = False
        self._parsing = None
        if self._state not in ("hello", "ready", "closing"):
            return
        try:
            self._element_received(root)
        except NetconfProtocolError as error:
            self._fail_session(str(error))
            return
        self._process()  # the messages that came after it (a no-op when called from _process)

    def _stream_failed(self, failure: Failure) -> None:
        self._stream_finishing = False
        self._parsing = None
        if self._state not in ("hello", "ready", "closing"):
            return
        if failure.check(NetconfProtocolError):
            self._fail_session(str(failure.value))
        else:
            self._fail_session(f"unexpected error parsing a message: {failure.value!r}")

    def _abandon_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abandon()
        parsing, self._parsing = self._parsing, None
        if parsing is not None:
            parsing.abandon()

    def connectionLost(self, reason: Failure = None) -> None:
        if self._state == "lost":
            return
        was_ready = self.session is not None
        clean = self._state == "closing"
        self._state = "lost"
        self._cancel_hello_timer()
        self._abandon_stream()
        why = self._end_reason or _describe_failure(reason)
        self._lost_reason = why
        self._fail_everything(why)
        if was_ready:
            self._emit("netconf.session.closed" if clean else "netconf.session.lost", reason=why)
        else:
            self._emit("netconf.session.lost", reason=why, during="hello")
        watcher, self._lost_watcher = self._lost_watcher, None
        if watcher is not None:
            self._tell_watcher(watcher, self.session, why)
        waiters, self._lost_waiters = self._lost_waiters, None
        for waiter in waiters or ():
            waiter.callback(why)

    # -- sending ----------------------------------------------------------

    def rpc(self, request, timeout: Optional[float] = None) -> defer.Deferred:
        """See L{NetconfSession.rpc}."""
        if self._state != "ready":
            return defer.fail(self._not_usable())
        return self._send_rpc(request, timeout)

    def _send_rpc(self, request, timeout: Optional[float]) -> defer.Deferred:
        body = request
        if type(body) is not bytes or body[:1] != b"<" or body.startswith(b"<?xml"):
            request, body = _rpc_body(request)
        number = self._last_id = self._last_id + 1
        message_id = str(number)
        # The delimiter cannot straddle body and wrapper (those end in '>' and start with '<').
        if not self._chunked and _EOM in body:
            return defer.fail(ValueError("an RPC containing ']]>]]>' cannot be sent with base:1.0 framing"))
        if timeout is None:
            timeout = self.settings.rpc_timeout
        deferred = defer.Deferred(lambda d: self._abandon(message_id))
        pending = self._pending
        if pending is _NOTHING_PENDING:
            pending = self._pending = {}
        if timeout:
            deadline = self.clock.seconds() + timeout
            pending[message_id] = (deferred, request, timeout, deadline)
            if self._sweep_call is None:
                self._sweep_call = self.clock.callLater(timeout, self._sweep)
                self._sweep_at = deadline
            elif deadline < self._sweep_at:
                self._sweep_call.reset(timeout)
                self._sweep_at = deadline
        else:
            pending[message_id] = (deferred, request, None, None)
        # Framed in one %-format: one copy of the body.
        if self._chunked:
            size = _RPC_WRAPPING_SIZE + len(message_id) + len(body)
            if size <= self.settings.send_chunk_size:
                frame = _CHUNKED_RPC % (size, number, body)
            else:
                frame = encode_chunked(_RPC % (number, body), self.settings.send_chunk_size)
        else:
            frame = _EOM_RPC % (number, body)
        outgoing = self._outgoing
        if outgoing is not None and len(frame) < _COALESCE_BELOW:
            outgoing.append(frame)  # written with the others once the read is handled (see _process)
        else:
            self._write_frame(frame)
        return deferred

    def _write_frame(self, frame: bytes) -> None:
        """Write C{frame} now: outside a read, or (a large one) after the frames held so far."""
        if self._outgoing is not None:
            self._flush_outgoing()
            self._outgoing = []
        self.transport.write(frame)

    def _flush_now(self) -> None:
        """Write the frames held so far (before the transport is closed), still holding later ones."""
        if self._outgoing:
            self._flush_outgoing()
            self._outgoing = []

    def _flush_outgoing(self) -> None:
        """Write the frames held during a read: one channel write (one SSH packet when they fit)."""
        outgoing, self._outgoing = self._outgoing, None
        if outgoing:
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def close_session(self) -> defer.Deferred:
        """Send <close-session>; fires with the reply, then the transport is closed."""
        if self._state != "ready":
            return defer.fail(self._not_usable())
        self._state = "closing"
        self._end_reason = self._end_reason or "closed by us (close-session)"
        deferred = self._send_rpc(b"<close-session/>", self.settings.close_timeout)
        deferred.addBoth(self._drop_after_close)
        return deferred

    def close(self, reason: str = "closed") -> None:
        """End the session cleanly: <close-session> if it is up, then drop the transport."""
        if self._state == "lost":
            return
        self._end_reason = self._end_reason or reason
        if self._state == "ready":
            self._emit("netconf.session.closing", reason=reason)
            self.close_session().addErrback(lambda failure: None)
        elif self._state in ("new", "hello"):
            self._end(reason)

    def _drop_after_close(self, result):
        if self._state != "lost":
            self._flush_now()
            self.transport.loseConnection()
        return result

    def subscribe(self, callback: Optional[Callable[[Any], None]]) -> None:
        """Deliver every <notification> element to C{callback} (None: stop)."""
        self._subscriber = callback

    # -- receiving --------------------------------------------------------

    def _message_received(self, message: bytes) -> None:
        if self._state == "hello":
            self._hello_message_received(message)
            return
        # The text of a reply whose root element comes first (UTF-8, see
        # xmlsafe.root_first) holds the bytes "rpc-error" if it has an
        # <rpc-error>: most have not.  Anything else (an XML declaration that
        # may name UTF-7, UTF-16 without a byte-order mark) is looked at.
        self._element_received(
            xmlsafe.parse(message), b"rpc-error" in message or not xmlsafe.root_first(message)
        )

    def _small_messages_received(self, messages: List[bytes]) -> None:
        """L{_message_received} for each of C{messages} (after the hello), replies handled directly."""
        parse = xmlsafe.parse
        root_first = xmlsafe.root_first
        for message in messages:
            if self._state not in ("ready", "closing"):
                return  # the session ended while handling an earlier one
            if message.startswith(_PLAIN_REPLY_START):
                # Root first in UTF-8 (xmlsafe.root_first holds: no
                # declaration, no byte-order mark, no NUL), so its bytes
                # tell whether it has an <rpc-error>; once parsed, an
                # <rpc-reply> in the base namespace (no need to build root.tag).
                self._reply_received(xmlsafe.parse_root_first(message), b"rpc-error" in message)
                continue
            root = parse(message)
            # As in _message_received: only a root-first (UTF-8) reply's
            # bytes tell whether it has an <rpc-error>.
            may_have_errors = b"rpc-error" in message or not root_first(message)
            if root.tag == RPC_REPLY:
                self._reply_received(root, may_have_errors)
            else:
                self._element_received(root, may_have_errors)

    def _element_received(self, root, may_have_errors: bool = True) -> None:
        tag = root.tag
        if tag == RPC_REPLY and self._state != "hello":
            self._reply_received(root, may_have_errors)
        elif tag == NOTIFICATION_TAG and self._state != "hello":
            self._notification_received(root)
        elif tag == HELLO:
            if self._state != "hello":
                raise NetconfProtocolError("the device sent a second <hello>")
            self._hello_received(root)
        elif self._state == "hello":
            raise NetconfProtocolError(f"expected <hello>, the device sent <{etree.QName(root).localname}>")
        else:
            self._emit(
                "netconf.protocol.error",
                reason=f"ignoring unexpected message <{etree.QName(root).localname}>",
                fatal=False,
            )

    def _hello_message_received(self, message: bytes) -> None:
        # Another device of a model seen before: the same <hello> but for
        # the session-id digits (see callhome_mux.netconf.hello).
        seen = hello_templates.known(message)
        if seen is not None and 1 <= seen[0] <= _MAX_SESSION_ID:
            session_id, (capabilities, uris) = seen
            self._hello_accepted(session_id, capabilities, uris)
            return
        root = xmlsafe.parse(message)
        if root.tag != HELLO:
            self._element_received(root)  # refused there: not a <hello>
            return
        self._hello_received(root, message)

    def _hello_received(self, hello, message: Optional[bytes] = None) -> None:
        capabilities = frozenset(
            text.strip()
            for text in (element.text for element in hello.iterfind(_CAPABILITY_PATH))
            if text and not text.isspace()
        )
        text = hello.findtext(qn("session-id"))
        text = text.strip() if text else ""
        if not text.isdigit() or not (1 <= int(text) <= _MAX_SESSION_ID):
            raise NetconfProtocolError(
                f"the device's <hello> has no valid <session-id> (got {text!r}; RFC 6241 §8.1 requires one)"
            )
        capabilities, uris = _shared_capabilities(capabilities)
        session_id = int(text)
        self._hello_accepted(session_id, capabilities, uris)
        if message is not None and self._state == "ready":
            hello_templates.remember(message, session_id, (capabilities, uris))

    def _hello_accepted(self, session_id: int, capabilities: frozenset, uris: frozenset) -> None:
        ours = self.settings.capabilities
        if BASE_1_1 in uris and BASE_1_1 in ours:
            base = "1.1"
        elif BASE_1_0 in uris and BASE_1_0 in ours:
            base = "1.0"
        else:
            raise NetconfProtocolError(
                "no common NETCONF base version: the device advertises "
                f"{sorted(c for c in uris if ':base:' in c) or 'none'}, we advertise {list(ours)}"
            )
        self._cancel_hello_timer()
        if base == "1.1":
            self._chunked = True
            self._decoder.switch_to_chunked()
        self._state = "ready"
        self.session = NetconfSession(self, session_id, capabilities, uris, base)
        self.details.update(session_id=session_id, netconf_base=base, capability_count=len(capabilities))
        self._emit("netconf.hello.done", session_id=session_id, base=base, capability_count=len(capabilities))
        waiters, self._ready_waiters = self._ready_waiters, None
        for waiter in waiters or ():
            waiter.callback(self.session)

    def _reply_received(self, reply, may_have_errors: bool = True) -> None:
        message_id = reply.get("message-id")
        pending = self._pending.pop(message_id, None)
        if pending is None:
            self._unmatched_reply(message_id)
            return
        if not self._pending and not self._processing:
            # (While a read is handled, _process does this at its end: a
            # reply's callback often sends the next RPC, which keeps the
            # timer instead of cancelling and re-arming it per RPC.)
            self._cancel_sweep()
        if may_have_errors and reply.find(RPC_ERROR) is not None:
            errors = [RPCErrorItem.from_element(element) for element in reply.iterfind(RPC_ERROR)]
            if any(error.severity != "warning" for error in errors):
                pending[0].errback(RPCError(errors, reply, operation_name(pending[1])))
                return
        pending[0].callback(reply)

    def _unmatched_reply(self, message_id: Optional[str]) -> None:
        if self._abandoned is not None and message_id in self._abandoned:
            self._abandoned.discard(message_id)
            self._emit("netconf.rpc.late-reply", message_id=message_id)
            return
        self._emit(
            "netconf.protocol.error",
            reason=(
                "rpc-reply without a message-id ignored"
                if message_id is None
                else f"rpc-reply with unknown message-id {message_id!r} ignored"
            ),
            fatal=False,
        )

    def _notification_received(self, notification) -> None:
        subscriber = self._subscriber
        if subscriber is None:
            self._emit("netconf.notification.unexpected", reason="notification without a subscription dropped")
            return
        try:
            subscriber(notification)
        except Exception as error:
            self._emit("netconf.notification.callback.error", reason=repr(error))

    # -- timers and failure -------------------------------------------------

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self._state != "hello":
            return
        timeout = self.settings.hello_timeout
        self._emit("netconf.hello.timeout", timeout=timeout)
        self._end(f"no <hello> from the device within {timeout:g} s", HelloTimeoutError)

    def _sweep(self) -> None:
        """The earliest RPC deadline has come: time out every RPC past its deadline, re-arm for the next."""
        self._sweep_call = None
        now = self.clock.seconds() + _DEADLINE_SLACK
        expired = []
        next_deadline = None
        for message_id, pending in self._pending.items():
            deadline = pending[3]
            if deadline is None:
                continue
            if deadline <= now:
                expired.append(message_id)
            elif next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
        if next_deadline is not None:
            self._sweep_at = next_deadline
            self._sweep_call = self.clock.callLater(max(0.0, next_deadline - self.clock.seconds()), self._sweep)
        for message_id in expired:
            pending = self._pending.pop(message_id, None)
            if pending is not None:
                self._rpc_timed_out(message_id, pending)
        if not self._pending:
            self._cancel_sweep()

    def _rpc_timed_out(self, message_id: str, pending: tuple) -> None:
        self._remember_abandoned(message_id)
        deferred, request, timeout, _ = pending
        name = operation_name(request)
        self._emit("netconf.rpc.timeout", message_id=message_id, operation=name, timeout=timeout)
        deferred.errback(RPCTimeoutError(message_id, timeout, name))

    def _cancel_sweep(self) -> None:
        if self._sweep_call is not None:
            if self._sweep_call.active():
                self._sweep_call.cancel()
            self._sweep_call = None

    def _abandon(self, message_id: str) -> None:
        # Deferred canceller: forget the RPC; a later reply is expected and ignored.
        pending = self._pending.pop(message_id, None)
        if pending is not None:
            if not self._pending:
                self._cancel_sweep()
            self._remember_abandoned(message_id)

    def _remember_abandoned(self, message_id: str) -> None:
        if self._abandoned is None:
            self._abandoned, self._abandoned_order = set(), collections.deque()
        self._abandoned.add(message_id)
        self._abandoned_order.append(message_id)
        if len(self._abandoned_order) > _ABANDONED_MEMORY:
            self._abandoned.discard(self._abandoned_order.popleft())

    def _fail_session(self, reason: str) -> None:
        """The device broke the protocol: report it and end the session."""
        self._emit("netconf.protocol.error", reason=reason, fatal=True)
        self._end(f"protocol error: {reason}", NetconfProtocolError)

    def _end(self, reason: str, ready_error=SessionLostError) -> None:
        if self._state == "lost":
            return
        self._end_reason = reason
        self._state = "failing"
        self._cancel_hello_timer()
        self._fail_everything(reason, ready_error)
        if self.transport is not None:
            self._flush_now()
            self.transport.loseConnection()

    def _fail_everything(self, reason: str, ready_error=SessionLostError) -> None:
        """Fail the hello waiters and every outstanding RPC at once."""
        if self._ready_failure is None and self.session is None:
            self._ready_failure = ready_error(reason)
        waiters, self._ready_waiters = self._ready_waiters, None
        for waiter in waiters or ():
            waiter.errback(ready_error(reason))
        pending, self._pending = self._pending, _NOTHING_PENDING
        self._cancel_sweep()
        for entry in pending.values():
            entry[0].errback(SessionLostError(f"session lost before the reply: {reason}"))

    def _not_usable(self) -> Exception:
        if self._state in ("new", "hello"):
            return NetconfProtocolError("the NETCONF session is not ready yet (hello not exchanged)")
        return SessionLostError(f"the NETCONF session is {self._state}: {self._end_reason or self._lost_reason}")

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def _emit(self, event: str, **fields) -> None:
        self.events.emit(
            event,
            connection_id=self.connection_id,
            device_id=self.device_id,
            peer=self.details.get("peer"),
            **fields,
        )


def _describe_failure(reason) -> str:
    value = getattr(reason, "value", None)
    if value is None:
        return "connection closed"
    text = str(value) or type(value).__name__
    return text


class NetconfSession(NetconfOperations, ManagedSession):
    """
    A NETCONF session that is up: what applications and the registry use.

    @ivar session_id: the device's session-id.
    @ivar capabilities: the device's capabilities (frozenset of URIs as sent).
    @ivar base: C{"1.0"} or C{"1.1"}.
    """

    def __init__(self, protocol: NetconfClientProtocol, session_id: int, capabilities, capability_uris, base: str):
        self.protocol = protocol
        self.session_id = session_id
        self.capabilities = capabilities
        self._capability_uris = capability_uris
        self.base = base

    @property
    def device_id(self) -> str:
        return self.protocol.device_id

    @device_id.setter
    def device_id(self, value: str) -> None:
        self.protocol.device_id = value

    @property
    def details(self) -> Dict[str, Any]:
        return self.protocol.details

    def has_capability(self, uri: str) -> bool:
        """Whether the device advertised C{uri} (parameters after C{?} ignored)."""
        return uri.split("?", 1)[0] in self._capability_uris

    def capability_parameters(self, uri: str) -> Optional[Dict[str, str]]:
        """The C{?a=b&c=d} parameters of an advertised capability, or None if not advertised."""
        for capability in self.capabilities:
            base, _, query = capability.partition("?")
            if base == uri:
                pairs = (item.partition("=") for item in query.split("&") if item)
                return {key: value for key, _, value in pairs}
        return None

    @property
    def is_up(self) -> bool:
        return self.protocol.state == "ready"

    def rpc(self, request, timeout: Optional[float] = None) -> defer.Deferred:
        """
        Send one RPC; fires with the <rpc-reply> element.

        C{request} is the operation: an lxml element, or its XML as bytes or
        str (unqualified elements are in the NETCONF base namespace).  Fails
        with L{RPCError} (every <rpc-error>), L{RPCTimeoutError} after
        C{timeout} seconds (None: the configured default, 0: none), or
        L{SessionLostError}.  Cancelling the Deferred forgets the RPC.
        """
        protocol = self.protocol
        if protocol._state != "ready":  # NetconfClientProtocol.rpc, one call less per RPC
            return defer.fail(protocol._not_usable())
        return protocol._send_rpc(request, timeout)

    def close(self, reason: str = "closed") -> None:
        self.protocol.close(reason)

    def close_session(self) -> defer.Deferred:
        return self.protocol.close_session()

    def whenLost(self) -> defer.Deferred:
        return self.protocol.whenLost()

    def watchLost(self, watcher) -> bool:
        return self.protocol.watchLost(self, watcher)

    def _subscribe(self, callback) -> None:
        self.protocol.subscribe(callback)

    def __repr__(self) -> str:
        return f"<NetconfSession device={self.device_id!r} session-id={self.session_id} base={self.base}>"
