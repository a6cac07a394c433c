"""The [tls] settings, our generated identity, and the protocol decision rules."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from cryptography import x509
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.settings import ConfigError
from callhome_mux.testing.certs import test_pki
from callhome_mux.tls import decide
from callhome_mux.tls.identity import load_identity
from callhome_mux.tls.settings import TLSSettings
from callhome_mux.tls.trust import TrustStore


def temp_dir(case: TestCase) -> str:
    directory = tempfile.mkdtemp(prefix="callhome-tls-test-")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


class SettingsTests(TestCase):
    def test_defaults(self):
        settings = TLSSettings.from_table(None)
        self.assertEqual(settings.min_version, "1.2")
        self.assertEqual(settings.alpn_protocols, ("netconf", "http/1.1"))
        self.assertIsNone(settings.certificate_file)

    def test_cert_to_name_tables(self):
        fingerprint = test_pki().ca.fingerprint
        settings = TLSSettings.from_table(
            {"cert-to-name": [{"fingerprint": fingerprint.upper().replace("SHA256:", ""), "map-type": "serial-number", "priority": 3}]}
        )
        (rule,) = settings.cert_to_name
        self.assertEqual((rule.fingerprint, rule.map_type, rule.priority), (fingerprint, "serial-number", 3))

    def test_bad_values_name_the_key(self):
        cases = [
            ({"min-version": "1.1"}, "tls.min_version"),
            ({"alpn-protocols": ["spdy/3"]}, "tls.alpn_protocols[0]"),
            ({"handshake-timeout": 0}, "tls.handshake_timeout"),
            ({"certificate-file": "/x.crt"}, "tls.certificate_file"),
            ({"cert-to-name": [{"fingerprint": test_pki().ca.fingerprint, "map-type": "specified"}]}, "tls.cert-to-name[0].name"),
            ({"colour": "blue"}, "tls.colour"),
        ]
        for table, key in cases:
            with self.assertRaises(ConfigError, msg=table) as caught:
                TLSSettings.from_table(table)
            self.assertTrue(str(caught.exception).startswith(key), str(caught.exception))

    def test_bad_rule_fingerprint(self):
        # The model raises without a key, so only the value is named (see the report).
        with self.assertRaises(ConfigError) as caught:
            TLSSettings.from_table({"cert-to-name": [{"fingerprint": "nope"}]})
        self.assertIn("'nope'", str(caught.exception))


class TrustStoreTests(TestCase):
    def test_from_files(self):
        directory = temp_dir(self)
        paths = test_pki().write(directory)
        der_crl = os.path.join(directory, "crl.der")
        from cryptography.hazmat.primitives import serialization

        with open(der_crl, "wb") as handle:
            handle.write(test_pki().crl.public_bytes(serialization.Encoding.DER))
        trust = TrustStore.from_files([paths["ca.crt"], paths["device_via_intermediate.crt"]], [paths["crl.pem"], der_crl])
        self.assertEqual(len(trust.anchors), 3)
        self.assertEqual(len(trust.crls), 2)

    def test_unreadable_files(self):
        with self.assertRaises(ConfigError) as caught:
            TrustStore.from_files(["/nonexistent/ca.pem"])
        self.assertIn("tls.trust_anchor_files[0]", str(caught.exception))
        path = os.path.join(temp_dir(self), "junk.crl")
        with open(path, "wb") as handle:
            handle.write(b"junk")
        with self.assertRaises(ConfigError) as caught:
            TrustStore.from_files([], [path])
        self.assertIn("tls.crl_files[0]", str(caught.exception))


class IdentityTests(TestCase):
    def setUp(self):
        self.events = []
        self.bus = EventBus()
        self.bus.addObserver(self.events.append)
        self.state = temp_dir(self)

    def test_generated_once_then_reused(self):
        first = load_identity(TLSSettings(), self.state, self.bus, hostname="manager.example.net")
        self.assertTrue(first.generated)
        self.assertEqual(stat.S_IMODE(os.stat(first.private_key_file).st_mode), 0o600)
        san = first.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["manager.example.net"])
        self.assertEqual(first.certificate.issuer, first.certificate.subject)
        second = load_identity(TLSSettings(), self.state, self.bus, hostname="other")
        self.assertFalse(second.generated)
        self.assertEqual(second.fingerprint, first.fingerprint)
        self.assertEqual([e["event"] for e in self.events], ["tls.identity.generated", "tls.identity.loaded"])
        self.assertEqual(self.events[0]["fingerprint"], first.fingerprint)
        for event in self.events:
            self.assertNotIn("BEGIN", repr(event))

    def test_configured_identity(self):
        paths = test_pki().write(temp_dir(self))
        settings = TLSSettings(certificate_file=paths["manager.crt"], private_key_file=paths["manager.key"])
        identity = load_identity(settings, self.state, self.bus)
        self.assertEqual(identity.fingerprint, test_pki().manager.fingerprint)
        self.assertFalse(os.path.exists(os.path.join(self.state, "tls")))

    def test_ip_hostname(self):
        identity = load_identity(TLSSettings(), self.state, self.bus, hostname="192.0.2.1")
        san = identity.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual([str(a) for a in san.get_values_for_type(x509.IPAddress)], ["192.0.2.1"])


class DecideTests(TestCase):
    def test_pins(self):
        self.assertEqual(decide.pinned("restconf", "netconf-tls"), decide.RESTCONF)  # listener first
        self.assertEqual(decide.pinned(None, "netconf-tls"), decide.NETCONF)
        self.assertEqual(decide.pinned("", None), None)
        self.assertRaises(decide.PinMismatch, decide.pinned, None, "netconf-ssh")
        self.assertRaises(decide.PinMismatch, decide.pinned, "gopher", None)

    def test_alpn(self):
        self.assertEqual(decide.from_alpn(b"netconf"), decide.NETCONF)
        self.assertEqual(decide.from_alpn(b"http/1.1"), decide.RESTCONF)
        self.assertEqual(decide.from_alpn(b"h2"), decide.RESTCONF)
        self.assertIsNone(decide.from_alpn(None))
        self.assertIsNone(decide.from_alpn(b"imap"))

    def test_first_bytes(self):
        self.assertEqual(decide.from_first_bytes(b"\r\n  <?xml version='1.0'?><hello"), decide.NETCONF)
        self.assertIsNone(decide.from_first_bytes(b" \n"))
        self.assertRaises(ValueError, decide.from_first_bytes, b"HTTP/1.1 200 OK\r\n")
