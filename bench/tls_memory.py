"""
Where the memory of an idle NETCONF/TLS session goes: OpenSSL's part and Python's.

    python bench/tls_memory.py                     # both parts, 300 connections / 500 sessions
    python bench/tls_memory.py --openssl-only --connections 1000
    python bench/tls_memory.py --sessions 1000 --top 40

OpenSSL (in this process, no sockets): C{--connections} pyOpenSSL client
connections made from callhome-mux's own client context
(L{callhome_mux.tls.context.client_context}), each completing a TLS 1.3
handshake with a simulated device (its certificate; two session tickets,
as OpenSSL's server sends by default) and reading an 8 KB <hello>; the
device side is freed before the reading.  Per connection: glibc's heap in
use (C{mallinfo2}) after each stage -- the bare C{SSL} object, the
ClientHello sent (key shares made), the handshake done and the hello read
with the memory BIOs as Twisted leaves them, then renewed as
L{callhome_mux.tls.transport.CallHomeTLSTransport} does -- for OpenSSL's
default groups (X25519MLKEM768 hybrid first) and for X25519 alone.

Python (C{--sessions}; the server and device processes of the other
benchmarks): the server runs under tracemalloc; after the devices have
called home and the inventory has settled, RSS, glibc's heap in use and
the Python bytes per session, with the allocation sites that keep the most,
grouped by the innermost callhome_mux frame (C{--by ours}) or the innermost
frame outside the standard library (C{--by owner}).  tracemalloc's own
bookkeeping inflates RSS and the heap here: read those from bench/hold.py.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HELLO = b"<hello>" + b"x" * 8192 + b"</hello>]]>]]>"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def heap_in_use() -> int:
    """Bytes glibc's malloc has handed out and not had back (arenas and mmapped chunks)."""
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


# -- OpenSSL, in this process ----------------------------------------------------


def _contexts(groups):
    from callhome_mux.testing.certs import test_pki
    from callhome_mux.testing.tls_device import TLSCallHomeDevice
    from callhome_mux.tls.context import client_context
    from callhome_mux.tls.settings import TLSSettings

    pki = test_pki()
    paths = pki.write(tempfile.mkdtemp(prefix="callhome-bench-tls-memory-"))
    identity = types.SimpleNamespace(certificate_file=paths["manager.crt"], private_key_file=paths["manager.key"])
    ours = client_context(TLSSettings(groups=groups), identity)
    device = TLSCallHomeDevice(pki.device.chain_pem, pki.device.key_pem).context(False)
    return ours, device


def _step(connection):
    from OpenSSL import SSL

    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass


def _pump(client, server) -> None:
    from OpenSSL import SSL

    _step(client)
    moved = True
    while moved:
        moved = False
        for source, sink in ((client, server), (server, client)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                sink.bio_write(data)
                moved = True
        _step(server)
        _step(client)


def _renew_bios(connection) -> None:
    from OpenSSL._util import lib

    fresh_in, fresh_out = lib.BIO_new(lib.BIO_s_mem()), lib.BIO_new(lib.BIO_s_mem())
    lib.SSL_set_bio(connection._ssl, fresh_in, fresh_out)
    connection._into_ssl, connection._from_ssl = fresh_in, fresh_out


def _per_connection(n, build) -> float:
    build()  # first-time costs (method tables, provider caches) out of the figure
    before = heap_in_use()
    kept = [build() for _ in range(n)]
    kept = [item[0] if isinstance(item, tuple) else item for item in kept]  # the device sides go
    used = heap_in_use() - before
    del kept
    return used / n / 1024


def openssl_part(n: int) -> None:
    from OpenSSL import SSL

    print(f"OpenSSL {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}, pyOpenSSL client connections from "
          f"callhome-mux's client context, glibc heap in use per connection ({n} connections):")
    for label, groups in (("default groups", ()), ("X25519 only", ("X25519",))):
        ours, device = _contexts(groups)

        def fresh():
            connection = SSL.Connection(ours, None)
            connection.set_connect_state()
            return connection

        def client_hello_sent():
            connection = fresh()
            _step(connection)
            connection.bio_read(65536)
            return connection

        def established(renew=False):
            client, server = fresh(), SSL.Connection(device, None)
            server.set_accept_state()
            _pump(client, server)
            server.send(HELLO)
            client.bio_write(server.bio_read(65536))
            received = 0
            while received < len(HELLO):
                received += len(client.recv(65536))
            if renew:
                _renew_bios(client)
            return client, server

        figures = {
            "SSL object, before the handshake": _per_connection(n, fresh),
            "ClientHello sent (key shares made)": _per_connection(n, client_hello_sent),
            "handshake + 8 KB hello, BIOs as Twisted leaves them": _per_connection(n, established),
            "the same, BIOs renewed (CallHomeTLSTransport)": _per_connection(n, lambda: established(True)),
        }
        client, _ = established()
        print(f"  {label} (negotiated {client.get_group_name()}, {client.get_cipher_name()}):")
        for what, kib in figures.items():
            print(f"    {kib:6.2f} KiB  {what}")


# -- Python, in a server process --------------------------------------------------


def python_part(n: int, top: int, by: str, frames: int, rate: float) -> None:
    from bench._common import sources, start_fleet, start_server, stop_all
    from callhome_mux.testing.fleet import write_pki

    pki_dir = tempfile.mkdtemp(prefix="callhome-bench-pki-")
    paths = write_pki(pki_dir)
    server = start_server("mux", "tls", n, ["--pki", pki_dir, "--ca-fingerprint", paths["ca_fingerprint"],
                                            "--silence-timeout", "0.2", "--tracemalloc", str(frames)])
    fleet = []
    try:
        before = server.ask("gc", "gc")
        heap_before = server.ask("heap", "heap_used")
        server.ask("snap", "snap")
        fleet = start_fleet("tls", server.port, sources(4), n,
                            ["--capabilities", "64", "--pki", pki_dir, "--rate", str(rate / 4), "--timeout", "120"])
        for child in fleet:
            child.send("go")
        for child in fleet:
            child.expect("done", timeout=n / rate + 300)
        deadline = time.time() + 60
        while server.ask("stats", "sessions")["sessions"] < n and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        server.ask("settle", "settled", timeout=120)
        sessions = server.ask("stats", "sessions")["sessions"]
        after = server.ask("gc", "gc")
        groups = server.ask(f"memgroups {sessions} {top} {by}", "memgroups", timeout=600)
        per = max(sessions, 1) * 1024
        print(f"\n{sessions} idle NETCONF/TLS sessions (server under tracemalloc, {frames} frames), per session:")
        print(f"  RSS {(after['rss'] - before['rss']) / per:.1f} KiB, glibc heap in use "
              f"{(groups['heap_used'] - heap_before['heap_used']) / per:.1f} KiB (both with tracemalloc's own); "
              f"Python (tracemalloc) {groups['python_bytes'] / per:.2f} KiB, of which:")
        for line in groups["memgroups"]:
            print("  " + line)
    finally:
        stop_all(fleet)
        stop_all([server])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300, help="OpenSSL part: connections per figure")
    parser.add_argument("--sessions", type=int, default=500, help="Python part: idle sessions")
    parser.add_argument("--openssl-only", action="store_true")
    parser.add_argument("--python-only", action="store_true")
    parser.add_argument("--top", type=int, default=30, help="allocation sites listed")
    parser.add_argument("--by", choices=("ours", "owner"), default="ours")
    parser.add_argument("--frames", type=int, default=16, help="tracemalloc frames kept")
    parser.add_argument("--rate", type=float, default=200.0, help="connections per second, all device processes")
    args = parser.parse_args()
    if not args.python_only:
        openssl_part(args.connections)
    if not args.openssl_only:
        python_part(args.sessions, args.top, args.by, args.frames, args.rate)


if __name__ == "__main__":
    main()
