"""
Where conch's channel defaults limit throughput, and what our subclasses change.

Behaviour, not timing (bench/rpc.py measures the speed):

 - the NETCONF channel advertises a 2 MiB receive window (conch: 128 KiB),
   so a device may send a 2 MiB reply before any window adjust; conch's
   default closes the channel past 128 KiB of unacknowledged data;
 - L{WindowedWriteChannel} keeps data waiting for the window as the
   caller's own objects (no copy); conch's C{SSHChannel} keeps a new copy
   of the remainder after every write and window adjust.  If the conch
   half of that test starts failing, conch has fixed it and the subclass
   can go.
"""

from __future__ import annotations

import struct

from twisted.conch.ssh import channel, common, connection
from twisted.trial import unittest

from callhome_mux.ssh.client import NetconfChannel
from callhome_mux.ssh.settings import SSHSettings
from callhome_mux.ssh.windowed import WindowedWriteChannel

MSG_CHANNEL_DATA = 94


class FakeConnection:
    """What a channel calls on its connection: records packets and closes."""

    def __init__(self):
        self.sent = []
        self.closed = 0

    def sendData(self, channel, data):
        self.sent.append(bytes(data))

    def sendClose(self, channel):
        self.closed += 1


class _Owner:
    def channelClosed(self, channel):
        pass


def _open(chan, window, max_packet=32768):
    chan.conn = FakeConnection()
    chan.remoteWindowLeft = window
    chan.remoteMaxPacket = max_packet
    chan.id = 0
    return chan


class ReceiveWindowTests(unittest.TestCase):
    def test_netconf_channel_advertises_two_mebibytes(self):
        ours = NetconfChannel(_Owner(), b"netconf", SSHSettings().channel_window, SSHSettings().channel_max_packet)
        self.assertEqual(ours.localWindowSize, 2 * 1024 * 1024)
        self.assertEqual(channel.SSHChannel().localWindowSize, 131072)

    def _deliver(self, chan, total, packet=32768):
        """Feed C{total} bytes of CHANNEL_DATA through a real SSHConnection; return (bytes delivered, closed)."""
        conn = connection.SSHConnection()
        sent = []
        conn.transport = type("T", (), {"sendPacket": lambda self, kind, data: sent.append(kind)})()
        conn.channels[0] = chan
        conn.localToRemoteChannel[0] = 0
        conn.channelsToRemoteChannel[chan] = 0
        chan.conn = conn
        received = []
        chan.dataReceived = received.append
        closes = []
        conn.sendClose = lambda c: closes.append(c)
        adjusts = []
        conn.adjustWindow = lambda c, n: adjusts.append(n)  # the device never gets them: no adjust arrives
        for _ in range(total // packet):
            conn.ssh_CHANNEL_DATA(struct.pack(">L", 0) + common.NS(b"x" * packet))
            if closes:
                break
        return sum(map(len, received)), bool(closes)

    def test_two_mebibytes_flow_without_an_adjust(self):
        ours = NetconfChannel(_Owner(), b"netconf", 2 * 1024 * 1024, 32768)
        delivered, closed = self._deliver(ours, 2 * 1024 * 1024)
        self.assertEqual((delivered, closed), (2 * 1024 * 1024, False))

    def test_conch_default_stops_at_128_kibibytes(self):
        delivered, closed = self._deliver(channel.SSHChannel(localMaxPacket=32768), 2 * 1024 * 1024)
        self.assertEqual((delivered, closed), (131072, True))


class WindowedWriteTests(unittest.TestCase):
    payload = bytes(range(256)) * 4096  # 1 MiB

    def test_pending_data_is_not_copied(self):
        chan = _open(WindowedWriteChannel(), window=65536)
        chan.write(self.payload)
        self.assertEqual(sum(map(len, chan.conn.sent)), 65536)
        self.assertIs(chan._pending[0], self.payload)  # the caller's object, not a copy
        self.assertEqual(chan.pending_bytes, len(self.payload) - 65536)
        chan.addWindowBytes(65536)
        self.assertIs(chan._pending[0], self.payload)
        while chan.pending_bytes:
            chan.addWindowBytes(65536)
        self.assertEqual(b"".join(chan.conn.sent), self.payload)
        self.assertTrue(all(len(packet) <= 32768 for packet in chan.conn.sent))

    def test_writes_keep_their_order_and_close_waits(self):
        chan = _open(WindowedWriteChannel(), window=10)
        chan.write(b"0123456789abc")
        chan.write(b"def")
        chan.loseConnection()
        self.assertEqual(chan.conn.closed, 0)
        chan.addWindowBytes(4)
        self.assertEqual(chan.conn.closed, 0)
        chan.addWindowBytes(100)
        self.assertEqual(b"".join(chan.conn.sent), b"0123456789abcdef")
        self.assertEqual(chan.conn.closed, 1)
        chan.addWindowBytes(100)
        self.assertEqual(chan.conn.closed, 1)

    def test_stop_and_start_writing(self):
        chan = _open(WindowedWriteChannel(), window=4)
        calls = []
        chan.stopWriting = lambda: calls.append("stop")
        chan.startWriting = lambda: calls.append("start")
        chan.write(b"abcdefgh")
        chan.write(b"ij")
        self.assertEqual(calls, ["stop"])
        chan.addWindowBytes(100)
        self.assertEqual(calls, ["stop", "start"])
        self.assertEqual(b"".join(chan.conn.sent), b"abcdefghij")

    def test_conch_copies_the_remainder(self):
        """conch's behaviour that WindowedWriteChannel avoids (fails once conch queues instead)."""
        chan = _open(channel.SSHChannel(), window=65536)
        chan.write(self.payload)
        first = chan.buf
        self.assertIsNot(first, self.payload)
        self.assertEqual(len(first), len(self.payload) - 65536)  # a fresh copy of the remainder
        chan.addWindowBytes(65536)
        self.assertIsNot(chan.buf, first)  # and another one after the adjust
        self.assertEqual(len(chan.buf), len(self.payload) - 2 * 65536)
