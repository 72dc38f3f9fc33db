#!/usr/bin/env python3
"""The fleet dashboard's operations end to end, in a real headless Chromium (Selenium +
Debian's chromium), against the built binary and a real gateway:

a. revoke a device from its page while `mtlsgate serve --inventory` (on the same
   inventory) lets the device's certificate through: the gateway refuses a new request
   soon after (the time from the click to the first refusal is printed; the test only
   asserts that the refusal comes, within a generous 10 s);
b. filter (status, tag) and sort by certificate expiry on the devices list: the query
   string keeps them, and the table's order is the certificates' notAfter order (read
   from the devices' certificate files with openssl);
c. export CSV for that filter and compare it, row by row, with `devices list --json`;
d. a POST without the session, or with a wrong form token, changes nothing (the status
   in `devices list --json` stays), a CSV without the session is not given; the same POST
   with the session's token does change it (so the checks can fail);
e. axe-core on every page visited, and every page visited again at 390x844 (a phone):
   no horizontal overflow, axe-core again.

Usage: fleet_ops.py BINARY [--database postgres://…]   (tests/browser/run runs it after
dashboard.py, once on SQLite and, when MTLSGATE_TEST_POSTGRES is set, once on a fresh
PostgreSQL database). Exits non-zero on the first failure.
"""

import argparse
import calendar
import csv
from http import client as httpc
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dashboard import World, axe_here, browser, free_port, http, until, wait_port  # noqa: E402

# Devices: (name, tag, certificate lifetime). Distinct lifetimes give distinct notAfters;
# the gateway's device expires first but is filtered out by its tag.
FLEET = (("cam-1", "cameras", "6h"), ("cam-2", "cameras", "2h"), ("cam-3", "cameras", "3d"),
         ("cam-4", "cameras", "12h"), ("gw-1", "gateways", "1h"))
REFUSAL_DEADLINE = 10.0


def not_after(path):
    """A certificate file's notAfter, as a Unix time (openssl, not the inventory)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", path],
                         capture_output=True, text=True, check=True).stdout.strip()
    # notAfter=2026-12-05 20:46:12Z
    return calendar.timegm(time.strptime(out.split("=", 1)[1], "%Y-%m-%d %H:%M:%SZ"))


class Device:
    """A device's client: one new TLS connection per request, with the agent's files."""

    def __init__(self, work, name, port):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=os.path.join(work, name, "ca.crt"))
        self.ctx.load_cert_chain(os.path.join(work, name, "client.crt"), os.path.join(work, name, "client.key"))

    def get(self):
        """(status, body) of GET / through the gateway; (None, error) if the connection fails."""
        c = httpc.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=5)
        try:
            c.request("GET", "/")
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        except (OSError, httpc.HTTPException) as e:
            return None, str(e)
        finally:
            c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--database", help="keep the inventory in this (empty) PostgreSQL database")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    work = tempfile.mkdtemp(prefix="mtlsgate-fleet-ops-")
    w = World(binary, work)
    home = os.path.join(work, "home")
    os.makedirs(home)
    ca_port, dash_port, gate_port, up_port = free_port(), free_port(), free_port(), free_port()
    base = f"http://localhost:{dash_port}"
    ca_url = f"https://localhost:{ca_port}"
    where = "PostgreSQL" if a.database else "SQLite"
    d = None
    visited = []
    step = "start"

    def visit(url):
        d.get(url)
        visited.append(url)
        res = axe_here(d)
        assert res == [], f"axe-core on {url}: {res}"

    def device_status(id):
        return {x["id"]: x["status"] for x in w.devices()}[id]

    try:
        w.mg("ca", "init", "--dir", "ca", *(["--database", a.database] if a.database else []))
        server = w.spawn("ca", "serve", "--dir", "ca", "--listen", f"127.0.0.1:{ca_port}",
                         "--dashboard-listen", f"127.0.0.1:{dash_port}", out="serve.log")
        wait_port(ca_port)
        wait_port(dash_port)

        step = "devices enroll"
        ids = {}
        for name, tag, life in FLEET:
            tok = w.mg("token", "create", "--dir", "ca", "--device-id", name, "--tag", tag,
                       "--lifetime", life).stdout.strip().splitlines()[-1]
            w.mg("agent", "enroll", "--server", ca_url, "--ca-file", "ca/ca.crt", "--dir", name, "--token", tok)
            ids[name] = w.mg("agent", "whoami", "--dir", name).stdout.strip()

        step = "a gateway on the inventory"
        w.mg("cert", "issue", "server", "localhost", "--dir", "ca", "--out", ".")
        up = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(up_port)],
                              cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w.procs.append(up)
        gate = w.spawn("serve", "--listen", f"127.0.0.1:{gate_port}", "--cert", "localhost.crt",
                       "--key", "localhost.key", "--client-ca", "ca/ca.crt",
                       "--upstream", f"http://127.0.0.1:{up_port}",
                       "--inventory", a.database or "ca", out="gate.log")
        wait_port(up_port)
        wait_port(gate_port)
        cam2 = Device(work, "cam-2", gate_port)
        cam1 = Device(work, "cam-1", gate_port)
        # The gateway lets both in once it has read the inventory (503 until then).
        until("the gateway to let cam-2 in", lambda: cam2.get()[0] == 200)
        assert cam1.get()[0] == 200

        step = "sign in"
        d = browser(home)
        link = w.mg("admin", "login-link", "--dir", "ca", "--user", "ops", "--url", base).stdout.strip().splitlines()[-1]
        d.get(link)
        visited.append(base + "/login")
        d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        until("the overview", lambda: d.current_url == base + "/")
        session = d.get_cookie("__Host-mtlsgate_session")["value"]
        cookie = {"Cookie": f"__Host-mtlsgate_session={session}"}
        visit(base + "/")
        visit(base + "/pending")

        step = "(a) revoke from the device page; the gateway refuses the device"
        visit(f"{base}/devices/{ids['cam-2']}")
        d.find_element(By.ID, "reason").send_keys("lost in transit")
        button = d.find_element(By.XPATH, "//button[starts-with(text(), 'Revoke')]")
        clicked = time.monotonic()
        button.click()
        refused_after, last = None, None
        while time.monotonic() - clicked < REFUSAL_DEADLINE:
            last = cam2.get()
            if last[0] == 403:
                refused_after = time.monotonic() - clicked
                break
            time.sleep(0.01)
        assert refused_after is not None, f"the gateway still lets the revoked device in after {REFUSAL_DEADLINE:.0f} s: {last}"
        assert f"device {ids['cam-2']} is revoked" in last[1], last
        print(f"[{where}] the gateway refused the revoked device {refused_after * 1000:.0f} ms after the Revoke click"
              f"{'' if refused_after <= 1.0 else ' (MORE THAN A SECOND)'}", flush=True)
        until("the revoked status on the page", lambda: "revoked" in d.find_element(By.CSS_SELECTOR, ".ident").text)
        visited.append(d.current_url)
        assert device_status(ids["cam-2"]) == "revoked"
        # The other device is still let in: the refusal is the revocation's, not the gateway's.
        assert cam1.get()[0] == 200

        step = "(b) filter and sort by certificate expiry"
        visit(base + "/devices?status=active")
        d.find_element(By.NAME, "tag").send_keys("cameras")
        Select(d.find_element(By.NAME, "sort")).select_by_value("expires")
        Select(d.find_element(By.NAME, "dir")).select_by_value("asc")
        d.find_element(By.XPATH, "//form[@class='filters']//button").click()
        until("the filtered list", lambda: "sort=expires" in d.current_url)
        q = urllib.parse.parse_qs(urllib.parse.urlparse(d.current_url).query)
        assert (q.get("status"), q.get("tag"), q.get("sort"), q.get("dir")) == (["active"], ["cameras"], ["expires"], ["asc"]), q
        visit(d.current_url)
        shown = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#devices tbody td:nth-child(2) a")]
        cams = [n for n, tag, _ in FLEET if tag == "cameras" and n != "cam-2"]
        by_expiry = sorted(cams, key=lambda n: not_after(os.path.join(work, n, "client.crt")))
        assert shown == [ids[n] for n in by_expiry], (shown, by_expiry)
        # The lifetimes differ, so this order is not the IDs' order (the check can fail).
        assert by_expiry != sorted(cams), by_expiry
        # A reload keeps filter and order, the form shows them, and descending reverses it.
        d.refresh()
        assert d.find_element(By.NAME, "tag").get_attribute("value") == "cameras"
        assert Select(d.find_element(By.NAME, "sort")).first_selected_option.get_attribute("value") == "expires"
        desc = d.current_url.replace("dir=asc", "dir=desc")
        visit(desc)
        shown_desc = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#devices tbody td:nth-child(2) a")]
        assert shown_desc == list(reversed(shown)), (shown_desc, shown)
        # The pager and the CSV link keep the filter too.
        d.get(base + "/devices?" + urllib.parse.urlencode({"status": "active", "tag": "cameras", "sort": "expires", "dir": "asc"}))
        href = d.find_element(By.LINK_TEXT, "Export CSV").get_attribute("href")
        hq = urllib.parse.parse_qs(urllib.parse.urlparse(href).query)
        assert (hq.get("status"), hq.get("tag"), hq.get("sort"), hq.get("dir")) == (["active"], ["cameras"], ["expires"], ["asc"]), href

        step = "(c) CSV export against devices list --json"
        code, body = http(href, headers=cookie)
        assert code == 200, (code, body[:200])
        rows = list(csv.DictReader(io.StringIO(body)))
        listed = json.loads(w.mg("devices", "list", "--dir", "ca", "--json", "--status", "active",
                                 "--tag", "cameras").stdout)
        assert len(rows) == len(listed) == len(cams), (rows, listed)
        assert [r["id"] for r in rows] == shown, "the CSV's order differs from the table's"
        # The table's serial column is each device's current certificate.
        serials = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#devices tbody td.serial")]
        current = {x["id"]: x["cert_serial"] for x in listed}
        assert serials == [current[i] for i in shown], (serials, current)
        by_id = {x["id"]: x for x in listed}
        num = lambda v: "" if v is None else str(v)  # noqa: E731
        for r in rows:
            j = by_id.pop(r["id"])
            assert r["status"] == j["status"] == "active", (r, j)
            assert r["tags"] == ";".join(j["tags"]), (r, j)
            for k in ("first_seen", "last_seen", "cert_not_after"):
                assert r[k] == num(j[k]), (k, r, j)
            for k in ("last_addr", "agent_version", "cert_serial"):
                assert r[k] == (j[k] or ""), (k, r, j)
            assert int(r["cert_not_after"]) == not_after(os.path.join(work, r["id"].split(".")[0], "client.crt")), r
        assert not by_id, f"devices list --json has devices the CSV lacks: {list(by_id)}"

        step = "(d) requests without the session or with a wrong form token change nothing"
        target = ids["cam-1"]
        d.get(f"{base}/devices/{target}")
        csrf = d.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")
        url = f"{base}/devices/{target}/revoke"
        form = {"csrf": csrf, "reason": "should not happen"}
        for what, data, headers in (
            ("no session", form, {"Origin": base}),
            ("wrong form token", {**form, "csrf": "f" * len(csrf)}, {**cookie, "Origin": base}),
            ("a form token of another length", {**form, "csrf": csrf[:-1]}, {**cookie, "Origin": base}),
        ):
            code, _ = http(url, data, headers)
            assert code == 403, (what, code)
            assert device_status(target) == "active", f"{what}: the device's status changed"
            assert cam1.get()[0] == 200, f"{what}: the gateway refuses the device"
        code, body = http(href)
        assert not body.startswith("id,status"), "the CSV needs a session"
        code, body = http(base + "/devices?status=active", headers={"Origin": base})
        assert "<h1>Sign in</h1>" in body, "the list needs a session"
        # The same POST with the session's token does revoke (the checks above can fail).
        code, _ = http(url, form, {**cookie, "Origin": base})
        assert code in (200, 303), code
        assert device_status(target) == "revoked"

        step = "(e) every page visited, at a phone's width"
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        for url in dict.fromkeys(visited):
            d.get(url)
            vw = d.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
            assert vw == [390, 390], f"{url}: layout {vw} at 390 px (horizontal overflow)"
            res = axe_here(d)
            assert res == [], f"axe-core at 390 px on {url}: {res}"
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        step = "stop"
        for p in (gate, server):
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=30) == 0, f"exit {p.returncode}"
        print(f"PASS fleet operations browser test ({where}; {len(dict.fromkeys(visited))} pages checked)")
        return 0
    except Exception as e:  # noqa: BLE001 - report the step, then fail
        print(f"FAIL fleet operations browser test ({where}) at step '{step}': {e}", file=sys.stderr)
        for log in ("serve.log", "gate.log"):
            p = os.path.join(work, log)
            if os.path.exists(p):
                print(f"--- {log} (tail)", file=sys.stderr)
                print("".join(open(p).readlines()[-30:]), file=sys.stderr)
        return 1
    finally:
        if d is not None:
            d.quit()
        for p in w.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    sys.exit(main())
