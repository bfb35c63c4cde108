-- The queue's fetch walks only the jobs it takes.
--
-- `apalis.get_jobs` (apalis-postgres 1.0.0) is a SQL function: the due jobs it picks
-- (`LIMIT v_job_count`) are planned with the limit as a parameter, which the planner
-- guesses at 10 % of the table, so once the table has statistics the UPDATE that marks
-- them Queued joined them by hashing every row of `apalis.jobs` (a sequential scan,
-- 15 ms per fetch at 20,000 jobs and growing with them). Without hash and merge joins
-- inside the function the planner joins by the primary key, one probe per job taken.
-- Settings of the function only: nothing else is planned differently. A test
-- (`tests/api/plans.rs`) fails if an apalis upgrade replaces the function without them.
alter function apalis.get_jobs(text, text, integer) set enable_hashjoin = off;
alter function apalis.get_jobs(text, text, integer) set enable_mergejoin = off;
