-- Search by name: a trigram index over every node's name, kept by triggers
-- in the same transaction as each change, so it is never stale. Keyed by
-- the node row's rowid (nodes is never VACUUMed, which could renumber it).
CREATE VIRTUAL TABLE node_names USING fts5(
    name, content = 'nodes', content_rowid = 'rowid', tokenize = 'trigram'
);
CREATE TRIGGER node_names_insert AFTER INSERT ON nodes BEGIN
    INSERT INTO node_names (rowid, name) VALUES (new.rowid, new.name);
END;
CREATE TRIGGER node_names_delete AFTER DELETE ON nodes BEGIN
    INSERT INTO node_names (node_names, rowid, name) VALUES ('delete', old.rowid, old.name);
END;
CREATE TRIGGER node_names_rename AFTER UPDATE OF name ON nodes BEGIN
    INSERT INTO node_names (node_names, rowid, name) VALUES ('delete', old.rowid, old.name);
    INSERT INTO node_names (rowid, name) VALUES (new.rowid, new.name);
END;
INSERT INTO node_names (node_names) VALUES ('rebuild');
