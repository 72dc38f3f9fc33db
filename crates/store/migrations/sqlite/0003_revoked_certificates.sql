-- The revoked certificates, for a gateway's read (Inventory::read_changes): a full read
-- finds them without scanning every certificate, a read of changes by revision.
CREATE INDEX certificates_revoked ON certificates (revision) WHERE revoked_at IS NOT NULL;
