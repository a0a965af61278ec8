-- Resumable uploads (TUS). A session's durable state: how far it got, the
-- blocks stored so far, the bytes after the last cut (kept as a block of
-- their own) and the saved hash state. Blocks named here have no revision
-- yet, so collection must treat them as referenced while the session lives.
CREATE TABLE upload_sessions (
    namespace_id  BIGINT NOT NULL,
    id            TEXT    NOT NULL,
    user_id       BIGINT NOT NULL,
    path          TEXT    NOT NULL,
    base_rev      BIGINT,
    length        BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL DEFAULT 0,
    block_count   BIGINT NOT NULL DEFAULT 0,
    tail_block    BYTEA,
    tail_len      BIGINT NOT NULL DEFAULT 0,
    hash_state    BYTEA    NOT NULL,
    metadata      TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL,
    -- Set when the upload completed: where the file landed.
    done_path     TEXT,
    done_rev      BIGINT,
    PRIMARY KEY (namespace_id, id)
);
CREATE INDEX upload_sessions_updated ON upload_sessions(updated_ms);

CREATE TABLE upload_blocks (
    namespace_id  BIGINT NOT NULL,
    session_id    TEXT    NOT NULL,
    idx           BIGINT NOT NULL,
    block_id      BYTEA    NOT NULL,
    size          BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, session_id, idx)
);
