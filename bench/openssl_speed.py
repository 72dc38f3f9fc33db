"""The public-key speed of one core, from `openssl speed`: the ceiling against which the
benchmarks (bench.py, fleet.py) set the gateway's and the CA server's figures."""

import re
import subprocess


def ecdsa_x25519_per_s(cpu, seconds):
    """(ECDSA P-256 signs/s, ECDSA P-256 verifications/s, X25519 operations/s) on `cpu`."""
    out = subprocess.run(["taskset", "-c", cpu, "openssl", "speed", "-seconds", str(seconds), "ecdsap256",
                          "ecdhx25519"], capture_output=True, text=True).stdout
    sign = verify = ecdh = None
    for line in out.splitlines():
        m = re.match(r"\s*256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            sign, verify = float(m.group(1)), float(m.group(2))
        m = re.match(r"\s*253 bits ecdh \(X25519\)\s+\S+s\s+([\d.]+)", line)
        if m:
            ecdh = float(m.group(1))
    if not (sign and verify and ecdh):
        raise SystemExit(f"cannot read `openssl speed` output:\n{out}")
    return sign, verify, ecdh
