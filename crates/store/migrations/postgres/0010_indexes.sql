-- The same indexes as migrations/sqlite/0010_indexes.sql: for the queries the CA runs as
-- a fleet grows (the store's `hot` module lists them, and a test checks each one's plan).

-- Devices, oldest first (the paged listing's order), and by status in that order.
CREATE INDEX devices_first_seen ON devices (first_seen, id);
DROP INDEX devices_status;
CREATE INDEX devices_status ON devices (status, first_seen, id);

-- Certificates, oldest first (the paged listing's order: issued_at, then the order they
-- were recorded in: seq).
CREATE INDEX certificates_issued ON certificates (issued_at, seq);
-- The revoked ones, in the CRL's order (few among many).
CREATE INDEX certificates_revoked ON certificates (revoked_at, serial) WHERE revoked_at IS NOT NULL;

-- Every recovery token of a device (re-enrollment deletes them).
CREATE INDEX recovery_device ON recovery (device_id);
-- The revoked certificates a gateway reads after a revision (its change read; the full
-- read finds them through either partial index).
CREATE INDEX certificates_revoked_revision ON certificates (revision) WHERE revoked_at IS NOT NULL;
