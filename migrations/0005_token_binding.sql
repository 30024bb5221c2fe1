-- Tokens encrypted with their connection id as associated data, so that a
-- ciphertext moved to another row does not decrypt. Rows written before
-- (false) stay readable; `connections rotate-key` rewrites them bound.
ALTER TABLE connections ADD COLUMN token_bound boolean NOT NULL DEFAULT false;
