"""
Building RESTCONF request targets: resource paths and query parameters (RFC 8040 §3.5.3, §4.8).

Paths given to the session are api-paths relative to the datastore
(C{ietf-interfaces:interfaces/interface=eth0}); list keys must be
percent-encoded, which L{list_instance} does.  Query parameters are
validated here so a typo fails before it reaches the device.
"""

from __future__ import annotations

from typing import Iterable, Optional, Union
from urllib.parse import quote

CONTENT_VALUES = ("config", "nonconfig", "all")
WITH_DEFAULTS_VALUES = ("report-all", "trim", "explicit", "report-all-tagged")

# Characters an api-path or query value may carry as they are: the RFC 3986
# path/query characters RESTCONF gives meaning to, plus "%" so that keys
# the caller already encoded stay encoded once.
_PATH_SAFE = "/:=,;()%-._~!$&'*+@"
_QUERY_SAFE = "/:,;()%-._~!$'*+@"


def list_instance(name: str, *keys: str) -> str:
    """C{name=key1,key2} with each key percent-encoded (RFC 8040 §3.5.3)."""
    return name + "=" + ",".join(quote(str(key), safe="") for key in keys)


def join_path(base: str, path: str) -> str:
    """C{base} + C{/} + C{path}, each once, with C{path} made a valid URI path."""
    path = path.strip("/")
    encoded = quote(path, safe=_PATH_SAFE)
    return f"{base.rstrip('/')}/{encoded}" if encoded else base.rstrip("/")


def build_query(
    depth: Union[int, str, None] = None,
    fields: Union[str, Iterable[str], None] = None,
    content: Optional[str] = None,
    with_defaults: Optional[str] = None,
    **extra: str,
) -> str:
    """The query string, without the C{?}; empty when nothing is asked."""
    parts = []
    if depth is not None:
        if depth != "unbounded" and not (isinstance(depth, int) and not isinstance(depth, bool) and 1 <= depth <= 65535):
            raise ValueError(f"depth must be 1..65535 or 'unbounded', got {depth!r}")
        parts.append(f"depth={depth}")
    if fields is not None:
        text = fields if isinstance(fields, str) else ";".join(fields)
        if not text:
            raise ValueError("fields must name at least one node")
        parts.append("fields=" + quote(text, safe=_QUERY_SAFE))
    if content is not None:
        if content not in CONTENT_VALUES:
            raise ValueError(f"content must be one of {', '.join(CONTENT_VALUES)}, got {content!r}")
        parts.append(f"content={content}")
    if with_defaults is not None:
        if with_defaults not in WITH_DEFAULTS_VALUES:
            raise ValueError(f"with-defaults must be one of {', '.join(WITH_DEFAULTS_VALUES)}, got {with_defaults!r}")
        parts.append(f"with-defaults={with_defaults}")
    for name, value in extra.items():
        parts.append(f"{name.replace('_', '-')}={quote(str(value), safe=_QUERY_SAFE)}")
    return "&".join(parts)
