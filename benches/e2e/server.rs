//! The real `pixbatch serve` in a temp dir on a free port, and what /proc says about
//! a process (peak and current RSS, CPU time).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

/// A running `pixbatch serve`; killed on drop.
pub struct Pixbatch {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Client for the API (no proxy, 120 s timeout).
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
    child: Child,
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

impl Pixbatch {
    /// Starts `bin serve` with the bench settings plus `extra` env vars, and waits
    /// (at most 30 s) for `/healthz`.
    pub async fn start(bin: &Path, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut env: Vec<(String, String)> = vec![
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}/pixbatch.db", dir.path().display()),
            ),
            (
                "STORAGE_URL".into(),
                format!("file://{}/uploads", dir.path().display()),
            ),
            ("BIND".into(), format!("127.0.0.1:{port}")),
            ("ALLOW_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into()),
            ("JOB_POLL_INTERVAL".into(), "50ms".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(120))
                .build()?,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server
                .http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("pixbatch exited early ({status}):\n{}", server.log_tail());
            }
            if Instant::now() > deadline {
                bail!("pixbatch did not start in 30 s:\n{}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 40 lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
