-- Planner statistics for every index of apalis' Jobs table (SQLite only; PostgreSQL
-- gathers its own). The first set (20261203000002) pinned three indexes; the ANALYZE it
-- ran on a new, empty database wrote "0 rows" for the others, and none for the status
-- indexes. With those, SQLite marks a fetched job Running (`UPDATE Jobs ... WHERE id IN
-- (SELECT value FROM json_each(?1)) AND (status = 'Queued' OR status = 'Pending' OR ...)`)
-- by walking every Pending job through idx_jobs_status_run_at instead of looking its ids
-- up: each job cost a pass over the whole queue, and a 100,000-image request ran at a
-- tenth of a 2,000-image one's rate. These rows (the shape ANALYZE writes: rows, then
-- rows per distinct prefix) say what holds for a working queue: a status or a job type
-- matches many jobs, an id or an idempotency key one.
DELETE FROM sqlite_stat1 WHERE tbl = 'Jobs';
INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
    ('Jobs', 'sqlite_autoindex_Jobs_1', '1000000 1'),
    ('Jobs', 'TIdx', '1000000 1'),
    ('Jobs', 'LIdx', '1000000 100000'),
    ('Jobs', 'idx_jobs_status_run_at', '1000000 200000 2'),
    ('Jobs', 'idx_jobs_job_type_status_run_at', '1000000 330000 100000 2'),
    ('Jobs', 'idx_jobs_idempotency_key', '1000000 330000 1'),
    ('Jobs', 'idx_jobs_completed_done_at', '1000000 330000 2 2'),
    ('Jobs', 'idx_jobs_claimable', '100000 33000 33000'),
    ('Jobs', 'idx_jobs_pending', '100000 33000 33000 2 1'),
    ('Jobs', 'idx_jobs_failed', '1000 330 330 2 1'),
    ('Jobs', 'idx_jobs_running', '100 2');
ANALYZE sqlite_schema;
