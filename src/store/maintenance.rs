//! Keeping PostgreSQL's hot tables lean while big requests run.
//!
//! Every image job leaves dead row versions behind: apalis moves its row from
//! `Pending` to `Queued`, `Running` and `Done`, one version each, and the fan-in
//! rewrites the image's row and its request's counters. The queue's fetch
//! (`apalis.get_jobs`) walks the partial index of due jobs, skipping every dead entry
//! in it until a vacuum removes them, so without one that walk grows with every job
//! done. Autovacuum would clean up, but its default threshold (20 % of the table) comes late
//! for a queue table, and a server may run with it off. So the workers do it
//! themselves ([`Db::tidy`], run every few seconds by `jobs::tidy`): a table with more
//! than [`DEAD_ROWS`] dead versions is vacuumed and analysed. `skip_locked` lets a
//! worker pass over a table another worker is vacuuming already. SQLite has no such
//! cost (its b-trees drop deleted entries at once).
//!
//! The queue keeps every job it ran, with its payload, as a `Done` row: a table that
//! would otherwise grow by a row per image for the life of the service. The workers
//! delete those finished longer than `JOB_RETENTION` ago ([`Db::purge_done_jobs`]).
//! A finished job's row is also what makes a second push of its idempotency key a
//! no-op, so the retention is far longer than any redelivery can come late (and
//! every job checks the state it acts on anyway). Jobs that gave up (`Failed` with
//! no attempt left, `Killed`) are kept: they are what an operator looks into.

use std::time::Duration;

use super::{Db, Pool, StoreError, Tx};

/// Dead row versions in one table above which it is vacuumed: a few seconds of jobs at
/// full speed, and a vacuum of the tables a 100,000-image request leaves takes well
/// under a second.
pub const DEAD_ROWS: i64 = 10_000;

/// The tables every image job rewrites, as PostgreSQL names them in a vacuum. The
/// names are constants (never input): they are written into the statement.
const HOT_TABLES: [&str; 3] = ["apalis.jobs", "images", "requests"];

/// Finished jobs deleted per statement: each statement is one short write (on
/// SQLite the write lock every job's outcome waits for).
pub const PURGE_BATCH: i64 = 1_000;

/// The purge on SQLite: apalis-sqlite stores `done_at` as Unix seconds. The `in` term
/// restates the condition of apalis' index of finished jobs (`status`, `done_at`), which
/// SQLite uses only when the query names it; without it the purge read every `Done`
/// row, under the write lock, each minute.
pub const PURGE_SQLITE_SQL: &str = "delete from Jobs where id in (
    select id from Jobs
     where status in ('Done', 'Failed', 'Killed') and status = 'Done'
       and done_at < strftime('%s', 'now') - $1
     limit $2)";

/// The purge on PostgreSQL, served by our partial index of `Done` jobs by `done_at`
/// (`migrations/postgres/…_jobs_done_at.sql`; apalis has no index on either column).
pub const PURGE_POSTGRES_SQL: &str = "delete from apalis.jobs where id in (
    select id from apalis.jobs
     where status = 'Done' and done_at < now() - make_interval(secs => $1)
     limit $2
     for update skip locked)";

/// The workers not seen for longer than `$1` seconds that no job names. apalis adds a
/// row per worker start (names are unique per process start, and per restart) and
/// never deletes one. A worker any job row names in `lock_by` is kept: apalis hands
/// `Running` and `Queued` jobs back by joining them to their worker's row, and the jobs
/// table's foreign key refuses to lose the worker of a finished one (deleting it would
/// fail the whole statement). Such a worker goes once the done-job purge has removed
/// its jobs; those of kept failed and killed jobs stay with them.
const PURGE_WORKERS_SQLITE_SQL: &str = "delete from Workers
     where last_seen < strftime('%s', 'now') - $1
       and not exists (select 1 from Jobs where Jobs.lock_by = Workers.id)";

/// [`PURGE_WORKERS_SQLITE_SQL`] on PostgreSQL.
const PURGE_WORKERS_POSTGRES_SQL: &str = "delete from apalis.workers w
     where w.last_seen < now() - make_interval(secs => $1)
       and not exists (select 1 from apalis.jobs j where j.lock_by = w.id)";

/// A table that was vacuumed, and how many dead row versions it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacuumed {
    /// The table.
    pub table: &'static str,
    /// Dead row versions counted before the vacuum.
    pub dead_rows: i64,
}

impl Db {
    /// Vacuums (and analyses) each hot table with more than [`DEAD_ROWS`] dead row
    /// versions; returns what it vacuumed. Nothing to do on SQLite.
    pub async fn tidy(&self) -> Result<Vec<Vacuumed>, StoreError> {
        let Pool::Postgres(p) = self.pool() else {
            return Ok(Vec::new());
        };
        let mut vacuumed = Vec::new();
        for table in HOT_TABLES {
            // The statistics lag by up to a second: good enough for a threshold.
            let dead: Option<i64> = sqlx::query_scalar(
                "select n_dead_tup from pg_stat_user_tables where relid = to_regclass($1)",
            )
            .bind(table)
            .fetch_optional(p)
            .await?;
            let dead_rows = dead.unwrap_or(0);
            if dead_rows < DEAD_ROWS {
                continue;
            }
            // The simple protocol: VACUUM cannot run inside a transaction block, which
            // a prepared statement's implicit transaction may count as.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "vacuum (analyze, skip_locked) {table}"
            )))
            .execute(p)
            .await?;
            vacuumed.push(Vacuumed { table, dead_rows });
        }
        Ok(vacuumed)
    }

    /// Deletes up to [`PURGE_BATCH`] jobs that finished (`Done`) more than
    /// `retention` ago; returns how many. Several workers may purge at once: on
    /// PostgreSQL each passes over the rows another one is deleting.
    pub async fn purge_done_jobs(&self, retention: Duration) -> Result<u64, StoreError> {
        let sql = [PURGE_SQLITE_SQL, PURGE_POSTGRES_SQL];
        self.delete_older_than(sql, retention, Some(PURGE_BATCH))
            .await
    }

    /// Deletes the workers not seen for `retention` that no job names (see
    /// [`PURGE_WORKERS_SQLITE_SQL`]); returns how many. The dashboard lists fewer
    /// long-gone workers, and the workers' table stops growing with every start.
    pub async fn purge_stale_workers(&self, retention: Duration) -> Result<u64, StoreError> {
        let sql = [PURGE_WORKERS_SQLITE_SQL, PURGE_WORKERS_POSTGRES_SQL];
        self.delete_older_than(sql, retention, None).await
    }

    /// One delete of rows older than `age`, in a write transaction: the SQLite or the
    /// PostgreSQL statement of `sql`, `$1` the age in seconds (a float on PostgreSQL,
    /// as `make_interval` takes it) and `$2` the most rows when `limit` is given;
    /// returns how many went.
    async fn delete_older_than(
        &self,
        [sqlite, postgres]: [&'static str; 2],
        age: Duration,
        limit: Option<i64>,
    ) -> Result<u64, StoreError> {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        let deleted = match &mut tx {
            Tx::Sqlite(t) => {
                let query = sqlx::query(sqlite).bind(secs);
                let query = match limit {
                    Some(n) => query.bind(n),
                    None => query,
                };
                query.execute(&mut **t).await?.rows_affected()
            }
            Tx::Postgres(t) => {
                let query = sqlx::query(postgres).bind(secs as f64);
                let query = match limit {
                    Some(n) => query.bind(n),
                    None => query,
                };
                query.execute(&mut **t).await?.rows_affected()
            }
        };
        tx.commit().await?;
        Ok(deleted)
    }
}
