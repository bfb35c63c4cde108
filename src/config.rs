//! Command line and configuration: every option is a flag and an environment variable
//! (the flag wins), parsed and validated once at start.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::imaging::Quality;

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
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://pixbatch.db")]
    pub database_url: String,

    /// Address the HTTP API listens on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Where `pixbatch worker` serves `/healthz`, `/readyz` and `/metrics` (the other
    /// roles serve them on `BIND`).
    #[arg(long, env = "HEALTH_BIND", default_value = "127.0.0.1:9090")]
    pub health_bind: SocketAddr,

    /// Prefix of every URL the service hands out; `http://<BIND>` when unset.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Where CSVs and images are stored: `file://DIR`.
    #[arg(long, env = "STORAGE_URL", default_value = "file://uploads")]
    pub storage_url: String,

    /// Image jobs in flight per worker process; cores × 4 when unset. Downloads wait on
    /// the network, so this is larger than the CPU pool, which is sized to the cores.
    #[arg(long, env = "WORKER_CONCURRENCY")]
    pub worker_concurrency: Option<usize>,

    /// Default output quality (1–100) when a request gives none.
    #[arg(long, env = "JPEG_QUALITY", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,

    /// Largest accepted CSV upload, in bytes (checked while streaming).
    #[arg(long, env = "MAX_CSV_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_csv_bytes: u64,

    /// Most data rows in one CSV.
    #[arg(long, env = "MAX_ROWS", default_value_t = 100_000)]
    pub max_rows: usize,

    /// Most image URLs in one row.
    #[arg(long, env = "MAX_URLS_PER_ROW", default_value_t = 50)]
    pub max_urls_per_row: usize,

    /// Largest image download, in bytes (checked against Content-Length and while streaming).
    #[arg(long, env = "MAX_IMAGE_BYTES", default_value_t = 30 * 1024 * 1024)]
    pub max_image_bytes: u64,

    /// Largest image, in pixels, read from the header before decoding.
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = 100_000_000)]
    pub max_image_pixels: u64,

    /// Time limit for one download, body included (e.g. `30s`).
    #[arg(long, env = "FETCH_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub fetch_timeout: Duration,

    /// Tries before an image with a transient failure is failed.
    #[arg(long, env = "FETCH_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub fetch_attempts: u32,

    /// First delay between download tries; doubled each try, with jitter.
    #[arg(long, env = "FETCH_BACKOFF_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub fetch_backoff_base: Duration,

    /// Cap on the delay between download tries (and on an honoured `Retry-After`).
    #[arg(long, env = "FETCH_BACKOFF_CAP", default_value = "60s", value_parser = humantime::parse_duration)]
    pub fetch_backoff_cap: Duration,

    /// Comma list of CIDRs that downloads and webhooks may reach although private
    /// (e.g. `127.0.0.0/8` for tests); `off` refuses every private address.
    #[arg(long, env = "ALLOW_PRIVATE_NETWORKS", default_value = "off")]
    pub allow_private_networks: String,

    /// Webhook used when a request gives none.
    #[arg(long, env = "WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Signing secret(s), `whsec_<base64>`, space-separated for rotation. Unset: unsigned.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Delays between webhook delivery tries.
    #[arg(
        long,
        env = "WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub webhook_retry_schedule: String,

    /// When set, every endpoint but health, docs and `/files` needs `Authorization: Bearer <token>`.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// How often workers report they are alive; jobs of a worker silent for two
    /// intervals are taken up by another one.
    #[arg(long, env = "JOB_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub job_heartbeat: Duration,

    /// How often idle workers look for due jobs (delayed retries included).
    #[arg(long, env = "JOB_POLL_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub job_poll_interval: Duration,

    /// How long SIGTERM waits for in-flight jobs before exiting.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// Options validated into their working types.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The raw options.
    pub raw: ServerConfig,
    /// Prefix of handed-out URLs, without a trailing slash.
    pub public_base_url: String,
    /// Directory of the file store.
    pub storage_dir: PathBuf,
    /// Networks opened despite the deny table.
    pub allow_private: Vec<ipnet::IpNet>,
    /// Parsed webhook retry delays.
    pub webhook_schedule: Vec<Duration>,
    /// Parsed webhook signing keys (raw bytes).
    pub webhook_keys: Vec<Vec<u8>>,
    /// Image jobs in flight per worker.
    pub worker_concurrency: usize,
    /// Threads for CPU work.
    pub cpu_threads: usize,
    /// Default quality of a request.
    pub default_quality: Quality,
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

impl ServerConfig {
    /// Checks every option once and derives the working values.
    pub fn validate(mut self) -> Result<Settings, ConfigError> {
        // An empty variable means unset (a common way to clear one in a shell or unit file).
        for opt in [
            &mut self.webhook_url,
            &mut self.webhook_secret,
            &mut self.api_token,
            &mut self.public_base_url,
        ] {
            if opt.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *opt = None;
            }
        }
        let public_base_url = self
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
            .trim_end_matches('/')
            .to_owned();
        url::Url::parse(&public_base_url)
            .map_err(|e| ConfigError::new("PUBLIC_BASE_URL", e.to_string()))?;
        let storage_dir = match self.storage_url.strip_prefix("file://") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                return Err(ConfigError::new(
                    "STORAGE_URL",
                    "expected file://DIR (object storage is not built into this binary)",
                ));
            }
        };
        let allow_private = crate::fetch::parse_allow_list(&self.allow_private_networks)
            .map_err(|e| ConfigError::new("ALLOW_PRIVATE_NETWORKS", e))?;
        let webhook_schedule = parse_schedule(&self.webhook_retry_schedule)
            .map_err(|e| ConfigError::new("WEBHOOK_RETRY_SCHEDULE", e))?;
        let webhook_keys = match &self.webhook_secret {
            Some(s) => crate::webhook::parse_secrets(s)
                .map_err(|e| ConfigError::new("WEBHOOK_SECRET", e))?,
            None => Vec::new(),
        };
        if let Some(url) = &self.webhook_url {
            crate::csv::ImageUrl::parse(url).map_err(|e| ConfigError::new("WEBHOOK_URL", e))?;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let worker_concurrency = self.worker_concurrency.unwrap_or(cores * 4).max(1);
        if crate::store::Backend::of_url(&self.database_url).is_none() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "expected sqlite://FILE or postgres://USER@HOST/DATABASE",
            ));
        }
        Ok(Settings {
            default_quality: Quality::Absolute(self.jpeg_quality),
            raw: self,
            public_base_url,
            storage_dir,
            allow_private,
            webhook_schedule,
            webhook_keys,
            worker_concurrency,
            cpu_threads: cores,
        })
    }
}

/// Parses `5s,5m,30m` into delays.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let delays = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| humantime::parse_duration(p).map_err(|e| format!("{p:?}: {e}")))
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
    }

    #[test]
    fn defaults_validate() {
        let cli = Cli::try_parse_from(["pixbatch", "serve"]).unwrap();
        let Some(Command::Serve(cfg)) = cli.command else {
            panic!("serve expected")
        };
        let s = cfg.validate().unwrap();
        assert_eq!(s.public_base_url, "http://127.0.0.1:8080");
        assert_eq!(s.webhook_schedule.len(), 7);
        assert!(s.allow_private.is_empty());
    }
}
