"""
Writes to the NETCONF channel made while the SSH transport handles a TCP
read are held and go out as one channel write (one SSH packet) when the
read is done; other writes go at once.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.conch.ssh import transport
from twisted.trial import unittest

from callhome_mux.ssh.client import CallHomeClientTransport, ChannelTransport


def _plain() -> transport.SSHCiphers:
    ciphers = transport.SSHCiphers(b"none", b"none", b"none", b"none")
    ciphers.setKeys(b"", b"", b"", b"", b"", b"")
    return ciphers


def _packets(*payloads) -> bytes:
    sender = transport.SSHTransportBase()
    sent = []
    sender.transport = SimpleNamespace(write=sent.append)
    sender.currentEncryptions = _plain()
    sender.outgoingPacketSequence = 0
    sender.outgoingCompression = None
    sender._keyExchangeState = sender._KEY_EXCHANGE_NONE
    for payload in payloads:
        sender.sendPacket(94, payload)
    return b"".join(sent)


class FakeChannel:
    def __init__(self, ssh):
        self.conn = SimpleNamespace(transport=ssh)
        self.writes = []
        self.closed = 0

    def write(self, data):
        self.writes.append(bytes(data))

    def loseConnection(self):
        self.closed += 1
        self.writes.append("<close>")


class CoalescingTests(unittest.TestCase):
    def setUp(self):
        offer = SimpleNamespace(key_exchanges=[], host_key_algorithms=[], ciphers=[], macs=[])
        owner = SimpleNamespace()
        self.ssh = CallHomeClientTransport(owner, offer)
        self.ssh.gotVersion = True
        self.ssh.buf = b""
        self.ssh.currentEncryptions = _plain()
        self.ssh.incomingPacketSequence = 0
        self.ssh.incomingCompression = None
        self.channel = FakeChannel(self.ssh)
        self.netconf = ChannelTransport(self.channel, None)
        # Each packet received makes the protocol write: as replies make RPCs.
        self.ssh.dispatchMessage = lambda number, payload: self.on_packet(payload)
        self.on_packet = lambda payload: self.netconf.write(b"rpc-for-" + payload)

    def test_writes_during_one_read_become_one_channel_write(self):
        self.ssh.dataReceived(_packets(b"1", b"2", b"3"))
        self.assertEqual(self.channel.writes, [b"rpc-for-1rpc-for-2rpc-for-3"])

    def test_each_read_is_flushed_when_it_is_handled(self):
        stream = _packets(b"1", b"2")
        self.ssh.dataReceived(stream[: len(stream) // 2 + 10])
        self.assertEqual(self.channel.writes, [b"rpc-for-1"])
        self.ssh.dataReceived(stream[len(stream) // 2 + 10 :])
        self.assertEqual(self.channel.writes, [b"rpc-for-1", b"rpc-for-2"])

    def test_write_outside_a_read_goes_at_once(self):
        self.netconf.write(b"<rpc/>")
        self.assertEqual(self.channel.writes, [b"<rpc/>"])

    def test_large_write_keeps_order(self):
        big = b"x" * ChannelTransport.hold_below
        self.on_packet = lambda payload: [self.netconf.write(b"small"), self.netconf.write(big),
                                          self.netconf.write(b"after")]
        self.ssh.dataReceived(_packets(b"1"))
        self.assertEqual(self.channel.writes, [b"small", big, b"after"])

    def test_close_during_a_read_sends_what_was_held_first(self):
        self.on_packet = lambda payload: [self.netconf.write(b"last"), self.netconf.loseConnection(),
                                          self.netconf.write(b"too late")]
        self.ssh.dataReceived(_packets(b"1"))
        self.assertEqual(self.channel.writes, [b"last", "<close>"])

    def test_abort_drops_what_was_held(self):
        aborted = []
        self.channel.conn.transport = SimpleNamespace(
            reading=True, hold_write=lambda writer: None, transport=SimpleNamespace(abortConnection=lambda: aborted.append(1))
        )
        self.netconf.write(b"held")
        self.netconf.abortConnection()
        self.netconf.flush()
        self.assertEqual((self.channel.writes, aborted), ([], [1]))
