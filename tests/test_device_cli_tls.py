"""C{callhome-mux-device netconf-tls}: a real process calls the real service home over TLS."""

import os
import sys

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from callhome_mux.config import config_from_document
from callhome_mux.service import CallHomeService
from callhome_mux.testing import cli
from callhome_mux.testing.certs import test_pki

from tests.test_plugin import REPO, ProcessProtocol


class NetconfTLSCommandTests(unittest.TestCase):
    timeout = 60

    def test_parser(self):
        options = cli.build_parser().parse_args(
            ["netconf-tls", "--connect", "127.0.0.1:4335", "--certificate", "d.crt", "--key", "d.key", "--trust", "ca.crt"]
        )
        self.assertEqual(options.connect, ("127.0.0.1", 4335))
        self.assertEqual(options.direction, "silent")
        self.assertIs(options.run, cli._netconf_tls_run)
        with self.assertRaises(SystemExit):
            cli.build_parser().parse_args(["netconf-tls", "--connect", "h:1"])  # certificate and key required

    @defer.inlineCallbacks
    def test_calls_home_in_both_directions(self):
        pki = test_pki()
        directory = os.path.abspath(self.mktemp())
        paths = pki.write(directory)
        issued = pki.device_certificate("cli-tls")
        device_files = {}
        for suffix, data in (("crt", issued.chain_pem), ("key", issued.key_pem)):
            device_files[suffix] = os.path.join(directory, f"cli-tls.{suffix}")
            with open(device_files[suffix], "wb") as handle:
                handle.write(data)
        document = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "state_dir": self.mktemp(),
            "tls": {
                "certificate_file": paths["manager.crt"],
                "private_key_file": paths["manager.key"],
                "trust_anchor_files": [paths["ca.crt"]],
                "cert_to_name": [{"fingerprint": pki.ca.fingerprint, "map_type": "san-dns-name"}],
            },
            "devices": [{"id": "cli-tls.example.net"}],
        }
        service = CallHomeService(config_from_document(document))
        # The demultiplexer's silence timer on a clock this test moves.
        demux_clock = task.Clock()
        service.listeners[0].demux.clock = demux_clock
        accepted = []
        service.events.addObserver(lambda event: event["event"] == "connection.accepted" and accepted.append(event))
        service.startService()
        self.addCleanup(service.stopService)
        yield service.whenStarted()
        port = service.listeners[0].port.getHost().port
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for direction in ("client-hello", "silent"):
            waiting = service.whenConnected("cli-tls.example.net")
            process = ProcessProtocol(b"called home")
            transport = reactor.spawnProcess(
                process,
                sys.executable,
                [sys.executable, "-m", "callhome_mux.testing.cli", "netconf-tls", "--connect", f"127.0.0.1:{port}",
                 "--certificate", device_files["crt"], "--key", device_files["key"], "--trust", paths["ca.crt"],
                 "--direction", direction],
                env=env,
            )
            yield process.ready
            if direction == "silent":
                while not accepted:  # the TCP connection is up on the device side; let the server see it
                    yield task.deferLater(reactor, 0, lambda: None)
                demux_clock.advance(service.config.demux.silence_timeout)
            session = yield waiting
            self.assertEqual(session.details["transport"], "netconf-tls")
            self.assertEqual(session.details["tls_direction"], direction)
            data = yield session.get_config(source="running")
            self.assertTrue(data.tag.endswith("}data"))
            accepted.clear()
            lost = session.whenLost()
            transport.signalProcess("TERM")
            yield process.ended
            yield lost
