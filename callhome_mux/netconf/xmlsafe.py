"""
Parse XML from devices without trusting it.

Every message a device sends goes through L{parse}: no entity expansion, no
network, no DTD loading, no "huge tree" mode, and any document that carries
a DOCTYPE is refused outright (NETCONF never needs one, and a DTD is how
entity-expansion and external-entity attacks get in).
"""

from __future__ import annotations

import re
from typing import List, Optional

from lxml import etree

from callhome_mux.netconf.errors import UnsafeXMLError

__all__ = ["UnsafeXMLError", "IncrementalParser", "parse", "parse_fragment", "parse_root_first", "root_first"]

# What may precede the root element: whitespace, the XML declaration,
# processing instructions, comments.  A DOCTYPE found right after them is
# refused before libxml2 ever reads it.
_PROLOG = re.compile(rb"(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.S)
_BOM = b"\xef\xbb\xbf"


def make_parser() -> etree.XMLParser:
    """A parser with the options above; one per thread (lxml parses one document at a time per parser)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


# The reactor thread's parser; other threads use their own (make_parser).
_PARSER = make_parser()


_DOCTYPE_REFUSED = "refusing XML with a DOCTYPE declaration (DTDs and entities are refused)"


def root_first(data: bytes) -> bool:
    """
    The usual NETCONF message: the root element comes first, in an
    ASCII-compatible encoding (UTF-8: no XML declaration to name another),
    so no DOCTYPE can be anywhere.  Not a "<" then NUL: that is UTF-16LE or
    UCS-4 without a byte-order mark, which libxml2 detects by itself.
    """
    return data[:1] == b"<" and data[1:2] not in (b"?", b"!", b"\x00", b"")


def _prolog_end(data: bytes) -> int:
    """Where the prolog of C{data} ends; L{UnsafeXMLError} if a DOCTYPE starts there."""
    if root_first(data):
        return 0
    start = 3 if data.startswith(_BOM) else 0
    prolog_end = _PROLOG.match(data, start).end()
    if data.startswith(b"<!DOCTYPE", prolog_end):
        raise UnsafeXMLError(_DOCTYPE_REFUSED)
    return prolog_end


def parse(data: bytes, parser: Optional[etree.XMLParser] = None):
    """
    The root element of C{data}; L{UnsafeXMLError} if it is malformed or has
    a DOCTYPE.  C{parser}: one from L{make_parser}, for threads other than
    the reactor's (default: the reactor thread's own).
    """
    if root_first(data):
        # The usual NETCONF message: the root element comes first, nothing
        # to check before or after the parse (_prolog_end's first case).
        return parse_root_first(data, parser)
    prolog_end = _prolog_end(data)
    try:
        root = etree.fromstring(data, parser or _PARSER)
    except etree.XMLSyntaxError as error:
        raise UnsafeXMLError(f"malformed XML: {error}") from None
    except ValueError as error:  # e.g. str with an encoding declaration
        raise UnsafeXMLError(f"unparseable XML: {error}") from None
    # The prefix check reads ASCII bytes only: unless the root element came
    # first, ask libxml2 (the prolog may be UTF-16 without a byte-order
    # mark, or an ASCII declaration may name an encoding such as UTF-7 in
    # which a DOCTYPE's bytes are not "<!DOCTYPE").
    if root.getroottree().docinfo.doctype:
        raise UnsafeXMLError(_DOCTYPE_REFUSED)
    return root


class IncrementalParser:
    """
    Parse one document given in pieces, as it arrives (lxml's feed parser).

    The same safety as L{parse}: the same parser options, and the prolog is
    checked for a DOCTYPE before libxml2 sees any of it.  The first
    C{prolog_window} bytes are held until the prolog is decided: if the root
    element starts in them (an ASCII-compatible document, no DOCTYPE), the
    rest is fed as it comes; otherwise (a prolog longer than the window, a
    UTF-16 document) the pieces are kept and the whole document goes
    through L{parse} at the end, exactly as if it had come in one piece.
    """

    def __init__(self, prolog_window: int = 64 * 1024):
        self._window = prolog_window
        self._held: List[bytes] = []  # pieces not yet fed (prolog undecided, or whole-document mode)
        self._held_size = 0
        self._parser: Optional[etree.XMLParser] = None  # set once streaming
        self._whole = False  # the prolog could not be decided: parse() at the end

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._parser is not None:
            self._feed(data)
            return
        self._held.append(data)
        self._held_size += len(data)
        if not self._whole and self._held_size >= self._window:
            self._decide()

    def close(self):
        """The root element; L{UnsafeXMLError} as L{parse} would raise it."""
        if self._parser is None:
            held, self._held = self._held, []
            return parse(b"".join(held))
        try:
            root = self._parser.close()
        except etree.XMLSyntaxError as error:
            raise UnsafeXMLError(f"malformed XML: {error}") from None
        finally:
            self._parser = None
        if root.getroottree().docinfo.doctype:  # belt and braces: the prolog was checked
            raise UnsafeXMLError(_DOCTYPE_REFUSED)
        return root

    def _decide(self) -> None:
        head = b"".join(self._held)
        prolog_end = _prolog_end(head)
        if head[prolog_end : prolog_end + 1] != b"<" or head[prolog_end + 1 : prolog_end + 2] in (b"", b"!", b"?"):
            # No root element in sight: keep everything for parse().
            self._whole = True
            self._held = [head]
            return
        self._held = []
        self._held_size = 0
        self._parser = make_parser()
        self._feed(head)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
        except etree.XMLSyntaxError as error:
            self._parser = None
            raise UnsafeXMLError(f"malformed XML: {error}") from None


def parse_root_first(data: bytes, parser: Optional[etree.XMLParser] = None):
    """
    L{parse} for C{data} that the caller has already seen L{root_first} to
    hold for (its first bytes are a start tag it expects, say): the same
    parse and errors, without looking at those bytes again.
    """
    try:
        return etree.fromstring(data, parser or _PARSER)
    except etree.XMLSyntaxError as error:
        raise UnsafeXMLError(f"malformed XML: {error}") from None
    except ValueError as error:
        raise UnsafeXMLError(f"unparseable XML: {error}") from None


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
