#!/usr/bin/env python3
"""Resident memory per idle mTLS HTTP connection of `mtlsgate serve` (and nginx with
--nginx), by bench.py's method: one request first, then `mtlsgate-bench idle` opens N
connections (one request each, then idle) and the gateway's RSS is read before and with
them open. A quick check of just that figure, without the rest of bench.py.

    bench/idle_memory.py --bin target/release --count 3000 9500 [--h2] [--nginx]"""

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--count", type=int, nargs="+", default=[3000, 9500])
    ap.add_argument("--h2", action="store_true", help="measure HTTP/2 only (default: both)")
    ap.add_argument("--h1", action="store_true", help="measure HTTP/1.1 only (default: both)")
    ap.add_argument("--nginx", action="store_true", help="measure nginx too")
    ap.add_argument("--extra", default="", help="extra arguments for mtlsgate serve")
    args = ap.parse_args()
    args.bin = str(Path(args.bin).resolve())
    args.oha = "oha"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.nofile = hard
    args.maxconn = max(args.count) + 500
    pki = bench.Pki(str(Path(args.bin) / "mtlsgate"))
    up_port = bench.free_port()
    up = subprocess.Popen(["taskset", "-c", bench.LOAD_CPU, str(Path(args.bin) / "mtlsgate-bench"),
                           "upstream", "--listen", f"127.0.0.1:{up_port}"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    modes = [("HTTP/1.1", False), ("HTTP/2", True)]
    if args.h2:
        modes = [("HTTP/2", True)]
    if args.h1:
        modes = [("HTTP/1.1", False)]
    kinds = ["mtlsgate"] + (["nginx"] if args.nginx else [])
    try:
        bench.wait_port(up_port, up, "upstream")
        for kind in kinds:
            for label, h2 in modes:
                for n in args.count:
                    gw = bench.Gateway(kind, args, pki, up_port, True, args.extra.split()).start()
                    try:
                        m = bench.idle_memory(args, pki, gw, n, h2)
                    finally:
                        gw.stop()
                    print(f"{kind} {label} {n} idle: {m['kib_per_conn']:.1f} KiB/connection "
                          f"({m['rss_before_kib']} -> {m['rss_after_kib']} KiB)", flush=True)
    finally:
        up.terminate()
        up.wait()


if __name__ == "__main__":
    main()
