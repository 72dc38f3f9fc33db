#!/usr/bin/env python3
"""Instructions per kept-alive request through one mtlsgate build, counted by valgrind's
callgrind: curl sends N and then 2N requests on one connection through a gateway run under
callgrind (`--threads 1`), and the difference of the two totals, divided by N, is what one
request costs in user space. Unlike a timed run it does not depend on how busy the machine
is, so it can judge a change of a few percent that bench/ab.py cannot separate from noise
(it counts instructions, not kernel time or cache misses).

    python3 bench/instructions.py DIR [--http2] [--nginx-upstream] [--access-log] [--n 200]
                                      [--function NAME]

DIR holds `mtlsgate` and `mtlsgate-bench` (the upstream; nginx with `--nginx-upstream`, as
bench/run's second upstream). `--function NAME` also prints, per request, callgrind's
inclusive count (the function and what it calls) of each entry whose `file:function`
contains NAME, such as `access_log::write`, the largest eight. A function with code
inlined from other files has one entry per file: read the one in its own file. These
counts do not vary from run to run, while the totals vary by about 1,500 instructions
(how requests fall into wake-ups); aws-lc's start-up seeding of its random generator, which
varies by millions, is left out of both. Needs
valgrind (`apt-get install valgrind`) and curl. The callgrind files stay in bench/work/."""

import argparse
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import bench


def totals(out):
    """The program's instruction total in a callgrind file."""
    for line in open(out):
        m = re.match(r"(summary|totals): (\d+)", line)
        if m:
            return int(m.group(2))
    raise SystemExit(f"{out}: no instruction total (did the gateway stop cleanly?)")


# aws-lc seeds its random generator once, at the first TLS ticket key, from CPU timing
# jitter (jitterentropy): a loop that runs until the timings pass its health tests, about
# 420 million instructions that vary by a few million from run to run, which would swamp a
# per-request difference. It is counted out of each total.
JITTER_SEEDING = "tree_jitter_initialize_once"


def counted(out):
    """The instruction total without aws-lc's start-up seeding (JITTER_SEEDING)."""
    return totals(out) - max(inclusive(out, JITTER_SEEDING).values(), default=0)


def inclusive(out, name):
    """callgrind_annotate's inclusive count of each entry (`file:function`) that contains
    `name`. A function whose code was inlined from other files has an entry per file."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=yes", out],
                          capture_output=True, text=True, check=True).stdout
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+:\S.*?)(?: \[[^\]]*\])?$", line)
        if m and name in m.group(2):
            found[m.group(2)] = found.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return found


def run(a, pki, up_port, n):
    port = bench.free_port()
    out = str(bench.WORK / f"callgrind.{n}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(Path(a.dir) / "mtlsgate"), "serve",
           "--listen", f"127.0.0.1:{port}", "--cert", str(pki.server_crt), "--key", str(pki.server_key),
           "--client-ca", str(pki.client_ca), "--upstream", f"http://127.0.0.1:{up_port}", "--threads", "1",
           "--access-log", "text" if a.access_log else "off"]
    with open(bench.WORK / "instructions-access.log", "w") as log:
        gw = subprocess.Popen(cmd, stdout=log, stderr=subprocess.DEVNULL)
        try:
            bench.wait_port(port, gw, "mtlsgate under callgrind", timeout=120)
            config = bench.WORK / "instructions.curl"
            config.write_text(f'url = "https://localhost:{port}/"\noutput = "/dev/null"\n' * n)
            subprocess.run(["curl", "-sS", "--fail", "--cacert", str(pki.ca_bundle), "--cert", str(pki.client_crt),
                            "--key", str(pki.client_key), "--resolve", f"localhost:{port}:127.0.0.1",
                            "--http2" if a.http2 else "--http1.1", "-K", str(config)], check=True)
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="directory with mtlsgate and mtlsgate-bench")
    ap.add_argument("--http2", action="store_true")
    ap.add_argument("--nginx-upstream", action="store_true")
    ap.add_argument("--access-log", action="store_true", help="the text access log on")
    ap.add_argument("--n", type=int, default=200, help="requests in the first run (the second sends twice as many)")
    ap.add_argument("--function", action="append", default=[], help="also count this function per request")
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_annotate", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (apt-get install valgrind curl)")
    bench.WORK.mkdir(parents=True, exist_ok=True)
    pki = bench.Pki(str(Path(a.dir) / "mtlsgate"))
    nginx_up, upstream = None, None
    if a.nginx_upstream:
        nginx_up = bench.NginxUpstream(SimpleNamespace(nofile=4096))
        up_port = nginx_up.port
    else:
        up_port = bench.free_port()
        upstream = subprocess.Popen([str(Path(a.dir) / "mtlsgate-bench"), "upstream", "--listen",
                                     f"127.0.0.1:{up_port}"], stderr=subprocess.DEVNULL)
        bench.wait_port(up_port, upstream, "upstream")
    try:
        one, two = run(a, pki, up_port, a.n), run(a, pki, up_port, 2 * a.n)
    finally:
        if nginx_up:
            nginx_up.stop()
        if upstream:
            upstream.terminate()
            upstream.wait()
    what = "HTTP/2" if a.http2 else "HTTP/1.1"
    what += ", nginx as the upstream" if a.nginx_upstream else ""
    what += ", access log on" if a.access_log else ""
    print(f"{what}: {(counted(two) - counted(one)) / a.n:.0f} instructions per request "
          f"({a.n} and {2 * a.n} requests; {one}, {two})")
    for name in a.function:
        f1, f2 = inclusive(one, name), inclusive(two, name)
        per = sorted(((f2[k] - f1.get(k, 0)) / a.n, k) for k in f2)[::-1]
        if not per:
            print(f"  no function named like {name!r} ran", file=sys.stderr)
        for v, k in per[:8]:
            print(f"  {v:8.0f}  {k}")


if __name__ == "__main__":
    main()
