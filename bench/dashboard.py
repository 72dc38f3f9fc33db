#!/usr/bin/env python3
"""The fleet dashboard at fleet size: how long `mtlsgate ca serve --dashboard-listen` takes
to answer each list page with N devices in the inventory (100,000 by default; the target
is every list page under 100 ms).

The inventory is made by `mtlsgate ca init` and filled straight with SQL by
`mtlsgate-bench seed-inventory` (statuses active, pending, denied and revoked; four tag
lists; certificate expiry, last seen and first seen spread). The CA server runs pinned to
core 1 (when taskset is there); the client here signs in with a link from
`mtlsgate admin login-link` and asks for each page over one kept-alive connection: once to
warm up, then --runs times (the CSV exports a tenth as often, at least 3). Each figure is
the time from sending the request to the last byte of the answer: median and p99 (with
fewer than 100 runs, p99 is the slowest).

Pages: overview, pending, devices (all, each status tab, an ID search, a tag filter, sort
by expiry and by last seen, the last page), the CSV export (all devices: an export, not a
list page, so outside the target), certificates (first page, CN prefix and substring,
serial prefix, revoked) and the audit log (all, one device, one action, one actor since a
day).

Run it through bench/dashboard, which builds what it needs."""

import argparse
import datetime
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "dashboard"
RESULTS = ROOT / "bench" / "results"
TARGET_MS = 100.0
PAGE_SIZE = 50
SERVER_CPU = "1"


def log(msg):
    print(msg, flush=True)


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, out, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"ca serve exited with {proc.returncode}:\n{out.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}:\n{out.read_text()}")


def loadavg():
    return [f"{x:.2f}" for x in os.getloadavg()]


class Client:
    """One kept-alive HTTP connection to the dashboard, with the session cookie."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("localhost", port, timeout=120)
        self.cookie = None

    def request(self, method, path, body=None, headers=None):
        h = {"Host": f"localhost:{self.port}", **(headers or {})}
        if self.cookie:
            h["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        return r, data

    def login(self, link):
        token = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0]
        r, _ = self.request("POST", "/login", urllib.parse.urlencode({"token": token}),
                            {"Content-Type": "application/x-www-form-urlencoded",
                             "Origin": f"http://localhost:{self.port}"})
        m = re.match(r"(__Host-mtlsgate_session=[^;]+)", r.getheader("Set-Cookie") or "")
        if r.status != 303 or not m:
            raise SystemExit(f"sign-in failed: {r.status} {r.getheader('Set-Cookie')}")
        self.cookie = m.group(1)

    def time(self, path):
        """Milliseconds for one GET of path, and its answer's size; fails on anything but 200."""
        t = time.perf_counter()
        r, data = self.request("GET", path)
        ms = (time.perf_counter() - t) * 1000
        if r.status != 200:
            raise SystemExit(f"GET {path}: {r.status}\n{data[:500].decode(errors='replace')}")
        if data.startswith(b"<!DOCTYPE") and b"<h1>Sign in</h1>" in data:
            raise SystemExit(f"GET {path}: the session was not accepted")
        return ms, len(data)


def pages(devices):
    last = max(1, math.ceil(devices / PAGE_SIZE))
    yield "overview", "/", True
    yield "pending queue", "/pending", True
    yield "devices, all", "/devices", True
    for s in ("pending", "active", "denied", "revoked", "quarantined"):
        yield f"devices, tab {s}", f"/devices?status={s}", True
    yield "devices, ID contains `00042`", "/devices?q=00042", True
    yield "devices, tag `lab`", "/devices?tag=lab", True
    yield "devices, active + tag `prod`, by expiry", "/devices?status=active&tag=prod&sort=expires&dir=asc", True
    yield "devices, by expiry", "/devices?sort=expires&dir=asc", True
    yield "devices, by last seen, newest first", "/devices?sort=last_seen&dir=desc", True
    yield f"devices, last page ({last})", f"/devices?page={last}", True
    yield "devices, page in the middle, by expiry", f"/devices?sort=expires&page={max(1, last // 2)}", True
    yield "CSV export, all devices", "/devices.csv", False
    yield "CSV export, tab pending", "/devices.csv?status=pending", False
    yield "certificates, first page", "/certificates", True
    yield "certificates, CN starts with `dev-00042`", "/certificates?cn=dev-00042&how=prefix", True
    yield "certificates, CN contains `00042`", "/certificates?cn=00042&how=contains", True
    yield "certificates, serial starting `7E000000000000004`", "/certificates?serial=7E000000000000004", True
    yield "certificates, revoked", "/certificates?status=revoked", True
    yield "audit log", "/audit", True
    yield "audit log, one device", "/audit?device=dev-0000042.d.bench.local", True
    yield "audit log, action `revoke`", "/audit?action=revoke", True
    week_ago = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=7)).strftime("%Y-%m-%d")
    yield "audit log, actor `admin`, the last 7 days", f"/audit?actor=admin&from={week_ago}", True


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="directory with mtlsgate and mtlsgate-bench")
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=50, help="requests per page (after one to warm up)")
    ap.add_argument("--database", help="an empty PostgreSQL database for the inventory (default: SQLite)")
    ap.add_argument("--smoke", action="store_true", help="2,000 devices, 5 runs, results not kept (checks the harness)")
    ap.add_argument("--name", default="dashboard", help="results file name (bench/results/NAME.md)")
    args = ap.parse_args()
    bindir = Path(args.bin).resolve()
    mg, bench = bindir / "mtlsgate", bindir / "mtlsgate-bench"
    if args.smoke:
        args.devices, args.runs = min(args.devices, 2000), 5
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    load_before = loadavg()
    log(f"== load average {' '.join(load_before)}")
    ca = WORK / "ca"
    db = ["--database", args.database] if args.database else []
    backend = "PostgreSQL" if args.database else "SQLite"

    log(f"== inventory: {args.devices} devices ({backend})")
    run([mg, "ca", "init", "--dir", ca, "--device-domain", "d.bench.local", *db])
    run([mg, "cert", "issue", "client", "template", "--dir", ca, "--out", ca / "tmpl", *db])
    (ca / "one.pem").write_text(run(["openssl", "x509", "-in", ca / "tmpl" / "template.crt"]))
    t = time.monotonic()
    run([bench, "seed-inventory", "--db", args.database or ca, "--devices", args.devices, "--cert", ca / "one.pem"])
    log(f"   added in {time.monotonic() - t:.1f}s")

    port, dash = free_port(), free_port()
    pin = ["taskset", "-c", SERVER_CPU] if shutil.which("taskset") and os.cpu_count() > 1 else []
    out = WORK / "serve.log"
    server = subprocess.Popen([*pin, mg, "ca", "serve", "--dir", ca, "--listen", f"127.0.0.1:{port}",
                               "--dashboard-listen", f"127.0.0.1:{dash}", "--tidy-every", "off", *db],
                              stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    res = []
    try:
        wait_port(dash, server, out)
        link = run([mg, "admin", "login-link", "--dir", ca, "--user", "bench", "--url", f"http://localhost:{dash}", *db])
        c = Client(dash)
        c.login(link.strip().splitlines()[-1])
        for name, path, listed in pages(args.devices):
            c.time(path)  # warm up
            ms, size = [], 0
            # An export reads every device it selects: fewer runs.
            runs = args.runs if listed is not False else max(3, args.runs // 10)
            for _ in range(runs):
                m, size = c.time(path)
                ms.append(m)
            row = {"page": name, "path": path, "list_page": listed is not False, "runs": runs,
                   "median_ms": round(statistics.median(ms), 2), "p99_ms": round(pct(ms, 99), 2),
                   "bytes": size}
            res.append(row)
            log(f"   {name:48} median {row['median_ms']:8.2f} ms   p99 {row['p99_ms']:8.2f} ms   {size} bytes")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    load_after = loadavg()

    slow = [r for r in res if r["list_page"] and r["p99_ms"] >= TARGET_MS]
    build = "debug" if "debug" in str(bindir) else "release"
    command = "bench/dashboard " + " ".join(sys.argv[3:] if sys.argv[1:2] == ["--bin"] else sys.argv[1:])
    lines = [
        "# The fleet dashboard at fleet size",
        "",
        f"`mtlsgate ca serve --dashboard-listen` ({build} build, {backend} inventory, pinned to core "
        f"{SERVER_CPU}) with {args.devices:,} devices added straight with SQL (`mtlsgate-bench "
        "seed-inventory`: mostly active, some pending, denied and revoked; four tag lists; expiry, "
        "last seen and first seen spread). One signed-in client, one kept-alive connection; each "
        f"page once to warm up, then {args.runs} times (the CSV exports {max(3, args.runs // 10)} times): "
        f"the time from the request to the answer's last byte. Target: every list page under "
        f"{TARGET_MS:.0f} ms (p99). The CSV exports hold every device the filter selects: exports, "
        "not list pages.",
        "",
        f"Command: `{command.strip()}`. Load average before {' '.join(load_before)}, after {' '.join(load_after)}.",
        "",
        "| page | path | median, ms | p99, ms | answer, bytes |",
        "|---|---|---:|---:|---:|",
    ]
    for r in res:
        mark = "" if not r["list_page"] or r["p99_ms"] < TARGET_MS else " **over target**"
        lines.append(f"| {r['page']} | `{r['path']}` | {r['median_ms']:.1f} | {r['p99_ms']:.1f}{mark} | {r['bytes']:,} |")
    lines += ["", (f"Every list page under {TARGET_MS:.0f} ms at p99." if not slow else
                   f"Over {TARGET_MS:.0f} ms at p99: {', '.join(r['page'] for r in slow)}.")]
    text = "\n".join(lines) + "\n"
    if args.smoke:
        # The smoke run checks the harness; its figures mean nothing and are not kept.
        dest = WORK / f"{args.name}-smoke.md"
    else:
        RESULTS.mkdir(exist_ok=True)
        dest = RESULTS / f"{args.name}.md"
        (RESULTS / f"{args.name}.json").write_text(json.dumps(
            {"devices": args.devices, "backend": backend, "build": build, "runs": args.runs,
             "target_ms": TARGET_MS, "pages": res, "load_before": load_before, "load_after": load_after},
            indent=1) + "\n")
    dest.write_text(text)
    log(f"== wrote {dest.relative_to(ROOT)}")
    print(text)


if __name__ == "__main__":
    main()
