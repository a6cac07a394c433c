"""
An SSH transport receive path that copies each received byte once, instead
of once per packet.

conch's C{SSHTransportBase.dataReceived} does C{self.buf = self.buf + data}
(a new C{bytes} of everything buffered, per TCP read) and C{getPacket}
re-slices the buffer for every packet it takes out (C{self.buf =
self.buf[4 + packetLen:]} and again for the MAC): a read holding k packets
copies what follows each of them, k times.

L{ReceiveBufferMixin} keeps the received bytes as one C{bytes} and an
offset: a packet is decrypted from a memoryview of it and the offset moves
past it; a read is joined to what is left of the previous one only when
something is left (a read that starts with a packet is kept as it is).
The packet checks are conch's, in conch's order, with conch's disconnect
reasons: length limit, block multiple, decryption length, MAC.

A read that holds exactly one whole packet, with nothing left of earlier
reads (4 of the 7 reads of a call home after the version line), skips the
buffer: its packet is decrypted from slices of the read, as conch does.
Any other read (part of a packet, several, a packet that fails a check)
goes through the buffer, the first block already decrypted; a read is
the buffer as it is when nothing was left.  callgrind of one read of small
packets (60-byte payloads, prepared MACs in both, instructions per read):
one packet 36,000 in conch's path, 31,000 here; two packets 69,200 in
conch's, 69,100 here.  The
version exchange is left to conch; the buffer takes over from the first
packet.

Why not a C{bytearray} with C{del buf[:n]} (what this was until
2026-11-21): CPython reallocates a bytearray to its exact size when a
deletion leaves less than half of it, and again on the next append: a
malloc, copy and free of 32-64 KiB per packet taken and per read.  Once
large XML trees have been freed the heap is full of small free chunks and
each of those allocations walks them (glibc's malloc_consolidate): in that
state receiving 20 MB took ~95 ms of CPU instead of ~30.

Handing channel data to conch's C{ssh_CHANNEL_DATA} as a view of the
decrypted packet (decrypted with C{update_into}) would save the five
copies each packet of channel data still gets on its way to the channel
(C{first + rest}, the payload, conch's C{packet[1:]}, C{packet[4:]} and
C{getNS}): measured, ~1 ms of 30 for 20 MB, so not done.

What conch would need for this mixin to go: C{getPacket} working on an
offset into its buffer; tests/test_ssh_receive_buffer.py feeds packets split at every byte boundary
through both.
"""

from __future__ import annotations

import struct
from typing import Optional

from twisted.conch.ssh import transport

_LENGTHS = struct.Struct("!LB")
# RFC 4253 §6.1 asks for at least 35000; conch refuses more than 1 MiB.
_MAX_PACKET_LENGTH = 1048576
# Packets up to this size (length field included) are decrypted from a
# slice of the buffer: for small packets the copy costs less than the two
# memoryviews (and cryptography's buffer handling of them): a read of two
# 60-byte packets 78,600 -> 69,100 instructions, conch's 69,200.
_SLICED_BELOW = 2048


class ReceiveBufferMixin:
    """Mix into an L{transport.SSHTransportBase} subclass, before it."""

    # What has been received and not yet taken as packets:
    # _receive_buffer[_receive_offset:].  None until the first packet
    # (conch's self.buf holds what followed the version line until then).
    _receive_buffer: Optional[bytes] = None
    _receive_offset = 0
    # The first block of the packet being received, already decrypted
    # (conch keeps it as C{self.first}).
    _first_block: Optional[bytes] = None

    def dataReceived(self, data: bytes) -> None:
        if not self.gotVersion:
            # conch reads the version line; packets after it in the same
            # read come through our getPacket.
            super().dataReceived(data)
            return
        buffer = self._receive_buffer
        left = self._receive_offset < len(buffer) if buffer is not None else self.buf
        if not left and self._first_block is None and self._whole_packet(data):
            # Nothing was left of earlier reads and this one held exactly one
            # packet (most reads of a call home): taken without the buffer.
            return
        if not left and type(data) is bytes:
            # The read is the buffer (the first block may be decrypted already).
            self._receive_buffer = data
            self._receive_offset = 0
        else:
            self._append(data)
        packet = self.getPacket()
        # An empty payload stops the loop until the next read, as in conch
        # (its "while packet:").
        while packet:
            self.dispatchMessage(packet[0], packet[1:])
            packet = self.getPacket()
        if self._receive_offset == len(self._receive_buffer):
            # All taken: an idle connection keeps no read.
            self._receive_buffer = b""
            self._receive_offset = 0

    def _whole_packet(self, data) -> bool:
        """
        Take C{data} as one whole packet, if it is exactly that; True if done.

        Otherwise the first block stays decrypted for L{getPacket}, which
        makes every check (in conch's order) on the buffered read.
        """
        ciphers = self.currentEncryptions
        block_size = ciphers.decBlockSize
        if len(data) < block_size or type(data) is not bytes or self.incomingCompression:
            return False
        first = ciphers.decrypt(data[:block_size])
        packet_length, padding_length = _LENGTHS.unpack_from(first)
        end = 4 + packet_length
        mac_size = ciphers.verifyDigestSize
        if packet_length > _MAX_PACKET_LENGTH or len(data) != end + mac_size or end % block_size:
            self._first_block = first
            return False
        packet = first + ciphers.decrypt(data[block_size:end])
        if len(packet) != end:
            self.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"bad decryption")
            return True
        if mac_size and not ciphers.verify(self.incomingPacketSequence, packet, data[end:]):
            self.sendDisconnect(transport.DISCONNECT_MAC_ERROR, b"bad MAC")
            return True
        self.incomingPacketSequence += 1
        payload = packet[5:-padding_length]
        # An empty payload is not dispatched, as in conch's "while packet:".
        if payload:
            self.dispatchMessage(payload[0], payload[1:])
        return True

    def _append(self, data) -> None:
        """Add a read to what is left of the previous ones (one copy, only when something is left)."""
        buffer = self._receive_buffer
        if buffer is None:
            # From conch's buffer (what followed the version line) to ours.
            buffer, self.buf = self.buf, b""
        offset = self._receive_offset
        if offset == len(buffer):
            buffer = data if type(data) is bytes else bytes(data)
        else:
            buffer = buffer[offset:] + data
        self._receive_buffer = buffer
        self._receive_offset = 0

    def getPacket(self) -> Optional[bytes]:
        """The next packet's payload, taken out of the buffer, or None (incomplete, or refused with a disconnect)."""
        if self._receive_buffer is None:
            self._append(b"")
        buffer = self._receive_buffer
        base = self._receive_offset
        ciphers = self.currentEncryptions
        block_size = ciphers.decBlockSize
        mac_size = ciphers.verifyDigestSize
        if len(buffer) - base < block_size:
            return None
        first = self._first_block
        if first is None:
            first = ciphers.decrypt(buffer[base : base + block_size])
        else:
            self._first_block = None
        packet_length, padding_length = _LENGTHS.unpack_from(first)
        if packet_length > _MAX_PACKET_LENGTH:
            self.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"bad packet length %d" % packet_length)
            return None
        end = 4 + packet_length
        if len(buffer) - base < end + mac_size:
            self._first_block = first
            return None
        if end % block_size != 0:
            self.sendDisconnect(
                transport.DISCONNECT_PROTOCOL_ERROR,
                b"bad packet mod (%i%%%i == %i)" % (end, block_size, end % block_size),
            )
            return None
        if end <= _SLICED_BELOW:
            # A small packet: a copy costs less than two memoryviews.
            rest = ciphers.decrypt(buffer[base + block_size : base + end])
        else:
            with memoryview(buffer) as whole, whole[base + block_size : base + end] as encrypted:
                rest = ciphers.decrypt(encrypted)
                if type(rest) is not bytes:  # the null cipher returns what it is given
                    rest = bytes(rest)
        mac = buffer[base + end : base + end + mac_size] if mac_size else b""
        self._receive_offset = base + end + mac_size
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
