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
import struct

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


def _packet_reads(payloads, mac: bytes = b"hmac-sha2-512"):
    """Each payload's whole packet, as one read each."""
    sender = _sender(_ciphers(False, mac))
    reads = []
    for payload in payloads:
        sender.transport.data.clear()
        sender.sendPacket(MSG_CHANNEL_DATA, payload)
        reads.append(b"".join(sender.transport.data))
    return reads


def _packet(sender: transport.SSHCiphers, sequence: int, payload: bytes):
    """(encrypted packet with its MAC, plaintext) of C{payload}, padded to 16 bytes as conch pads."""
    padding = 16 - ((6 + len(payload)) % 16)
    if padding < 4:
        padding += 16
    plain = struct.pack("!LBB", 2 + len(payload) + padding, padding, MSG_CHANNEL_DATA) + payload + b"p" * padding
    return sender.encrypt(plain) + sender.makeMAC(sequence, plain), plain


def _reencrypt_first_block(plain: bytes, packet: bytes, top_byte, length=None) -> bytes:
    """C{packet} with its length field changed: the keystream is recovered from the known plaintext."""
    changed = bytearray(plain[:16])
    if top_byte is not None:
        changed[0] = top_byte
    if length is not None:
        changed[:4] = struct.pack("!L", length)
    keystream = bytes(a ^ b for a, b in zip(packet[:16], plain[:16]))
    return bytes(a ^ b for a, b in zip(changed, keystream)) + packet[16:]


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

    def test_each_read_copied_at_most_once_packets_taken_by_offset(self):
        """
        No copy per packet: the packets of one read are taken from the same
        buffer by offset; a read is joined only to what is left of the
        previous ones, and kept as it is when nothing is left.
        """
        payloads = [os.urandom(3000) for _ in range(12)]
        stream = _stream(payloads)
        receiver = BufferedReceiver()
        buffers = []
        dispatch = receiver.dispatchMessage
        receiver.dispatchMessage = lambda number, payload: (buffers.append(receiver._receive_buffer),
                                                            dispatch(number, payload))
        copied = 0
        left = 0
        for start in range(0, len(stream), 10000):
            read = stream[start : start + 10000]
            before = len(buffers)
            receiver.dataReceived(read)
            during = buffers[before:]
            self.assertGreaterEqual(len(during), 2, "several packets per read")
            self.assertTrue(all(buffer is during[0] for buffer in during), "one buffer for the packets of a read")
            if left == 0:
                self.assertIs(during[0], read, "a read starting at a packet boundary is not copied")
            else:
                self.assertEqual(len(during[0]), left + len(read))
                copied += len(during[0])
            left = len(receiver._receive_buffer) - receiver._receive_offset
        self.assertLess(copied, 2 * len(stream))
        self.assertEqual(receiver.messages, [(MSG_CHANNEL_DATA, payload) for payload in payloads])

    def test_an_idle_connection_keeps_no_read(self):
        stream = _stream([os.urandom(5000), b"x"])
        receiver = BufferedReceiver()
        receiver.dataReceived(stream[:4000])
        self.assertGreater(len(receiver._receive_buffer), 0, "a partial packet is kept")
        receiver.dataReceived(stream[4000:])
        self.assertEqual(receiver._receive_buffer, b"")
        self.assertEqual(len(receiver.messages), 2)

    def test_padding_zero_or_too_long_like_conch(self):
        """conch's packet[5:-padding] is empty for both: nothing dispatched, the loop waits for the next read."""
        for padding in (0, 40):
            streams = []
            for cls in (ConchReceiver, BufferedReceiver):
                sender = _ciphers(False)
                # packet_length 28, then padding_length, message 94 and 22 bytes: 32 bytes, one MAC.
                plain = struct.pack("!LB", 28, padding) + bytes([MSG_CHANNEL_DATA]) + b"d" * 26
                encrypted = sender.encrypt(plain) + sender.makeMAC(0, plain)
                receiver = _receive(cls, encrypted, [])
                streams.append((receiver.messages[:], receiver.incomingPacketSequence, receiver.disconnects[:]))
            self.assertEqual(streams[0], streams[1], f"padding {padding}")
            self.assertEqual(streams[1], ([], 1, []))

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

    def test_one_whole_packet_per_read_like_conch_without_the_buffer(self):
        """The usual read of a call home (one small packet) is taken without buffering or copying the read."""
        payloads = [b"first", b"", os.urandom(100), os.urandom(33000), b"<rpc-reply/>" * 3]
        reads = _packet_reads(payloads)
        receivers = [ConchReceiver(), BufferedReceiver()]
        appended = []
        ours = receivers[1]
        ours._append = lambda data: appended.append(data)
        for read in reads:
            for receiver in receivers:
                receiver.dataReceived(read)
        conch, ours = receivers
        self.assertEqual(ours.messages, conch.messages)
        self.assertEqual(ours.messages, [(MSG_CHANNEL_DATA, payload) for payload in payloads])
        self.assertEqual(ours.incomingPacketSequence, len(payloads))
        self.assertEqual(appended, [])
        self.assertIsNone(ours._first_block)

    def test_one_bad_packet_per_read_refused_like_conch(self):
        """Each check of a whole-packet read (MAC, length limit, block multiple, padding) as conch makes it."""

        def bad_mac(packet, _plain):
            return packet[:-1] + bytes([packet[-1] ^ 1])

        def too_long(packet, plain):
            return _reencrypt_first_block(plain, packet, 0x7F)

        def not_a_block_multiple(packet, plain):
            return _reencrypt_first_block(plain, packet, None, length=plain_length(plain) - 1)

        def plain_length(plain):
            return struct.unpack("!L", plain[:4])[0]

        for tamper in (bad_mac, too_long, not_a_block_multiple):
            results = []
            for cls in (ConchReceiver, BufferedReceiver):
                sender = _ciphers(False)
                receiver = cls()
                good = _packet(sender, 0, b"good")
                receiver.dataReceived(good[0])
                packet, plain = _packet(sender, 1, b"tampered")
                receiver.dataReceived(tamper(packet, plain))
                results.append((receiver.messages, receiver.disconnects, receiver.incomingPacketSequence))
            self.assertEqual(results[1], results[0], tamper.__name__)
            self.assertEqual(len(results[1][1]), 1, tamper.__name__)

    def test_packets_either_side_of_the_sliced_size_like_conch(self):
        """Small packets are decrypted from slices, larger ones from views: the same messages, however cut."""
        payloads = [os.urandom(size) for size in (2000, 2020, 2030, 2040, 2060, 3000)]
        stream = _stream(payloads)
        expected = [(MSG_CHANNEL_DATA, payload) for payload in payloads]
        for size in (7, 1000, 2047, 2048, 2049, 2100, 4096):
            cuts = range(size, len(stream), size)
            ours, conch = _receive(BufferedReceiver, stream, cuts), _receive(ConchReceiver, stream, cuts)
            self.assertEqual(ours.messages, expected, f"reads of {size}")
            self.assertEqual(conch.messages, expected, f"reads of {size}")

    def test_a_read_of_one_packet_and_a_part_leaves_the_part_buffered(self):
        payloads = [b"one", os.urandom(50), os.urandom(5000)]
        reads = _packet_reads(payloads)
        receiver = BufferedReceiver()
        receiver.dataReceived(reads[0])
        receiver.dataReceived(reads[1] + reads[2][:100])
        self.assertEqual(len(receiver.messages), 2)
        receiver.dataReceived(reads[2][100:])
        self.assertEqual(receiver.messages, [(MSG_CHANNEL_DATA, payload) for payload in payloads])
        self.assertEqual(receiver._receive_buffer, b"")

    def test_the_call_home_transport_uses_it(self):
        self.assertTrue(issubclass(CallHomeClientTransport, ReceiveBufferMixin))
