"""
End to end over loopback: NETCONF over the SSH channel, keepalives both
ways, a device calling home again, Juniper preambles, setup failures.
"""

from __future__ import annotations

import gc
import types

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from callhome_mux.connection import NO_CLAIMS
from callhome_mux.frozen import FrozenDict
from callhome_mux.inventory.model import Credentials, Device
from callhome_mux.netconf.namespaces import BASE_NS
from callhome_mux.ssh.settings import SSHSettings
from callhome_mux.testing.datastore import Datastore
from callhome_mux.testing.ssh_device import JuniperPreamble, SSHCallHomeDevice, generate_ed25519_key
from callhome_mux.ssh.mac import PrecomputedMACCiphers
from callhome_mux.netconf.session import NetconfClientProtocol
from callhome_mux.ssh.userauth import DeviceUserAuth
from tests.test_ssh_harness import Manager

RUNNING = '<system xmlns="urn:example:system"><hostname>r1</hostname></system>'


def entry_for(device, device_id="r1", secret=None, password="pw") -> Device:
    return Device(
        id=device_id,
        ssh_host_keys=(device.host_key_line,),
        credentials=Credentials(password=password),
        outbound_ssh_secret=secret,
    )


class NetconfOverSSHTests(unittest.TestCase):
    timeout = 60
    @defer.inlineCallbacks
    def up(self, device, settings=None, clock=None, entry=None):
        manager = yield Manager(self, [entry or entry_for(device)], settings=settings, clock=clock).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        return manager, session

    @defer.inlineCallbacks
    def up_call(self, device):
        """L{up}, with the handler's one call and its one channel."""
        manager, session = yield self.up(device)
        (call,) = manager.handler.calls.values()
        (channel,) = call.transport.service.channels.values()
        return manager, session, call, channel

    @defer.inlineCallbacks
    def test_rpc(self):
        device = SSHCallHomeDevice(password="pw", datastore=Datastore(RUNNING))
        manager, session = yield self.up(device)
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "r1")

    @defer.inlineCallbacks
    def test_pipelined_rpcs(self):
        device = SSHCallHomeDevice(password="pw", datastore=Datastore(RUNNING))
        manager, session = yield self.up(device)
        server = device.netconf_servers[-1]
        server.hold_replies = True
        pending = [session.get_config("running") for _ in range(20)]
        # All 20 are sent before any reply; let the reactor turn until the
        # device has read them (no sleeping: one reactor iteration at a time).
        while len(server.received) < 20:
            yield task.deferLater(reactor, 0, lambda: None)
        server.release_replies(lambda replies: list(reversed(replies)))
        results = yield defer.gatherResults(pending)
        self.assertEqual(len(results), 20)
        for data in results:
            self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "r1")

    @defer.inlineCallbacks
    def test_large_reply_beyond_channel_window(self):
        items = "".join(f"<item><name>n{i}</name><value>{'x' * 200}</value></item>" for i in range(12000))
        big = f'<big xmlns="urn:example:big">{items}</big>'
        device = SSHCallHomeDevice(password="pw", datastore=Datastore(big))
        settings = SSHSettings(channel_window=256 * 1024)
        manager, session = yield self.up(device, settings=settings)
        data = yield session.get_config("running")
        self.assertEqual(len(data.findall(".//{urn:example:big}item")), 12000)

    @defer.inlineCallbacks
    def test_rekey_keeps_the_session(self):
        device = SSHCallHomeDevice(password="pw", datastore=Datastore(RUNNING))
        manager, session = yield self.up(device)
        offered = list(device.offered_credentials)
        device.connections[-1].sendKexInit()
        for _ in range(3):
            data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "r1")
        (call,) = manager.handler.calls.values()
        self.assertEqual(call.key_exchanges, 2)
        # The same key again: no new identification, no second login.
        self.assertEqual(len(manager.named("ssh.hostkey.accepted")), 1)
        self.assertEqual(device.offered_credentials, offered)
        self.assertIs(manager.registry.get("r1"), session)
        self.assertTrue(session.is_up)

    @defer.inlineCallbacks
    def test_key_exchange_state_is_not_kept_once_secured(self):
        device = SSHCallHomeDevice(password="pw", datastore=Datastore(RUNNING))
        manager, session = yield self.up(device)
        (call,) = manager.handler.calls.values()
        kex_only = ("ourKexInitPayload", "otherKexInitPayload", "ecPriv", "ecPub", "_hybridPQ", "_hybridInit")
        self.assertEqual([name for name in kex_only if name in vars(call.transport)], [])
        self.assertIsInstance(call.transport.currentEncryptions, PrecomputedMACCiphers)
        device.connections[-1].sendKexInit()
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "r1")
        self.assertEqual(call.key_exchanges, 2)
        self.assertEqual([name for name in kex_only if name in vars(call.transport)], [])
        self.assertIsInstance(call.transport.currentEncryptions, PrecomputedMACCiphers)
        # Sessions of one fleet share their algorithm details.
        self.assertEqual(call.details["algorithms"]["cipher_in"], call.transport.negotiated()["cipher_in"])
        self.assertIs(call.transport.negotiated(), call.transport.negotiated())
        self.assertIsInstance(call.transport.negotiated(), FrozenDict)  # kept by the inventory without a copy

    @defer.inlineCallbacks
    def test_what_is_done_with_is_not_kept_once_up(self):
        """The user authentication, the host-key candidate and the early-bytes list go once the session is up."""
        device = SSHCallHomeDevice(password="pw", datastore=Datastore(RUNNING))
        manager, session, call, channel = yield self.up_call(device)
        transport = call.transport
        self.assertIsNone(transport.instance)
        self.assertNotIsInstance(transport.service, DeviceUserAuth)
        self.assertEqual([o for o in gc.get_referrers(transport) if isinstance(o, DeviceUserAuth)], [])
        self.assertIsNone(call._candidate)
        # The device's EXT_INFO (it sent server-sig-algs) is read by the user
        # authentication only: conch's empty class default is left.
        self.assertNotIn("peerExtensions", vars(transport))
        self.assertEqual(transport.peerExtensions, {})
        self.assertIsNone(channel._early)
        self.assertIsNone(channel.protocol._ready_waiters)
        # Nothing kept for the registry but a reference (no whenLost()
        # Deferred), no host-key object (its blob is enough for re-keys), no
        # bound methods for the keepalive or the handler, no decoder lists
        # for a session that has read only its <hello>.
        self.assertIsNone(channel.protocol._lost_waiters)
        self.assertIs(channel.protocol._lost_watcher, manager.registry)
        self.assertIsNone(call.host_key)
        self.assertEqual(call._host_key_blob, device.host_key.public().blob())
        self.assertEqual([type(o) for o in gc.get_referents(call._keepalive) if type(o) is types.MethodType], [])
        self.assertEqual([type(o) for o in gc.get_referents(call) if type(o) is types.MethodType], [])
        self.assertEqual((channel.protocol._decoder._input, channel.protocol._decoder._pieces), ((), ()))
        # The ciphers were built as PrecomputedMACCiphers, not converted:
        # assigning __class__ gives a CPython object a dict of its own.
        ciphers = transport.currentEncryptions
        self.assertIsInstance(ciphers, PrecomputedMACCiphers)
        self.assertNotIn(dict, [type(referent) for referent in gc.get_referents(ciphers)])
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "r1")
        # conch's list of the channel's pending requests, empty once the
        # subsystem request is answered (which may come after the session
        # is up: the device's <hello> can come first).
        self.assertNotIn(channel.id, transport.service.deferreds)

    @defer.inlineCallbacks
    def test_the_local_address_is_asked_only_when_wanted(self):
        """An up session has not asked for our address (no getsockname, no address kept); its transport still answers both."""
        _, _, call, channel = yield self.up_call(SSHCallHomeDevice(password="pw", datastore=Datastore(RUNNING)))
        connection = call.connection
        self.assertIsNone(connection.host)
        netconf_transport = channel.protocol.transport
        self.assertIs(netconf_transport.getPeer(), connection.peer)
        host = netconf_transport.getHost()
        self.assertEqual(host, connection.transport.getHost())
        self.assertIs(connection.host, host)
        self.assertIs(netconf_transport.getHost(), host)
        # Nothing was sent with the preamble claims of a device that sent none: the shared empty ones.
        self.assertEqual(dict(connection.preamble), {})
        self.assertIs(connection.preamble, NO_CLAIMS)

    @defer.inlineCallbacks
    def test_a_hello_before_the_subsystem_answer_needs_no_ready_deferred(self):
        # The device's <hello> comes before its answer to the subsystem
        # request: the session is ready as soon as the protocol is attached.
        asked = []
        original = NetconfClientProtocol.whenReady
        self.patch(NetconfClientProtocol, "whenReady", lambda protocol: asked.append(protocol) or original(protocol))
        device = SSHCallHomeDevice(password="pw", datastore=Datastore(RUNNING))
        manager, session = yield self.up(device)
        self.assertEqual(asked, [])
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "r1")

    @defer.inlineCallbacks
    def test_a_hello_after_the_subsystem_answer(self):
        from callhome_mux.testing.netconf_device import NetconfServerProtocol

        class LateHello(NetconfServerProtocol):
            def connectionMade(self):
                # One reactor turn later: after the subsystem request's answer.
                reactor.callLater(0, NetconfServerProtocol.connectionMade, self)

        asked = []
        original = NetconfClientProtocol.whenReady
        self.patch(NetconfClientProtocol, "whenReady", lambda protocol: asked.append(protocol) or original(protocol))
        datastore = Datastore(RUNNING)
        device = SSHCallHomeDevice(password="pw", netconf_factory=lambda: LateHello(datastore))
        manager, session = yield self.up(device)
        self.assertEqual(len(asked), 1)
        self.assertEqual(len(manager.named("session.up")), 1)
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "r1")

    @defer.inlineCallbacks
    def test_a_session_that_breaks_right_after_an_early_hello_is_still_up_then_lost(self):
        # The device's <hello> and then a broken frame, both before the
        # answer to the subsystem request: the hellos were exchanged, so the
        # session was up (session.up, then session.lost), as when the same
        # bytes come later; not a NETCONF setup failure.
        from callhome_mux.testing.netconf_device import NetconfServerProtocol

        class HelloThenGarbage(NetconfServerProtocol):
            def connectionMade(self):
                NetconfServerProtocol.connectionMade(self)
                self.transport.write(b"<not-a-chunk]]>]]>")

        datastore = Datastore(RUNNING)
        device = SSHCallHomeDevice(password="pw", netconf_factory=lambda: HelloThenGarbage(datastore))
        manager = yield Manager(self, [entry_for(device)]).start()
        connected = manager.registry.whenConnected("r1")
        closed = manager.whenEvent("ssh.connection.closed")
        yield manager.callHome(device)
        yield closed
        self.assertEqual(manager.named("ssh.netconf.failed"), [])
        self.assertEqual(len(manager.named("session.up")), 1)
        session = self.successResultOf(connected)
        reason = yield session.whenLost()
        self.assertIn("protocol error", reason)
        [lost] = manager.named("session.lost")
        self.assertEqual(lost["reason"], reason)

    @defer.inlineCallbacks
    def test_calling_home_again_replaces_the_session(self):
        device = SSHCallHomeDevice(password="pw")
        manager, first = yield self.up(device)
        first_connection = device.connections[-1]
        replaced = manager.whenEvent("session.replaced", device_id="r1")
        yield manager.callHome(device)
        yield replaced
        yield first_connection.lost
        second = manager.registry.get("r1")
        self.assertIsNot(second, first)
        self.assertFalse(first.is_up)
        self.assertTrue(second.is_up)
        self.assertEqual(len(device.connections), 1)
        data = yield second.get_config("running")
        self.assertIsNotNone(data)

    @defer.inlineCallbacks
    def test_session_lost_when_device_disconnects(self):
        device = SSHCallHomeDevice(password="pw")
        manager, session = yield self.up(device)
        lost = manager.whenEvent("session.lost", device_id="r1")
        device.disconnect()
        event = yield lost
        self.assertIn("connection lost", event["reason"])
        self.assertIsNone(manager.registry.get("r1"))


class KeepaliveTests(unittest.TestCase):
    timeout = 60
    @defer.inlineCallbacks
    def test_device_that_stops_answering_is_lost(self):
        clock = task.Clock()
        device = SSHCallHomeDevice(password="pw", answer_global_requests=False)
        settings = SSHSettings(keepalive_interval=10, keepalive_max_missed=3)
        manager = yield Manager(self, [entry_for(device)], settings=settings, clock=clock).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        clock.advance(9)
        self.assertEqual(device.global_requests, [])
        for probe in range(3):
            seen = device.whenGlobalRequest()
            clock.advance(10 if probe else 1)
            name = yield seen
            self.assertEqual(name, "keepalive@openssh.com")
        lost_event = manager.whenEvent("ssh.keepalive.lost", device_id="r1")
        session_lost = session.whenLost()
        clock.advance(10)
        event = yield lost_event
        reason = yield session_lost
        self.assertEqual(event["missed"], 3)
        self.assertIn("keepalive", reason)
        self.assertIsNone(manager.registry.get("r1"))

    @defer.inlineCallbacks
    def test_answering_device_stays_up(self):
        clock = task.Clock()
        device = SSHCallHomeDevice(password="pw")
        settings = SSHSettings(keepalive_interval=10, keepalive_max_missed=2)
        manager = yield Manager(self, [entry_for(device)], settings=settings, clock=clock).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        for _ in range(6):
            seen = device.whenGlobalRequest()
            clock.advance(10)
            yield seen
            # An RPC round trip: the keepalive reply, sent before the RPC
            # reply on the same stream, has certainly arrived after it.
            yield session.get_config("running")
        self.assertEqual(len(device.global_requests), 6)
        self.assertEqual(manager.named("ssh.keepalive.lost"), [])
        self.assertIs(manager.registry.get("r1"), session)

    @defer.inlineCallbacks
    def test_busy_session_sends_no_keepalives(self):
        clock = task.Clock()
        device = SSHCallHomeDevice(password="pw")
        settings = SSHSettings(keepalive_interval=10)
        manager = yield Manager(self, [entry_for(device)], settings=settings, clock=clock).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        for _ in range(5):
            clock.advance(6)
            yield session.get_config("running")
        self.assertEqual(device.global_requests, [])

    @defer.inlineCallbacks
    def test_device_keepalive_answered_at_once(self):
        # The manager's clock never moves: the reply cannot come from a timer.
        clock = task.Clock()
        device = SSHCallHomeDevice(password="pw")
        manager = yield Manager(self, [entry_for(device)], clock=clock).start()
        yield manager.callHome(device)
        yield manager.registry.whenConnected("r1")
        replies = yield defer.gatherResults([device.sendKeepalive() for _ in range(3)])
        # RFC 8071 §7 asks for an answer; a refusal (REQUEST_FAILURE) is one.
        self.assertEqual(replies, ["failure"] * 3)
        self.assertEqual(manager.handler.calls[manager.named("ssh.auth.succeeded")[0]["connection_id"]].global_requests_answered, 3)

    @defer.inlineCallbacks
    def test_device_periodic_keepalives(self):
        device_clock = task.Clock()
        device = SSHCallHomeDevice(password="pw", keepalive_interval=15, clock=device_clock)
        manager = yield Manager(self, [entry_for(device)]).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        device_clock.advance(15)
        yield session.get_config("running")
        self.assertIs(manager.registry.get("r1"), session)


class JuniperPreambleTests(unittest.TestCase):
    timeout = 60
    @defer.inlineCallbacks
    def test_good_hmac_is_accepted(self):
        device = SSHCallHomeDevice(password="pw", preamble=JuniperPreamble("r1", secret="xyzzy-42"))
        manager = yield Manager(self, [entry_for(device, secret="xyzzy-42")]).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        self.assertEqual(session.device_id, "r1")

    @defer.inlineCallbacks
    def refused(self, device, secret="xyzzy-42"):
        manager = yield Manager(self, [entry_for(device, secret=secret)]).start()
        rejected = manager.whenEvent("ssh.preamble.rejected")
        connection = yield manager.callHome(device)
        event = yield rejected
        yield connection.lost
        self.assertEqual(device.offered_credentials, [])
        self.assertNotIn("xyzzy-42", repr(manager.events))
        return event

    @defer.inlineCallbacks
    def test_wrong_hmac_is_refused(self):
        device = SSHCallHomeDevice(password="pw", preamble=JuniperPreamble("r1", secret="not-the-secret"))
        event = yield self.refused(device)
        self.assertIn("HMAC", event["reason"])
        self.assertEqual(event["fingerprint"], device.fingerprint)

    @defer.inlineCallbacks
    def test_missing_preamble_is_refused(self):
        device = SSHCallHomeDevice(password="pw")
        event = yield self.refused(device)
        self.assertIn("no HOST-KEY", event["reason"])

    @defer.inlineCallbacks
    def test_preamble_key_other_than_handshake_key_is_refused(self):
        other = generate_ed25519_key().public().toString("openssh").decode()
        device = SSHCallHomeDevice(password="pw", preamble=JuniperPreamble("r1", secret="xyzzy-42", host_key_override=other))
        event = yield self.refused(device)
        self.assertIn("differs", event["reason"])


class SetupFailureTests(unittest.TestCase):
    timeout = 60
    @defer.inlineCallbacks
    def test_subsystem_refused(self):
        device = SSHCallHomeDevice(password="pw", subsystem="not-netconf")
        manager = yield Manager(self, [entry_for(device)]).start()
        refused = manager.whenEvent("ssh.subsystem.refused")
        connection = yield manager.callHome(device)
        event = yield refused
        yield connection.lost
        self.assertEqual(event["subsystem"], "netconf")

    @defer.inlineCallbacks
    def test_setup_timeout(self):
        from twisted.internet.protocol import Protocol

        clock = task.Clock()
        device = SSHCallHomeDevice(password="pw", netconf_factory=Protocol)  # never says hello
        settings = SSHSettings(auth_timeout=5)
        manager = yield Manager(self, [entry_for(device)], settings=settings, clock=clock).start()
        started = manager.whenEvent("ssh.subsystem.started")
        connection = yield manager.callHome(device)
        yield started
        timeout = manager.whenEvent("ssh.setup.timeout")
        clock.advance(5)
        event = yield timeout
        yield connection.lost
        self.assertEqual(event["stage"], "hello")
