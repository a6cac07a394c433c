"""
Session details stored once: capability lists (schema version 3) and
negotiated algorithms (schema version 4).

Devices of one model report the same NETCONF capability list (70 and more
URIs, ~3.4 KB of JSON), and devices of one fleet negotiate the same SSH
algorithms.  Each device's state row used to carry both, re-encoded and
rewritten at every state change.  Now each distinct value is stored once,
in its own table (C{capability_sets}, C{algorithm_sets}), under the
SHA-256 of its JSON text (sorted keys; a list's order kept); a state row
names it in a column (C{capability_set}, C{algorithm_set}) and its
C{details} JSON holds the rest.  Readers get the same details as before
(see L{join}).

What is split off: a capability list that is a C{list} (the inventory's
shared copy of a session's tuple), and algorithms that are a
L{FrozenDict} (the SSH layer's shared, unchangeable dict).  Anything else
stays in the details JSON, as rows written before these versions do.

Unused sets: a set nobody's state names any more (a device removed, or
reporting another value) is deleted by L{DetailSet.collect}, which the
inventory runs with every history prune (at start, then every
C{prune_interval}).

All of it runs in the store's one database thread.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any, Callable, Dict, Optional, Tuple

from callhome_mux.frozen import FrozenDict
from callhome_mux.inventory.jsontext import encode, encode_row

#: Encoded values kept, by identity: states share one value object per
#: distinct value (see Inventory._plain), so each is encoded and hashed
#: once, not once per state write.
MAX_CACHED = 256


def digest(text: str) -> str:
    """The key of a stored value: the SHA-256 of its JSON text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DetailSet:
    """One kind of detail stored once: its table, the state column naming it, its encodings, what is written."""

    def __init__(self, key: str, table: str, column: str, state_column: str, stored_type: type,
                 decode: Callable[[Any], Any]):
        #: The details key whose value is stored apart, when of C{stored_type}.
        self.key = key
        self.table = table
        self.column = column
        self.state_column = state_column
        self.stored_type = stored_type
        #: Decoded JSON -> the value readers get.
        self.decode = decode
        self._by_identity: Dict[int, Tuple[Any, str, str]] = {}
        #: Digests known to be committed: no INSERT for them.  Forgotten
        #: on any failure and on every collection (L{forget_written}).
        self._written: set = set()

    def encoded(self, value: Any) -> Tuple[Any, str, str]:
        """(C{value}, its digest, its JSON text), worked out once per value object."""
        known = self._by_identity.get(id(value))
        if known is None or known[0] is not value:
            text = encode(value)
            # The value is kept with its encoding, so its id is not reused.
            known = (value, digest(text), text)
            if len(self._by_identity) >= MAX_CACHED:
                self._by_identity.clear()
            self._by_identity[id(value)] = known
        return known

    def write(self, cursor: sqlite3.Cursor, sets: Dict[str, str]) -> None:
        """Insert the sets (digest -> JSON) not known to be written already."""
        written = self._written
        new = [(key, text) for key, text in sets.items() if key not in written]
        if new:
            cursor.executemany(f"INSERT OR IGNORE INTO {self.table} (digest, {self.column}) VALUES (?, ?)", new)
            written.update(key for key, _ in new)

    def forget_written(self) -> None:
        """After a failed or rolled-back write, or a collection: insert again when next needed."""
        self._written.clear()

    def collect(self, cursor: sqlite3.Cursor) -> int:
        """Delete the sets no state names; return how many."""
        removed = cursor.execute(
            f"DELETE FROM {self.table} WHERE digest NOT IN"
            f" (SELECT {self.state_column} FROM device_state WHERE {self.state_column} IS NOT NULL)"
        ).rowcount
        self.forget_written()
        return removed

    def read_all(self, cursor: sqlite3.Cursor) -> Dict[str, Any]:
        """Every stored set, decoded once (states share the value)."""
        decode = self.decode
        return {key: decode(json.loads(text)) for key, text in cursor.execute(f"SELECT digest, {self.column} FROM {self.table}")}


def _algorithms(value: Any) -> Any:
    # Written only from FrozenDicts; anything else (a hand-edited row) as it is.
    try:
        return FrozenDict(value)
    except (TypeError, ValueError):
        return value


class DetailSets:
    """The store's side of the stored-once details: both kinds."""

    def __init__(self):
        self.capabilities = DetailSet("capabilities", "capability_sets", "capabilities", "capability_set", list,
                                      lambda value: value)
        self.algorithms = DetailSet("algorithms", "algorithm_sets", "algorithms", "algorithm_set", FrozenDict,
                                    _algorithms)
        self.kinds = (self.capabilities, self.algorithms)

    def split(self, details: Dict[str, Any], new_capabilities: Dict[str, str],
              new_algorithms: Dict[str, str]) -> Tuple[str, Optional[str], Optional[str]]:
        """
        (JSON of C{details} without the values stored apart, the
        capability list's digest, the algorithms' digest); a digest is
        C{None} when that value stays in the details.  The text of each
        value split off is added to C{new_capabilities} /
        C{new_algorithms} (digest -> JSON).
        """
        capabilities = details.get("capabilities")
        algorithms = details.get("algorithms")
        split_capabilities = type(capabilities) is list
        split_algorithms = type(algorithms) is FrozenDict
        if not (split_capabilities or split_algorithms):
            return encode_row(details), None, None
        rest = details.copy()
        capability_digest = algorithm_digest = None
        if split_capabilities:
            _, capability_digest, text = self.capabilities.encoded(capabilities)
            new_capabilities[capability_digest] = text
            del rest["capabilities"]
        if split_algorithms:
            _, algorithm_digest, text = self.algorithms.encoded(algorithms)
            new_algorithms[algorithm_digest] = text
            del rest["algorithms"]
        return encode_row(rest), capability_digest, algorithm_digest

    def forget_written(self) -> None:
        for kind in self.kinds:
            kind.forget_written()


def join(details: Dict[str, Any], capabilities: Optional[list], algorithms: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """
    C{details} (decoded from its row) with its stored-apart values put
    back, keys in sorted order (as the version 2 row gave them).
    """
    if capabilities is None and algorithms is None:
        return details
    if capabilities is not None:
        details["capabilities"] = capabilities
    if algorithms is not None:
        details["algorithms"] = algorithms
    return dict(sorted(details.items()))
