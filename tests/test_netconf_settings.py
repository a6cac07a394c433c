"""The [netconf] settings section."""

from twisted.trial.unittest import TestCase

from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1
from callhome_mux.netconf.settings import NetconfSettings
from callhome_mux.settings import ConfigError


class SettingsTests(TestCase):
    def test_defaults(self):
        settings = NetconfSettings()
        self.assertEqual((settings.hello_timeout, settings.rpc_timeout), (30.0, 60.0))
        self.assertEqual(settings.max_message_size, 64 * 1024 * 1024)
        self.assertEqual(settings.capabilities, (BASE_1_0, BASE_1_1))
        self.assertEqual(settings.effective_max_chunk_size, settings.max_message_size)

    def test_from_table_accepts_dashes_and_lists(self):
        settings = NetconfSettings.from_table({"hello-timeout": 5, "capabilities": [BASE_1_1], "max-chunk-size": 4096})
        self.assertEqual(settings.hello_timeout, 5.0)
        self.assertEqual(settings.capabilities, (BASE_1_1,))
        self.assertEqual(settings.effective_max_chunk_size, 4096)

    def test_errors_name_the_key(self):
        cases = {
            "rpc_timeout": 0,
            "max_message_size": 0,
            "max_chunk_size": 4294967296,
            "send_chunk_size": 0,
            "capabilities": ["urn:example:not-a-base"],
            "unknown_thing": 1,
        }
        for key, value in cases.items():
            error = self.assertRaises(ConfigError, NetconfSettings.from_table, {key: value})
            self.assertTrue(str(error).startswith(f"netconf.{key}"), str(error))

    def test_capability_with_space_refused(self):
        error = self.assertRaises(ConfigError, NetconfSettings, capabilities=(BASE_1_0, "urn:bad cap"))
        self.assertIn("capabilities[1]", str(error))

    def test_frozen(self):
        self.assertRaises(Exception, setattr, NetconfSettings(), "rpc_timeout", 1.0)
