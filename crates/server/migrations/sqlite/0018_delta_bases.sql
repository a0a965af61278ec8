-- `base`: the block this one is, or may be, stored as a delta against.
-- While `level` is NULL (the block is as it arrived) it is the commit's
-- note of the block this one replaced in the file's previous version; the
-- `recompress` worker then stores the block as a delta against it, when
-- that pays, or clears it. Once `level` is set, a `base` is what the
-- stored bytes need to be read, and a base is stored whole: collection
-- leaves a block alone while a delta names it (a note alone holds nothing
-- back). The partial index holds only the blocks that have one: edited
-- blocks waiting for the recompression, and deltas.
ALTER TABLE blocks ADD COLUMN base BLOB;
CREATE INDEX blocks_base ON blocks(base) WHERE base IS NOT NULL;
