//! `pixbatch submit FILE.csv`: upload a CSV to a server; with `--wait`, follow it on a
//! progress bar, print a summary and download the output CSV.
//!
//! Exit codes, for scripts: 0 when every image was stored (or, without `--wait`, when
//! the upload was accepted); 1 when the upload was refused (the CSV problems the
//! server lists, the first 100, are printed with their line and column), the server could not be reached or the output
//! CSV could not be written where asked (checked before the upload); 2 when the
//! request finished with failed or cancelled images; 141 when nobody reads the output
//! any more (see `main.rs`).

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use super::{
    client::{Accepted, Client, Image, Problem, ProgressEvent, problem_of},
    follow,
};
use crate::domain::RequestStatus;

/// The upload was refused or the server failed.
const EXIT_ERROR: u8 = 1;
/// The request finished, but not every image was stored.
const EXIT_IMAGES_FAILED: u8 = 2;
/// Failed images listed in the summary; the output CSV's `Errors` column has them all.
const LISTED_FAILURES: usize = 20;

/// Options of `pixbatch submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The CSV to upload.
    pub file: PathBuf,
    /// Base URL of the pixbatch server.
    #[arg(long, env = "PIXBATCH_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token, for a server with `API_TOKEN` set.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub token: Option<crate::config::Secret>,
    /// Webhook to call when the request finishes.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Output quality: 1–100, `relative:N%`, or `auto` / `auto:N` (an SSIMULACRA2
    /// target); the server's default when absent.
    #[arg(long)]
    pub quality: Option<String>,
    /// Cap on each output's size: `150000`, `150KB`, `2MB`; the server's default
    /// (`MAX_OUTPUT_BYTES`) when absent.
    #[arg(long)]
    pub max_bytes: Option<String>,
    /// Follow the request to its end with a progress bar, then print a summary and
    /// download the output CSV.
    #[arg(long)]
    pub wait: bool,
    /// Where to write the output CSV (implies `--wait`); `<input stem>-output.csv`
    /// beside the input by default.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Where the output CSV goes, checked before anything is uploaded: a request must not
/// run for hours to find that its result cannot be written, or that writing it would
/// replace the CSV it came from (the output differs: formula cells are quoted, trailing
/// unnamed columns dropped).
fn output_path(args: &SubmitArgs) -> anyhow::Result<PathBuf> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.file));
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent
        .canonicalize()
        .with_context(|| format!("the output's folder {}", parent.display()))?;
    anyhow::ensure!(
        dir.is_dir(),
        "the output's folder {} is not a folder",
        parent.display()
    );
    anyhow::ensure!(
        !output.is_dir(),
        "the output {} is a folder; name a file",
        output.display()
    );
    let name = output.file_name().context("the output names no file")?;
    let input = args
        .file
        .canonicalize()
        .with_context(|| format!("reading {}", args.file.display()))?;
    let target = dir.join(name);
    anyhow::ensure!(
        target != input
            && super::file_identity(&target)
                .is_none_or(|id| Some(id) != super::file_identity(&input)),
        "the output {} would replace the input {}; choose another --output",
        output.display(),
        args.file.display()
    );
    // The folder takes a file: the output is staged there and renamed into place.
    let probe = dir.join(format!(".pixbatch-submit.{}.check", std::process::id()));
    super::create_new(&probe)
        .with_context(|| format!("the output's folder {} takes no file", parent.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(output)
}

/// Runs the command; the exit code says how it went (see the module docs).
pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let output = match (args.wait || args.output.is_some()).then(|| output_path(&args)) {
        Some(Err(e)) => {
            super::tell!("nothing uploaded: {e:#}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
        Some(Ok(output)) => output,
        None => PathBuf::new(),
    };
    let client = Client::new(
        &args.server,
        args.token.as_ref().map(|t| t.expose().to_owned()),
    )?;
    let accepted = match upload(&client, &args).await? {
        Ok(accepted) => accepted,
        Err(problem) => {
            print_problem(&args.file, &problem);
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let id = accepted.request_id;
    let out = &mut std::io::stdout();
    writeln!(
        out,
        "Request {id}: {} products, {} images",
        accepted.products, accepted.images
    )?;
    if !args.wait && args.output.is_none() {
        writeln!(out, "Status: {}", accepted.status_url)?;
        return Ok(ExitCode::SUCCESS);
    }

    let bar = progress_bar(accepted.images);
    let last = follow::follow(&client, id, &bar).await;
    bar.finish();
    let last = last?;

    // The output CSV first: it is the result; the summary only describes it.
    let csv = client.output_csv(id).await?;
    // Whole or not at all: an earlier output is replaced only by a complete one.
    super::write_whole(&output, &csv).with_context(|| format!("writing {}", output.display()))?;
    match client.images(id).await {
        Ok(images) => print_summary(out, &last, &images)?,
        Err(e) => super::tell!("no per-image summary: {e:#}"),
    }
    writeln!(out, "Output CSV: {}", output.display())?;

    let all_stored = last.status == RequestStatus::Completed && last.progress.failed == 0;
    Ok(if all_stored {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_IMAGES_FAILED)
    })
}

/// POSTs the file; `Err(problem)` when the server refused it.
async fn upload(client: &Client, args: &SubmitArgs) -> anyhow::Result<Result<Accepted, Problem>> {
    let bytes = tokio::fs::read(&args.file)
        .await
        .with_context(|| format!("reading {}", args.file.display()))?;
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "products.csv".into());
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name)
        .mime_str("text/csv")?;
    let mut form = reqwest::multipart::Form::new().part("file", part);
    if let Some(url) = &args.webhook_url {
        form = form.text("webhook_url", url.clone());
    }
    if let Some(q) = &args.quality {
        form = form.text("quality", q.clone());
    }
    if let Some(m) = &args.max_bytes {
        form = form.text("max_bytes", m.clone());
    }
    let resp = client
        .request(reqwest::Method::POST, "/upload")
        .multipart(form)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .with_context(|| format!("uploading to {}", args.server))?;
    if resp.status().is_success() {
        let accepted = resp
            .json()
            .await
            .context("unexpected answer to the upload")?;
        return Ok(Ok(accepted));
    }
    Ok(Err(problem_of(resp).await))
}

/// Prints a refused upload: the summary, then every CSV problem by line and column.
fn print_problem(file: &Path, p: &Problem) {
    super::tell!(
        "{}: {} ({}): {}",
        file.display(),
        p.title,
        p.status,
        p.detail
    );
    for item in p.errors.iter().flatten() {
        match &item.column {
            Some(col) => super::tell!("  line {}, column {col:?}: {}", item.line, item.message),
            None => super::tell!("  line {}: {}", item.line, item.message),
        }
    }
}

fn progress_bar(images: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images, ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(images).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Prints the outcome: counts, bytes saved, and why images failed.
fn print_summary(out: &mut impl Write, last: &ProgressEvent, images: &[Image]) -> io::Result<()> {
    let (input, output) = images
        .iter()
        .filter(|i| i.state == "succeeded")
        .filter_map(|i| Some((i.input_bytes?, i.output_bytes?)))
        .fold((0i64, 0i64), |(a, b), (i, o)| (a + i, b + o));
    let saved = input - output;
    let percent = if input > 0 {
        saved as f64 * 100.0 / input as f64
    } else {
        0.0
    };
    let sign = if saved < 0 { "-" } else { "" };
    writeln!(
        out,
        "{}: {} succeeded, {} failed, {sign}{} saved ({percent:.0}% of {})",
        last.status,
        last.progress.succeeded,
        last.progress.failed,
        HumanBytes(saved.unsigned_abs()),
        HumanBytes(input.unsigned_abs()),
    )?;
    let failed: Vec<&Image> = images
        .iter()
        .filter(|i| i.state == "failed" || i.state == "cancelled")
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    writeln!(out, "Failed images:")?;
    for i in failed.iter().take(LISTED_FAILURES) {
        writeln!(
            out,
            "  serial {} #{} {}: {}",
            i.serial,
            i.position,
            i.input_url,
            i.error.as_deref().unwrap_or(&i.state)
        )?;
    }
    if failed.len() > LISTED_FAILURES {
        writeln!(
            out,
            "  … and {} more (see the output CSV's Errors column)",
            failed.len() - LISTED_FAILURES
        )?;
    }
    Ok(())
}

/// `<input stem>-output.csv` beside the input, the stem's bytes kept (a name that is
/// not UTF-8 is not given U+FFFD in their place).
fn default_output(input: &Path) -> PathBuf {
    let mut name = input
        .file_stem()
        .map_or_else(|| "products".into(), std::ffi::OsStr::to_os_string);
    name.push("-output.csv");
    input.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_defaults_beside_the_input() {
        assert_eq!(
            default_output(Path::new("dir/products.csv")),
            PathBuf::from("dir/products-output.csv")
        );
        assert_eq!(
            default_output(Path::new("list")),
            PathBuf::from("list-output.csv")
        );
    }

    /// A name that is not UTF-8 keeps its bytes (it was given U+FFFD in their place).
    #[cfg(unix)]
    #[test]
    fn an_output_name_keeps_a_non_utf8_stem() {
        use std::{ffi::OsStr, os::unix::ffi::OsStrExt};
        assert_eq!(
            default_output(Path::new(OsStr::from_bytes(b"dir/caf\xe9.csv"))),
            PathBuf::from(OsStr::from_bytes(b"dir/caf\xe9-output.csv"))
        );
    }
}
