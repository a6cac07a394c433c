"""
Test certificates, generated at run time: a small PKI with good and broken leaves.

Nothing here is meant for production.  Keys are EC P-256 so that building
the whole set costs a few milliseconds; L{test_pki} builds it once per
process and L{TestPKI.write} puts PEM files in a directory on request (for
stunnel, for settings that name files).

The set::

    ca                 the trust anchor we configure
    other_ca           a CA nobody trusts ("wrong CA")
    intermediate       a sub-CA under ca, for chains of three
    manager            our (the manager's) certificate, issued by ca
    device             device1: SAN dns device1.example.net, ip 192.0.2.10,
                       email ops@device1.example.net; CN device1
    device_via_intermediate  device2, issued by intermediate
    expired            device-expired, validity ended yesterday
    not_yet_valid      device-future, validity starts tomorrow
    wrong_ca           device1 look-alike issued by other_ca
    wrong_name         device3 whose SAN is not what the inventory expects
    self_signed        a self-signed leaf (only a pinned fingerprint can admit it)
    revoked            device-revoked, listed in C{crl}
    idevid             an IDevID-style cert: subject serialNumber, no SAN
    email_only         EKU emailProtection only: not for TLS
    crl                a CRL from ca revoking C{revoked}
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """C{sha256:hex} of the DER encoding, the form the device model stores."""
    return "sha256:" + hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class Issued:
    """One certificate with its key and the chain above it (issuer first, anchor excluded)."""

    name: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    intermediates: tuple = ()

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def chain_pem(self) -> bytes:
        """Leaf then intermediates: what a TLS peer sends."""
        return self.certificate_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.intermediates)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.certificate)


def _name(common_name: str, serial_number: Optional[str] = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "callhome-mux tests"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    return x509.Name(attributes)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _build(
    subject: x509.Name,
    key,
    issuer: Optional[Issued],
    *,
    ca: bool = False,
    not_before: Optional[datetime.datetime] = None,
    not_after: Optional[datetime.datetime] = None,
    sans: Iterable[x509.GeneralName] = (),
    usages: Iterable = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    signing_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - _DAY)
        .not_valid_after(not_after or now + 3650 * _DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    sans = list(sans)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _leaf(name, common_name, issuer, *, serial_number=None, sans=None, **options) -> Issued:
    key = _key()
    if sans is None:
        sans = [x509.DNSName(f"{common_name}.example.net")]
    intermediates = ()
    if issuer is not None and issuer.name != "ca" and issuer.name != "other_ca":
        intermediates = (issuer.certificate,) + issuer.intermediates
    certificate = _build(_name(common_name, serial_number), key, issuer, sans=sans, **options)
    return Issued(name, certificate, key, intermediates)


def _ca(name, common_name, issuer=None) -> Issued:
    key = _key()
    return Issued(name, _build(_name(common_name), key, issuer, ca=True), key)


class TestPKI:
    """A CA, good and broken leaves, and a CRL.  See the module docstring."""

    __test__ = False  # not a test case, whatever pytest thinks of the name

    def __init__(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca = _ca("ca", "callhome-mux test CA")
        self.other_ca = _ca("other_ca", "untrusted test CA")
        self.intermediate = _ca("intermediate", "callhome-mux test intermediate CA", self.ca)
        self.manager = _leaf("manager", "manager", self.ca)
        self.device = _leaf(
            "device",
            "device1",
            self.ca,
            sans=[
                x509.DNSName("device1.example.net"),
                x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
                x509.RFC822Name("ops@device1.example.net"),
            ],
        )
        self.device_via_intermediate = _leaf("device_via_intermediate", "device2", self.intermediate)
        self.expired = _leaf("expired", "device-expired", self.ca, not_before=now - 30 * _DAY, not_after=now - _DAY)
        self.not_yet_valid = _leaf("not_yet_valid", "device-future", self.ca, not_before=now + _DAY, not_after=now + 30 * _DAY)
        self.wrong_ca = _leaf("wrong_ca", "device1", self.other_ca)
        self.wrong_name = _leaf("wrong_name", "device3", self.ca, sans=[x509.DNSName("somebody-else.example.net")])
        key = _key()
        self.self_signed = Issued(
            "self_signed", _build(_name("device-selfsigned"), key, None, sans=[x509.DNSName("selfsigned.example.net")]), key
        )
        self.revoked = _leaf("revoked", "device-revoked", self.ca)
        self.idevid = _leaf("idevid", "Example Router IDevID", self.ca, serial_number="PID:ER-1 SN:FOC12345678", sans=[])
        self.email_only = _leaf("email_only", "device-email", self.ca, usages=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
        self.crl = self._crl(self.ca, [self.revoked], now)

    def device_certificate(self, common_name: str) -> Issued:
        """Another good device certificate, signed by the CA, SAN dNSName C{COMMON_NAME.example.net}."""
        return _leaf(common_name, common_name, self.ca)

    @staticmethod
    def _crl(issuer: Issued, revoked: Iterable[Issued], now) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.certificate.subject)
            .last_update(now - _DAY)
            .next_update(now + 30 * _DAY)
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(entry.certificate.serial_number)
                .revocation_date(now - _DAY)
                .build()
            )
        return builder.sign(issuer.key, hashes.SHA256())

    @property
    def crl_pem(self) -> bytes:
        return self.crl.public_bytes(serialization.Encoding.PEM)

    def issued(self) -> Dict[str, Issued]:
        return {value.name: value for value in vars(self).values() if isinstance(value, Issued)}

    def write(self, directory: str) -> Dict[str, str]:
        """
        Write every certificate (C{NAME.crt}, leaf then intermediates), key
        (C{NAME.key}, mode 0600) and the CRL (C{crl.pem}) into C{directory};
        return C{{"NAME.crt": path, "NAME.key": path, "crl.pem": path}}.
        """
        os.makedirs(directory, exist_ok=True)
        paths: Dict[str, str] = {}
        for name, issued in self.issued().items():
            paths[f"{name}.crt"] = _write(directory, f"{name}.crt", issued.chain_pem, 0o644)
            paths[f"{name}.key"] = _write(directory, f"{name}.key", issued.key_pem, 0o600)
        paths["crl.pem"] = _write(directory, "crl.pem", self.crl_pem, 0o644)
        return paths


def _write(directory: str, name: str, data: bytes, mode: int) -> str:
    path = os.path.join(directory, name)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


@functools.lru_cache(maxsize=None)
def test_pki() -> TestPKI:
    """The process-wide test PKI (built on first use)."""
    return TestPKI()


test_pki.__test__ = False  # type: ignore[attr-defined]
