"""Devices, pending callers and sessions through the HTTP API, with devices calling home."""

from __future__ import annotations

import os
import stat

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from tests.test_api_harness import APIServer, ssh_device_table


class DevicesTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.device = SSHCallHomeDevice(username="admin", password="s3cret-pw")
        self.server = yield APIServer(
            self, [ssh_device_table(self.device, "r1", labels={"owner": "net-team"})]
        ).start()

    @defer.inlineCallbacks
    def test_list_show_and_session_details(self):
        server = self.server
        reply = yield server.http("GET", "/api/v1/devices")
        self.assertEqual(reply.status, 200, reply)
        [device] = reply.json()["devices"]
        self.assertEqual(device["id"], "r1")
        self.assertEqual(device["source"], "config")
        self.assertEqual(device["state"]["state"], "never-seen")
        self.assertEqual(device["credentials"], {"username": "admin", "password": True, "password_file": None, "private_key_file": None})
        self.assertNotIn(b"s3cret-pw", reply.body)
        yield server.connect(self.device, "r1")
        reply = yield server.http("GET", "/api/v1/devices/r1")
        self.assertEqual(reply.status, 200, reply)
        view = reply.json()
        self.assertTrue(view["connected"])
        self.assertEqual(view["state"]["state"], "connected")
        self.assertEqual(view["session"]["transport"], "netconf-ssh")
        # What the API shows is what the SSH layer negotiated and recorded.
        negotiated = server.service.registry.get("r1").details["algorithms"]
        self.assertEqual(view["session"]["algorithms"], negotiated)
        self.assertIn(negotiated["kex"], ("mlkem768x25519-sha256", "curve25519-sha256"))
        self.assertIn("urn:ietf:params:netconf:base:1.1", view["session"]["capabilities"])
        self.assertGreaterEqual(view["session"]["uptime"], 0)
        self.assertIn("session.up", [entry["event"] for entry in view["history"]])
        self.assertNotIn(b"s3cret-pw", reply.body)
        reply = yield server.http("GET", "/api/v1/devices?state=connected")
        self.assertEqual([d["id"] for d in reply.json()["devices"]], ["r1"])
        reply = yield server.http("GET", "/api/v1/devices?state=never-seen")
        self.assertEqual(reply.json()["devices"], [])
        reply = yield server.http("GET", "/api/v1/devices?label=owner=net-team")
        self.assertEqual([d["id"] for d in reply.json()["devices"]], ["r1"])
        reply = yield server.http("GET", "/api/v1/devices?label=owner=other")
        self.assertEqual(reply.json()["devices"], [])

    @defer.inlineCallbacks
    def test_sessions_list_and_close(self):
        server = self.server
        session = yield server.connect(self.device, "r1")
        reply = yield server.http("GET", "/api/v1/sessions")
        [view] = reply.json()["sessions"]
        self.assertEqual((view["device_id"], view["transport"]), ("r1", "netconf-ssh"))
        self.assertTrue(view["peer"].startswith("127.0.0.1:"))
        self.assertEqual(view["counters"], {"rpcs": 0, "rpc_errors": 0, "restconf_requests": 0})
        self.assertIn("kex", view["algorithms"])
        reply = yield server.http("GET", "/api/v1/sessions/r1")
        self.assertEqual(reply.json()["device_id"], "r1")
        lost = session.whenLost()
        reply = yield server.http("DELETE", "/api/v1/sessions/r1")
        self.assertEqual(reply.status, 202, reply)
        yield lost
        reply = yield server.http("GET", "/api/v1/sessions")
        self.assertEqual(reply.json()["sessions"], [])
        reply = yield server.http("DELETE", "/api/v1/sessions/r1")
        self.assertEqual(reply.status, 503, reply)
        self.assertIn("not connected", reply.json()["error"]["message"])

    @defer.inlineCallbacks
    def test_runtime_device_add_change_remove(self):
        server = self.server
        other = SSHCallHomeDevice(username="ops", password="Second-Secret-2")
        body = ssh_device_table(other, "r2", labels={"site": "lab"})
        reply = yield server.http("POST", "/api/v1/devices", body=body)
        self.assertEqual(reply.status, 201, reply)
        self.assertEqual(reply.json()["source"], "runtime")
        self.assertNotIn(b"Second-Secret-2", reply.body)
        reply = yield server.http("POST", "/api/v1/devices", body=body)
        self.assertEqual(reply.status, 409, reply)
        # PATCH changes only what it names; the password stays.
        reply = yield server.http("PATCH", "/api/v1/devices/r2", body={"labels": {"site": "prod"}, "enabled": False})
        self.assertEqual(reply.status, 200, reply)
        self.assertEqual(reply.json()["labels"], {"site": "prod"})
        self.assertFalse(reply.json()["enabled"])
        device = server.service.inventory.get("r2")
        self.assertEqual(device.credentials.password, "Second-Secret-2")
        self.assertEqual(device.ssh_host_keys, (other.host_key_line,))
        # PUT replaces the whole device.
        reply = yield server.http("PUT", "/api/v1/devices/r2", body={"ssh_host_keys": [other.fingerprint]})
        self.assertEqual(reply.status, 200, reply)
        device = server.service.inventory.get("r2")
        self.assertEqual(device.labels, {})
        self.assertIsNone(device.credentials.password)
        # The call is accepted with the new data; the device then logs in.
        reply = yield server.http("PATCH", "/api/v1/devices/r2", body={"credentials": {"username": "ops", "password": "Second-Secret-2"}})
        self.assertEqual(reply.status, 200, reply)
        yield server.connect(other, "r2")
        closed = server.whenEvent("session.lost", device_id="r2")
        reply = yield server.http("DELETE", "/api/v1/devices/r2")
        self.assertEqual(reply.status, 204, reply)
        yield closed
        reply = yield server.http("GET", "/api/v1/devices/r2")
        self.assertEqual(reply.status, 404, reply)
        self.assertEqual(reply.json(), {"error": {"status": 404, "message": "device 'r2' not found"}})

    @defer.inlineCallbacks
    def test_configuration_devices_are_not_changed_through_the_api(self):
        for method in ("PATCH", "PUT", "DELETE"):
            reply = yield self.server.http(method, "/api/v1/devices/r1", body={"enabled": False})
            self.assertEqual(reply.status, 409, reply)
            self.assertIn("configuration file", reply.json()["error"]["message"])

    @defer.inlineCallbacks
    def test_bad_requests(self):
        server = self.server
        cases = [
            ("POST", "/api/v1/devices", b"{not json", 400, "not valid JSON"),
            ("POST", "/api/v1/devices", b"[1, 2]", 400, "JSON object"),
            ("POST", "/api/v1/devices", {"id": ""}, 400, "non-empty"),
            ("POST", "/api/v1/devices", {"id": "x", "ssh_host_keys": ["nonsense"]}, 400, "ssh_host_keys[0]"),
            ("POST", "/api/v1/devices", {"id": "x", "colour": "blue"}, 400, "unknown device field"),
            ("POST", "/api/v1/devices", {"id": "x", "credentials": {"password": 7}}, 400, "credentials.password"),
            ("PATCH", "/api/v1/devices/nope", {"enabled": False}, 404, "not found"),
            ("GET", "/api/v1/devices?state=sleepy", None, 400, "unknown state"),
            ("GET", "/api/v1/devices?label=oops", None, 400, "key=value"),
            ("GET", "/api/v1/nothing-here", None, 404, "no such resource"),
            ("DELETE", "/api/v1/pending", None, 405, "not allowed"),
            ("POST", "/api/v1/pending/999/approve", None, 404, "pending entry 999"),
            ("POST", "/api/v1/pending/abc/deny", None, 404, "pending entry"),
        ]
        for method, path, body, status, text in cases:
            reply = yield server.http(method, path, body=body)
            self.assertEqual(reply.status, status, (method, path, reply))
            self.assertEqual(reply.header("content-type"), "application/json")
            error = reply.json()["error"]
            self.assertEqual(error["status"], status)
            self.assertIn(text, error["message"])
        # A secret of the wrong type is never echoed back.
        reply = yield server.http("POST", "/api/v1/devices", body={"id": "x", "credentials": {"password": 123456789}})
        self.assertNotIn(b"123456789", reply.body)
        reply = yield server.http("POST", "/api/v1/devices", body={"id": "x", "outbound_ssh_secret": 987654321})
        self.assertEqual(reply.status, 400, reply)
        self.assertIn("outbound_ssh_secret", reply.json()["error"]["message"])
        self.assertNotIn(b"987654321", reply.body)

    @defer.inlineCallbacks
    def test_body_size_limit(self):
        server = self.server
        server.api.site.max_body = 1000
        for chunked in (False, True):
            reply = yield server.http("POST", "/api/v1/devices", body=b"{" + b" " * 5000 + b"}", chunked=chunked)
            self.assertEqual(reply.status, 413, reply)
            self.assertIn("larger than the limit", reply.json()["error"]["message"])
        reply = yield server.http("POST", "/api/v1/devices", body=b'{"id": 5}', chunked=True)
        self.assertEqual(reply.status, 400, reply)


class PendingTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.server = yield APIServer(self, []).start()

    @defer.inlineCallbacks
    def refused(self, device):
        closed = self.server.whenEvent("connection.closed")
        self.server.call_home(device).addErrback(lambda _: None)
        yield closed

    @defer.inlineCallbacks
    def test_approve_with_id_credentials_labels_then_device_connects(self):
        server = self.server
        device = SSHCallHomeDevice(username="admin", password="pw")
        yield self.refused(device)
        reply = yield server.http("GET", "/api/v1/pending")
        [entry] = reply.json()["pending"]
        self.assertEqual(entry["fingerprint"], device.fingerprint)
        self.assertEqual(entry["status"], "pending")
        self.assertEqual(entry["count"], 1)
        body = {"id": "edge-1", "credentials": {"username": "admin", "password": "pw"}, "labels": {"owner": "ups-team"}}
        reply = yield server.http("POST", f"/api/v1/pending/{entry['pending_id']}/approve", body=body)
        self.assertEqual(reply.status, 201, reply)
        self.assertEqual(reply.json()["id"], "edge-1")
        self.assertEqual(reply.json()["labels"], {"owner": "ups-team"})
        self.assertNotIn(b'"pw"', reply.body)
        reply = yield server.http("GET", "/api/v1/pending")
        self.assertEqual(reply.json()["pending"], [])
        session = yield server.connect(device, "edge-1")
        self.assertEqual(session.device_id, "edge-1")

    @defer.inlineCallbacks
    def test_deny(self):
        server = self.server
        device = SSHCallHomeDevice(password="pw")
        yield self.refused(device)
        [entry] = server.service.inventory.pending()
        reply = yield server.http("POST", f"/api/v1/pending/{entry.id}/deny")
        self.assertEqual(reply.status, 200, reply)
        self.assertEqual(reply.json()["status"], "denied")
        reply = yield server.http("GET", "/api/v1/pending")
        self.assertEqual(reply.json()["pending"][0]["status"], "denied")

    @defer.inlineCallbacks
    def test_approve_under_a_taken_id_is_a_conflict(self):
        server = self.server
        device = SSHCallHomeDevice(password="pw")
        yield self.refused(device)
        [entry] = server.service.inventory.pending()
        other = SSHCallHomeDevice(password="pw")
        reply = yield server.http("POST", "/api/v1/devices", body=ssh_device_table(other, "taken"))
        self.assertEqual(reply.status, 201, reply)
        reply = yield server.http("POST", f"/api/v1/pending/{entry.id}/approve", body={"id": "taken"})
        self.assertEqual(reply.status, 409, reply)
        reply = yield server.http("POST", f"/api/v1/pending/{entry.id}/approve", body={"colour": "red"})
        self.assertEqual(reply.status, 400, reply)


class UptimeTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_session_older_than_the_api_takes_its_uptime_from_the_inventory(self):
        device = SSHCallHomeDevice(password="pw")
        server = yield APIServer(self, [ssh_device_table(device, "r1")]).start()
        session = yield server.connect(device, "r1")
        context = server.api.ctx
        context.session_lost(session)  # as if the API had not seen it come up
        reply = yield server.http("GET", "/api/v1/sessions/r1")
        view = reply.json()
        self.assertEqual(view["up_since"], server.service.inventory.state("r1").since)
        self.assertEqual(view["counters"], {})
