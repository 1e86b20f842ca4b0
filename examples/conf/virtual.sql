-- Data of the example SQLite table (sqlite-virtual.cf). `npm start` builds
-- virtual.db from this file (scripts/sqlite-db.mjs) before serving.
CREATE TABLE virtual (
  address     TEXT NOT NULL,   -- lookup key: Postfix lower-cases keys before the query
  destination TEXT             -- NULL rows are skipped
);
INSERT INTO virtual (address, destination) VALUES
  ('carol@example.com', 'carol@mail.example.com'),
  ('o''neil@example.com', 'oneil@mail.example.com'),
  -- Several rows for one key are joined with commas.
  ('sales@example.com', 'alice@mail.example.com'),
  ('sales@example.com', 'bob@mail.example.com'),
  ('sales@example.com', NULL);
CREATE INDEX virtual_address ON virtual (address);
