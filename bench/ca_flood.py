#!/usr/bin/env python3
"""`mtlsgate ca serve` under a connection flood from one address, beside a normal agent.

A flood client on 127.0.0.2 keeps opening connections to the CA server and holding them:
TLS handshakes that then send nothing, bodies trickled a byte at a time, plain TCP that
never starts TLS; whenever the server closes one, another takes its place. Meanwhile a real
agent (`mtlsgate agent run`, on 127.0.0.1) is told to renew every 10 s (SIGHUP), and the
time from each SIGHUP to the agent's "renewed" log line is measured: that is a renewal as
the device sees it, connection and handshake included. Also measured: a TLS connect +
`GET /healthz` from 127.0.0.1 every second.

Not part of CI (it runs for minutes): `bench/ca-flood [--minutes 10] [--flood 600]`.
Writes bench/results/ca-flood.md."""

import argparse
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


class Flood:
    """Connections from 127.0.0.2 held open until the server closes them, then replaced."""

    def __init__(self, port, ca, n):
        self.port, self.n, self.stop = port, n, threading.Event()
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.check_hostname = False
        self.opened = 0
        self.refused = 0
        self.lock = threading.Lock()

    def one(self, kind):
        while not self.stop.is_set():
            try:
                raw = socket.create_connection(("127.0.0.1", self.port), timeout=30,
                                               source_address=("127.0.0.2", 0))
            except OSError:
                with self.lock:
                    self.refused += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.opened += 1
            try:
                if kind == "tcp":
                    raw.settimeout(120)
                    raw.recv(1)  # until the server gives up on it
                    continue
                s = self.ctx.wrap_socket(raw, server_hostname="localhost")
                s.settimeout(120)
                if kind == "trickle":
                    s.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
                    while not self.stop.is_set():
                        s.sendall(b"a")
                        time.sleep(2)
                else:
                    s.recv(1)  # silent after the handshake
            except OSError:
                pass
            finally:
                try:
                    raw.close()
                except OSError:
                    pass

    def start(self):
        kinds = ["silent", "trickle", "tcp"]
        self.threads = [threading.Thread(target=self.one, args=(kinds[i % 3],), daemon=True)
                        for i in range(self.n)]
        for t in self.threads:
            t.start()


def probe(port, ca, stop, out):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    while not stop.is_set():
        t0 = time.time()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    data = s.recv(100)
            out.append((time.time() - t0, data.startswith(b"HTTP/1.1 200")))
        except OSError:
            out.append((time.time() - t0, False))
        time.sleep(1)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--flood", type=int, default=600, help="flood connections held at once")
    ap.add_argument("--every", type=float, default=10, help="seconds between renewals")
    args = ap.parse_args()
    mg = str(Path(args.bin).resolve() / "mtlsgate")
    work = Path(tempfile.mkdtemp(prefix="mtlsgate-ca-flood-"))
    run([mg, "ca", "init", "--dir", "ca", "--device-domain", "d.bench.local"], work)
    port = free_port()
    srv_log = open(work / "ca-serve.log", "w")
    srv = subprocess.Popen([mg, "ca", "serve", "--dir", "ca", "--listen", f"127.0.0.1:{port}"], cwd=work,
                           stdout=srv_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    agent = None
    try:
        deadline = time.time() + 30
        while "listening on" not in (work / "ca-serve.log").read_text():
            if time.time() > deadline or srv.poll() is not None:
                raise SystemExit((work / "ca-serve.log").read_text())
            time.sleep(0.1)
        text = (work / "ca-serve.log").read_text()
        fp = re.search(r"root CA SHA-256 fingerprint: (\S+)", text).group(1)
        url = f"https://localhost:{port}"
        token = run([mg, "token", "create", "--server", url, "--dir", "ca"], work).strip().splitlines()[-1]
        run([mg, "agent", "enroll", "--server", url, "--token", token, "--root-fingerprint", fp,
             "--dir", "dev"], work)
        agent_log = open(work / "agent.log", "w")
        agent = subprocess.Popen([mg, "agent", "run", "--dir", "dev"], cwd=work, stdout=agent_log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "RUST_LOG": "info"})
        time.sleep(1)
        flood = Flood(port, str(work / "ca" / "ca.crt"), args.flood)
        flood.start()
        stop = threading.Event()
        probes = []
        pt = threading.Thread(target=probe, args=(port, str(work / "ca" / "ca.crt"), stop, probes), daemon=True)
        pt.start()
        renewals = []
        end = time.time() + args.minutes * 60
        print(f"== {args.minutes} min: {args.flood} flood connections from 127.0.0.2, a renewal every "
              f"{args.every:.0f} s from 127.0.0.1", flush=True)
        while time.time() < end:
            before = (work / "agent.log").read_text().count("new certificate for ")
            t0 = time.time()
            agent.send_signal(signal.SIGHUP)
            took = None
            while time.time() - t0 < 30:
                if (work / "agent.log").read_text().count("new certificate for ") > before:
                    took = time.time() - t0
                    break
                time.sleep(0.005)
            renewals.append(took)
            print(f"   renewal {len(renewals)}: {'%.0f ms' % (took * 1000) if took is not None else 'NOT within 30 s'}"
                  f" (flood: {flood.opened} opened so far)", flush=True)
            time.sleep(max(0, args.every - (time.time() - t0)))
        stop.set()
        flood.stop.set()
        ok = [r for r in renewals if r is not None]
        probe_ok = [t for t, good in probes if good]
        res = {
            "minutes": args.minutes, "flood": args.flood, "renewals": len(renewals), "renewed": len(ok),
            "renew_p50_ms": pct(ok, 50) * 1000, "renew_max_ms": max(ok) * 1000 if ok else None,
            "within_1s": sum(1 for r in ok if r <= 1.0),
            "probes": len(probes), "probes_ok": len(probe_ok),
            "probe_p50_ms": pct(probe_ok, 50) * 1000, "probe_max_ms": max(probe_ok) * 1000 if probe_ok else None,
            "flood_connections_opened": flood.opened,
            "load": Path("/proc/loadavg").read_text().split()[:3],
        }
        closed = len(re.findall(r"closing .*(deadline|timeout|idle)", (work / "ca-serve.log").read_text(), re.I))
        lines = [
            "# `ca serve` under a connection flood, beside a renewing agent", "",
            f"`bench/ca-flood --minutes {args.minutes:g} --flood {args.flood}` (release build, this machine: 2 cores; "
            f"load after {' '.join(res['load'])}). Flood from 127.0.0.2: {args.flood} connections held at once "
            "(a third silent after the TLS handshake, a third trickling a body a byte every 2 s, a third plain TCP "
            "that never starts TLS), each replaced as soon as the server closes it; "
            f"{flood.opened} flood connections were opened in all. `ca serve` runs with its defaults "
            "(first request 10 s, body 30 s, 512 connections, 256 per address).", "",
            "| figure | value |", "|---|---|",
            f"| renewals asked (SIGHUP every {args.every:g} s) | {res['renewals']} |",
            f"| renewed | {res['renewed']} |",
            f"| renewed within 1 s | {res['within_1s']} |",
            f"| SIGHUP → renewed, p50 / max | {res['renew_p50_ms']:.0f} ms / {res['renew_max_ms'] or float('nan'):.0f} ms |",
            f"| `GET /healthz` from 127.0.0.1 (new TLS connection each second): answered | {res['probes_ok']} of {res['probes']} |",
            f"| … p50 / max | {res['probe_p50_ms']:.0f} ms / {res['probe_max_ms'] or float('nan'):.0f} ms |",
            "",
        ]
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "ca-flood.md").write_text("\n".join(lines))
        (RESULTS / "ca-flood.json").write_text(json.dumps(res, indent=1) + "\n")
        print("\n".join(lines))
        if res["within_1s"] != res["renewals"]:
            raise SystemExit("some renewals took longer than 1 s or failed")
    finally:
        for p in (agent, srv):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
