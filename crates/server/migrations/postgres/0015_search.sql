-- Search by name: a trigram index over every node's name (any substring,
-- any case), updated in the same transaction as each change, so it is
-- never stale. pg_trgm ships with PostgreSQL and is a trusted extension:
-- the database's owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX nodes_name_trgm ON nodes USING gin (lower(name) gin_trgm_ops);
