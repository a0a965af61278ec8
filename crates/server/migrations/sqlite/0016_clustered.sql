-- Tables keyed by their primary key alone, stored in its order (WITHOUT
-- ROWID): each row once, instead of once in the table and again in the
-- key's index. These rows are small and always found by their key (a
-- namespace's journal by position, a revision's blocks by revision, a
-- user's blocks by id), so this also reads fewer pages. About a tenth of
-- the database for a tree of small files. Nothing refers to their rowids.

CREATE TABLE journal_new (
    namespace_id  INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    node_id       TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    old_path      TEXT,
    rev           INTEGER,
    node_kind     TEXT    NOT NULL,
    size          INTEGER,
    content_hash  BLOB,
    device        TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, seq)
) WITHOUT ROWID;
INSERT INTO journal_new (namespace_id, seq, kind, node_id, path, old_path, rev, node_kind, size, content_hash, device, created_ms)
    SELECT namespace_id, seq, kind, node_id, path, old_path, rev, node_kind, size, content_hash, device, created_ms FROM journal;
DROP TABLE journal;
ALTER TABLE journal_new RENAME TO journal;

CREATE TABLE revisions_new (
    namespace_id  INTEGER NOT NULL,
    node_id       TEXT    NOT NULL,
    rev           INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    content_hash  BLOB    NOT NULL,
    chunker       TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    blocks_key    BLOB,
    pinned        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (namespace_id, node_id, rev)
) WITHOUT ROWID;
INSERT INTO revisions_new (namespace_id, node_id, rev, size, content_hash, chunker, device, created_ms, blocks_key, pinned)
    SELECT namespace_id, node_id, rev, size, content_hash, chunker, device, created_ms, blocks_key, pinned FROM revisions;
DROP TABLE revisions;
ALTER TABLE revisions_new RENAME TO revisions;
CREATE INDEX revisions_blocks_key ON revisions(namespace_id, blocks_key) WHERE blocks_key IS NOT NULL;

CREATE TABLE revision_blocks_new (
    namespace_id  INTEGER NOT NULL,
    node_id       TEXT    NOT NULL,
    rev           INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    block_id      BLOB    NOT NULL,
    file_offset   INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, node_id, rev, idx)
) WITHOUT ROWID;
INSERT INTO revision_blocks_new (namespace_id, node_id, rev, idx, block_id, file_offset, size)
    SELECT namespace_id, node_id, rev, idx, block_id, file_offset, size FROM revision_blocks;
DROP TABLE revision_blocks;
ALTER TABLE revision_blocks_new RENAME TO revision_blocks;

CREATE TABLE user_blocks_new (
    user_id   INTEGER NOT NULL,
    block_id  BLOB    NOT NULL,
    PRIMARY KEY (user_id, block_id)
) WITHOUT ROWID;
INSERT INTO user_blocks_new (user_id, block_id) SELECT user_id, block_id FROM user_blocks;
DROP TABLE user_blocks;
ALTER TABLE user_blocks_new RENAME TO user_blocks;
CREATE INDEX user_blocks_block ON user_blocks(block_id);
