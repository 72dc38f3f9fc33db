#!/usr/bin/env python3
"""Clients that try to hold a server's connections, for `ca serve`'s deadlines and caps.

  slowclients.py PORT body --ca CA --delay S
      A POST head at once, then its body (Content-Length 1000) one byte every S seconds.
      -> {"closed_after": secs since the head, "sent": body bytes sent}
  slowclients.py PORT hold --ca CA --count N --source IP
      Opens N TLS connections from IP, finishes each handshake, sends nothing; prints
      "holding OPENED" on stderr once all were tried, then holds them until stdin closes
      (or 60 s). -> {"opened": handshakes done, "refused": connections the server closed}
Prints one JSON object on stdout."""
import argparse, json, select, socket, ssl, sys, time

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("mode", choices=["body", "hold"])
p.add_argument("--ca", required=True)
p.add_argument("--delay", type=float, default=1.0)
p.add_argument("--count", type=int, default=1)
p.add_argument("--source", default="127.0.0.1")
a = p.parse_args()

ctx = ssl.create_default_context(cafile=a.ca)
ctx.set_alpn_protocols(["http/1.1"])


def connect(source="127.0.0.1"):
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=2,
                                   source_address=(source, 0))
    return ctx.wrap_socket(raw, server_hostname="localhost")


def closed(s, wait):
    """Whether the server closed `s` (read within `wait` seconds)."""
    r = [s] if s.pending() else select.select([s], [], [], wait)[0]
    if not r:
        return False
    try:
        return s.recv(65536) == b""
    except (ssl.SSLWantReadError, TimeoutError):
        # Only TLS records without data (session tickets) came.
        return False
    except (OSError, ssl.SSLError):
        return True


if a.mode == "body":
    s = connect()
    s.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n")
    started, sent, end = time.monotonic(), 0, None
    while time.monotonic() - started < 60 and sent < 1000:
        try:
            s.sendall(b"{")
        except OSError:
            end = time.monotonic()
            break
        sent += 1
        if closed(s, a.delay):
            end = time.monotonic()
            break
    print(json.dumps({"closed_after": round((end or time.monotonic()) - started, 2),
                      "sent": sent}), flush=True)
else:
    held, refused = [], 0
    for _ in range(a.count):
        try:
            held.append(connect(a.source))
        except (OSError, ssl.SSLError):
            refused += 1
    # A connection the server closed at once (a cap) shows as closed when read.
    opened = 0
    for s in held:
        if closed(s, 0.05):
            refused += 1
        else:
            opened += 1
    print(f"holding {opened}", file=sys.stderr, flush=True)
    select.select([sys.stdin], [], [], 60)
    print(json.dumps({"opened": opened, "refused": refused}), flush=True)
