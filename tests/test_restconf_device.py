"""The simulator's data-tree helpers, without HTTP."""

from twisted.trial import unittest

from callhome_mux.testing.restconf_device import (
    Problem,
    expand_fields,
    filter_content,
    initial_data,
    merge,
    prune_depth,
    resolve,
    select_fields,
)


class TreeTests(unittest.TestCase):
    def setUp(self):
        self.data = initial_data()

    def test_resolve_list_entry(self):
        target = resolve(self.data, ["ietf-interfaces:interfaces", "interface=eth1"], "/p")
        self.assertEqual((target.name, target.keys, target.value["enabled"]), ("ietf-interfaces:interface", ["eth1"], False))

    def test_missing_entry_reads_without_writing(self):
        data = {"ietf-interfaces:interfaces": {}}
        target = resolve(data, ["ietf-interfaces:interfaces", "interface=eth9"], "/p")
        self.assertIsNone(target.value)
        self.assertEqual(data, {"ietf-interfaces:interfaces": {}})
        resolve(data, ["ietf-interfaces:interfaces", "interface=eth9"], "/p", create=True)
        self.assertEqual(data, {"ietf-interfaces:interfaces": {"interface": []}})

    def test_resolve_refusals(self):
        for segments, status, tag in (
            (["interfaces"], 400, "malformed-message"),
            (["ietf-interfaces:interfaces", "interface"], 400, "invalid-value"),
            (["ietf-interfaces:interfaces", "interface=eth9", "name"], 404, "data-missing"),
            (["nope:x", "y"], 404, "data-missing"),
        ):
            with self.assertRaises(Problem) as caught:
                resolve(self.data, segments, "/p")
            self.assertEqual((caught.exception.status, caught.exception.entries[0]["error-tag"]), (status, tag))

    def test_fields_expression(self):
        self.assertEqual(expand_fields("a;b/c;d(e;f/g(h))"), [["a"], ["b", "c"], ["d", "e"], ["d", "f", "g", "h"]])
        self.assertRaises(Problem, expand_fields, "a(b")
        self.assertRaises(Problem, expand_fields, "a)b(")

    def test_select_fields_merges_siblings(self):
        system = self.data["example-system:system"]
        self.assertEqual(
            select_fields(system, [["clock", "timezone"], ["clock", "current-datetime"], ["hostname"]]),
            {"clock": {"timezone": "UTC", "current-datetime": "2026-01-01T00:00:00Z"}, "hostname": "device-1"},
        )

    def test_content_and_depth(self):
        interfaces = self.data["ietf-interfaces:interfaces"]
        state = filter_content(interfaces, "nonconfig", "ietf-interfaces:interfaces")
        self.assertEqual(state["interface"][0], {"name": "eth0", "oper-status": "up", "statistics": {"in-octets": 1000, "out-octets": 2000}})
        config = filter_content(interfaces, "config", "ietf-interfaces:interfaces")
        self.assertNotIn("statistics", config["interface"][0])
        self.assertEqual(prune_depth(self.data["example-system:system"], 2)["clock"], {})

    def test_plain_merge(self):
        merge(self.data, {"ietf-interfaces:interfaces": {"interface": [{"name": "eth0", "description": "new"}, {"name": "eth7"}]}})
        entries = self.data["ietf-interfaces:interfaces"]["interface"]
        self.assertEqual([(e["name"], e.get("description")) for e in entries], [("eth0", "new"), ("eth1", None), ("eth7", None)])
        self.assertEqual(entries[0]["oper-status"], "up")
