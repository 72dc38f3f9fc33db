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

from openssl_speed import ecdsa_x25519_per_s

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

    def __init__(self, kind, args, pki, upstream_port, resume, extra=(), log_to=None):
        self.kind = kind
        self.extra = list(extra)
        # mtlsgate writes its access log to standard output: to this file when given.
        self.log_to = log_to
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
                   "--upstream", f"http://127.0.0.1:{self.upstream}", "--threads", "1"]
            if "--access-log" not in self.extra:
                cmd += ["--access-log", "off"]
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

    def env(self):
        return None

    def start(self):
        cmd = ["taskset", "-c", GW_CPU] + self.command()
        self.err = open(self.dir / "stderr.log", "w")
        self.out = open(self.log_to, "wb") if self.log_to else None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.out or subprocess.DEVNULL,
                                     stderr=self.err, env=self.env())
        wait_port(self.port, self.proc, self.kind)
        return self

    def worker_pid(self):
        if self.kind == "nginx":
            # The master listens (and the kernel accepts) before it forks the worker: wait
            # for the worker, or the master's RSS would be measured (0 KiB per connection).
            deadline = time.time() + 10
            while time.time() < deadline:
                kids = children(self.proc.pid)
                if kids:
                    return kids[0]
                time.sleep(0.05)
            raise SystemExit("nginx started no worker within 10 s")
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
        if self.out:
            self.out.close()


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


def idle_memory(args, pki, gw, count, h2=False):
    # One request first, so that lazily allocated state is counted in the baseline.
    oha(args, pki, gw.port, 0.3, 1)
    return idle_rss(args, pki, gw, count, ["--h2"] if h2 else [], "idle client failed")


def idle_rss(args, pki, gw, count, mode, failure):
    """The gateway worker's RSS before and with `count` idle connections held open by
    `mtlsgate-bench idle` (`mode`: its extra flags), per connection."""
    pid = gw.worker_pid()
    time.sleep(0.3)
    before = rss_kib(pid)
    client = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, str(Path(args.bin) / "mtlsgate-bench"), "idle", *mode,
         "--connect", f"127.0.0.1:{gw.port}", "--count", str(count), "--ca", str(pki.ca_bundle),
         "--cert", str(pki.client_crt), "--key", str(pki.client_key)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = client.stdout.readline()
    if not line.startswith("open "):
        client.kill()
        raise SystemExit(f"{failure}: {client.stderr.read().strip()} (see {gw.dir}/stderr.log)")
    time.sleep(1.0)
    after = rss_kib(pid)
    client.stdin.close()
    client.wait(timeout=60)
    return {"rss_before_kib": before, "rss_after_kib": after, "kib_per_conn": (after - before) / count}


class NginxUpstream:
    """The second, common upstream: nginx answering the same fixed `Access Granted!` body
    (one worker, keep-alive, on the load core), so that no keep-alive or HTTP/2 figure
    depends on the upstream chosen."""

    def __init__(self, args):
        self.port = free_port()
        d = WORK / "upstream-nginx"
        d.mkdir(parents=True, exist_ok=True)
        conf = f"""
worker_processes 1;
worker_rlimit_nofile {args.nofile};
daemon off;
pid {d}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
  server {{
    listen 127.0.0.1:{self.port};
    location / {{ default_type text/plain; return 200 "Access Granted!\\n"; }}
  }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        self.err = open(d / "stderr.log", "w")
        self.proc = subprocess.Popen(["taskset", "-c", LOAD_CPU, "nginx", "-e", "stderr", "-p", str(d), "-c",
                                      str(d / "nginx.conf")], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        wait_port(self.port, self.proc, "nginx upstream")

    def stop(self):
        # SIGTERM (not SIGKILL) so that nginx's worker goes too.
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def gateway_cpu(gw):
    """CPU seconds (user + system) the gateway has used so far: its process and, for nginx,
    its worker."""
    return cpu_seconds(gw.proc.pid) + sum(cpu_seconds(c) for c in children(gw.proc.pid))


def gateway_cpu_split(gw):
    """The same as `gateway_cpu`, as (user, system) seconds."""
    parts = [cpu_split(gw.proc.pid)] + [cpu_split(c) for c in children(gw.proc.pid)]
    return sum(u for u, _ in parts), sum(k for _, k in parts)


def allowlist_figure(args, pki, up_port, entries):
    """mtlsgate alone: memory of a large allowlist, reload time, and the full-handshake and
    keep-alive rates and p99 with the list, while it is rewritten (and so reloaded) every
    second and while it stays."""
    import threading
    d = WORK / "allow"
    d.mkdir(parents=True, exist_ok=True)
    big = d / "allow.txt"
    body = "".join(f"dev{i}.d.bench.local\n" for i in range(entries - 1)) + "bench.d.bench.local\n"
    big.write_text(body)
    out = {"entries": entries}
    for label, extra in (("without", []), ("with", ["--allow-file", str(big)])):
        gw = Gateway("mtlsgate", args, pki, up_port, False, extra).start()
        stop = [False]
        t = None
        try:
            oha(args, pki, gw.port, 0.3, 1)
            out[f"rss_{label}_kib"] = rss_kib(gw.proc.pid)
            runs = {}
            if label == "with":
                # The list loaded and unchanged: what the lookups cost under keep-alive load.
                runs["keepalive_static"] = oha(args, pki, gw.port, args.seconds, 50)

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
            runs["handshakes"] = oha(args, pki, gw.port, args.seconds, 32, keepalive=False)
            runs["keepalive"] = oha(args, pki, gw.port, args.seconds, 50)
            stop[0] = True
            if t:
                t.join()
                time.sleep(1.5)
        finally:
            stop[0] = True
            if t:
                t.join()
            gw.stop()
        for what, r in runs.items():
            if r["failed"] or not r["ok"]:
                raise SystemExit(f"allowlist figure ({label}, {what}): {r['failed']} failed requests")
            out[f"{what}_{label}"] = r["rps"]
            out[f"{what}_p99_{label}_ms"] = r["p99_ms"]
        if label == "with":
            times = [float(m) for m in re.findall(r"reloaded in ([\d.]+) ms", (gw.dir / "stderr.log").read_text())]
            out["reloads"] = len(times)
            out["reload_ms_median"] = med(times)
            out["reload_ms_max"] = max(times) if times else float("nan")
    out["list_mib"] = (out["rss_with_kib"] - out["rss_without_kib"]) / 1024
    log(f"allowlist: {entries} entries take {out['list_mib']:.1f} MiB; {out['reloads']} reloads, median "
        f"{out['reload_ms_median']:.0f} ms, max {out['reload_ms_max']:.0f} ms; full handshakes "
        f"{out['handshakes_without']:.0f}/s p99 {out['handshakes_p99_without_ms']:.1f} ms without, "
        f"{out['handshakes_with']:.0f}/s p99 {out['handshakes_p99_with_ms']:.1f} ms reloading; keep-alive "
        f"{out['keepalive_without']:.0f}/s p99 {out['keepalive_p99_without_ms']:.2f} ms without, "
        f"{out['keepalive_static_with']:.0f}/s p99 {out['keepalive_static_p99_with_ms']:.2f} ms with the list, "
        f"{out['keepalive_with']:.0f}/s p99 {out['keepalive_p99_with_ms']:.2f} ms reloading")
    return out


# ---------------------------------------------------------------------------------------
# TCP tunnels: mtlsgate tunnel vs nginx's stream module vs HAProxy in mode tcp.

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


class TunnelGateway(Gateway):
    """One TLS-terminating tunnel in front of `127.0.0.1:target`: the same certificates,
    TLS 1.3, client certificates required, resumption off, no connection logs."""

    def __init__(self, kind, args, pki, target_port):
        super().__init__(kind, args, pki, target_port, False)
        self.dir = WORK / f"tunnel-{kind}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def env(self):
        if self.kind == "mtlsgate":
            # nginx's stream access_log is off by default and HAProxy logs nothing without
            # a `log` line; mtlsgate's per-tunnel "open"/"closed" lines are info-level.
            return dict(os.environ, RUST_LOG="warn")
        return None

    def command(self):
        p = self.pki
        conns = self.args.tunnel_idle + 500
        if self.kind == "mtlsgate":
            # Tunnels never resume (every connection is verified in the handshake).
            return [str(Path(self.args.bin) / "mtlsgate"), "tunnel", "--listen", f"127.0.0.1:{self.port}",
                    "--cert", str(p.server_crt), "--key", str(p.server_key), "--client-ca", str(p.client_ca),
                    "--target", f"127.0.0.1:{self.upstream}", "--threads", "1", "--max-connections", str(conns)]
        if self.kind == "nginx":
            d = self.dir
            conf = f"""
load_module {NGINX_STREAM_MODULE};
worker_processes 1;
worker_rlimit_nofile {self.args.nofile};
daemon off;
pid {d}/nginx.pid;
error_log stderr error;
events {{ worker_connections {min(2 * conns, self.args.nofile - 100)}; }}
stream {{
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {p.server_crt};
    ssl_certificate_key {p.server_key};
    ssl_protocols TLSv1.3;
    ssl_client_certificate {p.client_ca};
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_cache off;
    ssl_session_tickets off;
    proxy_pass 127.0.0.1:{self.upstream};
    proxy_timeout 10m;
  }}
}}
"""
            (d / "nginx.conf").write_text(conf)
            return ["nginx", "-e", "stderr", "-p", str(d), "-c", str(d / "nginx.conf")]
        if self.kind == "haproxy":
            conf = f"""
global
  nbthread 1
  maxconn {conns}
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
frontend fe
  bind 127.0.0.1:{self.port} ssl crt {p.server_pem} ca-file {p.client_ca} verify required no-tls-tickets
  default_backend be
backend be
  server target 127.0.0.1:{self.upstream}
"""
            (self.dir / "haproxy.cfg").write_text(conf)
            return ["haproxy", "-db", "-f", str(self.dir / "haproxy.cfg")]
        raise ValueError(self.kind)


class Flame:
    """`perf record` of one process (with DWARF call graphs: release builds keep no frame
    pointers) while a figure runs, then an SVG flame graph by inferno."""

    def __init__(self, args, pid):
        self.args = args
        out_dir = WORK if args.smoke else RESULTS
        out_dir.mkdir(parents=True, exist_ok=True)
        self.svg = out_dir / ("flame-smoke.svg" if args.smoke else "flame-keepalive-h1.svg")
        self.data = WORK / "perf.data"
        WORK.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(pid),
                                      "-o", str(self.data)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self, title):
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=120)
        if self.proc.returncode not in (0, -signal.SIGINT) or not self.data.exists():
            raise SystemExit(f"perf record failed: {err.strip()}")
        script = subprocess.run(["perf", "script", "-i", str(self.data)], capture_output=True, text=True)
        if script.returncode != 0:
            raise SystemExit(f"perf script failed: {script.stderr.strip()}")
        tools = Path(self.args.inferno)
        folded = subprocess.run([str(tools / "inferno-collapse-perf")], input=script.stdout, capture_output=True,
                                text=True, check=True).stdout
        svg = subprocess.run([str(tools / "inferno-flamegraph"), "--title", title], input=folded,
                             capture_output=True, text=True, check=True).stdout
        tmp = self.svg.with_suffix(".svg.tmp")
        tmp.write_text(svg)
        tmp.replace(self.svg)
        self.data.unlink(missing_ok=True)
        log(f"flame graph: {self.svg} ({len(folded.splitlines())} distinct stacks)")


def cpu_stat():
    """Each core's (total, idle) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]  # user … steal; guest time is inside user
                out[name] = (sum(v), v[3] + v[4])  # idle + iowait
    return out


def core_share(before, after):
    """Each benchmark core's busy share (%) between two cpu_stat()s: everything that ran on
    it, the server under test, the load generator, the upstream, and anything else."""
    out = {}
    for c in (GW_CPU, LOAD_CPU):
        (t0, i0), (t1, i1) = before[f"cpu{c}"], after[f"cpu{c}"]
        out[f"core{c}_busy_pct"] = 100 * ((t1 - t0) - (i1 - i0)) / (t1 - t0) if t1 > t0 else float("nan")
    return out


def share_cells(runs):
    """'gateway core/load core' busy shares, the medians of `runs`."""
    return f"{med([r[f'core{GW_CPU}_busy_pct'] for r in runs]):.0f}/{med([r[f'core{LOAD_CPU}_busy_pct'] for r in runs]):.0f}"


SHARE_ROW = f"  busy share of core {GW_CPU} (server) / core {LOAD_CPU} (load, upstream)"


def cpu_split(pid):
    """User and system CPU time of a process so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    return sum(cpu_split(pid))


def bench_tool(args, *argv, timeout=None):
    """Runs `mtlsgate-bench ARGV` on the load core; returns its JSON line."""
    cmd = ["taskset", "-c", LOAD_CPU, str(Path(args.bin) / "mtlsgate-bench"), *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"mtlsgate-bench {argv[0]} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tls_connect(args, pki, port, seconds, conns):
    return bench_tool(args, "tls-connect", "--connect", f"127.0.0.1:{port}", "--cert", str(pki.client_crt),
                      "--key", str(pki.client_key), "--concurrency", str(conns), "--seconds", str(seconds),
                      timeout=seconds + 60)


def tunnel_idle(args, pki, gw, count):
    # A few connections first, so that lazily allocated state is counted in the baseline.
    tls_connect(args, pki, gw.port, 0.3, 1)
    return idle_rss(args, pki, gw, count, ["--echo"], "idle tunnel client failed")


class ClientTunnel:
    """`mtlsgate tunnel` in client mode on the load core: plain TCP in, mTLS out to `port`
    (the same client in front of every server)."""

    def __init__(self, args, pki, port):
        self.port = free_port()
        self.dir = WORK / "tunnel-client"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.err = open(self.dir / "stderr.log", "w")
        cmd = ["taskset", "-c", LOAD_CPU, str(Path(args.bin) / "mtlsgate"), "tunnel",
               "--listen", f"127.0.0.1:{self.port}", "--target", f"127.0.0.1:{port}",
               "--upstream-ca", str(pki.ca_bundle), "--upstream-cert", str(pki.client_crt),
               "--upstream-key", str(pki.client_key), "--upstream-server-name", "localhost", "--threads", "1"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err,
                                     env=dict(os.environ, RUST_LOG="warn"))
        wait_port(self.port, self.proc, "client tunnel")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def tunnel_throughput(args, pki, gw, seconds):
    client = ClientTunnel(args, pki, gw.port)
    try:
        cmd = ["taskset", "-c", LOAD_CPU, "iperf3", "-c", "127.0.0.1", "-p", str(client.port), "-t", f"{seconds:g}", "-J"]
        if not args.smoke:
            cmd += ["--omit", "1"]
        cpu0 = cpu_seconds(gw.worker_pid())
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        wall = time.time() - t0
        cpu = cpu_seconds(gw.worker_pid()) - cpu0
    finally:
        client.stop()
    try:
        r = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"iperf3 failed: {out.stderr.strip()} {out.stdout[-500:]} (see {gw.dir}/stderr.log)")
    if "error" in r:
        raise SystemExit(f"iperf3 failed: {r['error']} (see {gw.dir}/stderr.log)")
    bps = r["end"]["sum_received"]["bits_per_second"]
    return {"gbit_per_s": bps / 1e9, "bytes": r["end"]["sum_received"]["bytes"],
            "gateway_cpu_pct": 100 * cpu / wall}


def tunnel_handshakes(args, pki, gw, seconds, conns):
    if not args.smoke:
        tls_connect(args, pki, gw.port, 1, conns)
    cpu0 = cpu_seconds(gw.worker_pid())
    r = tls_connect(args, pki, gw.port, seconds, conns)
    r["gateway_cpu_pct"] = 100 * (cpu_seconds(gw.worker_pid()) - cpu0) / seconds
    return r


def tunnel_mqtt(args, pki, gw, broker_port, seconds, publishers):
    cpu0 = cpu_seconds(gw.worker_pid())
    t0 = time.time()
    r = bench_tool(args, "mqtt-pub", "--connect", f"127.0.0.1:{gw.port}", "--broker", f"127.0.0.1:{broker_port}",
                   "--ca", str(pki.ca_bundle), "--cert", str(pki.client_crt), "--key", str(pki.client_key),
                   "--publishers", str(publishers), "--seconds", str(seconds), "--payload", "32",
                   timeout=seconds + 120)
    # The CPU share over the publishing time (connecting the publishers is a small part).
    r["gateway_cpu_pct"] = 100 * (cpu_seconds(gw.worker_pid()) - cpu0) / max(seconds, time.time() - t0 - 0.7)
    # What ranks the gateways while the load core is the limit, as requests per gateway
    # CPU-second do in the HTTP table: every PUBLISH written went through the gateway.
    r["sent_per_cpu_s"] = 100 * r["sent_per_s"] / r["gateway_cpu_pct"] if r["gateway_cpu_pct"] else 0.0
    return r


class Backends:
    """The tunnels' targets, on the load core: a TCP echo server, an iperf3 server and a
    mosquitto broker."""

    def __init__(self, args):
        d = WORK / "backends"
        d.mkdir(parents=True, exist_ok=True)
        self.procs = []
        self.echo = free_port()
        self._start(["taskset", "-c", LOAD_CPU, str(Path(args.bin) / "mtlsgate-bench"), "echo",
                     "--listen", f"127.0.0.1:{self.echo}"], self.echo, "echo backend", d / "echo.log")
        self.iperf = free_port()
        self._start(["taskset", "-c", LOAD_CPU, "iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.iperf)],
                    self.iperf, "iperf3 server", d / "iperf3.log")
        self.mqtt = free_port()
        (d / "mosquitto.conf").write_text(
            f"listener {self.mqtt} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n"
            "user root\nlog_dest stderr\nlog_type error\nlog_type warning\n")
        self._start(["taskset", "-c", LOAD_CPU, "mosquitto", "-c", str(d / "mosquitto.conf")], self.mqtt,
                    "mosquitto", d / "mosquitto.log")

    def _start(self, cmd, port, what, log_path):
        err = open(log_path, "w")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.procs.append((proc, err))
        wait_port(port, proc, what)

    def stop(self):
        for proc, err in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            err.close()


TUNNEL_FIGURES = ["tunnel_idle_memory", "tunnel_throughput", "tunnel_handshakes", "tunnel_mqtt"]


def run_tunnels(args, pki, gateways):
    results = {k: {g: [] for g in gateways} for k in TUNNEL_FIGURES}
    backends = Backends(args)
    secs = args.seconds
    try:
        for rnd in range(args.rounds):
            order = gateways[rnd % len(gateways):] + gateways[:rnd % len(gateways)]
            for key in TUNNEL_FIGURES:
                for g in order:
                    target = {"tunnel_throughput": backends.iperf, "tunnel_mqtt": backends.mqtt}.get(key, backends.echo)
                    gw = TunnelGateway(g, args, pki, target).start()
                    stat0 = cpu_stat()
                    try:
                        if key == "tunnel_idle_memory":
                            r = tunnel_idle(args, pki, gw, args.tunnel_idle)
                            msg = (f"{r['kib_per_conn']:.1f} KiB/tunnel ({r['rss_before_kib']} -> "
                                   f"{r['rss_after_kib']} KiB for {args.tunnel_idle})")
                        elif key == "tunnel_throughput":
                            r = tunnel_throughput(args, pki, gw, secs)
                            msg = f"{r['gbit_per_s']:.2f} Gbit/s, gateway CPU {r['gateway_cpu_pct']:.0f}%"
                        elif key == "tunnel_handshakes":
                            r = tunnel_handshakes(args, pki, gw, secs, 32)
                            if r["failed"] or not r["ok"]:
                                raise SystemExit(f"{g}, {key}: {r['failed']} failed, {r['ok']} ok, first error "
                                                 f"{r['first_error']} (see {gw.dir}/stderr.log)")
                            msg = f"{r['per_s']:.0f} connections/s, gateway CPU {r['gateway_cpu_pct']:.0f}%"
                        else:
                            r = tunnel_mqtt(args, pki, gw, backends.mqtt, secs, args.mqtt_publishers)
                            if r["first_error"] or not r["received_in_time"]:
                                raise SystemExit(f"{g}, {key}: {r} (see {gw.dir}/stderr.log)")
                            msg = (f"{r['received_per_s']:.0f} msg/s received ({r['sent_per_s']:.0f}/s sent), "
                                   f"gateway CPU {r['gateway_cpu_pct']:.0f}%")
                    finally:
                        gw.stop()
                    r.update(core_share(stat0, cpu_stat()))
                    results[key][g].append(r)
                    log(f"round {rnd + 1} {key:20} {g:9} {msg}, cores {r[f'core{GW_CPU}_busy_pct']:.0f}%/"
                        f"{r[f'core{LOAD_CPU}_busy_pct']:.0f}% busy")
    finally:
        backends.stop()
    return results


def tunnel_rows(args, gateways, results):
    """(title, unit, {gateway: median}, higher is better, target) for the tunnel table."""
    def m(key, field):
        return {g: med([r[field] for r in results[key][g]]) for g in gateways}

    def s(key):
        return {g: share_cells(results[key][g]) for g in gateways}
    k = args.mqtt_publishers
    return [
        (f"Resident memory per idle mTLS tunnel ({args.tunnel_idle} open, echo backend)", "KiB",
         m("tunnel_idle_memory", "kib_per_conn"), False, ("best", 0.5)),
        ("One bulk stream through the tunnel (iperf3)", "Gbit/s", m("tunnel_throughput", "gbit_per_s"), True,
         ("nginx", 1.0)),
        ("  gateway CPU on core 0 meanwhile", "%", m("tunnel_throughput", "gateway_cpu_pct"), False, None),
        (SHARE_ROW, "%", s("tunnel_throughput"), True, None),
        ("New tunnel connections/s (full handshake + 1-byte echo, 32 at a time)", "conn/s",
         m("tunnel_handshakes", "per_s"), True, ("nginx", 2.0)),
        ("  gateway CPU on core 0 meanwhile", "%", m("tunnel_handshakes", "gateway_cpu_pct"), False, None),
        (SHARE_ROW, "%", s("tunnel_handshakes"), True, None),
        (f"MQTT messages/s through the tunnel to mosquitto ({k} publishers, QoS 0, 32-byte payload)", "msg/s",
         m("tunnel_mqtt", "received_per_s"), True, ("nginx", 1.0)),
        ("  PUBLISH packets written by the publishers", "msg/s", m("tunnel_mqtt", "sent_per_s"), True, None),
        ("  gateway CPU on core 0 meanwhile", "%", m("tunnel_mqtt", "gateway_cpu_pct"), False, None),
        ("  PUBLISH packets carried per gateway CPU-second", "msg/s", m("tunnel_mqtt", "sent_per_cpu_s"), True,
         None),
        (SHARE_ROW, "%", s("tunnel_mqtt"), True, None),
    ]


def tunnel_report(args, gateways, results, load):
    rows = tunnel_rows(args, gateways, results)
    peers = [g for g in gateways if g != "mtlsgate"]
    head = ("| figure | unit | " + " | ".join(gateways) + " | " + " | ".join(f"mtlsgate/{p}" for p in peers)
            + " | target |")
    lines = [
        "## TCP tunnels" + (" (smoke run: not a measurement)" if args.smoke else ""),
        "",
        f"`mtlsgate tunnel` vs nginx's stream module vs HAProxy in `mode tcp`: one worker each on core {GW_CPU}, "
        f"terminating mTLS (TLS 1.3, the same P-256 certificates, client certificate required, resumption off) "
        f"in front of a backend on core {LOAD_CPU} (a TCP echo server, iperf3, or mosquitto). The clients run on "
        f"core {LOAD_CPU}. Medians of {args.rounds} round(s) of {args.seconds:g} s per figure, servers in turn. "
        f"Load average when the tunnel figures started: {load[0]}; when they ended: {load[1]}.",
        "",
        head,
        "|" + "---|" * (3 + len(gateways) + len(peers)),
    ]
    verdicts = []
    for title, unit, vals, higher, target in rows:
        cells = [cell(vals[g], unit in ("KiB", "Gbit/s")) for g in gateways]
        ratios = [ratio_cell(vals, p) for p in peers]
        goal = ""
        if target and "mtlsgate" in vals:
            ref, want = target
            if ref == "best":
                refs = [vals[p] for p in peers]
                ref_val = (max(refs) if higher else min(refs)) if refs else None
                ref_name = "the better peer"
            else:
                ref_val = vals.get(ref)
                ref_name = ref
            if ref_val:
                ratio = vals["mtlsgate"] / ref_val
                met = ratio >= want if higher else ratio <= want
                goal = f"{'≥' if higher else '≤'} {want:g}× {ref_name}: {'met' if met else 'missed'} ({ratio:.2f}×)"
                verdicts.append((title, met, ratio))
        lines.append(f"| {title} | {unit} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {goal} |")
    lines += [
        "",
        "Throughput: `iperf3 -c` → `mtlsgate tunnel` in client mode (plain in, mTLS out; the same client for "
        "every server) → the server under test → `iperf3 -s`; the client side, iperf3 and the backends share "
        f"core {LOAD_CPU}, so when the server under test is not at 100% of core {GW_CPU} the figure is the load "
        "side's limit and the CPU row says what the server spent on it. New connections: `mtlsgate-bench "
        "tls-connect`, a full handshake (no resumption) with the client certificate, one byte echoed, close. "
        "MQTT: `mtlsgate-bench mqtt-pub`, each publisher an mTLS connection through the tunnel writing one "
        "PUBLISH (QoS 0) per TLS record; a subscriber on the broker counts what arrives within the time. "
        f"With core {LOAD_CPU} at 100% the messages received are what mosquitto managed on its share of that "
        "core; the packets carried per gateway CPU-second (each run's packets written over the gateway's CPU "
        "time, the median of the runs) rank the gateways themselves.",
        "",
        "Idle memory: every tunnel uses the same client certificate (the servers keep no per-device state "
        "beyond the connection). Where mtlsgate's bytes per idle tunnel go, and what would take them away: "
        "[tunnel-memory.md](tunnel-memory.md).",
    ]
    return "\n".join(lines) + "\n", rows, verdicts


def crypto_ceiling(seconds):
    sign, verify, ecdh = ecdsa_x25519_per_s(GW_CPU, seconds)
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
    # mtlsgate alone, as a user runs it: its default access log on, written to a file; the
    # peers' cells repeat the row above (their logs off), and the report states the cost.
    ("keepalive_h1_logged", "  the same, mtlsgate's access log on (text, to a file)", True,
     dict(keepalive=True, conns=50, logged=True)),
    ("keepalive_h2", "HTTP/2 requests/s, 50 connections", True, dict(keepalive=True, conns=50, http2=True)),
    # The same two with nginx as the (common) upstream instead of mtlsgate-bench's.
    ("keepalive_h1_nginx_up", "Keep-alive HTTP/1.1 requests/s, 50 connections, nginx as the upstream", True,
     dict(keepalive=True, conns=50, upstream="nginx")),
    ("keepalive_h2_nginx_up", "HTTP/2 requests/s, 50 connections, nginx as the upstream", True,
     dict(keepalive=True, conns=50, http2=True, upstream="nginx")),
]


# Figures only mtlsgate runs, and the figure whose peer cells they repeat: nginx and HAProxy
# have no chain cache (their full handshakes always verify the chain), and their logs are
# off in every figure.
MTLSGATE_ONLY = {"full_uncached": "full_handshakes", "keepalive_h1_logged": "keepalive_h1"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory with mtlsgate and mtlsgate-bench")
    ap.add_argument("--oha", required=True)
    ap.add_argument("--smoke", action="store_true", help="one second per figure, one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--idle", type=int, default=10000, help="idle connections for the HTTP memory figure")
    ap.add_argument("--tunnel-idle", type=int, default=9000, help="idle tunnels for the tunnel memory figure")
    ap.add_argument("--mqtt-publishers", type=int, default=100, help="publishers for the MQTT figure")
    ap.add_argument("--only", help="comma-separated gateways to run")
    ap.add_argument("--inferno", default=str(Path.home() / ".cargo" / "bin"),
                    help="directory with inferno-collapse-perf and inferno-flamegraph")
    ap.add_argument("--flame", action="store_true",
                    help="record mtlsgate with perf during the keep-alive HTTP/1.1 figure (first round) and "
                         "write a flame graph to bench/results/ (needs perf and inferno)")
    ap.add_argument("--upstream", default="bench,nginx",
                    help="comma-separated upstreams for the keep-alive and HTTP/2 figures: bench "
                         "(mtlsgate-bench upstream), nginx")
    ap.add_argument("--part", default="http,tunnels",
                    help="comma-separated: http, tunnels (a full run of one part keeps the other's last results)")
    args = ap.parse_args()
    args.bin = str(Path(args.bin).resolve())
    if args.smoke:
        args.rounds, args.seconds, args.idle, args.tunnel_idle, args.mqtt_publishers = 1, 1, 200, 200, 10
    gateways = args.only.split(",") if args.only else GATEWAYS
    parts = args.part.split(",")
    args.upstream = args.upstream.split(",")
    if not set(args.upstream) <= {"bench", "nginx"} or "bench" not in args.upstream:
        raise SystemExit(f"--upstream: bench, or bench,nginx, not {','.join(args.upstream)}")
    if not set(parts) <= {"http", "tunnels"}:
        raise SystemExit(f"--part: http, tunnels or both, not {args.part}")
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
    # HAProxy reserves two descriptors per connection (client and server side), and a tunnel
    # holds two in every server: with a hard limit of 20,000 descriptors (as in this
    # sandbox), 9,500 connections is the most all three gateways can hold.
    fit = (nofile - 1000) // 2
    if args.idle > fit:
        log(f"note: the descriptor limit is {nofile}; measuring {fit} idle connections instead of {args.idle}")
        args.idle = fit
    if args.tunnel_idle > fit:
        log(f"note: the descriptor limit is {nofile}; measuring {fit} idle tunnels instead of {args.tunnel_idle}")
        args.tunnel_idle = fit
    args.nofile = nofile
    args.maxconn = min(args.idle + 500, (nofile - 200) // 2)
    WORK.mkdir(parents=True, exist_ok=True)
    pki = Pki(str(Path(args.bin) / "mtlsgate"))
    versions = {
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        "openssl": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip(),
        "oha": subprocess.run([args.oha, "--version"], capture_output=True, text=True).stdout.strip(),
        "mtlsgate": subprocess.run([str(Path(args.bin) / "mtlsgate"), "--version"], capture_output=True, text=True).stdout.strip(),
    }
    http = tunnels = None
    if "http" in parts:
        http = run_http(args, pki, gateways, versions)
    if "tunnels" in parts:
        versions.update({
            "iperf3": subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "mosquitto": subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0],
        })
        load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
        t0 = time.time()
        results = run_tunnels(args, pki, gateways)
        load = (load_start, " ".join(f"{x:.2f}" for x in os.getloadavg()))
        md, rows, verdicts = tunnel_report(args, gateways, results, load)
        md += "\nVersions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + "\n"
        tunnels = (md, {
            "rounds": args.rounds, "seconds": args.seconds, "idle_tunnels": args.tunnel_idle,
            "mqtt_publishers": args.mqtt_publishers, "load_average": {"start": load[0], "end": load[1]},
            "duration_s": round(time.time() - t0), "versions": versions, "raw": results,
            "medians": unique_titles([(title, unit, vals, higher) for title, unit, vals, higher, _ in rows]),
            "targets": {title: {"met": met, "ratio": ratio} for title, met, ratio in verdicts},
        })
    write_results(args, http, tunnels)


def run_http(args, pki, gateways, versions):
    up_port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", LOAD_CPU, str(Path(args.bin) / "mtlsgate-bench"), "upstream",
                                 "--listen", f"127.0.0.1:{up_port}"], stderr=subprocess.DEVNULL)
    wait_port(up_port, upstream, "upstream")
    nginx_up = NginxUpstream(args) if "nginx" in args.upstream else None
    figures = [f for f in FIGURES if f[3].get("upstream", "bench") in args.upstream]
    results = {k: {g: [] for g in gateways} for k, *_ in figures}
    results["idle_memory"] = {g: [] for g in gateways}
    results["idle_memory_h2"] = {g: [] for g in gateways}
    try:
        for rnd in range(args.rounds):
            order = gateways[rnd % len(gateways):] + gateways[:rnd % len(gateways)]
            for key, title, resume, o in figures:
                for g in order:
                    if MTLSGATE_ONLY.get(key) and g != "mtlsgate":
                        continue  # the peers' figure is the one they share (see MTLSGATE_ONLY)
                    extra = ["--no-verify-cache"] if o.get("uncached") and g == "mtlsgate" else []
                    if o.get("logged"):
                        extra = ["--access-log", "text"]
                    port = nginx_up.port if o.get("upstream") == "nginx" else up_port
                    gw = Gateway(g, args, pki, port, resume, extra,
                                 log_to=WORK / "access.log" if o.get("logged") else None).start()
                    try:
                        if not args.smoke:
                            oha(args, pki, gw.port, 1, o["conns"], o["keepalive"], o.get("http2", False))
                        # The gateway's own CPU time over the run: with the load generator
                        # and the upstream on one core, that core can be the limit, and the
                        # requests per gateway CPU-second still show each gateway's cost.
                        cpu0 = gateway_cpu(gw)
                        split0 = gateway_cpu_split(gw)
                        flame = (Flame(args, gw.worker_pid()) if args.flame and rnd == 0 and g == "mtlsgate"
                                 and key == "keepalive_h1" else None)
                        stat0 = cpu_stat()
                        r = oha(args, pki, gw.port, args.seconds, o["conns"], o["keepalive"], o.get("http2", False))
                        r.update(core_share(stat0, cpu_stat()))
                        if flame:
                            flame.stop(f"{title}, mtlsgate")
                        r["gateway_cpu_s"] = gateway_cpu(gw) - cpu0
                        r["per_cpu_s"] = r["ok"] / r["gateway_cpu_s"] if r["gateway_cpu_s"] else 0.0
                        # Where a request's CPU goes: the gateway's own code or the kernel
                        # (socket reads and writes, wake-ups), which every peer pays.
                        user, system = (b - a for a, b in zip(split0, gateway_cpu_split(gw)))
                        r["user_us_per_req"] = 1e6 * user / r["ok"] if r["ok"] else 0.0
                        r["system_us_per_req"] = 1e6 * system / r["ok"] if r["ok"] else 0.0
                    finally:
                        gw.stop()
                    if o.get("logged"):
                        # Stopped (SIGTERM): every line is in the file, the warm-up's too.
                        with open(gw.log_to, "rb") as f:
                            written = sum(1 for _ in f)
                        if written < r["ok"]:
                            raise SystemExit(f"{g}, {key}: {written} access-log lines for {r['ok']} requests")
                        r["log_lines"] = written
                    if r["failed"] or not r["ok"]:
                        raise SystemExit(f"{g}, {key}: {r['failed']} failed requests, {r['ok']} ok "
                                         f"(see {gw.dir}/stderr.log)")
                    results[key][g].append(r)
                    log(f"round {rnd + 1} {key:20} {g:9} {r['rps']:10.0f}/s  p50 {r['p50_ms']:.2f} ms  "
                        f"p99 {r['p99_ms']:.2f} ms  {r['per_cpu_s']:.0f} per gateway CPU-second "
                        f"(user {r['user_us_per_req']:.1f} µs, system {r['system_us_per_req']:.1f} µs a request)  "
                        f"cores {r[f'core{GW_CPU}_busy_pct']:.0f}%/{r[f'core{LOAD_CPU}_busy_pct']:.0f}% busy")
            for key, h2 in (("idle_memory", False), ("idle_memory_h2", True)):
                for g in order:
                    gw = Gateway(g, args, pki, up_port, True).start()
                    try:
                        m = idle_memory(args, pki, gw, args.idle, h2)
                    finally:
                        gw.stop()
                    results[key][g].append(m)
                    log(f"round {rnd + 1} {key:20} {g:9} {m['kib_per_conn']:.1f} KiB/connection "
                        f"({m['rss_before_kib']} -> {m['rss_after_kib']} KiB for {args.idle})")
        allow = None
        if "mtlsgate" in gateways:
            allow = allowlist_figure(args, pki, up_port, 10000 if args.smoke else 1000000)
        ceiling = crypto_ceiling(1 if args.smoke else 3)
    finally:
        upstream.terminate()
        upstream.wait()
        if nginx_up:
            nginx_up.stop()
    return report(args, gateways, results, ceiling, versions, allow, figures)


TUNNEL_HEADING = "## TCP tunnels"


def write_results(args, http, tunnels):
    """Writes the HTTP table and the tunnel table into one file; a full run of one part keeps
    the other part of the last full run."""
    out_dir = WORK if args.smoke else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    md_path, json_path = out_dir / f"{name}.md", out_dir / f"{name}.json"
    old_md = md_path.read_text() if md_path.exists() and not args.smoke else ""
    old_json = json.loads(json_path.read_text()) if json_path.exists() and not args.smoke else {}
    cut = old_md.find("\n" + TUNNEL_HEADING)
    old_http_md = old_md[:cut + 1] if cut >= 0 else old_md
    old_tunnel_md = old_md[cut + 1:] if cut >= 0 else ""
    http_md, http_json = http if http else (old_http_md, {k: v for k, v in old_json.items() if k != "tunnels"})
    tunnel_md, tunnel_json = tunnels if tunnels else (old_tunnel_md, old_json.get("tunnels"))
    if not http_md:
        http_md = "# mtlsgate vs nginx vs HAProxy\n"
    md = http_md + ("\n" + tunnel_md if tunnel_md else "")
    data = dict(http_json)
    if tunnel_json:
        data["tunnels"] = tunnel_json
    print()
    if tunnels:
        print(tunnels[0])
    md_path.write_text(md)
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"written to {md_path} and .json")


def cell(v, two_places):
    if isinstance(v, str):
        return v
    return f"{v:.2f}" if two_places else f"{v:.0f}"


def ratio_cell(vals, peer):
    if "mtlsgate" in vals and not isinstance(vals[peer], str) and vals[peer]:
        return f"{vals['mtlsgate'] / vals[peer]:.2f}×"
    return "–"


def unique_titles(rows):
    """The rows' medians by title, a sub-row ("  p99 latency") named after its figure."""
    out, parent = {}, ""
    top = ""
    for title, _, vals, _ in rows:
        if title.startswith("  the same"):
            # A variant of the figure above, with sub-rows of its own.
            parent = f"{top} / {title.strip()}"
            out[parent] = vals
        elif title.startswith("  "):
            out[f"{parent} / {title.strip()}"] = vals
        else:
            top = parent = title
            out[title] = vals
    return out


def med(vals):
    return statistics.median(vals) if vals else float("nan")


def report(args, gateways, results, ceiling, versions, allow, figures):
    rows = []  # (figure, unit, {gateway: value}, higher_is_better)
    for key, title, _, o in figures:
        src = {g: results[MTLSGATE_ONLY[key]][g] if key in MTLSGATE_ONLY and g != "mtlsgate" else results[key][g]
               for g in gateways}
        rows.append((title, "req/s", {g: med([r["rps"] for r in src[g]]) for g in gateways}, True))
        rows.append(("  per gateway CPU-second", "req", {g: med([r["per_cpu_s"] for r in src[g]]) for g in gateways},
                     True))
        rows.append((SHARE_ROW, "%", {g: share_cells(src[g]) for g in gateways}, True))
        if key.startswith("keepalive"):
            for part, name in (("user", "in user space"), ("system", "in the kernel")):
                rows.append((f"  gateway CPU per request, {name}", "µs",
                             {g: med([r.get(f"{part}_us_per_req", float("nan")) for r in src[g]])
                              for g in gateways}, False))
            rows.append(("  p50 latency", "ms", {g: med([r["p50_ms"] for r in src[g]]) for g in gateways}, False))
            rows.append(("  p99 latency", "ms", {g: med([r["p99_ms"] for r in src[g]]) for g in gateways}, False))
    rows.append((f"Resident memory per idle mTLS connection, HTTP/1.1 ({args.idle} open)", "KiB",
                 {g: med([m["kib_per_conn"] for m in results["idle_memory"][g]]) for g in gateways}, False))
    rows.append((f"Resident memory per idle mTLS connection, HTTP/2 ({args.idle} open)", "KiB",
                 {g: med([m["kib_per_conn"] for m in results["idle_memory_h2"][g]]) for g in gateways}, False))
    by_title = {title: vals for title, _, vals, _ in rows}
    full = by_title[FIGURES[0][1]]
    rows.append(("Full handshakes as a share of the crypto ceiling", "%",
                 {g: 100 * full[g] / ceiling["handshakes_per_s"] for g in gateways}, True))
    if "mtlsgate" in gateways:
        uncached = dict(full)
        uncached["mtlsgate"] = by_title[FIGURES[1][1]]["mtlsgate"]
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
        cells = [cell(vals[g], unit in ("ms", "KiB", "µs")) for g in gateways]
        ratios = [ratio_cell(vals, p) for p in peers]
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
            f"full handshakes {allow['handshakes_without']:.0f}/s with p99 {allow['handshakes_p99_without_ms']:.1f} ms "
            f"without the list, {allow['handshakes_with']:.0f}/s with p99 {allow['handshakes_p99_with_ms']:.1f} ms with "
            f"it while reloading; keep-alive HTTP/1.1 (50 connections) {allow['keepalive_without']:.0f}/s with p99 "
            f"{allow['keepalive_p99_without_ms']:.2f} ms without the list, {allow['keepalive_static_with']:.0f}/s with p99 "
            f"{allow['keepalive_static_p99_with_ms']:.2f} ms with it unchanged, {allow['keepalive_with']:.0f}/s with p99 "
            f"{allow['keepalive_p99_with_ms']:.2f} ms with it while reloading.",
            "",
        ]
    logged = [r for r in results.get("keepalive_h1_logged", {}).get("mtlsgate", [])]
    if logged and results["keepalive_h1"].get("mtlsgate"):
        on = med([r["per_cpu_s"] for r in logged])
        off = med([r["per_cpu_s"] for r in results["keepalive_h1"]["mtlsgate"]])
        cost = 100 * (off - on) / off if off else float("nan")
        lines += [
            f"Access log: mtlsgate's default text log, written to a file (its 1 s buffer, as nginx's "
            f"`access_log … buffer=32k flush=1s`), costs {cost:.1f}% of keep-alive HTTP/1.1 requests per gateway "
            f"CPU-second ({on:.0f} with it on, {off:.0f} with it off; target: at most 5%: "
            f"{'met' if cost <= 5 else 'missed'}). Every request's line was checked to be in the file. nginx's and "
            "HAProxy's logs are off in every figure; their cells in that row repeat the row above.",
            "",
        ]
    lines += [
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()),
        "",
        "Ratios above 1 favour mtlsgate for rates; for latency and memory lower is better, so a ratio "
        "below 1 favours mtlsgate.",
        "",
        f"The busy-share rows give, over each figure's measuring window, how busy core {GW_CPU} (the server under "
        f"test) and core {LOAD_CPU} (oha and the upstream) were, from /proc/stat (everything that ran on the core "
        f"counts, other processes on the machine too). A server below 100% on core {GW_CPU} while core "
        f"{LOAD_CPU} is at 100% was waiting for the load side: its req/s is the load side's limit, and its "
        "per-CPU-second figure is measured at partial load (see bench/README.md).",
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
    return md, {
        "rounds": args.rounds, "seconds": args.seconds, "idle_connections": args.idle,
        "versions": versions, "crypto_ceiling": ceiling, "allowlist": allow, "raw": results,
        "medians": unique_titles(rows),
    }


if __name__ == "__main__":
    main()
