#!/usr/bin/env python3
"""Holds one kept-alive HTTP/1.1 connection over mTLS and reports when the server closes it.

  keepalive.py PORT --ca CA --cert C --key K [--wait S]
Sends `GET /` and prints the status code of the answer (one line, e.g. `200`), then waits
up to S seconds (default 30) for the server to close the connection, and prints `closed`
(the server closed it) or `open` (it was still open after S seconds, or sent more bytes)."""
import argparse, socket, ssl, sys

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("--ca", required=True)
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--wait", type=float, default=30.0)
a = p.parse_args()

ctx = ssl.create_default_context(cafile=a.ca)
ctx.load_cert_chain(a.cert, a.key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", a.port)), server_hostname="localhost")
s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
d = b""
while b"\r\n\r\n" not in d:
    chunk = s.recv(65536)
    if not chunk:
        print("closed before answering", flush=True)
        sys.exit(1)
    d += chunk
head, _, body = d.partition(b"\r\n\r\n")
lines = head.split(b"\r\n")
n = int(next((l.split(b":")[1] for l in lines if l.lower().startswith(b"content-length")), b"0"))
while len(body) < n:
    body += s.recv(65536)
print(lines[0].split(b" ")[1].decode(), flush=True)

s.settimeout(a.wait)
try:
    r = s.recv(10)
except socket.timeout:
    r = b"?"
except OSError:
    r = b""
print("closed" if r == b"" else "open", flush=True)
