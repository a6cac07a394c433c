"""
L{ReceiveBufferMixin}: conch's packet checks on a reusable receive buffer.

Each test runs conch's own receive path and ours on the same bytes: both
must dispatch the same messages and refuse the same bad packets, however
the TCP reads cut the stream.  What differs is how the buffer is kept:
conch builds a new C{bytes} per read and per packet taken out; ours keeps
one C{bytearray} for the life of the connection.
"""

from __future__ import annotations

import os

from twisted.conch.ssh import transport
from twisted.trial import unittest

from callhome_mux.ssh.client import CallHomeClientTransport
from callhome_mux.ssh.receive_buffer import ReceiveBufferMixin

MSG_CHANNEL_DATA = 94


def _ciphers(receiving: bool, mac: bytes = b"hmac-sha2-512") -> transport.SSHCiphers:
    ciphers = transport.SSHCiphers(b"aes256-ctr", b"aes256-ctr", mac, mac)
    keys = {"iv1": b"C" * 16, "key1": b"A" * 32, "iv2": b"D" * 16, "key2": b"B" * 32, "mac1": b"E" * 64, "mac2": b"F" * 64}
    if receiving:
        ciphers.setKeys(keys["iv1"], keys["key1"], keys["iv2"], keys["key2"], keys["mac1"], keys["mac2"])
    else:
        ciphers.setKeys(keys["iv2"], keys["key2"], keys["iv1"], keys["key1"], keys["mac2"], keys["mac1"])
    return ciphers


class _Recorder:
    """Writes of a transport (a disconnect is a packet too)."""

    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)

    def loseConnection(self):
        self.data.append(b"<lost>")


class ConchReceiver(transport.SSHTransportBase):
    """conch's receive path, after the version exchange, with keys set."""

    def __init__(self, mac: bytes = b"hmac-sha2-512"):
        self.gotVersion = True
        self.buf = b""
        self.currentEncryptions = _ciphers(True, mac)
        self.incomingPacketSequence = 0
        self.outgoingPacketSequence = 0
        self.incomingCompression = self.outgoingCompression = None
        self._keyExchangeState = self._KEY_EXCHANGE_NONE
        self.transport = _Recorder()
        self.messages = []
        self.disconnects = []

    def dispatchMessage(self, number, payload):
        self.messages.append((number, bytes(payload)))

    def sendDisconnect(self, reason, description):
        self.disconnects.append((reason, description))


class BufferedReceiver(ReceiveBufferMixin, ConchReceiver):
    pass


def _plain() -> transport.SSHCiphers:
    """What conch uses before the first key exchange."""
    ciphers = transport.SSHCiphers(b"none", b"none", b"none", b"none")
    ciphers.setKeys(b"", b"", b"", b"", b"", b"")
    return ciphers


def _sender(ciphers: transport.SSHCiphers) -> transport.SSHTransportBase:
    """A conch transport that only sends packets (with C{ciphers}) into a recorder."""
    sender = transport.SSHTransportBase()
    sender.transport = _Recorder()
    sender.currentEncryptions = ciphers
    sender.outgoingPacketSequence = 0
    sender.outgoingCompression = None
    sender._keyExchangeState = sender._KEY_EXCHANGE_NONE
    return sender


def _stream(payloads, mac: bytes = b"hmac-sha2-512") -> bytes:
    sender = _sender(_ciphers(False, mac))
    for payload in payloads:
        sender.sendPacket(MSG_CHANNEL_DATA, payload)
    return b"".join(sender.transport.data)


def _receive(cls, stream, cuts):
    receiver = cls()
    start = 0
    for cut in list(cuts) + [len(stream)]:
        receiver.dataReceived(stream[start:cut])
        start = cut
    return receiver


class ReceiveBufferTests(unittest.TestCase):
    PAYLOADS = [b"", b"x", os.urandom(100), os.urandom(33000), b"<rpc-reply/>" * 3]

    def test_split_at_every_byte_boundary_like_conch(self):
        stream = _stream(self.PAYLOADS[:3] + self.PAYLOADS[4:])
        expected = [(MSG_CHANNEL_DATA, payload) for payload in self.PAYLOADS[:3] + self.PAYLOADS[4:]]
        for cut in range(len(stream) + 1):
            for cls in (ConchReceiver, BufferedReceiver):
                receiver = _receive(cls, stream, [cut])
                self.assertEqual(receiver.messages, expected, f"{cls.__name__}, cut at {cut}")
                self.assertEqual(receiver.incomingPacketSequence, len(expected))

    def test_every_read_size_like_conch(self):
        stream = _stream(self.PAYLOADS)
        for size in (1, 7, 16, 100, 4096, 65536):
            cuts = range(size, len(stream), size)
            ours, conch = _receive(BufferedReceiver, stream, cuts), _receive(ConchReceiver, stream, cuts)
            self.assertEqual(ours.messages, conch.messages)
            self.assertEqual(len(ours.messages), len(self.PAYLOADS))

    def test_one_buffer_for_every_read(self):
        stream = _stream(self.PAYLOADS)
        receiver = BufferedReceiver()
        receiver.dataReceived(stream[:10])
        buffer = receiver._receive_buffer
        for start in range(10, len(stream), 1000):
            receiver.dataReceived(stream[start : start + 1000])
            self.assertIs(receiver._receive_buffer, buffer)
        self.assertEqual(len(buffer), 0)
        self.assertEqual(len(receiver.messages), len(self.PAYLOADS))

    def test_bad_mac_refused_like_conch(self):
        stream = bytearray(_stream([b"hello"]))
        stream[-1] ^= 1
        for cls in (ConchReceiver, BufferedReceiver):
            receiver = _receive(cls, bytes(stream), [])
            self.assertEqual(receiver.messages, [])
            self.assertEqual(receiver.disconnects, [(transport.DISCONNECT_MAC_ERROR, b"bad MAC")])

    def test_oversized_packet_length_refused_like_conch(self):
        stream = bytearray(_stream([b"hello"], mac=b"none"))
        receivers = []
        for cls in (ConchReceiver, BufferedReceiver):
            receiver = cls(mac=b"none")
            # Decrypting the length field, flipping its top byte, encrypting again.
            plain = bytearray(_ciphers(True, b"none").decrypt(bytes(stream[:16])))
            plain[0] = 0x7F
            stream[:16] = _ciphers(False, b"none").encrypt(bytes(plain))
            receiver.dataReceived(bytes(stream))
            receivers.append(receiver)
        conch, ours = receivers
        self.assertEqual(ours.disconnects, conch.disconnects)
        self.assertEqual(ours.disconnects[0][0], transport.DISCONNECT_PROTOCOL_ERROR)
        self.assertIn(b"bad packet length", ours.disconnects[0][1])
        self.assertEqual(ours.messages, [])

    def test_plain_packets_before_keys_like_conch(self):
        sender = _sender(_plain())
        sender.sendPacket(20, b"kexinit payload")
        sender.sendPacket(21, b"")
        stream = b"".join(sender.transport.data)
        for cut in range(len(stream) + 1):
            for cls in (ConchReceiver, BufferedReceiver):
                receiver = cls()
                receiver.currentEncryptions = _plain()
                receiver.dataReceived(stream[:cut])
                receiver.dataReceived(stream[cut:])
                self.assertEqual(receiver.messages, [(20, b"kexinit payload"), (21, b"")], cls.__name__)

    def test_packets_after_the_version_line_in_the_same_read(self):
        sender = _sender(_plain())
        sender.sendPacket(20, b"first")
        sender.sendPacket(21, b"second")
        stream = b"SSH-2.0-device\r\n" + b"".join(sender.transport.data)
        receiver = BufferedReceiver()
        receiver.gotVersion = False
        receiver.supportedVersions = (b"2.0",)
        receiver.currentEncryptions = _plain()
        receiver.dataReceived(stream[:30])
        receiver.dataReceived(stream[30:])
        self.assertEqual(receiver.messages, [(20, b"first"), (21, b"second")])
        self.assertEqual(receiver.otherVersionString, b"SSH-2.0-device")

    def test_the_call_home_transport_uses_it(self):
        self.assertTrue(issubclass(CallHomeClientTransport, ReceiveBufferMixin))
