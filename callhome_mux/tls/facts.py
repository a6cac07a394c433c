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
import re
from collections import OrderedDict
from typing import Dict, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _NAMEOID_TO_NAME, _escape_dn_value
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
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

    def __init__(self, der: bytes, fingerprint: str, subject_der=None):
        parsed = x509.load_der_x509_certificate(der)
        self.der = der
        #: C{sha256:hex} of the DER form, as in L{callhome_mux.tls.identity.fingerprint_of}.
        self.fingerprint = fingerprint
        self.not_before = parsed.not_valid_before_utc
        self.not_after = parsed.not_valid_after_utc
        self._usage: Dict[str, Optional[str]] = _usage_problems(parsed)
        # The subject string and its cert-to-name names come from one pass
        # over the subject's DER (no x509.Name objects); anything unusual
        # takes cryptography's own Name.  subject_der: a callable giving the
        # subject Name's own DER (OpenSSL keeps it from its parse), which
        # spares the walk to it through the certificate.
        read = _read_subject(der) if subject_der is None else _read_name_der(subject_der())
        if read is None:
            subject = parsed.subject
            read = (
                subject.rfc4514_string(),
                attribute_of(subject, NameOID.COMMON_NAME),
                attribute_of(subject, NameOID.SERIAL_NUMBER),
            )
        self.subject = read[0]
        self._names: Dict[str, Optional[str]] = {"common-name": read[1], "serial-number": read[2]}
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


#: Attribute names in subject strings, as cryptography's Name.rfc4514_string writes them (others: the dotted OID).
_RFC4514_NAMES = {oid.dotted_string: name for oid, name in _NAMEOID_TO_NAME.items()}
_COMMON_NAME = NameOID.COMMON_NAME.dotted_string
_SERIAL_NUMBER = NameOID.SERIAL_NUMBER.dotted_string
#: Value types read here (UTF8String, PrintableString, IA5String: text as
#: cryptography gives it); any other type (BMPString, BIT STRING ...) goes
#: to cryptography.
_TEXT_TAGS = frozenset((0x0C, 0x13, 0x16))


def _oid_text(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's DER content."""
    parts = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if value or not parts:
        raise ValueError("bad object identifier")
    first = parts[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(map(str, head + parts[1:]))


#: What cryptography's _escape_dn_value changes: these characters anywhere,
#: a leading "#" or space, a trailing space.
_ESCAPED_ANYWHERE = re.compile(r'[\\"+,;<>\x00]')


def _escaped(value: str) -> str:
    """C{_escape_dn_value(value)} for a non-empty text value, without its eight replaces when none applies."""
    if value[0] in "# " or value[-1] == " " or _ESCAPED_ANYWHERE.search(value):
        return _escape_dn_value(value)
    return value


#: OID content bytes -> (dotted form, name in subject strings); filled as OIDs are seen (bounded).
_OIDS: Dict[bytes, tuple] = {}


def _oid(content: bytes) -> tuple:
    known = _OIDS.get(content)
    if known is None:
        dotted = _oid_text(content)
        known = (dotted, _RFC4514_NAMES.get(dotted, dotted))
        if len(_OIDS) < 256:
            _OIDS[content] = known
    return known


def _subject_bounds(der: bytes):
    """
    Where the subject's content starts and ends in C{der}, or C{None}: into
    the Certificate and the TBSCertificate, past the [0] version if there
    is one, the serial, the signature algorithm, the issuer and the
    validity.  Each element's length in short or long form (up to four
    bytes), nothing read past the end of its parent; one loop (a call per
    element was half of a new certificate's subject read).
    """
    position, end = 0, len(der)
    entered = skipped = 0
    version_possible = True
    while True:
        if position + 2 > end:
            return None
        tag = der[position]
        length = der[position + 1]
        start = position + 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or start + count > end:
                return None
            length = int.from_bytes(der[start : start + count], "big")
            start += count
        stop = start + length
        if stop > end:
            return None
        if entered < 2:  # Certificate, TBSCertificate: into them
            entered += 1
            position, end = start, stop
        elif version_possible and tag == 0xA0:
            version_possible = False
            position = stop
        elif skipped == 4:
            return (start, stop) if tag == 0x30 else None
        else:
            version_possible = False
            skipped += 1
            position = stop


def _read_subject(der: bytes):
    """
    C{(rfc4514 string, first commonName, first serialNumber)} of the
    certificate's subject, read straight from C{der}: exactly what
    cryptography's C{Name.rfc4514_string} and L{attribute_of} give.
    C{None} for anything this does not read (multi-valued RDNs, value types
    other than text, empty values, an RDN of 128 bytes or more): the caller
    asks cryptography.  OpenSSL has parsed the certificate already (the
    handshake) and so has cryptography (the other facts), so malformed
    DER is refused there as before.
    """
    bounds = _subject_bounds(der)
    if bounds is None:
        return None
    return _read_name(der, *bounds)


def _read_name_der(name: bytes):
    """L{_read_subject} for the DER of a Name itself (a SEQUENCE, short or long form length)."""
    if len(name) < 2 or name[0] != 0x30:
        return None
    length = name[1]
    start = 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            return None
        length = int.from_bytes(name[2 : 2 + count], "big")
        start += count
    if start + length != len(name):
        return None
    return _read_name(name, start, len(name))


def _read_name(der: bytes, start: int, stop: int):
    """L{_read_subject}'s answer for the RDNs between C{start} and C{stop} of C{der}."""
    try:
        rdns = []
        common_name = serial_number = None
        position = start
        while position < stop:
            set_length = der[position + 1]
            end = position + 2 + set_length
            if end > stop:
                return None
            rdn = _RDNS.get(der[position:end])
            if rdn is None:
                # SET { SEQUENCE { OID, value } }, all short-form lengths.
                pair_length = der[position + 3]
                oid_length = der[position + 5]
                value_at = position + 6 + oid_length
                value_length = der[value_at + 1]
                if (
                    der[position] != 0x31
                    or der[position + 2] != 0x30
                    or der[position + 4] != 0x06
                    or set_length != pair_length + 2
                    or pair_length != oid_length + value_length + 4
                    or (set_length | value_length | oid_length) & 0x80
                    or der[value_at] not in _TEXT_TAGS
                    or not value_length
                    or not oid_length
                ):
                    return None
                dotted, name = _oid(der[value_at - oid_length : value_at])
                value = der[value_at + 2 : end].decode("utf-8")
                rdn = (dotted, f"{name}={_escaped(value)}", value)
                if dotted != _COMMON_NAME and dotted != _SERIAL_NUMBER and len(_RDNS) < 256:
                    _RDNS[der[position:end]] = rdn
            dotted, text, value = rdn
            if dotted == _COMMON_NAME:
                if common_name is None:
                    common_name = value
            elif dotted == _SERIAL_NUMBER and serial_number is None:
                serial_number = value
            rdns.append(text)
            position = end
        if position != stop:
            return None
    except (ValueError, IndexError):
        return None
    rdns.reverse()
    return ",".join(rdns), common_name, serial_number


#: An RDN's DER -> (dotted OID, "name=escaped value", value), as
#: L{_read_name} read it (bounded).  A fleet's certificates share most of
#: their subjects' RDNs (country, organisation, unit ...): each is checked
#: and decoded once.  The names that differ per device (commonName,
#: serialNumber) are not kept.  The key is the RDN's whole DER, so a hit is
#: exactly what a first reading of those bytes gave.
_RDNS: Dict[bytes, tuple] = {}


def _usage_problems(certificate: x509.Certificate) -> Dict[str, Optional[str]]:
    """
    L{_usage_problem} for every TLS role, from one pass over the extensions
    by OID (cryptography refuses duplicates, so the first is the only one;
    two get_extension_for_class calls cost ~4 us more per new certificate).
    """
    usages = key_usage = None
    for extension in certificate.extensions:
        oid = extension.oid
        if oid == _EXTENDED_KEY_USAGE:
            usages = extension.value
        elif oid == _KEY_USAGE:
            key_usage = extension.value
    return {role: _usage_verdict(usages, key_usage, role) for role in _ROLE_USAGE}


_EXTENDED_KEY_USAGE = ExtensionOID.EXTENDED_KEY_USAGE
_KEY_USAGE = ExtensionOID.KEY_USAGE


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

    def for_der(self, der: bytes, subject_der=None) -> CertificateFacts:
        """
        The facts of the certificate whose DER form is C{der} (parsed only
        when not cached); C{subject_der}, if given, a callable returning
        the DER of its subject Name.
        """
        fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
        facts = self._lookup(fingerprint)
        if facts is None:
            facts = self._add(CertificateFacts(der, fingerprint, subject_der))
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
