"""
JSON text for the database: C{json.dumps(value, sort_keys=True,
default=str)} (L{encode}) and the same without sorting the keys
(L{encode_row}), with the C encoder made once instead of once per value.
"""

from __future__ import annotations

import json
from typing import Any, Callable

_JSON = json.JSONEncoder(sort_keys=True, default=str)


def _make_encode(sort_keys: bool = True) -> Callable[[Any], str]:
    """
    C{_JSON.encode}, with the C encoder made once instead of once per call.

    C{JSONEncoder.encode} builds a new C{c_make_encoder} object (and a
    markers dict) for every value: half of the ~2.4 us it takes for a
    history row's fields.  This one keeps no markers (what is written is a
    C{_plain} copy: plain dicts, lists and scalars, no cycles) and gives the
    same text: sorted keys, C{str} for anything else, the same separators.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _JSON.encode if sort_keys else _UNSORTED.encode
    encoder = make(
        None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", sort_keys, False, True
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(encoder(value, 0))

    return encode


_UNSORTED = json.JSONEncoder(default=str)

encode = _make_encode()

#: The same, keys in each dict's own order: for the state and history
#: rows a storm writes by the thousand, where sorting the keys was ~8% of
#: the database thread's work (readers decode the JSON; nothing compares
#: the text).  Capability lists, whose text is hashed, keep L{encode}.
encode_row = _make_encode(sort_keys=False)
