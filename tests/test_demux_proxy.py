"""PROXY protocol headers split at every byte, before the demultiplexer."""

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from callhome_mux.connection import ConnectionKind
from callhome_mux.demux.protocol import DemuxFactory
from callhome_mux.demux.proxy import ProxyHeaderFactory
from callhome_mux.demux.settings import DemuxSettings
from callhome_mux.events import EventBus

from tests import samples
from tests.helpers import EventLog, RecordingHandler


class ProxyHeaderTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.events = EventBus(clock=self.clock)
        self.log = EventLog(self.events)
        self.handler = RecordingHandler()
        demux = DemuxFactory(
            DemuxSettings(), self.events, {kind: self.handler for kind in ConnectionKind}, clock=self.clock
        )
        self.factory = ProxyHeaderFactory(demux, self.events, self.clock, header_timeout=5.0, listener_name="lb")

    def connect(self):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 40000))
        proto.makeConnection(transport)
        return proto, transport

    def check_every_split(self, header):
        stream = header + samples.SSH_BANNERS["openssh-debian"] + samples.BINARY_AFTER_BANNER
        for split in range(1, len(header) + 2):
            self.handler.protocols.clear()
            proto, transport = self.connect()
            proto.dataReceived(stream[:split])
            # Nothing reaches the demultiplexer until the header is complete.
            accepted_before = len(self.log.named("connection.accepted"))
            self.assertEqual(accepted_before, split - 1 if split < len(header) else split)
            for byte in range(split, len(stream)):
                proto.dataReceived(stream[byte : byte + 1])
            [delegate] = self.handler.protocols
            self.assertEqual(delegate.received, stream[len(header) :], split)
            self.assertEqual(delegate.connection.peer.host, "192.0.2.10")
            self.assertEqual(delegate.connection.peer.port, 51000)
            self.assertFalse(transport.disconnecting)
        self.assertEqual(self.log.named("connection.rejected"), [])

    def test_v1_every_split(self):
        self.check_every_split(samples.PROXY_V1)

    def test_v2_every_split(self):
        self.check_every_split(samples.proxy_v2())

    def test_demux_not_connected_before_header(self):
        proto, transport = self.connect()
        proto.dataReceived(samples.PROXY_V1[:10])
        self.assertEqual(self.log.named("connection.accepted"), [])
        # The silence timer starts only once the header is in: a silent device
        # behind a load balancer is still recognised.
        self.clock.advance(4)
        proto.dataReceived(samples.PROXY_V1[10:])
        [accepted] = self.log.named("connection.accepted")
        self.assertEqual(accepted["peer"], "192.0.2.10:51000")
        self.clock.advance(1.0)
        [delegate] = self.handler.protocols
        self.assertEqual(delegate.connection.kind, ConnectionKind.TLS_SILENT)

    def test_header_timeout(self):
        proto, transport = self.connect()
        proto.dataReceived(b"PROXY TCP4 ")
        self.clock.advance(5.0)
        self.assertTrue(transport.disconnected)
        [rejected] = self.log.named("connection.rejected")
        self.assertIn("no complete PROXY protocol header within 5.0 s", rejected["reason"])
        self.assertEqual(rejected["peer"], "10.0.0.1:40000")

    def test_invalid_headers(self):
        cases = {
            b"GARBAGE\r\n": "no PROXY protocol header",
            b"PROXY TCP4 not-an-ip 1.2.3.4 1 2\r\n": "invalid PROXY protocol header",
            samples.PROXY_V2_SIGNATURE + b"\x31\x11\x00\x00": "unknown version",
            b"PROXY " + b"x" * 200: "invalid PROXY protocol header",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 port 4334\r\n": "invalid PROXY protocol header",
        }
        for data, reason in cases.items():
            proto, transport = self.connect()
            proto.dataReceived(data)
            self.assertTrue(transport.disconnected, data)
            self.assertIn(reason, self.log.named("connection.rejected")[-1]["reason"], data)
        self.assertEqual(self.handler.protocols, [])

    def test_connection_lost_before_header(self):
        proto, transport = self.connect()
        proto.dataReceived(b"PRO")
        proto.connectionLost(None)
        self.assertEqual(self.log.named("connection.accepted"), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
