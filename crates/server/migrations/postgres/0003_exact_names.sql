-- Names are exact: NFC and case-sensitive, as on Linux, so `xt_DSCP.h` and
-- `xt_dscp.h` are two files. Existing names were unique ignoring case, so
-- they are unique exactly too: no data changes. `name_key` (the name folded
-- to lowercase) stays, as the sort key of listings only.
DROP INDEX nodes_live_name;
CREATE UNIQUE INDEX nodes_live_name ON nodes(namespace_id, parent_id, name) WHERE deleted_ms IS NULL;
