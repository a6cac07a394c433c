"""
What a finished TLS handshake negotiated, read straight from OpenSSL.

pyOpenSSL's getters (and Twisted's C{negotiatedProtocol} over them) cost
~4-6 us per call home in all: a Python method each, two C{ffi.new} for
ALPN, a decode per name.  The protocol version and cipher names OpenSSL
returns are its own static strings, decoded once per address here; the
group name (held by the context, which may be freed and its memory
reused) and the ALPN protocol are read every time.  Without the bindings
this needs, pyOpenSSL's getters give the same answers.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from OpenSSL import SSL

try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _NEEDED = (
        "SSL_get_version",
        "SSL_get_current_cipher",
        "SSL_CIPHER_get_name",
        "SSL_get_session",
        "SSL_get0_group_name",
        "SSL_get0_alpn_selected",
    )
    _BINDINGS = all(hasattr(_lib, name) for name in _NEEDED)
except ImportError:  # pragma: no cover - a pyOpenSSL without the private module
    _BINDINGS = False

#: Static name strings of OpenSSL (versions, cipher suites) by address.
_STATIC_NAMES: Dict[object, str] = {}


def negotiated(connection: SSL.Connection) -> Tuple[str, Optional[str], Optional[str], Optional[bytes]]:
    """C{(protocol version name, cipher name, group name, ALPN protocol or None)} of a finished handshake."""
    if not _BINDINGS:
        alpn = connection.get_alpn_proto_negotiated()
        return (
            connection.get_protocol_version_name(),
            connection.get_cipher_name(),
            connection.get_group_name() if hasattr(connection, "get_group_name") else None,
            alpn or None,
        )
    ssl = connection._ssl
    version = _static_name(_lib.SSL_get_version(ssl))
    cipher = _lib.SSL_get_current_cipher(ssl)
    cipher_name = None if cipher == _ffi.NULL else _static_name(_lib.SSL_CIPHER_get_name(cipher))
    group_name = None
    # (SSL_get0_group_name must not be asked without a session: pyOpenSSL's guard.)
    if _lib.SSL_get_session(ssl) != _ffi.NULL:
        group = _lib.SSL_get0_group_name(ssl)
        if group != _ffi.NULL:
            group_name = _ffi.string(group).decode("utf-8")
    data = _ffi.new("unsigned char **")
    length = _ffi.new("unsigned int *")
    _lib.SSL_get0_alpn_selected(ssl, data, length)
    alpn = _ffi.buffer(data[0], length[0])[:] if length[0] else None
    return version, cipher_name, group_name, alpn


def _static_name(pointer) -> str:
    # cffi pointers hash and compare by address.
    name = _STATIC_NAMES.get(pointer)
    if name is None:
        name = _ffi.string(pointer).decode("utf-8")
        if len(_STATIC_NAMES) < 64:
            _STATIC_NAMES[pointer] = name
    return name
