"""The C{callhome-mux-device ssh} command: options, host key file, a real call home."""

from __future__ import annotations

import io
import os

from twisted.conch.ssh import keys
from twisted.internet import defer, reactor
from twisted.trial import unittest

from callhome_mux.inventory.model import Credentials, Device, ssh_fingerprint
from callhome_mux.testing import cli
from tests.test_ssh_harness import Manager


class CLITests(unittest.TestCase):
    timeout = 60
    def test_subcommands_and_required_connect(self):
        parser = cli.build_parser()
        with self.assertRaises(SystemExit):
            parser.parse_args(["ssh"])
        options = parser.parse_args(["ssh", "--connect", "[::1]:4334", "--auth-methods", "password"])
        self.assertEqual(options.connect, ("::1", 4334))
        self.assertIs(options.run, cli._ssh_run)
        # Other kinds are subcommands of the same command.
        self.assertEqual(parser.parse_args(["restconf", "--connect", "h:1"]).command, "restconf")

    def test_host_key_file_created_then_reused(self):
        path = os.path.join(self.mktemp())
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        options = cli.build_parser().parse_args(["ssh", "--connect", "h:1", "--host-key", path])
        first = cli.build_ssh_device(options)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        second = cli.build_ssh_device(options)
        self.assertEqual(first.fingerprint, second.fingerprint)
        self.assertEqual(ssh_fingerprint(keys.Key.fromFile(path).public().blob()), first.fingerprint)

    def test_secrets_from_files_not_argv(self):
        password = self.mktemp()
        with open(password, "w") as handle:
            handle.write("pw-from-file\n")
        options = cli.build_parser().parse_args(["ssh", "--connect", "h:1", "--password-file", password])
        self.assertEqual(cli.build_ssh_device(options).password, "pw-from-file")

    @defer.inlineCallbacks
    def test_calls_home_and_serves_netconf(self):
        host_key = self.mktemp()
        password = self.mktemp()
        running = self.mktemp()
        with open(password, "w") as handle:
            handle.write("pw\n")
        with open(running, "w") as handle:
            handle.write('<system xmlns="urn:example:system"><hostname>cli</hostname></system>')
        manager = yield Manager(self, []).start()
        argv = ["ssh", "--connect", f"127.0.0.1:{manager.port}", "--host-key", host_key, "--password-file", password,
                "--running-file", running, "--device-id", "cli-1"]
        options = cli.build_parser().parse_args(argv)
        line = cli.build_ssh_device(options).host_key_line
        yield manager.addDevices([Device(id="cli-1", ssh_host_keys=(line,), credentials=Credentials(password="pw"))])
        out = io.StringIO()
        finished = cli._ssh_run(reactor, options, out=out)
        session = yield manager.registry.whenConnected("cli-1")
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "cli")
        session.close("test over")
        code = yield finished
        self.assertEqual(code, 0)
        self.assertIn("device host key: ssh-ed25519 ", out.getvalue())
        self.assertIn("disconnected", out.getvalue())
