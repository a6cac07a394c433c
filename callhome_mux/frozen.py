"""
A dict that cannot change once made, for session details shared by many
sessions.

The SSH layer hands every session of one algorithm combination the same
dict of negotiated algorithms.  Consumers that keep a snapshot of a
session's details (the inventory's device states) had to copy it for
every session, since a dict may change behind their back.  A
L{FrozenDict} says it will not: its text keys and scalar values are
fixed at construction, so a consumer may keep the object itself (or a
copy made once per object).  It is an ordinary dict to every reader
(C{json}, C{==}, C{dict(...)}, iteration); only the methods that would
change it raise C{TypeError}.
"""

from __future__ import annotations

from typing import Any

#: What a L{FrozenDict} may hold as values: things that never change.
SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))


def _refuse(self, *args: Any, **kwargs: Any) -> None:
    raise TypeError("a FrozenDict cannot be changed")


class FrozenDict(dict):
    """A dict of text keys and scalar values that refuses every change after construction."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        dict.__init__(self, *args, **kwargs)
        for key, value in dict.items(self):
            if type(key) is not str or type(value) not in SCALAR_TYPES:
                raise TypeError(f"a FrozenDict holds text keys and scalar values, not {key!r}: {value!r}")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self):
        return (FrozenDict, (dict(self),))
