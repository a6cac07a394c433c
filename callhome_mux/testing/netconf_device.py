"""
The device side of NETCONF, for simulators and tests.

L{NetconfServerProtocol} speaks to any transport: it sends its <hello> with a
session-id, agrees on base:1.0 or base:1.1 framing, and answers RPCs from a
L{Datastore} shared by all sessions of one simulated device (so locks held
by one session are seen by the others).

Knobs for tests: C{stop_answering} (RPCs are read but not answered),
C{reply_delay} (seconds, on C{clock}), C{hold_replies} with
L{NetconfServerProtocol.release_replies} (answer in any order), and
L{NetconfServerProtocol.notify} once the client subscribed.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Sequence

from lxml import etree
from twisted.internet.protocol import Factory, Protocol

from callhome_mux.netconf import namespaces as ns
from callhome_mux.netconf import xmlsafe
from callhome_mux.netconf.errors import NetconfProtocolError
from callhome_mux.netconf.framing import FrameDecoder, encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_NS, qn
from callhome_mux.netconf.session import hello_message
from callhome_mux.testing.datastore import KEY_NAMES, Datastore, EditError, apply_edit, subtree_filter

__all__ = ["NetconfServerProtocol", "NetconfServerFactory", "Datastore", "rpc_error", "connect_in_memory"]


class _Refused(Exception):
    """Raised by an operation handler: answer with these <rpc-error> elements."""

    def __init__(self, *errors):
        self.errors = errors


def rpc_error(tag: str, message: str, type: str = "application", severity: str = "error",
              app_tag: Optional[str] = None, path: Optional[str] = None, info=None):
    """An <rpc-error> element (RFC 6241 §4.3); C{info} is a list of elements for <error-info>."""
    error = etree.Element(qn("rpc-error"))
    etree.SubElement(error, qn("error-type")).text = type
    etree.SubElement(error, qn("error-tag")).text = tag
    etree.SubElement(error, qn("error-severity")).text = severity
    if app_tag:
        etree.SubElement(error, qn("error-app-tag")).text = app_tag
    if path:
        etree.SubElement(error, qn("error-path")).text = path
    text = etree.SubElement(error, qn("error-message"))
    text.text = message
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    if info:
        holder = etree.SubElement(error, qn("error-info"))
        for element in info:
            holder.append(element)
    return error


def _refuse(tag: str, message: str, **fields):
    return _Refused(rpc_error(tag, message, **fields))


class NetconfServerProtocol(Protocol):
    def __init__(
        self,
        datastore: Optional[Datastore] = None,
        bases: Sequence[str] = ("1.0", "1.1"),
        capabilities: Sequence[str] = (),
        clock=None,
        confirmed_commit: bool = True,
        max_message_size: int = 64 * 1024 * 1024,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.datastore = datastore if datastore is not None else Datastore()
        self.bases = tuple(bases)
        self.confirmed_commit = confirmed_commit and self.datastore.candidate is not None
        self.extra_capabilities = tuple(capabilities)
        self.decoder = FrameDecoder(max_message_size)
        self.session_id: Optional[int] = None
        self.client_capabilities: frozenset = frozenset()
        self.base: Optional[str] = None
        #: Every <rpc> element received, in order (for assertions).
        self.received: List = []
        self.subscribed = False
        self._notification_filter = None
        # Test knobs.
        self.stop_answering = False
        self.reply_delay = 0.0
        self.hold_replies = False
        self.held: List[bytes] = []

    @property
    def capabilities(self) -> List[str]:
        caps = [{"1.0": ns.BASE_1_0, "1.1": ns.BASE_1_1}[base] for base in self.bases]
        caps += [ns.VALIDATE_1_1, ns.XPATH, ns.NOTIFICATION, ns.WITH_DEFAULTS + "?basic-mode=explicit"]
        if self.datastore.candidate is not None:
            caps.append(ns.CANDIDATE)
        if self.confirmed_commit:
            caps += [ns.CONFIRMED_COMMIT_1_0, ns.CONFIRMED_COMMIT_1_1]
        if self.datastore.schemas:
            caps.append(ns.MONITORING)
        return caps + list(self.extra_capabilities)

    # -- connection -------------------------------------------------------

    def connectionMade(self) -> None:
        self.session_id = self.datastore.new_session_id()
        self.datastore.sessions[self.session_id] = self
        self.transport.write(encode_eom(hello_message(self.capabilities, self.session_id)))

    def connectionLost(self, reason=None) -> None:
        self.datastore.sessions.pop(self.session_id, None)
        self.datastore.release_locks(self.session_id)
        self.subscribed = False

    def dataReceived(self, data: bytes) -> None:
        try:
            self.decoder.push(data)
            while True:
                message = self.decoder.next_message()
                if message is None:
                    return
                self._message_received(xmlsafe.parse(message))
        except NetconfProtocolError:
            self.transport.loseConnection()

    def _message_received(self, root) -> None:
        if self.base is None:
            if root.tag != ns.HELLO:
                raise NetconfProtocolError("expected <hello>")
            found = {c.text.strip() for c in root.iter(qn("capability")) if c.text}
            self.client_capabilities = frozenset(found)
            if ns.BASE_1_1 in found and "1.1" in self.bases:
                self.base = "1.1"
                self.decoder.switch_to_chunked()
            elif ns.BASE_1_0 in found and "1.0" in self.bases:
                self.base = "1.0"
            else:
                raise NetconfProtocolError("no common base version")
        elif root.tag == ns.RPC:
            self._rpc_received(root)
        else:
            raise NetconfProtocolError("expected <rpc>")

    # -- sending ----------------------------------------------------------

    def _frame(self, message: bytes) -> bytes:
        return encode_chunked(message) if self.base == "1.1" else encode_eom(message)

    def send_raw(self, message: bytes) -> None:
        """Send one message (framed for the session) as is: for misbehaving-device tests."""
        self.transport.write(self._frame(message))

    def _send_reply(self, message: bytes) -> None:
        if self.hold_replies:
            self.held.append(message)
        elif self.reply_delay:
            self.clock.callLater(self.reply_delay, self._write_if_connected, message)
        else:
            self.send_raw(message)

    def _write_if_connected(self, message: bytes) -> None:
        if self.transport is not None and self.session_id in self.datastore.sessions:
            self.send_raw(message)

    def release_replies(self, order: Optional[Callable[[List[bytes]], List[bytes]]] = None) -> int:
        """Send the held replies (reversed unless C{order} reorders them); returns how many."""
        held, self.held = self.held, []
        for message in (order(held) if order else list(reversed(held))):
            self.send_raw(message)
        return len(held)

    def notify(self, event, event_time: Optional[datetime] = None) -> bool:
        """
        Send an RFC 5277 <notification> carrying C{event} (element or XML text).

        Returns False (nothing sent) without a subscription or when the
        subscription's filter drops the event.
        """
        if not self.subscribed:
            return False
        element = xmlsafe.parse_fragment(event)[0] if isinstance(event, (str, bytes)) else copy.deepcopy(event)
        if self._notification_filter is not None:
            holder = etree.Element("holder")
            holder.append(element)
            kept = subtree_filter(self._notification_filter, holder)
            if not kept:
                return False
            element = kept[0]
        notification = etree.Element(ns.NOTIFICATION_TAG, nsmap={None: ns.NOTIFICATION_NS})
        when = event_time or datetime.fromtimestamp(self.clock.seconds(), timezone.utc)
        etree.SubElement(notification, qn("eventTime", ns.NOTIFICATION_NS)).text = when.isoformat()
        notification.append(element)
        self.send_raw(etree.tostring(notification))
        return True

    # -- RPC dispatch -------------------------------------------------------

    def _rpc_received(self, rpc) -> None:
        self.received.append(rpc)
        if self.stop_answering:
            return
        reply = etree.Element(ns.RPC_REPLY, nsmap={None: BASE_NS})
        for name, value in rpc.attrib.items():  # RFC 6241 §4.2: copy the attributes
            reply.set(name, value)
        operations = [child for child in rpc if isinstance(child.tag, str)]
        after = None
        try:
            if rpc.get("message-id") is None:
                raise _refuse("missing-attribute", "<rpc> has no message-id", type="rpc",
                              info=[_leaf("bad-attribute", "message-id"), _leaf("bad-element", "rpc")])
            if len(operations) != 1:
                raise _refuse("malformed-message", "an <rpc> holds exactly one operation", type="rpc")
            operation = operations[0]
            handler = self._handlers().get(operation.tag)
            if handler is None:
                raise _refuse("operation-not-supported",
                              f"operation {etree.QName(operation).localname!r} is not supported", type="protocol")
            result = handler(operation)
            if isinstance(result, tuple):
                result, after = result
            for element in result or [etree.Element(ns.OK)]:
                reply.append(element)
        except _Refused as refused:
            for error in refused.errors:
                reply.append(error)
        except EditError as error:
            reply.append(rpc_error(error.tag, error.message, path=error.path))
        if after is None:
            self._send_reply(etree.tostring(reply))
        else:  # close-session: answer at once, whatever the knobs say, then hang up
            self.send_raw(etree.tostring(reply))
            after()

    def _handlers(self) -> Dict[str, Callable]:
        return {
            qn("get"): self._get,
            qn("get-config"): self._get_config,
            qn("edit-config"): self._edit_config,
            qn("copy-config"): self._copy_config,
            qn("delete-config"): self._delete_config,
            qn("lock"): self._lock,
            qn("unlock"): self._unlock,
            qn("commit"): self._commit,
            qn("cancel-commit"): self._cancel_commit,
            qn("discard-changes"): self._discard_changes,
            qn("validate"): self._validate,
            qn("close-session"): self._close_session,
            qn("kill-session"): self._kill_session,
            qn("get-schema", ns.MONITORING_NS): self._get_schema,
            qn("create-subscription", ns.NOTIFICATION_NS): self._create_subscription,
        }

    # -- helpers ----------------------------------------------------------

    def _datastore_name(self, operation, holder: str) -> str:
        element = operation.find(qn(holder))
        names = [etree.QName(child).localname for child in element] if element is not None else []
        if len(names) != 1:
            raise _refuse("missing-element", f"<{holder}> must name one datastore", type="protocol",
                          info=[_leaf("bad-element", holder)])
        if self.datastore.get(names[0]) is None:
            raise _refuse("invalid-value", f"no datastore {names[0]!r} on this device", type="protocol")
        return names[0]

    def _locked_by_other(self, name: str) -> None:
        holder = self.datastore.locks.get(name)
        if holder is not None and holder != self.session_id:
            raise _refuse("in-use", f"the {name} datastore is locked by session {holder}",
                          info=[_leaf("session-id", str(holder))])

    def _filtered(self, operation, data):
        result = etree.Element(ns.DATA, nsmap={None: BASE_NS})
        spec = operation.find(qn("filter"))
        if spec is None:
            selected = [copy.deepcopy(child) for child in data]
        elif spec.get("type") == "xpath":
            selected = _xpath_select(data, spec)
        else:
            selected = subtree_filter(spec, data)
        for element in selected:
            result.append(element)
        return [result]

    # -- operations -------------------------------------------------------

    def _get(self, operation):
        merged = copy.deepcopy(self.datastore.running)
        for element in self.datastore.state:
            merged.append(copy.deepcopy(element))
        return self._filtered(operation, merged)

    def _get_config(self, operation):
        return self._filtered(operation, self.datastore.get(self._datastore_name(operation, "source")))

    def _edit_config(self, operation):
        name = self._datastore_name(operation, "target")
        self._locked_by_other(name)
        default = operation.findtext(qn("default-operation"), "merge").strip()
        test_option = operation.findtext(qn("test-option"), "test-then-set").strip()
        config = operation.find(qn("config"))
        if config is None:
            raise _refuse("missing-element", "<edit-config> needs <config>", type="protocol",
                          info=[_leaf("bad-element", "config")])
        # Work on a copy: an error leaves the datastore as it was.
        scratch = copy.deepcopy(self.datastore.get(name))
        apply_edit(scratch, config, default)
        if test_option != "test-only":
            self.datastore.put(name, scratch)
        return None

    def _copy_config(self, operation):
        target = self._datastore_name(operation, "target")
        self._locked_by_other(target)
        source = operation.find(qn("source"))
        config = source.find(qn("config")) if source is not None else None
        if config is not None:
            self.datastore.put(target, Datastore._data(list(config)))
        else:
            self.datastore.put(target, copy.deepcopy(self.datastore.get(self._datastore_name(operation, "source"))))
        return None

    def _delete_config(self, operation):
        name = self._datastore_name(operation, "target")
        if name == "running":
            raise _refuse("operation-not-supported", "the running datastore cannot be deleted", type="protocol")
        self.datastore.put(name, Datastore._data(None))
        return None

    def _lock(self, operation):
        name = self._datastore_name(operation, "target")
        holder = self.datastore.locks.get(name)
        if holder is not None:
            raise _refuse("lock-denied", f"the {name} datastore is already locked by session {holder}",
                          type="protocol", info=[_leaf("session-id", str(holder))])
        self.datastore.locks[name] = self.session_id
        return None

    def _unlock(self, operation):
        name = self._datastore_name(operation, "target")
        if self.datastore.locks.get(name) != self.session_id:
            raise _refuse("operation-failed", f"this session does not hold the {name} lock", type="protocol")
        del self.datastore.locks[name]
        return None

    def _need_candidate(self):
        if self.datastore.candidate is None:
            raise _refuse("operation-not-supported", "this device has no candidate datastore", type="protocol")

    def _commit(self, operation):
        self._need_candidate()
        self._locked_by_other("running")
        store = self.datastore
        pending = store.pending_confirm
        if operation.find(qn("confirmed")) is not None:
            if not self.confirmed_commit:
                raise _refuse("operation-not-supported", "confirmed commit is not supported", type="protocol")
            timeout = int(operation.findtext(qn("confirm-timeout"), "600"))
            previous = pending[0] if pending else copy.deepcopy(store.running)
            if pending:
                pending[1].cancel()
            timer = self.clock.callLater(timeout, self._roll_back)
            store.pending_confirm = (previous, timer)
        elif pending:  # the confirming commit
            pending[1].cancel()
            store.pending_confirm = None
        store.running = copy.deepcopy(store.candidate)
        return None

    def _roll_back(self):
        store = self.datastore
        if store.pending_confirm:
            store.running = store.pending_confirm[0]
            store.candidate = copy.deepcopy(store.running)
            store.pending_confirm = None

    def _cancel_commit(self, operation):
        if self.datastore.pending_confirm is None:
            raise _refuse("operation-failed", "no confirmed commit is in progress", type="protocol")
        self.datastore.pending_confirm[1].cancel()
        self._roll_back()
        return None

    def _discard_changes(self, operation):
        self._need_candidate()
        self.datastore.candidate = copy.deepcopy(self.datastore.running)
        return None

    def _validate(self, operation):
        source = operation.find(qn("source"))
        if source is None or source.find(qn("config")) is None:
            self._datastore_name(operation, "source")
        return None

    def _close_session(self, operation):
        return None, self.transport.loseConnection

    def _kill_session(self, operation):
        text = (operation.findtext(qn("session-id")) or "").strip()
        if text == str(self.session_id):
            raise _refuse("invalid-value", "a session cannot kill itself; use close-session", type="protocol")
        victim = self.datastore.sessions.get(int(text)) if text.isdigit() else None
        if victim is None:
            raise _refuse("invalid-value", f"no session {text!r}", type="protocol")
        self.datastore.release_locks(victim.session_id)
        victim.transport.loseConnection()
        return None

    def _get_schema(self, operation):
        identifier = (operation.findtext(qn("identifier", ns.MONITORING_NS)) or "").strip()
        version = operation.findtext(qn("version", ns.MONITORING_NS))
        schemas = self.datastore.schemas
        text = schemas.get((identifier, version.strip())) if version else None
        if text is None:
            text = schemas.get(identifier)
        if text is None:
            raise _refuse("invalid-value", f"no schema {identifier!r}", type="application")
        data = etree.Element(qn("data", ns.MONITORING_NS), nsmap={None: ns.MONITORING_NS})
        data.text = text
        return [data]

    def _create_subscription(self, operation):
        if self.subscribed:
            raise _refuse("operation-failed", "this session already has a subscription", type="protocol")
        stream = (operation.findtext(qn("stream", ns.NOTIFICATION_NS)) or "NETCONF").strip()
        if stream != "NETCONF":
            raise _refuse("invalid-value", f"no stream {stream!r}", type="application")
        spec = operation.find(qn("filter", ns.NOTIFICATION_NS))
        self._notification_filter = None if spec is None else list(spec)
        self.subscribed = True
        return None


def _leaf(name: str, text: str):
    element = etree.Element(qn(name))
    element.text = text
    return element


def _xpath_select(data, spec) -> list:
    """
    Copies of the nodes C{select} picks, each with its ancestors (and list keys).

    Each top-level node is evaluated as its own document, so C{/t:top/...}
    addresses the datastore's top-level C{top} as NETCONF expects.
    """
    namespaces = {prefix: uri for prefix, uri in spec.nsmap.items() if prefix}
    result = etree.Element("result")
    for index, top in enumerate(data):
        document = copy.deepcopy(top)
        try:
            nodes = document.xpath(spec.get("select", ""), namespaces=namespaces)
        except etree.XPathError as error:
            raise _refuse("invalid-value", f"bad XPath: {error}", type="protocol")
        made = {}  # source path -> copy, so selected siblings share ancestors
        tree = document.getroottree()
        for node in nodes if isinstance(nodes, list) else []:
            if not isinstance(node, etree._Element):
                continue
            target = result
            for ancestor in reversed(list(node.iterancestors())):
                path = tree.getpath(ancestor)
                if path not in made:
                    made[path] = etree.SubElement(target, ancestor.tag)
                    for child in ancestor:  # keep list keys so entries stay identifiable
                        if len(child) == 0 and etree.QName(child).localname in KEY_NAMES and child is not node:
                            made[path].append(copy.deepcopy(child))
                target = made[path]
            target.append(copy.deepcopy(node))
    return list(result)


class NetconfServerFactory(Factory):
    """Serve L{NetconfServerProtocol} sessions sharing one L{Datastore}."""

    def __init__(self, datastore: Optional[Datastore] = None, **options):
        self.datastore = datastore if datastore is not None else Datastore()
        self.options = options
        #: Every protocol built, in order (for tests).
        self.protocols: List[NetconfServerProtocol] = []

    def buildProtocol(self, addr):
        protocol = NetconfServerProtocol(self.datastore, **self.options)
        protocol.factory = self
        self.protocols.append(protocol)
        return protocol


def connect_in_memory(server: Protocol, client: Protocol, flush: bool = True):
    """
    Join C{server} and C{client} with in-memory transports; returns the
    L{twisted.test.iosim.IOPump} (call C{pump.flush()} to move bytes).
    """
    from twisted.test import iosim

    pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=flush)
    return pump
