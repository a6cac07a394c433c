"""Our SSH packet MACs (HMAC states prepared once per key) give conch's bytes for every MAC it offers."""

import gc
import os

from twisted.conch.ssh import transport
from twisted.trial import unittest

from callhome_mux.ssh.mac import PrecomputedMACCiphers


def pair(mac_name: bytes):
    # One integrity key both ways: a MAC we make must then verify.
    integrity = os.urandom(64)
    keys = (os.urandom(16), os.urandom(32), os.urandom(16), os.urandom(32), integrity, integrity)
    theirs = transport.SSHCiphers(b"aes256-ctr", b"aes256-ctr", mac_name, mac_name)
    ours = PrecomputedMACCiphers(b"aes256-ctr", b"aes256-ctr", mac_name, mac_name)
    theirs.setKeys(*keys)
    ours.setKeys(*keys)
    return theirs, ours


class PrecomputedMACTests(unittest.TestCase):
    def test_same_mac_as_conch_for_every_algorithm(self):
        names = [name for name in transport.SSHCiphers.macMap if name != b"none"]
        self.assertIn(b"hmac-sha2-512", names)
        for name in names:
            theirs, ours = pair(name)
            for seqid, data in ((0, b""), (1, b"x"), (4294967295, os.urandom(1000)), (77, os.urandom(40000))):
                mac = theirs.makeMAC(seqid, data)
                self.assertEqual(ours.makeMAC(seqid, data), mac, name)
                self.assertTrue(theirs.verify(seqid, data, mac), name)
                self.assertTrue(ours.verify(seqid, data, mac), name)
                self.assertFalse(ours.verify((seqid + 1) % 2**32, data, mac), name)
                self.assertFalse(ours.verify(seqid, data + b"!", mac), name)
                # The prepared states are copied, never used up.
                self.assertEqual(ours.makeMAC(seqid, data), mac, name)

    def test_conchs_mac_parameters_are_not_kept_once_prepared(self):
        """Only the prepared states stay: no _MACParams (padded keys, and a dict for the raw key) per direction."""
        theirs, ours = pair(b"hmac-sha2-256")
        self.assertIsNone(ours.outMAC)
        self.assertIsNone(ours.inMAC)
        self.assertEqual(ours.verifyDigestSize, theirs.verifyDigestSize)
        self.assertEqual([type(o) for o in gc.get_referents(ours) if isinstance(o, (tuple, dict))], [])
        mac = theirs.makeMAC(9, b"packet")
        self.assertEqual(ours.makeMAC(9, b"packet"), mac)
        self.assertTrue(ours.verify(9, b"packet", mac))

    def test_no_mac(self):
        ours = PrecomputedMACCiphers(b"none", b"none", b"none", b"none")
        ours.setKeys(b"", b"", b"", b"", b"", b"")
        self.assertEqual(ours.makeMAC(3, b"data"), b"")
        self.assertTrue(ours.verify(3, b"data", b""))
        self.assertFalse(ours.verify(3, b"data", b"x"))

    def test_sequence_numbers_wrap_at_two_to_the_32(self):
        """RFC 4253 §6.4: the sequence number wraps to zero after 2^32 packets (conch's counters do not: struct.error)."""
        for name in (b"hmac-sha2-512", b"hmac-sha2-256", b"hmac-sha1"):
            theirs, ours = pair(name)
            data = os.urandom(100)
            for seqid in (0, 5, 2**32 - 1):
                wrapped = seqid + 2**32
                self.assertEqual(ours.makeMAC(wrapped, data), theirs.makeMAC(seqid, data), name)
                self.assertTrue(ours.verify(wrapped, data, theirs.makeMAC(seqid, data)), name)
                self.assertFalse(ours.verify(wrapped + 1, data, theirs.makeMAC(seqid, data)), name)
