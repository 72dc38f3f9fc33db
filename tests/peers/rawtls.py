#!/usr/bin/env python3
"""Sends exact bytes over TLS (ALPN http/1.1) and reports what came back, for requests that
curl will not send (no Host, two Host headers) and for trickled request heads.

  rawtls.py PORT --ca CA [--cert C --key K] --send 'GET / HTTP/1.1\\r\\n\\r\\n' [--delay S]
With --delay, the bytes go one at a time, S seconds apart, until the server closes.
Prints {"response": "...", "closed_after": secs, "sent": n, "total": n} on stdout."""
import argparse, json, socket, ssl, threading, time

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("--ca", required=True)
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--send", required=True)
p.add_argument("--delay", type=float, default=0.0)
a = p.parse_args()

ctx = ssl.create_default_context(cafile=a.ca)
ctx.set_alpn_protocols(["http/1.1"])
if a.cert:
    ctx.load_cert_chain(a.cert, a.key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", a.port), timeout=60),
                    server_hostname="localhost")
data = a.send.encode().decode("unicode_escape").encode("latin-1")
got, closed = [], []


def reader():
    while True:
        try:
            chunk = s.recv(65536)
        except (OSError, ssl.SSLError):
            chunk = b""
        if not chunk:
            closed.append(time.monotonic())
            return
        got.append(chunk)


threading.Thread(target=reader, daemon=True).start()
started = time.monotonic()
sent = 0
if a.delay:
    for b in data:
        if closed:
            break
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        sent += 1
        time.sleep(a.delay)
else:
    s.sendall(data)
    sent = len(data)
while not closed and time.monotonic() - started < 60:
    time.sleep(0.02)
print(json.dumps({
    "response": b"".join(got).decode("utf-8", "replace"),
    "closed_after": round((closed[0] if closed else time.monotonic()) - started, 2),
    "sent": sent,
    "total": len(data),
}), flush=True)
