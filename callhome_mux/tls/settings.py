"""
Settings of the TLS call-home layer (section C{[tls]}).

Example::

    [tls]
    certificate-file = "/etc/callhome-mux/manager.crt"   # leaf then intermediates
    private-key-file = "/etc/callhome-mux/manager.key"
    trust-anchor-files = ["/etc/callhome-mux/device-ca.pem"]
    crl-files = ["/etc/callhome-mux/device-ca.crl"]
    min-version = "1.2"
    alpn-protocols = ["netconf", "http/1.1"]

    [[tls.cert-to-name]]
    fingerprint = "sha256:..."      # the device CA
    map-type = "serial-number"      # IDevID: the subject serialNumber is the device id
    priority = 10
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from callhome_mux.inventory.model import CertToNameRule
from callhome_mux.settings import ConfigError, at_least, from_table, positive

SECTION = "tls"

#: ALPN ids.  RFC 7589 registers none for NETCONF; "netconf" is our
#: convention (devices that do not know it simply negotiate nothing) and
#: RESTCONF runs over HTTP, so "http/1.1" (RFC 7301) marks it.
ALPN_NETCONF = "netconf"
ALPN_HTTP_1_1 = "http/1.1"
ALPN_HTTP_2 = "h2"
#: Which session an ALPN id selects.
ALPN_MEANING = {ALPN_NETCONF: "netconf", ALPN_HTTP_1_1: "restconf", ALPN_HTTP_2: "restconf"}

VERSIONS = ("1.2", "1.3")


@dataclass(frozen=True)
class TLSSettings:
    #: Our certificate (PEM; leaf first, then intermediates) and its key.
    #: Neither set: an identity is generated in the state directory.
    certificate_file: Optional[str] = None
    private_key_file: Optional[str] = None
    #: PEM bundles of the CAs that issue device certificates.
    trust_anchor_files: Tuple[str, ...] = ()
    #: CRLs (PEM or DER) of those CAs; a listed device certificate is refused.
    crl_files: Tuple[str, ...] = ()
    #: Lowest TLS version accepted: "1.2" (default) or "1.3".  1.3 is always
    #: preferred when both sides can do it.
    min_version: str = "1.2"
    #: Key-exchange groups (OpenSSL names, preferred first), e.g.
    #: ["X25519MLKEM768", "X25519"]; empty: OpenSSL's defaults (with
    #: OpenSSL >= 3.5 the post-quantum hybrid X25519MLKEM768 first, which
    #: costs ~0.2 ms more CPU per handshake than X25519 alone).
    groups: Tuple[str, ...] = ()
    #: ALPN ids we offer (as TLS client) or accept (as TLS server), preferred first.
    alpn_protocols: Tuple[str, ...] = (ALPN_NETCONF, ALPN_HTTP_1_1)
    #: Seconds from TCP handoff to a finished handshake before we give up.
    handshake_timeout: float = 30.0
    #: When neither a pin nor ALPN says which protocol the device speaks:
    #: seconds to wait for a NETCONF <hello> after the handshake before
    #: deciding the device is a (silent) RESTCONF server.
    protocol_decision_wait: float = 3.0
    #: TCP keepalive on the device socket (RFC 8071 C4: TLS heartbeats are
    #: not available in current OpenSSL, so TCP keepalive is the transport check).
    tcp_keepalive: bool = True
    keepalive_idle: int = 60
    keepalive_interval: int = 15
    keepalive_count: int = 4
    #: RFC 7589 cert-to-name rules, tried in increasing priority.
    cert_to_name: Tuple[CertToNameRule, ...] = ()

    def __post_init__(self):
        if (self.certificate_file is None) != (self.private_key_file is None):
            raise ConfigError("certificate-file and private-key-file go together", "certificate_file")
        if self.min_version not in VERSIONS:
            raise ConfigError(f"must be one of {', '.join(VERSIONS)}, got {self.min_version!r}", "min_version")
        for key in ("trust_anchor_files", "crl_files", "groups", "alpn_protocols", "cert_to_name"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        for index, name in enumerate(self.alpn_protocols):
            if name not in ALPN_MEANING:
                known = ", ".join(sorted(ALPN_MEANING))
                raise ConfigError(f"unknown ALPN id {name!r} (known: {known})", f"alpn_protocols[{index}]")
        positive(self.handshake_timeout, "handshake_timeout")
        positive(self.protocol_decision_wait, "protocol_decision_wait")
        at_least(self.keepalive_idle, 1, "keepalive_idle")
        at_least(self.keepalive_interval, 1, "keepalive_interval")
        at_least(self.keepalive_count, 1, "keepalive_count")

    @classmethod
    def from_table(cls, table: Optional[Mapping[str, Any]]) -> "TLSSettings":
        """Build from the C{[tls]} TOML table; a bad key raises L{ConfigError} naming it."""
        return from_table(cls, table, SECTION)
