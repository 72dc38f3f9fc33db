#!/usr/bin/env python3
"""Device lifecycle figures: enrollments and renewals per second of `mtlsgate ca serve` on
one core, with SQLite and with PostgreSQL, and the time from `mtlsgate devices revoke` to
the refusal at each of several gateways (`mtlsgate serve --inventory`; two by default,
`--gateways N`). On PostgreSQL, `--ca-servers K` runs K CA servers on the one database and
spreads the requests over them, and the report counts each gateway's PostgreSQL
connections.

The CA servers (and later the gateways) run pinned to core 1; the load tool
(`mtlsgate-fleet-load`), the revoke command and PostgreSQL are not pinned to it: the load
tool runs on core 0, PostgreSQL wherever the kernel puts it. Each inventory is fresh.

Run it through bench/fleet, which builds what it needs."""

import argparse
import json
import os
import re
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from openssl_speed import ecdsa_x25519_per_s

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "fleet"
RESULTS = ROOT / "bench" / "results"
SERVER_CPU = "1"
LOAD_CPU = "0"
TARGET_RENEW_SQLITE = 2000.0
TARGET_REVOKE_P99_MS = 1000.0


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A background process whose output goes to a file; waits for a line in it."""

    def __init__(self, name, cmd, cwd):
        self.name = name
        self.out = WORK / f"{name}.log"
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=open(self.out, "w"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def wait_for(self, pattern, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.out.read_text(errors="replace"))
            if m:
                return m
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{self.out.read_text()}")
            time.sleep(0.05)
        raise SystemExit(f"{self.name}: no {pattern!r} within {timeout}s:\n{self.out.read_text()}")

    def cpu_seconds(self):
        try:
            f = (Path("/proc") / str(self.proc.pid) / "stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run(cmd, cwd=WORK):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


class Postgres:
    """A throwaway PostgreSQL (scripts/postgres), under /tmp so that the user postgres can
    reach it when the benchmark runs as root."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mtlsgate-bench-pg-", dir="/tmp")
        self.port = free_port()
        run([str(ROOT / "scripts" / "postgres"), "start", self.dir, str(self.port)], cwd=ROOT)
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.version = run(["psql", self.url, "-Atc", "SHOW server_version"]).strip()

    def stop(self):
        subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", self.dir], cwd=ROOT, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def backend_run(args, name, database):
    """One CA on a fresh inventory: enrollment and renewal rates, then revocation latency
    at two gateways. Returns the figures."""
    mg = str(Path(args.bin) / "mtlsgate")
    load = str(Path(args.bin) / "mtlsgate-fleet-load")
    ca = f"{name}-ca"
    db = ["--database", database] if database else []
    run([mg, "ca", "init", "--dir", ca, "--name", f"Bench {name}", "--device-domain", "d.bench.local", *db])
    servers = args.ca_servers if database else 1
    procs = []
    try:
        urls = []
        for i in range(servers):
            port = free_port()
            srv = Proc(f"{name}-ca-serve{i + 1}", ["taskset", "-c", SERVER_CPU, mg, "ca", "serve", "--dir", ca,
                                                   "--listen", f"127.0.0.1:{port}", *db], WORK)
            procs.append(srv)
            srv.wait_for(r"listening on 127\.0\.0\.1:")
            urls += ["--url", f"https://127.0.0.1:{port}"]
        ca_procs = list(procs)
        target = [*urls, "--ca-dir", ca, *db]
        log(f"== {name}: {args.devices} enrollments, then {args.devices} renewals, {args.concurrency} at a time, "
            f"{servers} CA server(s)")
        cpu0 = sum(p.cpu_seconds() for p in ca_procs)
        out = run(["taskset", "-c", LOAD_CPU, load, "lifecycle", *target, "--devices", str(args.devices),
                   "--concurrency", str(args.concurrency)])
        life = json.loads(out.strip().splitlines()[-1])
        life["server_cpu_seconds"] = sum(p.cpu_seconds() for p in ca_procs) - cpu0
        life["ca_servers"] = servers
        for phase in ("enroll", "renew"):
            p = life[phase]
            log(f"   {phase}: {p['ops_per_sec']:.0f}/s, p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms"
                f" ({p['ok']} ok, {p['errors']} errors)")
            if p["errors"]:
                log(f"   first error: {p['first_error']}")

        # Revocation: N gateways on the same inventory, in front of a fixed upstream.
        run([mg, "cert", "issue", "server", "localhost", "--dns", "localhost", "--ip", "127.0.0.1",
             "--dir", ca, "--out", f"{name}-gw", *db])
        up_port = free_port()
        up = Proc(f"{name}-upstream", [str(Path(args.bin) / "mtlsgate-bench"), "upstream", "--listen",
                                       f"127.0.0.1:{up_port}"], WORK)
        procs.append(up)
        up.wait_for("upstream listening")
        inventory = database or ca
        gws = []
        for i in range(1, args.gateways + 1):
            gw = Proc(f"{name}-gateway{i}", ["taskset", "-c", SERVER_CPU, mg, "serve", "--listen", "127.0.0.1:0",
                                             "--cert", f"{name}-gw/localhost.crt", "--key", f"{name}-gw/localhost.key",
                                             "--client-ca", f"{ca}/root.crt",
                                             "--upstream", f"http://127.0.0.1:{up_port}",
                                             "--inventory", inventory], WORK)
            procs.append(gw)
            m = gw.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
            gws.append(f"127.0.0.1:{m.group(1)}")
        log(f"== {name}: {args.revocations} revocations (`mtlsgate devices revoke ID --dir …`), {args.gateways} gateways")
        out = run(["taskset", "-c", LOAD_CPU, load, "revoke", *target, "--devices", str(args.revocations),
                   *sum((["--gateway", g] for g in gws), []),
                   "--", mg, "devices", "revoke", "{id}", "--dir", ca, *db])
        rev = json.loads(out.strip().splitlines()[-1])
        for i, g in enumerate(rev["gateways"], 1):
            log(f"   gateway {i}: connection closed p50 {g['closed']['p50_ms']:.0f} ms, p99 {g['closed']['p99_ms']:.0f} ms;"
                f" new request refused p50 {g['refused']['p50_ms']:.0f} ms, p99 {g['refused']['p99_ms']:.0f} ms")
        log(f"   the revoke command itself: p50 {rev['command']['p50_ms']:.0f} ms")
        if database:
            rev["pg_connections"] = [pg_connections(database, gw.proc.pid) for gw in gws_procs(procs)]
            log(f"   PostgreSQL connections per gateway: {rev['pg_connections']}")
        for gw in gws_procs(procs):
            gw.stop()
        starts = start_during_changes(args, name, mg, load, ca, db, database, target, up_port, procs)
        return {"lifecycle": life, "revoke": rev, "starts": starts}
    finally:
        for p in reversed(procs):
            p.stop()


def pg_connections(database, pid):
    """How many TCP connections process `pid` holds to the PostgreSQL server of `database`
    (from `ss`, by the server's port)."""
    port = re.search(r":(\d+)/", database).group(1)
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dport", f"= :{port}"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def gws_procs(procs):
    return [p for p in procs if "-gateway" in p.name]


def metrics(addr):
    """A gateway's /metrics as {name: value} (unlabelled series only)."""
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def db_revision(ca, database):
    if database:
        return int(run(["psql", database, "-Atc", "SELECT value FROM meta WHERE name = 'revision'"]).strip())
    import sqlite3
    con = sqlite3.connect(f"file:{WORK / ca / 'inventory.db'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
    finally:
        con.close()


def start_during_changes(args, name, mg, load, ca, db, database, target, up_port, procs):
    """Gateways started one after another while devices enroll (the load tool) and are
    denied, allowed and revoked (the CLI): once the changes stop, every gateway must be at
    the database's revision; reports each one's start-to-loaded time and its worst
    commit-to-apply delay (`mtlsgate_inventory_apply_delay_max_seconds`)."""
    ids = [d["id"] for d in json.loads(run([mg, "devices", "list", "--dir", ca, "--json", *db]))
           if d.get("status") == "active"][: max(args.start_gateways * 4, 8)]
    log(f"== {name}: {args.start_gateways} gateways started 200 ms apart during enrollments and "
        f"deny/allow/revoke commands on {len(ids)} of its devices")
    stop = threading.Event()
    changes = {"cli": 0}

    def cli_stream():
        i = 0
        while not stop.is_set() and i < len(ids):
            dev = ids[i]
            for verb in ("deny", "allow") if i % 3 else ("revoke",):
                run([mg, "devices", verb, dev, "--dir", ca, *db])
                changes["cli"] += 1
            i += 1

    enroll = subprocess.Popen(["taskset", "-c", LOAD_CPU, load, "lifecycle", *target, "--devices",
                               str(args.start_enrollments), "--concurrency", "2"], cwd=WORK,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = threading.Thread(target=cli_stream)
    t.start()
    inventory = database or ca
    started = []
    t0 = time.time()
    try:
        for i in range(args.start_gateways):
            gw = Proc(f"{name}-late-gateway{i + 1}", ["taskset", "-c", SERVER_CPU, mg, "serve", "--listen",
                                                       "127.0.0.1:0", "--cert", f"{name}-gw/localhost.crt",
                                                       "--key", f"{name}-gw/localhost.key", "--client-ca",
                                                       f"{ca}/root.crt", "--upstream", f"http://127.0.0.1:{up_port}",
                                                       "--inventory", inventory, "--admin-listen", "127.0.0.1:0"],
                      WORK)
            procs.append(gw)
            at = time.time()
            admin = gw.wait_for(r"admin listener on http://(\S+)").group(1)
            started.append((gw, admin, at))
            time.sleep(0.2)
        for gw, _, _ in started:
            gw.wait_for(r"devices at revision", timeout=120)
    finally:
        t.join()
        enroll.wait()
        stop.set()
    changes_s = time.time() - t0
    time.sleep(1.5)
    want = db_revision(ca, database)
    rows = []
    for i, (gw, admin, at) in enumerate(started, 1):
        m = metrics(admin)
        text = gw.out.read_text(errors="replace")
        rows.append({"gateway": i, "revision": int(m.get("mtlsgate_inventory_revision", -1)), "database": want,
                     "devices": int(m.get("mtlsgate_inventory_devices", 0)),
                     "applied": int(m.get("mtlsgate_inventory_apply_delay_seconds_count", 0)),
                     "worst_delay_ms": m.get("mtlsgate_inventory_apply_delay_max_seconds", 0) * 1000,
                     "lag_s": m.get("mtlsgate_inventory_lag_seconds", -1)})
        r = rows[-1]
        log(f"   gateway {i}: revision {r['revision']} (database {want}), {r['devices']} devices, "
            f"{r['applied']} reads applied changes, worst commit-to-apply {r['worst_delay_ms']:.0f} ms")
    for gw, _, _ in started:
        gw.stop()
    behind = [r["gateway"] for r in rows if r["revision"] != want]
    if behind:
        raise SystemExit(f"{name}: gateways {behind} are behind the database after the changes stopped")
    return {"gateways": rows, "cli_changes": changes["cli"], "enrollments": args.start_enrollments,
            "seconds": changes_s}


def crypto_ceiling(seconds):
    sign, verify, ecdh = ecdsa_x25519_per_s(SERVER_CPU, seconds)
    # The server's public-key work per request (a new TLS 1.3 connection each):
    # enrollment: handshake sign + 2 X25519, the CSR's signature, the certificate's signature;
    # renewal: the same plus the client's CertificateVerify and its leaf's signature. The CA
    # server trusts its own intermediate as an anchor, so webpki checks the leaf against it
    # and never the intermediate's signature: 3 verifications, as uprobes on aws-lc's
    # ecdsa_do_verify count during the renewals (2 signs, 1 X25519 key pair, 1 X25519).
    enroll = 2 / sign + 1 / verify + 2 / ecdh
    renew = 2 / sign + 3 / verify + 2 / ecdh
    return {"ecdsa_sign_per_s": sign, "ecdsa_verify_per_s": verify, "x25519_per_s": ecdh,
            "enroll_per_s": 1 / enroll, "renew_per_s": 1 / renew}


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def report(args, res, ceiling, load_before, load_after, pg_version, command):
    lines = ["# Device lifecycle: `mtlsgate ca serve`, agents and gateways", ""]
    lines.append(f"`mtlsgate ca serve` pinned to core {SERVER_CPU} (one tokio worker); the load tool "
                 f"(`mtlsgate-fleet-load`) on core {LOAD_CPU}; PostgreSQL {pg_version or '(not run)'} not pinned "
                 "(scripts/postgres: fsync off). A new TLS 1.3 connection per request, as an agent makes; "
                 f"P-256 keys and CSRs made before the clock starts. {args.devices} devices, "
                 f"{args.concurrency} requests at a time.")
    lines.append("")
    lines.append("| figure | SQLite | PostgreSQL | target | SQLite / target |")
    lines.append("|---|---|---|---|---|")

    def cell(b, f):
        return f(res[b]) if b in res else "–"

    def lf(phase, key, fmt):
        return lambda r: fmt.format(r["lifecycle"][phase][key])

    for phase, title in (("enroll", "Enrollments/s (token, new key)"), ("renew", "Renewals/s (mTLS, new key)")):
        target = f"≥ {TARGET_RENEW_SQLITE:.0f}" if phase == "renew" else "–"
        ratio = "–"
        if phase == "renew" and "sqlite" in res:
            ratio = f"{res['sqlite']['lifecycle']['renew']['ops_per_sec'] / TARGET_RENEW_SQLITE:.2f}×"
        lines.append(f"| {title} | {cell('sqlite', lf(phase, 'ops_per_sec', '{:.0f}'))} | "
                     f"{cell('postgres', lf(phase, 'ops_per_sec', '{:.0f}'))} | {target} | {ratio} |")
        for k in ("p50_ms", "p99_ms"):
            lines.append(f"|   {k[:3]} latency, ms | {cell('sqlite', lf(phase, k, '{:.1f}'))} | "
                         f"{cell('postgres', lf(phase, k, '{:.1f}'))} | | |")
        lines.append(f"|   errors | {cell('sqlite', lf(phase, 'errors', '{}'))} | "
                     f"{cell('postgres', lf(phase, 'errors', '{}'))} | 0 | |")
    lines.append("")
    lines.append(f"Revocation: for each of {args.revocations} devices, a kept-alive HTTP/1.1 connection through "
                 f"each of {args.gateways} gateways (`mtlsgate serve --inventory`), then `mtlsgate devices revoke ID --dir CA` "
                 "(with `--database URL` on PostgreSQL); the time from the command's start until the gateway "
                 "closed the kept-alive connection, and until a new request through it was refused (tried every "
                 "5 ms). SQLite gateways check every 500 ms (the default); PostgreSQL ones LISTEN.")
    lines.append("")
    lines.append("| from `devices revoke` to | SQLite p50 | SQLite p99 | PostgreSQL p50 | PostgreSQL p99 | target (PostgreSQL p99) | PostgreSQL p99 / target |")
    lines.append("|---|---|---|---|---|---|---|")
    # Two gateways: a row each; more: every gateway's samples together, then the slowest one.
    def pick(r, g):
        return r["revoke"]["all"] if g == "all" else r["revoke"]["gateways"][g]

    def slowest(r, what):
        return max(r["revoke"]["gateways"], key=lambda x: x[what]["p99_ms"])

    groups = [(g, f"gateway {g + 1}") for g in range(args.gateways)] if args.gateways <= 2 else \
        [("all", f"all {args.gateways} gateways"), ("slowest", "the slowest gateway")]
    for g, label in groups:
        for what, title in (("closed", "kept-alive connection closed"), ("refused", "new request refused")):
            row = [f"{label}: {title}"]

            def fig(r, k, g=g, what=what):
                v = slowest(r, what) if g == "slowest" else pick(r, g)
                return v[what][k]
            for b in ("sqlite", "postgres"):
                for k in ("p50_ms", "p99_ms"):
                    row.append(cell(b, lambda r, k=k: f"{fig(r, k):.0f} ms"))
            ratio = cell("postgres", lambda r: f"{fig(r, 'p99_ms') / TARGET_REVOKE_P99_MS:.2f}×")
            row += [f"≤ {TARGET_REVOKE_P99_MS:.0f} ms", ratio]
            lines.append("| " + " | ".join(row) + " |")
    row = ["the revoke command's own run time"]
    for b in ("sqlite", "postgres"):
        for k in ("p50_ms", "p99_ms"):
            row.append(cell(b, lambda r: f"{r['revoke']['command'][k]:.0f} ms"))
    lines.append("| " + " | ".join(row + ["", ""]) + " |")
    lines.append("")
    if "postgres" in res and res["postgres"]["revoke"].get("pg_connections"):
        conns = res["postgres"]["revoke"]["pg_connections"]
        lines.append(f"PostgreSQL connections held by each gateway (`ss`, after the revocations): {', '.join(map(str, conns))} "
                     f"(at most {max(conns)}); CA servers on the database: {res['postgres']['lifecycle'].get('ca_servers', 1)}.")
        lines.append("")
    if any("starts" in res[b] for b in res):
        lines.append(f"Gateways started during changes: {args.start_gateways} gateways started 200 ms apart "
                     f"(`--admin-listen`) while {args.start_enrollments} devices enroll and renew (the load tool, "
                     "2 at a time) and `devices deny`/`allow`/`revoke` run one after another; 1.5 s after the "
                     "changes stop, each gateway's revision must equal the database's (the run fails otherwise). "
                     "Worst commit-to-apply delay: `mtlsgate_inventory_apply_delay_max_seconds`, from the "
                     "writer's commit to the gateway's view.")
        lines.append("")
        lines.append("| backend | gateway | devices in view | at the database's revision | reads that applied changes | worst commit-to-apply |")
        lines.append("|---|---|---|---|---|---|")
        for b in ("sqlite", "postgres"):
            for r in res.get(b, {}).get("starts", {}).get("gateways", []):
                lines.append(f"| {b} | {r['gateway']} | {r['devices']} | {'yes' if r['revision'] == r['database'] else 'NO'} "
                             f"| {r['applied']} | {r['worst_delay_ms']:.0f} ms |")
        lines.append("")
    if ceiling:
        lines.append(f"Crypto ceiling on core {SERVER_CPU} (`openssl speed ecdsap256 ecdhx25519`): ECDSA P-256 "
                     f"{ceiling['ecdsa_sign_per_s']:.0f} signs/s, {ceiling['ecdsa_verify_per_s']:.0f} verifies/s, "
                     f"X25519 {ceiling['x25519_per_s']:.0f} ops/s. A renewal costs the server 2 signatures "
                     "(handshake, certificate), 3 verifications (client CertificateVerify, its leaf against the "
                     "CA's own intermediate, which the server trusts, and the CSR) and 2 X25519 → at most "
                     f"{ceiling['renew_per_s']:.0f} renewals/s; an enrollment 2 "
                     f"signatures, 1 verification, 2 X25519 → at most {ceiling['enroll_per_s']:.0f}/s.")
        lines.append("")
    for b in ("sqlite", "postgres"):
        if b in res:
            lc = res[b]["lifecycle"]
            busy = lc["server_cpu_seconds"] / max(lc["enroll"]["seconds"] + lc["renew"]["seconds"], 1e-9)
            lines.append(f"CA server CPU while timed ({b}, {lc.get('ca_servers', 1)} server(s)): {busy * 100:.0f}% of its core.")
    lines.append("")
    lines.append(f"Machine load (1/5/15 min): before {' '.join(load_before)}, after {' '.join(load_after)} "
                 f"({os.cpu_count()} cores).")
    lines.append("")
    lines.append(f"Command: `{command}`")
    lines.append("")
    return "\n".join(lines)


# ---- scale mode: the same fixed work on an inventory grown to each size ----

SCALE_SIZES = (10_000, 100_000)


def rss_kb(pid, field="VmRSS"):
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def gateway_footprint(args, name, mg, ca, inventory, up_port, label):
    """One gateway with `--inventory` (start → 'devices at revision', RSS 2 s later) and
    one without (RSS), on core SERVER_CPU; returns the figures."""
    out = {}
    for with_inv in (False, True):
        cmd = ["taskset", "-c", SERVER_CPU, mg, "serve", "--listen", "127.0.0.1:0",
               "--cert", f"{name}-gw/localhost.crt", "--key", f"{name}-gw/localhost.key",
               "--client-ca", f"{ca}/root.crt", "--upstream", f"http://127.0.0.1:{up_port}"]
        if with_inv:
            cmd += ["--inventory", inventory]
        t0 = time.monotonic()
        gw = Proc(f"{name}-{label}-footprint{'-inv' if with_inv else ''}", cmd, WORK)
        try:
            gw.wait_for(r"devices at revision" if with_inv else r"listening on 127\.0\.0\.1:", timeout=300)
            start = time.monotonic() - t0
            time.sleep(2)
            key = "inventory" if with_inv else "bare"
            out[key] = {"start_s": start, "rss_kb": rss_kb(gw.proc.pid), "peak_kb": rss_kb(gw.proc.pid, "VmHWM")}
        finally:
            gw.stop()
    return out


def count_devices(database):
    return int(run(["psql", database, "-Atc", "SELECT count(*) FROM devices"]).strip())


def scale_run(args, database):
    """PostgreSQL: one inventory grown with `mtlsgate-bench seed-inventory` (bulk SQL) to
    each size; at each, `--scale-ops` enrollments, renewals and revocations through the CA
    servers (the load tool), and at 100,000 and above a gateway's start time and memory;
    at the largest size, revocation reaching `--gateways` gateways."""
    name = "postgres"
    mg = str(Path(args.bin) / "mtlsgate")
    bench = str(Path(args.bin) / "mtlsgate-bench")
    load = str(Path(args.bin) / "mtlsgate-fleet-load")
    ca = f"{name}-ca"
    db = ["--database", database]
    run([mg, "ca", "init", "--dir", ca, "--name", f"Bench {name}", "--device-domain", "d.bench.local", *db])
    run([mg, "cert", "issue", "client", "template", "--dir", ca, "--out", "tmpl", *db])
    (WORK / "one.pem").write_text(run(["openssl", "x509", "-in", str(WORK / "tmpl" / "template.crt")]))
    run([mg, "cert", "issue", "server", "localhost", "--dns", "localhost", "--ip", "127.0.0.1",
         "--dir", ca, "--out", f"{name}-gw", *db])
    sizes = sorted({s for s in SCALE_SIZES if s < args.devices} | {args.devices})
    procs = []
    steps = []
    try:
        urls = []
        for i in range(args.ca_servers):
            port = free_port()
            srv = Proc(f"{name}-ca-serve{i + 1}", ["taskset", "-c", SERVER_CPU, mg, "ca", "serve", "--dir", ca,
                                                   "--listen", f"127.0.0.1:{port}", *db], WORK)
            procs.append(srv)
            srv.wait_for(r"listening on 127\.0\.0\.1:")
            urls += ["--url", f"https://127.0.0.1:{port}"]
        target = [*urls, "--ca-dir", ca, *db]
        up_port = free_port()
        up = Proc(f"{name}-upstream", [bench, "upstream", "--listen", f"127.0.0.1:{up_port}"], WORK)
        procs.append(up)
        up.wait_for("upstream listening")
        for size in sizes:
            have = count_devices(database)
            if size > have:
                t = time.monotonic()
                run([bench, "seed-inventory", "--db", database, "--devices", str(size - have),
                     "--cert", str(WORK / "one.pem")])
                log(f"== {size:,} devices: {size - have:,} added with seed-inventory in {time.monotonic() - t:.1f}s")
            step = {"size": count_devices(database), "seed_s": None}
            log(f"== at {step['size']:,} devices: {args.scale_ops} enrollments, renewals, revocations, "
                f"{args.concurrency} at a time, {args.ca_servers} CA server(s)")
            out = run(["taskset", "-c", LOAD_CPU, load, "lifecycle", *target, "--devices", str(args.scale_ops),
                       "--concurrency", str(args.concurrency), "--admin", f"{ca}/admin.crt,{ca}/admin.key"])
            life = json.loads(out.strip().splitlines()[-1])
            step["lifecycle"] = life
            for phase in ("enroll", "renew", "revoke"):
                p = life[phase]
                log(f"   {phase}: {p['ops_per_sec']:.0f}/s, p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms"
                    f" ({p['ok']} ok, {p['errors']} errors)")
                if p["errors"]:
                    log(f"   first error: {p['first_error']}")
            if step["size"] >= 100_000 or size == sizes[-1]:
                fp = gateway_footprint(args, name, mg, ca, database, up_port, f"{size}")
                fp["bytes_per_device"] = (fp["inventory"]["rss_kb"] - fp["bare"]["rss_kb"]) * 1024 / step["size"]
                step["gateway"] = fp
                log(f"   gateway: start to inventory loaded {fp['inventory']['start_s']:.2f}s, "
                    f"{fp['bytes_per_device']:.0f} B/device (RSS {fp['inventory']['rss_kb'] / 1024:.1f} MB, "
                    f"without inventory {fp['bare']['rss_kb'] / 1024:.1f} MB)")
            steps.append(step)

        # Revocation at the largest size, through every gateway.
        gws = []
        for i in range(1, args.gateways + 1):
            gw = Proc(f"{name}-gateway{i}", ["taskset", "-c", SERVER_CPU, mg, "serve", "--listen", "127.0.0.1:0",
                                             "--cert", f"{name}-gw/localhost.crt", "--key", f"{name}-gw/localhost.key",
                                             "--client-ca", f"{ca}/root.crt",
                                             "--upstream", f"http://127.0.0.1:{up_port}",
                                             "--inventory", database], WORK)
            procs.append(gw)
            gws.append(gw)
        addrs = []
        for gw in gws:
            port = gw.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1)
            addrs.append(f"127.0.0.1:{port}")
            gw.wait_for(r"devices at revision", timeout=300)
        log(f"== {args.revocations} revocations at {steps[-1]['size']:,} devices, {args.gateways} gateways")
        out = run(["taskset", "-c", LOAD_CPU, load, "revoke", *target, "--devices", str(args.revocations),
                   *sum((["--gateway", g] for g in addrs), []),
                   "--", mg, "devices", "revoke", "{id}", "--dir", ca, *db])
        rev = json.loads(out.strip().splitlines()[-1])
        rev["pg_connections"] = [pg_connections(database, gw.proc.pid) for gw in gws]
        a = rev["all"]
        log(f"   all gateways: closed p50 {a['closed']['p50_ms']:.0f} ms p99 {a['closed']['p99_ms']:.0f} ms; "
            f"refused p50 {a['refused']['p50_ms']:.0f} ms p99 {a['refused']['p99_ms']:.0f} ms; "
            f"PostgreSQL connections per gateway {rev['pg_connections']}")
        return {"steps": steps, "revoke": rev}
    finally:
        for p in reversed(procs):
            p.stop()


def scale_report(args, res, load_before, load_after, pg_version, command):
    steps = res["steps"]
    first = steps[0]["lifecycle"]
    lines = [f"# Fleet scale: a PostgreSQL inventory of {steps[0]['size']:,} to {steps[-1]['size']:,} devices", ""]
    lines.append(f"One PostgreSQL {pg_version} (scripts/postgres: fsync off, not pinned), {args.ca_servers} "
                 f"`mtlsgate ca serve` on it pinned to core {SERVER_CPU}; the load tool (`mtlsgate-fleet-load`) on "
                 f"core {LOAD_CPU}. The inventory is grown to each size with `mtlsgate-bench seed-inventory` "
                 "(devices and certificates added with bulk SQL, one revoked older certificate per 50 devices); "
                 f"at each size the same work is timed: {args.scale_ops} enrollments (token, new key), "
                 f"{args.scale_ops} renewals (mTLS, new key) and {args.scale_ops} revocations "
                 f"(`POST /v1/devices/ID/revoke`, administrator certificate), {args.concurrency} at a time, "
                 "a new TLS connection per request.")
    lines.append("")
    lines.append("| devices | enroll/s | p99 ms | renew/s | p99 ms | revoke/s | p99 ms | errors |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for st in steps:
        lc = st["lifecycle"]
        cells = []
        for ph in ("enroll", "renew", "revoke"):
            cells += [f"{lc[ph]['ops_per_sec']:.0f}", f"{lc[ph]['p99_ms']:.1f}"]
        errs = sum(lc[ph]["errors"] for ph in ("enroll", "renew", "revoke"))
        lines.append(f"| {st['size']:,} | " + " | ".join(cells) + f" | {errs} |")
    last = steps[-1]["lifecycle"]
    ratio = ", ".join(f"{ph} {last[ph]['ops_per_sec'] / max(first[ph]['ops_per_sec'], 1e-9):.2f}×"
                      for ph in ("enroll", "renew", "revoke"))
    lines.append("")
    lines.append(f"Rate at {steps[-1]['size']:,} against {steps[0]['size']:,}: {ratio} (target: within 10 %).")
    lines.append("")
    lines.append("Gateway (`mtlsgate serve --inventory URL`, core 1): start → inventory loaded is the time from "
                 "the process's start until it logs the read; bytes per device are its RSS two seconds later "
                 "less a gateway's without `--inventory`, divided by the devices.")
    lines.append("")
    lines.append("| devices | start → loaded, s | bytes/device | RSS, MB | peak RSS, MB |")
    lines.append("|---|---|---|---|---|")
    for st in steps:
        g = st.get("gateway")
        if g:
            lines.append(f"| {st['size']:,} | {g['inventory']['start_s']:.2f} | {g['bytes_per_device']:.0f} | "
                         f"{g['inventory']['rss_kb'] / 1024:.1f} | {g['inventory']['peak_kb'] / 1024:.1f} |")
    rev = res["revoke"]
    lines.append("")
    lines.append(f"Revocation at {steps[-1]['size']:,} devices: for each of {args.revocations} devices, a kept-alive "
                 f"connection through each of {args.gateways} gateways, then `mtlsgate devices revoke ID "
                 f"--database URL`; from the command's start until each gateway closed the connection, and "
                 "until a new request through it was refused (tried every 5 ms).")
    lines.append("")
    lines.append("| from `devices revoke` to | p50 | p99 |")
    lines.append("|---|---|---|")
    slow = {w: max(rev["gateways"], key=lambda x: x[w]["p99_ms"]) for w in ("closed", "refused")}
    for w, title in (("closed", "kept-alive connection closed"), ("refused", "new request refused")):
        lines.append(f"| all {args.gateways} gateways: {title} | {rev['all'][w]['p50_ms']:.0f} ms | {rev['all'][w]['p99_ms']:.0f} ms |")
        lines.append(f"| the slowest gateway: {title} | {slow[w][w]['p50_ms']:.0f} ms | {slow[w][w]['p99_ms']:.0f} ms |")
    lines.append("")
    conns = rev.get("pg_connections") or []
    if conns:
        lines.append(f"PostgreSQL connections per gateway (`ss`): {', '.join(map(str, conns))} (at most {max(conns)}).")
        lines.append("")
    lines += retention_summary()
    lines.append(f"Machine load (1/5/15 min): before {' '.join(load_before)}, after {' '.join(load_after)} "
                 f"({os.cpu_count()} cores).")
    lines.append("")
    lines.append(f"Command: `{command}`")
    lines.append("")
    return "\n".join(lines)


def retention_summary():
    """The inventory's size per device after a simulated year, from the last row of each run
    in bench/results/retention.md (bench/retention, which records a year of renewals with
    back-dated times: a year cannot be waited for here)."""
    path = RESULTS / "retention.md"
    if not path.exists():
        return ["Storage after a simulated year: run `bench/retention` (results/retention.md).", ""]
    runs, title, last = [], None, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            if title and last:
                runs.append((title, last))
            title, last = line[3:].strip(), None
        elif line.startswith("| ") and line[2:3].isdigit():
            last = [c.strip() for c in line.strip().strip("|").split("|")]
    if title and last:
        runs.append((title, last))
    out = ["Storage after a simulated year of renewals (24 h certificates renewed every 16 h; SQLite; "
           "`bench/retention`, results/retention.md), the inventory's size per device on the last day:", "",
           "| run | day | tidied daily, KiB/device | never tidied, KiB/device |", "|---|---|---|---|"]
    for title, row in runs:
        m = re.match(r"([\d,]+) devices", title)
        if not m or len(row) < 7:
            continue
        n = int(m.group(1).replace(",", ""))
        out.append(f"| {title} | {row[0]} | {float(row[6]) * 1024 / n:.1f} | {float(row[3]) * 1024 / n:.1f} |")
    out += ["", "Tidied, the size is flat once the certificates (30 days) and the audit records (their own "
            "retention) have reached their retention; never tidied, it grows by the same amount every day.", ""]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory with mtlsgate, mtlsgate-bench, mtlsgate-fleet-load")
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--revocations", type=int, default=100)
    ap.add_argument("--only", default="sqlite,postgres")
    ap.add_argument("--gateways", type=int, default=2, help="gateways measured at revocation")
    ap.add_argument("--ca-servers", type=int, default=1, help="CA servers on the one PostgreSQL database")
    ap.add_argument("--start-gateways", type=int, default=4, help="gateways started during changes")
    ap.add_argument("--start-enrollments", type=int, default=300, help="enrollments during their start")
    ap.add_argument("--smoke", action="store_true", help="tiny counts, to check the harness")
    ap.add_argument("--name", help="results file name (bench/results/NAME.md; fleet, or fleet-scale with --scale)")
    ap.add_argument("--scale", action="store_true",
                    help="PostgreSQL only: grow one inventory with seed-inventory to 10,000, 100,000 and --devices, "
                         "timing --scale-ops enrollments, renewals and revocations at each size (on by default "
                         "from 200,000 devices)")
    ap.add_argument("--scale-ops", type=int, default=5000, help="operations of each kind timed at each size")
    args = ap.parse_args()
    if args.devices >= 200_000:
        args.scale = True
    if args.name is None:
        args.name = "fleet-scale" if args.scale else "fleet"
    # The harness runs its peers in a work directory of its own: a relative --bin (such as
    # target/debug) must be resolved against where we were started.
    args.bin = str(Path(args.bin).resolve())
    if args.smoke and args.scale:
        # The scale harness on small sizes (seeded 20, 100 devices, then --devices).
        global SCALE_SIZES
        SCALE_SIZES = (20, 100)
        args.scale_ops, args.concurrency, args.revocations = 20, 4, 2
    elif args.smoke:
        args.devices, args.concurrency, args.revocations = 20, 4, 2
        args.start_gateways, args.start_enrollments = 2, 10
    if args.scale:
        if args.only != "postgres" and "postgres" not in args.only.split(","):
            raise SystemExit("--scale runs on PostgreSQL: add --only postgres")
        return scale_main(args)
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    only = args.only.split(",")
    load_before = loadavg()
    log(f"== load average {' '.join(load_before)}")
    res = {}
    pg = None
    try:
        if "sqlite" in only:
            res["sqlite"] = backend_run(args, "sqlite", None)
        if "postgres" in only:
            pg = Postgres()
            res["postgres"] = backend_run(args, "postgres", pg.url)
    finally:
        if pg:
            pg.stop()
    ceiling = None if args.smoke else crypto_ceiling(3)
    load_after = loadavg()
    failed = [f"{b} {p}" for b, r in res.items() for p in ("enroll", "renew") if r["lifecycle"][p]["errors"]]
    command = "bench/fleet " + " ".join(sys.argv[3:] if sys.argv[1:2] == ["--bin"] else sys.argv[1:])
    text = report(args, res, ceiling, load_before, load_after, pg.version if pg else None, command.strip())
    name = "fleet-smoke" if args.smoke else args.name
    if args.smoke:
        # The smoke run checks the harness; its figures mean nothing and are not kept.
        out = WORK / f"{name}.md"
    else:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{name}.md"
        (RESULTS / f"{name}.json").write_text(json.dumps({"results": res, "ceiling": ceiling,
                                                          "load_before": load_before, "load_after": load_after},
                                                         indent=1) + "\n")
    out.write_text(text)
    log(f"== wrote {out.relative_to(ROOT)}")
    print(text)
    if failed:
        raise SystemExit(f"requests failed: {', '.join(failed)}")


def scale_main(args):
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    load_before = loadavg()
    log(f"== load average {' '.join(load_before)}")
    pg = Postgres()
    try:
        res = scale_run(args, pg.url)
    finally:
        pg.stop()
    load_after = loadavg()
    command = "bench/fleet " + " ".join(sys.argv[3:] if sys.argv[1:2] == ["--bin"] else sys.argv[1:])
    text = scale_report(args, res, load_before, load_after, pg.version, command.strip())
    if args.smoke:
        out = WORK / f"{args.name}-smoke.md"
    else:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{args.name}.md"
        (RESULTS / f"{args.name}.json").write_text(json.dumps({"results": res, "load_before": load_before,
                                                               "load_after": load_after}, indent=1) + "\n")
    out.write_text(text)
    log(f"== wrote {out.relative_to(ROOT)}")
    print(text)
    errs = [f"{st['size']} {ph}" for st in res["steps"] for ph in ("enroll", "renew", "revoke")
            if st["lifecycle"][ph]["errors"]]
    if errs:
        raise SystemExit(f"requests failed: {', '.join(errs)}")


if __name__ == "__main__":
    main()
