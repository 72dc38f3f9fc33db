-- The fleet dashboard (crates/dashboard): one-time login links and operators' sessions.
-- Both keep the SHA-256 hex of their secret only.
CREATE TABLE dashboard_links (
    hash       TEXT PRIMARY KEY NOT NULL,
    operator   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT                      -- NULL until the link is used (once)
);

CREATE TABLE dashboard_sessions (
    hash       TEXT PRIMARY KEY NOT NULL,
    operator   TEXT NOT NULL,
    csrf       TEXT NOT NULL,               -- the session's form token
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
