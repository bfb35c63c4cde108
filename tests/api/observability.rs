//! What operators and clients see besides the results: `/metrics`, the live event
//! stream, JSON logs with job spans, and `pixbatch submit` run as a process.

use std::{
    process::Output,
    time::{Duration, Instant},
};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;

use crate::helpers::{Backend, ImageServer, TestServer, WebhookReceiver, run_to_exit};

/// The value of the first sample of `name` whose labels include every `labels` pair.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// GETs `/metrics` until `ready` holds for its text (counters are bumped just after
/// the database commit a test waits for), or panics after 10 s.
pub async fn metrics_until(app: &TestServer, ready: impl Fn(&str) -> bool) -> String {
    metrics_with_token(app, None, ready).await
}

/// [`metrics_until`] with a bearer token.
async fn metrics_with_token(
    app: &TestServer,
    token: Option<&str>,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut req = app.http.get(format!("{}/metrics", app.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("metrics");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let text = resp.text().await.expect("metrics body");
        if ready(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job states the queue-depth gauge reports, each queue every time.
const QUEUE_STATUSES: [&str; 3] = ["Pending", "Queued", "Running"];

fn csv_of(urls: &[String]) -> String {
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for (i, url) in urls.iter().enumerate() {
        csv += &format!("{i},SKU{i},{url}\n");
    }
    csv
}

#[tokio::test]
async fn metrics_count_jobs_bytes_webhooks_http_requests_and_queue_depth() {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    // One job at a time, each download 300 ms: the queue holds jobs for a while.
    images.set_latency(Duration::from_millis(300));
    let app = TestServer::start(&[("WORKER_CONCURRENCY", "1")]).await;
    let urls: Vec<String> = (0..3)
        .map(|i| images.url(&format!("/img/{i}/small_picos.jpg")))
        .collect();
    let id = app
        .accepted(csv_of(&urls).as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    let waiting = |t: &str| -> f64 {
        QUEUE_STATUSES
            .iter()
            .filter_map(|status| {
                let depth = [("queue", "pixbatch.images"), ("status", *status)];
                sample(t, "pixbatch_queue_depth", &depth)
            })
            .sum()
    };
    metrics_until(&app, |t| waiting(t) >= 1.0).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    hook.wait_for(1, Duration::from_secs(20)).await;

    let text = metrics_until(&app, |t| {
        let delivered = [("outcome", "delivered")];
        sample(t, "pixbatch_webhook_deliveries_total", &delivered).is_some()
    })
    .await;
    let image = |outcome| [("kind", "image"), ("outcome", outcome)];
    let stored = sample(&text, "pixbatch_jobs_finished_total", &image("stored"));
    assert!(stored >= Some(3.0), "{text}");
    let started = sample(&text, "pixbatch_jobs_started_total", &[("kind", "image")]);
    assert!(started >= Some(3.0), "{text}");
    let duration = sample(
        &text,
        "pixbatch_job_duration_seconds_count",
        &image("stored"),
    );
    assert!(duration >= Some(3.0), "{text}");
    assert!(sample(&text, "pixbatch_fetched_bytes_total", &[]) > Some(0.0));
    let written = sample(&text, "pixbatch_written_bytes_total", &[("kind", "image")]);
    assert!(written > Some(0.0), "{text}");
    let upload = [("method", "POST"), ("route", "/upload"), ("status", "202")];
    assert!(sample(&text, "pixbatch_http_requests_total", &upload) >= Some(1.0));
    let polled = [("route", "/status/{request_id}"), ("status", "200")];
    assert!(sample(&text, "pixbatch_http_requests_total", &polled) >= Some(1.0));
    // The image jobs counted while they waited or ran (above), none once done.
    for status in QUEUE_STATUSES {
        let depth = [("queue", "pixbatch.images"), ("status", status)];
        let jobs = sample(&text, "pixbatch_queue_depth", &depth);
        assert_eq!(jobs, Some(0.0), "{status}: {text}");
    }
    // Which kernels the codec runs here, said once at start.
    let codec = text
        .lines()
        .find(|l| l.starts_with("pixbatch_codec_info{"))
        .unwrap_or_else(|| panic!("no pixbatch_codec_info: {text}"));
    assert!(codec.ends_with(" 1"), "{codec}");
    assert!(
        ["avx2", "sse2", "neon", "scalar"]
            .iter()
            .any(|k| codec.contains(&format!("kernels=\"{k}\""))),
        "{codec}"
    );
    assert!(
        codec.contains("chroma=\"dct\"") || codec.contains("chroma=\"planes\""),
        "{codec}"
    );
    // Bounded labels: no request id, no image URL.
    assert!(!text.contains(&id), "{text}");
    assert!(!text.contains(&images.base), "{text}");
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_required() {
    let app = TestServer::start(&[("API_TOKEN", "s3cret")]).await;
    let id = uuid::Uuid::now_v7();
    let (code, _) = app.get_json(&format!("/status/{id}")).await;
    assert_eq!(code, 401);
    let (code, _) = app.get_json("/metrics").await;
    assert_eq!(code, 401);
    let text = metrics_with_token(&app, Some("s3cret"), |_| true).await;
    let refused = [("route", "/status/{request_id}"), ("status", "401")];
    assert!(
        sample(&text, "pixbatch_http_requests_total", &refused) >= Some(1.0),
        "{text}"
    );
    assert!(!text.contains(&id.to_string()), "{text}");
}

#[tokio::test]
async fn event_stream_sends_progress_then_the_final_status_and_ends() {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(300));
    let app = TestServer::start(&[("WORKER_CONCURRENCY", "2")]).await;
    let n = 6;
    let urls: Vec<String> = (0..n)
        .map(|i| images.url(&format!("/img/{i}/small_aitzgorri.jpg")))
        .collect();
    let id = app.accepted(csv_of(&urls).as_bytes(), &[]).await;

    let resp = app.events(&id).await;
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    // Each event: its type and JSON data.
    let mut stream = resp.bytes_stream().eventsource();
    let mut events: Vec<(String, Value)> = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = stream.next().await {
            let event = event.expect("event");
            let data = serde_json::from_str(&event.data).expect("JSON data");
            events.push((event.event, data));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream did not end:\n{}", app.logs());

    let (last_kind, last) = events.last().expect("some events");
    assert_eq!(last_kind, "status", "{events:?}");
    assert_eq!(last["status"], "Completed");
    assert_eq!(last["succeeded"], n);
    assert_eq!(last["pending"], 0);
    assert_eq!(last["cancelled"], 0);
    assert_eq!(last["reused"], 0);
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "progress")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(progress.len() + 1, events.len(), "{events:?}");
    assert!(progress.len() >= 3, "{events:?}");
    let succeeded: Vec<i64> = progress
        .iter()
        .map(|v| v["succeeded"].as_i64().unwrap())
        .collect();
    assert!(succeeded.windows(2).all(|w| w[0] <= w[1]), "{succeeded:?}");
    assert!(progress.iter().all(|v| v["total"] == n));

    // Unknown ids: a problem, not a stream.
    let unknown = uuid::Uuid::now_v7();
    let (code, ct, _) = app
        .get_bytes(&format!("{}/requests/{unknown}/events", app.base))
        .await;
    assert_eq!(code, 404);
    assert_eq!(ct, "application/problem+json");
}

#[tokio::test]
async fn json_logs_carry_the_image_span_with_request_row_position_and_url() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[("LOG_FORMAT", "json")]).await;
    let url = images.url("/img/a/small_picos.jpg");
    let id = app
        .accepted(csv_of(std::slice::from_ref(&url)).as_bytes(), &[])
        .await;
    app.wait_final(&id, Duration::from_secs(60)).await;

    let logs = app.logs();
    let spans: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l.get("span").cloned())
        .filter(|s| s["name"] == "image")
        .collect();
    assert!(
        spans.iter().any(|s| s["request_id"] == id.as_str()
            && s["row"] == 0
            && s["position"] == 0
            && s["url"] == url.as_str()),
        "no image span with request_id, row, position and url:\n{logs}"
    );
}

/// Runs `pixbatch submit ARGS --server <app>` in the server's temp dir, with a clean
/// environment; gives up after 60 s.
async fn submit(app: &TestServer, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pixbatch"))
        .arg("submit")
        .args(args)
        .args(["--server", &app.base])
        .current_dir(app.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("submit finished in time")
        .expect("submit ran")
}

fn text(out: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The request id from submit's first line, `Request <id>: …`.
fn request_id(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Request "))
        .and_then(|l| l.split(':').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no request id:\n{}", text(out)))
}

#[tokio::test]
async fn submit_waits_and_writes_the_output_csv() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    let urls = [
        images.url("/img/a/small_picos.jpg"),
        images.url("/img/b/small_lamp_portrait.jpg"),
    ];
    std::fs::write(app.dir.path().join("in.csv"), csv_of(&urls)).unwrap();
    let args = [
        "in.csv",
        "--wait",
        "--output",
        "out.csv",
        "--max-bytes",
        "10KB",
    ];
    let out = submit(&app, &args).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Completed: 2 succeeded, 0 failed"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("saved"), "{}", text(&out));

    let id = request_id(&out);
    let written = std::fs::read(app.dir.path().join("out.csv")).expect("output written");
    let (code, _, served) = app
        .get_bytes(&format!("{}/requests/{id}/output.csv", app.base))
        .await;
    assert_eq!(code, 200);
    assert_eq!(written, served);
    // The cap went with the upload.
    let (_, page) = app.get_json(&format!("/requests/{id}/images")).await;
    for img in page["items"].as_array().unwrap() {
        assert!(img["output_bytes"].as_u64().unwrap() <= 10_000, "{img}");
        assert_eq!(img["report"]["binding"], "max_bytes", "{img}");
    }
}

#[tokio::test]
async fn submit_exits_non_zero_on_csv_problems_and_on_failed_images() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;

    // Problems on lines 3 and 4; nothing is stored.
    let bad = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n2,SKU2,\n3,,ftp://x/y.jpg\n",
        images.url("/img/a/small_picos.jpg")
    );
    std::fs::write(app.dir.path().join("bad.csv"), bad).unwrap();
    // A mistyped option is refused with 1, not 2 (which says images failed).
    let out = submit(&app, &["bad.csv", "--wiat"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--wiat"), "{}", text(&out));
    let out = submit(&app, &["bad.csv", "--wait"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3"), "{}", text(&out));
    assert!(stderr.contains("line 4"), "{}", text(&out));
    assert!(!stderr.contains("line 2"), "{}", text(&out));

    // One image missing: the request finishes with errors, the output CSV is still
    // written (beside the input by default), and the exit code says so.
    let urls = [
        images.url("/img/a/small_picos.jpg"),
        images.url("/missing/b.jpg"),
    ];
    std::fs::write(app.dir.path().join("some.csv"), csv_of(&urls)).unwrap();
    let out = submit(&app, &["some.csv", "--wait"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 succeeded, 1 failed"), "{}", text(&out));
    assert!(stdout.contains("HTTP 404"), "{}", text(&out));
    assert!(
        app.dir.path().join("some-output.csv").exists(),
        "{}",
        text(&out)
    );
}

/// An output CSV that could not be written, or would replace the input, is refused
/// before anything is uploaded: no request runs for a result that has nowhere to go.
#[tokio::test]
async fn submit_refuses_an_unusable_output_before_uploading() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    let input = csv_of(&[images.url("/img/a/small_picos.jpg")]);
    std::fs::write(app.dir.path().join("in.csv"), &input).unwrap();
    std::fs::create_dir(app.dir.path().join("folder")).unwrap();
    // The input under another name (as `IN.csv` is on a case-insensitive disk).
    std::fs::hard_link(app.dir.path().join("in.csv"), app.dir.path().join("IN.csv")).unwrap();
    for (output, says) in [
        ("in.csv", "would replace the input"),
        ("./in.csv", "would replace the input"),
        ("IN.csv", "would replace the input"),
        ("missing/out.csv", "the output's folder missing"),
        ("folder", "is a folder"),
    ] {
        let out = submit(&app, &["in.csv", "--output", output]).await;
        assert_eq!(out.status.code(), Some(1), "{output}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("nothing uploaded") && stderr.contains(says),
            "{output}: {}",
            text(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(app.dir.path().join("in.csv")).unwrap(),
        input
    );
    assert!(
        crate::helpers::files_under(&app.uploads()).is_empty(),
        "a CSV was uploaded"
    );
}

/// Which standard stream of a run nobody reads.
#[derive(Clone, Copy, PartialEq)]
enum Unread {
    Stdout,
    Stderr,
}

/// Runs `pixbatch ARGS` with one standard stream nobody reads (the read end of its
/// pipe closed before the start, as after `| head` has exited); the other is captured.
async fn run_with_unread(
    args: &[&str],
    dir: &std::path::Path,
    unread: Unread,
) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let (stdout, stderr) = match unread {
        Unread::Stdout => (writer.into(), std::process::Stdio::piped()),
        Unread::Stderr => (std::process::Stdio::piped(), writer.into()),
    };
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pixbatch"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        // Not `output()`: tokio's sets stdout to a pipe of its own.
        .spawn()
        .expect("pixbatch started")
        .wait_with_output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("pixbatch finished in time")
        .expect("pixbatch ran")
}

/// [`run_with_unread`] with standard output unread: its exit code and standard error.
async fn run_with_closed_stdout(args: &[&str], dir: &std::path::Path) -> (Option<i32>, String) {
    let out = run_with_unread(args, dir, Unread::Stdout).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn commands_stop_quietly_when_nobody_reads_their_output() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    let dir = app.dir.path();
    std::fs::write(
        dir.join("in.csv"),
        csv_of(&[images.url("/img/a/small_picos.jpg")]),
    )
    .unwrap();
    let photo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/photos/small_picos.jpg"
    );
    let commands: [&[&str]; 3] = [
        &["openapi"],
        &["convert", "--out", "converted", photo],
        &["submit", "in.csv", "--server", &app.base],
    ];
    for args in commands {
        let (code, stderr) = run_with_closed_stdout(args, dir).await;
        assert_eq!(code, Some(141), "pixbatch {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "pixbatch {args:?}: {stderr}");
    }
    // The work was done before the output was written.
    let converted = std::fs::read_dir(dir.join("converted")).expect("convert wrote its output");
    assert_eq!(converted.count(), 1);
}

/// A standard error nobody reads (`2>&1 | head`, the reader gone) does not stop
/// `convert`: each file's line to it is dropped, every file is converted, and it
/// exits 0 (before, the first line panicked a worker thread: 101, files left).
#[tokio::test]
async fn convert_finishes_when_nobody_reads_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let photos = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/photos");
    let mut args = vec!["convert".to_owned(), "--out".into(), "converted".into()];
    for photo in crate::helpers::PHOTOS {
        args.push(format!("{photos}/{photo}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_with_unread(&args, dir.path(), Unread::Stderr).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let converted = std::fs::read_dir(dir.path().join("converted")).expect("converted");
    assert_eq!(converted.count(), crate::helpers::PHOTOS.len());
}

/// The server's variables are the server's: `convert` and `openapi` run in a shell
/// whose `BIND`, `LOG_FORMAT` and `WEBHOOK_URL` would not let a server start, and the
/// document they print is the same as without them; bare `pixbatch` (= `serve`)
/// still reads and checks them.
#[tokio::test]
async fn client_commands_ignore_the_servers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let photo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/photos/small_picos.jpg"
    );
    let hostile = [
        ("BIND", ":8080"),
        ("LOG_FORMAT", "text"),
        ("WEBHOOK_URL", "http://10.0.0.1/hook"),
    ];
    let run = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pixbatch"))
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("pixbatch ran")
    };
    let converted = run(&["convert", "--out", "out", photo], &hostile);
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        1
    );
    let document = run(&["openapi"], &hostile);
    assert!(
        document.status.success(),
        "{}",
        String::from_utf8_lossy(&document.stderr)
    );
    assert_eq!(document.stdout, run(&["openapi"], &[]).stdout);
    let serve = run(&[], &[("BIND", ":8080")]);
    assert_eq!(serve.status.code(), Some(1));
    let said = String::from_utf8_lossy(&serve.stderr);
    assert!(said.contains("invalid value ':8080'"), "{said}");
}

/// Live streams are capped per process (`MAX_EVENT_STREAMS`): one more is a 503
/// problem, and a stream gives its place back when it ends.
#[tokio::test]
async fn event_streams_beyond_the_cap_are_refused_until_one_ends() {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_secs(2));
    let app = TestServer::start(&[("MAX_EVENT_STREAMS", "1")]).await;
    let urls = [images.url("/img/a/small_picos.jpg")];
    let id = app.accepted(csv_of(&urls).as_bytes(), &[]).await;
    let first = app.events(&id).await;
    assert_eq!(first.status(), 200);
    let mut stream = first.bytes_stream().eventsource();
    stream.next().await.expect("an event").expect("readable");

    let second = app.events(&id).await;
    assert_eq!(second.status(), 503);
    assert_eq!(
        crate::helpers::header_of(&second, "retry-after").as_deref(),
        Some("30")
    );
    let problem: Value = second.json().await.unwrap();
    assert_eq!(problem["type"], "urn:pixbatch:problem:busy", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_EVENT_STREAMS"),
        "{problem}"
    );

    // The first stream ends with the request; its place is free again.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end:\n{}", app.logs());
    // (The server drops the ended stream just after its last bytes leave.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.events(&id).await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the place stayed taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM ends the live event streams: an API process with a client watching a
/// request that is not going to finish (no workers here) exits long before its
/// `SHUTDOWN_TIMEOUT`, and the client sees its stream end without a `status` event.
#[tokio::test]
async fn event_streams_end_when_the_process_stops() {
    let images = ImageServer::start().await;
    let Some(mut api) =
        TestServer::start_cmd("api", Backend::Sqlite, &[("SHUTDOWN_TIMEOUT", "60s")]).await
    else {
        return;
    };
    let urls = [images.url("/img/a/small_picos.jpg")];
    let id = api.accepted(csv_of(&urls).as_bytes(), &[]).await;
    let resp = api.events(&id).await;
    let mut stream = resp.bytes_stream().eventsource();
    let first = stream.next().await.expect("an event").expect("readable");
    assert_eq!(first.event, "progress");

    let reader = tokio::spawn(async move {
        let mut kinds = Vec::new();
        while let Some(Ok(event)) = stream.next().await {
            kinds.push(event.event);
        }
        kinds
    });
    // Without the streams ending, the process waited about 30 s here.
    let status = api.terminate(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "still running 15 s after SIGTERM, or failed: {status:?}"
    );
    let kinds = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream ended")
        .expect("reader");
    assert!(!kinds.iter().any(|k| k == "status"), "{kinds:?}");
}

/// `pixbatch migrate` applies every migration (ours and the queue's) and exits; a
/// second run finds nothing to do.
#[tokio::test]
async fn migrate_applies_every_migration_and_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .expect("migrations")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count() as i64;
    for _ in 0..2 {
        let out = run_to_exit(dir.path(), "migrate", &[]).await;
        assert!(out.status.success(), "{}", text(&out));
    }
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/p.db", dir.path().display()))
        .await
        .expect("the database migrate made");
    let applied: i64 =
        sqlx::query_scalar("select count(*) from _pixbatch_migrations where success")
            .fetch_one(&db)
            .await
            .expect("our migrations");
    assert_eq!(applied, ours);
    for table in [
        "requests", "images", "products", "sources", "Jobs", "Workers",
    ] {
        let found: i64 = sqlx::query_scalar("select count(*) from sqlite_master where name = $1")
            .bind(table)
            .fetch_one(&db)
            .await
            .expect("schema");
        assert_eq!(found, 1, "{table} missing");
    }
}

/// A process whose URLs would name "every address" (`BIND=0.0.0.0`, no
/// `PUBLIC_BASE_URL`) stops at start with a message saying what to set, instead of
/// writing `http://0.0.0.0:…` into output CSVs that keep them for ever: the API
/// (bound there) and a worker (whose URLs follow BIND) alike.
#[tokio::test]
async fn a_process_on_every_address_needs_its_public_base_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (command, bind) in [
        ("serve", "0.0.0.0:0"),
        ("api", "[::]:0"),
        ("worker", "0.0.0.0:8080"),
    ] {
        let env = [
            ("BIND", bind),
            ("HEALTH_BIND", "127.0.0.1:0"),
            ("BOARD_BIND", "off"),
        ];
        let out = run_to_exit(dir.path(), command, &env).await;
        let text = text(&out);
        assert!(!out.status.success(), "{command}: {text}");
        assert!(
            text.contains("PUBLIC_BASE_URL: not set"),
            "{command}: {text}"
        );
    }
}

/// `/readyz` says what is wrong: 503 "migrations not applied" when the database lacks
/// one of this binary's migrations, 503 "database unavailable" while the database
/// refuses connections, and 200 again once it is back.
#[tokio::test]
async fn readiness_names_a_missing_migration_and_an_unreachable_database() {
    use crate::helpers::{PgDatabase, postgres_url};
    let Some(admin) = postgres_url() else {
        return;
    };
    let pg = PgDatabase::create(&admin).await;
    let app = TestServer::start(&[("DATABASE_URL", pg.url.as_str())]).await;
    readyz_until(&app, (200, "ok")).await;

    let db = sqlx::PgPool::connect(&pg.url)
        .await
        .expect("the test's pool");
    let newest = "update _pixbatch_migrations set success = $1
                   where version = (select max(version) from _pixbatch_migrations)";
    sqlx::query(newest).bind(false).execute(&db).await.unwrap();
    readyz_until(&app, (503, "migrations not applied")).await;
    sqlx::query(newest).bind(true).execute(&db).await.unwrap();
    readyz_until(&app, (200, "ok")).await;
    db.close().await;

    let name = url::Url::parse(&pg.url).unwrap().path()[1..].to_owned();
    let server = sqlx::PgPool::connect(&admin).await.expect("admin pool");
    let allow =
        |yes: bool| sqlx::AssertSqlSafe(format!("alter database {name} allow_connections {yes}"));
    sqlx::query(allow(false)).execute(&server).await.unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&name)
        .execute(&server)
        .await
        .unwrap();
    readyz_until(&app, (503, "database unavailable")).await;
    sqlx::query(allow(true)).execute(&server).await.unwrap();
    readyz_until(&app, (200, "ok")).await;
}

/// Waits (a minute at most) until `/readyz` answers `want`: status and reason.
async fn readyz_until(app: &TestServer, want: (u16, &str)) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, reason) = app.readyz().await;
        if (code, reason.as_str()) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{code} {reason:?}, not {want:?}\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The queue depth is counted on every scrape; when the queue table cannot be read it
/// is NaN, not the last count kept (a queue that looked stuck), and a count again once
/// the table is back. (The API role alone: no worker polls the table meanwhile.)
#[tokio::test]
async fn queue_depth_is_nan_while_it_cannot_be_counted() {
    let app = TestServer::start_cmd("api", Backend::Sqlite, &[])
        .await
        .expect("SQLite");
    let csv = "Serial Number,Product Name,Input Image Urls\n1,A,https://example.com/a.jpg\n";
    app.accepted(csv.as_bytes(), &[]).await;
    let queued = [("queue", "pixbatch.images"), ("status", "Pending")];
    let text = metrics_until(&app, |t| {
        sample(t, "pixbatch_queue_depth", &queued) == Some(1.0)
    })
    .await;
    assert!(text.contains("pixbatch_queue_depth"), "{text}");

    let mut db = app.sqlite_connection().await;
    sqlx::query("alter table Jobs rename to JobsAway")
        .execute(&mut db)
        .await
        .unwrap();
    metrics_until(&app, |t| {
        sample(t, "pixbatch_queue_depth", &queued).is_some_and(f64::is_nan)
    })
    .await;
    sqlx::query("alter table JobsAway rename to Jobs")
        .execute(&mut db)
        .await
        .unwrap();
    metrics_until(&app, |t| {
        sample(t, "pixbatch_queue_depth", &queued) == Some(1.0)
    })
    .await;
}

/// Tries that change nothing are counted `skipped`: here each image's one try fails
/// after the request was cancelled (its image already `cancelled`). They were counted
/// `failed` (and as image failures), for images the API shows cancelled.
#[tokio::test]
async fn tries_that_change_nothing_are_counted_skipped() {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(1500));
    let app = TestServer::start(&[("FETCH_ATTEMPTS", "1"), ("WORKER_CONCURRENCY", "8")]).await;
    let urls: Vec<String> = (0..4)
        .map(|i| images.url(&format!("/missing/{i}.jpg")))
        .collect();
    let id = app.accepted(csv_of(&urls).as_bytes(), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while images.total_hits() < 4 {
        assert!(Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = app.post_json(&format!("/requests/{id}/cancel")).await;
    assert_eq!(code, 202, "{body}");
    let skipped = [("kind", "image"), ("outcome", "skipped")];
    let text = metrics_until(&app, |t| {
        sample(t, "pixbatch_jobs_finished_total", &skipped) >= Some(4.0)
    })
    .await;
    let failed = [("kind", "image"), ("outcome", "failed")];
    assert_eq!(
        sample(&text, "pixbatch_jobs_finished_total", &failed),
        None,
        "{text}"
    );
    assert_eq!(
        sample(&text, "pixbatch_image_failures_total", &[]),
        None,
        "{text}"
    );
    let status = app.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(status["progress"]["cancelled"], 4, "{status}");
    assert!(!app.logs().contains("image failed"), "{}", app.logs());
}

/// The error line of a job that hits an infrastructure error (here its request's
/// tables renamed away) carries the job's span, as every other line of the job does:
/// it had none, so no line said which request's job was failing, and the dashboard's
/// log page, which shows only lines with a span, dropped it.
#[tokio::test]
async fn a_jobs_infrastructure_error_names_its_job() {
    let api = TestServer::start_cmd("api", Backend::Sqlite, &[])
        .await
        .expect("SQLite");
    let csv = "Serial Number,Product Name,Input Image Urls\n1,A,https://example.com/a.jpg\n";
    let id = api.accepted(csv.as_bytes(), &[]).await;
    let mut db = api.sqlite_connection().await;
    sqlx::query("alter table images rename to images_away")
        .execute(&mut db)
        .await
        .unwrap();
    let worker = api.join("worker", &[("LOG_FORMAT", "json")]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let logs = worker.logs();
        if let Some(line) = logs
            .lines()
            .find(|l| l.contains("job hit an infrastructure error"))
        {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "{logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(json["span"]["request_id"], id, "{line}");
}

/// A signed image URL's query never reaches the logs (nor the dashboard's log stream,
/// which shows the same lines): the job's span names the URL without it.
#[tokio::test]
async fn logs_name_image_urls_without_their_query() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[("LOG_FORMAT", "json"), ("RUST_LOG", "debug,sqlx=warn")]).await;
    let url = images.url("/img/a/small_picos.jpg?X-Amz-Signature=SECRET123&token=SECRET456");
    let csv = format!("Serial Number,Product Name,Input Image Urls\n1,A,{url}\n");
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    let logs = app.logs();
    let stored = logs
        .lines()
        .find(|l| l.contains("image stored"))
        .unwrap_or_else(|| panic!("{logs}"));
    let json: Value = serde_json::from_str(stored).unwrap();
    let shown = images.url("/img/a/small_picos.jpg?…");
    assert_eq!(json["span"]["url"], shown, "{stored}");
    assert!(!logs.contains("SECRET"), "{logs}");
    // The API keeps the URL whole.
    assert_eq!(app.images(&id).await[0]["input_url"], url);
}
