"""Prometheus metrics: they follow devices coming and going, and stay per service."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from callhome_mux.api.metrics import Metrics, rejection_category
from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from tests.test_api_harness import APIServer, ssh_device_table


def samples(body: bytes):
    """{(sample name, frozenset(labels)): value}"""
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())), 0.0)


class Garbage(protocol.Protocol):
    def __init__(self):
        self.lost = defer.Deferred()

    def connectionMade(self):
        self.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    def connectionLost(self, reason):
        self.lost.callback(None)


class MetricsTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.device = SSHCallHomeDevice(password="pw")
        self.server = yield APIServer(self, [ssh_device_table(self.device, "r1")]).start()

    @defer.inlineCallbacks
    def scrape(self):
        reply = yield self.server.http("GET", "/metrics")
        self.assertEqual(reply.status, 200, reply)
        self.assertTrue(reply.header("content-type").startswith("text/plain"))
        return samples(reply.body)

    @defer.inlineCallbacks
    def test_metrics_follow_devices_coming_and_going(self):
        before = yield self.scrape()
        self.assertIn(("callhome_sessions_up", frozenset({("transport", "netconf-ssh")})), before)
        self.assertEqual(value(before, "callhome_sessions_up", transport="netconf-ssh"), 0)
        self.assertEqual(value(before, "callhome_devices", state="never-seen"), 1)
        session = yield self.server.connect(self.device, "r1")
        reply = yield self.server.http("POST", "/api/v1/devices/r1/netconf/rpc", body="<get/>")
        self.assertEqual(reply.status, 200)
        reply = yield self.server.http("POST", "/api/v1/devices/r1/netconf/rpc", body="<nope/>")
        self.assertEqual(reply.status, 502)
        up = yield self.scrape()
        self.assertEqual(value(up, "callhome_sessions_up", transport="netconf-ssh"), 1)
        self.assertEqual(value(up, "callhome_devices", state="connected"), 1)
        self.assertEqual(value(up, "callhome_connections_total", kind="ssh", outcome="classified"), 1)
        self.assertEqual(value(up, "callhome_classification_seconds_count", kind="ssh"), 1)
        self.assertEqual(value(up, "callhome_sessions_opened_total", transport="netconf-ssh"), 1)
        self.assertEqual(value(up, "callhome_api_rpcs_total", protocol="netconf", outcome="ok"), 1)
        self.assertEqual(value(up, "callhome_api_rpcs_total", protocol="netconf", outcome="rpc-error"), 1)
        self.assertEqual(value(up, "callhome_api_rpc_seconds_count", protocol="netconf"), 2)
        lost = session.whenLost()
        self.device.disconnect()
        yield lost
        down = yield self.scrape()
        self.assertEqual(value(down, "callhome_sessions_up", transport="netconf-ssh"), 0)
        self.assertEqual(value(down, "callhome_sessions_lost_total", transport="netconf-ssh"), 1)
        self.assertEqual(value(down, "callhome_devices", state="disconnected"), 1)
        # Metrics never name devices.
        self.assertFalse(any("r1" in str(labels) for _, labels in down))

    @defer.inlineCallbacks
    def test_refused_connections_and_failures(self):
        garbage = Garbage()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.port), garbage)
        yield garbage.lost
        stranger = SSHCallHomeDevice(password="pw")
        pending = self.server.whenEvent("connection.closed")
        self.server.call_home(stranger).addErrback(lambda _: None)
        yield pending
        found = yield self.scrape()
        self.assertEqual(value(found, "callhome_connections_total", kind="none", outcome="rejected"), 1)
        self.assertEqual(value(found, "callhome_failures_total", reason="rejected-unrecognised"), 1)
        self.assertEqual(value(found, "callhome_failures_total", reason="not-allowed"), 1)
        self.assertEqual(value(found, "callhome_pending_devices", status="pending"), 1)

    def test_each_service_has_its_own_registry(self):
        first, second = Metrics(), Metrics()
        first.observe({"event": "connection.classified", "kind": "ssh", "ms": 2.0})
        self.assertEqual(first.registry.get_sample_value("callhome_connections_total", {"kind": "ssh", "outcome": "classified"}), 1.0)
        self.assertIsNone(second.registry.get_sample_value("callhome_connections_total", {"kind": "ssh", "outcome": "classified"}))
        self.assertIsNone(REGISTRY.get_sample_value("callhome_connections_total", {"kind": "ssh", "outcome": "classified"}))

    def test_rejection_categories_are_bounded(self):
        self.assertEqual(rejection_category("closed by the peer before it could be classified"), "peer-closed")
        self.assertEqual(rejection_category("nothing classifiable within 5s"), "timeout")
        self.assertEqual(rejection_category("too many connections from 10.0.0.1"), "admission-limit")
        self.assertEqual(rejection_category("an HTTP request: not a call home"), "unrecognised")
        self.assertEqual(rejection_category(None), "unrecognised")
