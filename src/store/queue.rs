//! Read-only look at the job queue's own table, for the queue-depth gauge.

use super::{Db, Pool, StoreError};

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
