-- The block list an upload under way announced with its first commit, so
-- that another device can fetch its blocks as they are stored instead of
-- after the commit (streaming sync). A row counts only while its node
-- still carries pending_ms; the expiry worker removes the rest. blocks
-- holds each block's 32-byte id and 8-byte little-endian size, in order.
CREATE TABLE pending_lists (
    namespace_id  INTEGER NOT NULL,
    node_id       TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_hash  BLOB NOT NULL,
    chunker       TEXT NOT NULL,
    blocks        BLOB NOT NULL,
    since_ms      INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, node_id)
);
