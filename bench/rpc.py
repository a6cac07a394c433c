"""
One NETCONF/SSH session: RPCs per second and bulk receive throughput.

    python bench/rpc.py                 # 3 runs
    python bench/rpc.py --runs 5 --count 50000 --big-mb 20

One device process (callhome_mux.testing.fleet, answering every RPC with a
canned reply without parsing XML, so that the device is not the
bottleneck) calls home to callhome-mux (bench/_server.py); the server
process then runs, on that one session:

 - sequential: C{--count}/5 trivial RPCs (<commit/> -> <ok/>), one at a time;
 - pipelined: C{--count} trivial RPCs with 64 outstanding;
 - bulk: one <get> whose <rpc-reply> carries C{--big-mb} MB of <data>
   (many small elements), timed from sending the RPC to the last byte
   de-framed and to the parsed reply; C{--big-repeat} of them one after the
   other on the same session.  The first is printed apart ("cold": the
   server's and the device's first large message, heaps not yet grown),
   the median of the others as "warm" (a session that has seen large
   replies before, the usual case for a management system).

Targets: >= 30,000 pipelined RPCs/s; >= 200 MB/s for the bulk reply.
Also printed: server CPU microseconds per RPC (its own getrusage), the
device process's CPU over each phase (it must not be the bottleneck), and
for the pipelined phase how well RPCs are batched (RPCs per TCP send, per
TCP read and per SSH packet sent by the server).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import sources, start_fleet, start_server, stop_all, summary  # noqa: E402


def spied(args, server, name, measure):
    """Run C{measure}, under py-spy (raw collapsed stacks to PY_SPY.<name>) if asked."""
    if not args.py_spy:
        return measure()
    import signal
    import subprocess
    import time

    spy = subprocess.Popen(["py-spy", "record", "--pid", str(server.pid), "--rate", "1000", "--format", "raw",
                            "--nonblocking", "-o", f"{args.py_spy}.{name}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    try:
        return measure()
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def one_run(args):
    extra = [f"--set=ssh.channel_window={args.window}"] if args.window else []
    if args.max_packet:
        extra.append(f"--set=ssh.channel_max_packet={args.max_packet}")
    server = start_server("mux", "ssh", 1, extra)
    fleet = []
    try:
        fleet = start_fleet("ssh", server.port, sources(1), 1,
                            ["--capabilities", "64", "--big-reply", str(int(args.big_mb * 1e6))])
        fleet[0].send("go")
        done = fleet[0].expect("done", timeout=60)
        assert done["done"] == 1, done
        while server.ask("stats", "sessions")["sessions"] < 1:
            pass
        server.ask("rpc_pipe 2000 64", "rpcs")  # warm up
        device = fleet[0]

        def phase(name, command, key):
            # The device's CPU over the phase too: it must not be the bottleneck.
            before = device.ask("stats", "cpu")["cpu"]
            result = spied(args, server, name, lambda: server.ask(command, key, timeout=600))
            result["device_cpu"] = device.ask("stats", "cpu")["cpu"] - before
            return result

        seq = phase("seq", f"rpc_seq {args.count // 5}", "rpcs")
        pipe = phase("pipe", f"rpc_pipe {args.count} {args.depth}", "rpcs")
        bigs = [phase("big", "rpc_big", "bytes") for _ in range(max(1, args.big_repeat))]
        big, warm = bigs[0], bigs[1:]
        send = phase("send", f"rpc_bigsend {int(args.big_mb * 1e6)}", "sent_bytes")
        return {
            "seq_per_s": seq["rpcs"] / seq["seconds"],
            "seq_cpu_us": seq["cpu"] * 1e6 / seq["rpcs"],
            "seq_device_us": seq["device_cpu"] * 1e6 / seq["rpcs"],
            "pipe_device_us": pipe["device_cpu"] * 1e6 / pipe["rpcs"],
            "big_device_s": big["device_cpu"],
            "send_device_s": send["device_cpu"],
            "pipe_per_s": pipe["rpcs"] / pipe["seconds"],
            "pipe_cpu_us": pipe["cpu"] * 1e6 / pipe["rpcs"],
            "pipe_failed": pipe["failed"],
            "pipe_batching": (f"{pipe['rpcs'] / max(1, pipe.get('sends', 0)):.1f} RPCs/send, "
                              f"{pipe['rpcs'] / max(1, pipe.get('reads', 0)):.1f} RPCs/read, "
                              f"{pipe['rpcs'] / max(1, pipe.get('packets_out', 0)):.1f} RPCs/SSH packet"),
            "big_mb_s": big["bytes"] / 1e6 / big["seconds"],
            "big_transfer_mb_s": big["bytes"] / 1e6 / big["transfer_seconds"],
            "big_mb": big["bytes"] / 1e6,
            "big_cpu_s": big["cpu"],
            "warm_mb_s": statistics.median(b["bytes"] / 1e6 / b["seconds"] for b in warm) if warm else None,
            "warm_transfer_mb_s": (statistics.median(b["bytes"] / 1e6 / b["transfer_seconds"] for b in warm)
                                   if warm else None),
            "warm_cpu_s": statistics.median(b["cpu"] for b in warm) if warm else None,
            "send_mb_s": send["sent_bytes"] / 1e6 / send["seconds"],
            "send_cpu_s": send["cpu"],
            "wiring": server.wiring,
        }
    finally:
        stop_all(fleet)
        stop_all([server])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=30000)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--big-mb", type=float, default=20.0)
    parser.add_argument("--big-repeat", type=int, default=3,
                        help="bulk replies per run: the first reported as cold, the median of the others as warm")
    parser.add_argument("--window", type=int, default=0, help="ssh.channel_window for the server (0: its default)")
    parser.add_argument("--max-packet", type=int, default=0,
                        help="ssh.channel_max_packet for the server (0: its default)")
    parser.add_argument("--py-spy", help="py-spy the server during each phase: PY_SPY.seq/.pipe/.big")
    args = parser.parse_args()
    print(f"rpc: runs={args.runs} pipelined={args.count} (depth {args.depth}) sequential={args.count // 5} "
          f"bulk={args.big_mb:g} MB", flush=True)
    rows = []
    for run in range(args.runs):
        row = one_run(args)
        rows.append(row)
        print(f"run {run + 1}: sequential {row['seq_per_s']:.0f}/s ({row['seq_cpu_us']:.0f} us CPU/RPC, "
              f"device {row['seq_device_us']:.0f}), "
              f"pipelined {row['pipe_per_s']:.0f}/s ({row['pipe_cpu_us']:.0f} us CPU/RPC, device {row['pipe_device_us']:.0f}, "
              f"{row['pipe_failed']} failed; {row['pipe_batching']}), "
              f"bulk {row['big_mb']:.1f} MB at {row['big_mb_s']:.0f} MB/s to the parsed reply, "
              f"{row['big_transfer_mb_s']:.0f} MB/s to the last byte de-framed ({row['big_cpu_s']:.2f} s CPU, "
              f"device {row['big_device_s']:.2f}); "
              + (f"warm bulk {row['warm_mb_s']:.0f} MB/s parsed, {row['warm_transfer_mb_s']:.0f} MB/s to the last byte "
                 f"({row['warm_cpu_s']:.2f} s CPU); " if row["warm_mb_s"] is not None else "")
              + f"sending {row['big_mb']:.0f} MB <edit-config> {row['send_mb_s']:.0f} MB/s ({row['send_cpu_s']:.2f} s CPU, "
              f"device {row['send_device_s']:.2f}) [{row['wiring']}]",
              flush=True)
    print("\nmedian [min-max] over runs")
    pipe = [r["pipe_per_s"] for r in rows]
    big = [r["big_mb_s"] for r in rows]
    print(f"  sequential RPCs/s {summary([r['seq_per_s'] for r in rows], '{:.0f}')}")
    print(f"  pipelined RPCs/s  {summary(pipe, '{:.0f}')}  target >= 30000: "
          f"{'met' if statistics.median(pipe) >= 30000 else 'NOT met'}")
    def verdict(values):
        return "met" if statistics.median(values) >= 200 else "NOT met"

    transfer = [r["big_transfer_mb_s"] for r in rows]
    print(f"  bulk, cold: MB/s to the last byte (transfer, decrypt, de-frame) {summary(transfer, '{:.0f}')}  "
          f"target >= 200: {verdict(transfer)}")
    print(f"  bulk, cold: MB/s to the parsed reply {summary(big, '{:.0f}')}  target >= 200: {verdict(big)}")
    if rows[0]["warm_mb_s"] is not None:
        warm_transfer = [r["warm_transfer_mb_s"] for r in rows]
        warm = [r["warm_mb_s"] for r in rows]
        print(f"  bulk, warm: MB/s to the last byte {summary(warm_transfer, '{:.0f}')}  "
              f"target >= 200: {verdict(warm_transfer)}")
        print(f"  bulk, warm: MB/s to the parsed reply {summary(warm, '{:.0f}')}  target >= 200: {verdict(warm)}")
    print(f"  sending a bulk <edit-config> MB/s (device window 128 KiB) {summary([r['send_mb_s'] for r in rows], '{:.0f}')}")

if __name__ == "__main__":
    main()
