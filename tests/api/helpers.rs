//! Black-box test harness: the real `pixbatch` binary on a free port in a temp dir,
//! a local image server, and a webhook receiver that records what it got.
//!
//! Tests run on SQLite (a file in the temp dir) or PostgreSQL: with
//! `PIXBATCH_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test`, each PostgreSQL
//! test gets a database of its own, dropped at the end; without it, the PostgreSQL
//! variants print that they were skipped and pass.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server, handler,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};
use serde_json::Value;

/// The file `name` of `tests/fixtures/{folder}`.
pub fn fixture(folder: &str, name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A real photo from the fixtures.
pub fn photo(name: &str) -> Vec<u8> {
    fixture("photos", name)
}

/// The fixture photos, by name.
pub const PHOTOS: [&str; 3] = [
    "small_picos.jpg",
    "small_aitzgorri.jpg",
    "small_lamp_portrait.jpg",
];

/// Starts a poem endpoint on 127.0.0.1:0 in the background; returns its address.
async fn serve(ep: impl Endpoint + 'static) -> SocketAddr {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("bind test server");
    let addr = *acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("tcp address");
    tokio::spawn(async move {
        let _ = Server::new_with_acceptor(acceptor).run(ep).await;
    });
    addr
}

/// Serves fixture photos under any path ending in a fixture name, with behaviour
/// chosen by the first path segment:
/// - `/img/<anything>/<photo>`: the photo;
/// - `/flaky/<n>/<anything>/<photo>`: 500 for the first `n` requests of that path, then the photo;
/// - `/missing/<anything>`: 404;
/// - `/gate/<anything>/<photo>`: 404 until [`ImageServer::open_gate`], then the photo;
/// - `/slow/<ms>/<anything>/<photo>`: the photo after `ms` milliseconds more;
/// - `/blob/<name>`: the bytes given to [`ImageServer::put`] under that name;
/// - `/etag/<anything>/<name>`: the bytes put under `name`, else the photo `name`,
///   with an `ETag` derived from the bytes; `304` to a matching `If-None-Match`;
/// - `/lastmod/<anything>/<name>`: the same with only a `Last-Modified` derived from
///   the bytes; `304` to a matching `If-Modified-Since`;
/// - `/bare304/<n>/<anything>/<photo>`: `304` to the first `n` requests of that path,
///   whatever they sent, then the photo with no validators;
/// - `/redirect/<name>`: `302` to the path put under `name` with [`ImageServer::put`].
///
/// Every request waits `latency` first. Requests carrying `If-None-Match` or
/// `If-Modified-Since` are counted as conditional, the others as plain, and every
/// `304` sent is counted.
#[derive(Clone)]
pub struct ImageServer {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<ImageState>,
}

struct ImageState {
    hits: Mutex<HashMap<String, u32>>,
    latency: Mutex<Duration>,
    gate_open: Mutex<bool>,
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    conditional: AtomicU32,
    plain: AtomicU32,
    not_modified: AtomicU32,
}

/// A validator derived from the bytes, so it changes exactly when they do.
fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A `Last-Modified` value derived from the bytes.
fn last_modified(bytes: &[u8]) -> String {
    let d = digest(bytes);
    format!(
        "Tue, {:02} Dec 2026 {:02}:{:02}:{:02} GMT",
        1 + d % 28,
        (d >> 8) % 24,
        (d >> 16) % 60,
        (d >> 24) % 60
    )
}

#[handler]
async fn image_handler(req: &Request, state: Data<&Arc<ImageState>>) -> Response {
    let path = req.uri().path().to_owned();
    let hit = {
        let mut hits = state.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (if_none_match, if_modified_since) = (header("if-none-match"), header("if-modified-since"));
    if if_none_match.is_some() || if_modified_since.is_some() {
        state.conditional.fetch_add(1, Ordering::SeqCst);
    } else {
        state.plain.fetch_add(1, Ordering::SeqCst);
    }
    let not_modified = || {
        state.not_modified.fetch_add(1, Ordering::SeqCst);
        StatusCode::NOT_MODIFIED.into_response()
    };
    let latency = *state.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let file = segments.last().copied().unwrap_or_default();
    let serve_photo = || {
        if PHOTOS.contains(&file) {
            Response::builder()
                .content_type("image/jpeg")
                .body(photo(file))
        } else {
            StatusCode::NOT_FOUND.into_response()
        }
    };
    match segments.first().copied() {
        Some("img") => serve_photo(),
        Some("flaky") => {
            let fails: u32 = segments.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            if hit <= fails {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            } else {
                serve_photo()
            }
        }
        Some("gate") if *state.gate_open.lock().unwrap() => serve_photo(),
        Some("slow") => {
            let ms: u64 = segments.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            serve_photo()
        }
        Some(kind @ ("etag" | "lastmod")) => {
            let put = state.blobs.lock().unwrap().get(file).cloned();
            let Some(bytes) = put.or_else(|| PHOTOS.contains(&file).then(|| photo(file))) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if kind == "etag" {
                let etag = format!("\"{:016x}\"", digest(&bytes));
                if if_none_match.as_deref() == Some(etag.as_str()) {
                    return not_modified();
                }
                Response::builder()
                    .content_type("image/jpeg")
                    .header("etag", etag)
                    .body(bytes)
            } else {
                let date = last_modified(&bytes);
                if if_modified_since.as_deref() == Some(date.as_str()) {
                    return not_modified();
                }
                Response::builder()
                    .content_type("image/jpeg")
                    .header("last-modified", date)
                    .body(bytes)
            }
        }
        Some("bare304") => {
            let n: u32 = segments.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            if hit <= n {
                not_modified()
            } else {
                serve_photo()
            }
        }
        Some("redirect") => match state.blobs.lock().unwrap().get(file) {
            Some(to) => Response::builder()
                .status(StatusCode::FOUND)
                .header("location", String::from_utf8_lossy(to).into_owned())
                .finish(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Some("blob") => match state.blobs.lock().unwrap().get(file) {
            Some(bytes) => Response::builder()
                .content_type("image/jpeg")
                .body(bytes.clone()),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl ImageServer {
    /// Starts a server with no latency.
    pub async fn start() -> Self {
        let state = Arc::new(ImageState {
            hits: Mutex::new(HashMap::new()),
            latency: Mutex::new(Duration::ZERO),
            gate_open: Mutex::new(false),
            blobs: Mutex::new(HashMap::new()),
            conditional: AtomicU32::new(0),
            plain: AtomicU32::new(0),
            not_modified: AtomicU32::new(0),
        });
        let addr = serve(Route::new().at("/*path", image_handler).data(state.clone())).await;
        Self {
            base: format!("http://{addr}"),
            state,
        }
    }

    /// Serves `bytes` at `/blob/<name>` from now on.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.state
            .blobs
            .lock()
            .unwrap()
            .insert(name.to_owned(), bytes);
    }

    /// Delays every answer from now on.
    pub fn set_latency(&self, d: Duration) {
        *self.state.latency.lock().unwrap() = d;
    }

    /// Lets `/gate/...` paths serve their photos from now on.
    pub fn open_gate(&self) {
        *self.state.gate_open.lock().unwrap() = true;
    }

    /// How often a path was requested.
    pub fn hits(&self, path: &str) -> u32 {
        *self.state.hits.lock().unwrap().get(path).unwrap_or(&0)
    }

    /// Requests that carried `If-None-Match` or `If-Modified-Since`.
    pub fn conditional_hits(&self) -> u32 {
        self.state.conditional.load(Ordering::SeqCst)
    }

    /// Requests that carried neither.
    pub fn plain_hits(&self) -> u32 {
        self.state.plain.load(Ordering::SeqCst)
    }

    /// `304 Not Modified` answers sent.
    pub fn not_modified(&self) -> u32 {
        self.state.not_modified.load(Ordering::SeqCst)
    }

    /// Forgets every count (hits per path included), e.g. between two runs.
    pub fn reset_counts(&self) {
        self.state.hits.lock().unwrap().clear();
        for c in [
            &self.state.conditional,
            &self.state.plain,
            &self.state.not_modified,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// Requests served in all.
    pub fn total_hits(&self) -> u32 {
        self.state.hits.lock().unwrap().values().sum()
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Lower-cased header names and their values.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// Records webhook calls; answers statuses from a script, then 200.
#[derive(Clone)]
pub struct WebhookReceiver {
    /// The URL to give the server.
    pub url: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    got: Mutex<Vec<Received>>,
    script: Mutex<Vec<Reply>>,
}

/// How a receiver answers one call.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, at once.
    Status(u16),
    /// 200, after this long.
    Sleep(Duration),
    /// This status, once the test lets it go (`notify_one`).
    Held(Arc<tokio::sync::Notify>, u16),
    /// 302 to this URL.
    Redirect(String),
}

#[handler]
async fn receive(req: &Request, body: Vec<u8>, state: Data<&Arc<ReceiverState>>) -> Response {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state.got.lock().unwrap().push(Received {
        headers,
        body,
        at: std::time::Instant::now(),
    });
    let reply = {
        let mut script = state.script.lock().unwrap();
        if script.is_empty() {
            Reply::Status(200)
        } else {
            script.remove(0)
        }
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::OK)
            .into_response(),
        Reply::Sleep(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Reply::Held(gate, code) => {
            gate.notified().await;
            StatusCode::from_u16(code)
                .unwrap_or(StatusCode::OK)
                .into_response()
        }
        Reply::Redirect(to) => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", to)
            .finish(),
    }
}

impl WebhookReceiver {
    /// Starts a receiver answering with statuses from `script` in order, then 200.
    pub async fn start(script: Vec<u16>) -> Self {
        Self::start_with(script.into_iter().map(Reply::Status).collect()).await
    }

    /// Starts a receiver answering `script` in order, then 200.
    pub async fn start_with(script: Vec<Reply>) -> Self {
        let state = Arc::new(ReceiverState {
            got: Mutex::new(Vec::new()),
            script: Mutex::new(script),
        });
        let addr = serve(Route::new().at("/hook", receive).data(state.clone())).await;
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` calls arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The env var naming a PostgreSQL server for the tests (any database on it; each test
/// creates and drops its own).
pub const POSTGRES_URL_VAR: &str = "PIXBATCH_TEST_POSTGRES_URL";

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the server's temp dir.
    Sqlite,
    /// A fresh database on the server named by [`POSTGRES_URL_VAR`].
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for `async fn $name(backend: Backend)`,
/// as `$name::sqlite` and `$name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

/// A header of a response, when present and text.
pub fn header_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Every 503 of the API says when to try again, in seconds.
pub fn check_retry_after(resp: &reqwest::Response) {
    if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && resp.url().path() != "/readyz" {
        let after = header_of(resp, "retry-after");
        assert!(
            after
                .as_deref()
                .is_some_and(|s| s.parse::<u32>().is_ok_and(|n| n > 0)),
            "a 503 of {} without Retry-After: {after:?}",
            resp.url()
        );
    }
}

/// Says loudly that a test is skipped because `reason`; under `CI=true` a skip is a
/// failure instead, so CI cannot pass with a service or tool missing.
pub fn skip(reason: &str) {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!in_ci, "not skipped under CI=true: {reason}");
    eprintln!("\n*** SKIPPED: {reason} ***\n");
}

/// The PostgreSQL server for tests, or `None` (the test is skipped, see [`skip`]).
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            skip(&format!("{POSTGRES_URL_VAR} not set"));
            None
        }
    }
}

/// A database of its own on the test PostgreSQL server, dropped with this value.
pub struct PgDatabase {
    /// Its URL.
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates `pixbatch_t_<random>` on the server at `admin_url`.
    pub async fn create(admin_url: &str) -> Self {
        use sqlx::Connection;
        let name = format!("pixbatch_t_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {POSTGRES_URL_VAR} ({admin_url}): {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(admin_url).expect("PostgreSQL URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a runtime of its own on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("drop database if exists {name} with (force)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A migrated database of its own for a test that talks to the store directly: a
/// SQLite file in a temp dir, or a fresh PostgreSQL database (dropped with this value).
pub struct TestDb {
    /// The handle.
    pub db: pixbatch::store::Db,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl TestDb {
    /// Opens and migrates one on `backend`; `None` when PostgreSQL is asked for but
    /// not configured (the test is then skipped, see [`skip`]).
    pub async fn open(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (pg, url) = match backend {
            Backend::Sqlite => (None, format!("sqlite://{}/test.db", dir.path().display())),
            Backend::Postgres => {
                let pg = PgDatabase::create(&postgres_url()?).await;
                let url = pg.url.clone();
                (Some(pg), url)
            }
        };
        let db = pixbatch::store::Db::connect(&url).await.expect("connect");
        db.migrate().await.expect("migrate");
        Some(Self {
            db,
            _dir: dir,
            _pg: pg,
        })
    }

    /// The PostgreSQL pool of one opened on [`Backend::Postgres`].
    pub fn postgres(&self) -> &sqlx::PgPool {
        match self.db.pool() {
            pixbatch::store::Pool::Postgres(p) => p,
            pixbatch::store::Pool::Sqlite(_) => panic!("a SQLite test database"),
        }
    }
}

/// A test secret (`whsec_` + base64 of 24 bytes).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The real binary, running against files in its own temp dir.
pub struct TestServer {
    /// Base URL.
    pub base: String,
    /// The temp dir (database, uploads, logs).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
    port: u16,
    starts: u32,
    command: &'static str,
    pg: Option<Arc<PgDatabase>>,
    /// HTTP client for the test.
    pub http: reqwest::Client,
}

/// Runs `pixbatch <command>` to its end in `dir`, with nothing of the test's
/// environment but a SQLite database and a file store in `dir` and the `env` given,
/// for 60 s at most: how a start that must fail is checked.
pub async fn run_to_exit(dir: &Path, command: &str, env: &[(&str, &str)]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pixbatch"))
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .env("DATABASE_URL", format!("sqlite://{}/p.db", dir.display()))
        .env("STORAGE_URL", format!("file://{}/up", dir.display()))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("pixbatch {command} {env:?} still running after 60 s"))
        .expect("pixbatch ran")
}

/// The address a listener of ours logged at start (`BIND=127.0.0.1:0` and the like):
/// the first line of `target` with `marker` and a `field=` (or JSON `"field":"`)
/// holding an address, with or without `http://`.
pub fn logged_addr(log: &str, target: &str, marker: &str, field: &str) -> Option<SocketAddr> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains(target) && l.contains(marker))
        .find_map(|line| {
            let at = [format!("{field}="), format!("\"{field}\":\"")]
                .iter()
                .find_map(|m| line.find(m.as_str()).map(|i| i + m.len()))?;
            let value = &line[at..];
            let value = value.strip_prefix("http://").unwrap_or(value);
            let end = value
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(value.len());
            value[..end].parse().ok()
        })
}

/// The text without terminal colour codes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

impl TestServer {
    /// Starts `pixbatch serve` on SQLite with test-friendly settings plus `extra` env vars.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        Self::launch("serve", None, extra).await
    }

    /// Starts `pixbatch serve` on `backend`; `None` when PostgreSQL is asked for but
    /// not configured (the test is then skipped).
    pub async fn start_on(backend: Backend, extra: &[(&str, &str)]) -> Option<Self> {
        Self::start_cmd("serve", backend, extra).await
    }

    /// Starts `pixbatch <command>` (`serve`, `api` or `worker`) on `backend`.
    pub async fn start_cmd(
        command: &'static str,
        backend: Backend,
        extra: &[(&str, &str)],
    ) -> Option<Self> {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Arc::new(PgDatabase::create(&postgres_url()?).await)),
        };
        Some(Self::launch(command, pg, extra).await)
    }

    /// Starts another process (`api` or `worker`) on this one's database and file
    /// store, handing out URLs under this one's base.
    pub async fn join(&self, command: &'static str, extra: &[(&str, &str)]) -> Self {
        let mut env: Vec<(&str, &str)> = ["DATABASE_URL", "STORAGE_URL"]
            .into_iter()
            .filter_map(|k| {
                self.env
                    .iter()
                    .find(|(ek, _)| ek == k)
                    .map(|(_, v)| (k, v.as_str()))
            })
            .collect();
        env.push(("PUBLIC_BASE_URL", &self.base));
        env.extend_from_slice(extra);
        Self::launch(command, self.pg.clone(), &env).await
    }

    async fn launch(
        command: &'static str,
        pg: Option<Arc<PgDatabase>>,
        extra: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = match &pg {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}/pixbatch.db", dir.path().display()),
        };
        // A worker serves only health and metrics, on HEALTH_BIND.
        let (bind_var, other_var) = match command {
            "worker" => ("HEALTH_BIND", "BIND"),
            _ => ("BIND", "HEALTH_BIND"),
        };
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL", database_url),
            (
                "STORAGE_URL",
                format!("file://{}/uploads", dir.path().display()),
            ),
            // Port 0: the server binds a free port itself and logs it (see `spawn`).
            (bind_var, "127.0.0.1:0".into()),
            (other_var, "127.0.0.1:0".into()),
            // Tests run in parallel: the dashboard's fixed default port would clash.
            ("BOARD_BIND", "off".into()),
            ("ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8".into()),
            ("FETCH_BACKOFF_BASE", "100ms".into()),
            ("FETCH_BACKOFF_CAP", "1s".into()),
            ("FETCH_TIMEOUT", "10s".into()),
            ("JOB_POLL_INTERVAL", "50ms".into()),
            ("JOB_HEARTBEAT", "1s".into()),
            ("WEBHOOK_RETRY_SCHEDULE", "200ms,400ms,800ms".into()),
            ("WEBHOOK_SECRET", SECRET.into()),
            ("SHUTDOWN_TIMEOUT", "10s".into()),
            ("RUST_LOG", "info,sqlx=warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        // However quiet a test asks the logs to be, the start lines that name the bound
        // ports stay: the harness reads them.
        for (k, v) in &mut env {
            if k == "RUST_LOG" {
                v.push_str(",pixbatch::app=info,pixbatch::board=info");
            }
        }
        pixbatch::tls::use_ring();
        let mut server = Self {
            base: String::new(),
            dir,
            child: None,
            env,
            port: 0,
            starts: 0,
            command,
            pg,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("server-{}.log", self.starts)))
                .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pixbatch"));
        cmd.arg(self.command)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn pixbatch"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.port == 0
                && let Some(addr) = logged_addr(&self.logs(), "pixbatch::app", "listening", "addr")
            {
                self.pin_port(addr.port());
            }
            if self.port != 0
                && let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("pixbatch exited early ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keeps the port the first start bound for restarts: the URLs handed out so far
    /// (and `self.base`) name it. Rebinding a port the server itself just released is
    /// the one bind-then-release left, as nothing else could keep those URLs valid.
    fn pin_port(&mut self, port: u16) {
        let bind_var = if self.command == "worker" {
            "HEALTH_BIND"
        } else {
            "BIND"
        };
        self.port = port;
        self.base = format!("http://127.0.0.1:{port}");
        for (k, v) in &mut self.env {
            if k == bind_var {
                *v = format!("127.0.0.1:{port}");
            }
        }
    }

    /// Everything the server processes logged so far.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("server-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn signal_term(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// The test's own connection to the server's SQLite database (to lock it, or to
    /// make it refuse what the test needs refused).
    pub async fn sqlite_connection(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}/pixbatch.db",
            self.dir.path().display()
        ))
        .await
        .expect("the test's own connection")
    }

    /// Waits (up to 20 s) until the image server has been asked for every one of `paths`.
    pub async fn wait_fetched(&self, images: &ImageServer, paths: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while paths.iter().any(|p| images.hits(p) == 0) {
            assert!(
                Instant::now() < deadline,
                "{paths:?} not all fetched\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status, up to `timeout`. Waits without
    /// blocking the test's runtime, so that its servers (images, webhooks) keep
    /// answering the jobs the process finishes meanwhile.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_term();
        self.wait_exit(timeout).await
    }

    /// Waits for the process to exit (after a [`Self::signal_term`]: a second signal
    /// would stop it at once), up to `timeout`, then kills it.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the binary again on the same files and port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The store directory.
    pub fn uploads(&self) -> PathBuf {
        self.env
            .iter()
            .find(|(k, _)| k == "STORAGE_URL")
            .and_then(|(_, v)| v.strip_prefix("file://"))
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("uploads"))
    }

    /// POSTs a CSV with extra form fields; returns status and JSON body.
    pub async fn upload(&self, csv: &[u8], fields: &[(&str, &str)]) -> (u16, Value) {
        self.upload_with(csv, fields, None).await
    }

    /// Uploads a CSV that must be accepted (202); returns the new request's id.
    pub async fn accepted(&self, csv: &[u8], fields: &[(&str, &str)]) -> String {
        let (code, body) = self.upload(csv, fields).await;
        assert_eq!(code, 202, "{body}");
        body["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no request id in {body}"))
            .to_owned()
    }

    /// As [`Self::upload`], with an optional bearer token.
    pub async fn upload_with(
        &self,
        csv: &[u8],
        fields: &[(&str, &str)],
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(csv.to_vec())
                .file_name("products.csv")
                .mime_str("text/csv")
                .unwrap(),
        );
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        let mut req = self
            .http
            .post(format!("{}/upload", self.base))
            .multipart(form);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("upload");
        let status = resp.status().as_u16();
        let location = header_of(&resp, "location");
        check_retry_after(&resp);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 202 {
            // Location is the new request's status URL, as the body gives it.
            let id = body["request_id"].as_str().unwrap_or_default();
            let expected = format!("{}/status/{id}", self.base);
            assert_eq!(location.as_deref(), Some(expected.as_str()), "{body}");
            assert_eq!(body["status_url"].as_str(), Some(expected.as_str()));
        }
        (status, body)
    }

    /// GETs a path (or absolute URL) and returns status and JSON.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let resp = self.http.get(url).send().await.expect("get");
        let status = resp.status().as_u16();
        check_retry_after(&resp);
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Opens the live event stream of a request (`/requests/{id}/events`).
    pub async fn events(&self, id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/requests/{id}/events", self.base))
            .send()
            .await
            .expect("events")
    }

    /// POSTs to a path with no body and returns status and JSON.
    pub async fn post_json(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        check_retry_after(&resp);
        if status == 202 {
            // An accepted action says where its outcome shows: the request's status, or
            // (a redelivery) its delivery log.
            let location = header_of(&resp, "location").unwrap_or_default();
            let id = path.split('/').nth(2).unwrap_or_default();
            let expected = if path.ends_with("/redeliver") {
                format!("{}/requests/{id}/webhooks", self.base)
            } else {
                format!("{}/status/{id}", self.base)
            };
            assert_eq!(location, expected, "POST {path}");
        }
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `/readyz`'s status and its reason (`ok`, or what is wrong).
    pub async fn readyz(&self) -> (u16, String) {
        let (code, body) = self.get_json("/readyz").await;
        (code, body["status"].as_str().unwrap_or_default().to_owned())
    }

    /// GETs a URL and returns status, content type and bytes.
    pub async fn get_bytes(&self, url: &str) -> (u16, String, Vec<u8>) {
        let resp = self.http.get(url).send().await.expect("get");
        let status = resp.status().as_u16();
        let ct = header_of(&resp, "content-type").unwrap_or_default();
        (status, ct, resp.bytes().await.expect("body").to_vec())
    }

    /// Polls the status until it is final; panics with the logs after `timeout`.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        self.poll_final(id, timeout, false).await
    }

    /// [`Self::wait_final`], taking a 503 or a refused connection (the database or
    /// this server restarting) as "not yet".
    pub async fn wait_final_through_outages(&self, id: &str, timeout: Duration) -> Value {
        self.poll_final(id, timeout, true).await
    }

    async fn poll_final(&self, id: &str, timeout: Duration, outages: bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let resp = self
                .http
                .get(format!("{}/status/{id}", self.base))
                .send()
                .await;
            let mut body = Value::Null;
            match resp {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    body = resp.json().await.unwrap_or_default();
                    assert!(
                        code == 200 || (outages && code == 503),
                        "status {code}: {body}"
                    );
                    let status = body["status"].as_str().unwrap_or_default();
                    if matches!(
                        status,
                        "Completed" | "CompletedWithErrors" | "Failed" | "Cancelled"
                    ) {
                        return body;
                    }
                }
                Err(e) => assert!(outages, "GET /status/{id}: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "request {id} not final after {timeout:?}: {body}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics");
        resp.text().await.unwrap_or_default()
    }

    /// Every image of a request (all pages).
    pub async fn images(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let (code, page) = self
                .get_json(&format!("/requests/{id}/images?offset={offset}&limit=1000"))
                .await;
            assert_eq!(code, 200, "{page}");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            out.extend(items);
            match page["next_offset"].as_u64() {
                Some(n) => offset = n,
                None => return out,
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A staged (unfinished) write: `<final name>#<n>`.
pub fn is_staged(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().contains('#'))
}

/// The names of the JPEGs stored under `dir`; fails if a partial write was left behind.
pub fn stored_jpgs(dir: &Path) -> std::collections::HashSet<String> {
    let files = files_under(dir);
    assert!(files.iter().all(|p| !is_staged(p)), "{files:?}");
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Files under a directory, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Parses CSV bytes into rows of cells.
pub fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    r.records()
        .map(|rec| rec.expect("csv record").iter().map(str::to_owned).collect())
        .collect()
}
