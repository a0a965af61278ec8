-- State that every instance on one database must share.

-- Which instance runs each background worker, until when. An instance
-- renews its leases while it runs; a dead one's lapse and another takes over.
CREATE TABLE worker_leases (
    name      TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,
    until_ms  INTEGER NOT NULL
);

-- The login brake's counts per account and per client address, in a
-- window that starts at the first attempt.
CREATE TABLE login_attempts (
    key        TEXT PRIMARY KEY,
    since_ms   INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    in_flight  INTEGER NOT NULL
);
CREATE INDEX login_attempts_since ON login_attempts (since_ms);

-- Instances alive (each writes seen_ms every few seconds) and the devices
-- holding a long poll on each.
CREATE TABLE instances (
    id       TEXT PRIMARY KEY,
    seen_ms  INTEGER NOT NULL
);
CREATE TABLE presence (
    instance  TEXT NOT NULL,
    user_id   INTEGER NOT NULL,
    device    TEXT NOT NULL,
    polls     INTEGER NOT NULL,
    PRIMARY KEY (instance, user_id, device)
);
CREATE INDEX presence_user ON presence (user_id);
