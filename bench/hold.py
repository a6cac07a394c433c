"""
Memory per idle established session, from the server's resident memory.

    python bench/hold.py                          # SSH, 1000/5000/15000 sessions, vs the floor, 1 run
    python bench/hold.py --sizes 1000,5000 --runs 3
    python bench/hold.py --kind tls               # vs the bare-TLS floor (bench/floor_tls.py)

For each size: start the server (callhome-mux, or the bare-conch floor),
collect garbage and read its RSS (/proc/<pid>/statm), let the devices call
home (device processes, one per loopback source address, paced at --rate
connections per second in all so that no session waits past the setup
timeouts), wait until the server counts every session, let it idle, collect
garbage, read RSS again.  Per session = (after - before) / sessions.  Then
(callhome-mux only) one RPC on every session: all must answer.

Targets: <= 24 KiB per idle NETCONF/SSH session, <= 32 KiB per idle TLS
session (the device hellos carry 7 + --capabilities capabilities).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import sources, start_fleet, start_server, stop_all, summary  # noqa: E402


def one_hold(impl, kind, n, procs, rate, server_extra, fleet_extra, settle):
    server = start_server(impl, kind, n, server_extra)
    fleet = []
    try:
        before = server.ask("gc", "gc")
        per_proc_rate = rate / procs
        fleet = start_fleet(kind, server.port, sources(procs), n,
                            [*fleet_extra, "--rate", str(per_proc_rate), "--timeout", "120"])
        started = time.time()
        for child in fleet:
            child.send("go")
        results = [child.expect("done", timeout=n / rate + 300) for child in fleet]
        deadline = time.time() + 60
        while True:
            stats = server.ask("stats", "sessions")
            if stats["sessions"] >= n or time.time() > deadline:
                break
            time.sleep(0.2)
        up_seconds = time.time() - started
        time.sleep(settle)
        after = server.ask("gc", "gc")
        stats = server.ask("stats", "sessions")
        sessions = stats["sessions"]
        row = {
            "impl": impl, "n": n, "sessions": sessions, "wiring": server.wiring,
            "device_failed": sum(r["failed"] for r in results),
            "rss_before_mib": before["rss"] / 2**20, "rss_after_mib": after["rss"] / 2**20,
            "kib_per_session": (after["rss"] - before["rss"]) / 1024.0 / max(sessions, 1),
            "kib_per_session_trimmed": (after.get("rss_trimmed", after["rss"]) - before.get("rss_trimmed", before["rss"]))
            / 1024.0 / max(sessions, 1),
            "up_seconds": up_seconds,
        }
        if impl == "mux":
            answered = server.ask("rpc_all", "rpc_ok", timeout=600)
            row.update(rpc_ok=answered["rpc_ok"], rpc_failed=answered["rpc_failed"], rpc_seconds=answered["seconds"])
        return row
    finally:
        stop_all(fleet)
        stop_all([server])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("ssh", "tls"), default="ssh")
    parser.add_argument("--sizes", default="1000,5000,15000")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--device-procs", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0, help="connections per second, all processes together")
    parser.add_argument("--capabilities", type=int, default=64)
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before the second reading")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--set", action="append", default=[],
                        help="callhome-mux setting, section.key=value (TOML value), as bench/_server.py --set")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    impls = ["mux"] if args.no_floor else ["floor", "mux"]
    server_extra = [f"--set={assignment}" for assignment in args.set]
    floor_extra = []
    fleet_extra = ["--capabilities", str(args.capabilities)]
    if args.kind == "tls":
        from callhome_mux.testing.fleet import write_pki

        pki_dir = tempfile.mkdtemp(prefix="callhome-bench-pki-")
        paths = write_pki(pki_dir)
        server_extra += ["--pki", pki_dir, "--ca-fingerprint", paths["ca_fingerprint"], "--silence-timeout", "0.2"]
        floor_extra += ["--pki", pki_dir]
        fleet_extra += ["--pki", pki_dir]
    target = 24 if args.kind == "ssh" else 32
    print(f"hold: kind={args.kind} sizes={sizes} runs={args.runs} device processes={args.device_procs} "
          f"rate={args.rate:g}/s capabilities={args.capabilities}+7", flush=True)
    rows = []
    for run in range(args.runs):
        for n in sizes:
            for impl in impls:
                extra = server_extra if impl == "mux" else floor_extra
                row = one_hold(impl, args.kind, n, args.device_procs, args.rate, extra, fleet_extra, args.settle)
                rows.append(row)
                rpc = (f", RPC answered {row['rpc_ok']}/{row['sessions']} in {row['rpc_seconds']:.1f} s"
                       if "rpc_ok" in row else "")
                print(f"run {run + 1} {impl:5s} N={n:5d}: {row['sessions']} sessions held "
                      f"({row['device_failed']} device failures), RSS {row['rss_before_mib']:.0f} -> "
                      f"{row['rss_after_mib']:.0f} MiB, {row['kib_per_session']:.1f} KiB/session "
                      f"({row['kib_per_session_trimmed']:.1f} after malloc_trim){rpc} [{row['wiring']}]",
                      flush=True)
    print("\nmedian [min-max] over runs")
    for n in sizes:
        for impl in impls:
            rs = [r for r in rows if r["n"] == n and r["impl"] == impl]
            verdict = ""
            if impl == "mux":
                med = statistics.median(r["kib_per_session"] for r in rs)
                allok = all(r.get("rpc_ok") == n for r in rs)
                verdict = (f"  target <= {target} KiB: {'met' if med <= target else 'NOT met'}; "
                           f"every session answered an RPC: {'yes' if allok else 'NO'}")
            print(f"  {impl:5s} N={n:5d}: {summary([r['kib_per_session'] for r in rs], '{:.1f}')} KiB/session{verdict}")


if __name__ == "__main__":
    main()
