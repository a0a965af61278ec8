-- Tessera metadata schema, SQLite flavour. Keep in step with ../postgres.
-- Tables holding namespace data lead their keys with namespace_id.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    root_ns       INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL
);

CREATE TABLE namespaces (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_user_id INTEGER,
    root_node_id  TEXT    NOT NULL,
    journal_seq   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
    token_hash  BLOB    PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    device      TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);

CREATE TABLE data_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    wrapped     BLOB    NOT NULL,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE nodes (
    namespace_id  INTEGER NOT NULL,
    id            TEXT    NOT NULL,
    parent_id     TEXT,
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('file', 'folder')),
    rev           INTEGER NOT NULL DEFAULT 0,
    size          INTEGER NOT NULL DEFAULT 0,
    content_hash  BLOB,
    modified_ms   INTEGER NOT NULL,
    deleted_ms    INTEGER,
    -- Where a trashed node lived, so the trash can show and restore it.
    deleted_path  TEXT,
    -- Set while an upload of new content is under way ("syncing").
    pending_ms    INTEGER,
    PRIMARY KEY (namespace_id, id)
);
CREATE UNIQUE INDEX nodes_live_name ON nodes(namespace_id, parent_id, name_key) WHERE deleted_ms IS NULL;
CREATE INDEX nodes_parent ON nodes(namespace_id, parent_id);

CREATE TABLE revisions (
    namespace_id  INTEGER NOT NULL,
    node_id       TEXT    NOT NULL,
    rev           INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    content_hash  BLOB    NOT NULL,
    chunker       TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, node_id, rev)
);

CREATE TABLE revision_blocks (
    namespace_id  INTEGER NOT NULL,
    node_id       TEXT    NOT NULL,
    rev           INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    block_id      BLOB    NOT NULL,
    file_offset   INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, node_id, rev, idx)
);

-- One row per distinct block across all users (global dedup). A block may
-- live inside a larger object (packs), hence object/offset/length.
CREATE TABLE blocks (
    id             BLOB    PRIMARY KEY,
    object         TEXT    NOT NULL,
    obj_offset     INTEGER NOT NULL,
    obj_length     INTEGER NOT NULL,
    plain_len      INTEGER NOT NULL,
    refcount       INTEGER NOT NULL DEFAULT 0,
    zero_since_ms  INTEGER,
    created_ms     INTEGER NOT NULL
);
CREATE INDEX blocks_zero ON blocks(zero_since_ms) WHERE zero_since_ms IS NOT NULL;

-- Blocks a user has uploaded or can read: the only ones the server will
-- admit to having when that user asks, so dedup is no existence oracle.
CREATE TABLE user_blocks (
    user_id   INTEGER NOT NULL,
    block_id  BLOB    NOT NULL,
    PRIMARY KEY (user_id, block_id)
);

CREATE TABLE journal (
    namespace_id  INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    node_id       TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    old_path      TEXT,
    rev           INTEGER,
    -- The node as this change left it, so clients can apply the journal
    -- without asking for each entry.
    node_kind     TEXT    NOT NULL,
    size          INTEGER,
    content_hash  BLOB,
    device        TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, seq)
);
