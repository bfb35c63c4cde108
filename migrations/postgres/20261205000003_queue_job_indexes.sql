-- apalis.jobs indexes that cost every job without serving it.
--
-- apalis-postgres 1.0.0 leaves two pairs of duplicates (its first migration's
-- `unique_job_id` on id beside the primary key added later, and `LIdx` on lock_by
-- beside `idx_apalis_jobs_lock_by`), and none of apalis' job updates (Pending → Queued
-- → Running → Done) is heap-only, so each version of each job wrote an entry into all
-- six indexes.
--
-- The lock_by index also misled the ack (`handle_result.sql`: the acked jobs, joined
-- by id, `WHERE jobs.lock_by = <worker>`): the planner could read every job the worker
-- had ever run through it and hash them against the handful acked, a walk that grew
-- with the queue's history. Finished jobs keep their `lock_by` (the dashboard shows
-- which worker ran a job), so that set never shrinks. Without an index on lock_by
-- alone the ack looks its jobs up by primary key. What does search by worker is the
-- heartbeat's re-enqueue of a dead worker's unfinished jobs (`status` Running or
-- Queued): it gets an index of just those.
drop index if exists apalis.unique_job_id;
drop index if exists apalis.lidx;
drop index if exists apalis.idx_apalis_jobs_lock_by;
create index if not exists jobs_unfinished_lock_by on apalis.jobs (lock_by)
    where status = 'Running' or status = 'Queued';
