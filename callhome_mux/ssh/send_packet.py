"""
SSH packets sent without a getrandom() system call each.

conch's C{SSHTransportBase.sendPacket} takes each packet's 4-19 bytes of
padding from C{os.urandom}: one system call per packet (one per sequential
RPC, ~14 per call home), plus three Python calls around it.  RFC 4253 §6
asks for random padding; L{SendPacketMixin} hands it out of a buffer
filled from C{os.urandom} 4 KiB at a time: the same source, every byte used
once, one system call per ~300 packets.  The packet is otherwise built as
conch builds it (length, padding length, type, payload, padding; encrypted,
then the MAC of the plaintext) and written with one C{transport.write}.

During a key exchange (conch holds back most messages then) and with
compression (never negotiated by us), conch's own C{sendPacket} runs.

What conch would need for this mixin to go: padding from a buffered
source (or C{sendPacket} taking it from an overridable method).
tests/test_ssh_send_packet.py compares the bytes with conch's.
"""

from __future__ import annotations

import os
import struct

#: Random bytes fetched per system call.
POOL_SIZE = 4096

_HEADER = struct.Struct("!LBB")  # packet length, padding length, message type


class _PaddingPool:
    """Cryptographically random bytes from C{os.urandom}, fetched in blocks, each handed out once."""

    def __init__(self, size: int = POOL_SIZE):
        self._size = size
        self._pool = b""
        self._offset = 0

    def take(self, count: int) -> bytes:
        offset = self._offset
        end = offset + count
        if end > len(self._pool):
            self._pool = os.urandom(max(self._size, count))
            offset, end = 0, count
        self._offset = end
        return self._pool[offset:end]


#: One pool per process: the reactor thread is its only user.
PADDING = _PaddingPool()


class SendPacketMixin:
    """Mix into an L{twisted.conch.ssh.transport.SSHTransportBase} subclass, before it."""

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        if self._keyExchangeState != self._KEY_EXCHANGE_NONE or self.outgoingCompression:
            super().sendPacket(messageType, payload)
            return
        ciphers = self.currentEncryptions
        block_size = ciphers.encBlockSize
        # 4 for the packet length, 1 for the padding length, 1 for the type.
        total = 6 + len(payload)
        padding = block_size - (total % block_size)
        if padding < 4:
            padding += block_size
        packet = b"".join((_HEADER.pack(total + padding - 4, padding, messageType), payload, PADDING.take(padding)))
        self.transport.write(ciphers.encrypt(packet) + ciphers.makeMAC(self.outgoingPacketSequence, packet))
        self.outgoingPacketSequence += 1
