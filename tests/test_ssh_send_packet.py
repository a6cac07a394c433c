"""SSH packets with padding from a buffered os.urandom: conch's bytes, without a system call per packet."""

import os
import zlib
from types import SimpleNamespace

from twisted.conch.ssh import transport
from twisted.python import randbytes
from twisted.trial import unittest

from callhome_mux.ssh import send_packet
from callhome_mux.ssh.send_packet import SendPacketMixin


class Ours(SendPacketMixin, transport.SSHTransportBase):
    pass


def sender(cls, cipher=b"aes256-ctr", mac=b"hmac-sha2-256", keys=None):
    endpoint = cls()
    endpoint.sent = []
    endpoint.transport = SimpleNamespace(write=endpoint.sent.append)
    ciphers = transport.SSHCiphers(cipher, cipher, mac, mac)
    ciphers.setKeys(*keys)
    endpoint.currentEncryptions = ciphers
    endpoint.outgoingPacketSequence = 0
    endpoint.outgoingCompression = None
    endpoint._keyExchangeState = endpoint._KEY_EXCHANGE_NONE
    endpoint._blockedByKeyExchange = []
    return endpoint


class SameBytes(unittest.TestCase):
    def setUp(self):
        # The same padding for both: conch's from its secureRandom, ours from the pool.
        self.stream = os.urandom(1 << 16)
        self.conch_offset = 0

        def conch_random(count, fallback=False):
            start = self.conch_offset
            self.conch_offset += count
            return self.stream[start : start + count]

        self.patch(randbytes, "secureRandom", conch_random)
        self.patch(send_packet, "PADDING", send_packet._PaddingPool())
        self.patch(os, "urandom", lambda count: self.stream[: count])

    def pair(self, cipher, mac):
        keys = (os.urandom(16), os.urandom(32), os.urandom(16), os.urandom(32), os.urandom(64), os.urandom(64))
        return sender(transport.SSHTransportBase, cipher, mac, keys), sender(Ours, cipher, mac, keys)

    def test_same_packets_as_conch(self):
        for cipher, mac in ((b"aes256-ctr", b"hmac-sha2-256"), (b"aes128-ctr", b"hmac-sha2-512"), (b"none", b"none")):
            self.conch_offset = 0
            send_packet.PADDING._pool = b""
            theirs, ours = self.pair(cipher, mac)
            for size in list(range(0, 70)) + [1000, 32768, 40000]:
                payload = os.urandom(size)
                theirs.sendPacket(94, payload)
                ours.sendPacket(94, payload)
            self.assertEqual(ours.sent, theirs.sent, (cipher, mac))
            self.assertEqual(ours.outgoingPacketSequence, theirs.outgoingPacketSequence)


class Fallbacks(unittest.TestCase):
    def keys(self):
        return (os.urandom(16), os.urandom(32), os.urandom(16), os.urandom(32), os.urandom(64), os.urandom(64))

    def test_conchs_path_during_a_key_exchange(self):
        ours = sender(Ours, keys=self.keys())
        ours._keyExchangeState = ours._KEY_EXCHANGE_REQUESTED
        ours.sendPacket(94, b"held")  # not a key exchange message: conch holds it back
        self.assertEqual(ours.sent, [])
        self.assertEqual(ours._blockedByKeyExchange, [(94, b"held")])

    def test_conchs_path_with_compression(self):
        ours = sender(Ours, keys=self.keys())
        ours.outgoingCompression = zlib.compressobj(6)
        calls = []
        self.patch(transport.SSHTransportBase, "sendPacket", lambda self, kind, payload: calls.append((kind, payload)))
        ours.sendPacket(94, b"data")
        self.assertEqual(calls, [(94, b"data")])


class PaddingPoolTests(unittest.TestCase):
    def test_one_system_call_per_pool_not_per_packet(self):
        fetched = []

        def urandom(count):
            fetched.append(count)
            return (bytes(range(256)) * (count // 256 + 1))[:count]

        self.patch(os, "urandom", urandom)
        pool = send_packet._PaddingPool(size=1024)
        taken = [pool.take(16) for _ in range(64)]
        self.assertEqual(fetched, [1024])
        self.assertEqual(b"".join(taken), (bytes(range(256)) * 4)[:1024], "every byte handed out once, in order")
        pool.take(1)
        self.assertEqual(fetched, [1024, 1024])

    def test_more_than_a_pool_at_once(self):
        pool = send_packet._PaddingPool(size=8)
        self.assertEqual(len(pool.take(20)), 20)
        self.assertEqual(len(pool.take(3)), 3)

    def test_the_transport_uses_the_mixin(self):
        from callhome_mux.ssh.client import CallHomeClientTransport

        self.assertTrue(issubclass(CallHomeClientTransport, SendPacketMixin))
        self.assertLess(CallHomeClientTransport.__mro__.index(SendPacketMixin),
                        CallHomeClientTransport.__mro__.index(transport.SSHTransportBase))
