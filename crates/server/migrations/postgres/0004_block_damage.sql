-- Set when a read found the block's stored copy damaged (or gone). A
-- damaged block counts as missing for every user, and the next upload of
-- its bytes replaces the record with its own copy.
ALTER TABLE blocks ADD COLUMN damaged_ms BIGINT;
