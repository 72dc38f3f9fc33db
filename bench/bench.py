#!/usr/bin/env python3
"""mtlsgate vs nginx vs HAProxy: the same mTLS termination, one worker each.

Each gateway runs pinned to core 0 with one worker (nginx worker_processes 1, haproxy
nbthread 1, mtlsgate --threads 1); the load generator (oha), the fixed upstream and the
idle-connection client run on core 1. Same certificates (P-256, root -> intermediate ->
leaf, the client sends its chain), TLS 1.3 only, client certificates required, the same
identity headers forwarded, access logs off. Gateways run in turn (A B C A B C ...) and
the medians are reported with the ratio mtlsgate / peer.

Run it through bench/run, which installs and builds what it needs."""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results"
GATEWAYS = ["mtlsgate", "nginx", "haproxy"]
GW_CPU = "0"
LOAD_CPU = "1"


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout}s")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append(int(p.name))
    return out


class Pki:
    def __init__(self, mg):
        d = WORK / "pki"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        def run(*a):
            subprocess.run([mg, *a], cwd=d, check=True, stdout=subprocess.DEVNULL)
        run("ca", "init", "--dir", "ca", "--name", "Bench", "--device-domain", "d.bench.local")
        run("cert", "issue", "server", "localhost", "--dns", "localhost", "--ip", "127.0.0.1", "--dir", "ca", "--out", ".")
        run("cert", "issue", "client", "bench", "--device-id", "bench", "--valid", "30d", "--dir", "ca", "--out", ".")
        (d / "server.pem").write_text((d / "localhost.crt").read_text() + (d / "localhost.key").read_text())
        self.dir = d
        self.server_crt = d / "localhost.crt"
        self.server_key = d / "localhost.key"
        self.server_pem = d / "server.pem"
        self.client_ca = d / "ca" / "root.crt"
        self.client_crt = d / "bench.crt"
        self.client_key = d / "bench.key"
        self.ca_bundle = d / "ca.crt"


class Gateway:
    """One gateway process, started with a given resumption setting."""

    def __init__(self, kind, args, pki, upstream_port, resume, extra=()):
        self.kind = kind
        self.extra = list(extra)
        self.args = args
        self.pki = pki
        self.port = free_port()
        self.upstream = upstream_port
        self.resume = resume
        self.proc = None
        self.dir = WORK / kind
        self.dir.mkdir(parents=True, exist_ok=True)

    def command(self):
        p = self.pki
        if self.kind == "mtlsgate":
            cmd = [str(Path(self.args.bin) / "mtlsgate"), "serve", "--listen", f"127.0.0.1:{self.port}",
                   "--cert", str(p.server_crt), "--key", str(p.server_key), "--client-ca", str(p.client_ca),
                   "--upstream", f"http://127.0.0.1:{self.upstream}", "--threads", "1", "--access-log", "off"]
            if not self.resume:
                cmd.append("--no-resumption")
            return cmd + self.extra
        if self.kind == "nginx":
            cache = "shared:SSL:20m" if self.resume else "off"
            tickets = "on" if self.resume else "off"
            d = self.dir
            conf = f"""
worker_processes 1;
worker_rlimit_nofile {self.args.nofile};
daemon off;
pid {d}/nginx.pid;
error_log stderr error;
events {{ worker_connections {self.args.maxconn}; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
  upstream app {{ server 127.0.0.1:{self.upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{self.port} ssl http2;
    ssl_certificate {p.server_crt};
    ssl_certificate_key {p.server_key};
    ssl_protocols TLSv1.3;
    ssl_client_certificate {p.client_ca};
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_cache {cache};
    ssl_session_tickets {tickets};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header SSL-Client $ssl_client_s_dn;
      proxy_set_header SSL-Client-Verify $ssl_client_verify;
    }}
  }}
}}
"""
            (d / "nginx.conf").write_text(conf)
            return ["nginx", "-e", "stderr", "-p", str(d), "-c", str(d / "nginx.conf")]
        if self.kind == "haproxy":
            tickets = "" if self.resume else " no-tls-tickets"
            cache = 20000 if self.resume else 0
            conf = f"""
global
  nbthread 1
  maxconn {self.args.maxconn}
  tune.ssl.cachesize {cache}
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  timeout http-request 10s
frontend fe
  bind 127.0.0.1:{self.port} ssl crt {p.server_pem} ca-file {p.client_ca} verify required alpn h2,http/1.1{tickets}
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-For %[src]
  http-request set-header X-Forwarded-Proto https
  http-request set-header SSL-Client %[ssl_c_s_dn(,0,rfc2253)]
  http-request set-header SSL-Client-Verify SUCCESS if {{ ssl_c_verify 0 }}
  default_backend be
backend be
  http-reuse always
  server app 127.0.0.1:{self.upstream}
"""
            (self.dir / "haproxy.cfg").write_text(conf)
            return ["haproxy", "-db", "-f", str(self.dir / "haproxy.cfg")]
        raise ValueError(self.kind)

    def start(self):
        cmd = ["taskset", "-c", GW_CPU] + self.command()
        self.err = open(self.dir / "stderr.log", "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        wait_port(self.port, self.proc, self.kind)
        return self

    def worker_pid(self):
        if self.kind == "nginx":
            kids = children(self.proc.pid)
            if kids:
                return kids[0]
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.kind != "nginx" else signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def oha(args, pki, port, seconds, conns, keepalive=True, http2=False):
    cmd = ["taskset", "-c", LOAD_CPU, args.oha, "-z", f"{seconds}s", "-c", str(conns), "--no-tui",
           "--output-format", "json", "--worker-threads", "1", "--insecure",
           "--cert", str(pki.client_crt), "--key", str(pki.client_key)]
    if not keepalive:
        cmd.append("--disable-keepalive")
    if http2:
        cmd.append("--http2")
    else:
        cmd += ["--http-version", "1.1"]
    cmd.append(f"https://localhost:{port}/")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"oha failed: {out.stderr.strip()}")
    r = json.loads(out.stdout)
    codes = r.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    # Requests cut off when the run's time is up are not failures.
    errors = {k: v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k}
    bad = sum(v for k, v in codes.items() if k != "200") + sum(errors.values())
    if bad:
        log(f"  failures: codes {codes}, errors {errors}")
    lat = r.get("latencyPercentiles", {})
    secs = r["summary"].get("total") or seconds
    return {
        "rps": ok / secs if secs else 0.0,
        "p50_ms": (lat.get("p50") or 0) * 1000,
        "p99_ms": (lat.get("p99") or 0) * 1000,
        "ok": ok,
        "failed": bad,
    }


def idle_memory(args, pki, gw, count):
    pid = gw.worker_pid()
    # One request first, so that lazily allocated state is counted in the baseline.
    oha(args, pki, gw.port, 0.3, 1)
    time.sleep(0.3)
    before = rss_kib(pid)
    client = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, str(Path(args.bin) / "mtlsgate-bench"), "idle", "--connect", f"127.0.0.1:{gw.port}",
         "--count", str(count), "--ca", str(pki.ca_bundle), "--cert", str(pki.client_crt), "--key", str(pki.client_key)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = client.stdout.readline()
    if not line.startswith("open "):
        client.kill()
        raise SystemExit(f"idle client failed: {client.stderr.read().strip()}")
    time.sleep(1.0)
    after = rss_kib(pid)
    client.stdin.close()
    client.wait(timeout=60)
    return {"rss_before_kib": before, "rss_after_kib": after, "kib_per_conn": (after - before) / count}


def allowlist_figure(args, pki, up_port, entries):
    """mtlsgate alone: memory of a large allowlist, reload time, and full-handshake rate and
    p99 with the list while it is rewritten (and so reloaded) every second."""
    d = WORK / "allow"
    d.mkdir(parents=True, exist_ok=True)
    big = d / "allow.txt"
    body = "".join(f"dev{i}.d.bench.local\n" for i in range(entries - 1)) + "bench.d.bench.local\n"
    big.write_text(body)
    out = {"entries": entries}
    for label, extra in (("without", []), ("with", ["--allow-file", str(big)])):
        gw = Gateway("mtlsgate", args, pki, up_port, False, extra).start()
        try:
            oha(args, pki, gw.port, 0.3, 1)
            out[f"rss_{label}_kib"] = rss_kib(gw.proc.pid)
            stop = [False]
            if label == "with":
                import threading
                def rewrite():
                    n = 0
                    while not stop[0]:
                        time.sleep(1)
                        n += 1
                        tmp = d / "allow.tmp"
                        tmp.write_text(body + f"extra{n}.d.bench.local\n")
                        os.replace(tmp, big)
                t = threading.Thread(target=rewrite)
                t.start()
            r = oha(args, pki, gw.port, args.seconds, 32, keepalive=False)
            stop[0] = True
            if label == "with":
                t.join()
                time.sleep(1.5)
        finally:
            gw.stop()
        if r["failed"] or not r["ok"]:
            raise SystemExit(f"allowlist figure ({label}): {r['failed']} failed requests")
        out[f"handshakes_{label}"] = r["rps"]
        out[f"p99_{label}_ms"] = r["p99_ms"]
        if label == "with":
            times = [float(m) for m in re.findall(r"reloaded in ([\d.]+) ms", (gw.dir / "stderr.log").read_text())]
            out["reloads"] = len(times)
            out["reload_ms_median"] = med(times)
            out["reload_ms_max"] = max(times) if times else float("nan")
    out["list_mib"] = (out["rss_with_kib"] - out["rss_without_kib"]) / 1024
    log(f"allowlist: {entries} entries take {out['list_mib']:.1f} MiB; {out['reloads']} reloads, median "
        f"{out['reload_ms_median']:.0f} ms, max {out['reload_ms_max']:.0f} ms; full handshakes "
        f"{out['handshakes_without']:.0f}/s p99 {out['p99_without_ms']:.1f} ms without, "
        f"{out['handshakes_with']:.0f}/s p99 {out['p99_with_ms']:.1f} ms with the list reloading every second")
    return out


def crypto_ceiling(seconds):
    out = subprocess.run(["taskset", "-c", GW_CPU, "openssl", "speed", "-seconds", str(seconds), "ecdsap256", "ecdhx25519"],
                         capture_output=True, text=True).stdout
    sign = verify = ecdh = None
    for line in out.splitlines():
        m = re.match(r"\s*256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            sign, verify = float(m.group(1)), float(m.group(2))
        m = re.match(r"\s*253 bits ecdh \(X25519\)\s+\S+s\s+([\d.]+)", line)
        if m:
            ecdh = float(m.group(1))
    if not (sign and verify and ecdh):
        raise SystemExit(f"cannot read `openssl speed` output:\n{out}")
    # A full TLS 1.3 mTLS handshake costs the server: one ECDSA signature (its
    # CertificateVerify), three verifications (the client's CertificateVerify, its leaf
    # and its intermediate) and two X25519 operations (key generation and agreement).
    per_hs = 1 / sign + 3 / verify + 2 / ecdh
    return {"ecdsa_sign_per_s": sign, "ecdsa_verify_per_s": verify, "x25519_per_s": ecdh,
            "handshakes_per_s": 1 / per_hs}


FIGURES = [
    # key, title, resumption on the servers, oha settings
    ("full_handshakes", "Full mTLS handshakes/s (new connection per request, no resumption)", False, dict(keepalive=False, conns=32)),
    ("full_uncached", "  the same, mtlsgate re-verifying every chain (--no-verify-cache)", False, dict(keepalive=False, conns=32, uncached=True)),
    ("resumed_handshakes", "Resumed handshakes/s (new connection per request, resumption on)", True, dict(keepalive=False, conns=32)),
    ("keepalive_h1", "Keep-alive HTTP/1.1 requests/s, 50 connections", True, dict(keepalive=True, conns=50)),
    ("keepalive_h2", "HTTP/2 requests/s, 50 connections", True, dict(keepalive=True, conns=50, http2=True)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory with mtlsgate and mtlsgate-bench")
    ap.add_argument("--oha", required=True)
    ap.add_argument("--smoke", action="store_true", help="one second per figure, one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--idle", type=int, default=10000, help="idle connections for the memory figure")
    ap.add_argument("--only", help="comma-separated gateways to run")
    args = ap.parse_args()
    args.bin = str(Path(args.bin).resolve())
    if args.smoke:
        args.rounds, args.seconds, args.idle = 1, 1, 200
    gateways = args.only.split(",") if args.only else GATEWAYS
    if os.cpu_count() and os.cpu_count() < 2:
        global LOAD_CPU
        LOAD_CPU = "0"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(hard, 65536), 1048576)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # HAProxy reserves two descriptors per connection (client and server side): with a
    # hard limit of 20,000 descriptors (as in this sandbox), 9,000 idle connections is the
    # most all three gateways can hold.
    fit = (nofile - 1000) // 2
    if args.idle > fit:
        log(f"note: the descriptor limit is {nofile}; measuring {fit} idle connections instead of {args.idle}")
        args.idle = fit
    args.nofile = nofile
    args.maxconn = min(args.idle + 500, (nofile - 200) // 2)
    WORK.mkdir(parents=True, exist_ok=True)
    pki = Pki(str(Path(args.bin) / "mtlsgate"))
    up_port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", LOAD_CPU, str(Path(args.bin) / "mtlsgate-bench"), "upstream",
                                 "--listen", f"127.0.0.1:{up_port}"], stderr=subprocess.DEVNULL)
    wait_port(up_port, upstream, "upstream")
    results = {k: {g: [] for g in gateways} for k, *_ in FIGURES}
    results["idle_memory"] = {g: [] for g in gateways}
    versions = {
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        "openssl": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip(),
        "oha": subprocess.run([args.oha, "--version"], capture_output=True, text=True).stdout.strip(),
        "mtlsgate": subprocess.run([str(Path(args.bin) / "mtlsgate"), "--version"], capture_output=True, text=True).stdout.strip(),
    }
    try:
        for rnd in range(args.rounds):
            order = gateways[rnd % len(gateways):] + gateways[:rnd % len(gateways)]
            for key, title, resume, o in FIGURES:
                for g in order:
                    if o.get("uncached") and g != "mtlsgate":
                        continue  # nginx and HAProxy have no chain cache: figure 1 is theirs
                    extra = ["--no-verify-cache"] if o.get("uncached") and g == "mtlsgate" else []
                    gw = Gateway(g, args, pki, up_port, resume, extra).start()
                    try:
                        if not args.smoke:
                            oha(args, pki, gw.port, 1, o["conns"], o["keepalive"], o.get("http2", False))
                        r = oha(args, pki, gw.port, args.seconds, o["conns"], o["keepalive"], o.get("http2", False))
                    finally:
                        gw.stop()
                    if r["failed"] or not r["ok"]:
                        raise SystemExit(f"{g}, {key}: {r['failed']} failed requests, {r['ok']} ok "
                                         f"(see {gw.dir}/stderr.log)")
                    results[key][g].append(r)
                    log(f"round {rnd + 1} {key:20} {g:9} {r['rps']:10.0f}/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
            for g in order:
                gw = Gateway(g, args, pki, up_port, True).start()
                try:
                    m = idle_memory(args, pki, gw, args.idle)
                finally:
                    gw.stop()
                results["idle_memory"][g].append(m)
                log(f"round {rnd + 1} idle_memory          {g:9} {m['kib_per_conn']:.1f} KiB/connection "
                    f"({m['rss_before_kib']} -> {m['rss_after_kib']} KiB for {args.idle})")
        allow = None
        if "mtlsgate" in gateways:
            allow = allowlist_figure(args, pki, up_port, 10000 if args.smoke else 1000000)
        ceiling = crypto_ceiling(1 if args.smoke else 3)
    finally:
        upstream.terminate()
        upstream.wait()
    report(args, gateways, results, ceiling, versions, allow)


def med(vals):
    return statistics.median(vals) if vals else float("nan")


def report(args, gateways, results, ceiling, versions, allow):
    rows = []  # (figure, unit, {gateway: value}, higher_is_better)
    for key, title, _, o in FIGURES:
        src = {g: results["full_handshakes"][g] if o.get("uncached") and g != "mtlsgate" else results[key][g]
               for g in gateways}
        rows.append((title, "req/s", {g: med([r["rps"] for r in src[g]]) for g in gateways}, True))
        if key.startswith("keepalive"):
            rows.append(("  p50 latency", "ms", {g: med([r["p50_ms"] for r in results[key][g]]) for g in gateways}, False))
            rows.append(("  p99 latency", "ms", {g: med([r["p99_ms"] for r in results[key][g]]) for g in gateways}, False))
    rows.append((f"Resident memory per idle mTLS connection ({args.idle} open)", "KiB",
                 {g: med([m["kib_per_conn"] for m in results["idle_memory"][g]]) for g in gateways}, False))
    full = rows[0][2]
    rows.append(("Full handshakes as a share of the crypto ceiling", "%",
                 {g: 100 * full[g] / ceiling["handshakes_per_s"] for g in gateways}, True))
    if "mtlsgate" in gateways:
        uncached = dict(full)
        uncached["mtlsgate"] = rows[1][2]["mtlsgate"]
        rows.append(("  the same, mtlsgate re-verifying every chain", "%",
                     {g: 100 * uncached[g] / ceiling["handshakes_per_s"] for g in gateways}, True))
    peers = [g for g in gateways if g != "mtlsgate"]
    head = "| figure | unit | " + " | ".join(gateways) + " | " + " | ".join(f"mtlsgate/{p}" for p in peers) + " |"
    lines = [
        "# mtlsgate vs nginx vs HAProxy" + (" (smoke run: not a measurement)" if args.smoke else ""),
        "",
        f"One worker each on core {GW_CPU}; oha, the upstream and the idle client on core {LOAD_CPU}. "
        f"TLS 1.3, P-256 certificates, client chain leaf + intermediate, client certificate required. "
        f"Medians of {args.rounds} round(s) of {args.seconds:g} s per figure, gateways in turn.",
        "",
        head,
        "|" + "---|" * (2 + len(gateways) + len(peers)),
    ]
    for title, unit, vals, _ in rows:
        cells = [f"{vals[g]:.2f}" if unit in ("ms", "KiB") else f"{vals[g]:.0f}" for g in gateways]
        ratios = []
        for p in peers:
            ratios.append(f"{vals['mtlsgate'] / vals[p]:.2f}×" if "mtlsgate" in vals and vals[p] else "–")
        lines.append(f"| {title} | {unit} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    lines += [
        "",
        f"Crypto ceiling on core {GW_CPU} (`openssl speed ecdsap256 ecdhx25519`): ECDSA P-256 "
        f"{ceiling['ecdsa_sign_per_s']:.0f} signs/s, {ceiling['ecdsa_verify_per_s']:.0f} verifies/s, X25519 "
        f"{ceiling['x25519_per_s']:.0f} ops/s; one server-side mTLS handshake = 1 sign + 3 verifies + 2 X25519 "
        f"→ at most {ceiling['handshakes_per_s']:.0f} handshakes/s.",
        "",
    ]
    if allow:
        lines += [
            f"Allowlist of {allow['entries']:,} device IDs (mtlsgate alone, full handshakes, 32 at a time): "
            f"the list adds {allow['list_mib']:.1f} MiB resident; rewritten every second, it reloaded "
            f"{allow['reloads']} times in {allow['reload_ms_median']:.0f} ms (median, max {allow['reload_ms_max']:.0f} ms); "
            f"handshakes {allow['handshakes_without']:.0f}/s with p99 {allow['p99_without_ms']:.1f} ms without the list, "
            f"{allow['handshakes_with']:.0f}/s with p99 {allow['p99_with_ms']:.1f} ms with it while reloading.",
            "",
        ]
    lines += [
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()),
        "",
        "Ratios above 1 favour mtlsgate for rates; for latency and memory lower is better, so a ratio "
        "below 1 favours mtlsgate.",
        "",
        "mtlsgate caches verified chains (per configuration generation, until the chain's first expiry), and "
        "oha presents one client certificate, so after the first connection mtlsgate's full handshakes skip "
        "the two chain signature checks; the `--no-verify-cache` row is the like-for-like figure for a fleet "
        "where every connection comes from a different device. nginx and HAProxy verify every chain; their "
        "figure 1 is repeated in that row.",
    ]
    md = "\n".join(lines) + "\n"
    print()
    print(md)
    out_dir = WORK if args.smoke else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    (out_dir / f"{name}.md").write_text(md)
    (out_dir / f"{name}.json").write_text(json.dumps({
        "rounds": args.rounds, "seconds": args.seconds, "idle_connections": args.idle,
        "versions": versions, "crypto_ceiling": ceiling, "allowlist": allow, "raw": results,
        "medians": {title: vals for title, _, vals, _ in rows},
    }, indent=2) + "\n")
    print(f"written to {out_dir / (name + '.md')} and .json")


if __name__ == "__main__":
    main()
