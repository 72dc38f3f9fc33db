#!/usr/bin/env python3
"""Test upstream: answers every request with JSON describing what it received (method,
path, headers), so tests can see exactly what the gateway forwarded. Also:
  /slow?s=N   waits N seconds before answering
  /ws         a WebSocket echo server (RFC 6455, text frames)
  /both-lengths  answers with Content-Length AND Transfer-Encoding: chunked (a broken
              upstream, RFC 9112 section 6.3: the length must be ignored)
  /switch     answers 101 Switching Protocols to a request that asked for no upgrade
Prints its port on the first line of stdout."""
import base64, hashlib, json, socket, struct, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

def recv_exact(f, n):
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def read_frame(f):
    b1, b2 = recv_exact(f, 2)
    opcode = b1 & 0x0F
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack(">H", recv_exact(f, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", recv_exact(f, 8))[0]
    mask = recv_exact(f, 4) if b2 & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(recv_exact(f, n)))
    return opcode, payload

def frame(opcode, payload):
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_any(self):
        url = urlparse(self.path)
        if url.path.endswith("/ws") and self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            while True:
                try:
                    op, data = read_frame(self.rfile)
                except EOFError:
                    break
                if op == 8:
                    self.wfile.write(frame(8, b""))
                    self.wfile.flush()
                    break
                self.wfile.write(frame(1, b"echo: " + data))
                self.wfile.flush()
            self.close_connection = True
            return
        if url.path.endswith("/both-lengths"):
            body = b"chunked body wins"
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            self.wfile.flush()
            self.close_connection = True
            return
        if url.path.endswith("/switch"):
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            return
        if url.path.endswith("/slow"):
            time.sleep(float(parse_qs(url.query).get("s", ["3"])[0]))
        n = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(n) if n else b""
        body = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body_in.decode("utf-8", "replace"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_any

srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
