-- Every row has its DER now (converted after 0003): the PEM column goes.
ALTER TABLE certificates DROP COLUMN pem;
ALTER TABLE certificates ALTER COLUMN der SET NOT NULL;
