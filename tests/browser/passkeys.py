#!/usr/bin/env python3
"""Passkeys on the fleet dashboard in a real headless Chromium with its virtual
authenticator (CTAP2, internal transport, resident keys, user verification), against the
built binary: `ca init`, `ca serve --dashboard-listen`, a login link from `admin
login-link`. It signs in with the link, registers a passkey on the Account page, signs out,
signs in with the passkey (the audit log and the passkey's last use show it), checks that
the passkey does not sign in another operator, removes it, and checks that signing in with
it is then refused; axe-core runs on the Account and login pages.

Usage: passkeys.py BINARY   (tests/browser/run runs it beside dashboard.py). Exits
non-zero on the first failure.
"""

import argparse
import os
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dashboard import World, axe_here, browser, free_port, http, until, wait_port  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--shots", help="directory for a screenshot of the Account page")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.virtual_authenticator import (
        Protocol, Transport, VirtualAuthenticatorOptions)

    work = tempfile.mkdtemp(prefix="mtlsgate-passkeys-")
    w = World(binary, work)
    home = os.path.join(work, "home")
    os.makedirs(home)
    os.environ.update(HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home)
    ca_port, dash_port = free_port(), free_port()
    base = f"http://localhost:{dash_port}"
    d = None
    step = "start"
    try:
        w.mg("ca", "init", "--dir", "ca")
        w.spawn("ca", "serve", "--dir", "ca", "--listen", f"127.0.0.1:{ca_port}",
                "--dashboard-listen", f"127.0.0.1:{dash_port}", out="serve.log")
        wait_port(ca_port)
        wait_port(dash_port)

        step = "browser"
        d = browser(home)
        d.add_virtual_authenticator(VirtualAuthenticatorOptions(
            protocol=Protocol.CTAP2, transport=Transport.INTERNAL, has_resident_key=True,
            has_user_verification=True, is_user_verified=True))

        def axe(url):
            d.get(url)
            res = axe_here(d)
            assert res == [], f"axe-core on {url}: {res}"

        def status(form):
            return d.find_element(By.CSS_SELECTOR, f"#{form} .passkey-status").text

        def passkey_sign_in(operator):
            d.get(base + "/login")
            box = d.find_element(By.ID, "passkey-operator")
            box.clear()
            box.send_keys(operator)
            d.find_element(By.CSS_SELECTOR, "#passkey-login button").click()

        def audit_rows():
            d.get(base + "/")
            return [r.text for r in d.find_elements(By.CSS_SELECTOR, "section[aria-labelledby='h-audit'] tbody tr")]

        step = "without the script, a session, or localhost"
        st, body = http(base + "/login/passkey/begin", {"operator": "alice"})
        assert st == 400 and "Passkeys need JavaScript" in body, (st, body[:300])
        st, body = http(base + "/account/passkeys/begin", {"csrf": "x", "name": "n", "js": "1"})
        assert st == 403 and "not signed in" in body, (st, body[:300])
        st, body = http(f"http://127.0.0.1:{dash_port}/login")
        assert st == 200 and f"Passkeys work at <a href=\"{base}/\">" in body, body
        st, body = http(f"http://127.0.0.1:{dash_port}/login/passkey/begin", {"operator": "alice", "js": "1"},
                        {"Origin": f"http://127.0.0.1:{dash_port}"})
        assert st == 400 and f"Passkeys work at {base}/ only" in body, (st, body)

        step = "sign in with a link"
        axe(base + "/login")
        link = w.mg("admin", "login-link", "--dir", "ca", "--user", "alice", "--url", base).stdout.strip().splitlines()[-1]
        d.get(link)
        d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        until("the overview", lambda: d.current_url == base + "/")

        step = "register a passkey"
        axe(base + "/account")
        assert "no passkey yet" in d.find_element(By.TAG_NAME, "main").text
        # These two pages allow the passkey script (from this origin); the others no script.
        for path, allowed in (("/login", True), ("/static/dashboard.css", False)):
            with urllib.request.urlopen(base + path, timeout=10) as r:
                csp = r.headers["Content-Security-Policy"]
            assert ("script-src 'self'" in csp) == allowed and "unsafe-inline" not in csp, (path, csp)
        name = d.find_element(By.ID, "passkey-name")
        name.clear()
        name.send_keys("laptop")
        d.find_element(By.CSS_SELECTOR, "#passkey-register button").click()
        until("the registered passkey", lambda: "done=registered" in d.current_url or "error" in
              d.find_element(By.CSS_SELECTOR, "#passkey-register .passkey-status").get_attribute("class"))
        assert "done=registered" in d.current_url, status("passkey-register")
        rows = d.find_elements(By.CSS_SELECTOR, "main table tbody tr")
        assert len(rows) == 1 and "laptop" in rows[0].text and "never" in rows[0].text, [r.text for r in rows]
        assert len(d.get_credentials()) == 1
        axe(base + "/account")
        if a.shots:
            d.save_screenshot(os.path.join(a.shots, "account.png"))

        step = "phone width"
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        for path in ("/login", "/account"):
            d.get(base + path)
            vw = d.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
            assert vw == [390, 390], f"{path}: layout {vw} at 390 px (horizontal overflow)"
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        step = "sign out, sign in with the passkey"
        d.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
        until("the login page", lambda: d.current_url == base + "/login")
        passkey_sign_in("alice")
        until("the overview after a passkey sign-in", lambda: d.current_url == base + "/" or status("passkey-login"))
        assert d.current_url == base + "/", status("passkey-login")
        assert "alice" in d.find_element(By.CSS_SELECTOR, "header .who").text
        d.get(base + "/account")
        rows = d.find_elements(By.CSS_SELECTOR, "main table tbody tr")
        assert "never" not in rows[0].text, rows[0].text
        rows = audit_rows()
        assert any("dashboard:alice" in r and "dashboard-login-passkey" in r for r in rows), rows
        assert any("dashboard:alice" in r and "dashboard-passkey-register" in r and "laptop" in r for r in rows), rows

        step = "the passkey signs in nobody else"
        # Bob has no passkey: refused before any challenge.
        d.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
        until("the login page", lambda: d.current_url == base + "/login")
        passkey_sign_in("bob")
        msg = until("a refusal for bob", lambda: status("passkey-login") if "no passkey" in status("passkey-login") else None)
        assert "bob has no passkey" in msg, msg
        assert d.get_cookie("__Host-mtlsgate_session") is None
        # Bob with a passkey of his own: alice's credential, answered to bob's challenge, is
        # refused (the browser would pick bob's; the script's answer is replaced by hers).
        link = w.mg("admin", "login-link", "--dir", "ca", "--user", "bob", "--url", base).stdout.strip().splitlines()[-1]
        d.get(link)
        d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        until("bob's overview", lambda: d.current_url == base + "/")
        d.get(base + "/account")
        d.find_element(By.CSS_SELECTOR, "#passkey-register button").click()
        until("bob's passkey", lambda: "done=registered" in d.current_url or "error" in
              d.find_element(By.CSS_SELECTOR, "#passkey-register .passkey-status").get_attribute("class"))
        assert "done=registered" in d.current_url, status("passkey-register")
        d.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
        until("the login page", lambda: d.current_url == base + "/login")
        res = d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const b64 = s => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4)), c => c.charCodeAt(0));
            const enc = b => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
            const post = (u, f) => fetch(u, {method: 'POST', body: new URLSearchParams(f)}).then(async r => [r.status, await r.json()]);
            (async () => {
              const [, a] = await post('/login/passkey/begin', {operator: 'alice', js: '1'});
              const [, b] = await post('/login/passkey/begin', {operator: 'bob', js: '1'});
              const pk = a.options.publicKey;
              pk.challenge = b64(b.options.publicKey.challenge);   // bob's challenge
              pk.allowCredentials.forEach(c => c.id = b64(c.id));  // alice's passkey
              const c = await navigator.credentials.get({publicKey: pk});
              const cred = {id: c.id, rawId: enc(c.rawId), type: c.type, extensions: {}, response: {
                authenticatorData: enc(c.response.authenticatorData), clientDataJSON: enc(c.response.clientDataJSON),
                signature: enc(c.response.signature), userHandle: c.response.userHandle ? enc(c.response.userHandle) : null}};
              done(await post('/login/passkey/finish', {ceremony: b.ceremony, credential: JSON.stringify(cred)}));
            })().catch(e => done(['error', String(e)]));""")
        assert res[0] == 403 and "error" in res[1], res
        assert d.get_cookie("__Host-mtlsgate_session") is None
        # Alice's own passkey, but its answer to another challenge, or with a signature
        # changed, or a ceremony used twice: refused.
        res = d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const b64 = s => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4)), c => c.charCodeAt(0));
            const enc = b => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
            const post = (u, f) => fetch(u, {method: 'POST', body: new URLSearchParams(f)}).then(async r => [r.status, await r.json()]);
            const assertion = async opts => {
              const pk = opts.publicKey;
              pk.challenge = b64(pk.challenge);
              pk.allowCredentials.forEach(c => c.id = b64(c.id));
              const c = await navigator.credentials.get({publicKey: pk});
              return {id: c.id, rawId: enc(c.rawId), type: c.type, extensions: {}, response: {
                authenticatorData: enc(c.response.authenticatorData), clientDataJSON: enc(c.response.clientDataJSON),
                signature: enc(c.response.signature), userHandle: c.response.userHandle ? enc(c.response.userHandle) : null}};
            };
            (async () => {
              const out = [];
              const [, a] = await post('/login/passkey/begin', {operator: 'alice', js: '1'});
              const [, b] = await post('/login/passkey/begin', {operator: 'alice', js: '1'});
              const forA = await assertion(a.options);
              out.push(await post('/login/passkey/finish', {ceremony: b.ceremony, credential: JSON.stringify(forA)}));
              const [, c] = await post('/login/passkey/begin', {operator: 'alice', js: '1'});
              const forC = await assertion(c.options);
              const sig = b64(forC.response.signature); sig[sig.length - 1] ^= 1;
              forC.response.signature = enc(sig);
              out.push(await post('/login/passkey/finish', {ceremony: c.ceremony, credential: JSON.stringify(forC)}));
              out.push(await post('/login/passkey/finish', {ceremony: c.ceremony, credential: JSON.stringify(forC)}));
              done(out);
            })().catch(e => done(['error', String(e)]));""")
        assert [r[0] for r in res] == [403, 403, 400], res
        assert "used already" in res[2][1]["error"], res
        assert d.get_cookie("__Host-mtlsgate_session") is None

        step = "remove the passkey"
        link = w.mg("admin", "login-link", "--dir", "ca", "--user", "alice", "--url", base).stdout.strip().splitlines()[-1]
        d.get(link)
        d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        until("the overview", lambda: d.current_url == base + "/")
        d.get(base + "/account")
        # Without the form token (another site's form, or a forged request) nothing goes.
        kid = d.find_element(By.CSS_SELECTOR, "main table form").get_attribute("action").split("/")[-2]
        session = d.get_cookie("__Host-mtlsgate_session")["value"]
        st, _ = http(f"{base}/account/passkeys/{kid}/remove", {"csrf": "wrong"},
                     {"Cookie": f"__Host-mtlsgate_session={session}"})
        assert st == 403, st
        assert len(d.find_elements(By.CSS_SELECTOR, "main table tbody tr")) == 1
        # An answer the authenticator gave before the removal, sent after it, is refused.
        held = d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const b64 = s => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4)), c => c.charCodeAt(0));
            const enc = b => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
            (async () => {
              const r = await fetch('/login/passkey/begin', {method: 'POST', body: new URLSearchParams({operator: 'alice', js: '1'})});
              const b = await r.json();
              const pk = b.options.publicKey;
              pk.challenge = b64(pk.challenge);
              pk.allowCredentials.forEach(c => c.id = b64(c.id));
              const c = await navigator.credentials.get({publicKey: pk});
              done([b.ceremony, JSON.stringify({id: c.id, rawId: enc(c.rawId), type: c.type, extensions: {}, response: {
                authenticatorData: enc(c.response.authenticatorData), clientDataJSON: enc(c.response.clientDataJSON),
                signature: enc(c.response.signature), userHandle: c.response.userHandle ? enc(c.response.userHandle) : null}})]);
            })().catch(e => done(['error', String(e)]));""")
        assert held[0] != "error", held
        d.find_element(By.CSS_SELECTOR, "main table form button").click()
        until("the removal", lambda: "done=removed" in d.current_url)
        assert "no passkey yet" in d.find_element(By.TAG_NAME, "main").text
        st, body = http(base + "/login/passkey/finish", {"ceremony": held[0], "credential": held[1]})
        assert st == 403 and "not registered for alice" in body, (st, body)
        # Removing it again, or bob's passkey as alice: nothing to remove.
        st, body = http(f"{base}/account/passkeys/{kid}/remove", {"csrf": d.find_element(
            By.CSS_SELECTOR, "form[action='/logout'] input[name='csrf']").get_attribute("value")},
            {"Cookie": f"__Host-mtlsgate_session={session}", "Origin": base})
        assert st == 404 and "No such passkey" in body, (st, body[:300])

        step = "the removed passkey is refused"
        d.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
        until("the login page", lambda: d.current_url == base + "/login")
        passkey_sign_in("alice")
        msg = until("a refusal", lambda: status("passkey-login") if "passkey" in status("passkey-login") else None)
        assert "alice has no passkey" in msg, msg
        assert d.current_url == base + "/login" and d.get_cookie("__Host-mtlsgate_session") is None
        axe(base + "/login")

        step = "audit log"
        link = w.mg("admin", "login-link", "--dir", "ca", "--user", "alice", "--url", base).stdout.strip().splitlines()[-1]
        d.get(link)
        d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        until("the overview", lambda: d.current_url == base + "/")
        rows = audit_rows()
        assert any("dashboard:alice" in r and "dashboard-passkey-remove" in r for r in rows), rows
        assert sum("dashboard-login-passkey" in r for r in rows) == 1, rows
        print("passkeys: 1 passed, 0 failed")
    except Exception:
        print(f"passkeys: FAILED at step: {step}", file=sys.stderr)
        if d is not None:
            print(f"  at {d.current_url}\n{d.find_element(By.TAG_NAME, 'body').text[:2000]}", file=sys.stderr)
        try:
            print(open(os.path.join(work, "serve.log"), encoding="utf-8").read()[-3000:], file=sys.stderr)
        except OSError:
            pass
        raise
    finally:
        if d is not None:
            d.quit()
        for p in w.procs:
            p.terminate()
            try:
                p.wait(10)
            except Exception:
                p.kill()


if __name__ == "__main__":
    main()
