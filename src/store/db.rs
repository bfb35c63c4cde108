//! The database handle: connection settings chosen for a server, and migrations.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Sqlite, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::StoreError;

/// Our migrations, tracked apart from apalis' own (which use `_sqlx_migrations`): two
/// migrators on one table each see the other's rows as "applied but missing".
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
const MIGRATIONS_TABLE: &str = "_pixbatch_migrations";

/// A transaction on the database.
pub type Tx = sqlx::Transaction<'static, Sqlite>;

/// The database: our tables and the apalis queue share one SQLite file, so a request's
/// rows and its jobs commit together.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
}

impl Db {
    /// Opens (creating if needed) the database at `url` with settings every connection shares.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers (status polls) run while a writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL under WAL: a committed transaction survives a process crash (kill -9);
            // only an OS crash or power cut can lose the last few, never corrupt the file.
            // FULL would fsync every commit, the dominant cost of a job here.
            .synchronous(SqliteSynchronous::Normal)
            // Writers queue on the lock instead of failing with "database is locked".
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// A handle that connects on first use (never, for the OpenAPI generator).
    pub fn lazy(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?;
        Ok(Self {
            pool: SqlitePoolOptions::new().connect_lazy_with(options),
        })
    }

    /// Applies the queue's migrations and ours.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        apalis_sqlite::SqliteStorage::<()>::migrations()
            .run(&self.pool)
            .await?;
        let mut ours = Migrator {
            migrations: MIGRATOR.migrations.clone(),
            ..Migrator::DEFAULT
        };
        ours.dangerous_set_table_name(MIGRATIONS_TABLE);
        ours.run(&self.pool).await?;
        Ok(())
    }

    /// Ready when the database answers and every migration of ours is applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let applied: i64 =
            sqlx::query_scalar("select count(*) from _pixbatch_migrations where success")
                .fetch_one(&self.pool)
                .await?;
        Ok(applied as usize >= MIGRATOR.migrations.len())
    }

    /// The pool, for the job queue's storages.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so a
    /// transaction never has to upgrade a read lock (which SQLite refuses at once with
    /// "database is locked", whatever the busy timeout); writers simply queue.
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}
