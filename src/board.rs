//! The worker monitoring dashboard: apalis-board's prebuilt web UI at `/` and its API
//! at `/api/v1`, on a listener of its own (`BOARD_BIND`), because the UI insists on
//! owning `/`.
//!
//! apalis-board's API is an axum `Router`; [`Forward`] is a small poem endpoint that
//! hands each request to it and streams the answer back (Server-Sent Events included),
//! so the dashboard runs on the same server stack, listener handling and graceful
//! shutdown as the API. The dashboard is read-only: it answers `GET` and `HEAD` only,
//! so nobody who can reach it can push jobs through the API's `PUT` route.
//!
//! [`for_jobs`] registers the three job queues (images, completions, deliveries) with
//! [`BoardBuilder::queue`], generic over the apalis backend, SQLite or PostgreSQL
//! alike, through storages of the same database the workers use. The cross-queue
//! routes (`/queues`, `/tasks`, `/workers`, `/overview`) are answered by the first
//! registered storage; apalis' SQL storages keep every queue in one table, so they
//! list all of them.
//!
//! The UI shows "Healthy" while its log stream (`/api/v1/events`) is open; that stream
//! is fed by [`log_layer`], installed next to the usual log output by
//! [`crate::telemetry::init`].

use std::{
    net::SocketAddr,
    str::FromStr,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use apalis_board::axum::{
    framework::{ApiBuilder, RegisterRoute},
    sse::{TracingBroadcaster, TracingSubscriber},
    ui::ServeUI,
};
use axum::{Extension, Router};
use futures::{Future, TryStreamExt};
use poem::{
    Body, Endpoint, IntoResponse, Request, Response, Server,
    http::{Method, StatusCode},
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use tower::ServiceExt;
use tracing_subscriber::{Layer, registry::LookupSpan};

use crate::{
    jobs::{JobContext, Queue, queue_on},
    lifecycle::{CompleteJob, DeliverJob, ImageJob, Job},
};

/// Where the dashboard listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardBind(Option<SocketAddr>);

impl BoardBind {
    /// The address, unless the dashboard is off.
    pub fn addr(self) -> Option<SocketAddr> {
        self.0
    }
}

impl FromStr for BoardBind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("{e}: expected HOST:PORT (e.g. 127.0.0.1:8081) or `off`"))
    }
}

/// The dashboard over every queue of this service: images first, as the first queue
/// also answers the cross-queue routes.
pub fn for_jobs(ctx: &JobContext) -> Board {
    let builder = add::<ImageJob>(BoardBuilder::new(), ctx);
    let builder = add::<CompleteJob>(builder, ctx);
    add::<DeliverJob>(builder, ctx).build()
}

fn add<J: Job + Unpin>(builder: BoardBuilder, ctx: &JobContext) -> BoardBuilder {
    // The read pool: on SQLite the queue's own pool is the one write connection,
    // which the overview's aggregates over the whole jobs table would hold.
    match queue_on::<J>(ctx.db.pool(), &ctx.settings, 1) {
        Queue::Sqlite(storage) => builder.queue(J::QUEUE, storage),
        Queue::Postgres(storage) => builder.queue(J::QUEUE, storage),
    }
}

/// The log stream the UI's `/logs` page and health indicator listen to.
static BROADCASTER: LazyLock<Arc<Mutex<TracingBroadcaster>>> =
    LazyLock::new(TracingBroadcaster::create);

/// A tracing layer feeding the dashboard's log stream (JSON events, as the UI reads them).
/// Events it cannot forward (no client, a slow client, a span without a task id) are
/// dropped silently.
pub fn log_layer<S>() -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    TracingSubscriber::new(&BROADCASTER)
        .layer()
        .log_internal_errors(false)
}

/// Collects the queues to show.
#[derive(Debug)]
pub struct BoardBuilder(ApiBuilder<Router>);

impl Default for BoardBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BoardBuilder {
    /// No queues yet.
    pub fn new() -> Self {
        Self(ApiBuilder::new(Router::new()))
    }

    /// Shows `queue`, read through `backend` (an apalis storage of job type `T`).
    pub fn queue<B, T>(self, queue: &str, backend: B) -> Self
    where
        ApiBuilder<Router>: RegisterRoute<B, T>,
    {
        Self(RegisterRoute::<B, T>::register(self.0, queue, backend))
    }

    /// The dashboard: UI at `/`, API at `/api/v1`.
    pub fn build(self) -> Board {
        let api = self.0.build().layer(Extension(BROADCASTER.clone()));
        Board(
            Router::new()
                .nest("/api/v1", api)
                .fallback_service(ServeUI::new()),
        )
    }
}

/// The dashboard's routes, ready to serve.
#[derive(Debug, Clone)]
pub struct Board(Router);

/// The poem endpoint handing requests to the axum router.
struct Forward(Router);

/// Most tasks one dashboard page lists: apalis takes `page_size` as given, and on
/// SQLite `4294967295` wraps to `LIMIT -1`, every job with its payload in one query.
const MAX_PAGE_SIZE: u32 = 100;

/// `uri` with a `page_size` over [`MAX_PAGE_SIZE`] (or not a number) brought to it,
/// and a `page` (or not a number) brought within 1 and `u32::MAX / MAX_PAGE_SIZE`:
/// apalis computes `(page - 1) * page_size` in `u32`. Keys are compared decoded, as the dashboard's
/// own query parser reads them (`page%5Fsize` is `page_size`).
fn capped(uri: &poem::http::Uri) -> poem::http::Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let mut paging = false;
    let pairs: Vec<_> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let v = match k.as_ref() {
                "page_size" => v
                    .parse::<u32>()
                    .map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE)),
                "page" => v
                    .parse::<u32>()
                    .map_or(1, |n| n.clamp(1, u32::MAX / MAX_PAGE_SIZE)),
                _ => return (k, v),
            };
            paging = true;
            (k, v.to_string().into())
        })
        .collect();
    if !paging {
        return uri.clone();
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{}?{query}", uri.path())
        .parse()
        .unwrap_or_else(|_| uri.clone())
}

impl Endpoint for Forward {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Ok(StatusCode::METHOD_NOT_ALLOWED
                .with_header("allow", "GET, HEAD")
                .into_response());
        }
        let (parts, _) = req.into_parts();
        let mut inner = axum::http::Request::new(axum::body::Body::empty());
        *inner.method_mut() = parts.method;
        *inner.uri_mut() = capped(&parts.uri);
        *inner.version_mut() = parts.version;
        *inner.headers_mut() = parts.headers;
        // A Router's error type is `Infallible`.
        let Ok(resp) = self.0.clone().oneshot(inner).await;
        let (parts, body) = resp.into_parts();
        let mut out = Response::builder()
            .status(parts.status)
            .version(parts.version)
            .body(Body::from_bytes_stream(
                body.into_data_stream().map_err(std::io::Error::other),
            ));
        *out.headers_mut() = parts.headers;
        Ok(out)
    }
}

/// The dashboard's bound listener.
pub struct BoardListener {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
}

impl BoardListener {
    /// Binds `addr`; a failure names `BOARD_BIND`, so it is clear at start what to change.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind(addr).into_acceptor().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on BOARD_BIND={addr} for the dashboard: {e} \
                     (choose another address, or BOARD_BIND=off to disable it)"
            )
        })?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap_or(addr);
        Ok(Self { acceptor, addr })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `board` until `stop` resolves. Open log streams are then cut after a
    /// second: nothing the dashboard serves is worth holding a shutdown for.
    /// Connections silent for `idle_timeout` are closed, as the API's are: a log stream
    /// whose client stopped reading held its connection for good, and apalis-board's
    /// broadcaster stops at the first client whose queue is full, so every client
    /// after it got no log line meanwhile. (A reading client gets a keep-alive every
    /// second.)
    pub async fn serve(
        self,
        board: Board,
        idle_timeout: Duration,
        stop: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        tracing::info!(url = %format!("http://{}/", self.addr), "dashboard listening");
        let acceptor = crate::api::idle::IdleTimeout::new(
            self.acceptor,
            idle_timeout,
            crate::api::idle::Busy::default(),
        );
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(Forward(board.0), stop, Some(Duration::from_secs(1)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_bind_parses_an_address_or_off() {
        assert_eq!(BoardBind::from_str("off").unwrap().addr(), None);
        assert_eq!(BoardBind::from_str(" OFF ").unwrap().addr(), None);
        assert_eq!(
            BoardBind::from_str("127.0.0.1:8081").unwrap().addr(),
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert!(BoardBind::from_str("localhost").is_err());
        assert!(BoardBind::from_str("").is_err());
    }

    #[test]
    fn page_sizes_are_capped() {
        let cap = |s: &str| capped(&s.parse().unwrap()).to_string();
        assert_eq!(
            cap("/api/v1/tasks?status=Done&page_size=4294967295"),
            "/api/v1/tasks?status=Done&page_size=100"
        );
        assert_eq!(
            cap("/api/v1/tasks?page_size=x&page=2"),
            "/api/v1/tasks?page_size=100&page=2"
        );
        assert_eq!(
            cap("/api/v1/tasks?page%5Fsize=4294967295"),
            "/api/v1/tasks?page_size=100"
        );
        assert_eq!(
            cap("/api/v1/tasks?page=0&page_size=10"),
            "/api/v1/tasks?page=1&page_size=10"
        );
        assert_eq!(
            cap("/api/v1/tasks?page=50000000&page_size=100"),
            "/api/v1/tasks?page=42949672&page_size=100"
        );
        for kept in [
            "/api/v1/tasks?page_size=50&status=Done",
            "/api/v1/overview",
            "/q?a=1",
        ] {
            assert_eq!(cap(kept), kept);
        }
    }
}
