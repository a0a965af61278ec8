-- A revision's content hash is what the server computed, or verified by
-- reading the blocks. blocks_key (BLAKE3 of the chunker tag and the
-- ordered block ids and sizes) is set only on such revisions, so a later
-- commit of the same block list can trust the stored hash without reading
-- the blocks again. Revisions from before this migration keep it NULL:
-- their hash was the client's claim and is never used as proof.
ALTER TABLE revisions ADD COLUMN blocks_key BYTEA;
CREATE INDEX revisions_blocks_key ON revisions(namespace_id, blocks_key) WHERE blocks_key IS NOT NULL;
