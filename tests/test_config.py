"""Configuration: TOML file, command line, defaults, and messages that name the key."""

import os

from twisted.trial import unittest

from callhome_mux.config import Config, config_from_document, load_config
from callhome_mux.demux.settings import DemuxSettings
from callhome_mux.listener import ListenerSpec
from callhome_mux.settings import ConfigError


class ConfigTests(unittest.TestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_defaults_need_nothing(self):
        config = load_config()
        self.assertEqual([spec.name for spec in config.listeners], ["tcp:4334"])
        self.assertEqual(config.listeners[0].mode, "auto")
        self.assertEqual(config.state_dir, "callhome-mux-state")
        self.assertEqual(config.demux, DemuxSettings())

    def test_file_values(self):
        path = self.write(
            'state_dir = "/var/lib/chm"\n'
            'listen = ["tcp:4334", "netconf-tls@tcp:4335", { endpoint = "tcp:4336", mode = "restconf", proxy = true }]\n'
            "[demux]\nsilence-timeout = 2.5\nmax_unclassified = 10\n"
        )
        config = load_config(path)
        self.assertEqual(config.state_dir, "/var/lib/chm")
        self.assertEqual(
            [(s.endpoint, s.mode, s.proxy) for s in config.listeners],
            [("tcp:4334", "auto", False), ("tcp:4335", "netconf-tls", False), ("tcp:4336", "restconf", True)],
        )
        self.assertEqual(config.demux.silence_timeout, 2.5)
        self.assertEqual(config.demux.max_unclassified, 10)
        self.assertEqual(config.path, path)

    def test_command_line_wins(self):
        path = self.write('state_dir = "a"\nlisten = ["tcp:1"]\n[demux]\nsilence_timeout = 2.0\n')
        config = load_config(
            path, listen=["ssh@tcp:2"], state_dir="b", overrides=["demux.silence_timeout=3", "demux.max_unclassified=7"]
        )
        self.assertEqual(config.state_dir, "b")
        self.assertEqual([s.name for s in config.listeners], ["ssh@tcp:2"])
        self.assertEqual(config.demux.silence_timeout, 3.0)
        self.assertEqual(config.demux.max_unclassified, 7)

    def test_errors_name_the_key(self):
        cases = {
            "[demux]\nsilence_timeout = 'soon'\n": "demux.silence_timeout",
            "[demux]\nnope = 1\n": "demux.nope",
            "[nosuch]\na = 1\n": "nosuch",
            'listen = ["bogus@tcp:1"]\n': "listen[0].mode",
            'listen = [{ endpoint = "tcp:1", proxy = "yes" }]\n': "listen[0].proxy",
            "listen = []\n": "listen",
            "state_dir = 3\n": "state_dir",
            "[demux\n": "not valid TOML",
        }
        for text, key in cases.items():
            with self.assertRaises(ConfigError, msg=text) as caught:
                load_config(self.write(text))
            self.assertIn(key, str(caught.exception), text)

    def test_secret_values_never_in_messages(self):
        cases = [
            '[[devices]]\nid = "a"\noutbound_ssh_secret = 987654321\n',
            '[[devices]]\nid = "a"\ncredentials = { password = 987654321 }\n',
        ]
        for text in cases:
            with self.assertRaises(ConfigError) as caught:
                load_config(self.write(text))
            self.assertNotIn("987654321", str(caught.exception))
            self.assertIn("devices[0]", str(caught.exception))

    def test_missing_file(self):
        with self.assertRaises(ConfigError) as caught:
            load_config("/nonexistent/callhome.toml")
        self.assertIn("cannot read configuration file", str(caught.exception))

    def test_listener_syntax(self):
        self.assertEqual(ListenerSpec.parse("tcp:4334"), ListenerSpec("tcp:4334"))
        self.assertEqual(ListenerSpec.parse("auto+proxy@tcp:4334"), ListenerSpec("tcp:4334", "auto", True))
        spec = ListenerSpec.parse(r"ssh@tcp6:port=4334:interface=\:\:")
        self.assertEqual(spec.endpoint, r"tcp6:port=4334:interface=\:\:")
        self.assertEqual(spec.mode, "ssh")
        with self.assertRaises(ConfigError):
            ListenerSpec.parse("ssh+tls@tcp:1")
        with self.assertRaises(ConfigError):
            ListenerSpec.parse("ssh@4334")
