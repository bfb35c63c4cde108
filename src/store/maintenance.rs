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

use super::{Db, Pool, StoreError};

/// Dead row versions in one table above which it is vacuumed: a few seconds of jobs at
/// full speed, and a vacuum of the tables a 100,000-image request leaves takes well
/// under a second.
pub const DEAD_ROWS: i64 = 10_000;

/// The tables every image job rewrites, as PostgreSQL names them in a vacuum. The
/// names are constants (never input): they are written into the statement.
const HOT_TABLES: [&str; 3] = ["apalis.jobs", "images", "requests"];

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
}
