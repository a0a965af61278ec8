-- Shared folders. A shared folder is a namespace of its own (its owner's
-- folder moved out of their root namespace, node ids and revisions kept);
-- every member, the owner too, mounts it at the top of their files under a
-- name of their own. A viewer reads; an editor also writes. `mount_seq`
-- is the position, in the member's root journal, of the entry that made
-- the mount: a cursor from before it reads the shared journal from its
-- start, which describes the folder whole.
CREATE TABLE mounts (
    user_id       INTEGER  NOT NULL REFERENCES users(id),
    namespace_id  INTEGER  NOT NULL REFERENCES namespaces(id),
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    mount_seq     INTEGER  NOT NULL,
    created_ms    INTEGER  NOT NULL,
    PRIMARY KEY (user_id, namespace_id)
);
CREATE UNIQUE INDEX mounts_name ON mounts(user_id, name);
CREATE INDEX mounts_ns ON mounts(namespace_id);
