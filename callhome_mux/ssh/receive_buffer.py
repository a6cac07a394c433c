"""
An SSH transport receive path that copies each received byte once into a
reusable buffer, instead of once per packet.

conch's C{SSHTransportBase.dataReceived} does C{self.buf = self.buf + data}
(a new C{bytes} of everything buffered, per TCP read) and C{getPacket}
re-slices the buffer for every packet it takes out (C{self.buf =
self.buf[4 + packetLen:]} and again for the MAC): a read holding k packets
copies what follows each of them, k times.  With 32 KiB packets and 64 KiB
reads every buffer is above glibc's mmap threshold, so each of those copies
is a fresh mapping, page-faulted in and unmapped again.

L{ReceiveBufferMixin} keeps the received bytes in one C{bytearray}: a read
is appended to it (amortised, no new object), a packet is decrypted from a
memoryview of it and removed from the front (C{del buf[:n]}, which CPython
does by moving the start pointer).  The packet checks are conch's, in
conch's order, with conch's disconnect reasons: length limit, block
multiple, decryption length, MAC.  The version exchange is left to conch;
the buffer takes over from the first packet.

What conch would need for this mixin to go: C{getPacket} working on a
C{bytearray} (or a list of reads plus an offset) instead of re-slicing
C{self.buf}; tests/test_ssh_receive_buffer.py feeds packets split at every
byte boundary through both.
"""

from __future__ import annotations

import struct
from typing import Optional

from twisted.conch.ssh import transport

_LENGTHS = struct.Struct("!LB")
# RFC 4253 §6.1 asks for at least 35000; conch refuses more than 1 MiB.
_MAX_PACKET_LENGTH = 1048576


class ReceiveBufferMixin:
    """Mix into an L{transport.SSHTransportBase} subclass, before it."""

    _receive_buffer: Optional[bytearray] = None
    # The first block of the packet being received, already decrypted
    # (conch keeps it as C{self.first}).
    _first_block: Optional[bytes] = None

    def dataReceived(self, data: bytes) -> None:
        if not self.gotVersion:
            # conch reads the version line; packets after it in the same
            # read come through our getPacket.
            super().dataReceived(data)
            return
        buffer = self._buffer()
        buffer += data
        packet = self.getPacket()
        while packet:
            self.dispatchMessage(packet[0], packet[1:])
            packet = self.getPacket()

    def _buffer(self) -> bytearray:
        buffer = self._receive_buffer
        if buffer is None:
            # From conch's buffer (what followed the version line) to ours.
            buffer = self._receive_buffer = bytearray(self.buf)
            self.buf = b""
        return buffer

    def getPacket(self) -> Optional[bytes]:
        buffer = self._buffer()
        ciphers = self.currentEncryptions
        block_size = ciphers.decBlockSize
        mac_size = ciphers.verifyDigestSize
        if len(buffer) < block_size:
            return None
        first = self._first_block
        if first is None:
            first = ciphers.decrypt(bytes(buffer[:block_size]))
        else:
            self._first_block = None
        packet_length, padding_length = _LENGTHS.unpack_from(first)
        if packet_length > _MAX_PACKET_LENGTH:
            self.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"bad packet length %d" % packet_length)
            return None
        end = 4 + packet_length
        if len(buffer) < end + mac_size:
            self._first_block = first
            return None
        if end % block_size != 0:
            self.sendDisconnect(
                transport.DISCONNECT_PROTOCOL_ERROR,
                b"bad packet mod (%i%%%i == %i)" % (end, block_size, end % block_size),
            )
            return None
        with memoryview(buffer) as view, view[block_size:end] as encrypted:
            rest = ciphers.decrypt(encrypted)
            if type(rest) is not bytes:  # the null cipher returns what it is given
                rest = bytes(rest)
            mac = bytes(view[end : end + mac_size]) if mac_size else b""
        del buffer[: end + mac_size]
        packet = first + rest
        if len(packet) != end:
            self.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"bad decryption")
            return None
        if mac_size and not ciphers.verify(self.incomingPacketSequence, packet, mac):
            self.sendDisconnect(transport.DISCONNECT_MAC_ERROR, b"bad MAC")
            return None
        payload = packet[5:-padding_length]
        if self.incomingCompression:
            try:
                payload = self.incomingCompression.decompress(payload)
            except Exception:
                self._log.failure("Error decompressing payload")
                self.sendDisconnect(transport.DISCONNECT_COMPRESSION_ERROR, b"compression error")
                return None
        self.incomingPacketSequence += 1
        return payload
