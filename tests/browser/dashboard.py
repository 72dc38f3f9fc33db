#!/usr/bin/env python3
"""The fleet dashboard in a real headless Chromium (Selenium + Debian's chromium and
chromedriver), against the built binary: `ca init`, `ca serve --dashboard-listen`, devices
enrolled by the real agent, a login link from `admin login-link`. It signs in, approves a
pending device (the agent then finishes its enrollment), revokes a device from its page,
filters and sorts the devices list, exports CSV and compares it with `devices list --json`,
checks that POSTs without the session, with a wrong form token or from another origin
change nothing in the inventory, runs axe-core on every page, and checks every page at
390 px (a phone) for horizontal overflow. Then the bulk actions (tag, untag every device
on a page, revoke; a bulk POST without the form token changes nothing), a token made in
the browser and enrolled with by the real agent (the secret is never shown again; a
withdrawn token is refused), certificate search by CN and by serial, and the audit log
with its filters and its JSON-lines and CSV export.

Usage: dashboard.py BINARY [--shots DIR] [--database postgres://…]   (scripts/install-test-deps
installs what it needs; tests/browser/run runs it with the right Python, on SQLite and again
on PostgreSQL). Exits non-zero on the first failure.
"""

import argparse
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

RIG = os.environ.get("MTLSGATE_BROWSER_DIR", "/var/tmp/mtlsgate-browser")
AXE_JS = os.path.join(RIG, "node/node_modules/axe-core/axe.min.js")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class World:
    def __init__(self, binary, work):
        self.bin = binary
        self.work = work
        self.procs = []

    def mg(self, *args, check=True):
        r = subprocess.run([self.bin, *args], cwd=self.work, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"mtlsgate {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def spawn(self, *args, out):
        f = open(os.path.join(self.work, out), "w")
        p = subprocess.Popen([self.bin, *args], cwd=self.work, stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def devices(self):
        return json.loads(self.mg("devices", "list", "--dir", "ca", "--json").stdout)

    def device(self, id):
        return json.loads(self.mg("devices", "show", "--dir", "ca", id, "--json").stdout)


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def until(what, f, timeout=30):
    """Waits for f() to be true. While a form's POST → 303 → GET is under way, an element
    found on the old page goes stale (or is not there yet, or "does not belong to the
    document"): that is "not yet", not a failure."""
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            WebDriverException)

    end = time.time() + timeout
    while time.time() < end:
        try:
            v = f()
        except (StaleElementReferenceException, NoSuchElementException):
            v = None
        except WebDriverException as e:
            # Chromium's variant of a stale element, seen while the next page loads.
            if "does not belong to the document" not in str(e):
                raise
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def http(url, data=None, headers=None):
    """(status, body) of a request outside the browser."""
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data is not None else None,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def browser(home):
    """Headless Chromium (Debian's package and its chromedriver), its files under `home`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.update(HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in ("--headless=new", "--disable-dev-shm-usage", "--window-size=1280,900", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"):
        opts.add_argument(f)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")
    d = webdriver.Chrome(options=opts, service=Service(executable_path="/usr/bin/chromedriver"))
    d.set_script_timeout(60)
    return d


def axe_here(d):
    """axe-core's violations on the page the browser shows."""
    with open(AXE_JS, encoding="utf-8") as fh:
        d.execute_script(fh.read())
    return d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document).then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' ' +
            v.nodes.map(n => n.target.join(' ')).join(', ')))).catch(e => done(['error: ' + e]));""")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--shots", help="write screenshots of the main pages here (PNG)")
    ap.add_argument("--database", help="keep the inventory in this (empty) PostgreSQL database")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    work = tempfile.mkdtemp(prefix="mtlsgate-dashboard-")
    w = World(binary, work)
    home = os.path.join(work, "home")
    os.makedirs(home)
    # Chromium writes into $HOME; keep it in the work directory.
    os.environ.update(HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home)
    ca_port, dash_port = free_port(), free_port()
    base = f"http://localhost:{dash_port}"
    ca_url = f"https://localhost:{ca_port}"
    d = None
    step = "start"
    try:
        w.mg("ca", "init", "--dir", "ca", *(["--database", a.database] if a.database else []))
        server = w.spawn("ca", "serve", "--dir", "ca", "--listen", f"127.0.0.1:{ca_port}",
                         "--dashboard-listen", f"127.0.0.1:{dash_port}", out="serve.log")
        wait_port(ca_port)
        wait_port(dash_port)
        # The listener is refused on a non-loopback address.
        r = w.mg("ca", "serve", "--dir", "ca", "--listen", "127.0.0.1:0", "--dashboard-listen", "0.0.0.0:0", check=False)
        assert r.returncode != 0 and "loopback" in r.stderr, r.stderr

        step = "devices enroll with tokens"
        for name, tag in (("cam-a", "cameras"), ("cam-b", "cameras"), ("gw-c", "gateways")):
            tok = w.mg("token", "create", "--dir", "ca", "--device-id", name, "--tag", tag).stdout.strip().splitlines()[-1]
            w.mg("agent", "enroll", "--server", ca_url, "--ca-file", "ca/ca.crt", "--dir", name, "--token", tok)
        step = "a device waits for approval"
        agent = w.spawn("agent", "enroll", "--server", ca_url, "--ca-file", "ca/ca.crt", "--dir", "waiting", out="waiting.out")
        pending = until("a pending device", lambda: [x["id"] for x in w.devices() if x["status"] == "pending"])
        assert len(pending) == 1, pending
        pending_id = pending[0]
        st = until("the agent's pending state",
                   lambda: json.loads(w.mg("agent", "status", "--dir", "waiting", "--json", check=False).stdout or "null"))
        key = st["pending_key_sha256"]
        assert len(key) == 64, st

        step = "browser"
        d = browser(home)

        def axe(url):
            d.get(url)
            res = axe_here(d)
            assert res == [], f"axe-core on {url}: {res}"

        step = "sign in"
        axe(base + "/login")
        # Without a session every page leads to the login page.
        d.get(base + "/devices")
        assert d.current_url == base + "/login", d.current_url
        r = w.mg("admin", "login-link", "--dir", "ca", "--user", "dashboard:x", check=False)
        assert r.returncode != 0 and "invalid operator name" in r.stderr, r.stderr
        r = w.mg("admin", "login-link", "--dir", "ca", "--user", "bob", "--ttl", "3d", check=False)
        assert r.returncode != 0 and "between 1 minute and 24 hours" in r.stderr, r.stderr
        link = w.mg("admin", "login-link", "--dir", "ca", "--user", "alice", "--url", base).stdout.strip().splitlines()[-1]
        assert link.startswith(base + "/login?token=mtd_"), link
        d.get(link)
        axe(link)  # a GET does not use the link
        d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        until("the overview", lambda: d.current_url == base + "/")
        assert "Overview" in d.find_element(By.TAG_NAME, "h1").text
        c = d.get_cookie("__Host-mtlsgate_session")
        assert c and c["secure"] and c["httpOnly"] and c["sameSite"] == "Strict" and c["path"] == "/", c
        assert "mtlsgate_session" not in d.execute_script("return document.cookie")
        session = c["value"]
        # The link works once.
        st_code, body = http(base + "/login", {"token": link.split("token=")[1]})
        assert st_code == 403 and "Link not valid" in body, (st_code, body[:200])
        main_text = d.find_element(By.TAG_NAME, "main").text
        assert "3\nactive" in main_text and "1\npending" in main_text, main_text
        assert "1 waiting for approval" in main_text, main_text
        axe(base + "/")
        assert d.find_element(By.CSS_SELECTOR, "nav .badge").text == "1"

        step = "approve the pending device"
        d.get(base + "/pending")
        axe(base + "/pending")
        card = d.find_element(By.XPATH, f"//li[.//a[text()='{pending_id}']]")
        assert card.find_element(By.CSS_SELECTOR, ".fp").text == key, "the queue's key fingerprint differs from agent status"
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "pending.png"))
        card.find_element(By.XPATH, ".//button[starts-with(text(), 'Approve')]").click()
        until("the notice", lambda: "approved" in d.find_element(By.TAG_NAME, "main").text)
        assert agent.wait(timeout=60) == 0, open(os.path.join(work, "waiting.out")).read()
        assert w.mg("agent", "whoami", "--dir", "waiting").stdout.strip() == pending_id
        entry = [x for x in w.device(pending_id)["audit"] if x["action"] == "approve"]
        assert entry and entry[-1]["actor"] == "dashboard:alice", entry

        step = "revoke from the device page"
        cam_b = next(x["id"] for x in w.devices() if x["id"].startswith("cam-b"))
        d.get(f"{base}/devices/{cam_b}")
        axe(f"{base}/devices/{cam_b}")
        d.find_element(By.ID, "reason").send_keys("stolen from the lobby")
        d.find_element(By.XPATH, "//button[starts-with(text(), 'Revoke')]").click()
        until("the revoked status", lambda: "revoked" in d.find_element(By.CSS_SELECTOR, ".ident").text)
        shown = w.device(cam_b)
        assert shown["status"] == "revoked", shown
        assert all(cert["revoked_at"] for cert in shown["certificates"]), shown["certificates"]
        last = shown["audit"][-1]
        assert (last["actor"], last["action"], last["detail"]) == ("dashboard:alice", "revoke", "stolen from the lobby"), last
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "device.png"))

        step = "filter and sort the devices list"
        d.get(base + "/devices")
        axe(base + "/devices")
        d.find_element(By.NAME, "tag").send_keys("cameras")
        Select(d.find_element(By.NAME, "sort")).select_by_value("id")
        Select(d.find_element(By.NAME, "dir")).select_by_value("desc")
        d.find_element(By.XPATH, "//form[@class='filters']//button").click()
        until("the filtered list", lambda: "tag=cameras" in d.current_url)
        q = urllib.parse.parse_qs(urllib.parse.urlparse(d.current_url).query)
        assert q["sort"] == ["id"] and q["dir"] == ["desc"], q
        ids = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#devices tbody td:nth-child(2) a")]
        want = sorted((x["id"] for x in w.devices() if "cameras" in x["tags"]), reverse=True)
        assert ids == want and len(ids) == 2, (ids, want)
        axe(d.current_url)
        # A status tab.
        d.get(base + "/devices?status=active")
        ids = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#devices tbody td:nth-child(2) a")]
        assert sorted(ids) == sorted(x["id"] for x in w.devices() if x["status"] == "active"), ids
        d.get(base + "/devices")
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "devices.png"))

        step = "CSV export"
        href = d.find_element(By.LINK_TEXT, "Export CSV").get_attribute("href")
        code, body = http(href, headers={"Cookie": f"__Host-mtlsgate_session={session}"})
        assert code == 200, (code, body[:200])
        rows = list(csv.DictReader(io.StringIO(body)))
        listed = w.devices()
        assert len(rows) == len(listed) == 4, (len(rows), len(listed))
        by_id = {x["id"]: x for x in listed}
        num = lambda v: "" if v is None else str(v)
        for r in rows:
            j = by_id[r["id"]]
            assert r["status"] == j["status"], (r, j)
            assert r["tags"] == ";".join(j["tags"]), (r, j)
            for k in ("first_seen", "last_seen", "cert_not_after"):
                assert r[k] == num(j[k]), (k, r, j)
            for k in ("last_addr", "agent_version", "cert_serial"):
                assert r[k] == (j[k] or ""), (k, r, j)
        code, body = http(href)
        assert not body.startswith("id,status"), "the CSV needs a session"

        step = "POSTs that must change nothing"
        cam_a = next(x["id"] for x in w.devices() if x["id"].startswith("cam-a"))
        before = w.device(cam_a)
        csrf = d.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")
        url = f"{base}/devices/{cam_a}/deny"
        cookie = {"Cookie": f"__Host-mtlsgate_session={session}"}
        for what, data, headers in (
            ("no session", {"csrf": csrf}, {}),
            ("wrong form token", {"csrf": "0" * 64}, cookie),
            ("no form token", {}, cookie),
            ("another origin", {"csrf": csrf}, {**cookie, "Origin": "http://evil.example"}),
        ):
            code, _ = http(url, data, headers)
            assert code == 403, (what, code)
            assert w.device(cam_a) == before, f"{what}: the device changed"
        # The same request with the session's token does change it (the checks above can fail).
        code, _ = http(url, {"csrf": csrf}, {**cookie, "Origin": base})
        assert code in (200, 303), code
        assert w.device(cam_a)["status"] == "denied"

        step = "bulk tag"
        gw = next(x["id"] for x in w.devices() if x["id"].startswith("gw-c"))

        def axe_now():
            res = axe_here(d)
            assert res == [], f"axe-core on {d.current_url}: {res}"

        def bulk(ids, action, button="Apply to ticked devices", tag="", reason=""):
            d.get(base + "/devices?sort=id")
            for i in ids:
                d.find_element(By.CSS_SELECTOR, f"input[type=checkbox][value='{i}']").click()
            Select(d.find_element(By.NAME, "action")).select_by_value(action)
            if tag:
                d.find_element(By.NAME, "bulk_tag").send_keys(tag)
            if reason:
                d.find_element(By.NAME, "reason").send_keys(reason)
            d.find_element(By.XPATH, f"//button[text()='{button}']").click()
            return until("the bulk result", lambda: d.find_element(By.TAG_NAME, "h1").text == "Bulk action"
                         and d.find_element(By.CSS_SELECTOR, "main .notice").text)

        three = [gw, pending_id, cam_b]
        summary = bulk(three, "tag", tag="lobby")
        assert summary == "3 of 3 selected devices tagged lobby.", summary
        axe_now()
        d.get(base + "/devices?tag=lobby")
        ids = sorted(e.text for e in d.find_elements(By.CSS_SELECTOR, "#devices tbody td:nth-child(2) a"))
        assert ids == sorted(three), ids
        rows = d.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
        assert all("lobby" in r.find_element(By.CSS_SELECTOR, "td:nth-child(4)").text for r in rows), [r.text for r in rows]
        assert sorted(x["id"] for x in w.devices() if "lobby" in x["tags"]) == sorted(three)
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "devices-bulk.png"))
        # Ticked again with one more: the three are skipped, and the page says why.
        summary = bulk(three + [cam_a], "tag", tag="lobby")
        assert summary == "1 of 4 selected devices tagged lobby; 3 skipped.", summary
        skipped = d.find_element(By.ID, "skipped").text
        assert skipped.count("already tagged lobby") == 3, skipped
        # "Every device on this page", without ticking anything (no script needed).
        summary = bulk([], "untag", button="Apply to every device on this page", tag="lobby")
        assert summary == "4 of 4 selected devices untagged lobby.", summary
        assert not any("lobby" in x["tags"] for x in w.devices())

        step = "a bulk POST without the form token changes nothing"
        before_all = w.devices()
        for what, data, headers in (
            ("no form token", {"action": "tag", "bulk_tag": "evil", "id": gw}, cookie),
            ("wrong form token", {"csrf": "0" * 64, "action": "tag", "bulk_tag": "evil", "id": gw}, cookie),
            ("no session", {"csrf": csrf, "action": "tag", "bulk_tag": "evil", "id": gw}, {}),
            ("another origin", {"csrf": csrf, "action": "tag", "bulk_tag": "evil", "id": gw},
             {**cookie, "Origin": "http://evil.example"}),
        ):
            code, _ = http(base + "/devices/bulk", data, headers)
            assert code == 403, (what, code)
            assert w.devices() == before_all, f"{what}: a device changed"
        code, body = http(base + "/devices/bulk", {"csrf": csrf, "action": "tag", "bulk_tag": "ok", "id": gw},
                          {**cookie, "Origin": base})
        assert code == 200 and "1 of 1 selected devices tagged ok." in body, (code, body[:300])

        step = "bulk revoke"
        summary = bulk([gw, cam_b], "revoke", reason="decommissioned")
        assert summary == "1 of 2 selected devices revoked; 1 skipped.", summary
        assert "already revoked" in d.find_element(By.ID, "skipped").text
        shown = w.device(gw)
        assert shown["status"] == "revoked", shown
        assert all(cert["revoked_at"] for cert in shown["certificates"]), shown["certificates"]
        last = shown["audit"][-1]
        assert (last["actor"], last["action"], last["detail"]) == ("dashboard:alice", "revoke", "decommissioned"), last

        step = "make a token in the browser"
        d.get(base + "/tokens")
        axe(base + "/tokens")
        d.find_element(By.NAME, "device_id").send_keys("tok-d")
        d.find_element(By.NAME, "tags").send_keys("from-web, lab")
        d.find_element(By.XPATH, "//button[text()='Make token']").click()
        cmd = until("the new token", lambda: d.find_element(By.ID, "enroll-command").text)
        secret = d.find_element(By.ID, "token").text
        assert secret.startswith("mtg_") and cmd.startswith("mtlsgate agent enroll --server https://"), cmd
        assert cmd.endswith("--token " + secret), cmd
        axe_now()
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "tokens.png"))
        # The command as shown, run by the real agent (in its own directory).
        args = cmd.split()[1:]
        r = w.mg(*args, "--dir", "tokdev", check=False)
        assert r.returncode == 0, (cmd, r.stderr)
        tok_id = w.mg("agent", "whoami", "--dir", "tokdev").stdout.strip()
        assert tok_id.startswith("tok-d"), tok_id
        assert sorted(w.device(tok_id)["tags"]) == ["from-web", "lab"]
        # Reloading the tokens page never shows the secret again; the token shows as used.
        d.get(base + "/tokens")
        assert secret not in d.page_source and secret[4:] not in d.page_source
        assert "used" in d.find_element(By.CSS_SELECTOR, "#tokens tbody tr").text
        # A token withdrawn cannot be used.
        d.find_element(By.XPATH, "//button[text()='Make token']").click()
        secret2 = until("the second token", lambda: d.find_element(By.ID, "token").text)
        d.get(base + "/tokens")
        d.find_element(By.CSS_SELECTOR, "#tokens tbody tr button").click()
        until("the withdrawn notice", lambda: "Token withdrawn" in d.find_element(By.TAG_NAME, "main").text)
        r = w.mg(*args[:-1], secret2, "--dir", "tokw", check=False)
        assert r.returncode != 0 and "expired" in r.stderr, (r.returncode, r.stderr)

        step = "certificates search"
        d.get(base + "/certificates?cn=cam-a")
        axe(base + "/certificates?cn=cam-a")
        rows = d.find_elements(By.CSS_SELECTOR, "#certificates tbody tr")
        assert rows and all(cam_a in r.text for r in rows), [r.text for r in rows]
        assert rows[0].find_element(By.LINK_TEXT, cam_a).get_attribute("href") == f"{base}/devices/{cam_a}"
        serial = w.device(gw)["cert_serial"]
        typed = ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)).lower()
        d.get(base + "/certificates")
        d.find_element(By.NAME, "serial").send_keys(typed)
        d.find_element(By.XPATH, "//button[text()='Search']").click()
        until("the serial search", lambda: "serial=" in d.current_url)
        rows = d.find_elements(By.CSS_SELECTOR, "#certificates tbody tr")
        assert len(rows) == 1 and serial in rows[0].text and "revoked" in rows[0].text, [r.text for r in rows]
        axe_now()
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "certificates.png"))
        code, body = http(base + "/certificates?serial=xyz", headers=cookie)
        assert code == 400 and "not hexadecimal" in body, (code, body[:200])

        step = "audit log"
        d.get(base + "/audit")
        axe(base + "/audit")
        d.find_element(By.NAME, "actor").send_keys("dashboard:alice")
        d.find_element(By.XPATH, "//button[text()='Filter']").click()
        until("the filtered log", lambda: "actor=dashboard%3Aalice" in d.current_url)
        text = d.find_element(By.TAG_NAME, "table").text
        for action in ("approve", "revoke", "tag", "token", "token-withdraw"):
            assert f"dashboard:alice {action}" in text, (action, text)
        actors = {e.text for e in d.find_elements(By.CSS_SELECTOR, "table tbody td:nth-child(2)")}
        assert actors == {"dashboard:alice"}, actors
        axe_now()
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "audit.png"))
        jl = d.find_element(By.LINK_TEXT, "JSON lines").get_attribute("href")
        code, body = http(jl, headers=cookie)
        assert code == 200, (code, body[:200])
        records = [json.loads(x) for x in body.splitlines()]
        assert records and {x["actor"] for x in records} == {"dashboard:alice"}, records[:3]
        assert [x["id"] for x in records] == sorted((x["id"] for x in records), reverse=True)
        code, body = http(d.find_element(By.LINK_TEXT, "CSV").get_attribute("href"), headers=cookie)
        rows = list(csv.DictReader(io.StringIO(body)))
        assert code == 200 and [int(r["id"]) for r in rows] == [x["id"] for x in records], (code, body[:200])
        code, body = http(jl)
        assert code != 200 or "dashboard:alice" not in body, "the export needs a session"

        step = "phone width"
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        for path in ("/", "/pending", "/devices", f"/devices/{cam_b}", f"/devices/{pending_id}",
                     "/tokens", "/certificates", "/audit"):
            d.get(base + path)
            vw = d.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
            if vw != [390, 390]:
                wide = d.execute_script("""return [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > 390 && !e.closest('.scroll'))
                    .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
                raise AssertionError(f"{path}: layout {vw} at 390 px (horizontal overflow): {wide}")
        if a.shots:
            d.get(base + "/")
            d.save_screenshot(os.path.join(a.shots, "overview-phone.png"))
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        if a.shots:
            d.get(base + "/")
            d.save_screenshot(os.path.join(a.shots, "overview.png"))
        for f in os.listdir(a.shots or work):
            if a.shots and f.endswith(".png"):
                with open(os.path.join(a.shots, f), "rb") as fh:
                    assert fh.read(8) == b"\x89PNG\r\n\x1a\n"

        step = "sign out"
        d.find_element(By.XPATH, "//button[text()='Sign out']").click()
        until("the login page", lambda: d.current_url == base + "/login")
        code, body = http(base + "/devices", headers=cookie)
        assert "<h1>Sign in</h1>" in body, "the session still works after signing out"

        step = "stop"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, open(os.path.join(work, "serve.log")).read()
        print("PASS dashboard browser test")
        return 0
    except Exception as e:  # noqa: BLE001 - report the step, then fail
        print(f"FAIL dashboard browser test at step '{step}': {e}", file=sys.stderr)
        if d is not None:
            try:
                print(f"--- the browser is at {d.current_url}:", file=sys.stderr)
                print(d.find_element("tag name", "body").text[:1500], file=sys.stderr)
            except Exception:  # noqa: BLE001 - the report only
                pass
        log = os.path.join(work, "serve.log")
        if os.path.exists(log):
            print("--- ca serve log (tail)", file=sys.stderr)
            print("".join(open(log).readlines()[-30:]), file=sys.stderr)
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
