"""
The two RESTCONF encodings: media types, and decoding replies safely.

JSON goes through the stdlib.  XML goes through lxml with entity
resolution, DTD loading and network access off, and any document with a
DOCTYPE is refused outright: RESTCONF never needs one, and refusing it
closes the door on entity expansion tricks (billion laughs, external
entities) whatever the parser's defaults become.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from lxml import etree

from callhome_mux.netconf import xmlsafe
from callhome_mux.netconf.errors import UnsafeXMLError

from callhome_mux.restconf.errors import UnsafeContent

JSON = "json"
XML = "xml"

MEDIA_TYPES = {
    JSON: "application/yang-data+json",
    XML: "application/yang-data+xml",
}
XRD_MEDIA_TYPE = "application/xrd+xml"

RESTCONF_NAMESPACE = "urn:ietf:params:xml:ns:yang:ietf-restconf"


def accept_header(preferred: str) -> str:
    """Accept both encodings, C{preferred} first: a device may speak only one."""
    other = XML if preferred == JSON else JSON
    return f"{MEDIA_TYPES[preferred]}, {MEDIA_TYPES[other]};q=0.9"


def encoding_of(content_type: Optional[str]) -> Optional[str]:
    """C{json}, C{xml} or C{None} from a Content-Type value (parameters ignored)."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media.endswith("+json") or media == "application/json":
        return JSON
    if media.endswith("+xml") or media in ("application/xml", "text/xml"):
        return XML
    return None


def parse_xml(body: bytes) -> etree._Element:
    """
    Parse C{body} with the one safe parser callhome-mux has (no DTD, no
    entities, no network: L{callhome_mux.netconf.xmlsafe}); refusals are
    L{UnsafeContent}.
    """
    try:
        return xmlsafe.parse(body)
    except UnsafeXMLError as error:
        raise UnsafeContent(str(error)) from None


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise UnsafeContent(f"malformed JSON: {error}") from None


def decode(body: bytes, content_type: Optional[str]) -> Any:
    """
    The decoded reply: a JSON value, an lxml element, or C{None} for an empty
    body.  A body of another media type comes back as the bytes themselves.
    """
    if not body:
        return None
    kind = encoding_of(content_type)
    if kind == JSON:
        return parse_json(body)
    if kind == XML:
        return parse_xml(body)
    return body


def element_from_dict(name: str, namespace: str, value: Any) -> etree._Element:
    """
    C{<name xmlns=namespace>} holding C{value}: dicts become child elements,
    lists repeat their element, booleans become C{true}/C{false}.  Enough for
    operation input parameters; data trees should be built as elements.
    """
    element = etree.Element(f"{{{namespace}}}{name}", nsmap={None: namespace})
    _fill(element, namespace, value)
    return element


def _fill(element, namespace: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for child_name, child_value in value.items():
            local = child_name.split(":", 1)[-1]
            for item in child_value if isinstance(child_value, list) else [child_value]:
                _fill(etree.SubElement(element, f"{{{namespace}}}{local}"), namespace, item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)


def encode(data: Any, encoding: str) -> bytes:
    """
    A request body: JSON values are serialised; XML must be an lxml element
    or already-serialised bytes/str (there is no faithful dict-to-XML
    mapping without the YANG schema).
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and encoding == XML:
        return data.encode("utf-8")
    if encoding == JSON:
        return json.dumps(data, separators=(",", ":")).encode("utf-8")
    if isinstance(data, etree._Element):
        return etree.tostring(data, encoding="utf-8")
    raise TypeError(f"an XML request body must be an lxml element, bytes or str, not {type(data).__name__}")
