"""
Trust anchors and CRLs, loaded once from the files the settings name.

Kept apart from the checks (L{callhome_mux.tls.verify}) so that tests and
embedding code can build a L{TrustStore} from objects without files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

from cryptography import x509

from callhome_mux.settings import ConfigError


@dataclass(frozen=True)
class TrustStore:
    anchors: Tuple[x509.Certificate, ...] = ()
    crls: Tuple[x509.CertificateRevocationList, ...] = ()

    @classmethod
    def from_files(cls, anchor_files: Iterable[str] = (), crl_files: Iterable[str] = ()) -> "TrustStore":
        anchors = []
        for index, path in enumerate(anchor_files):
            data = _read(path, f"tls.trust_anchor_files[{index}]")
            try:
                anchors.extend(x509.load_pem_x509_certificates(data))
            except ValueError as error:
                raise ConfigError(f"{path} holds no PEM certificate: {error}", f"tls.trust_anchor_files[{index}]") from None
        crls = [_load_crl(_read(path, f"tls.crl_files[{index}]"), path, index) for index, path in enumerate(crl_files)]
        return cls(tuple(anchors), tuple(crls))

    @classmethod
    def from_settings(cls, settings) -> "TrustStore":
        return cls.from_files(settings.trust_anchor_files, settings.crl_files)

    def issuer_of(self, certificate: x509.Certificate, extra: Iterable[x509.Certificate] = ()) -> Optional[x509.Certificate]:
        """The certificate (anchor or C{extra}) that signed C{certificate}, if we have it."""
        for candidate in (*extra, *self.anchors):
            if candidate.subject == certificate.issuer:
                try:
                    certificate.verify_directly_issued_by(candidate)
                except (ValueError, TypeError, Exception):
                    continue
                return candidate
        return None


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}", key) from None


def _load_crl(data: bytes, path: str, index: int) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as error:
        raise ConfigError(f"{path} is not a CRL: {error}", f"tls.crl_files[{index}]") from None
