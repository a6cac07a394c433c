"""
A small RESTCONF server (RFC 8040) on C{twisted.web}, to be a device in tests.

It serves C{/.well-known/host-meta}, the YANG library (RFC 8525, or the
older C{modules-state} when built with C{yang_library="modules-state"}),
a data tree of two modules (C{ietf-interfaces}-like interfaces with state,
and an C{example-system:system} container), GET with C{depth}, C{fields}
and C{content}, PUT/POST/PATCH (plain merge)/DELETE in JSON and XML, an
operation (C{example-ops:reboot}), an action on an interface
(C{.../interface=eth0/example-ops:reset}), an operation that always fails
with two fully populated errors (C{example-ops:fail}), and
C{ietf-restconf:errors} replies: 404 invalid-value (no such resource),
404 data-missing, 409 data-exists, 400 malformed-message, 405, 415.

The schema knowledge is the minimum the tree needs (which nodes are lists
and their keys, which are state, which leaves are booleans); it is a
simulator, not a YANG engine.

Calling home: the device is the TCP client.  L{RestconfDevice.protocol}
returns a server-side HTTP protocol for any transport (the TLS device of
L{callhome_mux.testing.tls_device} wraps it, either TLS direction);
L{RestconfDevice.call_home} dials plain TCP for tests without TLS.
For tests it counts connections and records requests, can hold requests
unanswered (L{hold}) and drop its connections (L{drop_connections}).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from lxml import etree
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.web import server
from twisted.web.resource import Resource

from callhome_mux.restconf.encoding import RESTCONF_NAMESPACE

JSON_TYPE = "application/yang-data+json"
XML_TYPE = "application/yang-data+xml"
YANG_LIBRARY_NAMESPACE = "urn:ietf:params:xml:ns:yang:ietf-yang-library"

NAMESPACES = {
    "ietf-interfaces": "urn:ietf:params:xml:ns:yang:ietf-interfaces",
    "example-system": "urn:example:system",
    "example-ops": "urn:example:ops",
    "ietf-yang-library": YANG_LIBRARY_NAMESPACE,
    "ietf-restconf": RESTCONF_NAMESPACE,
}
MODULES = (
    ("ietf-interfaces", "2018-02-20"),
    ("example-system", "2026-01-01"),
    ("example-ops", "2026-01-01"),
    ("ietf-yang-library", "2019-01-04"),
    ("ietf-restconf", "2017-01-26"),
)
#: List nodes (by local name) and their keys.
LIST_KEYS = {"interface": ("name",), "module-set": ("name",), "module": ("name",)}
#: config false nodes (by local name).
STATE_NODES = frozenset({"oper-status", "statistics", "current-datetime"})
BOOLEAN_LEAVES = frozenset({"enabled"})


def initial_data() -> Dict[str, Any]:
    return {
        "ietf-interfaces:interfaces": {
            "interface": [
                {
                    "name": "eth0",
                    "description": "uplink",
                    "type": "iana-if-type:ethernetCsmacd",
                    "enabled": True,
                    "oper-status": "up",
                    "statistics": {"in-octets": 1000, "out-octets": 2000},
                },
                {
                    "name": "eth1",
                    "type": "iana-if-type:ethernetCsmacd",
                    "enabled": False,
                    "oper-status": "down",
                    "statistics": {"in-octets": 0, "out-octets": 0},
                },
            ]
        },
        "example-system:system": {
            "hostname": "device-1",
            "contact": "noc@example.net",
            "clock": {"timezone": "UTC", "current-datetime": "2026-01-01T00:00:00Z"},
        },
    }


class Problem(Exception):
    """One RESTCONF error reply: status plus error fields."""

    def __init__(self, status: int, tag: str, message: str, path: Optional[str] = None, type_: str = "protocol", app_tag=None, info=None):
        super().__init__(message)
        self.status = status
        self.entries = [
            {
                "error-type": type_,
                "error-tag": tag,
                **({"error-app-tag": app_tag} if app_tag else {}),
                **({"error-path": path} if path else {}),
                "error-message": message,
                **({"error-info": info} if info is not None else {}),
            }
        ]


@dataclass
class SeenRequest:
    method: str
    uri: str
    connection: int


# -- the data tree ------------------------------------------------------------


def _split_segment(segment: str) -> Tuple[str, Optional[List[str]]]:
    if "=" in segment:
        name, keys = segment.split("=", 1)
        return unquote(name), [unquote(k) for k in keys.split(",")]
    return unquote(segment), None


def _local(name: str) -> str:
    return name.split(":", 1)[-1]


def _find_child(container: Dict[str, Any], name: str) -> Optional[str]:
    """The key in C{container} for C{name}, qualified or not."""
    if name in container:
        return name
    local = _local(name)
    for key in container:
        if _local(key) == local:
            return key
    return None


@dataclass
class Target:
    """Where an api-path points: the parent holding it, and how to address it there."""

    parent: Any  # dict (container) or list (list entries)
    key: Any  # dict key, or list index; None for a list entry that does not exist yet
    name: str  # qualified name of the node
    module: str
    value: Any
    keys: Optional[List[str]] = None


def resolve(tree: Dict[str, Any], segments: List[str], error_path: str, create: bool = False) -> Target:
    """
    Walk C{segments}; L{Problem} 404 data-missing when a node on the way is
    absent.  The last node may be absent (C{value} C{None}); with C{create}
    a missing list is added to its parent so that the entry can be put.
    """
    node: Any = tree
    module = ""
    target = None
    for index, segment in enumerate(segments):
        name, keys = _split_segment(segment)
        if ":" in name:
            module = name.split(":", 1)[0]
        elif index == 0:
            raise Problem(400, "malformed-message", "a top-level node needs its module prefix", error_path)
        qualified = f"{module}:{_local(name)}"
        if not isinstance(node, dict):
            raise Problem(404, "invalid-value", f"{name} is not a child of a container", error_path)
        child = _find_child(node, qualified)
        local = _local(name)
        if local in LIST_KEYS:
            if keys is None:
                raise Problem(400, "invalid-value", f"list {local} needs its keys in the path", error_path)
            entries = node.get(child, []) if child is not None else []
            key_names = LIST_KEYS[local]
            if len(keys) != len(key_names):
                raise Problem(400, "invalid-value", f"list {local} has {len(key_names)} key(s)", error_path)
            found = None
            for position, entry in enumerate(entries):
                if [str(entry.get(k)) for k in key_names] == keys:
                    found = position
            if child is None and create:
                child = qualified if index == 0 else local
                node[child] = entries
            if found is None:
                if index == len(segments) - 1:
                    return Target(entries, None, qualified, module, None, keys)
                raise Problem(404, "data-missing", f"no {local} {','.join(keys)}", error_path)
            target = Target(entries, found, qualified, module, entries[found], keys)
            node = entries[found]
        else:
            if child is None:
                if index == len(segments) - 1:
                    return Target(node, qualified if index == 0 else local, qualified, module, None)
                raise Problem(404, "data-missing", f"no {name}", error_path)
            target = Target(node, child, qualified, module, node[child])
            node = node[child]
    return target


def prune_depth(value: Any, depth: int) -> Any:
    if isinstance(value, list):
        return [prune_depth(entry, depth) for entry in value]
    if isinstance(value, dict):
        if depth <= 1:
            return {}
        return {key: prune_depth(child, depth - 1) for key, child in value.items()}
    return value


def expand_fields(expression: str) -> List[List[str]]:
    """
    RFC 8040 §4.8.3 C{fields} to a list of paths: C{a;b/c;d(e;f/g)} gives
    C{[a], [b, c], [d, e], [d, f, g]}.
    """
    paths: List[List[str]] = []
    for part in _split_top_level(expression):
        if "(" in part:
            if not part.endswith(")"):
                raise Problem(400, "invalid-value", f"bad fields expression {expression}")
            prefix, inner = part.split("(", 1)
            for sub in expand_fields(inner[:-1]):
                paths.append(prefix.split("/") + sub)
        elif part:
            paths.append(part.split("/"))
    return paths


def _split_top_level(expression: str) -> List[str]:
    parts, depth, current = [], 0, ""
    for char in expression:
        if char == ";" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise Problem(400, "invalid-value", f"bad fields expression {expression}")
        current += char
    if depth != 0:
        raise Problem(400, "invalid-value", f"bad fields expression {expression}")
    return parts + [current]


def select_fields(value: Any, paths: List[List[str]]) -> Any:
    """Keep only C{paths} below C{value}; list entries are filtered one by one."""
    if isinstance(value, list):
        return [select_fields(entry, paths) for entry in value]
    if not isinstance(value, dict):
        return value
    # Group by first step so that a;a/b style siblings merge, not overwrite.
    grouped: Dict[str, List[List[str]]] = {}
    for path in paths:
        key = _find_child(value, path[0])
        if key is not None:
            grouped.setdefault(key, []).append(path[1:])
    return {
        key: value[key] if any(not rest for rest in rests) else select_fields(value[key], rests)
        for key, rests in grouped.items()
    }


def filter_content(value: Any, content: str, name: str = "") -> Any:
    """C{config}: drop state nodes; C{nonconfig}: keep state nodes (and list keys leading there)."""
    if content == "all":
        return value
    if isinstance(value, list):
        kept = [filter_content(entry, content, name) for entry in value]
        return [entry for entry in kept if entry not in (None, {})]
    if not isinstance(value, dict):
        is_state = _local(name) in STATE_NODES
        return value if (is_state == (content == "nonconfig")) else None
    result = {}
    for key, child in value.items():
        local = _local(key)
        if local in STATE_NODES:
            if content == "nonconfig":
                result[key] = child
            continue
        filtered = filter_content(child, content, key)
        if filtered is not None and filtered != {} and filtered != []:
            result[key] = filtered
    if content == "nonconfig" and result and _local(name) in LIST_KEYS:
        for key_name in LIST_KEYS[_local(name)]:
            if key_name in value:
                result[key_name] = value[key_name]
    return result


def merge(into: Dict[str, Any], data: Dict[str, Any]) -> None:
    """Plain merge (RFC 8040 §4.6.1): containers merge, list entries merge by key, leaves replace."""
    for key, value in data.items():
        existing = _find_child(into, key)
        local = _local(key)
        if existing is None:
            into[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(into[existing], dict):
            merge(into[existing], value)
        elif isinstance(value, list) and local in LIST_KEYS:
            key_names = LIST_KEYS[local]
            for entry in value:
                match = next(
                    (old for old in into[existing] if all(old.get(k) == entry.get(k) for k in key_names)), None
                )
                if match is None:
                    into[existing].append(copy.deepcopy(entry))
                else:
                    merge(match, entry)
        else:
            into[existing] = copy.deepcopy(value)


# -- encodings --------------------------------------------------------------


def to_xml(name: str, value: Any, module: str, parent=None):
    """Elements for a JSON-form node (a list gives one element per entry)."""
    if ":" in name:
        module, local = name.split(":", 1)
    else:
        local = name
    tag = f"{{{NAMESPACES.get(module, 'urn:example:' + module)}}}{local}"
    values = value if isinstance(value, list) else [value]
    made = []
    for item in values:
        element = etree.SubElement(parent, tag) if parent is not None else etree.Element(tag)
        if isinstance(item, dict):
            for child_name, child in item.items():
                to_xml(child_name, child, module, element)
        elif isinstance(item, bool):
            element.text = "true" if item else "false"
        elif item is not None:
            element.text = str(item)
        made.append(element)
    return made


def from_xml(element, parent_module: str = "") -> Tuple[str, Any]:
    """(JSON member name, value) for an element, qualified when its module changes."""
    namespace = etree.QName(element).namespace
    local = etree.QName(element).localname
    module = next((m for m, ns in NAMESPACES.items() if ns == namespace), None)
    if module is None:
        raise Problem(400, "unknown-namespace", f"unknown namespace {namespace}")
    name = local if module == parent_module else f"{module}:{local}"
    children = list(element)
    if not children:
        text = element.text or ""
        if local in BOOLEAN_LEAVES:
            return name, text.strip() == "true"
        return name, text
    value: Dict[str, Any] = {}
    for child in children:
        child_name, child_value = from_xml(child, module)
        if _local(child_name) in LIST_KEYS:
            value.setdefault(child_name, []).append(child_value)
        else:
            value[child_name] = child_value
    return name, value


def parse_body(request) -> Optional[Tuple[str, Any]]:
    """The request body as (member name, value); C{None} when empty."""
    body = request.content.read()
    if not body:
        return None
    content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    if content_type in (JSON_TYPE, "application/json"):
        try:
            document = json.loads(body)
        except ValueError as error:
            raise Problem(400, "malformed-message", f"bad JSON: {error}")
        if not isinstance(document, dict) or len(document) != 1:
            raise Problem(400, "malformed-message", "the body must hold exactly one member")
        return next(iter(document.items()))
    if content_type in (XML_TYPE, "application/xml"):
        if b"<!DOCTYPE" in body.upper():
            raise Problem(400, "malformed-message", "DOCTYPE not allowed")
        try:
            root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
        except etree.XMLSyntaxError as error:
            raise Problem(400, "malformed-message", f"bad XML: {error}")
        return from_xml(root)
    raise Problem(415, "invalid-value", f"unsupported media type {content_type or '(none)'}")


def wants_xml(request) -> bool:
    accept = (request.getHeader("accept") or "").lower()
    if "yang-data+xml" not in accept and "application/xml" not in accept:
        return False
    if "yang-data+json" not in accept:
        return True
    return accept.index("yang-data+xml") < accept.index("yang-data+json")


# -- the HTTP side --------------------------------------------------------------


class _RestconfResource(Resource):
    isLeaf = True

    def __init__(self, device: "RestconfDevice"):
        super().__init__()
        self.device = device

    def render(self, request):
        # Connections are numbered by their first request: the object
        # Site.buildProtocol returns wraps the channel requests carry.
        numbers = self.device._connection_numbers
        number = numbers.setdefault(id(request.channel), len(numbers) + 1)
        self.device.requests.append(SeenRequest(request.method.decode(), request.uri.decode(), number))
        if self.device.holding:
            self.device.held.append(request)
        else:
            self.device.answer(request)
        # Last: a waiter sees the request already held (or answered).
        self.device._tell_request_waiters()
        return server.NOT_DONE_YET


class RestconfDevice:
    """
    The simulated device: data, behaviour switches, and what it saw.

    @ivar data: the datastore in RFC 7951 JSON form (mutable).
    @ivar requests: every request seen, in order, with the connection number.
    @ivar connection_count: connections made to the HTTP server so far.
    """

    def __init__(self, data=None, root: str = "/restconf", host_meta: bool = True, yang_library: str = "yang-library", content_id: str = "1"):
        self.data = copy.deepcopy(data) if data is not None else initial_data()
        self.root = root.rstrip("/")
        self.host_meta = host_meta
        self.yang_library = yang_library
        self.content_id = content_id
        self.requests: List[SeenRequest] = []
        self.connection_count = 0
        self.channels: List[Any] = []
        self.holding = False
        self.held: List[Any] = []
        self._connection_numbers: Dict[int, int] = {}
        self._lost: List[defer.Deferred] = []
        self._request_waiters: List[Tuple[int, defer.Deferred]] = []
        self.transports: List[Any] = []
        self.site = server.Site(_RestconfResource(self), timeout=None)
        self.site.displayTracebacks = False
        self.site.noisy = False

    # -- transports ------------------------------------------------------------

    def protocol(self, addr=None):
        """A server-side HTTP protocol for one connection, over any transport."""
        channel = self.site.buildProtocol(addr)
        self.connection_count += 1
        self.channels.append(channel)
        lost = defer.Deferred()
        self._lost.append(lost)
        made, original = channel.makeConnection, channel.connectionLost

        def makeConnection(transport):
            self.transports.append(transport)
            made(transport)

        def connectionLost(reason):
            original(reason)
            lost.callback(None)

        channel.makeConnection = makeConnection
        channel.connectionLost = connectionLost
        return channel

    def whenRequests(self, count: int) -> defer.Deferred:
        """Fires once the device has seen C{count} requests in all."""
        if len(self.requests) >= count:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._request_waiters.append((count, waiter))
        return waiter

    def whenAllLost(self) -> defer.Deferred:
        """Fires once every connection the device had is closed (test cleanup)."""
        return defer.gatherResults(list(self._lost))

    def factory(self) -> Factory:
        device = self

        class _Factory(Factory):
            noisy = False

            def buildProtocol(self, addr):
                return device.protocol(addr)

        return _Factory()

    def over_tls(self, certificate_pem: bytes, key_pem: bytes, trust_anchors=(), **options):
        """
        A L{TLSCallHomeDevice} running this RESTCONF server inside TLS.

        Call home with C{.callHome(reactor, host, port, direction)}; the
        direction is C{"silent"} (RFC 8071 §4: the device is the TLS server)
        or C{"client-hello"}.  ALPN offers C{http/1.1} unless C{alpn} is given.
        """
        from callhome_mux.testing.tls_device import TLSCallHomeDevice

        options.setdefault("alpn", ["http/1.1"])
        return TLSCallHomeDevice(certificate_pem, key_pem, trust_anchors, protocol_factory=self.factory(), **options)

    def call_home(self, reactor, host: str, port: int):
        """Dial the manager over plain TCP (RFC 8071 shape, without TLS); fires with the HTTP protocol."""
        return TCP4ClientEndpoint(reactor, host, port).connect(self.factory())

    def _tell_request_waiters(self) -> None:
        due = [w for w in self._request_waiters if w[0] <= len(self.requests)]
        self._request_waiters = [w for w in self._request_waiters if w not in due]
        for _, waiter in due:
            waiter.callback(None)

    # -- test switches ---------------------------------------------------------

    def hold(self) -> None:
        """Leave requests unanswered from now on (to test timeouts and losses)."""
        self.holding = True

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for request in held:
            self.answer(request)

    def drop_connections(self) -> None:
        for transport in self.transports:
            transport.loseConnection()

    # -- answering -------------------------------------------------------------

    def answer(self, request) -> None:
        xml = wants_xml(request)
        try:
            status, document = self._dispatch(request)
        except Problem as problem:
            status, document = problem.status, {"ietf-restconf:errors": {"error": problem.entries}}
        self._send(request, status, document, xml)

    def _send(self, request, status: int, document, xml: bool) -> None:
        request.setResponseCode(status)
        if document is None:
            request.finish()
            return
        if isinstance(document, tuple):  # (content type, bytes): host-meta
            content_type, body = document
        elif xml:
            content_type, body = XML_TYPE, self._xml_document(document)
        else:
            content_type, body = JSON_TYPE, json.dumps(document).encode()
        request.setHeader(b"content-type", content_type.encode())
        request.write(body)
        request.finish()

    def _xml_document(self, document: Dict[str, Any]) -> bytes:
        if "ietf-restconf:errors" in document:
            root = etree.Element(f"{{{RESTCONF_NAMESPACE}}}errors")
            for entry in document["ietf-restconf:errors"]["error"]:
                error = etree.SubElement(root, f"{{{RESTCONF_NAMESPACE}}}error")
                for field in ("error-type", "error-tag", "error-app-tag", "error-path", "error-message", "error-info"):
                    if field not in entry:
                        continue
                    child = etree.SubElement(error, f"{{{RESTCONF_NAMESPACE}}}{field}")
                    if isinstance(entry[field], dict):
                        for name, value in entry[field].items():
                            to_xml(name, value, "ietf-restconf", child)
                    else:
                        child.text = str(entry[field])
            return etree.tostring(root)
        if len(document) == 1:
            (name, value), = document.items()
            if name == "ietf-restconf:data":
                root = etree.Element(f"{{{RESTCONF_NAMESPACE}}}data")
                for child_name, child in value.items():
                    to_xml(child_name, child, "", root)
                return etree.tostring(root)
            elements = to_xml(name, value, "")
            if len(elements) == 1:
                return etree.tostring(elements[0])
        raise Problem(500, "operation-failed", "cannot render this reply as XML")

    def _dispatch(self, request) -> Tuple[int, Any]:
        uri = urlsplit(request.uri.decode("ascii"))
        path = uri.path
        method = request.method.decode()
        if path == "/.well-known/host-meta":
            if not self.host_meta:
                raise Problem(404, "invalid-value", "no host-meta here")
            xrd = f'<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"><Link rel="restconf" href="{self.root}"/></XRD>'
            return 200, ("application/xrd+xml", xrd.encode())
        if path in (self.root, self.root + "/"):
            return 200, {"ietf-restconf:restconf": {"data": {}, "operations": {}, "yang-library-version": "2019-01-04"}}
        if path.startswith(self.root + "/operations/"):
            if method != "POST":
                raise Problem(405, "operation-not-supported", f"{method} on an operation")
            return self._operation(request, path[len(self.root + "/operations/"):])
        if path == self.root + "/data" or path.startswith(self.root + "/data/"):
            api_path = path[len(self.root + "/data"):].strip("/")
            return self._data(request, method, api_path, parse_qs(uri.query))
        raise Problem(404, "invalid-value", f"no resource {path}")

    # -- data resources ----------------------------------------------------------

    def _view(self) -> Dict[str, Any]:
        """The datastore as read: stored data plus the YANG library (state)."""
        view = dict(self.data)
        modules = [{"name": n, "revision": r, "namespace": NAMESPACES[n]} for n, r in MODULES]
        if self.yang_library == "yang-library":
            view["ietf-yang-library:yang-library"] = {
                "module-set": [{"name": "all", "module": modules}],
                "content-id": self.content_id,
            }
        elif self.yang_library == "modules-state":
            view["ietf-yang-library:modules-state"] = {
                "module-set-id": self.content_id,
                "module": [dict(m, **{"conformance-type": "implement"}) for m in modules],
            }
        return view

    def _data(self, request, method: str, api_path: str, query: Dict[str, List[str]]) -> Tuple[int, Any]:
        segments = [s for s in api_path.split("/") if s]
        error_path = "/" + api_path if api_path else "/"
        if segments and "example-ops:" in segments[-1] and method == "POST":
            return self._action(request, segments, error_path)
        if segments and segments[0].startswith("ietf-yang-library:") and method != "GET":
            raise Problem(405, "operation-not-supported", "the YANG library is read-only")
        if method == "GET":
            return self._get(segments, query, error_path)
        if method == "DELETE":
            target = resolve(self.data, segments, error_path) if segments else None
            if target is None or target.value is None:
                raise Problem(404, "data-missing", "nothing to delete", error_path)
            del target.parent[target.key]
            return 204, None
        parsed = parse_body(request)
        if parsed is None:
            raise Problem(400, "malformed-message", f"{method} needs a body")
        name, value = parsed
        if method == "POST":
            return self._post(request, segments, name, value, error_path)
        if not segments:
            raise Problem(405, "operation-not-supported", f"{method} on the datastore root is not supported here")
        target = resolve(self.data, segments, error_path, create=(method == "PUT"))
        if _local(name) != _local(target.name):
            raise Problem(400, "malformed-message", f"body node {name} does not match the target {target.name}", error_path)
        if target.keys is not None:
            value = self._single_entry(value, target, error_path)
        if method == "PUT":
            created = target.value is None
            if target.key is None:
                target.parent.append(value)
            else:
                target.parent[target.key] = value
            return (201 if created else 204), None
        if method == "PATCH":
            if target.value is None:
                raise Problem(404, "data-missing", "PATCH needs an existing target", error_path)
            if isinstance(target.value, dict) and isinstance(value, dict):
                merge(target.value, value)
            else:
                target.parent[target.key] = value
            return 204, None
        raise Problem(405, "operation-not-supported", f"{method} is not supported")

    @staticmethod
    def _single_entry(value, target: Target, error_path: str):
        if isinstance(value, list):
            if len(value) != 1:
                raise Problem(400, "malformed-message", "a list entry body holds exactly one entry", error_path)
            value = value[0]
        keys = [str(value.get(k)) for k in LIST_KEYS[_local(target.name)]]
        if keys != target.keys:
            raise Problem(400, "invalid-value", "the key in the body differs from the key in the path", error_path)
        return value

    def _get(self, segments, query, error_path):
        view = self._view()
        for name in query:
            if name not in ("depth", "fields", "content", "with-defaults"):
                raise Problem(400, "invalid-value", f"unknown query parameter {name}")
        if segments:
            target = resolve(view, segments, error_path)
            if target.value is None:
                raise Problem(404, "data-missing", f"no data at {error_path}", error_path)
            value = target.value
            name = target.name
        else:
            value, name = view, None
        content = query.get("content", ["all"])[0]
        if content not in ("config", "nonconfig", "all"):
            raise Problem(400, "invalid-value", f"bad content value {content}")
        value = filter_content(value, content, name or "")
        if "fields" in query:
            value = select_fields(value, expand_fields(query["fields"][0]))
        with_defaults = query.get("with-defaults", ["report-all"])[0]
        if with_defaults not in ("report-all", "trim", "explicit", "report-all-tagged"):
            raise Problem(400, "invalid-value", f"bad with-defaults value {with_defaults}")
        if "depth" in query:
            raw = query["depth"][0]
            if raw != "unbounded":
                try:
                    depth = int(raw)
                except ValueError:
                    raise Problem(400, "invalid-value", f"bad depth {raw}")
                value = prune_depth(value, depth) if name else {k: prune_depth(v, depth) for k, v in value.items()}
        if name is None:
            return 200, {"ietf-restconf:data": value}
        return 200, {name: [value] if target.keys is not None else value}

    def _post(self, request, segments, name, value, error_path):
        parent = resolve(self.data, segments, error_path).value if segments else self.data
        if parent is None:
            raise Problem(404, "data-missing", f"no parent at {error_path}", error_path)
        if not isinstance(parent, dict):
            raise Problem(400, "malformed-message", "POST creates children of a container or list entry", error_path)
        local = _local(name)
        member = name if not segments else local
        if local in LIST_KEYS:
            entries = value if isinstance(value, list) else [value]
            if len(entries) != 1:
                raise Problem(400, "malformed-message", "POST creates one list entry", error_path)
            entry = entries[0]
            key_names = LIST_KEYS[local]
            existing_key = _find_child(parent, name)
            existing = parent.get(existing_key, []) if existing_key else []
            keys = [str(entry.get(k)) for k in key_names]
            if any([str(old.get(k)) for k in key_names] == keys for old in existing):
                raise Problem(409, "data-exists", f"{local} {','.join(keys)} already exists", f"{error_path}/{name}={','.join(keys)}")
            parent.setdefault(existing_key or member, existing).append(entry)
            location = f"{self.root}/data/{'/'.join(segments + [name])}={','.join(keys)}"
        else:
            if _find_child(parent, name) is not None:
                raise Problem(409, "data-exists", f"{name} already exists", f"{error_path}/{name}")
            parent[member] = value
            location = f"{self.root}/data/{'/'.join(segments + [name])}"
        request.setHeader(b"location", location.encode())
        return 201, None

    # -- operations and actions -------------------------------------------------

    def _input(self, request, module: str) -> Dict[str, Any]:
        parsed = parse_body(request)
        if parsed is None:
            return {}
        name, value = parsed
        if _local(name) != "input" or not isinstance(value, (dict, str)):
            raise Problem(400, "malformed-message", f"expected {module}:input, got {name}")
        return value if isinstance(value, dict) else {}

    def _operation(self, request, name: str) -> Tuple[int, Any]:
        if name == "example-ops:reboot":
            arguments = self._input(request, "example-ops")
            delay = arguments.get("delay", 0)
            return 200, {"example-ops:output": {"message": f"rebooting in {delay} seconds"}}
        if name == "example-ops:noop":
            self._input(request, "example-ops")
            return 204, None
        if name == "example-ops:fail":
            self._input(request, "example-ops")
            first = Problem(
                400, "invalid-value", "delay is out of range", "/example-ops:fail/input/delay",
                type_="application", app_tag="example-ops:range", info={"example-ops:bad-value": "99"},
            )
            second = Problem(400, "missing-element", "reason is mandatory", "/example-ops:fail/input/reason", type_="application")
            first.entries += second.entries
            raise first
        raise Problem(404, "invalid-value", f"no operation {name}")

    def _action(self, request, segments, error_path) -> Tuple[int, Any]:
        action = _local(segments[-1])
        target = resolve(self.data, segments[:-1], error_path)
        if target.value is None:
            raise Problem(404, "data-missing", "the action's node does not exist", error_path)
        if action != "reset" or _local(target.name) != "interface":
            raise Problem(404, "invalid-value", f"no action {segments[-1]}", error_path)
        self._input(request, "example-ops")
        target.value["statistics"] = {"in-octets": 0, "out-octets": 0}
        return 200, {"example-ops:output": {"reset-at": "2026-01-01T00:00:00Z"}}


# -- command line (callhome-mux-device restconf) ----------------------------------


def restconf_subcommand():
    """
    The C{restconf} subcommand of C{callhome-mux-device}: this simulator
    calling home over TLS (or plain TCP with C{--plain}, for tests)::

        callhome-mux-device restconf --connect 127.0.0.1:4336 \\
            --certificate dev.crt --key dev.key --trust ca.crt --direction silent
    """
    from callhome_mux.testing.cli import Subcommand

    return Subcommand(
        "restconf",
        "RESTCONF call home (RFC 8071 §4): dial out, serve RESTCONF over TLS",
        _cli_arguments,
        _cli_run,
    )


def _cli_arguments(parser) -> None:
    from callhome_mux.testing.cli import parse_address

    parser.add_argument("--connect", required=True, type=parse_address, metavar="HOST:PORT", help="manager to call")
    parser.add_argument("--certificate", metavar="FILE", help="device certificate chain (PEM, leaf first)")
    parser.add_argument("--key", metavar="FILE", help="device private key (PEM)")
    parser.add_argument("--trust", metavar="FILE", action="append", default=[], help="CA the manager's certificate must chain to (repeatable)")
    parser.add_argument("--direction", choices=("silent", "client-hello"), default="silent", help="who sends the ClientHello (default: silent, RFC 8071)")
    parser.add_argument("--root", default="/restconf", help="RESTCONF root announced in host-meta")
    parser.add_argument("--plain", action="store_true", help="no TLS (tests only)")
    parser.add_argument("--reconnect", type=float, metavar="SECONDS", help="call home again this long after a disconnect")


@defer.inlineCallbacks
def _cli_run(reactor, options, out=None):
    import sys

    from twisted.internet import task

    out = out or sys.stdout
    host, port = options.connect
    device = RestconfDevice(root=options.root)
    if options.plain:
        tls_device = None
    else:
        if not (options.certificate and options.key):
            raise SystemExit("--certificate and --key are required unless --plain")
        from callhome_mux.testing.cli import read_tls_material

        certificate_pem, key_pem, anchors = read_tls_material(options.certificate, options.key, options.trust)
        tls_device = device.over_tls(certificate_pem, key_pem, anchors)
    while True:
        if tls_device is None:
            yield device.call_home(reactor, host, port)
        else:
            connection = yield tls_device.callHome(reactor, host, port, options.direction)
        print(f"called home to {host}:{port}", file=out)
        if tls_device is None:
            yield device.whenAllLost()
        else:
            yield tls_device.whenLost(connection)
        print(f"disconnected after {len(device.requests)} requests", file=out)
        if options.reconnect is None:
            return 0
        yield task.deferLater(reactor, options.reconnect, lambda: None)
