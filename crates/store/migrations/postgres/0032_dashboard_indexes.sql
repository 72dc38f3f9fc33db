-- The same indexes as migrations/sqlite/0032_dashboard_indexes.sql: the fleet dashboard's
-- counts and sorted pages read index ranges instead of every device.

-- The overview's counts of active devices expiring, expired and not seen, and a status
-- tab of the list in those orders.
CREATE INDEX devices_status_expiry ON devices (status, cert_not_after, id);
CREATE INDEX devices_status_seen ON devices (status, last_seen, id);
-- The devices list sorted by certificate expiry or last seen, NULLs last, then by ID,
-- either way (PostgreSQL puts NULLs first when it reads an ascending index backwards, so
-- descending has its own indexes).
CREATE INDEX devices_expiry ON devices (cert_not_after, id);
CREATE INDEX devices_seen ON devices (last_seen, id);
CREATE INDEX devices_expiry_desc ON devices (cert_not_after DESC NULLS LAST, id DESC);
CREATE INDEX devices_seen_desc ON devices (last_seen DESC NULLS LAST, id DESC);
