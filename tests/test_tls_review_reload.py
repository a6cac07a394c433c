"""
Review of 3464613 (the chain OpenSSL verified in the handshake is taken as
is): a trust reload that lands while a silent device's handshake is in
flight, after OpenSSL checked the device's chain with the old anchors but
before the handshake finished, must not let that old verdict stand.  Before
3464613 every chain was verified after the handshake, with the anchors in
force then.

The handshake runs over pyOpenSSL memory BIOs between the handler's own
client context and a device server context, so that the trust reload
happens exactly between the two flights: no timing, no sockets needed.
"""

from __future__ import annotations

import dataclasses
import os

from OpenSSL import SSL, crypto
from twisted.trial.unittest import TestCase

from callhome_mux.connection import ConnectionKind
from callhome_mux.testing.certs import test_pki
from callhome_mux.tls import verify
from tests.test_tls_handler import Manager

SILENT = ConnectionKind.TLS_SILENT


def _device_context(issued, max_version=None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    context.use_certificate(issued.certificate)
    context.use_privatekey(issued.key)
    return context


def _pump(source: SSL.Connection, target: SSL.Connection) -> None:
    while True:
        try:
            data = source.bio_read(65536)
        except SSL.WantReadError:
            return
        target.bio_write(data)


def _records(data: bytes) -> list:
    records, index = [], 0
    while index < len(data):
        end = index + 5 + int.from_bytes(data[index + 3 : index + 5], "big")
        records.append(data[index:end])
        index = end
    return records


def _step(connection: SSL.Connection) -> bool:
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        return False
    return True


class ReloadDuringHandshakeTests(TestCase):
    def handshake_with_reload_between_flights(self, max_version):
        pki = test_pki()
        manager = Manager(self, SILENT)
        handler = manager.handler
        client = handler._creators[SILENT].clientConnectionForTLS(None)
        client.set_connect_state()
        device = SSL.Connection(_device_context(pki.device, max_version), None)
        device.set_accept_state()

        self.assertFalse(_step(client))  # ClientHello
        _pump(client, device)
        self.assertFalse(_step(device))  # the device's flight, its certificate in it
        if max_version == SSL.TLS1_2_VERSION:
            _pump(device, client)
            # TLS 1.2: the client checks the certificate, sends its own
            # flight and waits for the device's Finished.
            self.assertFalse(_step(client))
            _pump(client, device)
            self.assertTrue(_step(device))
            finished = device.bio_read(65536)
        else:
            # TLS 1.3: the device's one flight ends with its Finished
            # (a record of its own); the client reads the rest first and
            # checks the certificate (and its CertificateVerify).
            records = _records(device.bio_read(65536))
            client.bio_write(b"".join(records[:-1]))
            self.assertFalse(_step(client))
            finished = records[-1]
        # The operator removes the CA (say it was compromised) and reloads.
        path = os.path.join(os.path.dirname(manager.paths["ca.crt"]), "other-ca-only.crt")
        with open(path, "wb") as handle:
            handle.write(pki.other_ca.certificate_pem)
        handler.settings = dataclasses.replace(handler.settings, trust_anchor_files=(path,))
        handler.reloadTrust()
        if finished is not None:
            client.bio_write(finished)
        self.assertTrue(_step(client))
        return handler, client

    def assertRefusedAfterReload(self, handler, client):
        with self.assertRaises(verify.CertificateRefused) as caught:
            handler.verifier.verify_connection(client, verify.PEER_IS_SERVER, "127.0.0.1:1")
        self.assertEqual(caught.exception.reason, verify.UNTRUSTED_CHAIN)

    def test_tls12_reload_between_certificate_and_finished(self):
        """The CA went away before the handshake finished: the chain is untrusted, as before 3464613."""
        self.assertRefusedAfterReload(*self.handshake_with_reload_between_flights(SSL.TLS1_2_VERSION))

    def test_tls13_reload_between_certificate_and_finished(self):
        """The same with TLS 1.3: the device holds back its Finished until the reload."""
        self.assertRefusedAfterReload(*self.handshake_with_reload_between_flights(None))

    def test_no_reload_still_taken_from_the_handshake(self):
        """Without a reload the chain OpenSSL verified is still taken as is (no second verification)."""
        pki = test_pki()
        manager = Manager(self, SILENT)
        client = manager.handler._creators[SILENT].clientConnectionForTLS(None)
        client.set_connect_state()
        device = SSL.Connection(_device_context(pki.device), None)
        device.set_accept_state()
        while not _step(client):
            _pump(client, device)
            _step(device)
            _pump(device, client)
        checked = []
        original = verify.crypto.X509StoreContext
        self.patch(verify.crypto, "X509StoreContext", lambda *a: checked.append(a) or original(*a))
        self.assertIs(client._callhome_store, manager.handler.verifier._store())
        identified = manager.handler.verifier.verify_connection(client, verify.PEER_IS_SERVER, "127.0.0.1:1")
        self.assertEqual(identified.device_id, "device1.example.net")
        self.assertEqual(checked, [])
        # The note is dropped once used: a long session keeps no store of a reload long past.
        self.assertIsNone(client._callhome_store)
