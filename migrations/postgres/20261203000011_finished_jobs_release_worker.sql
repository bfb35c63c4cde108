-- A finished job no longer names the worker that ran it.
--
-- apalis-postgres acknowledges a batch of jobs with an UPDATE that first finds them by
-- `lock_by = <worker>` (index idx_apalis_jobs_lock_by) and only then joins the ids it
-- was given, and its heartbeat counts the same way. Every finished job kept its
-- worker's name, so each acknowledgement walked every job that worker had ever run:
-- the cost per job grew with the request, and a 20,000-image request ran at 0.6x the
-- images/s of a 2,000-image one. Cleared when the job reaches a final or failed
-- status (a failed job that is tried again is locked anew), the index holds only the
-- jobs in flight. The dashboard then shows no worker for finished jobs.
create function pixbatch_release_finished_job() returns trigger
language plpgsql as $$
begin
    new.lock_by := null;
    return new;
end
$$;

create trigger pixbatch_release_finished_job
    before update of status on apalis.jobs
    for each row
    when (new.status in ('Done', 'Failed', 'Killed') and new.lock_by is not null)
    execute function pixbatch_release_finished_job();
