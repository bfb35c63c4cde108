//! The job queue's side of the database: pushing jobs into apalis' own table inside
//! one of our transactions (so a request's rows and its jobs commit together), and a
//! read-only look at its depth for the gauge.

use std::time::{Duration, SystemTime};

use apalis::prelude::TaskBuilder;

use super::{Db, Pool, StoreError, Tx};

/// One job to push: its JSON payload, its idempotency key and when it is due.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The payload, as apalis' JSON codec stores it.
    pub args: Vec<u8>,
    /// apalis keeps `UNIQUE(job_type, idempotency_key)`: a key already taken adds nothing.
    pub idempotency_key: String,
    /// Not run before this.
    pub run_at: SystemTime,
    /// How often apalis runs it when its handler fails.
    pub max_attempts: usize,
}

/// Jobs per INSERT on SQLite: 7 bound values each, far under SQLite's 32766 parameters.
const SQLITE_PUSH_CHUNK: usize = 1000;

/// Jobs per INSERT on PostgreSQL (one array per column, so no parameter limit): the
/// tasks and their encoded arrays are built a chunk at a time, so a 100,000-job push
/// holds a few MB of them at once rather than every one several times over.
const POSTGRES_PUSH_CHUNK: usize = 5000;

/// The task apalis stores for `j`, its due time rounded up (see [`rounded_up`]) and
/// moved by `skew` whole seconds (see [`clock_skew`]).
fn task_of(j: &NewJob, skew: i64, now: SystemTime) -> apalis_sqlite::SqliteTask {
    TaskBuilder::new(j.args.clone())
        .max_attempts(j.max_attempts)
        .idempotency_key(j.idempotency_key.as_str())
        .run_at_time(shifted(rounded_up(j.run_at, now), skew))
        .build()
}

/// `at` as the queue keeps it. The queue keeps whole seconds and drops the fraction,
/// so a time after `now` is rounded up to the next whole second: a `Retry-After: 7`
/// waits at least 7 s, not 6 and a bit, and a 0.6 s backoff is not due at once. A job
/// due now (or already) stays due now.
fn rounded_up(at: SystemTime, now: SystemTime) -> SystemTime {
    let fraction = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    if at <= now || fraction == 0 {
        at
    } else {
        at + Duration::from_nanos(u64::from(1_000_000_000 - fraction))
    }
}

/// `at` moved by `skew` seconds (either way).
fn shifted(at: SystemTime, skew: i64) -> SystemTime {
    let by = Duration::from_secs(skew.unsigned_abs());
    if skew >= 0 {
        at + by
    } else {
        at.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The database's clock minus this process', in whole seconds. A due time is reckoned
/// on this machine's clock, and PostgreSQL's queue compares it with its own `now()`:
/// a worker whose clock is 3 s behind the database's would have a 5 s backoff due in
/// 2, one 3 s ahead would hold every job due now for 3 s. Whole seconds keep the due
/// times' rounding up ([`rounded_up`]).
async fn clock_skew(tx: &mut sqlx::PgConnection) -> Result<i64, StoreError> {
    let database: f64 = sqlx::query_scalar("select extract(epoch from clock_timestamp())::float8")
        .fetch_one(&mut *tx)
        .await?;
    let ours = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Ok((database - ours).round() as i64)
}

impl Db {
    /// Pushes `jobs` into `queue` inside the caller's transaction; a job whose key is
    /// already taken is left out, and the transaction stays usable either way.
    pub async fn push_jobs(tx: &mut Tx, queue: &str, jobs: &[NewJob]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match tx {
            Tx::Sqlite(t) => push_sqlite(t, queue, jobs).await,
            Tx::Postgres(t) => push_postgres(t, queue, jobs).await,
        }
    }
}

/// The rows `apalis_sqlite::queries::push_tasks` writes, with the same values and the
/// same `on conflict … do nothing`, but many per statement: it runs one INSERT per job,
/// and a 10k-row upload spent most of its time there (1.6 s to the 202).
async fn push_sqlite(
    tx: &mut sqlx::SqliteConnection,
    queue: &str,
    jobs: &[NewJob],
) -> Result<(), StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for chunk in jobs.chunks(SQLITE_PUSH_CHUNK) {
        let at = SystemTime::now();
        let chunk: Vec<_> = chunk.iter().map(|j| task_of(j, 0, at)).collect();
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "insert into Jobs (job, id, job_type, status, attempts, max_attempts, run_at, \
             priority, metadata, idempotency_key) ",
        );
        q.push_values(chunk, |mut row, task| {
            let id = task
                .task_id()
                .as_ref()
                .map_or_else(|| ulid::Ulid::generate().to_string(), |id| id.to_string());
            row.push_bind(task.args.clone())
                .push_bind(id)
                .push_bind(queue.to_owned())
                .push("'Pending'")
                .push("0")
                .push_bind(task.max_attempts().unwrap_or(25) as i64)
                .push_bind(task.run_at().map_or(now, |t| t as i64))
                .push_bind(task.priority().unwrap_or_default() as i64)
                .push_bind(serde_json::to_string(task.metadata()).unwrap_or_default())
                .push_bind(task.idempotency_key().map(str::to_owned));
        });
        q.push(" on conflict (job_type, idempotency_key) do nothing");
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// apalis-postgres has the unique index but no `on conflict do nothing`: a duplicate
/// key fails the insert, which would abort the whole transaction, so the push runs
/// under a savepoint. A duplicate rolls back to it, taking the other jobs of the push
/// with it; they are then pushed one per savepoint, so that, as on SQLite, only the
/// duplicates are skipped.
async fn push_postgres(
    tx: &mut sqlx::PgConnection,
    queue: &str,
    jobs: &[NewJob],
) -> Result<(), StoreError> {
    let skew = clock_skew(tx).await?;
    if skew != 0 {
        tracing::debug!(
            skew,
            "the database's clock differs from ours by this many seconds"
        );
    }
    if try_push_postgres(tx, queue, jobs, skew).await? || jobs.len() == 1 {
        return Ok(());
    }
    for job in jobs {
        try_push_postgres(tx, queue, std::slice::from_ref(job), skew).await?;
    }
    Ok(())
}

/// Pushes `jobs` under a savepoint: `false` when a duplicate key rolled them all back.
async fn try_push_postgres(
    tx: &mut sqlx::PgConnection,
    queue: &str,
    jobs: &[NewJob],
    skew: i64,
) -> Result<bool, StoreError> {
    sqlx::query("savepoint pixbatch_push")
        .execute(&mut *tx)
        .await?;
    let mut pushed = Ok(());
    for chunk in jobs.chunks(POSTGRES_PUSH_CHUNK) {
        let at = SystemTime::now();
        let tasks = chunk.iter().map(|j| task_of(j, skew, at)).collect();
        pushed = apalis_postgres::queries::push_tasks(&mut *tx, queue, tasks).await;
        if pushed.is_err() {
            break;
        }
    }
    match pushed {
        Ok(()) => {
            sqlx::query("release savepoint pixbatch_push")
                .execute(&mut *tx)
                .await?;
            Ok(true)
        }
        Err(apalis_postgres::Error::Database(sqlx::Error::Database(e)))
            if e.is_unique_violation() =>
        {
            tracing::debug!(queue, "job already pushed (same idempotency key)");
            sqlx::query("rollback to savepoint pixbatch_push")
                .execute(&mut *tx)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Jobs of one queue in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue (apalis' `job_type`, e.g. `pixbatch.images`).
    pub queue: String,
    /// `Pending` (due or delayed), `Queued` or `Running`.
    pub status: String,
    /// How many.
    pub jobs: i64,
}

impl Db {
    /// Counts the unfinished jobs of every queue by status. Finished jobs (`Done`,
    /// `Failed`, `Killed`) stay in the table and are not counted.
    pub async fn queue_depth(&self) -> Result<Vec<QueueDepth>, StoreError> {
        // Same columns on both backends; PostgreSQL keeps them in schema `apalis`.
        let rows: Vec<(String, String, i64)> = match self.pool() {
            Pool::Sqlite(p) => {
                sqlx::query_as(
                    "select job_type, status, count(*) from Jobs \
                     where status in ('Pending', 'Queued', 'Running') \
                     group by job_type, status",
                )
                .fetch_all(p)
                .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_as(
                    "select job_type, status, count(*) from apalis.jobs \
                     where status in ('Pending', 'Queued', 'Running') \
                     group by job_type, status",
                )
                .fetch_all(p)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(queue, status, jobs)| QueueDepth {
                queue,
                status,
                jobs,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_rounded_up_to_the_queues_whole_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_300);
        let at = |ms| {
            rounded_up(now + Duration::from_millis(ms), now)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
        };
        assert_eq!(at(0), Duration::from_millis(1_000_300), "due now stays now");
        assert_eq!(at(600), Duration::from_secs(1001));
        assert_eq!(at(700), Duration::from_secs(1001));
        assert_eq!(at(7_000), Duration::from_secs(1008));
    }

    #[test]
    fn a_due_time_moves_by_the_clock_skew() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            shifted(at, 3),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_003)
        );
        assert_eq!(
            shifted(at, -3),
            SystemTime::UNIX_EPOCH + Duration::from_secs(997)
        );
        assert_eq!(shifted(at, 0), at);
    }
}
