-- Resumable uploads (TUS). A session's durable state: how far it got, the
-- blocks stored so far, the bytes after the last cut (kept as a block of
-- their own) and the saved hash state. Blocks named here have no revision
-- yet, so collection must treat them as referenced while the session lives.
CREATE TABLE upload_sessions (
    namespace_id  INTEGER NOT NULL,
    id            TEXT    NOT NULL,
    user_id       INTEGER NOT NULL,
    path          TEXT    NOT NULL,
    base_rev      INTEGER,
    length        INTEGER NOT NULL,
    upload_offset INTEGER NOT NULL DEFAULT 0,
    block_count   INTEGER NOT NULL DEFAULT 0,
    tail_block    BLOB,
    tail_len      INTEGER NOT NULL DEFAULT 0,
    hash_state    BLOB    NOT NULL,
    metadata      TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    -- Set when the upload completed: where the file landed.
    done_path     TEXT,
    done_rev      INTEGER,
    PRIMARY KEY (namespace_id, id)
);
CREATE INDEX upload_sessions_updated ON upload_sessions(updated_ms);

CREATE TABLE upload_blocks (
    namespace_id  INTEGER NOT NULL,
    session_id    TEXT    NOT NULL,
    idx           INTEGER NOT NULL,
    block_id      BLOB    NOT NULL,
    size          INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, session_id, idx)
);
