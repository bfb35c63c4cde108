//! Everything that persists: our tables (through sqlx, SQL kept here and in
//! `migrations/`), the job queue's table that shares their database (jobs are pushed
//! inside our transactions, by `lifecycle`), a read-only look at the queue's depth,
//! and the blob store for CSVs and images (a local directory or an S3 bucket).

mod blob;
mod db;
mod maintenance;
mod queue;
mod requests;
mod sources;
mod webhooks;

pub use blob::{
    BlobError, BlobKey, BlobStore, BlobUpload, FaultKind, S3Config, S3Credentials, StorageConfig,
    StoredBlob, Writable, parse_endpoint,
};
pub use db::{Backend, CommitOutcome, Db, Pool, Tx, TxId, is_in_memory_sqlite};
pub(crate) use db::{with_pool, with_tx};
pub use maintenance::{DEAD_ROWS, PURGE_BATCH, PURGE_POSTGRES_SQL, PURGE_SQLITE_SQL, Vacuumed};
pub use queue::{NewJob, QueueDepth};
pub use requests::{
    BIG_REQUEST_IMAGES, FinishedBatch, HOT_QUERIES, ImageFinish, ImageOutcomeUpdate, ImageRecord,
    ImageSlot, ImageWork, NewImage, NewProduct, NewRequest, OutputSourceRow, RequestRecord,
};
pub use sources::{Source, SourceFacts};
pub use webhooks::{AttemptRecord, EventRecord, superseded_by};

/// Why a storage operation failed. None of these are the caller's fault: the API maps
/// them to a generic 5xx (503 where a retry may help) and logs the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The job queue refused a push.
    #[error("job queue: {0}")]
    Queue(String),
    /// Reading or writing a blob failed (its text starts with `storage:`).
    #[error("{0}")]
    Blob(#[from] BlobError),
    /// A stored value could not be read back (a bug or a hand-edited database).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl From<apalis_sqlite::Error> for StoreError {
    fn from(e: apalis_sqlite::Error) -> Self {
        Self::Queue(e.to_string())
    }
}

impl From<apalis_postgres::Error> for StoreError {
    fn from(e: apalis_postgres::Error) -> Self {
        match e {
            apalis_postgres::Error::Database(e) => Self::Database(e),
            e => Self::Queue(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}
