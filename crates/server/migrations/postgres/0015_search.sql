-- Search by name: a trigram index over every node's name (any substring,
-- any case) led by the namespace, so a search reads only the matches in
-- the namespaces it asks about; updated in the same transaction as each
-- change, so it is never stale. pg_trgm and btree_gin ship with
-- PostgreSQL and are trusted extensions: a role with CREATE on the
-- database (its owner) may create them.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX nodes_name_trgm ON nodes USING gin (namespace_id, lower(name) gin_trgm_ops);
