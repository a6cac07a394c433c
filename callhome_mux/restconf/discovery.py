"""
What a RESTCONF client learns before its first real request (RFC 8040 §3.1, §10).

The root comes from C{/.well-known/host-meta}: an XRD document (RFC 6415)
with C{<Link rel="restconf" href="/restconf"/>}, or its JSON form (JRD).
The modules come from the YANG library: C{ietf-yang-library:yang-library}
(RFC 8525, with a C{content-id}) or the older C{modules-state} (RFC 7895,
with a C{module-set-id}).  Both are parsed from JSON or XML into the same
L{YangLibrary}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from callhome_mux.restconf.encoding import JSON, XML, encoding_of, parse_json, parse_xml
from callhome_mux.restconf.errors import UnsafeContent

HOST_META_PATH = "/.well-known/host-meta"
XRD_NAMESPACE = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
YANG_LIBRARY_NAMESPACE = "urn:ietf:params:xml:ns:yang:ietf-yang-library"

#: Tried in this order under C{{root}/data/}.
YANG_LIBRARY_RESOURCES = ("ietf-yang-library:yang-library", "ietf-yang-library:modules-state")


def root_from_host_meta(content_type: Optional[str], body: bytes) -> Optional[str]:
    """The C{href} of the C{restconf} link, without a trailing slash; C{None} if absent."""
    if encoding_of(content_type) == JSON or body.lstrip().startswith(b"{"):
        document = parse_json(body)
        links = document.get("links", []) if isinstance(document, dict) else []
        hrefs = [link.get("href") for link in links if isinstance(link, dict) and link.get("rel") == "restconf"]
    else:
        root = parse_xml(body)
        hrefs = [
            link.get("href")
            for link in root.iter(f"{{{XRD_NAMESPACE}}}Link", "Link")
            if link.get("rel") == "restconf"
        ]
    for href in hrefs:
        if isinstance(href, str) and href.startswith("/"):
            return href.rstrip("/") or "/"
    return None


@dataclass(frozen=True)
class YangModule:
    name: str
    revision: Optional[str] = None
    namespace: Optional[str] = None


@dataclass(frozen=True)
class YangLibrary:
    """The device's modules, as its YANG library lists them."""

    #: C{yang-library} (RFC 8525) or C{modules-state} (RFC 7895).
    source: str
    #: RFC 8525 C{content-id}, or RFC 7895 C{module-set-id}.
    content_id: Optional[str]
    modules: Tuple[YangModule, ...]

    def namespace(self, module: str) -> Optional[str]:
        for entry in self.modules:
            if entry.name == module:
                return entry.namespace
        return None

    def has(self, module: str) -> bool:
        return any(entry.name == module for entry in self.modules)

    def summary(self) -> Dict[str, Any]:
        return {"yang_library": self.source, "module_count": len(self.modules), "content_id": self.content_id}


def parse_yang_library(content_type: Optional[str], body: bytes) -> YangLibrary:
    """Parse either YANG library form from either encoding; L{UnsafeContent} if neither."""
    kind = encoding_of(content_type)
    if kind == XML or (kind is None and body.lstrip().startswith(b"<")):
        return _from_xml(parse_xml(body))
    return _from_json(parse_json(body))


def _from_json(document: Any) -> YangLibrary:
    if not isinstance(document, dict):
        raise UnsafeContent("the YANG library reply is not a JSON object")
    library = document.get("ietf-yang-library:yang-library")
    if isinstance(library, dict):
        modules = []
        for module_set in library.get("module-set", []) or []:
            for entry in module_set.get("module", []) or []:
                modules.append(_module(entry))
        return YangLibrary("yang-library", _str(library.get("content-id")), tuple(modules))
    state = document.get("ietf-yang-library:modules-state")
    if isinstance(state, dict):
        modules = [_module(entry) for entry in state.get("module", []) or []]
        return YangLibrary("modules-state", _str(state.get("module-set-id")), tuple(modules))
    raise UnsafeContent("the reply holds neither yang-library nor modules-state")


def _from_xml(root) -> YangLibrary:
    def child(element, name):
        return element.find(f"{{{YANG_LIBRARY_NAMESPACE}}}{name}")

    def text(element, name):
        found = child(element, name)
        return found.text if found is not None else None

    def module(element):
        return YangModule(text(element, "name") or "", text(element, "revision") or None, text(element, "namespace"))

    # The reply may be the container itself or a wrapper around it.
    candidates = [root] + list(root)
    for element in candidates:
        if element.tag == f"{{{YANG_LIBRARY_NAMESPACE}}}yang-library":
            modules = [
                module(entry)
                for module_set in element.findall(f"{{{YANG_LIBRARY_NAMESPACE}}}module-set")
                for entry in module_set.findall(f"{{{YANG_LIBRARY_NAMESPACE}}}module")
            ]
            return YangLibrary("yang-library", text(element, "content-id"), tuple(modules))
        if element.tag == f"{{{YANG_LIBRARY_NAMESPACE}}}modules-state":
            modules = [module(entry) for entry in element.findall(f"{{{YANG_LIBRARY_NAMESPACE}}}module")]
            return YangLibrary("modules-state", text(element, "module-set-id"), tuple(modules))
    raise UnsafeContent("the reply holds neither yang-library nor modules-state")


def _module(entry: Any) -> YangModule:
    if not isinstance(entry, dict):
        return YangModule(str(entry))
    return YangModule(str(entry.get("name", "")), _str(entry.get("revision")) or None, _str(entry.get("namespace")))


def _str(value: Any) -> Optional[str]:
    return None if value is None else str(value)
