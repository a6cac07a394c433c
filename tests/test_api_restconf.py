"""RESTCONF passthrough: a TLS RESTCONF device calls home; the API relays requests to it."""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from callhome_mux.testing.certs import test_pki
from callhome_mux.testing.restconf_device import RestconfDevice
from tests.test_api_harness import APIServer, temporary_directory

DEVICE_ID = "device1.example.net"


class RestconfDeviceCase(unittest.TestCase):
    """A server with one RESTCONF device (TLS, ClientHello direction) connected."""

    @defer.inlineCallbacks
    def setUp(self):
        pki = test_pki()
        directory = temporary_directory(self)
        paths = pki.write(directory)
        tls = {
            "certificate_file": paths["manager.crt"],
            "private_key_file": paths["manager.key"],
            "trust_anchor_files": [paths["ca.crt"]],
            "cert_to_name": [{"fingerprint": pki.ca.fingerprint, "map_type": "san-dns-name"}],
        }
        self.server = APIServer(self, [{"id": DEVICE_ID, "protocol": "restconf", "labels": {"owner": "ups-team"}}], sections={"tls": tls})
        yield self.server.start()
        self.device = RestconfDevice()
        self.tls_device = self.device.over_tls(pki.device.chain_pem, pki.device.key_pem, [pki.ca.certificate])
        self.addCleanup(self.tls_device.disconnect)
        up = self.server.service.registry.whenConnected(DEVICE_ID)
        yield self.tls_device.callHome(reactor, "127.0.0.1", self.server.port, "client-hello")
        self.session = yield up


class RestconfPassthroughTests(RestconfDeviceCase):
    def restconf(self, method, path, **options):
        return self.server.http(method, f"/api/v1/devices/{DEVICE_ID}/restconf/{path}", **options)

    @defer.inlineCallbacks
    def test_get_patch_and_errors_pass_through(self):
        reply = yield self.restconf(
            "GET", "data/example-system:system?fields=hostname", headers={"Accept": "application/yang-data+json"}
        )
        self.assertEqual(reply.status, 200, reply)
        self.assertEqual(reply.header("content-type"), "application/yang-data+json")
        self.assertEqual(json.loads(reply.body), {"example-system:system": {"hostname": "device-1"}})
        reply = yield self.restconf(
            "PATCH", "data/example-system:system",
            body=json.dumps({"example-system:system": {"hostname": "api-1"}}),
            headers={"Content-Type": "application/yang-data+json"},
        )
        self.assertIn(reply.status, (200, 204), reply)
        self.assertEqual(self.device.data["example-system:system"]["hostname"], "api-1")
        # The device's own error document comes back as the device sent it.
        reply = yield self.restconf("GET", "data/example-system:nothing", headers={"Accept": "application/yang-data+json"})
        self.assertEqual(reply.status, 404, reply)
        self.assertIn(b"ietf-restconf:errors", reply.body)
        counters = (yield self.server.http("GET", f"/api/v1/sessions/{DEVICE_ID}")).json()["counters"]
        self.assertEqual(counters["restconf_requests"], 3)

    @defer.inlineCallbacks
    def test_encoded_key_values_stay_encoded(self):
        reply = yield self.restconf("GET", "data/ietf-interfaces:interfaces/interface=eth0%2F1?depth=1")
        self.assertIn(reply.status, (200, 404), reply)
        self.assertEqual(
            self.device.requests[-1].uri, "/restconf/data/ietf-interfaces:interfaces/interface=eth0%2F1?depth=1"
        )

    @defer.inlineCallbacks
    def test_no_escape_from_the_restconf_root(self):
        before = len(self.device.requests)
        for path in ("../.well-known/host-meta", "data/%2e%2e/%2E%2E/x", "./data"):
            reply = yield self.restconf("GET", path)
            self.assertEqual(reply.status, 400, (path, reply))
        self.assertEqual(len(self.device.requests), before)

    @defer.inlineCallbacks
    def test_netconf_endpoints_refuse_a_restconf_session(self):
        reply = yield self.server.http("POST", f"/api/v1/devices/{DEVICE_ID}/netconf/rpc", body="<get/>")
        self.assertEqual(reply.status, 409, reply)
        self.assertIn("not NETCONF", reply.json()["error"]["message"])

    @defer.inlineCallbacks
    def test_device_gone_mid_request(self):
        self.device.hold()
        arrived = self.device.whenRequests(len(self.device.requests) + 1)
        pending = self.restconf("GET", "data/example-system:system", headers={"If-None-Match": '"x"'})
        yield arrived
        yield _turn()  # the device files the request as held just after counting it
        [held] = self.device.held
        # Our bearer token never reaches the device; the conditional headers do.
        self.assertFalse(held.requestHeaders.hasHeader(b"authorization"))
        self.assertEqual(held.getHeader(b"if-none-match"), b'"x"')
        self.tls_device.disconnect()
        reply = yield pending
        self.assertEqual(reply.status, 502, reply)
        self.assertIn("lost", reply.json()["error"]["message"])


def _turn():
    from twisted.internet import task

    return task.deferLater(reactor, 0, lambda: None)
