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
        self.assertEqual(view["session"]["algorithms"]["kex"], "curve25519-sha256")
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
