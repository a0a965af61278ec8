-- Administered accounts. A disabled account cannot sign in and has no
-- sessions. A deleted one is disabled too and kept whole for the trash
-- period, restorable; then its files are purged (purge_begun_ms marks a
-- purge under way, which a restore can no longer stop) and the row stays
-- as a tombstone under a name no one can take (purged_ms).
ALTER TABLE users ADD COLUMN disabled_ms INTEGER;
ALTER TABLE users ADD COLUMN deleted_ms INTEGER;
ALTER TABLE users ADD COLUMN purge_begun_ms INTEGER;
ALTER TABLE users ADD COLUMN purged_ms INTEGER;
