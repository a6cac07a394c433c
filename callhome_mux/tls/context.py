"""
OpenSSL contexts for both call-home directions.

One context per role, built once: as TLS client when the device waits
silently (RFC 8071's direction), as TLS server when the device sent a
ClientHello.  Both present our identity and get the device's
certificate.  OpenSSL's own verdict is not enforced (as TLS server the
verify callback accepts; as TLS client no verification mode is set: the
server's certificate comes anyway), and L{callhome_mux.tls.verify} decides
right after the handshake with exact reasons (see its docstring).

Hardening: TLS 1.2 minimum (1.3 preferred, as OpenSSL negotiates the
highest common version), no compression (CRIME), no renegotiation, forward
secret AEAD cipher suites only for TLS 1.2.
"""

from __future__ import annotations

from typing import Sequence

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from zope.interface import implementer

from callhome_mux.settings import ConfigError
from callhome_mux.tls.identity import Identity
from callhome_mux.tls.settings import TLSSettings

# TLS 1.3 suites are fixed by OpenSSL (all AEAD); this list is for 1.2.
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"

_MIN_VERSION = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


#: Set to C{True} on a connection whose verify callback was told of an
#: error in the peer's chain (see L{_accept_for_now}).
CHAIN_ERROR = "_callhome_chain_error"


def _accept_for_now(connection, certificate, error_number, depth, ok) -> bool:
    # The decision is made after the handshake by CertificateVerifier, which
    # can name the reason and honour pinned self-signed certificates.
    # pyOpenSSL turns every error a callback accepts into X509_V_OK, so
    # SSL_get_verify_result cannot tell such a chain from a good one: the
    # error is noted on the connection for the verifier.
    if not ok:
        setattr(connection, CHAIN_ERROR, True)
    return True


def base_context(settings: TLSSettings, certificate_file: str, private_key_file: str) -> SSL.Context:
    """A context with our identity, the version floor and the hardening options."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(_MIN_VERSION[settings.min_version])
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    # Free the read/write buffers (~34 KiB each) while a connection is idle,
    # as most call-home sessions are (bench/hold.py --kind tls).
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_cipher_list(TLS12_CIPHERS)
    if settings.groups:
        _set_groups(context, settings.groups)
    try:
        context.use_certificate_chain_file(certificate_file)
    except SSL.Error as error:
        raise ConfigError(f"cannot use {certificate_file}: {_openssl_reason(error)}", "tls.certificate_file") from None
    try:
        context.use_privatekey_file(private_key_file)
        context.check_privatekey()
    except SSL.Error as error:
        # The message names the file, never the key material.
        raise ConfigError(f"cannot use {private_key_file}: {_openssl_reason(error)}", "tls.private_key_file") from None
    return context


def _set_groups(context: SSL.Context, groups) -> None:
    # pyOpenSSL has no API for the group list; cryptography's bindings
    # expose SSL_CTX_set1_curves_list (OpenSSL's older name for it).
    from OpenSSL._util import lib

    if lib.SSL_CTX_set1_curves_list(context._context, ":".join(groups).encode("ascii")) != 1:
        raise ConfigError(f"OpenSSL does not know (all of) the groups {list(groups)}", "tls.groups")


def _openssl_reason(error: SSL.Error) -> str:
    details = error.args[0] if error.args else None
    if isinstance(details, list) and details and isinstance(details[0], tuple):
        return "; ".join(str(item[-1]) for item in details)
    return str(error)


def client_context(settings: TLSSettings, identity: Identity) -> SSL.Context:
    """For the silent direction: we send the ClientHello, the device is the TLS server."""
    context = base_context(settings, identity.certificate_file, identity.private_key_file)
    if settings.alpn_protocols:
        context.set_alpn_protos([name.encode("ascii") for name in settings.alpn_protocols])
    # A TLS server always shows its certificate, and OpenSSL's verdict is
    # not enforced anyway: no verification mode, so no Python verify
    # callback per certificate (three calls per handshake).
    context.set_verify(SSL.VERIFY_NONE)
    # We never resume: no session cache, and no TLS 1.2 ticket asked for.
    context.set_options(SSL.OP_NO_TICKET)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return context


def server_context(settings: TLSSettings, identity: Identity) -> SSL.Context:
    """For the ClientHello direction: the device is the TLS client and must show a certificate."""
    context = base_context(settings, identity.certificate_file, identity.private_key_file)
    # Ask for the device's certificate and let the handshake finish whatever
    # OpenSSL thinks of it (the verdict comes after the handshake).
    context.set_verify(SSL.VERIFY_PEER, _accept_for_now)
    # No CA list in the CertificateRequest: pyOpenSSL's API for it is
    # deprecated, and a pinned self-signed device certificate must still be
    # offered.  Devices send their one certificate anyway.
    if settings.alpn_protocols:
        context.set_alpn_select_callback(_alpn_selector(settings.alpn_protocols))
    # No resumption: every call home shows and proves its certificate.
    # OpenSSL's default stateless TLS 1.3 tickets cost ~0.1 ms of CPU and
    # 1.4 KB per handshake and, as a verifying server without a session id
    # context, OpenSSL fails the whole handshake ("session id context
    # uninitialized") of a device that offers one back.  With stateful
    # tickets and no session cache an offered session is simply unknown.
    context.set_options(SSL.OP_NO_TICKET)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return context


def _alpn_selector(ours: Sequence[str]):
    preferred = [name.encode("ascii") for name in ours]

    def select(connection, offered):
        for name in preferred:
            if name in offered:
                return name
        # Go on without ALPN: the decision then falls to who speaks first.
        return SSL.NO_OVERLAPPING_PROTOCOLS

    return select


@implementer(IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
class ConnectionCreator:
    """What L{twisted.protocols.tls.TLSMemoryBIOFactory} takes: one OpenSSL connection per TCP connection."""

    def __init__(self, context: SSL.Context, prepare=None):
        self.context = context
        #: Called with each new connection (the verifier notes its store on it).
        self.prepare = prepare

    def clientConnectionForTLS(self, protocol) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self.prepare is not None:
            self.prepare(connection)
        return connection

    def serverConnectionForTLS(self, protocol) -> SSL.Connection:
        return self.clientConnectionForTLS(protocol)
