-- Tessera metadata schema, PostgreSQL flavour. Keep in step with ../sqlite.
-- Tables holding namespace data lead their keys with namespace_id.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    root_ns       BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE namespaces (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_user_id BIGINT,
    root_node_id  TEXT    NOT NULL,
    journal_seq   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
    token_hash  BYTEA    PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    device      TEXT    NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);

CREATE TABLE data_keys (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    wrapped     BYTEA    NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE nodes (
    namespace_id  BIGINT NOT NULL,
    id            TEXT    NOT NULL,
    parent_id     TEXT,
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('file', 'folder')),
    rev           BIGINT NOT NULL DEFAULT 0,
    size          BIGINT NOT NULL DEFAULT 0,
    content_hash  BYTEA,
    modified_ms   BIGINT NOT NULL,
    deleted_ms    BIGINT,
    -- Where a trashed node lived, so the trash can show and restore it.
    deleted_path  TEXT,
    -- Set while an upload of new content is under way ("syncing").
    pending_ms    BIGINT,
    PRIMARY KEY (namespace_id, id)
);
CREATE UNIQUE INDEX nodes_live_name ON nodes(namespace_id, parent_id, name_key) WHERE deleted_ms IS NULL;
CREATE INDEX nodes_parent ON nodes(namespace_id, parent_id);

CREATE TABLE revisions (
    namespace_id  BIGINT NOT NULL,
    node_id       TEXT    NOT NULL,
    rev           BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    content_hash  BYTEA    NOT NULL,
    chunker       TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, node_id, rev)
);

CREATE TABLE revision_blocks (
    namespace_id  BIGINT NOT NULL,
    node_id       TEXT    NOT NULL,
    rev           BIGINT NOT NULL,
    idx           BIGINT NOT NULL,
    block_id      BYTEA    NOT NULL,
    file_offset   BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, node_id, rev, idx)
);

-- One row per distinct block across all users (global dedup). A block may
-- live inside a larger object (packs), hence object/offset/length.
CREATE TABLE blocks (
    id             BYTEA    PRIMARY KEY,
    object         TEXT    NOT NULL,
    obj_offset     BIGINT NOT NULL,
    obj_length     BIGINT NOT NULL,
    plain_len      BIGINT NOT NULL,
    refcount       BIGINT NOT NULL DEFAULT 0,
    zero_since_ms  BIGINT,
    created_ms     BIGINT NOT NULL
);
CREATE INDEX blocks_zero ON blocks(zero_since_ms) WHERE zero_since_ms IS NOT NULL;

-- Blocks a user has uploaded or can read: the only ones the server will
-- admit to having when that user asks, so dedup is no existence oracle.
CREATE TABLE user_blocks (
    user_id   BIGINT NOT NULL,
    block_id  BYTEA    NOT NULL,
    PRIMARY KEY (user_id, block_id)
);

CREATE TABLE journal (
    namespace_id  BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    kind          TEXT    NOT NULL,
    node_id       TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    old_path      TEXT,
    rev           BIGINT,
    -- The node as this change left it, so clients can apply the journal
    -- without asking for each entry.
    node_kind     TEXT    NOT NULL,
    size          BIGINT,
    content_hash  BYTEA,
    device        TEXT    NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, seq)
);
