#!/usr/bin/env python3
"""A small HTTP/2 client over TLS (ALPN h2) for tests that need to send what curl will not:
duplicate Host headers, a HEADERS frame trickled byte by byte, pings and nothing else.

  h2client.py PORT MODE [--cert C --key K] --ca CA [options]
  MODE request  --header NAME:VALUE ... [--path P] [--authority A]
                -> {"status": 400, "body": "...", "goaway": true, "closed": true}
  MODE trickle  --delay S            (sends one GET's HEADERS frame one byte every S s)
                -> {"closed_after": 2.1, "sent": 5, "total": 40}
  MODE ping     --delay S            (a PING every S s, no request)
                -> {"closed_after": 2.0, "goaway": true}
Prints one JSON object on stdout."""
import argparse, json, socket, ssl, sys, threading, time

import h2.config
import h2.connection
import h2.events


def connect(a):
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.set_alpn_protocols(["h2"])
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    if s.selected_alpn_protocol() != "h2":
        sys.exit("the server did not choose h2")
    cfg = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


class Reader(threading.Thread):
    """Reads until the server closes; records events, whether a GOAWAY frame arrived (seen
    on the raw frames, since the h2 library refuses frames after a GOAWAY, such as the
    PING of a graceful shutdown) and when the socket closed."""

    def __init__(self, s, c):
        super().__init__(daemon=True)
        self.s, self.c = s, c
        self.events, self.closed_at, self.lock = [], None, threading.Lock()
        self.goaway, self.raw, self.broken = False, b"", False

    def frames(self, data):
        self.raw += data
        while len(self.raw) >= 9:
            n = int.from_bytes(self.raw[:3], "big")
            if len(self.raw) < 9 + n:
                return
            kind, flags = self.raw[3], self.raw[4]
            if kind == 0x7:
                self.goaway = True
            if self.broken and kind == 0x6 and not flags & 0x1:
                # Answer the PING of a graceful shutdown ourselves.
                self.s.sendall(bytes([0, 0, 8, 6, 1, 0, 0, 0, 0]) + self.raw[9:17])
            self.raw = self.raw[9 + n:]

    def run(self):
        while True:
            try:
                data = self.s.recv(65536)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.closed_at = time.monotonic()
                return
            with self.lock:
                if not self.broken:
                    try:
                        self.events.extend(self.c.receive_data(data))
                        out = self.c.data_to_send()
                        if out:
                            self.s.sendall(out)
                    except Exception:  # frames after GOAWAY: read raw frames from now on
                        self.broken = True
                self.frames(data)


def request(a, s, c, r):
    headers = [(":method", "GET"), (":scheme", "https"), (":path", a.path)]
    if a.authority:
        headers.append((":authority", a.authority))
    for h in a.header:
        n, v = h.split(":", 1)
        headers.append((n.strip().lower(), v.strip()))
    with r.lock:
        c.send_headers(1, headers, end_stream=True)
        s.sendall(c.data_to_send())
    deadline = time.monotonic() + 10
    status, body = None, b""
    while time.monotonic() < deadline:
        with r.lock:
            for e in r.events:
                if isinstance(e, h2.events.ResponseReceived):
                    status = int(dict(e.headers)[":status"])
                if isinstance(e, h2.events.DataReceived) and e.stream_id == 1:
                    body += e.data
            ended = any(isinstance(e, h2.events.StreamEnded) for e in r.events)
        if ended or r.closed_at:
            break
        time.sleep(0.02)
    # Then: does the server end the connection (GOAWAY, close) within 3 s?
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not r.closed_at:
        time.sleep(0.05)
    goaway = r.goaway or any(isinstance(e, h2.events.ConnectionTerminated) for e in r.events)
    return {"status": status, "body": body.decode("utf-8", "replace"), "goaway": goaway,
            "closed": r.closed_at is not None}


def trickle(a, s, c, r, started):
    # Let the SETTINGS exchange finish first: the reader's replies must not land inside the
    # frame being trickled.
    time.sleep(0.5)
    started = time.monotonic()
    with r.lock:
        c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":path", "/"),
                           (":authority", "localhost"), ("user-agent", "slow" * 8)],
                       end_stream=True)
        frame = c.data_to_send()
    sent = 0
    for b in frame:
        if r.closed_at:
            break
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        sent += 1
        time.sleep(a.delay)
    while not r.closed_at and time.monotonic() - started < 60:
        time.sleep(0.05)
    return {"closed_after": round((r.closed_at or time.monotonic()) - started, 2),
            "sent": sent, "total": len(frame)}


def ping(a, s, c, r, started):
    n = 0
    while not r.closed_at and time.monotonic() - started < 60:
        with r.lock:
            try:
                c.ping(n.to_bytes(8, "big"))
                s.sendall(c.data_to_send())
            except Exception:
                break
        n += 1
        time.sleep(a.delay)
    while not r.closed_at and time.monotonic() - started < 60:
        time.sleep(0.05)
    goaway = r.goaway or any(isinstance(e, h2.events.ConnectionTerminated) for e in r.events)
    return {"closed_after": round((r.closed_at or time.monotonic()) - started, 2),
            "goaway": goaway, "pings": n}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("mode", choices=["request", "trickle", "ping"])
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ca", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--path", default="/")
    p.add_argument("--authority", default="localhost")
    p.add_argument("--delay", type=float, default=1.0)
    a = p.parse_args()
    if a.authority == "-":
        a.authority = None
    s, c = connect(a)
    started = time.monotonic()
    r = Reader(s, c)
    r.start()
    out = {"request": request, "trickle": trickle, "ping": ping}[a.mode]
    res = out(a, s, c, r) if a.mode == "request" else out(a, s, c, r, started)
    print(json.dumps(res), flush=True)


main()
