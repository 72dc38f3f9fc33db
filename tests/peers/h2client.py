#!/usr/bin/env python3
"""A small HTTP/2 client over TLS (ALPN h2) for tests that need to send what curl will not:
duplicate Host headers, a HEADERS frame trickled byte by byte, pings and nothing else.

  h2client.py PORT MODE [--cert C --key K] --ca CA [options]
  MODE request  --header NAME:VALUE ... [--path P] [--authority A|-]
                -> {"status": 400, "body": "...", "goaway": true, "closed": true}
  MODE trickle  --delay S            (sends one GET's HEADERS frame one byte every S s)
                -> {"closed_after": 2.1, "sent": 5, "total": 40}
  MODE ping     --delay S            (a PING every S s, no request)
                -> {"closed_after": 2.0, "goaway": true}
  MODE sequence --count N --delay S --header NAME:VALUE ...
                (N GETs one after another on one connection, S s apart, each with the
                headers and `x-seq: I`; every other one sent a byte at a time)
                -> {"answers": [{"status": 200, "body": "...", "type": "..."}], "closed": false}
Prints one JSON object on stdout. One thread does all socket work (an SSL socket is not
safe to read and write at once from two threads)."""
import argparse, json, select, socket, ssl, sys, time

import h2.config
import h2.connection
import h2.events


class Client:
    def __init__(self, a):
        ctx = ssl.create_default_context(cafile=a.ca)
        ctx.set_alpn_protocols(["h2"])
        if a.cert:
            ctx.load_cert_chain(a.cert, a.key)
        raw = socket.create_connection(("127.0.0.1", a.port), timeout=30)
        self.s = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.s.selected_alpn_protocol() != "h2":
            sys.exit("the server did not choose h2")
        cfg = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.c = h2.connection.H2Connection(config=cfg)
        self.c.initiate_connection()
        self.s.sendall(self.c.data_to_send())
        self.events, self.closed_at = [], None
        self.goaway, self.raw, self.broken = False, b"", False

    def send(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            self.closed_at = self.closed_at or time.monotonic()

    def frame(self, f):
        """One whole frame: to the h2 library (until it refuses one, as it refuses frames
        after a GOAWAY, such as the PING of a graceful shutdown), and watched raw."""
        kind, flags = f[3], f[4]
        if not self.broken:
            try:
                self.events.extend(self.c.receive_data(f))
                out = self.c.data_to_send()
                if out:
                    self.send(out)
                return self.watch(kind)
            except Exception:
                self.broken = True
        if kind == 0x6 and not flags & 0x1:
            # Answer a PING ourselves once the library has stopped.
            self.send(bytes([0, 0, 8, 6, 1, 0, 0, 0, 0]) + f[9:17])
        self.watch(kind)

    def watch(self, kind):
        if kind == 0x7:
            self.goaway = True

    def pump(self, wait):
        """Reads and handles what arrives within `wait` seconds."""
        if self.closed_at:
            time.sleep(wait)
            return
        r = [self.s] if self.s.pending() else select.select([self.s], [], [], wait)[0]
        if not r:
            return
        try:
            data = self.s.recv(65536)
        except ssl.SSLWantReadError:
            return
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            self.closed_at = time.monotonic()
            return
        self.raw += data
        while len(self.raw) >= 9:
            n = int.from_bytes(self.raw[:3], "big")
            if len(self.raw) < 9 + n:
                break
            f, self.raw = self.raw[:9 + n], self.raw[9 + n:]
            self.frame(f)

    def pump_until(self, done, seconds):
        deadline = time.monotonic() + seconds
        while not done() and not self.closed_at and time.monotonic() < deadline:
            self.pump(0.05)


def request(a, cl):
    headers = [(":method", "GET"), (":scheme", "https"), (":path", a.path)]
    if a.authority:
        headers.append((":authority", a.authority))
    for h in a.header:
        n, v = h.split(":", 1)
        headers.append((n.strip().lower(), v.strip()))
    cl.c.send_headers(1, headers, end_stream=True)
    cl.send(cl.c.data_to_send())
    cl.pump_until(lambda: any(isinstance(e, h2.events.StreamEnded) for e in cl.events), 10)
    status, body = None, b""
    for e in cl.events:
        if isinstance(e, h2.events.ResponseReceived):
            status = int(dict(e.headers)[":status"])
        if isinstance(e, h2.events.DataReceived) and e.stream_id == 1:
            body += e.data
    # Then: does the server end the connection (GOAWAY, close) within 3 s?
    cl.pump_until(lambda: False, 3)
    goaway = cl.goaway or any(isinstance(e, h2.events.ConnectionTerminated) for e in cl.events)
    return {"status": status, "body": body.decode("utf-8", "replace"), "goaway": goaway,
            "closed": cl.closed_at is not None}


def trickle(a, cl):
    # Let the SETTINGS exchange finish first.
    cl.pump_until(lambda: False, 0.5)
    started = time.monotonic()
    cl.c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":path", "/"),
                          (":authority", "localhost"), ("user-agent", "slow" * 8)],
                      end_stream=True)
    frame = cl.c.data_to_send()
    sent = 0
    for b in frame:
        if cl.closed_at:
            break
        cl.send(bytes([b]))
        sent += 1
        cl.pump_until(lambda: False, a.delay)
    cl.pump_until(lambda: False, 60 - (time.monotonic() - started))
    return {"closed_after": round((cl.closed_at or time.monotonic()) - started, 2),
            "sent": sent, "total": len(frame)}


def ping(a, cl):
    started = time.monotonic()
    n = 0
    while not cl.closed_at and time.monotonic() - started < 60:
        if not cl.broken:
            try:
                cl.c.ping(n.to_bytes(8, "big"))
                cl.send(cl.c.data_to_send())
            except Exception:
                cl.broken = True
        n += 1
        cl.pump_until(lambda: False, a.delay)
    goaway = cl.goaway or any(isinstance(e, h2.events.ConnectionTerminated) for e in cl.events)
    return {"closed_after": round((cl.closed_at or time.monotonic()) - started, 2),
            "goaway": goaway, "pings": n}


def sequence(a, cl):
    answers = []
    for i in range(a.count):
        sid = 1 + 2 * i
        headers = [(":method", "GET"), (":scheme", "https"), (":path", f"{a.path}?n={i}"),
                   (":authority", "localhost")]
        for h in a.header:
            n, v = h.split(":", 1)
            headers.append((n.strip().lower(), v.strip()))
        headers.append(("x-seq", str(i)))
        cl.c.send_headers(sid, headers, end_stream=True)
        out = cl.c.data_to_send()
        if i % 2:
            # Byte by byte: the frame arrives in pieces after the connection was idle.
            for b in out:
                cl.send(bytes([b]))
                time.sleep(0.002)
        else:
            cl.send(out)
        ended = lambda: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid
                            for e in cl.events)
        cl.pump_until(ended, 10)
        status, ctype, body = None, None, b""
        for e in cl.events:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                h = dict(e.headers)
                status, ctype = int(h[":status"]), h.get("content-type")
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                body += e.data
                cl.c.acknowledge_received_data(len(e.data), sid)
        cl.send(cl.c.data_to_send())
        answers.append({"status": status, "type": ctype, "body": body.decode("utf-8", "replace")})
        cl.pump_until(lambda: False, a.delay)
    return {"answers": answers, "closed": cl.closed_at is not None}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("mode", choices=["request", "trickle", "ping", "sequence"])
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ca", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--path", default="/")
    p.add_argument("--authority", default="localhost")
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--count", type=int, default=3)
    a = p.parse_args()
    if a.authority == "-":
        a.authority = None
    cl = Client(a)
    res = {"request": request, "trickle": trickle, "ping": ping, "sequence": sequence}[a.mode](a, cl)
    print(json.dumps(res), flush=True)


main()
