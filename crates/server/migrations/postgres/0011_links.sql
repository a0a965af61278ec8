-- Links that let anyone holding them view a file or a folder without an
-- account. A link names a node, not a path, so it follows the node through
-- renames and moves and stops working once the node is trashed. The token
-- itself is never stored, only its BLAKE3 hash; `id` is what the owner
-- lists and revokes by. A revoked link's row is deleted. An upload-only
-- link (a file request) takes files into its folder and shows nothing.
CREATE TABLE links (
    id            TEXT    PRIMARY KEY,
    token_hash    BYTEA   NOT NULL UNIQUE,
    user_id       BIGINT  NOT NULL REFERENCES users(id),
    namespace_id  BIGINT  NOT NULL,
    node_id       TEXT    NOT NULL,
    password_hash TEXT,
    upload_only   BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms    BIGINT  NOT NULL,
    expires_ms    BIGINT
);
CREATE INDEX links_user ON links(user_id);
