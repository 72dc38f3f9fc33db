-- The fleet dashboard at fleet size (bench/dashboard): its counts and sorted pages read
-- index ranges instead of every device.

-- The overview's counts of active devices expiring, expired and not seen, and a status
-- tab of the list in those orders.
CREATE INDEX devices_status_expiry ON devices (status, cert_not_after, id);
CREATE INDEX devices_status_seen ON devices (status, last_seen, id);
-- The devices list sorted by certificate expiry or last seen (NULLs last, then by ID):
-- a page reads its rows in order and stops.
CREATE INDEX devices_expiry ON devices (cert_not_after, id);
CREATE INDEX devices_seen ON devices (last_seen, id);
