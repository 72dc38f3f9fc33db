-- Certificates are kept as DER (three quarters of the PEM's size, and no text to parse).
-- The PEM of the rows already there is converted when the inventory is opened (the store's
-- `migrations` module, between this migration and the next, which removes the PEM column).
ALTER TABLE certificates ADD COLUMN der BLOB;
