// mtlsgate fleet dashboard: the passkey ceremonies (WebAuthn), on the Account page
// (form#passkey-register) and the login page (form#passkey-login). The only script of the
// dashboard; every check is the server's. Without it the forms post to the server, which
// answers that passkeys need JavaScript.
"use strict";
(function () {
  function fromB64u(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return Uint8Array.from(atob(s), function (c) { return c.charCodeAt(0); });
  }
  function toB64u(buf) {
    var b = new Uint8Array(buf), s = "";
    for (var i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  async function post(url, fields) {
    var r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields),
    });
    var j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (!r.ok || !j) {
      throw new Error((j && j.error) || "The dashboard refused the request (" + r.status +
        "): reload the page, and sign in again if your session ended; nothing was changed.");
    }
    return j;
  }
  function why(e) {
    if (e && e.name === "NotAllowedError") {
      return "The browser made no passkey request: it was cancelled, timed out or not allowed.";
    }
    if (e && e.name === "InvalidStateError") {
      return "This authenticator holds one of your passkeys already.";
    }
    return (e && e.message) || String(e);
  }
  function wire(form, run) {
    if (!form) return;
    var status = form.querySelector(".passkey-status");
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      status.classList.remove("error");
      status.textContent = "Waiting for your passkey…";
      try {
        if (!window.PublicKeyCredential || !navigator.credentials) {
          throw new Error("This browser does not support passkeys.");
        }
        var next = await run(new FormData(form));
        status.textContent = "Done.";
        window.location.assign(next);
      } catch (e) {
        status.classList.add("error");
        status.textContent = why(e);
      }
    });
  }
  wire(document.getElementById("passkey-register"), async function (fd) {
    var csrf = fd.get("csrf");
    var b = await post("/account/passkeys/begin", { csrf: csrf, name: fd.get("name"), js: "1" });
    var pk = b.options.publicKey;
    pk.challenge = fromB64u(pk.challenge);
    pk.user.id = fromB64u(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = fromB64u(c.id); });
    var c = await navigator.credentials.create({ publicKey: pk });
    var cred = {
      id: c.id,
      rawId: toB64u(c.rawId),
      type: c.type,
      response: {
        attestationObject: toB64u(c.response.attestationObject),
        clientDataJSON: toB64u(c.response.clientDataJSON),
        transports: c.response.getTransports ? c.response.getTransports() : undefined,
      },
      extensions: c.getClientExtensionResults(),
    };
    var f = await post("/account/passkeys/finish", {
      csrf: csrf, ceremony: b.ceremony, credential: JSON.stringify(cred),
    });
    return f.next;
  });
  wire(document.getElementById("passkey-login"), async function (fd) {
    var b = await post("/login/passkey/begin", { operator: fd.get("operator"), js: "1" });
    var pk = b.options.publicKey;
    pk.challenge = fromB64u(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = fromB64u(c.id); });
    var c = await navigator.credentials.get({ publicKey: pk });
    var cred = {
      id: c.id,
      rawId: toB64u(c.rawId),
      type: c.type,
      response: {
        authenticatorData: toB64u(c.response.authenticatorData),
        clientDataJSON: toB64u(c.response.clientDataJSON),
        signature: toB64u(c.response.signature),
        userHandle: c.response.userHandle ? toB64u(c.response.userHandle) : null,
      },
      extensions: c.getClientExtensionResults(),
    };
    var f = await post("/login/passkey/finish", { ceremony: b.ceremony, credential: JSON.stringify(cred) });
    return f.next;
  });
})();
