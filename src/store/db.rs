//! The database handle: SQLite (embedded, one machine) or PostgreSQL (scale-out),
//! chosen by the URL; connection settings chosen for a server, and migrations.
//!
//! Our SQL is written once where the two dialects agree (numbered `$1` parameters work
//! on both); the few statements that must differ sit side by side. [`with_pool!`] and
//! [`with_tx!`] run one body against whichever backend is in use: the body is
//! compiled once per backend, so each copy is checked against its own driver.

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, Postgres, Sqlite, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::StoreError;

/// Our migrations, one folder per backend (one schema design), tracked apart from
/// apalis' own (which use `_sqlx_migrations`): two migrators on one table each see the
/// other's rows as "applied but missing".
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
const MIGRATIONS_TABLE: &str = "_pixbatch_migrations";

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://FILE`: embedded, one machine.
    Sqlite,
    /// `postgres://…` (or `postgresql://…`): shared by many API and worker processes.
    Postgres,
}

impl Backend {
    /// The backend of a `DATABASE_URL`, or `None` when it is neither.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Whether a `sqlite:` URL names an in-memory database (`sqlite::memory:`,
/// `sqlite://:memory:`, `mode=memory`) rather than a file.
pub fn is_in_memory_sqlite(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return false;
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    path.trim_start_matches("//") == ":memory:"
        || query
            .split('&')
            .any(|pair| pair.eq_ignore_ascii_case("mode=memory"))
}

/// The connection pool of one backend.
#[derive(Clone, Debug)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// A write transaction on either backend.
#[derive(Debug)]
pub enum Tx {
    /// SQLite (`BEGIN IMMEDIATE`).
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    /// PostgreSQL (read committed; rows are locked by the guarded updates themselves).
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(t) => t.commit().await?,
            Self::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// The transaction's id on PostgreSQL, by which [`Db::commit_outcome`] learns
    /// whether a commit whose answer was lost happened; `None` on SQLite, whose commit
    /// is settled in this process when it returns.
    pub async fn id(&mut self) -> Result<Option<TxId>, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(None),
            Self::Postgres(t) => {
                let (id,): (i64,) = sqlx::query_as("select txid_current()")
                    .fetch_one(&mut **t)
                    .await?;
                Ok(Some(TxId(id)))
            }
        }
    }
}

/// A PostgreSQL transaction's id ([`Tx::id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxId(i64);

/// What became of a transaction whose commit was answered with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// It committed: only the answer was lost.
    Committed,
    /// It did not commit, and never will.
    Aborted,
    /// Still open: its `COMMIT` may yet arrive (a connection cut between this process
    /// and the server, the server still reading).
    InProgress,
    /// Too old for the server to say.
    Unknown,
}

/// Runs `$body` with `$p` bound to the pool (`&SqlitePool` or `&PgPool`).
macro_rules! with_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db.pool() {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection (use it as `&mut *$c`).
macro_rules! with_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::store::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use {with_pool, with_tx};

/// The database: our tables and the apalis queue live in one database, so a request's
/// rows and its jobs commit together.
#[derive(Clone, Debug)]
pub struct Db {
    /// Reads (and, on PostgreSQL, our writes too).
    pool: Pool,
    /// Writes: our write transactions (on SQLite also the job queue's statements, see
    /// `queue`). On SQLite one connection, so writers wait their turn in the pool's fair queue; with several,
    /// they met on SQLite's write lock, whose busy handler sleeps in steps growing to
    /// 100 ms while the lock may already be free. On PostgreSQL the same pool as reads.
    writes: Pool,
    /// The job queue's own statements (fetch, lock, acknowledge, heartbeat). On SQLite
    /// the writer. On PostgreSQL a pool of its own whose commits do not wait for the
    /// WAL flush (`synchronous_commit = off`; see [`Db::begin_replayable`] for why that
    /// loses nothing); our transactions, and the jobs they push, stay on `writes`.
    queue: Pool,
}

impl Db {
    /// What became of the transaction `id` (PostgreSQL's `txid_status`), asked on
    /// another connection than the one whose commit's answer was lost.
    pub async fn commit_outcome(&self, id: TxId) -> Result<CommitOutcome, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(CommitOutcome::Unknown);
        };
        let (status,): (Option<String>,) = sqlx::query_as("select txid_status($1)")
            .bind(id.0)
            .fetch_one(p)
            .await?;
        Ok(match status.as_deref() {
            Some("committed") => CommitOutcome::Committed,
            Some("aborted") => CommitOutcome::Aborted,
            Some("in progress") => CommitOutcome::InProgress,
            _ => CommitOutcome::Unknown,
        })
    }

    /// Opens the database at `url` (creating a SQLite file if needed) with settings
    /// every connection shares.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (pool, writes, queue) = match backend(url)? {
            Backend::Sqlite => {
                // The writer first: it creates the file and switches it to WAL.
                let writes = sqlite_pool(url, 1).await?;
                (sqlite_pool(url, 8).await?, writes.clone(), writes)
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)?;
                let pool = pg_pool(16, 1, options.clone()).await?;
                let queue = pg_pool(8, 0, options.options([("synchronous_commit", "off")])).await?;
                (pool.clone(), pool, queue)
            }
        };
        Ok(Self {
            pool,
            writes,
            queue,
        })
    }

    /// Connects and applies the migrations. On SQLite, under an exclusive lock on a file
    /// beside the database (`FILE.start-lock`): SQLite has no migration lock of its own,
    /// and processes starting together on one file (`api` and `worker`, or after an
    /// upgrade) failed with "database is locked" while one switched it to WAL, or
    /// applied a migration twice ("table requests already exists"). On PostgreSQL the
    /// migrators take an advisory lock.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let _start_lock = match backend(url)? {
            Backend::Sqlite => {
                let file = sqlite_options(url)?.get_filename().to_owned();
                let mut name = file.into_os_string();
                name.push(".start-lock");
                let lock = tokio::task::spawn_blocking(move || {
                    let lock = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&name)?;
                    lock.lock()?;
                    Ok::<_, std::io::Error>(lock)
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|lock| lock)
                .map_err(sqlx::Error::Io)?;
                Some(lock)
            }
            Backend::Postgres => None,
        };
        let db = Self::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// A handle that connects on first use (never, for the OpenAPI generator).
    pub fn lazy(url: &str) -> Result<Self, StoreError> {
        let pool = match backend(url)? {
            Backend::Sqlite => {
                Pool::Sqlite(SqlitePoolOptions::new().connect_lazy_with(sqlite_options(url)?))
            }
            Backend::Postgres => Pool::Postgres(
                PgPoolOptions::new().connect_lazy_with(PgConnectOptions::from_str(url)?),
            ),
        };
        Ok(Self {
            writes: pool.clone(),
            queue: pool.clone(),
            pool,
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the queue's migrations and ours (both take a lock on PostgreSQL, so
    /// processes starting together apply them once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = match &self.writes {
            Pool::Sqlite(p) => {
                apalis_sqlite::SqliteStorage::<()>::migrations()
                    .run(p)
                    .await?;
                &SQLITE_MIGRATOR
            }
            Pool::Postgres(p) => {
                apalis_postgres::PostgresStorage::<()>::setup(p).await?;
                &POSTGRES_MIGRATOR
            }
        };
        let mut ours = Migrator {
            migrations: migrations.migrations.clone(),
            ..Migrator::DEFAULT
        };
        ours.dangerous_set_table_name(MIGRATIONS_TABLE);
        match &self.writes {
            Pool::Sqlite(p) => ours.run(p).await?,
            Pool::Postgres(p) => ours.run(p).await?,
        }
        Ok(())
    }

    /// Ready when the database answers and every migration of ours is applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let sql = "select count(*) from _pixbatch_migrations where success";
        let applied: i64 = with_pool!(self, p => sqlx::query_scalar(sql).fetch_one(p).await?);
        let expected = match self.pool {
            Pool::Sqlite(_) => SQLITE_MIGRATOR.migrations.len(),
            Pool::Postgres(_) => POSTGRES_MIGRATOR.migrations.len(),
        };
        Ok(applied as usize >= expected)
    }

    /// The pool for reads.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pool for the job queue's storages, which write (see [`Db::queue`]).
    pub fn queue_pool(&self) -> &Pool {
        &self.queue
    }

    /// Starts a write transaction. On SQLite, `BEGIN IMMEDIATE` takes the write lock up
    /// front, so a transaction never has to upgrade a read lock (which SQLite refuses at
    /// once with "database is locked", whatever the busy timeout); writers simply queue.
    /// On PostgreSQL a plain transaction: the guarded updates lock the rows they touch.
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(match &self.writes {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Starts a write transaction whose loss in a crash of the database server the
    /// job queue repairs by itself: on PostgreSQL its commit does not wait for the WAL
    /// flush (`synchronous_commit = off`, ~0.1 ms instead of a 3–4 ms fsync here).
    ///
    /// For what a job records about its own work (an image's outcome, its next try).
    /// Such a commit is lost only together with everything committed after it (the
    /// WAL is replayed in order), so the job's acknowledgement is lost with it and the
    /// job runs again; its guarded updates make that safe. An acknowledgement lost
    /// alone (it commits later) runs the job again too: an image already finished, or
    /// one whose next try is already scheduled, makes it stand down (the image's state,
    /// and the try count its job carries). Anything whose loss someone
    /// outside could see (an upload's 202, a retry or cancel answered, the event a
    /// webhook is about to carry) uses [`Db::begin_write`], whose commit is durable and
    /// also flushes every relaxed commit before it. SQLite already commits this way
    /// (`synchronous = NORMAL`).
    pub async fn begin_replayable(&self) -> Result<Tx, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Tx::Postgres(t) = &mut tx {
            sqlx::query("set local synchronous_commit = off")
                .execute(&mut **t)
                .await?;
        }
        Ok(tx)
    }
}

/// A PostgreSQL pool of at most `max` connections.
async fn pg_pool(max: u32, min: u32, options: PgConnectOptions) -> Result<Pool, StoreError> {
    Ok(Pool::Postgres(
        PgPoolOptions::new()
            .max_connections(max)
            .min_connections(min)
            // A connection broken by a server restart is noticed here and replaced,
            // instead of failing the next query.
            .test_before_acquire(true)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?,
    ))
}

fn backend(url: &str) -> Result<Backend, StoreError> {
    Backend::of_url(url).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "DATABASE_URL must start with sqlite:// or postgres://, not {:?}",
            url.split(':').next().unwrap_or_default()
        ))
    })
}

/// A SQLite pool of at most `max` connections.
async fn sqlite_pool(url: &str, max: u32) -> Result<Pool, StoreError> {
    Ok(Pool::Sqlite(
        SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            // SQLite rolls a transaction back by itself on some errors (a full
            // disk: SQLITE_FULL); sqlx's ROLLBACK then fails and it still counts
            // the connection as inside a transaction, so every later BEGIN on it
            // would fail. Such a connection is closed instead of reused.
            .before_acquire(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(sqlite_options(url)?)
            .await?,
    ))
}

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str(url)?
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
        .pragma("temp_store", "memory"))
}
