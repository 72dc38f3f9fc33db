#!/usr/bin/env python3
"""A/B: two mtlsgate builds on the same keep-alive figure, in turn (A B A B ...), as
bench/bench.py measures it (gateway pinned to core 0 with one worker, oha and
`mtlsgate-bench upstream` on core 1, 50 connections), reporting requests per gateway
CPU-second for each run and the medians.

On a shared or virtual machine one run can differ from the next by 10 % or more (other
guests, the load core's scheduling), which hides a change of a few percent in a single
pair; many short pairs in turn and their medians do not. Use it to decide whether a change
to the request path pays, before a full bench/run.

    python3 bench/ab.py --a DIR_A --b DIR_B [--http2] [--pairs 8] [--seconds 5]
                        [--nginx-upstream] [--a-log | --b-log]

DIR_A and DIR_B each hold an `mtlsgate` binary (the same directory twice compares two
settings of one build); the upstream is DIR_A's `mtlsgate-bench`, or nginx with
`--nginx-upstream` (bench/run's second upstream). `--a-log`/`--b-log` turn that side's
access log on (text, to bench/work/access.log), as bench/run's logged row does. oha is
`~/.cargo/bin/oha` (bench/run installs it)."""

import argparse
import statistics
import subprocess
from pathlib import Path
from types import SimpleNamespace

import bench


def one(args, pki, up_port, bin_dir, logged):
    run = SimpleNamespace(bin=bin_dir, oha=args.oha, smoke=False, nofile=4096, maxconn=1000)
    extra, log_to = (["--access-log", "text"], bench.WORK / "access.log") if logged else ([], None)
    gw = bench.Gateway("mtlsgate", run, pki, up_port, True, extra, log_to=log_to).start()
    try:
        bench.oha(run, pki, gw.port, 1, 50, True, args.http2)
        cpu0 = bench.gateway_cpu(gw)
        r = bench.oha(run, pki, gw.port, args.seconds, 50, True, args.http2)
        cpu = bench.gateway_cpu(gw) - cpu0
    finally:
        gw.stop()
    if r["failed"] or not r["ok"]:
        raise SystemExit(f"{bin_dir}: {r['failed']} failed requests, {r['ok']} ok")
    return r["ok"] / cpu if cpu else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="directory with build A's mtlsgate")
    ap.add_argument("--b", required=True, help="directory with build B's mtlsgate")
    ap.add_argument("--http2", action="store_true")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--nginx-upstream", action="store_true", help="nginx as the upstream")
    ap.add_argument("--a-log", action="store_true", help="A with its access log on")
    ap.add_argument("--b-log", action="store_true", help="B with its access log on")
    ap.add_argument("--oha", default=str(Path.home() / ".cargo" / "bin" / "oha"))
    args = ap.parse_args()
    a, b = str(Path(args.a).resolve()), str(Path(args.b).resolve())
    bench.WORK.mkdir(parents=True, exist_ok=True)
    pki = bench.Pki(str(Path(a) / "mtlsgate"))
    up_port = bench.free_port()
    upstream = subprocess.Popen(["taskset", "-c", bench.LOAD_CPU, str(Path(a) / "mtlsgate-bench"), "upstream",
                                 "--listen", f"127.0.0.1:{up_port}"], stderr=subprocess.DEVNULL)
    bench.wait_port(up_port, upstream, "upstream")
    nginx_up = None
    got = {"A": [], "B": []}
    try:
        if args.nginx_upstream:
            nginx_up = bench.NginxUpstream(SimpleNamespace(nofile=4096))
            up_port = nginx_up.port
        for i in range(args.pairs):
            for side, d, logged in (("A", a, args.a_log), ("B", b, args.b_log)):
                got[side].append(one(args, pki, up_port, d, logged))
                bench.log(f"pair {i + 1} {side} {got[side][-1]:.0f} per gateway CPU-second")
    finally:
        upstream.terminate()
        upstream.wait()
        if nginx_up:
            nginx_up.stop()
    ma, mb = statistics.median(got["A"]), statistics.median(got["B"])
    what = "HTTP/2" if args.http2 else "keep-alive HTTP/1.1"
    print(f"{what}, requests per gateway CPU-second, {args.pairs} pairs of {args.seconds:g} s:")
    if args.nginx_upstream:
        what += ", nginx as the upstream"
    for side, d, logged in (("A", a, args.a_log), ("B", b, args.b_log)):
        runs = ", ".join(f"{v:.0f}" for v in sorted(got[side]))
        print(f"  {side} {d}{' (access log on)' if logged else ''}: median "
              f"{statistics.median(got[side]):.0f}  (runs: {runs})")
    print(f"  B / A: {mb / ma:.3f}")


if __name__ == "__main__":
    main()
