"""
L{callhome_mux.tls.negotiated}: what OpenSSL negotiated, the same as pyOpenSSL's getters say.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from callhome_mux.tls import negotiated as negotiated_module
from callhome_mux.tls.negotiated import negotiated
from tests.test_tls_transport import Pair


def pyopenssl_says(connection):
    alpn = connection.get_alpn_proto_negotiated()
    return (
        connection.get_protocol_version_name(),
        connection.get_cipher_name(),
        connection.get_group_name(),
        alpn or None,
    )


class NegotiatedTests(TestCase):
    def test_bindings_available(self):
        self.assertTrue(negotiated_module._BINDINGS)

    def test_same_as_pyopenssl_after_a_handshake(self):
        pair = Pair(self)
        connection = pair.tls.getHandle()
        self.assertTrue(pair.tls._handshakeDone)
        ours = negotiated(connection)
        self.assertEqual(ours, pyopenssl_says(connection))
        self.assertEqual(ours[0], "TLSv1.3")
        self.assertIsNone(ours[3], "the device offered no ALPN")
        # Asked again (names now cached by address): the same.
        self.assertEqual(negotiated(connection), ours)

    def test_without_the_bindings_pyopenssl_answers(self):
        pair = Pair(self)
        connection = pair.tls.getHandle()
        self.patch(negotiated_module, "_BINDINGS", False)
        self.assertEqual(negotiated(connection), pyopenssl_says(connection))
