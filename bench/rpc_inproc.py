"""
The server's CPU per RPC, in-process: no sockets, no device process.

    python bench/rpc_inproc.py                  # this checkout
    python bench/rpc_inproc.py --root /work/main --reps 7 --batches 400

The manager's real SSH and NETCONF objects (CallHomeClientTransport with
aes256-ctr + hmac-sha2-256 keys set by hand, the ssh-connection service,
the NETCONF channel, ChannelTransport, NetconfClientProtocol on the real
reactor's clock, not running) are fed the device's side as pre-built,
encrypted bytes: for each batch the canned replies (what
callhome_mux.testing.fleet sends) to the RPCs outstanding, in one SSH
packet, as one TCP read.  The callbacks of the replies send the next RPCs,
as bench/rpc.py's server does; what the server writes goes to a sink that
counts it.  Only the feeding is timed, in thread CPU (time.thread_time),
best of C{--reps}; building the device's bytes is not.

 - pipelined: C{--depth} RPCs outstanding, one batch of that many replies per read;
 - sequential: one RPC at a time (inlineCallbacks, as bench/rpc.py), one reply per read.

Run it against two checkouts alternately (C{--root}) to compare code.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time


def _root_first(root: str) -> None:
    sys.path.insert(0, os.path.abspath(root))


class _Sink:
    """The TCP transport: counts what the server writes."""

    disconnecting = False

    def __init__(self):
        self.writes = 0
        self.bytes = 0

    def write(self, data):
        self.writes += 1
        self.bytes += len(data)

    def writeSequence(self, data):
        self.write(b"".join(data))

    def loseConnection(self):
        pass

    def getPeer(self):
        return None

    def getHost(self):
        return None


class _Owner:
    """What SSHCallHome does per read: note the traffic for the keepalive."""

    def __init__(self, clock):
        from callhome_mux.ssh.keepalive import KeepaliveMonitor

        self.keepalive = KeepaliveMonitor(clock, 30, 3, self)
        self.settings = None

    # The keepalive's link: no probe is due within a benchmark's seconds.
    def sendKeepalive(self):
        pass

    def keepaliveLost(self, missed):
        pass

    def trafficSeen(self):
        self.keepalive.trafficSeen()


KEYS = dict(iv=b"\x01" * 16, key=b"\x02" * 32, mac=b"\x03" * 32)
KEYS_BACK = dict(iv=b"\x04" * 16, key=b"\x05" * 32, mac=b"\x06" * 32)


def build(depth_hint):
    from twisted.conch.ssh import common, transport
    from twisted.internet import reactor

    from callhome_mux.events import EventBus
    from callhome_mux.netconf import namespaces as ns
    from callhome_mux.netconf.session import NetconfClientProtocol
    from callhome_mux.netconf.settings import NetconfSettings
    from callhome_mux.ssh.client import CallHomeClientTransport, CallHomeConnection, ChannelTransport, NetconfChannel
    from callhome_mux.ssh.mac import PrecomputedMACCiphers

    owner = _Owner(reactor)
    offer = type("Offer", (), dict(key_exchanges=[], host_key_algorithms=[], ciphers=[], macs=[]))()
    ssh = CallHomeClientTransport(owner, offer)
    sink = _Sink()
    ssh.transport = sink
    ssh.gotVersion = True
    ssh.buf = b""
    ciphers = PrecomputedMACCiphers(b"aes256-ctr", b"aes256-ctr", b"hmac-sha2-256", b"hmac-sha2-256")
    # out = server -> device (KEYS_BACK), in = device -> server (KEYS)
    ciphers.setKeys(KEYS_BACK["iv"], KEYS_BACK["key"], KEYS["iv"], KEYS["key"], KEYS_BACK["mac"], KEYS["mac"])
    ssh.currentEncryptions = ciphers
    ssh.incomingPacketSequence = ssh.outgoingPacketSequence = 0
    ssh.incomingCompression = ssh.outgoingCompression = None
    ssh._keyExchangeState = ssh._KEY_EXCHANGE_NONE

    conn = CallHomeConnection(owner)
    conn.transport = ssh
    ssh.service = conn
    channel = NetconfChannel(owner, b"netconf", 2 * 1024 * 1024, 32768, conn=conn)
    channel.id = 0
    channel.remoteWindowLeft = 1 << 40
    channel.remoteMaxPacket = 32768
    conn.channels[0] = channel
    conn.localToRemoteChannel[0] = 0
    conn.channelsToRemoteChannel[channel] = 0

    # The device: packets encrypted with the other direction's keys.
    device_ciphers = transport.SSHCiphers(b"aes256-ctr", b"aes256-ctr", b"hmac-sha2-256", b"hmac-sha2-256")
    device_ciphers.setKeys(KEYS["iv"], KEYS["key"], KEYS_BACK["iv"], KEYS_BACK["key"], KEYS["mac"], KEYS_BACK["mac"])
    device = transport.SSHTransportBase()
    out = []
    device.transport = type("T", (), {"write": staticmethod(out.append)})()
    device.currentEncryptions = device_ciphers
    device.outgoingPacketSequence = 0
    device.outgoingCompression = None
    device._keyExchangeState = device._KEY_EXCHANGE_NONE

    def device_read(data: bytes) -> bytes:
        """What one device write of C{data} on the channel is on the wire (one TCP read)."""
        del out[:]
        for start in range(0, len(data), 32768):
            device.sendPacket(94, struct.pack(">L", 0) + common.NS(data[start : start + 32768]))
        return b"".join(out)

    head = b'<rpc-reply xmlns="' + ns.BASE_NS.encode() + b'" message-id="'
    tail = b'"><ok/></rpc-reply>'

    def replies(first, count):
        parts = []
        for mid in range(first, first + count):
            mid = b"%d" % mid
            parts.append(b"".join((b"\n#%d\n" % (len(head) + len(mid) + len(tail)), head, mid, tail, b"\n##\n")))
        return b"".join(parts)

    hello = (b'<hello xmlns="' + ns.BASE_NS.encode() + b'"><capabilities>'
             + b"".join(b"<capability>%s</capability>" % c.encode() for c in (ns.BASE_1_0, ns.BASE_1_1))
             + b"</capabilities><session-id>7</session-id></hello>]]>]]>")
    protocol = NetconfClientProtocol(events=EventBus(clock=reactor), settings=NetconfSettings(), clock=reactor,
                                     device_id="r1", connection_id="c1", details={"peer": "127.0.0.2:1"},
                                     parse_threads=reactor)
    channel_transport = ChannelTransport(channel, None)
    protocol.makeConnection(channel_transport)
    channel.attach(protocol)
    ssh.dataReceived(device_read(hello))
    assert protocol.session is not None, "no session"
    return ssh, protocol.session, device_read, replies, sink


def pipelined(batches, depth, feed=True):
    from twisted.internet import reactor

    ssh, session, device_read, replies, sink = build(depth)
    reads = [device_read(replies(1 + k * depth, depth)) for k in range(batches)]
    if not feed:  # only what is not timed (for instruction counts by difference)
        return 0.0, 0.0
    from _common import pipeline_rpcs  # bench/, the script's own folder

    count = batches * depth
    state, _ = pipeline_rpcs(session, count, depth)
    writes_before = sink.writes
    started = time.thread_time()
    for data in reads:
        ssh.dataReceived(data)
    cpu = time.thread_time() - started
    assert state["done"] == count and not state["failed"], state
    _drain(reactor)
    return cpu / count, (sink.writes - writes_before) / batches


def sequential(count, feed=True):
    from twisted.internet import defer, reactor

    ssh, session, device_read, replies, sink = build(1)
    reads = [device_read(replies(1 + k, 1)) for k in range(count)]
    if not feed:
        return 0.0
    done = []

    @defer.inlineCallbacks
    def run():
        for _ in range(count):
            yield session.rpc(b"<commit/>")
        done.append(True)

    run()
    started = time.thread_time()
    for data in reads:
        ssh.dataReceived(data)
    cpu = time.thread_time() - started
    assert done, "sequential run did not finish"
    _drain(reactor)
    return cpu / count


def _drain(reactor):
    # Cancel what the sessions left on the (not running) reactor.
    for call in reactor.getDelayedCalls():
        if call.active():
            call.cancel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="checkout whose callhome_mux is measured")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--seq", type=int, default=3000)
    parser.add_argument("--profile", choices=("pipe", "seq"), help="cProfile one run instead")
    args = parser.parse_args()
    _root_first(args.root)
    import gc

    from callhome_mux.gc_tuning import CollectorTuning, ProcessSettings

    CollectorTuning(ProcessSettings()).apply()  # as the service does once started
    if args.profile:
        import cProfile
        import pstats

        target = (lambda: pipelined(args.batches, args.depth)) if args.profile == "pipe" else (lambda: sequential(args.seq))
        profile = cProfile.Profile()
        profile.runcall(target)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    pipe, seq = [], []
    for _ in range(args.reps):
        gc.collect()
        per_rpc, writes = pipelined(args.batches, args.depth)
        pipe.append(per_rpc)
        gc.collect()
        seq.append(sequential(args.seq))
    print(f"{args.root}: pipelined {min(pipe) * 1e6:.2f} us/RPC (best of {args.reps}; "
          f"{writes:.2f} TCP writes per batch of {args.depth}), sequential {min(seq) * 1e6:.2f} us/RPC "
          f"[pipelined runs {' '.join(f'{x * 1e6:.2f}' for x in pipe)}; sequential runs {' '.join(f'{x * 1e6:.2f}' for x in seq)}]")


if __name__ == "__main__":
    main()
