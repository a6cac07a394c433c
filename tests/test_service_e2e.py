"""The real service on loopback sockets: listeners, PROXY, pins, floods."""

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from callhome_mux.config import Config, config_from_document
from callhome_mux.connection import ConnectionKind
from callhome_mux.service import CallHomeService

from tests import samples
from tests.helpers import EventLog, RecordingHandler


class Sender(protocol.Protocol):
    """A client that sends chunks on connect and records what comes back."""

    def __init__(self, *chunks):
        self.chunks = chunks
        self.received = b""
        self.lost = defer.Deferred()
        self._waiters = []

    def whenReceived(self, size):
        waiter = defer.Deferred()
        self._waiters.append((size, waiter))
        self._check()
        return waiter

    def _check(self):
        for size, waiter in self._waiters[:]:
            if len(self.received) >= size:
                self._waiters.remove((size, waiter))
                waiter.callback(self.received)

    def connectionMade(self):
        for chunk in self.chunks:
            self.transport.write(chunk)

    def dataReceived(self, data):
        self.received += data
        self._check()

    def connectionLost(self, reason):
        self.lost.callback(None)


class ServiceCase(unittest.TestCase):
    listen = ["tcp:0:interface=127.0.0.1"]
    extra = {}

    @defer.inlineCallbacks
    def setUp(self):
        document = {"listen": self.listen, "state_dir": self.mktemp(), **self.extra}
        self.service = CallHomeService(config_from_document(document), install_default_handlers=False)
        self.log = EventLog(self.service.events)
        self.handlers = {kind: RecordingHandler() for kind in ConnectionKind}
        for kind, handler in self.handlers.items():
            self.service.registerHandler(kind, handler)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        ports = yield self.service.whenListening()
        self.ports = [port.getHost().port for port in ports]
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            if client.transport is not None:
                client.transport.abortConnection()

    @defer.inlineCallbacks
    def dial(self, sender, index=0, source="127.0.0.1"):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports[index], bindAddress=(source, 0))
        yield connectProtocol(endpoint, sender)
        self.clients.append(sender)
        return sender


class AutomaticListenerTests(ServiceCase):
    @defer.inlineCallbacks
    def test_ssh_device_is_handed_over_with_its_stream(self):
        stream = samples.SSH_BANNERS["openssh-debian"] + samples.BINARY_AFTER_BANNER
        handler = self.handlers[ConnectionKind.SSH]
        arrived = handler.whenReceived(len(stream))
        handler.reply = b"SSH-2.0-callhome\r\n"
        sender = yield self.dial(Sender(stream[:5], stream[5:]))
        delegate = yield arrived
        self.assertEqual(delegate.received, stream)
        self.assertEqual(delegate.connection.peer.host, "127.0.0.1")
        self.assertEqual(self.log.named("listener.started")[0]["listener"], "tcp:0:interface=127.0.0.1")
        [classified] = self.log.named("connection.classified")
        self.assertEqual(classified["kind"], "ssh")
        # The handler's protocol writes back through the same socket.
        received = yield sender.whenReceived(len(handler.reply))
        self.assertEqual(received, handler.reply)

    @defer.inlineCallbacks
    def test_client_hello_is_handed_over(self):
        hello = samples.openssl_client_hello()
        handler = self.handlers[ConnectionKind.TLS_CLIENT_HELLO]
        arrived = handler.whenReceived(len(hello))
        yield self.dial(Sender(hello))
        delegate = yield arrived
        self.assertEqual(delegate.received, hello)

    @defer.inlineCallbacks
    def test_garbage_is_refused_and_closed(self):
        sender = yield self.dial(Sender(samples.GARBAGE["http"]))
        yield sender.lost
        [rejected] = self.log.named("connection.rejected")
        self.assertIn("HTTP request", rejected["reason"])
        self.assertEqual(rejected["peer"].split(":")[0], "127.0.0.1")


class SilentDeviceTests(ServiceCase):
    extra = {"demux": {"silence_timeout": 0.05, "classify_timeout": 5}}

    @defer.inlineCallbacks
    def test_silent_device_goes_to_tls_client(self):
        handler = self.handlers[ConnectionKind.TLS_SILENT]
        handled = handler.whenHandled()
        yield self.dial(Sender())
        delegate = yield handled
        self.assertEqual(delegate.connection.initial_bytes, b"")


class PinnedListenerTests(ServiceCase):
    listen = ["netconf-tls@tcp:0:interface=127.0.0.1", "ssh@tcp:0:interface=127.0.0.1"]

    @defer.inlineCallbacks
    def test_pins(self):
        silent = self.handlers[ConnectionKind.TLS_SILENT].whenHandled()
        yield self.dial(Sender(), index=0)
        delegate = yield silent
        self.assertEqual(delegate.connection.details, {"protocol": "netconf"})
        self.assertEqual(delegate.connection.listener, "netconf-tls@tcp:0:interface=127.0.0.1")
        ssh = self.handlers[ConnectionKind.SSH].whenReceived(3)
        # A pinned SSH listener hands over at once, even for bytes it would refuse.
        yield self.dial(Sender(b"\x00\x01\x02"), index=1)
        delegate = yield ssh
        self.assertEqual(delegate.received, b"\x00\x01\x02")
        self.assertEqual(self.log.named("connection.rejected"), [])


class ProxyListenerTests(ServiceCase):
    listen = ["auto+proxy@tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"]

    @defer.inlineCallbacks
    def check_header(self, header):
        handler = self.handlers[ConnectionKind.SSH]
        arrived = handler.whenReceived(len(samples.SSH_BANNERS["conch"]))
        yield self.dial(Sender(header, samples.SSH_BANNERS["conch"]))
        delegate = yield arrived
        self.assertEqual(delegate.received, samples.SSH_BANNERS["conch"])
        self.assertEqual((delegate.connection.peer.host, delegate.connection.peer.port), ("192.0.2.10", 51000))
        accepted = self.log.named("connection.accepted")[-1]
        self.assertEqual(accepted["peer"], "192.0.2.10:51000")

    def test_v1(self):
        return self.check_header(samples.PROXY_V1)

    def test_v2(self):
        return self.check_header(samples.proxy_v2())

    @defer.inlineCallbacks
    def test_missing_header_refused(self):
        sender = yield self.dial(Sender(samples.SSH_BANNERS["conch"]))
        yield sender.lost
        [rejected] = self.log.named("connection.rejected")
        self.assertIn("no PROXY protocol header", rejected["reason"])
        self.assertEqual(self.handlers[ConnectionKind.SSH].protocols, [])

    @defer.inlineCallbacks
    def test_unmarked_listener_never_reads_a_header(self):
        sender = yield self.dial(Sender(samples.PROXY_V1 + samples.SSH_BANNERS["conch"]), index=1)
        yield sender.lost
        [rejected] = self.log.named("connection.rejected")
        self.assertIn("does not expect one", rejected["reason"])


class FloodTests(ServiceCase):
    """Silent and one-byte floods must not keep a well-behaved device out."""

    def settled(self, accepted):
        """Wait until the server has accepted C{accepted} connections (an event each)."""
        done = defer.Deferred()

        def check(event=None):
            if len(self.log.named("connection.accepted")) >= accepted and not done.called:
                self.service.events.removeObserver(check)
                done.callback(None)

        self.service.events.addObserver(check)
        check()
        return done

    extra = {
        "demux": {
            "silence_timeout": 60,
            "classify_timeout": 120,
            "max_unclassified": 30,
            "max_unclassified_per_source": 10,
        }
    }

    @defer.inlineCallbacks
    def test_well_behaved_device_served_during_flood(self):
        # Phase one: 30 connections (silent or one byte) from two addresses,
        # 15 each, past the per-address limit of 10.
        for index in range(30):
            chunks = (b"S",) if index % 2 else ()
            yield self.dial(Sender(*chunks), source=f"127.0.0.{3 + index % 2}")
        yield self.settled(30)
        self.assertEqual(self.service.admission.from_source("127.0.0.3"), 10)
        self.assertEqual(self.service.admission.from_source("127.0.0.4"), 10)
        refused = [e for e in self.log.named("connection.rejected") if "too many unclassified" in e["reason"]]
        self.assertEqual(len(refused), 10)
        # Phase two: 20 more from four other addresses, past the global limit of 30.
        for index in range(20):
            yield self.dial(Sender(), source=f"127.0.0.{8 + index % 4}")
        yield self.settled(50)
        self.assertEqual(len(self.service.admission), 30)
        dropped = [e for e in self.log.named("connection.rejected") if "oldest first" in e["reason"]]
        self.assertEqual(len(dropped), 10)
        # A device from another address is classified and handed over at once.
        stream = samples.SSH_BANNERS["openssh-debian"]
        arrived = self.handlers[ConnectionKind.SSH].whenReceived(len(stream))
        yield self.dial(Sender(stream), source="127.0.0.2")
        delegate = yield arrived
        self.assertEqual(delegate.connection.peer.host, "127.0.0.2")
        # Even from a flooding address, a talking device gets in: the oldest silent one makes room.
        arrived = self.handlers[ConnectionKind.SSH].whenReceived(len(stream))
        for index in range(5):
            yield self.dial(Sender(), source="127.0.0.7")
        yield self.dial(Sender(stream), source="127.0.0.7")
        delegate = yield arrived
        self.assertEqual(delegate.connection.peer.host, "127.0.0.7")
        self.assertTrue(any("oldest first" in e["reason"] for e in self.log.named("connection.rejected")))


