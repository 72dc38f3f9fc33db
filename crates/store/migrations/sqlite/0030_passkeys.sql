-- Passkeys (WebAuthn) of the fleet dashboard's operators (crates/dashboard), and the
-- state of each registration or sign-in under way (short-lived, used once).
CREATE TABLE dashboard_passkeys (
    id           TEXT PRIMARY KEY NOT NULL,   -- the credential ID, base64url
    operator     TEXT NOT NULL,
    name         TEXT NOT NULL,               -- what the operator called it
    credential   TEXT NOT NULL,               -- the public key, counter and backup state (JSON)
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER                      -- NULL until first used to sign in
);
CREATE INDEX dashboard_passkeys_operator ON dashboard_passkeys (operator);

CREATE TABLE dashboard_ceremonies (
    hash       TEXT PRIMARY KEY NOT NULL,     -- SHA-256 hex of the ceremony's handle
    kind       TEXT NOT NULL,                 -- 'register' or 'sign-in'
    operator   TEXT NOT NULL,
    state      TEXT NOT NULL,                 -- the challenge and what it allows (JSON)
    expires_at INTEGER NOT NULL
);
