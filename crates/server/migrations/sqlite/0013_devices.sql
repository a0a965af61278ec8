-- A signed-in device as its owner sees it in their list of devices: when
-- it was last heard from, and the program it signed in with.
ALTER TABLE tokens ADD COLUMN last_seen_ms INTEGER;
ALTER TABLE tokens ADD COLUMN client TEXT;
