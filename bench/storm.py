"""
Call-home storm: N devices dial at once; how fast do sessions come up, at what CPU cost?

    python bench/storm.py                      # SSH, N = 500 and 2000, 3 runs, vs the conch floor
    python bench/storm.py --sizes 500 --runs 5
    python bench/storm.py --kind tls           # NETCONF over TLS, silent devices, vs the bare-TLS floor

For each run and size, against callhome-mux (bench/_server.py: the real
CallHomeService) and, for SSH, against the bare-conch floor
(bench/floor_conch.py) or, for TLS, the bare-TLS floor (bench/floor_tls.py): one server process, device processes (one per
loopback source address, callhome_mux.testing.fleet) that dial all their
devices at once.  Printed per run: sessions per second (all devices / from
the first connect to the last hello), server CPU ms per session (the server
process's utime+stime from /proc before the storm and once it counts N
sessions and its inventory has committed the rows they caused), p50 and p99 of connect->hello-done on the devices.  Then the
medians [min-max] over runs and the ratios ours / floor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import (cpu_seconds, percentile, sources, start_fleet, start_server, stop_all, summary,  # noqa: E402
                           thread_cpu_per_session)


def floor_cpu_of(targets):
    """The --cpu-of targets the TLS floor can time too: those outside callhome_mux (OpenSSL, Twisted)."""
    return [target for target in targets if target.partition(":")[0].split(".")[0] != "callhome_mux"]


def one_storm(impl: str, kind: str, n: int, device_procs: int, server_extra=(), fleet_extra=(), py_spy=None):
    server = start_server(impl, kind, n, server_extra)
    fleet = []
    try:
        fleet = start_fleet(kind, server.port, sources(device_procs), n, fleet_extra)
        spy = None
        if py_spy:
            import subprocess

            spy = subprocess.Popen(["py-spy", "record", "--pid", str(server.pid), "--rate", "500", "--format", "raw",
                                    "--nonblocking", "-o", py_spy], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)
        time.sleep(0.5)
        gc_before = server.ask("stats", "sessions")
        cpu_before = cpu_seconds(server.pid)
        for child in fleet:
            child.send("go")
        results = [child.expect("done", timeout=300) for child in fleet]
        deadline = time.time() + 60
        while True:
            stats = server.ask("stats", "sessions")
            if stats["sessions"] >= sum(r["done"] for r in results) or time.time() > deadline:
                break
            time.sleep(0.05)
        # The inventory batches its writes: count the ones the storm caused.
        server.ask("settle", "settled", timeout=60)
        cpu_after = cpu_seconds(server.pid)
        after = server.ask("stats", "sessions")
        cpu_of = after.get("cpu_of") or {}
        gc_ms = (after.get("gc_s", 0.0) - gc_before.get("gc_s", 0.0)) * 1000.0
        gc_collections = [a - b for a, b in zip(after.get("gc_collections", ()), gc_before.get("gc_collections", ()))]
        if spy is not None:
            import signal

            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        done = sum(r["done"] for r in results)
        failed = sum(r["failed"] for r in results)
        latencies = sorted(x for r in results for x in r["latencies_ms"])
        first = min(r["first_start"] for r in results)
        last = max(r["last_hello"] for r in results)
        return {
            "impl": impl,
            "wiring": server.wiring,
            "n": n,
            "done": done,
            "failed": failed,
            "server_sessions": stats["sessions"],
            "sessions_per_s": done / (last - first) if last > first else float("nan"),
            "cpu_ms_per_session": (cpu_after - cpu_before) * 1000.0 / max(done, 1),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "failures": sorted({f for r in results for f in r["failures"]})[:3],
            "cpu_of": cpu_of,
            "gc_ms": gc_ms,
            "gc_collections": gc_collections,
            "threads_us": thread_cpu_per_session(gc_before.get("threads", {}), after.get("threads", {}), done),
        }
    finally:
        stop_all(fleet)
        stop_all([server])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("ssh", "tls"), default="ssh")
    parser.add_argument("--sizes", default="500,2000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device-procs", type=int, default=4)
    parser.add_argument("--capabilities", type=int, default=64)
    parser.add_argument("--log", choices=("none", "text"), default="none", help="callhome-mux text log")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a callhome-mux setting (TOML value), e.g. tls.protocol_decision_wait=0.05")
    parser.add_argument("--mux-kex", default="same-as-floor",
                        help="callhome-mux's ssh.key_exchanges and ssh.macs: 'same-as-floor' (curve25519-sha256 and hmac-sha2-512, what conch's "
                             "client negotiates; default, for a like-for-like ratio) or 'default' (its own defaults: "
                             "mlkem768x25519-sha256 first, which conch's client cannot do)")
    parser.add_argument("--tls-groups", default="",
                        help="TLS key-exchange groups (comma-separated) for both callhome-mux (tls.groups) and the "
                             "floor, e.g. X25519; default: OpenSSL's own (X25519MLKEM768 first with OpenSSL >= 3.5) for both")
    parser.add_argument("--experiment", action="append", default=[],
                        help="bench/_server.py --experiment (take a part away to measure its share)")
    parser.add_argument("--cpu-of", action="append", default=[],
                        help="module:Class.method: print its thread CPU time per session (exact where py-spy's "
                             "shares are blurred by other processes); with --kind tls the floor times the targets "
                             "outside callhome_mux too, e.g. OpenSSL.SSL:Connection.do_handshake")
    parser.add_argument("--profile", help="cProfile each server process into PROFILE.<impl>.<n>.<run>")
    parser.add_argument("--py-spy", help="py-spy (raw, collapsed stacks) each server during the storm: PY_SPY.<impl>.<n>.<run>")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    impls = ["mux"] if args.no_floor else ["floor", "mux"]
    server_extra = ["--log", args.log, *[f"--experiment={e}" for e in args.experiment],
                    *[f"--cpu-of={target}" for target in args.cpu_of], *[f"--set={item}" for item in args.set]]
    floor_extra = []
    if args.kind == "ssh" and args.mux_kex == "same-as-floor":
        server_extra.append('--set=ssh.key_exchanges=["curve25519-sha256", "curve25519-sha256@libssh.org"]')
        # conch's client (the floor) offers hmac-sha2-512 first; ours -256.
        server_extra.append('--set=ssh.macs=["hmac-sha2-512", "hmac-sha2-256"]')
    fleet_extra = ["--capabilities", str(args.capabilities)]
    if args.kind == "tls":
        from callhome_mux.testing.fleet import write_pki

        pki_dir = tempfile.mkdtemp(prefix="callhome-bench-pki-")
        paths = write_pki(pki_dir)
        server_extra += ["--pki", pki_dir, "--ca-fingerprint", paths["ca_fingerprint"]]
        floor_extra += ["--pki", pki_dir,
                        *[f"--cpu-of={target}" for target in floor_cpu_of(args.cpu_of)]]
        fleet_extra += ["--pki", pki_dir]
        if args.tls_groups:
            groups = [g for g in args.tls_groups.replace(":", ",").split(",") if g]
            server_extra.append("--set=tls.groups=" + json.dumps(groups))
            floor_extra.append("--groups=" + ":".join(groups))
    rows = []
    print(f"storm: kind={args.kind} sizes={sizes} runs={args.runs} device processes={args.device_procs} "
          f"capabilities={args.capabilities}+7 log={args.log}"
          + (f" mux-kex={args.mux_kex}" if args.kind == "ssh" else f" tls-groups={args.tls_groups or 'default'}"),
          flush=True)
    for run in range(args.runs):
        for n in sizes:
            for impl in impls:
                extra = list(server_extra) if impl == "mux" else list(floor_extra)
                if args.profile:
                    extra += ["--profile", f"{args.profile}.{impl}.{n}.{run + 1}"]
                spy = f"{args.py_spy}.{impl}.{n}.{run + 1}" if args.py_spy else None
                row = one_storm(impl, args.kind, n, args.device_procs, extra, fleet_extra, spy)
                rows.append(row)
                print(
                    f"run {run + 1} {impl:5s} N={n:5d}: {row['done']} up, {row['failed']} failed, "
                    f"{row['sessions_per_s']:7.1f} sessions/s, {row['cpu_ms_per_session']:6.2f} ms CPU/session, "
                    f"p50 {row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, "
                    f"gc {row['gc_ms']:.0f} ms {row['gc_collections']} [{row['wiring']}]"
                    + (f"  failures: {row['failures']}" if row["failures"] else ""),
                    flush=True,
                )
                if row["threads_us"]:
                    print("    threads, us CPU/session: " + ", ".join(
                        f"{role} {us:.3g}" for role, us in sorted(row["threads_us"].items())),
                        flush=True)
                for name, (calls, seconds) in row["cpu_of"].items():
                    print(f"    {name}: {calls} calls, {seconds * 1e6 / max(row['done'], 1):.0f} us CPU/session", flush=True)
    print("\nmedian [min-max] over runs")
    for n in sizes:
        by = {impl: [r for r in rows if r["n"] == n and r["impl"] == impl] for impl in impls}
        for impl in impls:
            rs = by[impl]
            print(
                f"  {impl:5s} N={n:5d}: sessions/s {summary([r['sessions_per_s'] for r in rs], '{:.0f}')}, "
                f"CPU ms/session {summary([r['cpu_ms_per_session'] for r in rs], '{:.2f}')}, "
                f"p50 ms {summary([r['p50_ms'] for r in rs], '{:.0f}')}, "
                f"p99 ms {summary([r['p99_ms'] for r in rs], '{:.0f}')}"
            )
            roles = sorted({role for r in rs for role in r["threads_us"]})
            if roles:
                print("        threads, us CPU/session: " + ", ".join(
                    f"{role} {summary([r['threads_us'].get(role, 0.0) for r in rs], '{:.3g}')}" for role in roles))
        if "floor" in by:
            pairs = list(zip(by["mux"], by["floor"]))
            cpu_ratio = [m["cpu_ms_per_session"] / f["cpu_ms_per_session"] for m, f in pairs]
            rate_ratio = [m["sessions_per_s"] / f["sessions_per_s"] for m, f in pairs]
            print(
                f"  ours/floor N={n}: CPU per session {summary(cpu_ratio, '{:.2f}')}x (target <= 1.10), "
                f"sessions/s {summary(rate_ratio, '{:.2f}')}x (target >= 0.90)"
            )
        if args.kind == "tls":
            cpu = [r["cpu_ms_per_session"] for r in by["mux"]]
            print(f"  TLS N={n}: CPU ms/session {summary(cpu, '{:.2f}')} (target <= 1.1)")


if __name__ == "__main__":
    main()
