-- Certificates are kept as DER (three quarters of the PEM's size, and no text to parse).
-- The PEM of the rows already there is converted when the inventory is opened (the store's
-- `migrations` module, between this migration and the next, which removes the PEM column).
ALTER TABLE certificates ADD COLUMN der BLOB;

-- What `tidy` looks for: expired certificates, replaced recovery tokens past their expiry,
-- old audit records (without these it would read whole tables every time).
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX recovery_expires_at ON recovery (expires_at);
CREATE INDEX audit_at ON audit (at);
