//! The real `pixbatch` in a temp dir on free ports (`serve` on SQLite, or `api` plus
//! worker processes on a scratch PostgreSQL database), and what /proc says about a
//! process (peak and current RSS, CPU time).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;
use sqlx::Connection as _;

/// How the server is laid out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Setup {
    /// `pixbatch serve`: API and workers in one process, SQLite.
    #[default]
    Serve,
    /// `pixbatch api` plus `workers` × `pixbatch worker` on a database of their own,
    /// created on the server `admin_url` points at and dropped afterwards.
    Postgres { admin_url: String, workers: usize },
}

impl Setup {
    /// A column heading.
    pub fn label(&self) -> String {
        match self {
            Setup::Serve => "serve, SQLite".into(),
            Setup::Postgres { workers: 1, .. } => "api + 1 worker, PG".into(),
            Setup::Postgres { workers, .. } => format!("api + {workers} workers, PG"),
        }
    }
}

/// A running pixbatch (one process or several); killed on drop.
pub struct Pixbatch {
    /// `http://127.0.0.1:PORT` of the API.
    pub base: String,
    /// Client for the API (no proxy, 120 s timeout).
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
    /// The API (or `serve`) process first, then the workers, each with its log's name.
    children: Vec<(Child, String)>,
    /// The scratch database to drop on [`Pixbatch::stop`]: (admin URL, name).
    scratch_db: Option<(String, String)>,
    /// Where each process answers `/readyz` and `/metrics`, in `children`' order.
    health: Vec<String>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A port nothing listens on (bound, then closed again).
pub fn closed_port() -> anyhow::Result<u16> {
    free_port()
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
    u.set_path(&format!("/{name}"));
    Ok(u.into())
}

/// Connects to `admin_url` and runs one statement (no parameters: database names).
async fn admin(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    // Database names cannot be bound as parameters; ours are made by the bench itself.
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Whether a PostgreSQL server answers at `admin_url`.
pub async fn postgres_reachable(admin_url: &str) -> anyhow::Result<()> {
    admin(admin_url, "select 1").await
}

impl Pixbatch {
    /// Starts `bin serve` on SQLite with the bench settings plus `extra` env vars.
    pub async fn start(bin: &Path, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_as(bin, &Setup::Serve, extra).await
    }

    /// Starts `setup` with the bench settings plus `extra` env vars (for every
    /// process), and waits (at most 30 s each) until every process answers `/readyz`.
    pub async fn start_as(
        bin: &Path,
        setup: &Setup,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let (database_url, scratch_db) = match setup {
            Setup::Serve => (
                format!("sqlite://{}/pixbatch.db", dir.path().display()),
                None,
            ),
            Setup::Postgres { admin_url, .. } => {
                let name = format!("pixbatch_bench_{}_{port}", std::process::id());
                // One statement each: together they would run in one transaction, which
                // `create database` refuses.
                admin(admin_url, &format!("drop database if exists {name}")).await?;
                admin(admin_url, &format!("create database {name}")).await?;
                (
                    with_database(admin_url, &name)?,
                    Some((admin_url.clone(), name)),
                )
            }
        };
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url),
            (
                "STORAGE_URL".into(),
                format!("file://{}/uploads", dir.path().display()),
            ),
            ("BIND".into(), format!("127.0.0.1:{port}")),
            ("PUBLIC_BASE_URL".into(), base.clone()),
            ("ALLOW_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into()),
            ("JOB_POLL_INTERVAL".into(), "50ms".into()),
            ("BOARD_BIND".into(), "off".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        pixbatch::tls::use_ring();
        let mut server = Self {
            base: base.clone(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(120))
                .build()?,
            dir,
            children: Vec::new(),
            scratch_db,
            health: Vec::new(),
        };
        let role = if *setup == Setup::Serve {
            "serve"
        } else {
            "api"
        };
        server.spawn(bin, role, &env, &base).await?;
        if let Setup::Postgres { workers, .. } = setup {
            for w in 1..=*workers {
                let health = free_port()?;
                let mut env = env.clone();
                env.push(("HEALTH_BIND".into(), format!("127.0.0.1:{health}")));
                server
                    .spawn(bin, "worker", &env, &format!("http://127.0.0.1:{health}"))
                    .await
                    .with_context(|| format!("worker {w}"))?;
            }
        }
        Ok(server)
    }

    /// Spawns `bin role` with `env` only (plus PATH), logging to `ROLE-N.log`, and
    /// waits for `{health_base}/readyz`.
    async fn spawn(
        &mut self,
        bin: &Path,
        role: &str,
        env: &[(String, String)],
        health_base: &str,
    ) -> anyhow::Result<()> {
        let log_name = format!("{role}-{}.log", self.children.len());
        let log = std::fs::File::create(self.dir.path().join(&log_name))?;
        let mut cmd = Command::new(bin);
        cmd.arg(role)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        self.children.push((child, log_name));
        self.health.push(health_base.to_owned());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{health_base}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some((child, _)) = self.children.last_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "pixbatch {role} exited early ({status}):\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!("pixbatch {role} not ready in 30 s:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process ids: the API (or `serve`) first, then the workers.
    pub fn pids(&self) -> Vec<String> {
        self.children
            .iter()
            .map(|(c, _)| c.id().to_string())
            .collect()
    }

    /// The sum over every process of one `/metrics` sample (`name{labels}` exactly as
    /// the exporter prints it, e.g. `pixbatch_job_duration_seconds_sum{kind="complete",outcome="ok"}`).
    pub async fn metric_sum(&self, series: &str) -> anyhow::Result<f64> {
        let mut sum = 0.0;
        for base in &self.health {
            let text = self
                .http
                .get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            sum += text
                .lines()
                .filter_map(|l| l.strip_prefix(series))
                .filter_map(|rest| rest.trim().parse::<f64>().ok())
                .sum::<f64>();
        }
        Ok(sum)
    }

    /// The last 40 lines of each process' log.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for (_, name) in &self.children {
            let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {name}\n"));
            out.push_str(&lines[lines.len().saturating_sub(40)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// Stops the processes and drops the scratch database, if any.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.kill();
        if let Some((admin_url, name)) = self.scratch_db.take() {
            admin(
                &admin_url,
                &format!("drop database if exists {name} with (force)"),
            )
            .await?;
        }
        Ok(())
    }

    fn kill(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// POSTs `csv` as the multipart `file`, plus `fields`; returns the status, the
    /// JSON body and the time from sending to the whole answer.
    pub async fn upload(
        &self,
        csv: Vec<u8>,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value, Duration)> {
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(csv)
                .file_name("products.csv")
                .mime_str("text/csv")?,
        );
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        let t = Instant::now();
        let resp = self
            .http
            .post(format!("{}/upload", self.base))
            .multipart(form)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        let took = t.elapsed();
        Ok((
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            took,
        ))
    }

    /// GETs a path and parses the JSON answer (an error unless 200).
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }
}

impl Drop for Pixbatch {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What /proc says about one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS over the process' life), bytes.
    pub hwm: u64,
    /// utime + stime, seconds.
    pub cpu_seconds: f64,
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/{pid}/status` and `/proc/{pid}/stat` (`pid` = "self" works too).
pub fn sample(pid: &str) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> f64 {
        fields
            .get(i - 3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcSample {
        rss: kib("VmRSS:"),
        hwm: kib("VmHWM:"),
        cpu_seconds: (ticks(14) + ticks(15)) / clock_ticks(),
    })
}

/// [`sample`] of several processes, summed: RSS, CPU time, and the sum of their peaks
/// (at least the peak of the whole, since each may have peaked at another time).
pub fn sample_all(pids: &[String]) -> anyhow::Result<ProcSample> {
    let mut sum = ProcSample::default();
    for pid in pids {
        let s = sample(pid)?;
        sum.rss += s.rss;
        sum.hwm += s.hwm;
        sum.cpu_seconds += s.cpu_seconds;
    }
    Ok(sum)
}

/// CPU time every process on the machine has used since boot (all of /proc/stat's
/// first line but idle and iowait), seconds.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    // already counted in user.
    let busy: f64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / clock_ticks()
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}
