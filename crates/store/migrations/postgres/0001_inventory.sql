-- The inventory in PostgreSQL: the same tables and columns as the SQLite inventory
-- (migrations/sqlite), created at once. Times are unix seconds.

CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY NOT NULL,  -- uppercase hex
    kind              TEXT NOT NULL,              -- root | intermediate | server | client | admin
    subject           TEXT NOT NULL,
    device_id         TEXT,
    not_before        BIGINT NOT NULL,
    not_after         BIGINT NOT NULL,
    sha256            TEXT NOT NULL,
    issued_at         BIGINT NOT NULL,
    revoked_at        BIGINT,
    revocation_reason TEXT,
    pem               TEXT NOT NULL,
    revision          BIGINT,
    seq               BIGINT GENERATED ALWAYS AS IDENTITY  -- insertion order
);
CREATE INDEX certificates_device_id ON certificates (device_id);
CREATE INDEX certificates_sha256 ON certificates (sha256);
CREATE INDEX certificates_revision ON certificates (revision);

CREATE TABLE crl_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    crl_number BIGINT NOT NULL
);
INSERT INTO crl_state (id, crl_number) VALUES (1, 0);

-- `revision` is a row, not a sequence: the row stays locked until the transaction that
-- took the next value commits, so revisions become visible in order.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO meta (name, value) VALUES ('revision', 0);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'active', 'denied', 'revoked', 'quarantined')),
    tags           TEXT NOT NULL DEFAULT '[]',
    first_seen     BIGINT NOT NULL,
    last_seen      BIGINT,
    last_addr      TEXT,
    agent_version  TEXT,
    cert_serial    TEXT,
    cert_not_after BIGINT,
    prev_serial    TEXT,
    lifetime_secs  BIGINT,
    created_by     TEXT NOT NULL,
    revision       BIGINT NOT NULL,
    pending_csr    TEXT,
    poll_hash      TEXT
);
CREATE INDEX devices_revision ON devices (revision);
CREATE INDEX devices_status ON devices (status);

CREATE TABLE tokens (
    hash          TEXT PRIMARY KEY NOT NULL,
    device_id     TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    lifetime_secs BIGINT,
    expires_at    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    used_at       BIGINT,
    used_by       TEXT
);

CREATE TABLE recovery (
    hash        TEXT PRIMARY KEY NOT NULL,
    device_id   TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    replaced_at BIGINT
);
CREATE UNIQUE INDEX recovery_current ON recovery (device_id) WHERE replaced_at IS NULL;

CREATE TABLE audit (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    device_id TEXT,
    serial    TEXT,
    detail    TEXT
);
CREATE INDEX audit_device ON audit (device_id, id);
