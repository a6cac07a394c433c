"""
The chain OpenSSL verified in the handshake (TLS client role) is taken as
is; anything else is verified after the handshake as before, so every
refusal keeps its reason.  Over real loopback connections, as in
tests/test_tls_handler.py.
"""

from __future__ import annotations

import dataclasses
import os
import random

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from callhome_mux.inventory.model import Device, normalise_tls_fingerprint
from callhome_mux.settings import ConfigError
from callhome_mux.testing.certs import test_pki
from callhome_mux.tls import verify
from tests.test_tls_handler import CLIENT_HELLO, SILENT, Manager, device_with


class CountingStoreContexts:
    """Counts the chains verified after the handshake (C{crypto.X509StoreContext} in the verifier)."""

    def __init__(self, case: TestCase):
        self.count = 0
        original = verify.crypto.X509StoreContext

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        case.patch(verify.crypto, "X509StoreContext", counted)


class HandshakeChainTests(TestCase):
    @defer.inlineCallbacks
    def accepted(self, kind, issued, device_id, devices=()):
        manager = Manager(self, kind, devices)
        checks = CountingStoreContexts(self)
        yield manager.call_home(self, device_with(issued), "silent" if kind is SILENT else "client-hello")
        session = yield manager.registry.whenConnected(device_id)
        self.assertEqual(session.details["certificate_fingerprint"], issued.fingerprint)
        return manager, checks

    @defer.inlineCallbacks
    def refused(self, manager, issued, direction="silent"):
        checks = CountingStoreContexts(self)
        yield manager.call_home(self, device_with(issued), direction)
        refusal = yield manager.log.when("tls.certificate.refused")
        return refusal, checks

    @defer.inlineCallbacks
    def test_silent_chain_verified_once(self):
        """As TLS client, a chain OpenSSL verified in the handshake is not verified again."""
        _, checks = yield self.accepted(SILENT, test_pki().device, "device1.example.net")
        self.assertEqual(checks.count, 0)

    @defer.inlineCallbacks
    def test_silent_chain_through_intermediate(self):
        """The device's sub-CA, sent in the handshake, is part of the chain OpenSSL verified."""
        pki = test_pki()
        _, checks = yield self.accepted(
            SILENT, pki.device_via_intermediate, "device2.example.net", [Device("device2.example.net")]
        )
        self.assertEqual(checks.count, 0)

    @defer.inlineCallbacks
    def test_client_hello_chain_verified_once(self):
        """As TLS server too (its verify callback accepting), a chain OpenSSL verified without error is not verified again."""
        _, checks = yield self.accepted(CLIENT_HELLO, test_pki().device, "device1.example.net")
        self.assertEqual(checks.count, 0)

    @defer.inlineCallbacks
    def refusals(self, kind):
        """Each refused certificate's reason, and whether its chain was verified after the handshake."""
        pki = test_pki()
        outcomes = []
        for issued, reason in (
            (pki.wrong_ca, verify.UNTRUSTED_CHAIN),
            (pki.self_signed, verify.UNTRUSTED_CHAIN),
            (pki.expired, verify.EXPIRED),
            (pki.not_yet_valid, verify.NOT_YET_VALID),
            (pki.email_only, verify.KEY_USAGE),
        ):
            manager = Manager(self, kind, [Device("device1.example.net"), Device("device-email.example.net")])
            refusal, checks = yield self.refused(manager, issued, "silent" if kind is SILENT else "client-hello")
            self.assertEqual((refusal["reason"], refusal["fingerprint"]), (reason, issued.fingerprint))
            outcomes.append((reason, checks.count))
        return outcomes

    @defer.inlineCallbacks
    def test_client_hello_refusals_keep_their_reasons(self):
        """
        pyOpenSSL reports X509_V_OK for a chain whose errors the verify
        callback accepted: such a chain is verified again after the
        handshake, and refused for its own reason.
        """
        outcomes = yield self.refusals(CLIENT_HELLO)
        # (The dates are checked before the chain.)
        self.assertEqual([count for reason, count in outcomes if reason in (verify.UNTRUSTED_CHAIN, verify.KEY_USAGE)], [1, 1, 1])

    @defer.inlineCallbacks
    def test_silent_refusals_keep_their_reasons(self):
        """A chain OpenSSL did not accept is checked again after the handshake, for the same reason as ever."""
        outcomes = yield self.refusals(SILENT)
        # The email-only certificate's chain is fine: OpenSSL refused its
        # purpose (serverAuth), and the verifier names the key usage.
        self.assertEqual(outcomes[-1], (verify.KEY_USAGE, 1))

    @defer.inlineCallbacks
    def test_silent_revoked(self):
        """CRLs are still ours to check: a chain verified in the handshake can be revoked."""
        manager = Manager(self, SILENT, [Device("device-revoked.example.net")])
        refusal, checks = yield self.refused(manager, test_pki().revoked)
        self.assertEqual(refusal["reason"], verify.REVOKED)
        self.assertEqual(checks.count, 0)

    @defer.inlineCallbacks
    def test_reloaded_trust_used_in_the_next_handshake(self):
        """After reloadTrust the handshakes verify with the new anchors, the old ones no longer count."""
        pki = test_pki()
        manager = Manager(self, SILENT)
        path = os.path.join(os.path.dirname(manager.paths["ca.crt"]), "other-ca.crt")
        with open(path, "wb") as handle:
            handle.write(pki.other_ca.certificate_pem)
        manager.handler.settings = dataclasses.replace(manager.handler.settings, trust_anchor_files=(path,))
        manager.handler.verifier.rules = (verify.CertToNameRule(pki.other_ca.fingerprint, "common-name"),)
        manager.handler.reloadTrust()
        refusal, checks = yield self.refused(manager, pki.device)
        self.assertEqual(refusal["reason"], verify.UNTRUSTED_CHAIN)
        self.assertEqual(checks.count, 1)
        checks = CountingStoreContexts(self)
        manager.handler.directory.replace([Device("device1")])
        yield manager.call_home(self, device_with(pki.wrong_ca), "silent")
        session = yield manager.registry.whenConnected("device1")
        self.assertEqual(session.details["certificate_fingerprint"], pki.wrong_ca.fingerprint)
        self.assertEqual(checks.count, 0)

    def test_injected_clock_verifies_after(self):
        """A verifier with its own clock (tests) never takes OpenSSL's verdict, which used the real time."""
        verifier = verify.CertificateVerifier(verify.TrustStore((test_pki().ca.certificate,)), (), None, now=lambda: None)
        self.assertTrue(verifier._injected_clock)
        self.assertIsNone(verifier._chain_verified_in_handshake(None, None))


class FingerprintNormalisationTests(TestCase):
    """normalise_tls_fingerprint's hex check (str.strip) against the character-by-character one it replaced."""

    def old(self, text):
        value = text.strip()
        if ":" in value and value.split(":", 1)[0].lower() in ("sha256", "sha-256"):
            value = value.split(":", 1)[1]
        hexdigits = value.replace(":", "").lower()
        if len(hexdigits) == 66 and hexdigits.startswith("04"):
            hexdigits = hexdigits[2:]
        if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
            return None
        return f"sha256:{hexdigits}"

    def new(self, text):
        try:
            return normalise_tls_fingerprint(text)
        except ConfigError:
            return None

    def test_same_verdicts(self):
        rng = random.Random(7)
        alphabet = "0123456789abcdefABCDEF:gxz -\u0660\u00e9\t"
        samples = ["sha256:" + "a" * 64, "04:" + ":".join(["AB"] * 32), "a" * 63 + "g", " " + "0" * 64 + " ", "0" * 64 + "\u0660"]
        for _ in range(3000):
            length = rng.choice((62, 63, 64, 65, 66, 95, 96, 97))
            samples.append("".join(rng.choice("0123456789abcdef") for _ in range(length)))
            text = list("".join(rng.choice("0123456789abcdef") for _ in range(64)))
            text[rng.randrange(64)] = rng.choice(alphabet)
            samples.append(rng.choice(("", "sha256:", "SHA-256:", "04")) + "".join(text))
        for sample in samples:
            self.assertEqual(self.new(sample), self.old(sample), sample)


class AnchorFactsTests(TestCase):
    def test_anchor_not_dumped_per_connection(self):
        """A chain ending in a configured anchor reuses the anchor's facts: no DER dump of it per connection."""
        pki = test_pki()
        checker = verify.CertificateVerifier(
            verify.TrustStore((pki.ca.certificate,)), [verify.CertToNameRule(pki.ca.fingerprint)], verify.DeviceDirectory([Device("device1.example.net")])
        )
        first = checker.verify(pki.device.certificate)
        dumps = []
        original = verify.crypto.dump_certificate

        def counted(*args):
            dumps.append(args)
            return original(*args)

        self.patch(verify.crypto, "dump_certificate", counted)
        again = checker.verify(pki.device.certificate)
        self.assertEqual(dumps, [])
        self.assertEqual(again.chain, first.chain)
        self.assertEqual(again.chain[-1], pki.ca.certificate)
        self.assertEqual(again.chain_facts[-1].fingerprint, pki.ca.fingerprint)

    def test_anchors_follow_reloaded_trust(self):
        """After a trust change the anchors' facts are those of the new anchors."""
        pki = test_pki()
        checker = verify.CertificateVerifier(
            verify.TrustStore((pki.ca.certificate,)), [verify.CertToNameRule(pki.other_ca.fingerprint, "common-name")],
            verify.DeviceDirectory([Device("device1")]),
        )
        with self.assertRaises(verify.CertificateRefused):
            checker.verify(pki.wrong_ca.certificate)
        checker.trust = verify.TrustStore((pki.other_ca.certificate,))
        result = checker.verify(pki.wrong_ca.certificate)
        self.assertEqual(result.chain_facts[-1].fingerprint, pki.other_ca.fingerprint)


class WrapperTests(TestCase):
    @defer.inlineCallbacks
    def test_no_python_certificate_object_per_silent_connection(self):
        """
        The leaf, its entry in the peer chain and the verified chain (leaf,
        anchor) are looked at as OpenSSL pointers (the leaf's DER dumped
        from its pointer): no pyOpenSSL X509 is made while verifying a
        directly issued device.
        """
        from OpenSSL import crypto

        made, inside = [], []
        original_wrap = crypto.X509._from_raw_x509_ptr.__func__
        original_verify = verify.CertificateVerifier.verify_connection

        def counted(cls, pointer):
            if inside:
                made.append(pointer)
            return original_wrap(cls, pointer)

        def verifying(self, *args, **kwargs):
            inside.append(True)
            try:
                return original_verify(self, *args, **kwargs)
            finally:
                inside.pop()

        self.patch(crypto.X509, "_from_raw_x509_ptr", classmethod(counted))
        self.patch(verify.CertificateVerifier, "verify_connection", verifying)
        manager = Manager(self, SILENT)
        # Without trust anchors of its own the device sends its certificate
        # alone (OpenSSL otherwise completes the chain it sends from them).
        yield manager.call_home(self, device_with(test_pki().device, trust_anchors=[]), "silent")
        yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(made, [])


class DerTests(TestCase):
    def test_der_of_a_pointer_is_pyopenssls_dump(self):
        from OpenSSL import crypto

        for issued in test_pki().issued().values():
            certificate = crypto.X509.from_cryptography(issued.certificate)
            self.assertEqual(verify._der_of(certificate._x509), crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate))


class OurChainTests(TestCase):
    @defer.inlineCallbacks
    def test_we_send_our_certificate_alone(self):
        """
        The device anchors in the client context's store do not make OpenSSL
        build and send a chain for our own certificate (issued here by one of
        them): we send what the certificate file holds, as before, and build
        no chain for it per handshake.
        """
        manager = Manager(self, SILENT)
        device = device_with(test_pki().device)
        yield manager.call_home(self, device, "silent")
        yield manager.registry.whenConnected("device1.example.net")
        handle = device.protocols[0].transport.getHandle()
        # As TLS server OpenSSL lists what the client sent after its certificate.
        self.assertEqual(handle.get_peer_cert_chain() or [], [])
        self.assertEqual(handle.get_peer_certificate().to_cryptography(), test_pki().manager.certificate)
