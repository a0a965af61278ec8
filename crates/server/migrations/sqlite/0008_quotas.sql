-- Quotas. A user's usage is the logical size of every revision their
-- namespaces keep: current files, files in the trash and old revisions.
-- It changes in the transaction of each change, so it is never counted by
-- scanning after this. NULL quota: no limit.
ALTER TABLE users ADD COLUMN quota_bytes INTEGER;
ALTER TABLE users ADD COLUMN used_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE users SET used_bytes = COALESCE((
    SELECT SUM(r.size) FROM revisions r
    JOIN namespaces n ON n.id = r.namespace_id
    WHERE n.owner_user_id = users.id), 0);
