#!/usr/bin/env python3
"""WebSocket client over mTLS (stdlib only):
wsclient.py [--after SECS] HOST PORT PATH CA CERT KEY [WAIT].
Performs the Upgrade handshake, sends one text frame "hello", prints the reply. With WAIT,
then stays silent and prints when the connection was closed ("closed after N.N s"), waiting
at most WAIT seconds ("still open"). With --after, first makes a plain GET of PATH on the
same connection, prints its status line, and stays quiet SECS seconds before upgrading."""
import base64, os, socket, ssl, struct, sys, time

after = None
if sys.argv[1] == "--after":
    after = float(sys.argv[2])
    del sys.argv[1:3]
host, port, path, ca, cert, key = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
f = sock.makefile("rb")
if after is not None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    print(f.readline().decode().strip())
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    f.read(length)
    time.sleep(after)
k = base64.b64encode(os.urandom(16)).decode()
sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
status = f.readline().decode().strip()
while f.readline() not in (b"\r\n", b""):
    pass
print(status)
if " 101 " not in status + " ":
    sys.exit(1)
payload = b"hello"
mask = os.urandom(4)
sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
b1, b2 = f.read(2)
n = b2 & 0x7F
print(f.read(n).decode())
if len(sys.argv) > 7:
    wait = float(sys.argv[7])
    sock.settimeout(wait)
    t = time.time()
    try:
        data = f.read(1)
    except (socket.timeout, TimeoutError):
        data = b"?"
    except OSError:
        data = b""
    print("closed after %.1f s" % (time.time() - t) if not data else "still open")
