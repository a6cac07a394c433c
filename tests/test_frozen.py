"""FrozenDict: a dict to every reader, refusing every change."""

from __future__ import annotations

import copy
import json
import pickle

from twisted.trial import unittest

from callhome_mux.frozen import FrozenDict


class FrozenDictTests(unittest.TestCase):
    def test_reads_like_a_dict(self):
        frozen = FrozenDict({"kex": "curve25519-sha256", "n": 1}, extra=None)
        plain = {"kex": "curve25519-sha256", "n": 1, "extra": None}
        self.assertEqual(frozen, plain)
        self.assertEqual(dict(frozen), plain)
        self.assertEqual(json.dumps(frozen), json.dumps(plain))
        self.assertEqual(repr(frozen), repr(plain))
        self.assertEqual(frozen | {"x": 2}, dict(plain, x=2))
        self.assertIs(type(frozen.copy()), dict)

    def test_refuses_every_change(self):
        frozen = FrozenDict(a="1")
        changes = [
            lambda: frozen.__setitem__("a", "2"), lambda: frozen.__delitem__("a"), frozen.clear,
            lambda: frozen.pop("a"), frozen.popitem, lambda: frozen.setdefault("b", "2"),
            lambda: frozen.update(b="2"),
        ]
        for change in changes:
            self.assertRaises(TypeError, change)

        def merge_in_place():
            nonlocal frozen
            frozen |= {"b": "2"}

        self.assertRaises(TypeError, merge_in_place)
        self.assertEqual(frozen, {"a": "1"})

    def test_only_text_keys_and_scalar_values(self):
        for bad in ({"a": [1]}, {"a": {"b": 1}}, {1: "x"}, {"a": b"raw"}):
            self.assertRaises(TypeError, FrozenDict, bad)

    def test_copies_and_pickles_as_itself(self):
        frozen = FrozenDict(a="1", b=2)
        for again in (pickle.loads(pickle.dumps(frozen)), copy.deepcopy(frozen), copy.copy(frozen)):
            self.assertEqual(again, frozen)
            self.assertIs(type(again), FrozenDict)
