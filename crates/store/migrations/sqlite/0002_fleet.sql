-- Devices, enrollment tokens, recovery tokens, the audit log and the revision counter
-- that gateways follow (docs/device-lifecycle.md).

-- The revision at which a certificate was revoked (NULL while it is not).
ALTER TABLE certificates ADD COLUMN revision INTEGER;
CREATE INDEX certificates_revision ON certificates (revision);

-- Counters: `revision` takes the next value for every change a gateway must see, in the
-- same transaction as the change.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO meta (name, value) VALUES ('revision', 0);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY NOT NULL,  -- full device ID, lower-case
    status         TEXT NOT NULL CHECK (status IN ('pending', 'active', 'denied', 'revoked', 'quarantined')),
    tags           TEXT NOT NULL DEFAULT '[]', -- JSON array, sorted, unique
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER,
    last_addr      TEXT,
    agent_version  TEXT,
    cert_serial    TEXT,                       -- the current certificate
    cert_not_after INTEGER,
    prev_serial    TEXT,                       -- the certificate the current one replaced
    lifetime_secs  INTEGER,                    -- NULL: the server's default
    created_by     TEXT NOT NULL,
    revision       INTEGER NOT NULL,
    pending_csr    TEXT,                       -- PEM, only while pending
    poll_hash      TEXT                        -- SHA-256 hex of the poll token
);
CREATE INDEX devices_revision ON devices (revision);
CREATE INDEX devices_status ON devices (status);

CREATE TABLE tokens (
    hash          TEXT PRIMARY KEY NOT NULL,   -- SHA-256 hex of the token
    device_id     TEXT,                        -- NULL: the server assigns an ID
    tags          TEXT NOT NULL DEFAULT '[]',
    lifetime_secs INTEGER,
    expires_at    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    used_at       INTEGER,
    used_by       TEXT
);

CREATE TABLE recovery (
    hash        TEXT PRIMARY KEY NOT NULL,
    device_id   TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    replaced_at INTEGER                        -- NULL while current
);
CREATE UNIQUE INDEX recovery_current ON recovery (device_id) WHERE replaced_at IS NULL;

CREATE TABLE audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    device_id TEXT,
    serial    TEXT,
    detail    TEXT
);
CREATE INDEX audit_device ON audit (device_id, id);
