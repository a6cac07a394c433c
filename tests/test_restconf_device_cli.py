"""The simulator's command line: it calls home and our client gets a session."""

import io

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from callhome_mux.events import EventBus
from callhome_mux.restconf.session import restconf_protocol
from callhome_mux.testing.cli import build_parser
from callhome_mux.testing.restconf_device import restconf_subcommand


class _Listener(Factory):
    def __init__(self):
        self.built = defer.Deferred()

    def buildProtocol(self, addr):
        client = restconf_protocol("cli-device", EventBus(), clock=task.Clock())
        self.built.callback(client)
        return client


class DeviceCommandLineTests(unittest.TestCase):
    def test_options(self):
        options = build_parser([restconf_subcommand]).parse_args(
            ["restconf", "--connect", "[::1]:4336", "--certificate", "c", "--key", "k", "--trust", "a", "--trust", "b"]
        )
        self.assertEqual((options.connect, options.direction, options.trust), (("::1", 4336), "silent", ["a", "b"]))

    @defer.inlineCallbacks
    def test_plain_call_home(self):
        listener = _Listener()
        port = reactor.listenTCP(0, listener, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        options = build_parser([restconf_subcommand]).parse_args(
            ["restconf", "--connect", f"127.0.0.1:{port.getHost().port}", "--plain", "--root", "/cli"]
        )
        out = io.StringIO()
        running = options.run(reactor, options, out)
        client = yield listener.built
        session = yield client.whenReady()
        self.assertEqual(session.root, "/cli")
        session.close("done")
        code = yield running
        self.assertEqual(code, 0)
        self.assertIn("disconnected after 2 requests", out.getvalue())
