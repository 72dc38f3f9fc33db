#!/usr/bin/env python3
"""Enrollments racing against `mtlsgate ca serve`, as many devices at once would send them.

usage: enroll_burst.py URL CAFILE THREADS INPUT OUTPUT

Each line of INPUT is the JSON body of one `POST /v1/enroll` ({"csr": PEM, "token": …}).
They are sent THREADS at a time, each on a new HTTPS connection (as an agent does),
trusting the CA certificates in CAFILE. Every answer is appended to OUTPUT as soon as it
arrives, one JSON line each and flushed, so that a test can watch the count grow:
{"status": 201, "body": {...}} or, when no HTTP answer came, {"status": 0, "error": "..."}.
"""
import concurrent.futures
import http.client
import json
import ssl
import sys
import threading
import urllib.parse


def main():
    url, cafile, threads, inp, out = sys.argv[1:6]
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=cafile)
    bodies = [line for line in open(inp, encoding="utf-8").read().splitlines() if line.strip()]
    lock = threading.Lock()
    sink = open(out, "a", encoding="utf-8")

    def one(body):
        try:
            c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=120)
            c.request("POST", "/v1/enroll", body=body.encode(), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            c.close()
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = data.decode("utf-8", "replace")
            line = {"status": r.status, "body": parsed}
        except Exception as e:  # the server was killed, or refused the connection
            line = {"status": 0, "error": str(e)}
        with lock:
            sink.write(json.dumps(line) + "\n")
            sink.flush()

    with concurrent.futures.ThreadPoolExecutor(max_workers=int(threads)) as pool:
        list(pool.map(one, bodies))
    sink.close()


if __name__ == "__main__":
    main()
