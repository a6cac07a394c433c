"""
JSON text for the database: C{json.dumps(value, sort_keys=True,
default=str)}, with the C encoder made once instead of once per value.
"""

from __future__ import annotations

import json
from typing import Any, Callable

_JSON = json.JSONEncoder(sort_keys=True, default=str)


def _make_encode() -> Callable[[Any], str]:
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
        return _JSON.encode
    encoder = make(
        None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", True, False, True
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(encoder(value, 0))

    return encode


encode = _make_encode()
