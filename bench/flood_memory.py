#!/usr/bin/env python3
"""Does `mtlsgate serve` give back the memory a connection flood took? Starts the
gateway (release build, its default worker threads unless --threads) in front of the
fixed upstream, then `mtlsgate-bench flood` runs four floods of 5,000 connections at
once (new mTLS handshakes, one request each, all held open together, then closed) and
prints the gateway's RSS after each and after a settle period.

    bench/flood-memory [--bin target/release] [--count 5000] [--floods 4] [--settle 10]"""

import argparse
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--floods", type=int, default=4)
    ap.add_argument("--settle", type=float, default=10)
    ap.add_argument("--threads", type=int, help="the gateway's worker threads (default: its own)")
    ap.add_argument("--extra", default="", help="extra arguments for mtlsgate serve")
    args = ap.parse_args()
    args.bin = str(Path(args.bin).resolve())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 2 * args.count + 500:
        raise SystemExit(f"the descriptor limit is {hard}: too low for {args.count} connections")
    pki = bench.Pki(str(Path(args.bin) / "mtlsgate"))
    up_port = bench.free_port()
    up = subprocess.Popen([str(Path(args.bin) / "mtlsgate-bench"), "upstream", "--listen", f"127.0.0.1:{up_port}"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = bench.free_port()
    cmd = [str(Path(args.bin) / "mtlsgate"), "serve", "--listen", f"127.0.0.1:{port}",
           "--cert", str(pki.server_crt), "--key", str(pki.server_key), "--client-ca", str(pki.client_ca),
           "--upstream", f"http://127.0.0.1:{up_port}", "--access-log", "off", *args.extra.split()]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    (bench.WORK / "flood").mkdir(parents=True, exist_ok=True)
    err = open(bench.WORK / "flood" / "stderr.log", "w")
    gw = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        bench.wait_port(up_port, up, "upstream")
        bench.wait_port(port, gw, "mtlsgate")
        r = subprocess.run([str(Path(args.bin) / "mtlsgate-bench"), "flood", "--connect", f"127.0.0.1:{port}",
                            "--pid", str(gw.pid), "--count", str(args.count), "--floods", str(args.floods),
                            "--settle", str(args.settle), "--ca", str(pki.ca_bundle),
                            "--cert", str(pki.client_crt), "--key", str(pki.client_key)])
        if r.returncode != 0:
            raise SystemExit("the flood client failed")
    finally:
        for p in (gw, up):
            p.terminate()
            p.wait()
        err.close()


if __name__ == "__main__":
    main()
