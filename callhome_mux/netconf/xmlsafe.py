"""
Parse XML from devices without trusting it.

Every message a device sends goes through L{parse}: no entity expansion, no
network, no DTD loading, no "huge tree" mode, and any document that carries
a DOCTYPE is refused outright (NETCONF never needs one, and a DTD is how
entity-expansion and external-entity attacks get in).
"""

from __future__ import annotations

import re

from lxml import etree

from callhome_mux.netconf.errors import UnsafeXMLError

__all__ = ["UnsafeXMLError", "parse", "parse_fragment"]

# What may precede the root element: whitespace, the XML declaration,
# processing instructions, comments.  A DOCTYPE found right after them is
# refused before libxml2 ever reads it.
_PROLOG = re.compile(rb"(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.S)
_BOM = b"\xef\xbb\xbf"


def _make_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


# One parser per process: the reactor thread is the only user.
_PARSER = _make_parser()


def parse(data: bytes):
    """The root element of C{data}; L{UnsafeXMLError} if it is malformed or has a DOCTYPE."""
    start = 3 if data.startswith(_BOM) else 0
    prolog_end = _PROLOG.match(data, start).end()
    if data.startswith(b"<!DOCTYPE", prolog_end):
        raise UnsafeXMLError("refusing XML with a DOCTYPE declaration (DTDs and entities are refused)")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as error:
        raise UnsafeXMLError(f"malformed XML: {error}") from None
    except ValueError as error:  # e.g. str with an encoding declaration
        raise UnsafeXMLError(f"unparseable XML: {error}") from None
    # The prefix check reads ASCII-compatible encodings; when the root
    # element did not follow the prolog there (UTF-16, say), ask libxml2.
    if data[prolog_end : prolog_end + 1] != b"<" and root.getroottree().docinfo.doctype:
        raise UnsafeXMLError("refusing XML with a DOCTYPE declaration (DTDs and entities are refused)")
    return root


def parse_fragment(text, wrapper: str = "wrapper"):
    """
    Parse C{text} (str or bytes) that may hold several top-level elements.

    Returns the list of top-level elements.  Used for filters and config
    content written by callers.
    """
    if isinstance(text, str):
        text = text.encode("utf-8")
    text = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", text)
    root = parse(b"<" + wrapper.encode() + b">" + text + b"</" + wrapper.encode() + b">")
    return list(root)
