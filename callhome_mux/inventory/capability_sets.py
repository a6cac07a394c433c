"""
Capability lists stored once (schema version 3).

Devices of one model report the same NETCONF capability list (70 and more
URIs, ~3.4 KB of JSON).  Each device's state row used to carry it, and
SQLite rewrote those overflow pages on every state change: two thirds of
the database thread's work in a call-home storm.  Now a list is stored
once, in C{capability_sets}, under the SHA-256 of its JSON text (the exact
list, order kept); a state row names it in C{device_state.capability_set}
and its C{details} JSON holds the rest.  Readers get the same details as
before (see L{join}).

Unused sets: a set nobody's state names any more (a device removed, or
reporting another list) is deleted by L{collect}, which the inventory runs
with every history prune (at start, then every C{prune_interval}).

All of it runs in the store's one database thread.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any, Dict, Optional, Tuple

from callhome_mux.inventory.jsontext import encode, encode_row

#: The details key whose list value is stored as a set.
KEY = "capabilities"

#: Encoded lists kept, by identity: devices of one model share one list
#: object (see Inventory._plain), so each distinct list is encoded and
#: hashed once, not once per state write.
MAX_CACHED = 256


def digest(text: str) -> str:
    """The key of a capability set: the SHA-256 of its JSON text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CapabilitySets:
    """The store's side of the capability sets: their encodings, and which ones are written."""

    def __init__(self):
        self._by_identity: Dict[int, Tuple[list, str, str]] = {}
        #: Digests known to be committed: no INSERT for them.  Forgotten
        #: on any failure and on every collection (L{forget_written}).
        self._written: set = set()

    def split(self, details: Dict[str, Any]) -> Tuple[str, Optional[str], Optional[str]]:
        """
        (JSON of C{details} without its capability list, the list's digest,
        the list's JSON); the last two are C{None} when C{details} has no
        capability list.
        """
        capabilities = details.get(KEY)
        if type(capabilities) is not list:
            return encode_row(details), None, None
        known = self._by_identity.get(id(capabilities))
        if known is None or known[0] is not capabilities:
            text = encode(capabilities)
            # The list is kept with its encoding, so its id is not reused.
            known = (capabilities, digest(text), text)
            if len(self._by_identity) >= MAX_CACHED:
                self._by_identity.clear()
            self._by_identity[id(capabilities)] = known
        rest = details.copy()
        del rest[KEY]
        return encode_row(rest), known[1], known[2]

    def write(self, cursor: sqlite3.Cursor, sets: Dict[str, str]) -> None:
        """Insert the sets (digest -> JSON) not known to be written already."""
        written = self._written
        new = [(key, text) for key, text in sets.items() if key not in written]
        if new:
            cursor.executemany("INSERT OR IGNORE INTO capability_sets (digest, capabilities) VALUES (?, ?)", new)
            written.update(key for key, _ in new)

    def forget_written(self) -> None:
        """After a failed or rolled-back write, or a collection: insert again when next needed."""
        self._written.clear()

    def collect(self, cursor: sqlite3.Cursor) -> int:
        """Delete the sets no state names; return how many."""
        removed = cursor.execute(
            "DELETE FROM capability_sets WHERE digest NOT IN"
            " (SELECT capability_set FROM device_state WHERE capability_set IS NOT NULL)"
        ).rowcount
        self.forget_written()
        return removed


def read_all(cursor: sqlite3.Cursor, loads) -> Dict[str, list]:
    """Every stored set, decoded once (states of one model share the list)."""
    return {key: loads(text) for key, text in cursor.execute("SELECT digest, capabilities FROM capability_sets")}


def join(details: Dict[str, Any], capabilities: Optional[list]) -> Dict[str, Any]:
    """
    C{details} (decoded from its row) with its set's list put back, keys
    in the same (sorted) order as the version 2 row gave them.
    """
    if capabilities is None:
        return details
    details[KEY] = capabilities
    return dict(sorted(details.items()))

