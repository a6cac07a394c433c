"""
Our TLS identity: the certificate and key the manager shows to devices.

Configured files win.  Without them the first start generates a
self-signed EC P-256 certificate (SAN = this host's name, valid for twenty
years: it is pinned on devices, not renewed by a CA) into
C{STATE_DIR/tls/}, the key file readable by us only; later starts reuse it.
Either way an event carries the certificate's SHA-256 fingerprint, which
the operator installs on the devices as the manager's pinned identity.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from callhome_mux.events import EventBus
from callhome_mux.settings import ConfigError
from callhome_mux.tls.settings import TLSSettings

CERTIFICATE_NAME = "identity.crt"
KEY_NAME = "identity.key"
_LIFETIME = datetime.timedelta(days=20 * 365)


def fingerprint_of(certificate: x509.Certificate) -> str:
    """C{sha256:hex} of the certificate's DER form (the form the device model uses)."""
    return "sha256:" + hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Where our certificate chain and key are, and what the certificate is."""

    certificate_file: str
    private_key_file: str
    certificate: x509.Certificate
    generated: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


def load_identity(settings: TLSSettings, state_dir: str, events: EventBus, hostname: Optional[str] = None) -> Identity:
    """
    The configured identity, or the generated one in C{state_dir} (made now
    if missing).  Emits C{tls.identity.loaded} or C{tls.identity.generated}
    with the fingerprint.
    """
    if settings.certificate_file:
        identity = Identity(settings.certificate_file, settings.private_key_file, _read_leaf(settings.certificate_file))
    else:
        directory = os.path.join(state_dir, "tls")
        certificate_file = os.path.join(directory, CERTIFICATE_NAME)
        key_file = os.path.join(directory, KEY_NAME)
        if os.path.exists(certificate_file) and os.path.exists(key_file):
            identity = Identity(certificate_file, key_file, _read_leaf(certificate_file))
        else:
            certificate = generate_identity(directory, hostname or socket.getfqdn())
            identity = Identity(certificate_file, key_file, certificate, generated=True)
    events.emit(
        "tls.identity.generated" if identity.generated else "tls.identity.loaded",
        fingerprint=identity.fingerprint,
        subject=identity.subject,
        certificate_file=identity.certificate_file,
        not_after=identity.certificate.not_valid_after_utc.isoformat(),
    )
    return identity


def generate_identity(directory: str, hostname: str) -> x509.Certificate:
    """Write a fresh self-signed certificate and key into C{directory}; return the certificate."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "callhome-mux")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate a device clock slightly behind
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([_san(hostname)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # The key first, created 0600 from the start (never world-readable for
    # an instant); the certificate last, so its presence means "complete".
    _write_new(os.path.join(directory, KEY_NAME), key_pem, 0o600)
    _write_new(os.path.join(directory, CERTIFICATE_NAME), certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certificate


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def _write_new(path: str, data: bytes, mode: int) -> None:
    if os.path.exists(path):
        os.unlink(path)  # a leftover from an interrupted first start
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _read_leaf(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as handle:
            certificates = x509.load_pem_x509_certificates(handle.read())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read a PEM certificate from {path}: {error}", "tls.certificate_file") from None
    return certificates[0]
