"""
What a certificate says, parsed once per certificate rather than once per connection.

A device shows the same certificate at every call home, and every device
of a fleet shows the same CA certificates, so the facts the checks need
(fingerprint, subject, validity dates, key usage verdicts, cert-to-name
names, service_identity patterns) are kept per SHA-256 fingerprint in a
bounded LRU cache (L{FactsCache}).  Only facts that depend on nothing but
the certificate's bytes are cached: whether the chain verifies, whether a
CRL lists it and which device it names are decided per connection.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Dict, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from service_identity.cryptography import extract_patterns

from callhome_mux.tls.certname import attribute_of, name_for

#: The role the device played in the TLS handshake.
PEER_IS_CLIENT = "client"  # it sent the ClientHello
PEER_IS_SERVER = "server"  # it waited silently (RFC 8071 standard direction)

_ROLE_USAGE = {PEER_IS_CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH, PEER_IS_SERVER: ExtendedKeyUsageOID.SERVER_AUTH}


class CertificateFacts:
    """
    One certificate and what the checks ask of it (each answer computed at most once).

    The facts are read from a throwaway parse of the DER form: a
    C{cryptography} certificate keeps everything read from it (its parsed
    extensions alone are ~2 KiB), and the certificate handed on
    (L{certificate}: the verified chain, an unknown-device policy) is a
    separate, lean object.
    """

    __slots__ = ("der", "fingerprint", "subject", "not_before", "not_after", "_usage", "_names", "_patterns", "_certificate")

    def __init__(self, der: bytes, fingerprint: str):
        parsed = x509.load_der_x509_certificate(der)
        subject = parsed.subject
        self.der = der
        #: C{sha256:hex} of the DER form, as in L{callhome_mux.tls.identity.fingerprint_of}.
        self.fingerprint = fingerprint
        self.subject = subject.rfc4514_string()
        self.not_before = parsed.not_valid_before_utc
        self.not_after = parsed.not_valid_after_utc
        self._usage: Dict[str, Optional[str]] = _usage_problems(parsed)
        # The subject is parsed already: its cert-to-name names cost nothing more.
        self._names: Dict[str, Optional[str]] = {
            "common-name": attribute_of(subject, NameOID.COMMON_NAME),
            "serial-number": attribute_of(subject, NameOID.SERIAL_NUMBER),
        }
        self._patterns = None
        self._certificate: Optional[x509.Certificate] = None

    @property
    def certificate(self) -> x509.Certificate:
        if self._certificate is None:
            self._certificate = x509.load_der_x509_certificate(self.der)
        return self._certificate

    def usage_problem(self, peer_role: str) -> Optional[str]:
        """Why the key usages forbid the TLS role C{peer_role}, or C{None} when they allow it."""
        return self._usage[peer_role]

    def name(self, rule) -> Optional[str]:
        """The name cert-to-name rule C{rule}'s map type takes from this certificate."""
        if rule.map_type == "specified":
            return rule.name
        if rule.map_type not in self._names:
            self._names[rule.map_type] = name_for(rule, x509.load_der_x509_certificate(self.der))
        return self._names[rule.map_type]

    def patterns(self):
        """The certificate's service_identity patterns (its SANs)."""
        if self._patterns is None:
            self._patterns = extract_patterns(x509.load_der_x509_certificate(self.der))
        return self._patterns


def _usage_problems(certificate: x509.Certificate) -> Dict[str, Optional[str]]:
    """L{_usage_problem} for every TLS role, each extension looked up once (not once per role)."""
    usages = _extension_value(certificate, x509.ExtendedKeyUsage)
    key_usage = _extension_value(certificate, x509.KeyUsage)
    return {role: _usage_verdict(usages, key_usage, role) for role in _ROLE_USAGE}


def _extension_value(certificate: x509.Certificate, kind):
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _usage_problem(certificate: x509.Certificate, peer_role: str) -> Optional[str]:
    """Extended key usage, when present, must allow the TLS role; key usage must allow signing."""
    return _usage_verdict(
        _extension_value(certificate, x509.ExtendedKeyUsage), _extension_value(certificate, x509.KeyUsage), peer_role
    )


def _usage_verdict(usages, key_usage, peer_role: str) -> Optional[str]:
    wanted = _ROLE_USAGE[peer_role]
    if usages is not None and wanted not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        return f"extended key usage does not allow TLS {peer_role} authentication ({wanted._name})"
    if key_usage is None:
        return None
    if not (key_usage.digital_signature or key_usage.key_encipherment or key_usage.key_agreement):
        return "key usage allows neither digitalSignature, keyEncipherment nor keyAgreement"
    if key_usage.key_cert_sign and not key_usage.digital_signature:
        return "a CA certificate cannot be a device certificate"
    return None


class FactsCache:
    """L{CertificateFacts} by fingerprint, the C{size} most recently used kept."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._entries: "OrderedDict[str, CertificateFacts]" = OrderedDict()

    def for_der(self, der: bytes) -> CertificateFacts:
        """The facts of the certificate whose DER form is C{der} (parsed only when not cached)."""
        fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
        facts = self._lookup(fingerprint)
        if facts is None:
            facts = self._add(CertificateFacts(der, fingerprint))
        return facts

    def for_certificate(self, certificate: x509.Certificate) -> CertificateFacts:
        fingerprint = "sha256:" + certificate.fingerprint(hashes.SHA256()).hex()
        facts = self._lookup(fingerprint)
        if facts is None:
            facts = self._add(CertificateFacts(certificate.public_bytes(Encoding.DER), fingerprint))
        return facts

    def _lookup(self, fingerprint: str) -> Optional[CertificateFacts]:
        facts = self._entries.get(fingerprint)
        if facts is not None:
            self._entries.move_to_end(fingerprint)
        return facts

    def _add(self, facts: CertificateFacts) -> CertificateFacts:
        self._entries[facts.fingerprint] = facts
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return facts

    def __len__(self) -> int:
        return len(self._entries)
