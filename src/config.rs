//! Command line and configuration: every option is a flag and an environment variable
//! (the flag wins), parsed and validated once at start.

use std::{convert::Infallible, fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    imaging::{self, Quality},
    store::{S3Credentials, StorageConfig},
};

/// The `pixbatch` command line.
#[derive(Debug, Parser)]
#[command(
    name = "pixbatch",
    version,
    about = "Batch image compression service",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options, for `pixbatch` with no subcommand (= `pixbatch serve`).
    #[command(flatten)]
    pub serve: ServerConfig,
}

impl Cli {
    /// Parses the process' command line and environment. The environment fills the
    /// server options of bare `pixbatch` (= `serve`) only when no subcommand is given:
    /// clap would otherwise read and check every server variable for `convert` or
    /// `submit` too, and a `BIND` or `LOG_FORMAT` meant for a server in the same shell
    /// would stop a client command that has no use for it.
    ///
    /// A command line (or variable) it refuses exits 1, not clap's 2: `submit` says
    /// with 2 that its request finished with failed images, and a script reading that
    /// would go looking for an output a mistyped option never made. Help and version
    /// exit 0.
    pub fn from_env() -> Self {
        Self::parse_from_env(std::env::args_os()).unwrap_or_else(|e| {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 })
        })
    }

    fn parse_from_env<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let matches = match Self::without_env().try_get_matches_from(&args) {
            Ok(matches) => matches,
            // The help as written, with each option's variable.
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
                return Self::try_parse_from(args);
            }
            Err(e) => return Err(e),
        };
        if matches.subcommand().is_some() {
            return Self::from_arg_matches(&matches);
        }
        Self::try_parse_from(args)
    }

    /// The command with the root's server options blind to the environment.
    fn without_env() -> clap::Command {
        use clap::CommandFactory;
        Self::command().mut_args(|a| a.env(None::<&'static str>))
    }

    /// The server options at their defaults, whatever the environment says: what the
    /// OpenAPI document is built with, so that it is the same on every machine.
    pub fn defaults() -> Result<ServerConfig, clap::Error> {
        use clap::FromArgMatches;
        let matches = Self::without_env().try_get_matches_from(["pixbatch"])?;
        Ok(Self::from_arg_matches(&matches)?.serve)
    }
}

/// The binary's roles and tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// API and workers in one process (the default).
    Serve(ServerConfig),
    /// The HTTP API alone, no workers (scale-out: any number behind a load balancer).
    Api(ServerConfig),
    /// Workers alone, no public API; `/healthz`, `/readyz` and `/metrics` on `HEALTH_BIND`.
    Worker(ServerConfig),
    /// Apply database migrations and exit.
    Migrate(ServerConfig),
    /// Print the OpenAPI document to stdout.
    Openapi,
    /// Run the per-image transform on local files.
    Convert(crate::cli::convert::ConvertArgs),
    /// Upload a CSV to a server; with `--wait`, follow it and download the output CSV.
    Submit(crate::cli::submit::SubmitArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything a server process needs to know.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Database URL: `sqlite://FILE` (embedded, default) or `postgres://USER@HOST/DB`
    /// (shared by any number of `api` and `worker` processes). Picks the job queue's
    /// backend and our tables.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://pixbatch.db",
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,

    /// Address the HTTP API listens on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Address of the worker monitoring dashboard (apalis-board; its own listener, as its
    /// UI owns `/`); `off` disables it.
    #[arg(long, env = "BOARD_BIND", default_value = "127.0.0.1:8081")]
    pub board_bind: crate::board::BoardBind,

    /// Where `pixbatch worker` serves `/healthz`, `/readyz` and `/metrics` (the other
    /// roles serve them on `BIND`).
    #[arg(long, env = "HEALTH_BIND", default_value = "127.0.0.1:9090")]
    pub health_bind: SocketAddr,

    /// Prefix of every URL the service hands out; `http://<BIND>` when unset.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Where CSVs and images are stored: `file://DIR` (a local directory) or
    /// `s3://BUCKET[/PREFIX]` (AWS S3 or an S3-compatible server, for scale-out).
    #[arg(long, env = "STORAGE_URL", default_value = "file://uploads")]
    pub storage_url: String,

    /// S3-compatible server for `s3://` storage (e.g. `http://127.0.0.1:9000`), reached
    /// with path-style requests; plain `http://` is allowed. Unset: AWS S3 itself.
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Access key for `s3://` storage. Unset: the usual AWS sources (session token, web
    /// identity, container or instance credentials).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,

    /// Secret key for `s3://` storage, with `AWS_ACCESS_KEY_ID`.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<Secret>,

    /// Region of the `s3://` bucket; `AWS_DEFAULT_REGION`, else `us-east-1`, when unset.
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Image jobs in flight per worker process; cores × 8 when unset. Downloads wait on
    /// the network, so this is larger than the CPU pool, which is sized to the cores:
    /// with 100 ms to the first byte and ~40 ms of CPU per photo, a core needs about 8
    /// jobs downloading ahead of it to stay busy (README, "Decisions").
    /// At most 10,000: the queue's fetch takes it as a 32-bit `LIMIT`, which a larger
    /// value would wrap (to 0: nothing is ever fetched).
    #[arg(long, env = "WORKER_CONCURRENCY", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub worker_concurrency: Option<usize>,

    /// Default output quality when a request gives none: 1–100, `relative:N%`,
    /// `auto` or `auto:N` (SSIMULACRA2 target, up to two decimals).
    #[arg(long, env = "JPEG_QUALITY", default_value = "50", value_parser = crate::imaging::Quality::parse)]
    pub jpeg_quality: crate::imaging::Quality,

    /// Default byte cap of each output when a request gives no `max_bytes`
    /// (`150000`, `150KB`, `2MB`; KB = 1000 bytes); no cap when unset.
    #[arg(long, env = "MAX_OUTPUT_BYTES", value_parser = crate::imaging::MaxBytes::parse)]
    pub max_output_bytes: Option<crate::imaging::MaxBytes>,

    /// Whether a request reuses unchanged images of earlier requests when its upload
    /// does not say (`reuse`): a conditional GET, and on 304 or the same bytes a copy of
    /// the earlier output instead of a new transform. `false` fetches every image in full.
    #[arg(long, env = "REUSE", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub reuse: bool,

    /// Largest accepted CSV upload, in bytes (checked while streaming).
    #[arg(long, env = "MAX_CSV_BYTES", default_value_t = 20 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_csv_bytes: u64,

    /// Most data rows in one CSV.
    #[arg(long, env = "MAX_ROWS", default_value_t = 100_000, value_parser = parse_count)]
    pub max_rows: usize,

    /// Most image URLs in one row.
    #[arg(long, env = "MAX_URLS_PER_ROW", default_value_t = 50, value_parser = parse_count)]
    pub max_urls_per_row: usize,

    /// Largest image download, in bytes (checked against Content-Length and while streaming).
    #[arg(long, env = "MAX_IMAGE_BYTES", default_value_t = 30 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_bytes: u64,

    /// Largest image, in pixels, read from the header before decoding.
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,

    /// Most scans a JPEG may have (a progressive one has several; each makes the
    /// decoder walk the whole image again). Counted before decoding, held while decoding.
    #[arg(long, env = "MAX_IMAGE_SCANS", default_value_t = imaging::DEFAULT_MAX_SCANS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_image_scans: u32,

    /// CPU time every image may use for its transform, on top of `IMAGE_TIME_PER_MEGAPIXEL`.
    #[arg(long, env = "IMAGE_TIME_BUDGET", default_value = "2s", value_parser = parse_time_limit)]
    pub image_time_budget: Duration,

    /// Extra CPU time per million pixels of the image (2s + 40ms/MP: 6 s at 100 MP).
    #[arg(long, env = "IMAGE_TIME_PER_MEGAPIXEL", default_value = "40ms", value_parser = parse_duration)]
    pub image_time_per_megapixel: Duration,

    /// Time limit for one download, body included (e.g. `30s`).
    #[arg(long, env = "FETCH_TIMEOUT", default_value = "30s", value_parser = parse_time_limit)]
    pub fetch_timeout: Duration,

    /// Most downloads in parallel from one host name, per process: a courtesy to the
    /// merchant's server that also bounds one process's rate from that host (with
    /// 100 ms to the first byte, 16 downloads take at most ~150 images/s).
    #[arg(long, env = "FETCH_PER_HOST_LIMIT", default_value_t = crate::fetch::DEFAULT_PER_HOST_LIMIT as u32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub fetch_per_host_limit: u32,

    /// Tries before an image with a transient failure is failed.
    #[arg(long, env = "FETCH_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub fetch_attempts: u32,

    /// First delay between download tries; doubled each try, with jitter.
    #[arg(long, env = "FETCH_BACKOFF_BASE", default_value = "1s", value_parser = parse_backoff)]
    pub fetch_backoff_base: Duration,

    /// Cap on the delay between download tries (and on an honoured `Retry-After`); at
    /// least the base.
    #[arg(long, env = "FETCH_BACKOFF_CAP", default_value = "60s", value_parser = parse_backoff)]
    pub fetch_backoff_cap: Duration,

    /// Comma list of CIDRs that downloads and webhooks may reach although private
    /// (e.g. `127.0.0.0/8` for tests); `off` refuses every private address.
    #[arg(long, env = "ALLOW_PRIVATE_NETWORKS", default_value = "off")]
    pub allow_private_networks: String,

    /// Webhook used when a request gives none.
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,

    /// Signing secret(s), `whsec_<base64>`, space-separated for rotation. Unset: unsigned.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Delays between webhook delivery tries.
    #[arg(
        long,
        env = "WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub webhook_retry_schedule: String,

    /// When set, every endpoint but health, docs and `/files` needs `Authorization: Bearer <token>`.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret>,

    /// Most live event streams (`/requests/{id}/events`) an API process holds open at
    /// once; one more is a 503. Each looks at its request four times a second, on the
    /// database the workers use.
    #[arg(long, env = "MAX_EVENT_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_event_streams: u32,

    /// How long a connection to the API (or a worker's health listener) may go
    /// without a byte either way, while no request of it is being handled, before it
    /// is closed: a client that sends half a request and stops gives its connection
    /// back. From 2 s to 1 h; event streams send a keep-alive
    /// comment at half of it (at most every 15 s), so a reading client stays. Above
    /// the 90 s a reqwest client keeps an idle connection in its pool by default, so
    /// that such a client does not send a request down a connection being closed.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_idle_timeout)]
    pub http_idle_timeout: Duration,

    /// How often workers report they are alive; jobs of a worker silent for two
    /// intervals plus the longer of `SHUTDOWN_TIMEOUT` and `FETCH_TIMEOUT` (60 s by
    /// default) are taken up by another one.
    #[arg(long, env = "JOB_HEARTBEAT", default_value = "15s", value_parser = parse_heartbeat)]
    pub job_heartbeat: Duration,

    /// How often idle workers look for due jobs (delayed retries included).
    #[arg(long, env = "JOB_POLL_INTERVAL", default_value = "200ms", value_parser = parse_poll_interval)]
    pub job_poll_interval: Duration,

    /// How long SIGTERM waits for in-flight jobs before exiting.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long the queue keeps a job that finished (its row and payload) before the
    /// workers delete it; at least an hour and at most 30 days, `0` keeps them. Requests, images and
    /// webhook logs are not jobs: they are kept.
    #[arg(long, env = "JOB_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub job_retention: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Which logs are written: a level (`info`, `debug`) or `tracing` directives
    /// (`info,sqlx=warn,pixbatch::jobs=debug`).
    #[arg(long = "rust-log", env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub rust_log: String,
}

/// Parses `RUST_LOG`: directives `tracing` understands, or the process refuses to
/// start (a typo would otherwise silence every log line).
fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Options validated into their working types, in groups: each part of the service
/// takes the group it needs, and nothing reaches back to the raw options.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listeners and access.
    pub server: ServerSettings,
    /// Prefix of handed-out URLs, without a trailing slash.
    pub public_base_url: String,
    /// What a request gets when its upload does not say.
    pub defaults: RequestDefaults,
    /// The database and the blob store.
    pub storage: StorageSettings,
    /// Sizes of uploads and images.
    pub limits: LimitSettings,
    /// Downloads.
    pub fetch: FetchSettings,
    /// Completion webhooks.
    pub webhook: WebhookSettings,
    /// Workers and their queues.
    pub jobs: JobSettings,
    /// Default quality of a request (kept beside the groups: the image job reads it).
    pub default_quality: Quality,
}

impl Settings {
    /// Settles the base of the URLs this process hands out, once its API listener is
    /// bound (`api_addr`; `None` for a worker, which serves no API). `PUBLIC_BASE_URL`
    /// wins; without it the base is the API's own address, as bound (port 0 becomes the
    /// port taken). A base on `0.0.0.0` or `[::]` is refused rather than used: the
    /// output CSV keeps its URLs for ever, and a client cannot fetch from an
    /// address that means "every interface".
    pub fn settle_public_base(&mut self, api_addr: Option<SocketAddr>) -> Result<(), ConfigError> {
        if self.server.public_base_url_given {
            return Ok(());
        }
        let addr = api_addr.unwrap_or(self.server.bind);
        if addr.ip().is_unspecified() {
            return Err(ConfigError::new(
                "PUBLIC_BASE_URL",
                format!(
                    "not set, and BIND={addr} listens on every address, so it cannot name the \
                     one clients use in the URLs handed out: set PUBLIC_BASE_URL, e.g. \
                     http://HOST:{}",
                    addr.port()
                ),
            ));
        }
        self.public_base_url = format!("http://{addr}");
        Ok(())
    }
}

/// Where the process listens, and who may call it.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `BIND`: the HTTP API.
    pub bind: SocketAddr,
    /// `HEALTH_BIND`: a worker's health and metrics.
    pub health_bind: SocketAddr,
    /// `BOARD_BIND`: the dashboard, or off.
    pub board_bind: crate::board::BoardBind,
    /// Whether `PUBLIC_BASE_URL` was given (otherwise the base follows the bound port).
    pub public_base_url_given: bool,
    /// `API_TOKEN`: the bearer token every non-public endpoint needs.
    pub api_token: Option<Secret>,
    /// `MAX_EVENT_STREAMS`.
    pub max_event_streams: u32,
    /// `HTTP_IDLE_TIMEOUT`.
    pub idle_timeout: Duration,
}

/// What a request gets when its upload does not say.
#[derive(Debug, Clone)]
pub struct RequestDefaults {
    /// `MAX_OUTPUT_BYTES`.
    pub max_output_bytes: Option<crate::imaging::MaxBytes>,
    /// `REUSE`.
    pub reuse: bool,
}

/// The database and the blob store.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `DATABASE_URL`.
    pub database_url: DatabaseUrl,
    /// `STORAGE_URL` with the S3 settings.
    pub blobs: StorageConfig,
}

/// Sizes of uploads and images.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `MAX_CSV_BYTES`.
    pub max_csv_bytes: u64,
    /// `MAX_ROWS`.
    pub max_rows: usize,
    /// `MAX_URLS_PER_ROW`.
    pub max_urls_per_row: usize,
    /// The per-image limits: `MAX_IMAGE_*` and `IMAGE_TIME_*`.
    pub image: imaging::Limits,
}

/// Downloads: time limit, tries and the networks they may reach.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// `FETCH_TIMEOUT`.
    pub timeout: Duration,
    /// `FETCH_ATTEMPTS`.
    pub attempts: u32,
    /// `FETCH_PER_HOST_LIMIT`.
    pub per_host_limit: usize,
    /// `FETCH_BACKOFF_BASE`.
    pub backoff_base: Duration,
    /// `FETCH_BACKOFF_CAP`.
    pub backoff_cap: Duration,
    /// `ALLOW_PRIVATE_NETWORKS`: networks opened despite the deny table.
    pub allow_private: Vec<ipnet::IpNet>,
}

/// Completion webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOK_URL`: used when a request gives none.
    pub default_url: Option<String>,
    /// `WEBHOOK_SECRET`, parsed.
    pub keys: WebhookKeys,
    /// `WEBHOOK_RETRY_SCHEDULE`, parsed.
    pub schedule: Vec<Duration>,
}

/// Workers and their queues.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Image jobs in flight per worker.
    pub worker_concurrency: usize,
    /// Threads for CPU work.
    pub cpu_threads: usize,
    /// `JOB_HEARTBEAT`.
    pub heartbeat: Duration,
    /// `JOB_POLL_INTERVAL`.
    pub poll_interval: Duration,
    /// `SHUTDOWN_TIMEOUT`.
    pub shutdown_timeout: Duration,
    /// `JOB_RETENTION`; `None` keeps finished jobs.
    pub retention: Option<Duration>,
}

/// The webhook signing keys (raw bytes); `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct WebhookKeys(Vec<Vec<u8>>);

impl std::ops::Deref for WebhookKeys {
    type Target = [Vec<u8>];

    fn deref(&self) -> &[Vec<u8>] {
        &self.0
    }
}

impl fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key(s)", self.0.len())
    }
}

/// A secret option (a token, a signing secret, a key), shown as `<redacted>` by
/// `Debug`, so that logging a configuration cannot leak it. Surrounding whitespace is
/// not part of it: a secret mounted from a file often ends in a newline, and an
/// `API_TOKEN` kept with it would match no client's token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self(s.trim().to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.trim().to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `DATABASE_URL`, whose `Debug` shows the URL with its password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    /// The URL itself, password included, for connecting.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl FromStr for DatabaseUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self(s.into()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(self.expose()) {
            Ok(mut url) if url.password().is_some() => {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = url.set_password(Some("redacted"));
                write!(f, "{:?}", url.as_str())
            }
            Ok(_) => write!(f, "{:?}", self.expose()),
            // Unparsable: nothing tells where a password would be.
            Err(_) => f.write_str("<unparsable URL>"),
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name}: {reason}")]
pub struct ConfigError {
    name: &'static str,
    reason: String,
}

impl ConfigError {
    fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}

/// `PUBLIC_BASE_URL` must be a base that paths can follow: an `http(s)` URL without
/// credentials, query or fragment (`…/files/{key}` appended to `https://h/?x` or
/// `ftp://h` would be no link a client can follow).
fn check_public_base(base: &str) -> Result<(), ConfigError> {
    let refuse = |why: &str| Err(ConfigError::new("PUBLIC_BASE_URL", why.to_owned()));
    let url =
        url::Url::parse(base).map_err(|e| ConfigError::new("PUBLIC_BASE_URL", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return refuse("not an http(s) URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return refuse("has a query or fragment, which the paths appended to it would follow");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("names credentials, which every output URL would carry");
    }
    Ok(())
}

impl ServerConfig {
    /// Checks every option once and derives the working values.
    pub fn validate(mut self) -> Result<Settings, ConfigError> {
        // An empty variable means unset (a common way to clear one in a shell or unit file).
        for opt in [
            &mut self.webhook_secret,
            &mut self.api_token,
            &mut self.aws_secret_access_key,
        ] {
            if opt.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
                *opt = None;
            }
        }
        for opt in [
            &mut self.webhook_url,
            &mut self.public_base_url,
            &mut self.s3_endpoint,
            &mut self.aws_access_key_id,
            &mut self.aws_region,
        ] {
            if opt.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *opt = None;
            }
        }
        // The key id and region go into every request's signature header: a file's
        // last newline (a secret mounted from a file keeps it) made each S3 call
        // panic on a header value it cannot hold. Trimmed, as the secret key is.
        for value in [&mut self.aws_access_key_id, &mut self.aws_region]
            .into_iter()
            .flatten()
        {
            *value = value.trim().to_owned();
        }
        let public_base_url = self
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
            .trim_end_matches('/')
            .to_owned();
        check_public_base(&public_base_url)?;
        let storage = self.storage()?;
        let allow_private = crate::fetch::parse_allow_list(&self.allow_private_networks)
            .map_err(|e| ConfigError::new("ALLOW_PRIVATE_NETWORKS", e))?;
        let webhook_schedule = parse_schedule(&self.webhook_retry_schedule)
            .map_err(|e| ConfigError::new("WEBHOOK_RETRY_SCHEDULE", e))?;
        let webhook_keys = match &self.webhook_secret {
            Some(s) => WebhookKeys(
                crate::webhook::parse_secrets(s.expose())
                    .map_err(|e| ConfigError::new("WEBHOOK_SECRET", e))?,
            ),
            None => WebhookKeys::default(),
        };
        if let Some(url) = &self.webhook_url {
            crate::csv::ImageUrl::parse(url).map_err(|e| ConfigError::new("WEBHOOK_URL", e))?;
            // As an upload's `webhook_url`: a URL no delivery may ever reach
            // (credentials, an IP literal in a refused range) is refused at start
            // rather than failing every event through the whole retry schedule.
            crate::fetch::check_url(url, &allow_private)
                .map_err(|e| ConfigError::new("WEBHOOK_URL", e.to_string()))?;
        }
        if self.fetch_backoff_cap < self.fetch_backoff_base {
            return Err(ConfigError::new(
                "FETCH_BACKOFF_CAP",
                format!(
                    "at least FETCH_BACKOFF_BASE ({}), got {}",
                    humantime::format_duration(self.fetch_backoff_base),
                    humantime::format_duration(self.fetch_backoff_cap)
                ),
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let worker_concurrency = self
            .worker_concurrency
            .unwrap_or(cores * IMAGE_JOBS_PER_CORE)
            .max(1);
        if crate::store::Backend::of_url(self.database_url.expose()).is_none() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "expected sqlite://FILE or postgres://USER@HOST/DATABASE",
            ));
        }
        if crate::store::is_in_memory_sqlite(self.database_url.expose()) {
            // Each pool would open a database of its own (the readers saw no tables),
            // and a restart would lose everything.
            return Err(ConfigError::new(
                "DATABASE_URL",
                "an in-memory SQLite database keeps nothing across a restart; name a file: sqlite://FILE",
            ));
        }
        Ok(Settings {
            server: ServerSettings {
                bind: self.bind,
                health_bind: self.health_bind,
                board_bind: self.board_bind,
                public_base_url_given: self.public_base_url.is_some(),
                api_token: self.api_token.clone(),
                max_event_streams: self.max_event_streams,
                idle_timeout: self.http_idle_timeout,
            },
            public_base_url,
            defaults: RequestDefaults {
                max_output_bytes: self.max_output_bytes,
                reuse: self.reuse,
            },
            storage: StorageSettings {
                database_url: self.database_url.clone(),
                blobs: storage,
            },
            limits: LimitSettings {
                max_csv_bytes: self.max_csv_bytes,
                max_rows: self.max_rows,
                max_urls_per_row: self.max_urls_per_row,
                image: self.image_limits(),
            },
            fetch: FetchSettings {
                timeout: self.fetch_timeout,
                attempts: self.fetch_attempts,
                per_host_limit: self.fetch_per_host_limit as usize,
                backoff_base: self.fetch_backoff_base,
                backoff_cap: self.fetch_backoff_cap,
                allow_private,
            },
            webhook: WebhookSettings {
                default_url: self.webhook_url.clone(),
                keys: webhook_keys,
                schedule: webhook_schedule,
            },
            jobs: JobSettings {
                worker_concurrency,
                cpu_threads: cores,
                heartbeat: self.job_heartbeat,
                poll_interval: self.job_poll_interval,
                shutdown_timeout: self.shutdown_timeout,
                retention: (!self.job_retention.is_zero()).then_some(self.job_retention),
            },
            default_quality: self.jpeg_quality,
        })
    }
}

impl ServerConfig {
    /// The per-image limits: `MAX_IMAGE_*` and `IMAGE_TIME_*`.
    fn image_limits(&self) -> imaging::Limits {
        imaging::Limits {
            max_pixels: self.max_image_pixels,
            max_input_bytes: self.max_image_bytes,
            max_scans: self.max_image_scans,
            time: imaging::TimeBudget {
                base: self.image_time_budget,
                per_megapixel: self.image_time_per_megapixel,
            },
        }
    }

    /// `STORAGE_URL`, with the S3 settings when it names a bucket.
    fn storage(&self) -> Result<StorageConfig, ConfigError> {
        let mut storage = StorageConfig::parse(&self.storage_url)
            .map_err(|e| ConfigError::new("STORAGE_URL", e))?;
        if let StorageConfig::S3(s3) = &mut storage {
            s3.endpoint = self
                .s3_endpoint
                .as_deref()
                .map(crate::store::parse_endpoint)
                .transpose()
                .map_err(|e| ConfigError::new("S3_ENDPOINT", e))?;
            s3.region = self.aws_region.clone();
            s3.credentials = match (&self.aws_access_key_id, &self.aws_secret_access_key) {
                (Some(id), Some(secret)) => Some(S3Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.expose().to_owned(),
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::new(
                        "AWS_SECRET_ACCESS_KEY",
                        "AWS_ACCESS_KEY_ID is set, its secret key is not",
                    ));
                }
                (None, Some(_)) => {
                    return Err(ConfigError::new(
                        "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY is set, its access key id is not",
                    ));
                }
            };
        }
        Ok(storage)
    }
}

/// Image jobs in flight per core of a worker process when `WORKER_CONCURRENCY` is
/// unset (see the flag's doc; the end-to-end benchmark sizes its memory bound with it).
pub const IMAGE_JOBS_PER_CORE: usize = 8;

/// The longest duration any option takes: a deadline is computed as now plus the
/// duration, and a value like `1000000y` would overflow the clock.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses a duration option (`30s`, `200ms`, `1h 30m`), at most [`MAX_DURATION`].
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| e.to_string())?;
    if d > MAX_DURATION {
        return Err(format!("at most 30 days, got {s}"));
    }
    Ok(d)
}

/// [`parse_duration`], at least `min`.
fn parse_at_least(s: &str, min: Duration) -> Result<Duration, String> {
    at_least(parse_duration(s)?, s, min)
}

/// `d` (read from `s`) when it is `min` or more.
fn at_least(d: Duration, s: &str, min: Duration) -> Result<Duration, String> {
    if d < min {
        return Err(format!(
            "at least {}, got {s}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

/// Parses `JOB_POLL_INTERVAL`: at least 10 ms, since an idle worker polls the database
/// at that pace (a zero interval would poll back to back).
fn parse_poll_interval(s: &str) -> Result<Duration, String> {
    parse_at_least(s, Duration::from_millis(10))
}

/// Parses a backoff delay (`FETCH_BACKOFF_BASE`, `FETCH_BACKOFF_CAP`): at least 10 ms.
/// `0s` would run a failing download's tries back to back, and make a try that waits
/// for a full disk, or a completion that waits to store its CSV, queue itself again at
/// once for as long as the store refuses, each time a new job row.
fn parse_backoff(s: &str) -> Result<Duration, String> {
    parse_at_least(s, Duration::from_millis(10))
}

/// Parses a limit every try must fit in (`FETCH_TIMEOUT`, `IMAGE_TIME_BUDGET`): at least
/// 100 ms. `0s` would fail every download or every image, each after its retries.
fn parse_time_limit(s: &str) -> Result<Duration, String> {
    parse_at_least(s, Duration::from_millis(100))
}

/// Parses a count limit (`MAX_ROWS`, `MAX_URLS_PER_ROW`): a whole number, at least 1
/// (0 would refuse every upload).
fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("a whole number: {e}")),
    }
}

/// Parses `HTTP_IDLE_TIMEOUT`: 2 s to an hour.
fn parse_idle_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_at_least(s, Duration::from_secs(2))?;
    if d > Duration::from_secs(3600) {
        return Err(format!("at most an hour, got {s}"));
    }
    Ok(d)
}

/// Parses `JOB_HEARTBEAT`: at least 1 s. The queue counts a worker's silence in whole
/// seconds, so under half a second every heartbeat would take every other worker's
/// running jobs as orphans.
fn parse_heartbeat(s: &str) -> Result<Duration, String> {
    parse_at_least(s, Duration::from_secs(1))
}

/// Parses `JOB_RETENTION`: `0` (keep), or at least an hour. A finished job's row is
/// what turns a late second push of its key into a no-op (see
/// `store::maintenance`), so it must outlive any redelivery by far.
fn parse_retention(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Ok(Duration::ZERO),
        d => at_least(d, s, Duration::from_secs(3600)),
    }
}

/// Parses `5s,5m,30m` into delays.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let delays = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| parse_duration(p).map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err("at least one delay is needed".into());
    }
    Ok(delays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_from_a_file_loses_its_newline() {
        let cli =
            Cli::try_parse_from(["pixbatch", "serve", "--api-token", " tok-3f9a1c\n"]).unwrap();
        let Some(Command::Serve(cfg)) = cli.command else {
            panic!("serve")
        };
        let settings = cfg.validate().unwrap();
        let token = settings.server.api_token.expect("a token");
        assert_eq!(token.expose(), "tok-3f9a1c");
    }

    #[tokio::test]
    async fn debug_output_redacts_every_secret() {
        let secrets = [
            "tok-3f9a1c",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "s3-secret-77d2",
            "db-pass-51e0",
        ];
        let cfg = configured(|c| {
            c.api_token = Some(secrets[0].into());
            c.webhook_secret = Some(secrets[1].into());
            c.storage_url = "s3://bucket".into();
            c.aws_access_key_id = Some("AKID".into());
            c.aws_secret_access_key = Some(secrets[3].into());
            c.database_url = "postgres://pix:db-pass-51e0@127.0.0.1/pixbatch"
                .parse()
                .unwrap();
        });
        let raw = format!("{cfg:?}");
        let s = cfg.validate().unwrap();
        let db = crate::store::Db::lazy(s.storage.database_url.expose()).unwrap();
        let cli =
            Cli::try_parse_from(["pixbatch", "submit", "in.csv", "--token", secrets[0]]).unwrap();
        for (what, text) in [
            ("ServerConfig", raw),
            ("Settings", format!("{s:?}")),
            ("Settings (pretty)", format!("{s:#?}")),
            ("Db", format!("{db:?}")),
            ("Cli", format!("{cli:?}")),
        ] {
            for secret in secrets {
                assert!(!text.contains(secret), "{what} shows {secret}: {text}");
            }
        }
        // What is not secret stays visible.
        let text = format!("{s:?}");
        assert!(
            text.contains("AKID") && text.contains("127.0.0.1/pixbatch"),
            "{text}"
        );
        assert!(text.contains("keys: 1 key(s)"), "{text}");
    }

    #[test]
    fn schedule_parses_and_rejects_garbage() {
        assert_eq!(
            parse_schedule("5s, 5m,2h").unwrap(),
            vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200)
            ]
        );
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("5s,soon").is_err());
        assert!(parse_schedule("5s,1000000y").is_err());
    }

    #[test]
    fn finished_jobs_are_kept_a_week_unless_told() {
        let settings = |retention: Option<&str>| {
            configured(|c| {
                if let Some(r) = retention {
                    c.job_retention = parse_retention(r).unwrap();
                }
            })
            .validate()
            .unwrap()
            .jobs
            .retention
        };
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(settings(None), Some(week));
        assert_eq!(settings(Some("2h")), Some(Duration::from_secs(7200)));
        assert_eq!(settings(Some("0")), None);
        assert_eq!(settings(Some("0s")), None);
        // Short enough to let a late redelivery push a finished job's key again.
        assert!(parse_retention("10m").is_err());
        assert!(parse_retention("forever").is_err());
    }

    #[test]
    fn the_log_filter_is_a_flag_and_checked() {
        let serve = |args: &[&str]| Cli::try_parse_from([&["pixbatch", "serve"], args].concat());
        let Some(Command::Serve(cfg)) = serve(&["--rust-log", "warn,pixbatch=debug"])
            .unwrap()
            .command
        else {
            panic!("serve expected")
        };
        assert_eq!(cfg.rust_log, "warn,pixbatch=debug");
        let err = serve(&["--rust-log", "pixbatch=loud"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rust-log"), "{err}");
    }

    /// A limit of 0 would refuse every upload or fail every image: refused at start.
    #[test]
    fn size_limits_are_at_least_one() {
        let serve = |flag: &str, v: &str| Cli::try_parse_from(["pixbatch", "serve", flag, v]);
        for flag in [
            "--max-csv-bytes",
            "--max-rows",
            "--max-urls-per-row",
            "--max-image-bytes",
            "--max-image-pixels",
        ] {
            assert!(serve(flag, "0").is_err(), "{flag}=0");
            assert!(serve(flag, "-3").is_err(), "{flag}=-3");
            assert!(serve(flag, "7").is_ok(), "{flag}=7");
        }
        assert!(serve("--http-idle-timeout", "1s").is_err());
        assert!(serve("--http-idle-timeout", "2h").is_err());
        assert!(serve("--http-idle-timeout", "90s").is_ok());
    }

    #[test]
    fn durations_are_bounded() {
        let serve = |flag: &str, v: &str| Cli::try_parse_from(["pixbatch", "serve", flag, v]);
        assert!(serve("--fetch-timeout", "30d").is_ok());
        let err = serve("--fetch-timeout", "1000000y")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 30 days"), "{err}");
        assert!(serve("--job-poll-interval", "10ms").is_ok());
        let err = serve("--job-poll-interval", "0s").unwrap_err().to_string();
        assert!(err.contains("at least 10ms"), "{err}");
        assert!(serve("--job-heartbeat", "1s").is_ok());
        let err = serve("--job-heartbeat", "400ms").unwrap_err().to_string();
        assert!(err.contains("at least 1s"), "{err}");
        for flag in ["--fetch-timeout", "--image-time-budget"] {
            assert!(serve(flag, "100ms").is_ok());
            let err = serve(flag, "0s").unwrap_err().to_string();
            assert!(err.contains("at least 100ms"), "{flag}: {err}");
        }
    }

    #[test]
    fn a_default_webhook_no_delivery_may_reach_is_refused_at_start() {
        let validate = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["pixbatch", "serve"], args].concat()).unwrap();
            let Some(Command::Serve(cfg)) = cli.command else {
                panic!("serve expected")
            };
            cfg.validate()
        };
        for url in [
            "http://10.0.0.5/hook",
            "http://[::1]:9000/hook",
            "https://user:pass@hooks.example.com/hook",
            "ftp://hooks.example.com/hook",
        ] {
            let err = validate(&["--webhook-url", url]).unwrap_err().to_string();
            assert!(err.contains("WEBHOOK_URL"), "{url}: {err}");
        }
        assert!(validate(&["--webhook-url", "https://hooks.example.com/hook"]).is_ok());
        // Inside ALLOW_PRIVATE_NETWORKS, as for downloads.
        let allowed = [
            "--webhook-url",
            "http://10.0.0.5/hook",
            "--allow-private-networks",
            "10.0.0.0/8",
        ];
        assert!(validate(&allowed).is_ok());
    }

    #[test]
    fn defaults_validate() {
        let cli = Cli::try_parse_from(["pixbatch", "serve"]).unwrap();
        let Some(Command::Serve(cfg)) = cli.command else {
            panic!("serve expected")
        };
        let s = cfg.validate().unwrap();
        assert_eq!(s.public_base_url, "http://127.0.0.1:8080");
        assert_eq!(s.webhook.schedule.len(), 7);
        assert!(s.fetch.allow_private.is_empty());
        assert_eq!(s.fetch.per_host_limit, crate::fetch::DEFAULT_PER_HOST_LIMIT);
        assert_eq!(s.storage.blobs, StorageConfig::Local("uploads".into()));
        // The image limits' defaults are imaging's own.
        let limits = s.limits.image;
        let defaults = imaging::Limits::default();
        assert_eq!(limits.max_scans, defaults.max_scans);
        assert_eq!(limits.time, defaults.time);
        assert_eq!(
            (limits.max_pixels, limits.max_input_bytes),
            (defaults.max_pixels, defaults.max_input_bytes)
        );
    }

    #[test]
    fn the_public_base_never_names_every_address() {
        let with = |bind: &str, base: Option<&str>| {
            validate_with(|c| {
                c.bind = bind.parse().unwrap();
                c.public_base_url = base.map(str::to_owned);
            })
            .unwrap()
        };
        // Bound on port 0: the base takes the port the listener got.
        let mut s = with("127.0.0.1:0", None);
        s.settle_public_base(Some("127.0.0.1:41234".parse().unwrap()))
            .unwrap();
        assert_eq!(s.public_base_url, "http://127.0.0.1:41234");
        // A worker serves no API: BIND names the API's address.
        let mut s = with("[::1]:8080", None);
        s.settle_public_base(None).unwrap();
        assert_eq!(s.public_base_url, "http://[::1]:8080");
        for bind in ["0.0.0.0:8080", "[::]:8080"] {
            let mut s = with(bind, None);
            let bound = s.server.bind;
            for api_addr in [Some(bound), None] {
                let err = s.settle_public_base(api_addr).unwrap_err().to_string();
                assert!(err.contains("PUBLIC_BASE_URL: not set"), "{err}");
                assert!(err.contains("http://HOST:8080"), "{err}");
            }
            // Given, it is used as given, whatever the listener.
            let mut s = with(bind, Some("https://img.example.com/"));
            s.settle_public_base(Some(bound)).unwrap();
            assert_eq!(s.public_base_url, "https://img.example.com");
        }
    }

    #[test]
    fn the_public_base_is_an_http_base_paths_can_follow() {
        let check = |base: &str| {
            validate_with(|c| c.public_base_url = Some(base.to_owned()))
                .map(|s| s.public_base_url)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            check("https://img.example.com/px/").unwrap(),
            "https://img.example.com/px"
        );
        assert_eq!(
            check("http://10.0.0.5:8080").unwrap(),
            "http://10.0.0.5:8080"
        );
        for (base, why) in [
            ("ftp://img.example.com", "not an http(s) URL"),
            ("https://img.example.com/?v=1", "query or fragment"),
            ("https://img.example.com/#top", "query or fragment"),
            ("https://u:p@img.example.com", "credentials"),
            ("img.example.com", "PUBLIC_BASE_URL"),
        ] {
            let err = check(base).unwrap_err();
            assert!(
                err.contains("PUBLIC_BASE_URL") && err.contains(why),
                "{base}: {err}"
            );
        }
    }

    /// `--help` prints an option's env value unless told not to: never for one that
    /// holds or may hold a secret (a password in a database URL, a token in a
    /// webhook URL's query).
    #[test]
    fn help_never_prints_a_value_that_may_hold_a_secret() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for role in ["serve", "api", "worker", "migrate"] {
            let command = cli.find_subcommand(role).expect("role");
            for env in [
                "DATABASE_URL",
                "WEBHOOK_URL",
                "WEBHOOK_SECRET",
                "API_TOKEN",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
            ] {
                let arg = command
                    .get_arguments()
                    .find(|a| a.get_env().is_some_and(|e| e == env))
                    .unwrap_or_else(|| panic!("{env} is no env var of `{role}`"));
                assert!(arg.is_hide_env_values_set(), "{role} --help prints {env}");
            }
        }
    }

    #[test]
    fn per_host_limit_is_a_positive_count() {
        let parse =
            |v: &str| Cli::try_parse_from(["pixbatch", "serve", "--fetch-per-host-limit", v]);
        for bad in ["0", "-1", "many", "1025"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        let Some(Command::Serve(cfg)) = parse("3").unwrap().command else {
            panic!("serve expected")
        };
        assert_eq!(cfg.validate().unwrap().fetch.per_host_limit, 3);
    }

    /// Backoff delays have a floor and the cap is at least the base; the worker
    /// concurrency fits the queue's 32-bit fetch limit.
    #[test]
    fn backoff_and_concurrency_are_bounded() {
        let parse = |flag: &str, v: &str| Cli::try_parse_from(["pixbatch", "serve", flag, v]);
        for bad in ["0s", "0", "5ms"] {
            assert!(
                parse("--fetch-backoff-base", bad).is_err(),
                "{bad} accepted"
            );
            assert!(parse("--fetch-backoff-cap", bad).is_err(), "{bad} accepted");
        }
        for bad in ["0", "10001", "4294967296", "-1"] {
            assert!(
                parse("--worker-concurrency", bad).is_err(),
                "{bad} accepted"
            );
        }
        let Some(Command::Serve(cfg)) = parse("--worker-concurrency", "10000").unwrap().command
        else {
            panic!("serve expected")
        };
        assert_eq!(cfg.worker_concurrency, Some(10_000));
        let e = validate_with(|c| {
            c.fetch_backoff_base = Duration::from_secs(2);
            c.fetch_backoff_cap = Duration::from_secs(1);
        })
        .unwrap_err();
        assert!(e.to_string().contains("FETCH_BACKOFF_CAP"), "{e}");
        assert!(
            validate_with(|c| {
                c.fetch_backoff_base = Duration::from_secs(2);
                c.fetch_backoff_cap = Duration::from_secs(2);
            })
            .is_ok()
        );
    }

    /// Validates the defaults with some options changed (set here rather than as flags,
    /// so that variables of the test's own environment do not leak in).
    fn validate_with(change: impl FnOnce(&mut ServerConfig)) -> Result<Settings, ConfigError> {
        configured(change).validate()
    }

    /// The defaults with some options changed, not validated yet.
    fn configured(change: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
        let cli = Cli::try_parse_from(["pixbatch", "serve"]).unwrap();
        let Some(Command::Serve(mut cfg)) = cli.command else {
            panic!("serve expected")
        };
        cfg.s3_endpoint = None;
        cfg.aws_access_key_id = None;
        cfg.aws_secret_access_key = None;
        cfg.aws_region = None;
        change(&mut cfg);
        cfg
    }

    #[test]
    fn storage_url_picks_the_backend() {
        let s = validate_with(|c| c.storage_url = "file:///srv/pixbatch".into()).unwrap();
        assert_eq!(
            s.storage.blobs,
            StorageConfig::Local("/srv/pixbatch".into())
        );
        let s = validate_with(|c| {
            c.storage_url = "s3://pixbatch-prod/outputs/".into();
            c.s3_endpoint = Some("http://127.0.0.1:9000/".into());
            c.aws_access_key_id = Some("AKID".into());
            c.aws_secret_access_key = Some("secret".into());
            c.aws_region = Some("eu-west-1".into());
        })
        .unwrap();
        let StorageConfig::S3(s3) = &s.storage.blobs else {
            panic!("s3 expected: {:?}", s.storage)
        };
        assert_eq!(s3.bucket, "pixbatch-prod");
        assert_eq!(s3.prefix, "outputs");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        let c = s3.credentials.as_ref().unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKID", "secret")
        );
        // Empty means unset.
        let s = validate_with(|c| {
            c.storage_url = "s3://bucket".into();
            c.s3_endpoint = Some(String::new());
            c.aws_access_key_id = Some(" ".into());
        })
        .unwrap();
        let StorageConfig::S3(s3) = &s.storage.blobs else {
            panic!("s3 expected")
        };
        assert!(s3.endpoint.is_none() && s3.credentials.is_none() && s3.prefix.is_empty());
    }

    #[test]
    fn bad_storage_settings_name_the_option() {
        type Change = fn(&mut ServerConfig);
        let cases: [(Change, &str); 6] = [
            (|c| c.storage_url = "uploads".into(), "STORAGE_URL"),
            (|c| c.storage_url = "s3://Bad_Bucket".into(), "STORAGE_URL"),
            (|c| c.storage_url = "gs://bucket/p".into(), "STORAGE_URL"),
            (
                |c| {
                    c.storage_url = "s3://bucket".into();
                    c.s3_endpoint = Some("127.0.0.1:9000".into());
                },
                "S3_ENDPOINT",
            ),
            (
                |c| {
                    c.storage_url = "s3://bucket".into();
                    c.aws_access_key_id = Some("AKID".into());
                },
                "AWS_SECRET_ACCESS_KEY",
            ),
            (
                |c| {
                    c.storage_url = "s3://bucket".into();
                    c.aws_secret_access_key = Some("x".into());
                },
                "AWS_ACCESS_KEY_ID",
            ),
        ];
        for (change, name) in cases {
            let err = validate_with(change).expect_err(name).to_string();
            assert!(err.starts_with(&format!("invalid {name}: ")), "{err}");
        }
    }

    /// SPEC §1's options, each the env var of a `serve` flag, with SPEC's default where
    /// it gives one (`WORKER_CONCURRENCY`'s is a README decision, checked elsewhere).
    #[test]
    fn every_spec_option_is_an_env_var_with_its_default() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let default_of = |env: &str| {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == env))
                .unwrap_or_else(|| panic!("{env} is no env var of `serve`"));
            assert!(arg.get_long().is_some(), "{env} has no flag");
            arg.get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        for (env, default) in [
            ("DATABASE_URL", "sqlite://pixbatch.db"),
            ("BIND", "127.0.0.1:8080"),
            ("BOARD_BIND", "127.0.0.1:8081"),
            ("STORAGE_URL", "file://uploads"),
            ("JPEG_QUALITY", "50"),
            ("MAX_CSV_BYTES", "20971520"),
            ("MAX_ROWS", "100000"),
            ("MAX_URLS_PER_ROW", "50"),
            ("MAX_IMAGE_BYTES", "31457280"),
            ("MAX_IMAGE_PIXELS", "100000000"),
            ("FETCH_TIMEOUT", "30s"),
            ("FETCH_ATTEMPTS", "5"),
            ("WEBHOOK_RETRY_SCHEDULE", "5s,5m,30m,2h,5h,10h,10h"),
            ("LOG_FORMAT", "pretty"),
            ("RUST_LOG", "info"),
        ] {
            assert_eq!(default_of(env), default, "{env}");
        }
        for env in [
            "PUBLIC_BASE_URL",
            "WORKER_CONCURRENCY",
            "ALLOW_PRIVATE_NETWORKS",
            "WEBHOOK_URL",
            "WEBHOOK_SECRET",
            "API_TOKEN",
        ] {
            default_of(env);
        }
    }

    #[test]
    fn flags_and_env_names_exist() {
        let cli = Cli::try_parse_from([
            "pixbatch",
            "serve",
            "--storage-url",
            "s3://bucket/p",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--aws-access-key-id",
            "AKID",
            "--aws-secret-access-key",
            "secret",
            "--aws-region",
            "eu-west-1",
        ])
        .unwrap();
        let Some(Command::Serve(cfg)) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(cfg.aws_region.as_deref(), Some("eu-west-1"));
        assert!(matches!(
            cfg.validate().unwrap().storage.blobs,
            StorageConfig::S3(_)
        ));
    }
}
