"""The client and the test device over real loopback TCP sockets."""

from twisted.internet import defer, endpoints, reactor
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.netconf.errors import RPCError
from callhome_mux.netconf.session import NetconfClientProtocol
from callhome_mux.testing.netconf_device import Datastore, NetconfServerFactory

T = "urn:example:tcp"


class LoopbackTCPTests(TestCase):
    timeout = 20  # seconds: a hang fails the test instead of the whole run

    @defer.inlineCallbacks
    def connect(self, **device_options):
        datastore = Datastore(running=f'<top xmlns="{T}"><hostname>tcp</hostname><blob>{"y" * 300000}</blob></top>')
        self.factory = NetconfServerFactory(datastore, **device_options)
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        self.addCleanup(port.stopListening)
        self.events = []
        bus = EventBus()
        bus.addObserver(self.events.append)
        client = NetconfClientProtocol(bus, device_id="tcp-dev", details={"transport": "tcp"})
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        yield endpoints.connectProtocol(endpoint, client)
        session = yield client.whenReady()
        self.addCleanup(self.close, session)
        return session

    def close(self, session):
        lost = session.whenLost()
        session.close("test over")
        return lost

    @defer.inlineCallbacks
    def test_session_over_tcp(self):
        session = yield self.connect()
        self.assertEqual(session.base, "1.1")
        data = yield session.get_config(filter=f'<top xmlns="{T}"><hostname/></top>')
        self.assertEqual(data.findtext(f"{{{T}}}top/{{{T}}}hostname"), "tcp")
        # A reply large enough to arrive over several reads.
        data = yield session.get_config()
        self.assertEqual(len(data.findtext(f"{{{T}}}top/{{{T}}}blob")), 300000)
        replies = yield defer.gatherResults([session.rpc(b"<get/>") for _ in range(50)])
        self.assertEqual(sorted(int(r.get("message-id")) for r in replies), list(range(3, 53)))
        self.assertIn("netconf.hello.done", [e["event"] for e in self.events])

    @defer.inlineCallbacks
    def test_base_1_0_over_tcp_and_rpc_error(self):
        session = yield self.connect(bases=("1.0",))
        self.assertEqual(session.base, "1.0")
        error = yield self.assertFailure(session.lock("candidate"), RPCError)
        self.assertEqual(error.tag, "invalid-value")

    @defer.inlineCallbacks
    def test_clean_close_over_tcp(self):
        session = yield self.connect()
        lost = session.whenLost()
        reply = yield session.close_session()
        self.assertEqual(reply.get("message-id"), "1")
        reason = yield lost
        self.assertIn("close-session", reason)
        self.assertEqual(len(self.factory.datastore.sessions), 0)
