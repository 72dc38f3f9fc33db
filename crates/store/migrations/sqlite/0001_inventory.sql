-- Every certificate the CA issued, and its revocation.
CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY NOT NULL,  -- uppercase hex, as nginx prints $ssl_client_serial
    kind              TEXT NOT NULL,              -- root | intermediate | server | client
    subject           TEXT NOT NULL,              -- RFC 2253
    device_id         TEXT,
    not_before        INTEGER NOT NULL,           -- unix seconds
    not_after         INTEGER NOT NULL,
    sha256            TEXT NOT NULL,
    issued_at         INTEGER NOT NULL,
    revoked_at        INTEGER,
    revocation_reason TEXT,
    pem               TEXT NOT NULL
);
CREATE INDEX certificates_device_id ON certificates (device_id);
CREATE INDEX certificates_sha256 ON certificates (sha256);

-- Monotonic CRL number (RFC 5280 5.2.3).
CREATE TABLE crl_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    crl_number INTEGER NOT NULL
);
INSERT INTO crl_state (id, crl_number) VALUES (1, 0);
