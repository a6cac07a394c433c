"""
An SSH channel whose writes beyond the peer's window cost no extra copies.

conch's C{SSHChannel.write} keeps what the remote window does not allow yet
as one C{bytes} object: each further write appends to it (C{buf += data},
a copy of everything pending) and each window adjust re-slices it
(C{data[window:]}, another copy of everything still pending).  Sending S
bytes through a window of W that the device re-opens in steps of W/2 copies
about S^2/W bytes: for a 20 MB <edit-config> to a device with conch's or
libssh's 128 KiB window, some 3 GB of memcpy and as many bytes of garbage.

L{WindowedWriteChannel} keeps pending writes as a queue of the caller's own
objects with an offset into the first, and cuts packets from them as the
window opens: every byte is copied once, into its packet.  Behaviour is
otherwise conch's: C{stopWriting()} when the window is exhausted,
C{startWriting()} when it opens, close only once everything is sent.

What conch would need for this class to go: C{SSHChannel.write} queueing
pending data (a deque of chunks, or a bytearray consumed from the front
with an offset) instead of one re-sliced C{bytes}.  tests/test_perf_ssh_channel.py
shows both behaviours and fails on conch's side once conch changes.
"""

from __future__ import annotations

import collections
from typing import Deque, Optional

from twisted.conch.ssh import channel


class WindowedWriteChannel(channel.SSHChannel):
    # Class-level defaults, so that subclasses calling
    # C{channel.SSHChannel.__init__} directly need no change.
    _pending: Optional[Deque[bytes]] = None
    _pending_offset = 0  # bytes of _pending[0] already sent

    @property
    def pending_bytes(self) -> int:
        """Bytes written but not yet sent (waiting for the remote window)."""
        return sum(len(chunk) for chunk in self._pending or ()) - self._pending_offset

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending and len(data) <= self.remoteWindowLeft:
            # The usual case: it fits, send it now; nothing is kept.
            send = self.conn.sendData
            packet = self.remoteMaxPacket
            if len(data) <= packet:
                send(self, data)
            else:
                view = memoryview(data)
                for start in range(0, len(data), packet):
                    send(self, bytes(view[start : start + packet]))
            self.remoteWindowLeft -= len(data)
            return
        if self._pending is None:
            self._pending = collections.deque()
        self._pending.append(data)
        if len(self._pending) == 1:
            self._send_pending()

    def addWindowBytes(self, data: int) -> None:
        self.remoteWindowLeft = self.remoteWindowLeft + data
        if not self.areWriting and not self.closing:
            self.areWriting = True
            self.startWriting()
        self._send_pending()
        if self.extBuf:
            pending, self.extBuf = self.extBuf, []
            for data_type, data in pending:
                self.writeExtended(data_type, data)

    def loseConnection(self) -> None:
        self.closing = 1
        if not self._pending and not self.extBuf:
            self.conn.sendClose(self)

    def _send_pending(self) -> None:
        pending = self._pending
        if not pending:
            return
        send = self.conn.sendData
        packet = self.remoteMaxPacket
        while pending and self.remoteWindowLeft > 0:
            chunk = pending[0]
            offset = self._pending_offset
            end = min(len(chunk), offset + self.remoteWindowLeft)
            if offset == 0 and end == len(chunk) and end <= packet:
                send(self, chunk)
            else:
                view = memoryview(chunk)
                for start in range(offset, end, packet):
                    send(self, bytes(view[start : min(start + packet, end)]))
            self.remoteWindowLeft -= end - offset
            if end == len(chunk):
                pending.popleft()
                self._pending_offset = 0
            else:
                self._pending_offset = end
        if pending:
            if self.areWriting:
                self.areWriting = 0
                self.stopWriting()
            return
        self._pending = None  # an idle channel keeps no queue (~0.6 KiB)
        if self.closing:
            self.loseConnection()
