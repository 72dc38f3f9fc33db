#!/usr/bin/env python3
"""A TCP backend for tunnel tests. Prints its port on the first line of stdout.

  tcpbackend.py echo        echoes what it receives
  tcpbackend.py eof-reply   reads until the client half-closes, then answers
                            "got N bytes" and closes (shows half-close passes through)
  tcpbackend.py proxy       expects a PROXY protocol v2 header first, answers with a JSON
                            line describing it, then echoes"""
import json, socket, sys, threading


def recv_exact(c, n):
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def parse_proxy_v2(c):
    head = recv_exact(c, 16)
    if head[:12] != b"\r\n\r\n\0\r\nQUIT\n":
        return {"error": "no PROXY v2 signature"}
    fam, n = head[13], int.from_bytes(head[14:16], "big")
    body = recv_exact(c, n)
    out = {"version_command": head[12], "family": fam}
    if fam == 0x11:
        out["src"] = socket.inet_ntop(socket.AF_INET, body[0:4])
        out["dst"] = socket.inet_ntop(socket.AF_INET, body[4:8])
        out["src_port"] = int.from_bytes(body[8:10], "big")
        out["dst_port"] = int.from_bytes(body[10:12], "big")
        rest = body[12:]
    else:
        out["src"] = socket.inet_ntop(socket.AF_INET6, body[0:16])
        out["dst"] = socket.inet_ntop(socket.AF_INET6, body[16:32])
        out["src_port"] = int.from_bytes(body[32:34], "big")
        out["dst_port"] = int.from_bytes(body[34:36], "big")
        rest = body[36:]
    while len(rest) >= 3:
        t, ln = rest[0], int.from_bytes(rest[1:3], "big")
        v, rest = rest[3:3 + ln], rest[3 + ln:]
        if t == 0x20:
            out["ssl_client"], out["ssl_verify"] = v[0], int.from_bytes(v[1:5], "big")
            sub = v[5:]
            while len(sub) >= 3:
                st, sl = sub[0], int.from_bytes(sub[1:3], "big")
                sv, sub = sub[3:3 + sl], sub[3 + sl:]
                if st == 0x21:
                    out["ssl_version"] = sv.decode()
                if st == 0x22:
                    out["ssl_cn"] = sv.decode()
    return out


def handle(c, mode):
    try:
        if mode == "proxy":
            c.sendall((json.dumps(parse_proxy_v2(c)) + "\n").encode())
            mode = "echo"
        if mode == "echo":
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        elif mode == "eof-reply":
            n = 0
            while True:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
            c.sendall(f"got {n} bytes\n".encode())
    except (EOFError, OSError):
        pass
    finally:
        c.close()


mode = sys.argv[1]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(1024)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c, mode), daemon=True).start()
