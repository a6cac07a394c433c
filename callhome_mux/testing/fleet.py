"""
Many simulated call-home devices in one process: the benchmarks' driver.

The benchmarks (C{bench/}) start a server process and several device
processes (one per loopback source address, so that neither the ephemeral
ports of one address nor the 20,000 descriptors of one process run out).
Each device process runs this module::

    python -m callhome_mux.testing.fleet --kind ssh --host 127.0.0.1 --port P \\
        --source 127.0.0.2 --first 0 --count 500

and is driven through stdin/stdout, one JSON object per line:

    -> {"ready": true, "count": 500}          once every device is built
    <- go                                     dial all devices at once
    -> {"done": 500, "failed": 0, "latencies_ms": [...], ...}
    <- stats                                  -> {"open": ..., "hellos": ...}
    <- quit                                   abort everything, exit

Device identities are derived from their index (L{device_key},
L{device_id}), so the server side can configure the same devices without
any file being passed around.  Connect-to-hello latency is measured on the
device: from just before C{connect()} to the moment the device has read the
manager's <hello> (both hellos exchanged).
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.internet import defer, protocol

from callhome_mux.netconf import namespaces as ns
from callhome_mux.netconf.framing import FrameDecoder, encode_eom
from callhome_mux.netconf.session import hello_message

PASSWORD = "fleet-password"
USERNAME = "netconf"
_SEED = b"callhome-mux fleet device "


def device_id(index: int) -> str:
    return f"fleet-{index:05d}"


def device_key(index: int) -> keys.Key:
    """Device C{index}'s Ed25519 host key, the same in every process."""
    seed = hashlib.sha256(_SEED + str(index).encode("ascii")).digest()
    return keys.Key(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def device_host_key_line(index: int) -> str:
    return device_key(index).public().toString("openssh").decode("ascii")


def device_fingerprint_blob(index: int) -> bytes:
    return device_key(index).public().blob()


def module_capabilities(count: int) -> List[str]:
    """C{count} YANG module capabilities, as a real device lists them in its <hello>."""
    names = [
        "ietf-interfaces", "ietf-ip", "ietf-routing", "ietf-yang-types", "ietf-inet-types", "ietf-system",
        "ietf-netconf-acm", "ietf-netconf-monitoring", "ietf-netconf-with-defaults", "ietf-keychain",
        "openconfig-interfaces", "openconfig-bgp", "openconfig-network-instance", "openconfig-platform",
        "vendor-system-cfg", "vendor-interface-oper", "vendor-qos-cfg", "vendor-acl-cfg",
    ]
    caps = []
    for i in range(count):
        name = f"{names[i % len(names)]}-{i // len(names)}" if i >= len(names) else names[i]
        caps.append(f"http://example.net/yang/{name}?module={name}&revision=2024-0{1 + i % 9}-1{i % 10}")
    return caps


def default_capabilities(extra: int) -> List[str]:
    caps = [ns.BASE_1_0, ns.BASE_1_1, ns.VALIDATE_1_1, ns.XPATH, ns.NOTIFICATION, ns.CANDIDATE,
            ns.WITH_DEFAULTS + "?basic-mode=explicit"]
    return caps + module_capabilities(extra)


_MESSAGE_ID = re.compile(rb'message-id="([^"]*)"')
_REPLY_HEAD = b'<rpc-reply xmlns="' + ns.BASE_NS.encode() + b'" message-id="'
_OK_TAIL = b'"><ok/></rpc-reply>'
_OK_SIZE = len(_REPLY_HEAD) + len(_OK_TAIL)  # plus the message-id's
# (big data, base:1.1?) -> what follows the head of a <get> reply, framed.
_BIG_REPLY_RESTS: Dict[tuple, bytes] = {}


def _big_reply_rest(big: bytes, chunked: bool) -> bytes:
    """The <get> reply after its head: the data, the closing tags and the framing's end, built once."""
    key = (id(big), chunked)
    cached = _BIG_REPLY_RESTS.get(key)
    if cached is None or cached[0] is not big:
        rest = big + b"</data></rpc-reply>"
        framed = b"\n#%d\n" % len(rest) + rest + b"\n##\n" if chunked else rest + b"]]>]]>"
        cached = _BIG_REPLY_RESTS[key] = (big, framed)
    return cached[1]


class FleetNetconfDevice(protocol.Protocol):
    """
    A NETCONF server that costs the device process as little as possible.

    Sends its <hello>; notes when the manager's <hello> arrives
    (C{on_hello}), or that the connection ended before it did
    (C{on_lost}, with the reason); answers every <rpc> with a canned <rpc-reply> carrying
    the rpc's message-id: C{<data>} of C{big_reply} bytes for an <rpc>
    containing C{<get>}, C{<ok/>} for anything else.  No XML parsing on the
    RPC path, so the device is never the bottleneck of an RPC benchmark.
    """

    session_ids = iter(range(1, 2**31))

    def __init__(self, hello: bytes, on_hello=None, big_reply: bytes = b"", on_lost=None):
        self._hello = hello
        self._on_hello = on_hello
        self._on_lost = on_lost
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._base11 = False
        self._hello_seen = False
        self._big = big_reply
        self.rpcs = 0
        self._pending = None  # (memoryview, offset) of a big reply being paced into the SSH window

    def connectionMade(self) -> None:
        self.transport.write(encode_eom(self._hello))

    def dataReceived(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.push(data)
        replies = []
        while True:
            message = decoder.next_message()
            if message is None:
                break
            if not self._hello_seen:
                self._hello_seen = True
                if ns.BASE_1_1.encode() in message:
                    self._base11 = True
                    decoder.switch_to_chunked()
                if self._on_hello is not None:
                    self._on_hello()
                continue
            self.rpcs += 1
            match = _MESSAGE_ID.search(message, 0, 200)
            mid = match.group(1) if match else b"0"
            # The operation follows the <rpc> start tag: look only there.
            if message.find(b"<get>", 0, 300) >= 0 or message.find(b"<get/>", 0, 300) >= 0:
                # Two pieces: the head with this message-id, and the big
                # rest, framed once per process and never copied again.
                head = _REPLY_HEAD + mid + b'"><data>'
                head = b"\n#%d\n" % len(head) + head if self._base11 else head
                if replies:
                    self.transport.write(b"".join(replies))
                    replies = []
                self._send_paced([head, _big_reply_rest(self._big, self._base11)])
                continue
            if self._base11:
                replies.append(b"".join((b"\n#%d\n" % (_OK_SIZE + len(mid)), _REPLY_HEAD, mid, _OK_TAIL, b"\n##\n")))
            else:
                replies.append(b"".join((_REPLY_HEAD, mid, _OK_TAIL, b"]]>]]>")))
        if replies:
            self.transport.write(b"".join(replies))

    def _send_paced(self, pieces) -> None:
        """
        Send C{pieces} (in order) no faster than the SSH window opens.

        conch's C{SSHChannel.write} keeps what exceeds the window as one
        bytes object and re-slices (copies) all of it at every window
        adjust: O(size^2 / window) copying, which made this simulator, not
        the manager, the bottleneck of a 20 MB reply.  The pieces are
        written as memoryview slices that fit the window (conch copies each
        packet's data once, into the packet).  Over TLS (no window) they are
        written at once.
        """
        channel = getattr(self.transport, "_channel", None)
        if channel is None or not hasattr(channel, "remoteWindowLeft"):
            for piece in pieces:
                self.transport.write(piece)
            return
        if self._pending is None:
            original = channel.addWindowBytes

            def window_opened(count, original=original):
                original(count)
                self._pump()

            channel.addWindowBytes = window_opened
        self._pending = [[memoryview(piece) for piece in pieces if piece], 0]
        self._pump()

    def _pump(self) -> None:
        pending = self._pending
        if not pending or not pending[0]:
            return
        channel = self.transport._channel
        views, offset = pending
        while views and channel.remoteWindowLeft > 0 and not channel.buf:
            view = views[0]
            size = min(len(view) - offset, channel.remoteWindowLeft, 1 << 20)
            channel.write(view[offset : offset + size])
            offset += size
            if offset == len(view):
                views.pop(0)
                offset = 0
        pending[1] = offset

    def connectionLost(self, reason=None) -> None:
        # A connection the manager closed before its <hello> is a failed
        # device now, with the reason: not a silent wait for the timeout.
        if not self._hello_seen and self._on_lost is not None:
            self._on_lost(reason.getErrorMessage() if reason is not None else "connection closed")


def big_data(size: int) -> bytes:
    """About C{size} bytes of <interface> entries (many small elements, as a real <get> reply)."""
    unit = (b"<interface xmlns=\"urn:ietf:params:xml:ns:yang:ietf-interfaces\"><name>ge-0/0/%06d</name>"
            b"<description>uplink to rack %06d, row b</description><enabled>true</enabled>"
            b"<type>ianaift:ethernetCsmacd</type><mtu>9000</mtu></interface>")
    parts = []
    total = 0
    i = 0
    while total < size:
        piece = unit % (i, i)
        parts.append(piece)
        total += len(piece)
        i += 1
    return b"".join(parts)


# -- device processes ---------------------------------------------------------


class _Fleet:
    def __init__(self, args):
        self.args = args
        self.reactor = None
        self.hello = hello_message(default_capabilities(args.capabilities), session_id=None)
        self.starts: Dict[int, float] = {}
        self.hellos: Dict[int, float] = {}
        self.failed: Dict[int, str] = {}
        self.devices: List[Any] = []
        self.connections: List[Any] = []
        self.big = big_data(args.big_reply) if args.big_reply else b""
        if self.big:
            # Framed both ways now, not at the first <get>: building 2 x 20
            # MB then is the device's work, and a benchmark would count it
            # against the manager's first reply.
            _big_reply_rest(self.big, True)
            _big_reply_rest(self.big, False)
        self._done_reported = False
        self._hello_counter = iter(range(1, 2**31))

    def _hello_bytes(self) -> bytes:
        # The device's hello carries a session-id.
        return hello_message(default_capabilities(self.args.capabilities), session_id=next(self._hello_counter))

    def _netconf_device(self, hello: bytes, index: int) -> FleetNetconfDevice:
        return FleetNetconfDevice(hello, lambda: self._hello_done(index), self.big, lambda why: self._lost(index, why))

    def build(self) -> None:
        args = self.args
        if args.kind == "ssh":
            from callhome_mux.testing.ssh_device import SSHCallHomeDevice

            template = self._hello_bytes()
            for index in range(args.first, args.first + args.count):
                factory = functools.partial(self._netconf_device, template, index)
                device = SSHCallHomeDevice(
                    host_key=device_key(index), username=USERNAME, password=PASSWORD, netconf_factory=factory
                )
                device._fleet_index = index
                device._fleet_factory = _SSHFleetFactory(device)
                self.devices.append(device)
        else:
            from callhome_mux.testing.tls_device import TLSCallHomeDevice

            chain, key = _tls_material(args)
            template = self._hello_bytes()
            for index in range(args.first, args.first + args.count):
                cert_pem, key_pem = chain(index), key(index)

                factory = functools.partial(self._netconf_device, template, index)
                device = TLSCallHomeDevice(cert_pem, key_pem, protocol_factory=factory)
                device._fleet_index = index
                device._fleet_factory = _TLSFactory(device, args.direction)
                self.devices.append(device)

    def go(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        args = self.args

        def dial(device):
            index = device._fleet_index
            self.starts[index] = time.time()
            endpoint = TCP4ClientEndpoint(reactor, args.host, args.port, timeout=60, bindAddress=(args.source, 0))
            d = endpoint.connect(device._fleet_factory)
            d.addCallbacks(self.connections.append, self._connect_failed, errbackArgs=(index,))

        if args.rate:
            # Paced: args.rate connections per second, in 10 ms steps.
            per_step = max(1, int(args.rate / 100))
            for step, start in enumerate(range(0, len(self.devices), per_step)):
                reactor.callLater(step * per_step / args.rate, lambda batch=self.devices[start:start + per_step]: [dial(d) for d in batch])
        else:
            for device in self.devices:
                dial(device)
        reactor.callLater(args.timeout + (len(self.devices) / args.rate if args.rate else 0), self._report, True)

    def _connect_failed(self, failure, index) -> None:
        self.failed[index] = failure.getErrorMessage()
        self._check()

    def _lost(self, index: int, why: str) -> None:
        if index not in self.hellos and index not in self.failed:
            self.failed[index] = f"closed before the manager's <hello>: {why}"
            self._check()

    def _hello_done(self, index: int) -> None:
        self.hellos[index] = time.time()
        self._check()

    def _check(self) -> None:
        if len(self.hellos) + len(self.failed) >= self.args.count:
            self._report(False)

    def _report(self, timed_out: bool) -> None:
        if self._done_reported:
            return
        self._done_reported = True
        latencies = sorted((self.hellos[i] - self.starts[i]) * 1000.0 for i in self.hellos)
        first = min(self.starts.values()) if self.starts else 0
        last = max(self.hellos.values()) if self.hellos else first
        emit(
            done=len(self.hellos),
            failed=len(self.failed) + (self.args.count - len(self.hellos) - len(self.failed) if timed_out else 0),
            failures=sorted(set(self.failed.values()))[:5],
            timed_out=timed_out,
            first_start=first,
            last_hello=last,
            latencies_ms=[round(x, 3) for x in latencies],
        )

    def stats(self) -> Dict[str, Any]:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"hellos": len(self.hellos), "connections": len(self.connections), "cpu": usage.ru_utime + usage.ru_stime}

    def quit(self) -> None:
        from twisted.internet import reactor

        for connection in self.connections:
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abortConnection()
        reactor.callLater(0.2, reactor.stop)


class _SSHFleetFactory(protocol.ClientFactory):
    def __init__(self, device):
        from callhome_mux.testing.ssh_device import _DeviceClientFactory

        self._inner = _DeviceClientFactory(device)

    def buildProtocol(self, addr):
        return self._inner.buildProtocol(addr)


class _TLSFactory(protocol.ClientFactory):
    """Dial as the TLS device (silent: we are the TLS server), with our source address."""

    _contexts: Dict[Any, Any] = {}

    def __init__(self, device, direction: str):
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from callhome_mux.testing.tls_device import _Inner
        from callhome_mux.tls.context import ConnectionCreator

        is_client = direction == "client-hello"
        creator = ConnectionCreator(device.context(is_client))
        self._inner = TLSMemoryBIOFactory(creator, is_client, _Inner(device))

    def buildProtocol(self, addr):
        return self._inner.buildProtocol(addr)


def _tls_material(args):
    """Per-device certificates issued by the benchmark CA in C{args.pki} (see L{write_pki})."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from callhome_mux.testing.certs import Issued, _build, _name

    with open(os.path.join(args.pki, "ca.key"), "rb") as handle:
        ca_key = serialization.load_pem_private_key(handle.read(), None)
    with open(os.path.join(args.pki, "ca.crt"), "rb") as handle:
        ca_cert = x509.load_pem_x509_certificate(handle.read())
    ca = Issued("ca", ca_cert, ca_key)
    from cryptography.hazmat.primitives.asymmetric import ec

    # One key for every device keeps start-up short; the certificates differ.
    device_private = ec.generate_private_key(ec.SECP256R1())
    key_pem = device_private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    def chain(index: int) -> bytes:
        name = device_id(index)
        certificate = _build(_name(name), device_private, ca, sans=[x509.DNSName(f"{name}.example.net")])
        return certificate.public_bytes(serialization.Encoding.PEM)

    return chain, lambda index: key_pem


def write_pki(directory: str) -> Dict[str, str]:
    """A benchmark CA (with its key, for the device processes) and the manager's certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from callhome_mux.testing.certs import _ca, _leaf

    os.makedirs(directory, exist_ok=True)
    ca = _ca("ca", "fleet CA")
    manager = _leaf("manager", "manager", ca, sans=[x509.DNSName("manager.example.net")])
    paths = {}
    for name, data in {
        "ca.crt": ca.certificate_pem,
        "ca.key": ca.key_pem,
        "manager.crt": manager.certificate_pem,
        "manager.key": manager.key_pem,
    }.items():
        path = os.path.join(directory, name)
        with open(path, "wb") as handle:
            handle.write(data)
        paths[name] = path
    paths["ca_fingerprint"] = ca.fingerprint
    return paths


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class _Control(protocol.Protocol):
    """stdin commands: go, stats, quit."""

    def __init__(self, fleet: _Fleet):
        self.fleet = fleet
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            command = line.strip().decode()
            if command == "go":
                self.fleet.go()
            elif command == "stats":
                emit(**self.fleet.stats())
            elif command == "quit":
                self.fleet.quit()

    def connectionLost(self, reason=None) -> None:
        self.fleet.quit()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("ssh", "tls"), default="ssh")
    parser.add_argument("--direction", choices=("silent", "client-hello"), default="silent")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.1")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--capabilities", type=int, default=64, help="extra module capabilities in the hello")
    parser.add_argument("--big-reply", type=int, default=0, help="bytes of <data> in the reply to <get>")
    parser.add_argument("--pki", help="directory of write_pki() (TLS)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=0.0, help="connections per second (0: all at once)")
    args = parser.parse_args(argv)

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import epollreactor

        epollreactor.install()
    from twisted.internet import reactor, stdio

    fleet = _Fleet(args)
    fleet.build()
    gc.collect()
    gc.freeze()
    stdio.StandardIO(_Control(fleet))
    emit(ready=True, count=args.count)
    reactor.run()


if __name__ == "__main__":
    main()
