-- Planner statistics for apalis' Jobs table (SQLite only; PostgreSQL gathers its own).
-- apalis-sqlite acks a job with `UPDATE Jobs ... FROM json_each(?) WHERE Jobs.id = ...
-- AND Jobs.lock_by = ?`. Without statistics SQLite guesses ten rows per lock_by and
-- walks every job the worker ever ran (lock_by stays set on Done jobs), parsing the JSON
-- argument once per row: quadratic in the number of jobs. These rows (the shape SQLite's
-- own ANALYZE writes, documented as a way to fix plans) say that lock_by selects many
-- rows and id one, so the ack looks its jobs up by id.
-- ANALYZE creates sqlite_stat1 (and, on an existing database, measures it once).
ANALYZE;
DELETE FROM sqlite_stat1 WHERE tbl = 'Jobs' AND idx IN ('LIdx', 'TIdx', 'sqlite_autoindex_Jobs_1');
INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
    ('Jobs', 'LIdx', '1000000 100000'),
    ('Jobs', 'TIdx', '1000000 1'),
    ('Jobs', 'sqlite_autoindex_Jobs_1', '1000000 1');
ANALYZE sqlite_schema;
