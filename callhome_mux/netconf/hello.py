"""
The <hello> documents devices send, remembered so that the next device of
the same model costs a dictionary lookup instead of an XML parse.

Devices of one model send the same <hello> byte for byte, except for the
digits of their <session-id>: parsing it with lxml and collecting ~70
capabilities cost ~150 us per session under a call-home storm
(bench/storm.py --cpu-of), more than anything else we do per session.

A hello we parsed and accepted becomes a template: its bytes with the
session-id digits taken out.  A later hello that equals a template except
for those digits is the same document with another number, so it is
well-formed and has the same capabilities; only the number is read.  That
holds only if those digits really are the text of the one <session-id>
element: the template is made only when "session-id" occurs exactly twice
in the bytes (the element's start and end tags, matched by the pattern),
and the digits match the session-id the parse found.  Anything else (a
comment or CDATA naming session-id, whitespace, another spelling) is
simply never a template, and such hellos are parsed every time.

A hello is looked up by its length (a template's prefix and suffix lengths
plus 1 to 10 digits) and compared with the template's prefix and suffix:
two memory compares, no search through the hello and no hash of it.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

_SESSION_ID = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?)session-id>([0-9]{1,10})</\1session-id>")

#: Templates kept, the largest hello kept as one, and the bytes kept in
#: all (a device that sends a new hello each time can cost no more).
MAX_TEMPLATES = 256
MAX_TEMPLATE_SIZE = 256 * 1024
MAX_TEMPLATE_BYTES = 8 * 1024 * 1024

_templates: Dict[Tuple[bytes, bytes], Any] = {}
#: The same templates by len(prefix) + len(suffix): (prefix, suffix, value).
_by_length: Dict[int, List[Tuple[bytes, bytes, Any]]] = {}
_template_bytes = 0
_MAX_DIGITS = 10  # as _SESSION_ID's [0-9]{1,10}


def _split(message: bytes) -> Optional[Tuple[Tuple[bytes, bytes], int]]:
    # Exactly two occurrences of "session-id" (found with bytes.find, much
    # cheaper than a regular expression over the whole hello), and they
    # are the tags of <session-id>digits</session-id>.
    first = message.find(b"session-id")
    if first < 0:
        return None
    second = message.find(b"session-id", first + 10)
    if second < 0 or message.find(b"session-id", second + 10) >= 0:
        return None
    start = message.rfind(b"<", 0, first)
    match = _SESSION_ID.match(message, start) if start >= 0 else None
    if match is None:
        return None
    return (message[: match.start(2)], message[match.end(2):]), int(match.group(2))


def known(message: bytes) -> Optional[Tuple[int, Any]]:
    """C{(session_id, what the template's parse gave)} if C{message} matches a template, else C{None}."""
    if not _templates or len(message) > MAX_TEMPLATE_SIZE:
        return None
    # A match is a template's prefix, 1 to 10 ASCII digits and its suffix,
    # nothing else: the same answer as splitting the message (_split) and
    # looking the halves up, without scanning ~8 KiB for "session-id" three
    # times and hashing both halves (~35,000 instructions per hello).  The
    # template was made from a hello with exactly two "session-id" whose
    # digits sat between them, and digits cannot make or break one.
    size = len(message)
    for total, candidates in _lengths_near(size):
        digits = size - total
        if not 1 <= digits <= _MAX_DIGITS:
            continue
        for prefix, suffix, value in candidates:
            if message.startswith(prefix) and message.endswith(suffix):
                text = message[len(prefix) : len(prefix) + digits]
                if text.isdigit():  # bytes: ASCII digits only, as [0-9]
                    return int(text), value
    return None


def _lengths_near(size: int):
    # Few template lengths (one per device model): look at each; many:
    # look up the ten a message of this size could have.
    if len(_by_length) <= _MAX_DIGITS:
        return _by_length.items()
    return [(size - d, _by_length[size - d]) for d in range(1, _MAX_DIGITS + 1) if size - d in _by_length]


def remember(message: bytes, session_id: int, value: Any) -> None:
    """Make C{message}, whose parse was accepted with C{session_id}, a template giving C{value}."""
    if len(message) > MAX_TEMPLATE_SIZE:
        return
    split = _split(message)
    if split is None or split[1] != session_id:
        return
    global _template_bytes
    if len(_templates) >= MAX_TEMPLATES or _template_bytes + len(message) > MAX_TEMPLATE_BYTES:
        forget_all()
    key = split[0]
    if key in _templates:
        return
    _templates[key] = value
    prefix, suffix = key
    _by_length.setdefault(len(prefix) + len(suffix), []).append((prefix, suffix, value))
    _template_bytes += len(message)


def forget_all() -> None:
    """Drop every template."""
    global _template_bytes
    _templates.clear()
    _by_length.clear()
    _template_bytes = 0
