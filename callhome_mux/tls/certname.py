"""
RFC 7589 cert-to-name: which device id a certificate stands for.

A rule matches when its fingerprint is that of the device certificate or
of any CA certificate in the verified chain; its map type then says where
the id comes from.  Rules are tried in increasing priority; a rule that
matches but cannot produce a name (the SAN it wants is absent) passes to
the next one (RFC 7407 §5).
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Collection, Iterable, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.x509.oid import NameOID

from callhome_mux.inventory.model import CertToNameRule
from callhome_mux.tls.identity import fingerprint_of


def map_certificate(
    rules: Iterable[CertToNameRule], leaf: x509.Certificate, chain: Sequence[x509.Certificate]
) -> Optional[Tuple[str, CertToNameRule]]:
    """
    The device id and the rule that produced it, or C{None}.

    C{chain} is the verified chain (leaf first, anchor last); C{leaf} may be
    in it.
    """
    fingerprints = {fingerprint_of(certificate) for certificate in (leaf, *chain)}
    return first_mapping(sorted(rules, key=lambda r: r.priority), fingerprints, lambda rule: name_for(rule, leaf))


def first_mapping(
    sorted_rules: Iterable[CertToNameRule], fingerprints: Collection[str], name_of: Callable[[CertToNameRule], Optional[str]]
) -> Optional[Tuple[str, CertToNameRule]]:
    """
    L{map_certificate} for rules already in priority order, the chain given
    by its fingerprints and the leaf by C{name_of} (rule -> name or C{None}).
    """
    for rule in sorted_rules:
        if rule.fingerprint not in fingerprints:
            continue
        name = name_of(rule)
        if name:
            return name, rule
    return None


def name_for(rule: CertToNameRule, certificate: x509.Certificate) -> Optional[str]:
    """The name C{rule}'s map type takes from C{certificate}, or C{None}."""
    if rule.map_type == "specified":
        return rule.name
    if rule.map_type == "common-name":
        return _attribute(certificate, NameOID.COMMON_NAME)
    if rule.map_type == "serial-number":
        # IDevID (IEEE 802.1AR): the device serial number lives in the
        # subject's serialNumber attribute, not in a SAN (RFC 8071 C6).
        return _attribute(certificate, NameOID.SERIAL_NUMBER)
    wanted = {
        "san-rfc822-name": (x509.RFC822Name,),
        "san-dns-name": (x509.DNSName,),
        "san-ip-address": (x509.IPAddress,),
        "san-any": (x509.RFC822Name, x509.DNSName, x509.IPAddress),
    }[rule.map_type]
    for general_name in _sans(certificate):
        if isinstance(general_name, wanted):
            return _san_text(general_name)
    return None


def _sans(certificate: x509.Certificate):
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []


def _san_text(general_name) -> str:
    if isinstance(general_name, x509.RFC822Name):
        # RFC 7407: the host part is case-insensitive, the local part is not.
        local, _, host = general_name.value.rpartition("@")
        return f"{local}@{host.lower()}" if local else host.lower()
    if isinstance(general_name, x509.DNSName):
        return general_name.value.lower()
    address = general_name.value
    if isinstance(address, ipaddress.IPv6Address):
        # RFC 7407 / RFC 5953: 32 lower-case hex digits, no colons.
        return address.packed.hex()
    return str(address)


def _attribute(certificate: x509.Certificate, oid) -> Optional[str]:
    return attribute_of(certificate.subject, oid)


def attribute_of(name: x509.Name, oid) -> Optional[str]:
    """The first value of attribute C{oid} in C{name} (a subject), as text, or C{None}."""
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
