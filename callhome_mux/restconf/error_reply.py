"""
Turn an HTTP error reply into a L{RestconfError} carrying every error entry.

RFC 8040 §7.1: the body is an C{ietf-restconf:errors} container with one
or more C{error} entries, in JSON or XML.  A body that is not one (a
proxy's HTML page, a truncated document) still gives a RestconfError with
the status and no entries: the caller learns the device said no, and the
raw body is kept for diagnosis.
"""

from __future__ import annotations

from typing import Any, List, Optional

from callhome_mux.restconf.encoding import JSON, RESTCONF_NAMESPACE, XML, encoding_of, parse_json, parse_xml
from callhome_mux.restconf.errors import RestconfError, RestconfErrorDetail, UnsafeContent

_FIELDS = ("error-type", "error-tag", "error-app-tag", "error-path", "error-message")


def error_from_reply(status: int, content_type: Optional[str], body: bytes, method: str = "", path: str = "") -> RestconfError:
    try:
        details = parse_errors(content_type, body)
    except UnsafeContent:
        details = []
    return RestconfError(status, tuple(details), method=method, path=path, body=body)


def parse_errors(content_type: Optional[str], body: bytes) -> List[RestconfErrorDetail]:
    """The error entries in C{body}, or C{[]} when it is not an errors document."""
    if not body:
        return []
    kind = encoding_of(content_type)
    if kind == JSON:
        return _from_json(parse_json(body))
    if kind == XML:
        return _from_xml(parse_xml(body))
    return []


def _from_json(document: Any) -> List[RestconfErrorDetail]:
    if not isinstance(document, dict):
        return []
    container = document.get("ietf-restconf:errors")
    if not isinstance(container, dict):
        return []
    entries = container.get("error", [])
    if isinstance(entries, dict):  # a lenient device sending one entry unwrapped
        entries = [entries]
    details = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        values = {name: _text(entry.get(name)) for name in _FIELDS}
        details.append(_detail(values, entry.get("error-info")))
    return details


def _from_xml(root) -> List[RestconfErrorDetail]:
    if root.tag != f"{{{RESTCONF_NAMESPACE}}}errors":
        return []
    details = []
    for entry in root.findall(f"{{{RESTCONF_NAMESPACE}}}error"):
        values = {name: entry.findtext(f"{{{RESTCONF_NAMESPACE}}}{name}") for name in _FIELDS}
        details.append(_detail(values, entry.find(f"{{{RESTCONF_NAMESPACE}}}error-info")))
    return details


def _detail(values, info) -> RestconfErrorDetail:
    return RestconfErrorDetail(
        error_type=values["error-type"] or "",
        error_tag=values["error-tag"] or "",
        error_app_tag=values["error-app-tag"],
        error_path=values["error-path"],
        error_message=values["error-message"],
        error_info=info,
    )


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
