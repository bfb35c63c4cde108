//! Wires the database, blob store, outbound client, API and workers together.
//! `App::build` binds the listener first, so callers (and tests, with port 0) learn
//! the real port before anything runs. One process plays one [`Role`]: both halves
//! (`serve`), the API alone (`api`) or the workers alone (`worker`).

use std::{net::SocketAddr, sync::Arc};

use poem::{
    Server,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};

use crate::{
    api::{self, AppState},
    board::BoardListener,
    config::Settings,
    fetch::{FetchConfig, Fetcher},
    imaging::TransformPool,
    jobs::{self, JobContext},
    lifecycle::Outcomes,
    store::{Backend, BlobStore, Db, StorageConfig},
};

/// Most requests one HTTP/2 connection carries at once.
const MAX_HTTP2_STREAMS: u32 = 100;

/// What a server process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The API and the workers (`pixbatch serve`).
    Serve,
    /// The API alone (`pixbatch api`).
    Api,
    /// The workers alone, with health and metrics on `HEALTH_BIND` (`pixbatch worker`).
    Worker,
}

impl Role {
    /// The name used in worker names and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Api => "api",
            Self::Worker => "worker",
        }
    }
}

/// A built, not yet running, server process.
pub struct App {
    role: Role,
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    state: Arc<AppState>,
    jobs: Arc<JobContext>,
    board: Option<BoardListener>,
}

/// Opens the database (applying migrations) and the blob store.
pub async fn open_storage(settings: &Settings) -> anyhow::Result<(Db, BlobStore)> {
    let db = Db::open(settings.storage.database_url.expose()).await?;
    let blobs = BlobStore::open(&settings.storage.blobs).await?;
    tracing::info!(store = %settings.storage.blobs, "blob store");
    Ok((db, blobs))
}

/// The outbound client as configured.
pub fn fetcher(settings: &Settings) -> anyhow::Result<Fetcher> {
    Ok(Fetcher::new(FetchConfig {
        allow: settings.fetch.allow_private.clone(),
        // Not lowered with FETCH_TIMEOUT: the same client sends webhooks, which have
        // their own 10 s; a download's own deadline already bounds its connect.
        connect_timeout: crate::fetch::DEFAULT_CONNECT_TIMEOUT,
        timeout: settings.fetch.timeout,
        max_bytes: settings.limits.image.max_input_bytes,
        per_host_limit: settings.fetch.per_host_limit,
        user_agent: format!("pixbatch/{}", env!("CARGO_PKG_VERSION")),
    })?)
}

impl App {
    /// Binds the listener (`BIND`, or `HEALTH_BIND` for a worker) and prepares every part.
    pub async fn build(mut settings: Settings, role: Role) -> anyhow::Result<Self> {
        let bind = match role {
            Role::Serve | Role::Api => settings.server.bind,
            Role::Worker => settings.server.health_bind,
        };
        let acceptor = TcpListener::bind(bind).into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| anyhow::anyhow!("listener has no TCP address"))?;
        // The dashboard watches the workers: `serve` and `worker` have it, `api` not.
        let board = match settings.server.board_bind.addr() {
            Some(addr) if role != Role::Api => Some(BoardListener::bind(addr).await?),
            _ => None,
        };
        settings.settle_public_base((role != Role::Worker).then_some(addr))?;
        if role == Role::Worker && !settings.server.public_base_url_given {
            tracing::warn!(
                base = %settings.public_base_url,
                "PUBLIC_BASE_URL is not set: output URLs will point at BIND; set it to the API's address"
            );
        }
        let storage = &settings.storage;
        let shared_db = Backend::of_url(storage.database_url.expose()) == Some(Backend::Postgres);
        if let (Role::Api | Role::Worker, true, StorageConfig::Local(dir)) =
            (role, shared_db, &storage.blobs)
        {
            // Split roles on PostgreSQL are the scale-out set-up: a worker on another
            // host would store where no API process can serve from (404s for
            // finished requests).
            tracing::warn!(
                dir = %dir.display(),
                "files are stored on this host's disk: every api and worker process must see the same folder (a shared mount), or set STORAGE_URL=s3://…"
            );
        }
        if role != Role::Worker && settings.server.api_token.is_none() && !addr.ip().is_loopback() {
            // An empty API_TOKEN counts as unset: say so where it matters, on an open port.
            tracing::warn!(
                %addr,
                "API_TOKEN is not set: anyone who can reach this address can upload and read requests"
            );
        }
        if let Some(board) = board.as_ref().map(BoardListener::addr)
            && !board.ip().is_loopback()
        {
            // BOARD_BIND has no token: whoever reaches it sees the jobs' request ids
            // and input URLs, and `/files` serves outputs by request id.
            tracing::warn!(
                %board,
                "the dashboard has no authentication: keep BOARD_BIND on loopback (or behind one) unless everyone who can reach it may see every request"
            );
        }
        // Only the processes that deliver webhooks sign them: `api` sends none.
        if role != Role::Api && settings.webhook.keys.is_empty() {
            tracing::warn!("WEBHOOK_SECRET is not set: webhooks will be sent unsigned");
        }
        let (db, blobs) = open_storage(&settings).await?;
        // Before any job runs, so nothing recorded is lost to the no-op default.
        crate::telemetry::metrics::install();
        let codec = crate::imaging::Codec::get();
        // Said at start: which kernels this CPU runs (scalar ones are much slower).
        tracing::info!(
            kernels = codec.kernels,
            cpu = codec.cpu,
            chroma = codec.chroma.as_str(),
            libjpeg_simd = codec.libjpeg_simd,
            "{codec}"
        );
        crate::telemetry::metrics::codec_info(&codec);
        let state = AppState::new(db, blobs, settings);
        let jobs = Arc::new(JobContext {
            db: state.db.clone(),
            blobs: state.blobs.clone(),
            fetcher: fetcher(&state.settings)?,
            cpu: TransformPool::new(state.settings.jobs.cpu_threads)?,
            settings: state.settings.clone(),
            outcomes: Outcomes::start(state.db.clone()),
            lifecycle: state.lifecycle.clone(),
        });
        Ok(Self {
            role,
            acceptor,
            addr,
            state,
            jobs,
            board,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The dashboard's address, unless `BOARD_BIND=off` or the role is `api`.
    pub fn board_addr(&self) -> Option<SocketAddr> {
        self.board.as_ref().map(BoardListener::addr)
    }

    /// Serves the API and/or runs the workers, as the role says, until SIGTERM or
    /// Ctrl-C; then stops taking jobs, lets those in flight finish (up to
    /// `SHUTDOWN_TIMEOUT`) and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        // One signal for every part: the listeners, the workers, the housekeeping and
        // the event streams (through the handlers' state).
        let stopping = self.state.stopping.clone();
        let signalled = stopping.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(
                "shutdown requested: finishing in-flight work (a second signal stops at once)"
            );
            signalled.cancel();
            // The handlers replace the default ones for good: without this, a second
            // Ctrl-C did nothing, and only SHUTDOWN_TIMEOUT or a kill ended the wait.
            // Stopping at once is a crash the queue is built for: the jobs cut off
            // are taken up again.
            shutdown_signal().await;
            tracing::warn!("second shutdown signal: stopping now; in-flight jobs run again later");
            std::process::exit(SECOND_SIGNAL_EXIT);
        });
        let timeout = self.state.settings.jobs.shutdown_timeout;
        let role = self.role;
        tracing::info!(role = role.as_str(), addr = %self.addr, base = %self.state.settings.public_base_url, "listening");
        let tidy_db = self.state.db.clone();
        let tidy_stop = stopping.clone();
        let tidy_retention = self.state.settings.jobs.retention;
        // Silent connections are closed (a client that sends half a request, or stops
        // reading an event stream, holds nothing for long), and an HTTP/2 connection
        // carries at most 100 requests at once (hyper's default is no limit).
        let acceptor = api::idle::IdleTimeout::new(
            self.acceptor,
            self.state.settings.server.idle_timeout,
            self.state.busy.clone(),
        );
        let server =
            Server::new_with_acceptor(acceptor).http2_max_concurrent_streams(MAX_HTTP2_STREAMS);
        let board_stop = stopping.clone().cancelled_owned();
        let board_jobs = self.jobs.clone();
        let board_idle = self.state.settings.server.idle_timeout;
        let boarded = async move {
            match self.board {
                Some(listener) => {
                    let board = crate::board::for_jobs(&board_jobs);
                    listener.serve(board, board_idle, board_stop).await
                }
                None => Ok(()),
            }
        };
        let stop = stopping.clone().cancelled_owned();
        let uploads_stop = stopping.clone().cancelled_owned();
        let uploads = self.state.uploads.clone();
        let served = async move {
            match role {
                Role::Serve | Role::Api => {
                    server
                        .run_with_graceful_shutdown(api::routes(self.state), stop, Some(timeout))
                        .await
                }
                Role::Worker => {
                    server
                        .run_with_graceful_shutdown(
                            api::health_routes(self.state),
                            stop,
                            Some(timeout),
                        )
                        .await
                }
            }
        };
        let worked = async move {
            if role == Role::Api {
                return Ok(());
            }
            tokio::spawn(jobs::tidy::run(tidy_db, tidy_retention, tidy_stop));
            jobs::monitor(self.jobs, role.as_str(), &stopping)
                .run_with_signal(async move {
                    stopping.cancelled().await;
                    Ok(())
                })
                .await
        };
        // The shutdown timeout counts from the signal for every part.
        let deadline = async move {
            uploads_stop.await;
            tokio::time::Instant::now() + timeout
        };
        let (served, worked, boarded, deadline) = tokio::join!(served, worked, boarded, deadline);
        // An upload whose client went away is still being received: it finishes (or
        // its CSV would be stored with no request), until that deadline (waited for
        // after the server, since an upload whose body was still arriving at the
        // signal starts its task later; counted from the signal, or it could double
        // the stop).
        uploads.close();
        if tokio::time::timeout_at(deadline, uploads.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = uploads.len(),
                "uploads still being received at shutdown"
            );
        }
        served?;
        if let Err(e) = boarded {
            tracing::warn!(error = %e, "dashboard stopped with an error");
        }
        if let Err(e) = worked {
            tracing::warn!(error = %e, "workers stopped with an error");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The exit status after a second SIGTERM or Ctrl-C (128 + SIGINT, as a shell reports
/// an interrupted command).
const SECOND_SIGNAL_EXIT: i32 = 130;

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
