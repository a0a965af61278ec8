-- `level`: the zstd level the `recompress` worker last dealt with the block
-- at (rewritten, or left where it was because that did not pay; 0: in the
-- cold tier, left unread), NULL while it is as it arrived (clients compress
-- at a fast level to keep up with the link). The partial index lists only blocks still as they
-- arrived, so the worker finds the next one in a short index that empties
-- as it goes.
ALTER TABLE blocks ADD COLUMN level INTEGER;
CREATE INDEX blocks_as_sent ON blocks(created_ms) WHERE level IS NULL;
