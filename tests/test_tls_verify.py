"""
The certificate checks and RFC 7589 cert-to-name, without sockets.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import TestCase

from callhome_mux.inventory.model import CertToNameRule, Device, DeviceDirectory
from callhome_mux.testing.certs import test_pki
from callhome_mux.tls import verify
from callhome_mux.tls.certname import map_certificate, name_for
from callhome_mux.tls.facts import FactsCache
from callhome_mux.tls.trust import TrustStore
from callhome_mux.tls.verify import CertificateRefused, CertificateVerifier


def verifier(devices=(), rules=None, crls=True, anchors=None, policy=verify.refuse_unknown_devices, now=None):
    pki = test_pki()
    if rules is None:
        rules = [CertToNameRule(pki.ca.fingerprint, "san-dns-name")]
    trust = TrustStore(tuple(anchors if anchors is not None else [pki.ca.certificate]), (pki.crl,) if crls else ())
    options = {"now": now} if now is not None else {}
    return CertificateVerifier(trust, rules, DeviceDirectory(list(devices)), policy, **options)


class RefusalTests(TestCase):
    """Every refusal names its reason, the fingerprint and the subject."""

    def assertRefused(self, checker, issued, reason, role=verify.PEER_IS_CLIENT):
        with self.assertRaises(CertificateRefused) as caught:
            checker.verify(issued.certificate if issued is not None else None, issued.intermediates if issued else (), role)
        self.assertEqual(caught.exception.reason, reason, caught.exception.detail)
        if issued is not None:
            self.assertEqual(caught.exception.fingerprint, issued.fingerprint)
            self.assertEqual(caught.exception.subject, issued.certificate.subject.rfc4514_string())
        return caught.exception

    def test_no_certificate(self):
        self.assertRefused(verifier(), None, verify.NO_CERTIFICATE)

    def test_expired(self):
        self.assertRefused(verifier([Device("device-expired.example.net")]), test_pki().expired, verify.EXPIRED)

    def test_not_yet_valid(self):
        self.assertRefused(verifier([Device("device-future.example.net")]), test_pki().not_yet_valid, verify.NOT_YET_VALID)

    def test_wrong_ca(self):
        refusal = self.assertRefused(verifier([Device("device1.example.net")]), test_pki().wrong_ca, verify.UNTRUSTED_CHAIN)
        self.assertIn("issuer", refusal.detail)

    def test_self_signed_unpinned(self):
        self.assertRefused(verifier(), test_pki().self_signed, verify.UNTRUSTED_CHAIN)

    def test_no_anchors_configured(self):
        refusal = self.assertRefused(verifier(anchors=[]), test_pki().device, verify.UNTRUSTED_CHAIN)
        self.assertIn("no trust anchors", refusal.detail)

    def test_revoked_by_crl(self):
        self.assertRefused(verifier([Device("device-revoked.example.net")]), test_pki().revoked, verify.REVOKED)

    def test_revoked_without_crl_is_accepted(self):
        """Revocation is only known from configured CRLs."""
        result = verifier([Device("device-revoked.example.net")], crls=False).verify(test_pki().revoked.certificate)
        self.assertEqual(result.device_id, "device-revoked.example.net")

    def test_wrong_extended_key_usage(self):
        self.assertRefused(verifier([Device("device-email.example.net")]), test_pki().email_only, verify.KEY_USAGE)

    def test_ca_certificate_as_device(self):
        self.assertRefused(verifier(), test_pki().intermediate, verify.KEY_USAGE)

    def test_unknown_device(self):
        refusal = self.assertRefused(verifier([Device("someone-else")]), test_pki().device, verify.UNKNOWN_DEVICE)
        self.assertIn("device1.example.net", refusal.detail)

    def test_no_rule_matches(self):
        checker = verifier([Device("device1.example.net")], rules=[CertToNameRule(test_pki().other_ca.fingerprint)])
        refusal = self.assertRefused(checker, test_pki().device, verify.UNKNOWN_DEVICE)
        self.assertIn("no cert-to-name rule", refusal.detail)

    def test_disabled_device(self):
        self.assertRefused(verifier([Device("device1.example.net", enabled=False)]), test_pki().device, verify.DEVICE_DISABLED)

    def test_expected_identity_mismatch(self):
        pki = test_pki()
        device = Device("device3", tls_expected_identity="dns:device3.example.net")
        checker = verifier([device], rules=[CertToNameRule(pki.ca.fingerprint, "common-name")])
        self.assertRefused(checker, pki.wrong_name, verify.IDENTITY_MISMATCH)

    def test_checked_after_expiry(self):
        """The verification time is injectable: a certificate checked after its end is expired."""
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=20 * 365)
        self.assertRefused(verifier([Device("device1.example.net")], now=lambda: later), test_pki().device, verify.EXPIRED)


class AcceptTests(TestCase):
    def test_chain_and_cert_to_name(self):
        result = verifier([Device("device1.example.net")]).verify(test_pki().device.certificate, (), verify.PEER_IS_SERVER)
        self.assertEqual(result.device_id, "device1.example.net")
        self.assertEqual(result.matched_by, "cert-to-name:san-dns-name")
        self.assertEqual(result.fingerprint, test_pki().device.fingerprint)
        self.assertEqual(result.chain[-1], test_pki().ca.certificate)

    def test_chain_through_intermediate(self):
        pki = test_pki()
        result = verifier([Device("device2.example.net")]).verify(
            pki.device_via_intermediate.certificate, pki.device_via_intermediate.intermediates
        )
        self.assertEqual(result.device_id, "device2.example.net")
        self.assertEqual(len(result.chain), 3)

    def test_intermediate_missing(self):
        with self.assertRaises(CertificateRefused) as caught:
            verifier([Device("device2.example.net")]).verify(test_pki().device_via_intermediate.certificate)
        self.assertEqual(caught.exception.reason, verify.UNTRUSTED_CHAIN)

    def test_intermediate_as_anchor(self):
        """A sub-CA may be configured as the anchor without its root (partial chain)."""
        pki = test_pki()
        checker = verifier(
            [Device("device2.example.net")],
            anchors=[pki.intermediate.certificate],
            rules=[CertToNameRule(pki.intermediate.fingerprint, "san-dns-name")],
        )
        self.assertEqual(checker.verify(pki.device_via_intermediate.certificate).device_id, "device2.example.net")

    def test_pinned_self_signed(self):
        pki = test_pki()
        device = Device("pinned-router", tls_fingerprints=(pki.self_signed.fingerprint,))
        result = verifier([device]).verify(pki.self_signed.certificate)
        self.assertEqual((result.device_id, result.matched_by), ("pinned-router", "pinned-fingerprint"))

    def test_pinned_without_anchors(self):
        pki = test_pki()
        device = Device("pinned-router", tls_fingerprints=(pki.wrong_ca.fingerprint,))
        self.assertEqual(verifier([device], anchors=[]).verify(pki.wrong_ca.certificate).device_id, "pinned-router")

    def test_pinned_but_revoked(self):
        """A pin does not override a CRL that lists the certificate."""
        pki = test_pki()
        device = Device("pinned-router", tls_fingerprints=(pki.revoked.fingerprint,))
        with self.assertRaises(CertificateRefused) as caught:
            verifier([device]).verify(pki.revoked.certificate)
        self.assertEqual(caught.exception.reason, verify.REVOKED)

    def test_pinned_but_expired(self):
        pki = test_pki()
        device = Device("pinned-router", tls_fingerprints=(pki.expired.fingerprint,))
        with self.assertRaises(CertificateRefused) as caught:
            verifier([device]).verify(pki.expired.certificate)
        self.assertEqual(caught.exception.reason, verify.EXPIRED)

    def test_idevid_serial_number(self):
        pki = test_pki()
        checker = verifier([Device("PID:ER-1 SN:FOC12345678")], rules=[CertToNameRule(pki.ca.fingerprint, "serial-number")])
        result = checker.verify(pki.idevid.certificate)
        self.assertEqual((result.device_id, result.matched_by), ("PID:ER-1 SN:FOC12345678", "cert-to-name:serial-number"))

    def test_expected_identity_matches(self):
        for identity in ("dns:device1.example.net", "ip:192.0.2.10"):
            device = Device("device1.example.net", tls_expected_identity=identity)
            self.assertEqual(verifier([device]).verify(test_pki().device.certificate).device_id, "device1.example.net")

    def test_expected_identity_ip_mismatch(self):
        device = Device("device1.example.net", tls_expected_identity="ip:192.0.2.99")
        with self.assertRaises(CertificateRefused) as caught:
            verifier([device]).verify(test_pki().device.certificate)
        self.assertEqual(caught.exception.reason, verify.IDENTITY_MISMATCH)

    def test_expected_identity_unusable(self):
        device = Device("device1.example.net", tls_expected_identity="email:ops@example.net")
        with self.assertRaises(CertificateRefused) as caught:
            verifier([device]).verify(test_pki().device.certificate)
        self.assertEqual(caught.exception.reason, verify.IDENTITY_MISMATCH)

    def test_unknown_device_policy_admits(self):
        """The policy sees the candidate (fingerprint, subject, mapped id) and may admit it."""
        seen = []

        def admit(candidate):
            seen.append(candidate)
            return Device(candidate.mapped_id)

        result = verifier(policy=admit).verify(test_pki().device.certificate, peer="192.0.2.10:4334")
        self.assertEqual((result.device_id, result.matched_by), ("device1.example.net", "policy"))
        self.assertEqual(seen[0].fingerprint, test_pki().device.fingerprint)
        self.assertEqual(seen[0].peer, "192.0.2.10:4334")

    def test_unknown_device_policy_not_asked_for_untrusted(self):
        asked = []
        checker = verifier(policy=lambda candidate: asked.append(candidate))
        self.assertRaises(CertificateRefused, checker.verify, test_pki().wrong_ca.certificate)
        self.assertEqual(asked, [])

    def test_server_role_needs_server_auth(self):
        pki = test_pki()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        client_only = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "client-only")]))
            .issuer_name(pki.ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(pki.ca.key, hashes.SHA256())
        )
        checker = verifier([Device("client-only")], rules=[CertToNameRule(pki.ca.fingerprint, "common-name")])
        self.assertEqual(checker.verify(client_only, (), verify.PEER_IS_CLIENT).device_id, "client-only")
        with self.assertRaises(CertificateRefused) as caught:
            checker.verify(client_only, (), verify.PEER_IS_SERVER)
        self.assertEqual(caught.exception.reason, verify.KEY_USAGE)


class FactsCacheTests(TestCase):
    """Facts are parsed once per certificate; every decision is still made per connection."""

    def test_bounded_least_recently_used(self):
        pki = test_pki()
        cache = FactsCache(size=2)
        first = cache.for_certificate(pki.device.certificate)
        cache.for_certificate(pki.ca.certificate)
        self.assertIs(cache.for_certificate(pki.device.certificate), first)  # now the most recent
        cache.for_certificate(pki.idevid.certificate)  # evicts the CA, not the device
        self.assertEqual(len(cache), 2)
        self.assertIs(cache.for_certificate(pki.device.certificate), first)
        self.assertEqual(cache.for_der(pki.device.certificate.public_bytes(Encoding.DER)).fingerprint, pki.device.fingerprint)

    def test_reused_between_verifications(self):
        checker = verifier([Device("device1.example.net")])
        checker.verify(test_pki().device.certificate)
        facts = checker.facts.for_certificate(test_pki().device.certificate)
        checker.verify(test_pki().device.certificate)
        self.assertIs(checker.facts.for_certificate(test_pki().device.certificate), facts)

    def test_dates_checked_at_every_verification(self):
        now = [datetime.datetime.now(datetime.timezone.utc)]
        checker = verifier([Device("device1.example.net")], now=lambda: now[0])
        self.assertEqual(checker.verify(test_pki().device.certificate).device_id, "device1.example.net")
        now[0] += datetime.timedelta(days=20 * 365)
        with self.assertRaises(CertificateRefused) as caught:
            checker.verify(test_pki().device.certificate)
        self.assertEqual(caught.exception.reason, verify.EXPIRED)

    def test_new_trust_store_new_crl_verdicts(self):
        """CRL signature verdicts are kept per trust store: a reload (new CRLs) decides again."""
        pki = test_pki()
        checker = verifier([Device("device-revoked.example.net")])
        self.assertRaises(CertificateRefused, checker.verify, pki.revoked.certificate)
        checker.trust = TrustStore((pki.ca.certificate,), ())
        self.assertEqual(checker.verify(pki.revoked.certificate).device_id, "device-revoked.example.net")
        checker.trust = TrustStore((pki.ca.certificate,), (pki.crl,))
        with self.assertRaises(CertificateRefused) as caught:
            checker.verify(pki.revoked.certificate)
        self.assertEqual(caught.exception.reason, verify.REVOKED)

    def test_crl_from_another_issuer_is_not_trusted(self):
        """A CRL signed by someone else (same issuer name) revokes nothing, however often asked."""
        pki = test_pki()
        now = datetime.datetime.now(datetime.timezone.utc)
        forged = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(pki.ca.certificate.subject)
            .last_update(now - datetime.timedelta(days=1))
            .next_update(now + datetime.timedelta(days=1))
            .add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(pki.device.certificate.serial_number).revocation_date(now).build()
            )
            .sign(pki.other_ca.key, hashes.SHA256())
        )
        checker = verifier([Device("device1.example.net")], crls=False)
        checker.trust = TrustStore((pki.ca.certificate,), (forged,))
        for _ in range(2):
            self.assertEqual(checker.verify(pki.device.certificate).device_id, "device1.example.net")


    def test_usage_verdicts_for_both_roles_from_one_lookup_each(self):
        """Both roles' key-usage verdicts are read at once (each extension looked up once), same verdicts as one by one."""
        from cryptography.x509.oid import ExtendedKeyUsageOID

        from callhome_mux.testing.certs import _leaf
        from callhome_mux.tls import facts as facts_module

        pki = test_pki()
        server_only = _leaf("server_only", "device-server", pki.ca, usages=[ExtendedKeyUsageOID.SERVER_AUTH])
        certificates = [pki.device, pki.email_only, pki.intermediate, pki.ca, pki.idevid, server_only]
        seen = {}
        for issued in certificates:
            problems = facts_module._usage_problems(issued.certificate)
            self.assertEqual(
                problems, {role: facts_module._usage_problem(issued.certificate, role) for role in problems}, issued.name
            )
            seen[issued.name] = problems
        self.assertEqual(set(seen["device"].values()), {None})
        self.assertIn("TLS client", seen["server_only"][verify.PEER_IS_CLIENT])
        self.assertIsNone(seen["server_only"][verify.PEER_IS_SERVER])
        self.assertIn("key usage allows neither", seen["intermediate"][verify.PEER_IS_CLIENT])
        self.assertIn("extended key usage", seen["email_only"][verify.PEER_IS_SERVER])

        # Both verdicts come from one pass over the extensions (once, not
        # once per role; and no get_extension_for_class, a pass of its own).
        lookups, passes = [], []
        original_lookup, original_iter = x509.Extensions.get_extension_for_class, x509.Extensions.__iter__

        def counted(extensions, kind):
            lookups.append(kind)
            return original_lookup(extensions, kind)

        def iterated(extensions):
            passes.append(extensions)
            return original_iter(extensions)

        self.patch(x509.Extensions, "get_extension_for_class", counted)
        self.patch(x509.Extensions, "__iter__", iterated)
        FactsCache().for_certificate(server_only.certificate)
        self.assertEqual((lookups, len(passes)), ([], 1))


class CertToNameTests(TestCase):
    def rule(self, map_type, **options):
        return CertToNameRule(test_pki().ca.fingerprint, map_type, **options)

    def test_map_types(self):
        device = test_pki().device.certificate
        expected = {
            "san-dns-name": "device1.example.net",
            "san-ip-address": "192.0.2.10",
            "san-rfc822-name": "ops@device1.example.net",
            "san-any": "device1.example.net",
            "common-name": "device1",
        }
        for map_type, name in expected.items():
            self.assertEqual(name_for(self.rule(map_type), device), name, map_type)
        self.assertEqual(name_for(self.rule("specified", name="router-7"), device), "router-7")
        self.assertIsNone(name_for(self.rule("serial-number"), device))

    def test_serial_number(self):
        self.assertEqual(name_for(self.rule("serial-number"), test_pki().idevid.certificate), "PID:ER-1 SN:FOC12345678")

    def test_ipv6_is_32_hex_digits(self):
        pki = test_pki()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(pki.ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("2001:db8::1"))]), critical=False)
            .sign(pki.ca.key, hashes.SHA256())
        )
        self.assertEqual(name_for(self.rule("san-ip-address"), certificate), "20010db8000000000000000000000001")

    def test_priority_and_fallthrough(self):
        """Lower priority first; a rule that yields no name passes to the next."""
        pki = test_pki()
        rules = [
            CertToNameRule(pki.ca.fingerprint, "common-name", priority=20),
            CertToNameRule(pki.ca.fingerprint, "serial-number", priority=5),
            CertToNameRule(pki.other_ca.fingerprint, "specified", name="never", priority=1),
        ]
        leaf = pki.device.certificate
        name, rule = map_certificate(rules, leaf, [leaf, pki.ca.certificate])
        self.assertEqual((name, rule.priority), ("device1", 20))
        name, rule = map_certificate(rules, pki.idevid.certificate, [pki.idevid.certificate, pki.ca.certificate])
        self.assertEqual((name, rule.priority), ("PID:ER-1 SN:FOC12345678", 5))

    def test_leaf_fingerprint_rule(self):
        pki = test_pki()
        rule = CertToNameRule(pki.device.fingerprint, "specified", name="by-leaf")
        self.assertEqual(map_certificate([rule], pki.device.certificate, [])[0], "by-leaf")

    def test_no_match(self):
        pki = test_pki()
        self.assertIsNone(map_certificate([CertToNameRule(pki.other_ca.fingerprint)], pki.device.certificate, []))


class SubjectReadingTests(TestCase):
    """
    The subject string and the cert-to-name names read straight from the DER
    are exactly cryptography's; what that reading does not handle goes to
    cryptography.
    """

    def certificate(self, subject: x509.Name) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "issuer")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )

    def check(self, subject: x509.Name, read_directly: bool) -> None:
        from callhome_mux.tls import facts as facts_module
        from callhome_mux.tls.certname import attribute_of

        certificate = self.certificate(subject)
        der = certificate.public_bytes(Encoding.DER)
        self.assertEqual(facts_module._read_subject(der) is not None, read_directly, subject)
        from OpenSSL import crypto

        from callhome_mux.tls.verify import _subject_der_of

        pointer = crypto.X509.from_cryptography(certificate)._x509
        for subject_der in (None, lambda: _subject_der_of(pointer)):
            facts = facts_module.CertificateFacts(der, "sha256:x", subject_der)
            self.assertEqual(facts.subject, certificate.subject.rfc4514_string())
            for map_type, oid in (("common-name", x509.NameOID.COMMON_NAME), ("serial-number", x509.NameOID.SERIAL_NUMBER)):
                rule = CertToNameRule("sha256:" + "ab" * 32, map_type)
                self.assertEqual(facts.name(rule), attribute_of(certificate.subject, oid), map_type)

    def test_subject_from_openssl_as_from_the_der(self):
        """
        The subject Name's DER as OpenSSL keeps it (what a handshake's peer
        certificate is read with) is the certificate's own subject bytes,
        and reads to the same facts; an unreadable one goes to cryptography.
        """
        from OpenSSL import crypto

        from callhome_mux.tls import facts as facts_module
        from callhome_mux.tls import verify as verify_module

        self.assertTrue(verify_module._NAME_BINDINGS)
        for issued in test_pki().issued().values():
            certificate = issued.certificate
            der = certificate.public_bytes(Encoding.DER)
            pointer = crypto.X509.from_cryptography(certificate)._x509
            name_der = verify_module._subject_der_of(pointer)
            self.assertEqual(name_der, certificate.subject.public_bytes())
            self.assertEqual(facts_module._read_name_der(name_der), facts_module._read_subject(der))
            facts = facts_module.CertificateFacts(der, "sha256:x", lambda: name_der)
            self.assertEqual(facts.subject, certificate.subject.rfc4514_string())
            broken = facts_module.CertificateFacts(der, "sha256:x", lambda: b"")
            self.assertEqual(broken.subject, facts.subject)
        for malformed in (b"", b"\x30", b"\x31\x00", b"\x30\x05\x31\x03", b"\x30\x80", b"\x30\x81\x01\x00"):
            self.assertIsNone(facts_module._read_name_der(malformed), malformed)

    def test_subject_walk_as_before(self):
        """
        The subject read with the walk in one loop (_subject_bounds) against
        the walk of one call per element it replaced, on real certificates
        and on 4000 with random bytes changed before and in the subject.
        """
        import random

        from callhome_mux.tls import facts as facts_module

        def tlv(der, position, end):
            if position + 2 > end:
                raise ValueError("truncated")
            tag = der[position]
            length = der[position + 1]
            position += 2
            if length & 0x80:
                count = length & 0x7F
                if count == 0 or count > 4 or position + count > end:
                    raise ValueError("bad length")
                length = int.from_bytes(der[position : position + count], "big")
                position += count
            if position + length > end:
                raise ValueError("truncated")
            return tag, position, position + length

        def before(der):
            try:
                _, position, end = tlv(der, 0, len(der))
                _, position, end = tlv(der, position, end)
                tag, start, stop = tlv(der, position, end)
                if tag == 0xA0:
                    tag, start, stop = tlv(der, stop, end)
                for _ in range(4):
                    tag, start, stop = tlv(der, stop, end)
            except (ValueError, IndexError):
                return None
            return (start, stop) if tag == 0x30 else None

        sources = [issued.certificate.public_bytes(Encoding.DER) for issued in test_pki().issued().values()]
        for der in sources:
            self.assertIsNotNone(facts_module._subject_bounds(der))
            self.assertEqual(facts_module._subject_bounds(der), before(der))
        rng = random.Random(7589)
        values = (0x00, 0x01, 0x02, 0x04, 0x30, 0x31, 0x7F, 0x80, 0x81, 0x82, 0x84, 0x85, 0xA0, 0xFF)
        for _ in range(4000):
            der = bytearray(rng.choice(sources))
            stop = before(bytes(der))[1]
            for _ in range(rng.choice((1, 1, 2, 3))):
                position = rng.randrange(0, stop)
                der[position] = rng.choice(values + (der[position] ^ 1,))
            der = bytes(der[: rng.choice((len(der), len(der), rng.randrange(1, len(der))))])
            self.assertEqual(facts_module._subject_bounds(der), before(der), der.hex())

    def test_shared_rdns_read_once(self):
        """
        An RDN seen before (not a commonName or serialNumber: those differ
        per device) is taken from _RDNS, with the same answers as a first
        reading, for Names and certificates with random bytes changed or cut
        (an RDN that would run past its Name's end is still refused).
        """
        import random

        from callhome_mux.tls import facts as facts_module

        saved = dict(facts_module._RDNS)
        self.addCleanup(lambda: (facts_module._RDNS.clear(), facts_module._RDNS.update(saved)))
        facts_module._RDNS.clear()
        attribute, oid = x509.NameAttribute, x509.NameOID
        names = [
            x509.Name(
                [
                    attribute(oid.COUNTRY_NAME, "DE"),
                    attribute(oid.ORGANIZATION_NAME, "acme"),
                    attribute(oid.ORGANIZATIONAL_UNIT_NAME, f"unit {index % 2}"),
                    attribute(oid.COMMON_NAME, f"router-{index}"),
                    attribute(oid.SERIAL_NUMBER, f"SN{index}"),
                ]
            )
            for index in range(3)
        ]
        certificates = [self.certificate(name) for name in names]
        answers = [facts_module._read_name_der(name.public_bytes()) for name in names]
        self.assertEqual(len(facts_module._RDNS), 4)  # C, O and both units; no CN, no serial
        self.assertEqual(answers[2], (names[2].rfc4514_string(), "router-2", "SN2"))
        self.assertEqual([facts_module._read_name_der(name.public_bytes()) for name in names], answers)
        seeded = dict(facts_module._RDNS)

        def both(read, der):
            facts_module._RDNS.clear()
            first = read(der)
            facts_module._RDNS.clear()
            facts_module._RDNS.update(seeded)
            return first, read(der)

        sources = [(facts_module._read_name_der, name.public_bytes()) for name in names]
        sources += [(facts_module._read_subject, c.public_bytes(Encoding.DER)) for c in certificates]
        rng = random.Random(8071)
        values = (0x00, 0x01, 0x02, 0x03, 0x06, 0x0C, 0x13, 0x30, 0x31, 0x7F, 0x80, 0x81, 0xFF)
        for _ in range(3000):
            read, der = rng.choice(sources)
            der = bytearray(der)
            for _ in range(rng.choice((1, 1, 2))):
                position = rng.randrange(0, min(len(der), 160))
                der[position] = rng.choice(values + (der[position] ^ 1, der[position] + 1 & 0xFF))
            der = bytes(der[: rng.choice((len(der), len(der), rng.randrange(1, len(der))))])
            first, cached = both(read, der)
            self.assertEqual(cached, first, der.hex())

    def test_escaping_as_cryptography(self):
        """Every value of up to three characters from the ones RFC 4514 escapes (and others): cryptography's escaping."""
        import itertools

        from cryptography.x509.name import _escape_dn_value

        from callhome_mux.tls.facts import _escaped

        characters = ["a", "\\", '"', "+", ",", ";", "<", ">", "\x00", "#", " ", "\u00e9", "=", "\n"]
        for length in (1, 2, 3):
            for value in map("".join, itertools.product(characters, repeat=length)):
                self.assertEqual(_escaped(value), _escape_dn_value(value), repr(value))

    def test_plain_subjects_read_directly(self):
        attribute = x509.NameAttribute
        oid = x509.NameOID
        self.check(x509.Name([]), True)
        self.check(x509.Name([attribute(oid.ORGANIZATION_NAME, "acme"), attribute(oid.COMMON_NAME, "router-1")]), True)
        self.check(
            x509.Name(
                [
                    attribute(oid.COUNTRY_NAME, "DE"),
                    attribute(oid.COMMON_NAME, "first"),
                    attribute(oid.COMMON_NAME, "second"),
                    attribute(oid.SERIAL_NUMBER, "PID:ER-1 SN:FOC12345678"),
                    attribute(oid.SERIAL_NUMBER, "other"),
                    attribute(oid.DOMAIN_COMPONENT, "example"),
                    attribute(oid.EMAIL_ADDRESS, "ops@example.net"),
                    attribute(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "private"),
                    attribute(x509.ObjectIdentifier("2.999.1234567"), "big arc"),
                ]
            ),
            True,
        )

    def test_escaped_values_read_directly(self):
        for value in ('a,b+c;d<e>f"g\\h', "#hash", " leading", "trailing ", "nul\0byte", "umlaut ä 漢字"):
            self.check(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, value)]), True)

    def test_unusual_subjects_left_to_cryptography(self):
        from cryptography.x509.name import _ASN1Type

        oid = x509.NameOID
        multi_valued = x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [x509.NameAttribute(oid.COMMON_NAME, "a"), x509.NameAttribute(oid.SERIAL_NUMBER, "1")]
                )
            ]
        )
        self.check(multi_valued, False)
        self.check(x509.Name([x509.NameAttribute(oid.COMMON_NAME, "wide", _type=_ASN1Type.BMPString)]), False)
        self.check(x509.Name([x509.NameAttribute(oid.COMMON_NAME, "x" * 64), x509.NameAttribute(oid.SERIAL_NUMBER, "y" * 130)]), False)
        self.check(x509.Name([x509.NameAttribute(oid.X500_UNIQUE_IDENTIFIER, b"\x00\x01", _type=_ASN1Type.BitString)]), False)
