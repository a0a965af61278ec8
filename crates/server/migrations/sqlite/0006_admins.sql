-- Administrators may see and run the server's background workers over
-- HTTP. The first user ever created is one; on an existing installation
-- that is the user with the lowest id.
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET is_admin = TRUE WHERE id = (SELECT MIN(id) FROM users);
