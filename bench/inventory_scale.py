#!/usr/bin/env python3
"""Gateway memory and start time against the size of the device inventory.

For each backend (SQLite, PostgreSQL) and each inventory size: one CA (`mtlsgate ca init`),
N devices added straight with SQL (`mtlsgate-bench seed-inventory`: a certificate row per
device, one device in 50 with an older revoked certificate, half of those expired), then
`mtlsgate serve --inventory …` started `--runs` times. Figures: the time from the gateway's
start until it logs the inventory read (`N devices at revision R`), its RSS two seconds later
minus the RSS of the same gateway without `--inventory`, divided by N, and its peak RSS.
With `--before BIN` the same runs are made with another build of mtlsgate, for a before /
after table. Results: bench/results/inventory-scale.md (or --out).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Gateway:
    """One `mtlsgate serve`; its log goes to a file."""

    def __init__(self, mg, work, ca, inventory):
        self.log_path = Path(work) / "gateway.log"
        self.log = open(self.log_path, "w")
        cmd = [mg, "serve", "--listen", "127.0.0.1:0", "--cert", f"{ca}/gw/localhost.crt",
               "--key", f"{ca}/gw/localhost.key", "--client-ca", f"{ca}/root.crt",
               "--upstream", "http://127.0.0.1:9"]
        if inventory:
            cmd += ["--inventory", inventory]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=work)

    def wait_for(self, pattern, timeout=300):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            if rx.search(text):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway ended: {text[-2000:]}")
            time.sleep(0.01)
        raise RuntimeError(f"no `{pattern}` within {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure(mg, work, ca, inventory, runs):
    """Baseline RSS, then per run: start → loaded, RSS, peak RSS (kB)."""
    g = Gateway(mg, work, ca, None)
    try:
        g.wait_for(r"listening on 127\.0\.0\.1:")
        time.sleep(2)
        base = status_kb(g.proc.pid, "VmRSS")
    finally:
        g.stop()
    out = []
    # One run not counted: it brings the files into the page cache, and a build newer than
    # the inventory's schema migrates it.
    for i in range(runs + 1):
        g = Gateway(mg, work, ca, inventory)
        try:
            secs = g.wait_for(r"devices at revision")
            time.sleep(2)
            if i == 0:
                continue
            out.append({"start_s": secs, "rss_kb": status_kb(g.proc.pid, "VmRSS"),
                        "peak_kb": status_kb(g.proc.pid, "VmHWM")})
        finally:
            g.stop()
    return base, out


def prepare(mg, bench, work, backend, devices, pg_url):
    ca = Path(work) / f"{backend}-{devices}"
    db = []
    inventory = str(ca)
    if backend == "postgres":
        name = f"inventory_{devices}"
        admin = f"{pg_url}/postgres"
        run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name}"])
        run(["psql", admin, "-qc", f"CREATE DATABASE {name}"])
        inventory = f"{pg_url}/{name}"
        db = ["--database", inventory]
    run([mg, "ca", "init", "--dir", str(ca), "--name", f"Bench {devices}", "--device-domain",
         "d.bench.local", *db])
    run([mg, "cert", "issue", "client", "template", "--dir", str(ca), "--out", str(ca / "tmpl"), *db])
    run([mg, "cert", "issue", "server", "localhost", "--dns", "localhost", "--ip", "127.0.0.1",
         "--dir", str(ca), "--out", str(ca / "gw"), *db])
    pem = run(["openssl", "x509", "-in", str(ca / "tmpl" / "template.crt")])
    (ca / "one.pem").write_text(pem)
    t = time.monotonic()
    run([bench, "seed-inventory", "--db", inventory, "--devices", str(devices), "--cert", str(ca / "one.pem")])
    log(f"   {backend}: {devices} devices added in {time.monotonic() - t:.1f}s")
    return ca, inventory


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="directory of mtlsgate and mtlsgate-bench")
    ap.add_argument("--before", help="another mtlsgate binary to measure the same way")
    ap.add_argument("--devices", default="100000,1000000")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pg-port", type=int, default=int(os.environ.get("INVENTORY_SCALE_PG_PORT", "54399")))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "inventory-scale.md"))
    ap.add_argument("--note", default="", help="a sentence on the machine's state for the results")
    args = ap.parse_args()

    # The gateways run in a work directory of their own: resolve the binaries' paths first.
    mg = str((Path(args.bin) / "mtlsgate").resolve())
    bench = str((Path(args.bin) / "mtlsgate-bench").resolve())
    before = str(Path(args.before).resolve()) if args.before else None
    builds = ([("before", before)] if before else []) + [("after", mg)]
    work = tempfile.mkdtemp(prefix="inventory-scale-")
    pg_dir = None
    pg_url = None
    rows = []
    load_before = os.getloadavg()
    try:
        backends = args.backends.split(",")
        if "postgres" in backends:
            # Its own directory under /tmp (not inside `work`, which mkdtemp makes 0700): the
            # user postgres must reach it when the benchmark runs as root.
            pg_dir = tempfile.mkdtemp(prefix="inventory-scale-pg-", dir="/tmp")
            run([str(ROOT / "scripts" / "postgres"), "start", pg_dir, str(args.pg_port)])
            pg_url = f"postgres://postgres@127.0.0.1:{args.pg_port}"
        for backend in backends:
            for n in [int(x) for x in args.devices.split(",")]:
                log(f"== {backend}, {n} devices")
                # The oldest build makes the inventory (a newer one migrates it, an older one
                # would refuse a schema it does not know).
                ca, inventory = prepare(builds[0][1], bench, work, backend, n, pg_url)
                for label, binary in builds:
                    base, runs = measure(binary, work, str(ca), inventory, args.runs)
                    rss = statistics.median(r["rss_kb"] for r in runs)
                    row = {"backend": backend, "devices": n, "build": label, "base_kb": base,
                           "rss_kb": rss, "peak_kb": max(r["peak_kb"] for r in runs),
                           "bytes_per_device": (rss - base) * 1024 / n,
                           "start_s": statistics.median(r["start_s"] for r in runs),
                           "starts": [round(r["start_s"], 2) for r in runs]}
                    log(f"   {label}: {row['bytes_per_device']:.0f} B/device, start {row['start_s']:.2f}s "
                        f"{row['starts']}, RSS {rss / 1024:.1f} MB (without inventory {base / 1024:.1f} MB, "
                        f"peak {row['peak_kb'] / 1024:.1f} MB)")
                    rows.append(row)
                if backend == "sqlite":
                    shutil.rmtree(ca, ignore_errors=True)
                else:
                    run(["psql", f"{pg_url}/postgres", "-qc", f"DROP DATABASE IF EXISTS inventory_{n}"])
    finally:
        if pg_dir:
            subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", pg_dir], capture_output=True)
            shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    lines = [
        "# Gateway memory and start time against the inventory's size",
        "",
        "`mtlsgate serve --inventory …` on an inventory of N devices added straight with SQL "
        "(`mtlsgate-bench seed-inventory`: one certificate row per device, one device in 50 with an "
        "older revoked certificate, half of those expired; four tag lists; a few devices denied, "
        "revoked or pending). Start: from the gateway's start until it logs the inventory read, median of "
        f"{args.runs} runs (each run listed). Bytes per device: RSS two seconds after the read minus "
        "the RSS of the same gateway without `--inventory`, divided by N. Peak: the highest RSS of "
        "the runs (VmHWM).",
        "",
        "| backend | devices | build | bytes/device | start, s (runs) | RSS, MB | without inventory, MB | peak RSS, MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['devices']:,} | {r['build']} | {r['bytes_per_device']:.0f} | "
            f"{r['start_s']:.2f} ({', '.join(f'{s:.2f}' for s in r['starts'])}) | {r['rss_kb'] / 1024:.1f} | "
            f"{r['base_kb'] / 1024:.1f} | {r['peak_kb'] / 1024:.1f} |")
    lines += [
        "",
        "Machine load (1/5/15 min): before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f} ({} cores).".format(
            *load_before, *load_after, os.cpu_count()),
    ]
    if args.note:
        lines += ["", args.note]
    lines += ["", "Command: `bench/inventory-scale " + " ".join(sys.argv[1:]) + "`", ""]
    Path(args.out).write_text("\n".join(lines))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
