"""The twistd plugin: discovered, builds the same service, starts with no options."""

import os
import sys

from twisted.application.service import IServiceMaker
from twisted.internet import defer, error, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from callhome_mux.plugin import Options, makeService
from callhome_mux.service import CallHomeService

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PluginTests(unittest.TestCase):
    def test_discovered(self):
        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("callhome-mux", names)

    def test_options_build_the_service(self):
        options = Options()
        options.parseOptions(["--listen", "ssh@tcp:0", "--state-dir", "x", "--set", "demux.silence_timeout=0.5"])
        service = makeService(options)
        self.assertIsInstance(service, CallHomeService)
        self.assertEqual(service.config.state_dir, "x")
        self.assertEqual(service.config.demux.silence_timeout, 0.5)
        self.assertEqual([listener.spec.name for listener in service.listeners], ["ssh@tcp:0"])

    def test_bad_configuration_is_a_usage_error(self):
        options = Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--set", "demux.max_unclassified=0"])
        self.assertIn("demux.max_unclassified", str(caught.exception))


class ProcessProtocol(protocol.ProcessProtocol):
    def __init__(self, marker):
        self.output = b""
        self.marker = marker
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data
        if self.marker in self.output and not self.ready.called:
            self.ready.callback(self.output)

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError(self.output.decode(errors="replace")))
        self.ended.callback(reason.value)


class TwistdProcessTests(unittest.TestCase):
    """twistd -n callhome-mux, a real process with embedded defaults."""

    @defer.inlineCallbacks
    def test_starts_with_defaults_and_classifies(self):
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        process = ProcessProtocol(b"listener.started")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # Port 0 instead of 4334 so parallel runs cannot collide; everything else is the default.
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "callhome-mux", "--listen", "tcp:0:interface=127.0.0.1",
             "--set", "api.listen=tcp:0:interface=127.0.0.1"],
            env=env,
            path=workdir,
        )
        self.addCleanup(lambda: transport.signalProcess("KILL") if transport.pid else None)
        output = yield process.ready
        process.marker, process.ready = b"service.started", defer.Deferred()
        if b"service.started" not in output:
            output = yield process.ready
        self.assertTrue(os.path.isdir(os.path.join(workdir, "callhome-mux-state")))
        self.assertEqual(os.stat(os.path.join(workdir, "callhome-mux-state")).st_mode & 0o777, 0o700)
        port = int(output.split(b"address=127.0.0.1:")[1].split()[0])

        # A connection that sends garbage is refused, and the log says why.
        class Client(protocol.Protocol):
            def __init__(self):
                self.lost = defer.Deferred()

            def connectionMade(self):
                self.transport.write(b"\x00garbage")

            def connectionLost(self, reason):
                self.lost.callback(None)

        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())
        yield client.lost

        # The HTTP API is up on loopback, with a generated admin token (0600).
        state = os.path.join(workdir, "callhome-mux-state")
        with open(os.path.join(state, "api-address")) as handle:
            url = handle.read().strip()
        self.assertTrue(url.startswith("http://127.0.0.1:"), url)
        self.assertEqual(os.stat(os.path.join(state, "api-token")).st_mode & 0o777, 0o600)
        from twisted.web.client import Agent, readBody

        response = yield Agent(reactor).request(b"GET", (url.rstrip("/") + "/healthz").encode())
        self.assertEqual(response.code, 200)
        yield readBody(response)
        transport.signalProcess("TERM")
        yield process.ended
        text = process.output.decode()
        self.assertIn("connection.rejected", text)
        self.assertIn("binary data before any SSH banner", text)
        self.assertIn("Server Shut Down", text)
