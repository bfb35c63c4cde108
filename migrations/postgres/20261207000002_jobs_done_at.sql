-- The workers delete the jobs finished longer than JOB_RETENTION ago, a batch every
-- minute (`store::maintenance`). apalis has no index on `status` or `done_at`, so
-- each purge would scan the whole table, a week of jobs; this one holds just the
-- finished jobs, by when they finished (one entry per job, written at its ack).
create index if not exists jobs_done_at on apalis.jobs (done_at) where status = 'Done';
