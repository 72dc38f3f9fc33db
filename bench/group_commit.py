#!/usr/bin/env python3
"""What group commit would save a SQLite CA: a renewal's writes (the statements
`mtlsgate ca serve` runs for one, on a copy of a real inventory) committed one renewal per
transaction, then several per transaction, counting the write-ahead log's frames (pages
written) and this process's CPU time per renewal. Python's sqlite3 drives SQLite directly,
so the CPU figure is SQLite's own work without sqlx's hand-offs.

    python3 bench/group_commit.py DIR/inventory.db [--renewals 1200] [--groups 1,4,16,64]

The inventory needs active devices with certificates: after `bench/fleet` (it keeps
nothing) or a `mtlsgate-fleet-load lifecycle` run against `ca serve --dir DIR`. The file
given is copied and left as it was."""

import argparse
import os
import random
import shutil
import sqlite3
import tempfile
import time

FRAME = 4096 + 24  # a page and its frame header (the inventory's pages are 4 KiB)


def run(src, group, n, work):
    db = os.path.join(work, f"group{group}.db")
    shutil.copy(src, db)
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    devices = c.execute(
        "SELECT id, cert_serial FROM devices WHERE status = 'active' AND cert_serial IS NOT NULL"
    ).fetchall()
    if len(devices) < n:
        raise SystemExit(f"{src} has {len(devices)} active devices with a certificate; --renewals {n} needs as many")
    rng = random.Random(1)
    rng.shuffle(devices)
    now = 1_900_000_000
    t0 = time.process_time()
    for i in range(0, n, group):
        c.execute("BEGIN IMMEDIATE")
        for device, serial in devices[i:i + group]:
            new = "%032X" % rng.getrandbits(128)
            c.execute(
                """UPDATE devices SET prev_serial = cert_serial, cert_serial = ?, cert_not_after = ?,
                   last_seen = ?, last_addr = COALESCE(?, last_addr), agent_version = COALESCE(?, agent_version)
                   WHERE id = ? AND status = 'active' AND cert_serial = ? RETURNING id""",
                (new, now + 86400, now, "127.0.0.1:1", "bench", device, serial)).fetchall()
            c.execute("UPDATE recovery SET replaced_at = ? WHERE device_id = ? AND replaced_at IS NULL",
                      (now, device))
            c.execute("INSERT INTO recovery (hash, device_id, issued_at, expires_at) VALUES (?, ?, ?, ?)",
                      ("%064x" % rng.getrandbits(256), device, now, now + 90 * 86400))
            c.execute("""INSERT INTO certificates (serial, kind, subject, device_id, not_before, not_after,
                         sha256, issued_at, der) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                      (new, "client", "CN=" + device, device, now, now + 86400,
                       "%064x" % rng.getrandbits(256), now, rng.randbytes(520)))
            c.execute("INSERT INTO audit (at, actor, action, device_id, serial, detail) VALUES (?, ?, ?, ?, ?, ?)",
                      (now, "mtlsgate", "renew", device, new, "renewed with " + serial))
            now += 1
        c.execute("COMMIT")
    cpu = time.process_time() - t0
    frames = (os.path.getsize(db + "-wal") - 32) // FRAME
    c.close()
    print(f"{group:4d} per commit: {frames / n:5.1f} log pages per renewal, "
          f"{1e6 * cpu / n:5.0f} µs of CPU per renewal")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inventory")
    ap.add_argument("--renewals", type=int, default=1200)
    ap.add_argument("--groups", default="1,4,16,64")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtlsgate-group-commit-") as work:
        for g in (int(x) for x in a.groups.split(",")):
            run(a.inventory, g, a.renewals, work)


if __name__ == "__main__":
    main()
