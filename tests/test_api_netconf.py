"""NETCONF through the HTTP API: RPCs, shortcuts, rpc-errors, timeouts, loss, notifications."""

from __future__ import annotations

from lxml import etree
from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.testing.datastore import Datastore
from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from tests.test_api_harness import APIServer, ssh_device_table

SYSTEM = '<system xmlns="urn:example:system"><hostname>edge-1</hostname><location>lab</location></system>'
NS = {"nc": "urn:ietf:params:xml:ns:netconf:base:1.0", "s": "urn:example:system"}


class NetconfTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.device = SSHCallHomeDevice(username="admin", password="pw", datastore=Datastore(running=SYSTEM))
        self.server = yield APIServer(self, [ssh_device_table(self.device, "r1")]).start()
        self.session = yield self.server.connect(self.device, "r1")
        self.netconf = self.device.netconf_servers[-1]

    def rpc(self, body, query="", **options):
        return self.server.http("POST", f"/api/v1/devices/r1/netconf/rpc{query}", body=body, **options)

    @defer.inlineCallbacks
    def test_rpc_returns_the_rpc_reply(self):
        reply = yield self.rpc("<get-config><source><running/></source></get-config>")
        self.assertEqual(reply.status, 200, reply)
        self.assertTrue(reply.header("content-type").startswith("application/xml"))
        root = etree.fromstring(reply.body)
        self.assertEqual(root.tag, "{urn:ietf:params:xml:ns:netconf:base:1.0}rpc-reply")
        self.assertEqual(root.findtext("nc:data/s:system/s:hostname", namespaces=NS), "edge-1")
        # A whole <rpc> is accepted too (its operation is sent).
        reply = yield self.rpc('<rpc xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="x"><get/></rpc>')
        self.assertEqual(reply.status, 200, reply)
        sessions = yield self.server.http("GET", "/api/v1/sessions/r1")
        self.assertEqual(sessions.json()["counters"]["rpcs"], 2)

    @defer.inlineCallbacks
    def test_get_config_and_get_shortcuts_with_filters(self):
        subtree = '<system xmlns="urn:example:system"><hostname/></system>'
        reply = yield self.server.http("GET", "/api/v1/devices/r1/netconf/get-config?source=running&filter=" + _quote(subtree))
        self.assertEqual(reply.status, 200, reply)
        root = etree.fromstring(reply.body)
        self.assertEqual(root.findtext("nc:data/s:system/s:hostname", namespaces=NS), "edge-1")
        self.assertIsNone(root.find("nc:data/s:system/s:location", namespaces=NS))
        reply = yield self.server.http("GET", "/api/v1/devices/r1/netconf/get?filter=" + _quote("/system/location"))
        self.assertEqual(reply.status, 200, reply)
        [get] = [rpc for rpc in self.netconf.received if etree.QName(rpc[0]).localname == "get"]
        self.assertEqual(get[0][0].get("type"), "xpath")
        reply = yield self.server.http("GET", "/api/v1/devices/r1/netconf/get-config?source=" + _quote("<x/>"))
        self.assertEqual(reply.status, 400, reply)

    @defer.inlineCallbacks
    def test_rpc_error_carries_every_field(self):
        reply = yield self.rpc("<frobnicate/>")
        self.assertEqual(reply.status, 502, reply)
        error = reply.json()["error"]
        [item] = error["rpc_errors"]
        self.assertEqual(item["error-tag"], "operation-not-supported")
        self.assertEqual(item["error-type"], "protocol")
        self.assertEqual(item["error-severity"], "error")
        self.assertIn("frobnicate", item["error-message"])
        self.assertIn("rpc-reply", error["reply"])
        self.assertEqual(error["device_id"], "r1")

    @defer.inlineCallbacks
    def test_lock_denied_is_a_conflict(self):
        self.netconf.datastore.locks["running"] = 99
        reply = yield self.rpc("<lock><target><running/></target></lock>")
        self.assertEqual(reply.status, 409, reply)
        [item] = reply.json()["error"]["rpc_errors"]
        self.assertEqual(item["error-tag"], "lock-denied")
        self.assertIn("session-id", item["error-info"])

    @defer.inlineCallbacks
    def test_bad_xml_is_refused_before_the_device_sees_it(self):
        for body in (b"<get>", b"not xml", b'<!DOCTYPE x [<!ENTITY a "b">]><get/>', b"", b"<rpc><get/><get/></rpc>"):
            reply = yield self.rpc(body)
            self.assertEqual(reply.status, 400, (body, reply))
        self.assertEqual(self.netconf.received, [])

    @defer.inlineCallbacks
    def test_timeout_answers_504(self):
        self.netconf.stop_answering = True
        reply = yield self.rpc("<get/>", query="?timeout=0.05")
        self.assertEqual(reply.status, 504, reply)
        self.assertIn("no reply", reply.json()["error"]["message"])
        reply = yield self.rpc("<get/>", query="?timeout=soon")
        self.assertEqual(reply.status, 400, reply)

    @defer.inlineCallbacks
    def test_device_disconnecting_mid_rpc(self):
        self.netconf.hold_replies = True
        received = self.server.whenEvent("netconf.session.lost", device_id="r1")
        pending = self.rpc("<get/>")
        # Once the RPC is on the device, the device goes away.
        while not self.netconf.received:
            yield _turn()
        self.device.disconnect()
        reply = yield pending
        yield received
        self.assertEqual(reply.status, 502, reply)
        self.assertIn("lost", reply.json()["error"]["message"])
        reply = yield self.rpc("<get/>")
        self.assertEqual(reply.status, 503, reply)

    @defer.inlineCallbacks
    def test_unknown_device_and_unauthorised(self):
        reply = yield self.server.http("POST", "/api/v1/devices/nope/netconf/rpc", body="<get/>")
        self.assertEqual(reply.status, 404, reply)
        reader = yield self.server.token("read")
        reply = yield self.rpc("<get/>", token=reader)
        self.assertEqual(reply.status, 403, reply)
        # The read-only shortcuts are open to a read token.
        reply = yield self.server.http("GET", "/api/v1/devices/r1/netconf/get", token=reader)
        self.assertEqual(reply.status, 200, reply)

    @defer.inlineCallbacks
    def test_notifications_reach_the_event_bus(self):
        reply = yield self.server.http("POST", "/api/v1/devices/r1/netconf/subscription", body={})
        self.assertEqual(reply.status, 201, reply)
        seen = self.server.whenEvent("netconf.notification", device_id="r1")
        self.assertTrue(self.netconf.notify('<link-down xmlns="urn:example:if"><name>eth0</name></link-down>'))
        event = yield seen
        self.assertIn("<name>eth0</name>", event["xml"])
        self.assertTrue(event["event_time"])


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _turn():
    from twisted.internet import reactor, task

    return task.deferLater(reactor, 0, lambda: None)
