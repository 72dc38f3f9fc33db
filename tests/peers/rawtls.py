#!/usr/bin/env python3
"""Sends exact bytes over TLS (ALPN http/1.1) and reports what came back, for requests that
curl will not send (no Host, two Host headers) and for trickled request heads.

  rawtls.py PORT --ca CA [--cert C --key K] --send 'GET / HTTP/1.1\\r\\n\\r\\n' [--delay S]
            [--wait S]
With --delay, the bytes go one at a time, S seconds apart, until the server closes; with
--wait, nothing is sent for S seconds after the handshake (--send '' sends nothing at all).
Prints {"response": "...", "closed_after": secs, "sent": n, "total": n} on stdout.
One thread does all socket work (an SSL socket is not safe to read and write at once from
two threads)."""
import argparse, json, select, socket, ssl, time

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("--ca", required=True)
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--send", required=True)
p.add_argument("--delay", type=float, default=0.0)
p.add_argument("--wait", type=float, default=0.0)
a = p.parse_args()

ctx = ssl.create_default_context(cafile=a.ca)
ctx.set_alpn_protocols(["http/1.1"])
if a.cert:
    ctx.load_cert_chain(a.cert, a.key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", a.port), timeout=60),
                    server_hostname="localhost")
# Reads must not wait: a record with no application data (a session ticket) would otherwise
# hold recv() until the server sends or closes, and nothing more would be sent meanwhile.
s.setblocking(False)
data = a.send.encode().decode("unicode_escape").encode("latin-1")
got, closed = [], None
started = time.monotonic()
sent, next_send = 0, started + a.wait


def read_some(wait):
    """Reads what is there within `wait` seconds; returns False once the server closed."""
    r, _, _ = select.select([s], [], [], wait) if not s.pending() else ([s], [], [])
    if not r:
        return True
    try:
        chunk = s.recv(65536)
    except ssl.SSLWantReadError:
        return True
    except (OSError, ssl.SSLError):
        chunk = b""
    if not chunk:
        return False
    got.append(chunk)
    return True


while time.monotonic() - started < 60:
    now = time.monotonic()
    if sent < len(data) and now >= next_send:
        n = 1 if a.delay else len(data)
        try:
            s.sendall(data[sent:sent + n])
        except OSError:
            closed = now
            break
        sent += n
        next_send = now + a.delay
    wait = max(0.0, next_send - time.monotonic()) if sent < len(data) else 0.2
    if not read_some(min(wait, 0.2)):
        closed = time.monotonic()
        break
print(json.dumps({
    "response": b"".join(got).decode("utf-8", "replace"),
    "closed_after": round((closed or time.monotonic()) - started, 2),
    "sent": sent,
    "total": len(data),
}), flush=True)
