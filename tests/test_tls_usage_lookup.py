"""
The key-usage verdicts of a new certificate (facts._usage_problems: one pass
over cryptography's extensions by OID) against the reference
(facts._usage_problem: get_extension_for_class per role), on ordinary, odd
and broken certificates: the same verdicts, or the same refusal.
"""

from __future__ import annotations

import datetime
import ipaddress
import random

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import TestCase

from callhome_mux.testing.certs import test_pki
from callhome_mux.tls import facts

_KEY = ec.generate_private_key(ec.SECP256R1())


def _outcome(function, der: bytes):
    try:
        return function(x509.load_der_x509_certificate(der))
    except Exception as error:  # noqa: BLE001 - any refusal counts, compared by type and text
        return (type(error), str(error))


def _one_pass(certificate):
    return facts._usage_problems(certificate)


def _reference(certificate):
    return {role: facts._usage_problem(certificate, role) for role in facts._ROLE_USAGE}


def _oid_content(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def _element(der: bytes, position: int, end: int):
    tag = der[position]
    length = der[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[position : position + count], "big")
        position += count
    return tag, position, position + length


def _certificate(extensions, version_3=True) -> bytes:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd CA")]))
        .public_key(_KEY.public_key())
        .serial_number(12345)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _split(der: bytes):
    """(element, start, end) of the DER element at position, as lists of top-level children."""
    children = []
    position = 0
    while position < len(der):
        tag, start, end = _element(der, position, len(der))
        children.append((der[position:start], der[start:end]))
        position = end
    return children


def _with_raw_extensions(der: bytes, raw_extensions: bytes) -> bytes:
    """C{der} with its extensions ([3]) replaced by C{raw_extensions} (the SEQUENCE OF Extension content)."""
    (_, certificate), = _split(der)
    tbs, algorithm, signature = _split(certificate)
    fields = _split(tbs[1])
    fields = [f for f in fields if f[0][0] != 0xA3]
    body = b"".join(_tlv(f[0][0], f[1]) for f in fields) + _tlv(0xA3, _tlv(0x30, raw_extensions))
    return _tlv(0x30, _tlv(0x30, body) + _tlv(algorithm[0][0], algorithm[1]) + _tlv(signature[0][0], signature[1]))


def _extension(oid: str, value: bytes, critical: bytes = b"") -> bytes:
    return _tlv(0x30, _tlv(0x06, _oid_content(oid)) + critical + _tlv(0x04, value))


KU, EKU, BC, SKI, AKI, SAN = "2.5.29.15", "2.5.29.37", "2.5.29.19", "2.5.29.14", "2.5.29.35", "2.5.29.17"
SERVER = _tlv(0x06, _oid_content("1.3.6.1.5.5.7.3.1"))
CLIENT = _tlv(0x06, _oid_content("1.3.6.1.5.5.7.3.2"))


class OnePassAgreesTests(TestCase):
    def assertAgrees(self, der: bytes, read_expected=None):
        new, old = _outcome(_one_pass, der), _outcome(_reference, der)
        self.assertEqual(new, old)
        return new if isinstance(new, dict) else None

    def test_pki_certificates(self):
        """Every certificate of the test PKI."""
        for issued in test_pki().issued().values():
            self.assertAgrees(issued.certificate.public_bytes(Encoding.DER), read_expected=True)

    def test_built_variants(self):
        """Valid certificates with other extension values and combinations."""
        key_usages = [
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            x509.KeyUsage(False, True, True, False, False, False, False, False, False),
            x509.KeyUsage(False, False, False, False, True, False, False, True, False),
            x509.KeyUsage(False, False, False, False, True, False, False, False, True),
            x509.KeyUsage(False, False, False, False, True, False, False, True, True),
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            x509.KeyUsage(True, False, False, False, False, True, False, False, False),
            x509.KeyUsage(False, False, False, True, False, False, False, False, False),
        ]
        usages = [
            [ExtendedKeyUsageOID.SERVER_AUTH],
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING],
            [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
            [ExtendedKeyUsageOID.SMARTCARD_LOGON, ExtendedKeyUsageOID.CLIENT_AUTH],
            [x509.ObjectIdentifier("1.2.3.4.5")],
        ]
        others = [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.BasicConstraints(ca=True, path_length=200), True),
            (x509.BasicConstraints(ca=False, path_length=None), False),
            (x509.SubjectKeyIdentifier.from_public_key(_KEY.public_key()), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(_KEY.public_key()), False),
            (x509.AuthorityKeyIdentifier(b"k", [x509.DNSName("ca.example")], 7), False),
            (x509.SubjectAlternativeName([x509.DNSName("a.example"), x509.RFC822Name("x@a.example")]), False),
            (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:x")]), False),
            (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("2001:db8::1"))]), True),
            (x509.OCSPNoCheck(), False),
        ]
        read = 0
        for ku in key_usages + [None]:
            for eku in usages + [None]:
                for other in others:
                    extensions = [other]
                    if ku is not None:
                        extensions.append((ku, True))
                    if eku is not None:
                        extensions.append((x509.ExtendedKeyUsage(eku), False))
                    read += self.assertAgrees(_certificate(extensions)) is not None
        self.assertGreater(read, 100)
        self.assertAgrees(_certificate([]), read_expected=True)

    def test_crafted_encodings(self):
        """Encodings cryptography refuses or that are unusual: the same refusal or the same verdicts."""
        base = test_pki().device.certificate.public_bytes(Encoding.DER)
        ku = _tlv(0x03, b"\x07\x80")
        cases = {
            "plain": ([_extension(KU, ku)], True),
            "critical TRUE": ([_extension(KU, ku, b"\x01\x01\xff")], True),
            "critical FALSE encoded": ([_extension(KU, ku, b"\x01\x01\x00")], False),
            "critical not DER TRUE": ([_extension(KU, ku, b"\x01\x01\x01")], False),
            "duplicate": ([_extension(KU, ku), _extension(KU, ku)], False),
            "duplicate EKU": ([_extension(EKU, _tlv(0x30, SERVER)), _extension(EKU, _tlv(0x30, CLIENT))], False),
            "empty EKU": ([_extension(EKU, _tlv(0x30, b""))], False),
            "EKU repeated OID": ([_extension(EKU, _tlv(0x30, SERVER + SERVER))], False),
            "EKU not a sequence": ([_extension(EKU, _tlv(0x31, SERVER))], False),
            "EKU trailing byte": ([_extension(EKU, _tlv(0x30, SERVER) + b"\x00")], False),
            "EKU non-minimal length": ([_extension(EKU, b"\x30\x81" + bytes([len(SERVER)]) + SERVER)], False),
            "SAN non-minimal length": ([_extension(SAN, _tlv(0x30, b"\x82\x81\x01a"))], False),
            "EKU bad OID": ([_extension(EKU, _tlv(0x30, _tlv(0x06, b"\x2b\x80\x01")))], False),
            "KU unused bits set": ([_extension(KU, _tlv(0x03, b"\x07\x81"))], False),
            "KU unused 8": ([_extension(KU, _tlv(0x03, b"\x08\x80"))], False),
            "KU trailing zero byte": ([_extension(KU, _tlv(0x03, b"\x00\x80\x00"))], False),
            "KU empty": ([_extension(KU, _tlv(0x03, b"\x00"))], False),
            "KU encipherOnly alone": ([_extension(KU, _tlv(0x03, b"\x00\x01"))], False),
            "KU decipherOnly alone": ([_extension(KU, _tlv(0x03, b"\x07\x80\x80"))], False),
            "KU non-minimal length": ([_extension(KU, b"\x03\x81\x02\x07\x80")], False),
            "KU wrong type": ([_extension(KU, _tlv(0x04, b"\x07\x80"))], False),
            "BC ca FALSE encoded": ([_extension(BC, _tlv(0x30, b"\x01\x01\x00"))], False),
            "BC pathlen without ca": ([_extension(BC, _tlv(0x30, b"\x02\x01\x01"))], False),
            "BC negative pathlen": ([_extension(BC, _tlv(0x30, b"\x01\x01\xff\x02\x01\xff"))], False),
            "SKI empty": ([_extension(SKI, _tlv(0x04, b""))], False),
            "AKI issuer only": ([_extension(AKI, _tlv(0x30, _tlv(0xA1, _tlv(0x82, b"ca"))))], False),
            "AKI empty": ([_extension(AKI, _tlv(0x30, b""))], False),
            "SAN non-ASCII DNS": ([_extension(SAN, _tlv(0x30, _tlv(0x82, "é.example".encode())))], False),
            "SAN empty DNS": ([_extension(SAN, _tlv(0x30, _tlv(0x82, b"")))], False),
            "SAN IP of 5 bytes": ([_extension(SAN, _tlv(0x30, _tlv(0x87, b"\x01\x02\x03\x04\x05")))], False),
            "SAN empty": ([_extension(SAN, _tlv(0x30, b""))], False),
            "unknown extension": ([_extension("1.2.3.4", b"\x05\x00")], False),
            "no extension in the list": ([], False),
        }
        for name, (extensions, read_expected) in cases.items():
            der = _with_raw_extensions(base, b"".join(extensions))
            with self.subTest(name) if hasattr(self, "subTest") else _nothing():
                self.assertAgrees(der, read_expected=read_expected)

    def test_mutated_certificates(self):
        """Random byte changes in the extensions of real certificates: the same refusal or the same verdicts."""
        rng = random.Random(8071)
        sources = [issued.certificate.public_bytes(Encoding.DER) for issued in test_pki().issued().values()]
        read = refused = 0
        for _ in range(6000):
            der = bytearray(rng.choice(sources))
            (_, certificate), = _split(bytes(der))
            # Mutate only inside the last third (the extensions live there).
            for _ in range(rng.choice((1, 1, 2, 3))):
                position = rng.randrange(len(der) * 2 // 3, len(der) - 80)
                der[position] = rng.choice((0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x30, 0x7F, 0x80, 0x81, 0xFF, der[position] ^ 1))
            der = bytes(der)
            try:
                x509.load_der_x509_certificate(der)
            except ValueError:
                continue
            new = self.assertAgrees(der)
            read += new is not None
            refused += new is None
        self.assertGreater(read, 100)
        self.assertGreater(refused, 10)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
