"""
Is this device certificate acceptable, and which device is it?

The TLS layer lets OpenSSL finish the handshake whatever the peer shows
(its verify callback accepts everything) and decides here, right after the
handshake and before a single application byte is read or written.  Doing
it here rather than inside OpenSSL gives every refusal an exact reason for
the operator, admits pinned self-signed certificates, and keeps the whole
decision testable with certificate objects and no sockets.

Order of checks (the first failure is the refusal):

1. a certificate at all (C{no-client-certificate});
2. its own validity dates (C{expired}, C{not-yet-valid});
3. the chain to a configured trust anchor, with OpenSSL's verifier
   (C{untrusted-chain}, or C{expired} / C{not-yet-valid} for a CA), unless
   the certificate's fingerprint is pinned to a device;
4. key usage and extended key usage fit the role it played in TLS
   (C{key-usage});
5. CRLs of the CAs in the chain (C{revoked});
6. identification: a pinned fingerprint, else RFC 7589 cert-to-name, then
   the directory (C{unknown-device}, C{device-disabled}; the unknown-device
   policy may still admit it);
7. the device's C{tls_expected_identity}, via service_identity
   (C{identity-mismatch}).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Tuple

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity import hazmat as identity_rules

from callhome_mux.inventory.model import CertToNameRule, Device, DeviceDirectory
from callhome_mux.tls.certname import first_mapping
from callhome_mux.tls.context import CHAIN_ERROR
from callhome_mux.tls.facts import PEER_IS_CLIENT, PEER_IS_SERVER, CertificateFacts, FactsCache  # noqa: F401
from callhome_mux.tls.trust import TrustStore

# Refusal reasons: short, stable words for dashboards and tests.
NO_CERTIFICATE = "no-client-certificate"
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"
UNTRUSTED_CHAIN = "untrusted-chain"
KEY_USAGE = "key-usage"
REVOKED = "revoked"
UNKNOWN_DEVICE = "unknown-device"
DEVICE_DISABLED = "device-disabled"
IDENTITY_MISMATCH = "identity-mismatch"

# The roles the device played in the TLS handshake (PEER_IS_CLIENT: it sent
# the ClientHello; PEER_IS_SERVER: it waited silently, RFC 8071's standard
# direction) are defined in callhome_mux.tls.facts and imported from here.

# OpenSSL X509_V_ERR_* codes that deserve their own reason.
_OPENSSL_REASONS = {9: NOT_YET_VALID, 10: EXPIRED, 23: REVOKED}


class CertificateRefused(Exception):
    """The certificate is not acceptable; C{reason} is one of the words above."""

    def __init__(self, reason: str, detail: str, fingerprint: Optional[str] = None, subject: Optional[str] = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.fingerprint = fingerprint
        self.subject = subject

    def event_fields(self) -> dict:
        return {"reason": self.reason, "detail": self.detail, "fingerprint": self.fingerprint, "subject": self.subject}


@dataclass(frozen=True)
class Candidate:
    """A certificate that passed the checks but names no known device: what an unknown-device policy sees."""

    fingerprint: str
    subject: str
    #: The id cert-to-name produced, or C{None} when no rule matched.
    mapped_id: Optional[str]
    certificate: x509.Certificate
    chain: Tuple[x509.Certificate, ...]
    peer: str = "?"


#: Decides about a certificate that is trusted but belongs to no known
#: device: return a L{Device} to admit it, C{None} to refuse.  (The
#: inventory's "pending" policy records the candidate and returns C{None}.)
UnknownDevicePolicy = Callable[[Candidate], Optional[Device]]


def refuse_unknown_devices(candidate: Candidate) -> Optional[Device]:
    """The default policy: only devices in the directory may call home."""
    return None


@dataclass(frozen=True)
class Identified:
    """The outcome of a successful verification."""

    device: Device
    fingerprint: str
    subject: str
    #: How the device was recognised: C{pinned-fingerprint}, C{cert-to-name:MAP-TYPE}, or C{policy}.
    matched_by: str
    #: The facts of the chain (L{chain}), leaf first.
    chain_facts: Tuple[CertificateFacts, ...]

    @property
    def device_id(self) -> str:
        return self.device.id

    @property
    def chain(self) -> Tuple[x509.Certificate, ...]:
        """Leaf first; the trust anchor last when the chain was verified (parsed when first asked for)."""
        return tuple(f.certificate for f in self.chain_facts)


class CertificateVerifier:
    """
    The checks above.  L{verify_connection} is what the TLS handler calls
    (the OpenSSL objects of the handshake, no conversions); L{verify} takes
    C{cryptography} certificates (tests, embedding code).  What depends on a
    certificate alone is parsed once per certificate (L{FactsCache}).
    """

    def __init__(
        self,
        trust: TrustStore,
        rules: Iterable[CertToNameRule],
        directory: DeviceDirectory,
        unknown_device_policy: UnknownDevicePolicy = refuse_unknown_devices,
        now: Optional[Callable[[], datetime.datetime]] = None,
        facts: Optional[FactsCache] = None,
    ):
        #: Contexts whose handshakes OpenSSL verifies with our store (L{verify_during_handshake}).
        self._handshake_contexts: list = []
        self.trust = trust
        self.rules = tuple(sorted(rules, key=lambda rule: rule.priority))
        self.directory = directory
        self.unknown_device_policy = unknown_device_policy
        self.facts = facts if facts is not None else FactsCache()
        # With the real clock OpenSSL checks the chain at its own current
        # time; only an injected clock is handed to the store (setting it
        # builds a verification parameter per connection).
        self._injected_clock = now is not None
        self._now = now if now is not None else _utc_now

    @property
    def trust(self) -> TrustStore:
        return self._trust

    @trust.setter
    def trust(self, trust: TrustStore) -> None:
        self._trust = trust
        if self._handshake_contexts:
            self._store()  # the handshakes that follow use the new store at once

    def verify_during_handshake(self, context: SSL.Context) -> bool:
        """
        Have OpenSSL check the peer's chain with our store inside the
        handshakes of C{context}: a TLS client context without a verification
        mode, or a TLS server context whose verify callback accepts and notes
        errors (L{callhome_mux.tls.context.CHAIN_ERROR}); either way OpenSSL
        records its verdict and goes on whatever it is.
        L{verify_connection} takes a chain OpenSSL verified as is, instead
        of verifying it a second time, and checks it itself otherwise (so
        that a refusal has the same reason as ever).  C{False} when the
        OpenSSL bindings this needs are missing.
        """
        if not _STORE_BINDINGS:
            return False
        self._handshake_contexts.append(context)
        # The store is for the device's chain only: without this OpenSSL
        # would build a chain for our own certificate from it at every
        # handshake (an X509_verify_cert, ~0.1 ms) and send the anchors
        # it found with our certificate.
        context.set_mode(_SSL_MODE_NO_AUTO_CHAIN)
        _install_store(context, self._store())
        return True

    def verify(
        self,
        leaf: Optional[x509.Certificate],
        presented: Sequence[x509.Certificate] = (),
        peer_role: str = PEER_IS_CLIENT,
        peer: str = "?",
    ) -> Identified:
        """
        Check C{leaf} (with the other certificates the peer sent, C{presented})
        and identify its device; raise L{CertificateRefused} otherwise.
        """
        if leaf is None:
            raise CertificateRefused(NO_CERTIFICATE, "the device presented no certificate")
        facts = self.facts.for_certificate(leaf)
        others = [self.facts.for_certificate(c) for c in presented]
        others = [f for f in others if f.fingerprint != facts.fingerprint]
        return self._verify(
            facts,
            lambda now: self._verified_chain(
                facts,
                lambda: crypto.X509.from_cryptography(facts.certificate),
                lambda: [crypto.X509.from_cryptography(f.certificate) for f in others],
                now,
            ),
            others,
            peer_role,
            peer,
        )

    def verify_connection(self, connection: SSL.Connection, peer_role: str, peer: str = "?") -> Identified:
        """L{verify} for the certificates the peer of a finished handshake on C{connection} presented."""
        # OpenSSL's own pointers and DER dumps: a pyOpenSSL X509 per
        # certificate is made only if the chain must be verified here.
        leaf = _lib.SSL_get_peer_certificate(connection._ssl)  # a reference of our own
        if leaf == _ffi.NULL:
            raise CertificateRefused(NO_CERTIFICATE, "the device presented no certificate")
        try:
            return self._verify_peer(connection, leaf, peer_role, peer)
        finally:
            _lib.X509_free(leaf)

    def _verify_peer(self, connection: SSL.Connection, leaf, peer_role: str, peer: str) -> Identified:
        der = _der_of(leaf)
        facts = self.facts.for_der(der, (lambda: _subject_der_of(leaf)) if _NAME_BINDINGS else None)
        # As TLS client OpenSSL lists the leaf too (the same object, skipped
        # by pointer); as server it does not.
        intermediates = []
        for pointer in _stack(_lib.SSL_get_peer_cert_chain(connection._ssl)):
            if pointer != leaf:
                certificate_der = _der_of(pointer)
                if certificate_der != der:
                    intermediates.append((pointer, certificate_der))
        intermediate_facts = [self.facts.for_der(certificate_der) for _, certificate_der in intermediates]

        def chain_of(now):
            verified = self._chain_verified_in_handshake(connection, leaf)
            if verified is not None:
                return (facts, *(self._chain_facts(pointer) for pointer in verified[1:]))
            return self._verified_chain(facts, lambda: _wrap(leaf), lambda: [_wrap(pointer) for pointer, _ in intermediates], now)

        return self._verify(facts, chain_of, intermediate_facts, peer_role, peer)

    def _chain_facts(self, pointer) -> CertificateFacts:
        """The facts of a certificate (its C{X509 *}) of a chain verified with the current store."""
        # cffi pointers hash and compare by address.
        anchor = self._anchor_facts.get(pointer) if self._anchor_facts else None
        if anchor is None:
            return self.facts.for_der(_der_of(pointer))
        if anchor[1] is None:
            anchor[1] = self.facts.for_der(_der_of(anchor[0]._x509))
        return anchor[1]

    def handshake_connection(self, connection: SSL.Connection) -> SSL.Connection:
        """
        Note on C{connection}, made for a handshake on a context given to
        L{verify_during_handshake}, the store in force now.  Its chain is
        taken from the handshake only if the store is still the same when
        it is verified: a trust reload while the handshake is in flight
        (after OpenSSL checked the chain with the old anchors, before the
        handshake finished) has the chain verified again with the new ones.
        """
        connection._callhome_store = self._cached_store if self._handshake_contexts else None
        return connection

    def _chain_verified_in_handshake(self, connection: SSL.Connection, leaf):
        """The chain OpenSSL verified for C{leaf} (its C{X509 *}) during the handshake with our current store, else C{None}."""
        # (pyOpenSSL contexts compare by identity.)
        if self._injected_clock or connection.get_context() not in self._handshake_contexts:
            return None
        began_with = getattr(connection, "_callhome_store", None)
        if began_with is not None:
            connection._callhome_store = None  # not needed any more: no old store kept alive by a session
        if began_with is not self._store():
            return None  # the trust changed since the handshake began (or it was not noted)
        if _lib.SSL_get_verify_result(connection._ssl) != 0 or getattr(connection, CHAIN_ERROR, False):
            return None  # checked again below, for the exact reason
        # The chain's X509 pointers, without a Python wrapper each (the
        # anchor's facts are found by address): valid while the connection is.
        verified = _stack(_lib.SSL_get0_verified_chain(connection._ssl))
        if not verified or verified[0] != leaf:
            return None
        return verified

    def _verify(self, facts: CertificateFacts, chain_of, intermediates, peer_role, peer) -> Identified:
        fingerprint, subject = facts.fingerprint, facts.subject

        def refuse(reason: str, detail: str) -> CertificateRefused:
            return CertificateRefused(reason, detail, fingerprint, subject)

        now = self._now()
        _check_dates(facts, now, refuse, "the certificate")
        pinned = self.directory.by_tls_fingerprint(fingerprint)
        try:
            chain = chain_of(now)
        except CertificateRefused as error:
            if pinned is None:
                raise refuse(error.reason, error.detail) from None
            chain = (facts,)  # pinned: the fingerprint itself is the trust
        problem = facts.usage_problem(peer_role)
        if problem is not None:
            raise refuse(KEY_USAGE, problem)
        self._check_revocation(chain, intermediates, refuse)
        device, matched_by = self._identify(pinned, facts, chain, peer, refuse)
        if not device.enabled:
            raise refuse(DEVICE_DISABLED, f"device {device.id!r} is disabled")
        if device.tls_expected_identity:
            _check_expected_identity(facts, device, refuse)
        return Identified(device, fingerprint, subject, matched_by, tuple(chain))

    # -- chain ----------------------------------------------------------

    def _verified_chain(self, facts, openssl_leaf, openssl_intermediates, now) -> Tuple[CertificateFacts, ...]:
        if not self.trust.anchors:
            raise CertificateRefused(UNTRUSTED_CHAIN, "no trust anchors are configured and the certificate is not pinned")
        store = self._store()
        if self._injected_clock:
            store.set_time(now.replace(tzinfo=None))
        context = crypto.X509StoreContext(store, openssl_leaf(), openssl_intermediates())
        try:
            verified = context.get_verified_chain()
        except crypto.X509StoreContextError as error:
            code, depth, message = (list(error.errors) + [None, None, str(error)])[:3]
            reason = _OPENSSL_REASONS.get(code, UNTRUSTED_CHAIN)
            where = "the certificate" if not depth else f"CA certificate at depth {depth}"
            raise CertificateRefused(reason, f"{where}: {message}") from None
        # The chain starts with the leaf itself.
        return (facts, *(self._chain_facts(c._x509) for c in verified[1:]))

    def _store(self) -> crypto.X509Store:
        # Built once per trust store (reloadTrust swaps the trust store).
        if getattr(self, "_store_for", None) is not self.trust:
            store = crypto.X509Store()
            # The store keeps the very X509 objects added (no copies), so a
            # verified chain ends in one of them: its facts by address,
            # without a DER dump and hash per connection.
            self._anchor_facts = {}
            for anchor in self.trust.anchors:
                openssl_anchor = crypto.X509.from_cryptography(anchor)
                store.add_cert(openssl_anchor)
                # The wrapper is kept with the facts (read at first use, as
                # before), so that the address stays its own.
                if _STORE_BINDINGS:
                    self._anchor_facts[openssl_anchor._x509] = [openssl_anchor, None]
            # An intermediate CA may be the configured anchor (trust a
            # vendor's device sub-CA without its root).
            store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
            self._cached_store, self._store_for = store, self.trust
            self._crl_signatures = {}
            for context in self._handshake_contexts:
                _install_store(context, store)
        return self._cached_store

    # -- revocation -----------------------------------------------------

    def _check_revocation(self, chain, intermediates, refuse) -> None:
        """Refuse when a CRL from a certificate's verified issuer lists it (RFC 8071 C5)."""
        if not self.trust.crls:
            return
        self._store()  # resets the CRL signature verdicts when the trust store changed
        known = tuple(f.certificate for f in (*chain, *intermediates))
        for position, facts in enumerate(chain):
            certificate = facts.certificate
            if certificate in self.trust.anchors:
                continue  # anchors are trusted by configuration, not by CRL
            # The next certificate of a verified chain is the verified issuer.
            if position + 1 < len(chain):
                issuer = chain[position + 1]
            else:
                found = self.trust.issuer_of(certificate, known)
                if found is None:
                    continue
                issuer = self.facts.for_certificate(found)
            for index, crl in enumerate(self.trust.crls):
                if crl.issuer != certificate.issuer or not self._crl_signed_by(index, crl, issuer):
                    continue
                entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
                if entry is not None:
                    which = "the certificate" if position == 0 else f"CA {facts.subject}"
                    raise refuse(REVOKED, f"{which} was revoked on {entry.revocation_date_utc.date().isoformat()}")

    def _crl_signed_by(self, index: int, crl, issuer: CertificateFacts) -> bool:
        # A signature check per CRL and connection would cost more than the
        # handshake; the verdict depends only on the CRL and the issuer.
        key = (index, issuer.fingerprint)
        verdict = self._crl_signatures.get(key)
        if verdict is None:
            verdict = self._crl_signatures[key] = crl.is_signature_valid(issuer.certificate.public_key())
        return verdict

    # -- identification -------------------------------------------------

    def _identify(self, pinned, facts, chain, peer, refuse) -> Tuple[Device, str]:
        if pinned is not None:
            return pinned, "pinned-fingerprint"
        fingerprints = {f.fingerprint for f in chain}
        fingerprints.add(facts.fingerprint)
        mapped = first_mapping(self.rules, fingerprints, facts.name)
        mapped_id = mapped[0] if mapped else None
        if mapped is not None:
            device = self.directory.get(mapped_id)
            if device is not None:
                return device, f"cert-to-name:{mapped[1].map_type}"
        certificates = tuple(f.certificate for f in chain)
        candidate = Candidate(facts.fingerprint, facts.subject, mapped_id, facts.certificate, certificates, peer)
        device = self.unknown_device_policy(candidate)
        if device is not None:
            return device, "policy"
        if mapped_id is None:
            raise refuse(UNKNOWN_DEVICE, "no pinned fingerprint and no cert-to-name rule maps this certificate")
        raise refuse(UNKNOWN_DEVICE, f"cert-to-name gives {mapped_id!r}, which is not in the inventory")


# pyOpenSSL's own bindings (cryptography's): what its chain getters and a
# store setter it lacks are made of.
from OpenSSL._util import ffi as _ffi  # noqa: E402
from OpenSSL._util import lib as _lib  # noqa: E402

#: SSL_MODE_NO_AUTO_CHAIN (ssl.h; pyOpenSSL has no name for it).
_SSL_MODE_NO_AUTO_CHAIN = 0x00000008

_STORE_BINDINGS = hasattr(_lib, "SSL_CTX_set_cert_store") and hasattr(_lib, "X509_STORE_up_ref")


def _stack(stack) -> list:
    """The C{X509 *} of an OpenSSL C{STACK_OF(X509)} (borrowed: valid while its owner is)."""
    if stack == _ffi.NULL:
        return []
    return [_lib.sk_X509_value(stack, index) for index in range(_lib.sk_X509_num(stack))]


def _der_of(pointer) -> bytes:
    """The DER form of the certificate C{pointer} (an C{X509 *}), as pyOpenSSL's dump_certificate writes it."""
    bio = _lib.BIO_new(_lib.BIO_s_mem())
    if bio == _ffi.NULL:
        raise MemoryError("BIO_new failed")
    try:
        if _lib.i2d_X509_bio(bio, pointer) != 1:
            raise ValueError("i2d_X509_bio failed")
        data = _ffi.new("char **")
        length = _lib.BIO_get_mem_data(bio, data)
        return _ffi.buffer(data[0], length)[:]
    finally:
        _lib.BIO_free(bio)


_NAME_BINDINGS = hasattr(_lib, "X509_get_subject_name") and hasattr(_lib, "i2d_X509_NAME")


def _subject_der_of(pointer) -> bytes:
    """
    The DER of the subject Name of the certificate C{pointer}: the bytes
    OpenSSL kept from its parse (an unmodified X509_NAME encodes as it was
    read), so that the subject is read without walking the certificate to
    it (L{callhome_mux.tls.facts}).  C{b""} if OpenSSL gives none (the facts
    then ask cryptography).
    """
    name = _lib.X509_get_subject_name(pointer)
    if name == _ffi.NULL:
        return b""
    length = _lib.i2d_X509_NAME(name, _ffi.NULL)
    if length <= 0:
        return b""
    buffer = _ffi.new("unsigned char[]", length)
    if _lib.i2d_X509_NAME(name, _ffi.new("unsigned char **", buffer)) != length:
        return b""
    return _ffi.buffer(buffer, length)[:]


def _wrap(pointer) -> crypto.X509:
    """A pyOpenSSL X509 holding its own reference to C{pointer} (as pyOpenSSL's chain getters make them)."""
    if _lib.X509_up_ref(pointer) != 1:
        raise MemoryError("X509_up_ref failed")
    return crypto.X509._from_raw_x509_ptr(pointer)


def _install_store(context: SSL.Context, store: crypto.X509Store) -> None:
    # pyOpenSSL has no setter for a context's store.  SSL_CTX_set_cert_store
    # takes over one reference (and drops the one to the store it replaces);
    # the X509Store object keeps its own.  OpenSSL reads the context's store
    # when it verifies, so a handshake uses the store current at that moment.
    _lib.X509_STORE_up_ref(store._store)
    _lib.SSL_CTX_set_cert_store(context._context, store._store)


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _check_dates(facts: CertificateFacts, now: datetime.datetime, refuse, what: str) -> None:
    if now < facts.not_before:
        raise refuse(NOT_YET_VALID, f"{what} is valid from {facts.not_before.isoformat()}")
    if now > facts.not_after:
        raise refuse(EXPIRED, f"{what} expired on {facts.not_after.isoformat()}")


def _check_expected_identity(facts: CertificateFacts, device: Device, refuse) -> None:
    kind, _, value = device.tls_expected_identity.partition(":")
    kinds = {"dns": identity_rules.DNS_ID, "ip": identity_rules.IPAddress_ID, "uri": identity_rules.URI_ID}
    if kind not in kinds or not value:
        raise refuse(IDENTITY_MISMATCH, f"device {device.id!r} has an unusable expected identity {device.tls_expected_identity!r}")
    try:
        wanted = kinds[kind](value)
        identity_rules.verify_service_identity(facts.patterns(), obligatory_ids=[wanted], optional_ids=[])
    except (VerificationError, ValueError) as error:
        raise refuse(IDENTITY_MISMATCH, f"expected {device.tls_expected_identity}: {error}") from None
