-- Storage lifecycle: collection of unreferenced blocks, pack compaction and
-- pinned revisions.

-- Objects no block record names any more, to be deleted from the object
-- store. Collection records them in the transaction that drops their last
-- block, and deletes them after; a crash in between leaves them here for
-- the next run, so nothing leaks.
CREATE TABLE doomed_objects (
    object    TEXT    PRIMARY KEY,
    since_ms  BIGINT NOT NULL
);

-- Bytes of a pack whose blocks were collected: the live share of a pack
-- is its recorded blocks over its size, and packs with freed bytes are the
-- candidates for compaction.
CREATE TABLE pack_freed (
    object       TEXT    PRIMARY KEY,
    freed_bytes  BIGINT NOT NULL
);

-- Collection asks which records name an object, and whether an upload
-- session still names a block.
CREATE INDEX blocks_object ON blocks(object);
CREATE INDEX upload_blocks_block ON upload_blocks(block_id);
CREATE INDEX upload_sessions_tail ON upload_sessions(tail_block) WHERE tail_block IS NOT NULL;
CREATE INDEX user_blocks_block ON user_blocks(block_id);

-- A pinned revision is never removed by the retention schedule.
ALTER TABLE revisions ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE;
