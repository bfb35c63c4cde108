-- Of an image's tries (attempts), those that failed because the blob store refused
-- the output (a full disk, a read-only mount, S3 down). They do not count against
-- FETCH_ATTEMPTS: the store is the service's own, and an image waits for it, retried
-- with capped backoff, as the output CSV does. Reset with attempts by a retry.
alter table images add column storage_tries bigint not null default 0;
