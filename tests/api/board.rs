//! The worker dashboard on `BOARD_BIND`: its page, its API over every queue, its log
//! stream, its absence when off, and (when Chromium is installed) the rendered UI.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Backend, ImageServer, TestServer, logged_addr, run_to_exit};

const QUEUES: [&str; 3] = [
    "pixbatch.images",
    "pixbatch.completions",
    "pixbatch.deliveries",
];

/// A server on `backend` with the dashboard on a port of its choosing, and one finished request
/// of two images; `None` when the backend is not configured (the test is skipped).
async fn app_with_a_finished_request(backend: Backend) -> Option<(TestServer, String, String)> {
    let images = ImageServer::start().await;
    let app = TestServer::start_on(backend, &[("BOARD_BIND", "127.0.0.1:0")]).await?;
    let board = board_addr(&app).await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{},{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/img/b/small_aitzgorri.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    // The request is final inside the completion job, and apalis marks a job done just
    // after its handler returns: wait until the two image jobs and the completion are.
    let board = format!("http://{board}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = board_json(&app, &board, "/tasks?status=Done&page_size=50").await;
        let ours = done
            .as_array()
            .expect("task list")
            .iter()
            .filter(|t| {
                t["ctx"]["idempotency_key"]
                    .as_str()
                    .is_some_and(|k| k.contains(&id))
            })
            .count();
        if ours >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{ours} of 3 jobs done: {done}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((app, board, id))
}

/// The dashboard's address, as the server logged it.
async fn board_addr(app: &TestServer) -> std::net::SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(addr) =
            logged_addr(&app.logs(), "pixbatch::board", "dashboard listening", "url")
        {
            return addr;
        }
        assert!(Instant::now() < deadline, "no dashboard:\n{}", app.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs a dashboard API path; panics unless it answers 200 with JSON.
async fn board_json(app: &TestServer, board: &str, path: &str) -> Value {
    let resp = app
        .http
        .get(format!("{board}/api/v1{path}"))
        .send()
        .await
        .expect("board api");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// TCP ports that process `pid` listens on (Linux: its socket inodes in /proc/net/tcp*).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            (*state == "0A" && inodes.contains(*inode))
                .then(|| u16::from_str_radix(local.rsplit(':').next()?, 16).ok())
                .flatten()
        })
        .collect()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

crate::on_both_backends!(
    dashboard_lists_every_queue_the_workers_and_the_jobs,
    headless_chromium_renders_the_queues_and_the_jobs,
);

async fn dashboard_lists_every_queue_the_workers_and_the_jobs(backend: Backend) {
    let Some((app, board, id)) = app_with_a_finished_request(backend).await else {
        return;
    };

    // Its own listener, beside the API's.
    let pid = app.pid().expect("running");
    assert_eq!(
        listening_ports(pid),
        BTreeSet::from([port_of(&app.base), port_of(&board)])
    );

    // The UI owns `/` (and every path that is not a file or the API).
    for path in ["/", "/queues/pixbatch.images"] {
        let (code, ct, body) = app.get_bytes(&format!("{board}{path}")).await;
        assert_eq!(code, 200, "{path}");
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains("Apalis Board"), "{html}");
        assert!(html.contains("_bg.wasm"), "{html}");
    }

    let queues = board_json(&app, &board, "/queues").await;
    let names: Vec<&str> = queues
        .as_array()
        .expect("queue list")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    for q in QUEUES {
        assert!(names.contains(&q), "{q} missing: {queues}");
    }

    let workers = board_json(&app, &board, "/workers").await;
    let workers = workers.as_array().expect("worker list");
    for q in QUEUES {
        assert!(
            workers
                .iter()
                .any(|w| w["queue"] == q
                    && w["id"].as_str().is_some_and(|i| i.starts_with("serve-"))),
            "no worker on {q}: {workers:?}"
        );
    }
    let per_queue = board_json(&app, &board, "/queues/pixbatch.images/workers").await;
    assert!(!per_queue.as_array().unwrap().is_empty(), "{per_queue}");

    // The two image jobs, done, with their arguments decoded.
    let tasks = board_json(
        &app,
        &board,
        "/queues/pixbatch.images/tasks?status=Done&page_size=50",
    )
    .await;
    let ours: Vec<&Value> = tasks
        .as_array()
        .expect("task list")
        .iter()
        .filter(|t| t["args"]["request_id"] == id.as_str())
        .collect();
    assert_eq!(ours.len(), 2, "{tasks}");
    assert!(ours.iter().all(|t| t["args"]["row"] == 0), "{tasks}");
    // Pages are as asked, up to 100 tasks (a huge page size is brought down to it).
    for (size, most) in [("1", 1), ("4294967295", 100)] {
        let path = format!("/queues/pixbatch.images/tasks?status=Done&page_size={size}");
        let page = board_json(&app, &board, &path).await;
        let n = page.as_array().expect("task list").len();
        assert!((1..=most).contains(&n), "{size}: {n} tasks");
    }
    // Every queue's tasks: the completion of our request is among them.
    let done = board_json(&app, &board, "/tasks?status=Done&page_size=50").await;
    assert!(
        done.as_array().unwrap().iter().any(|t| {
            t["ctx"]["queue"] == "pixbatch.completions"
                && t["ctx"]["idempotency_key"]
                    .as_str()
                    .is_some_and(|k| k.contains(&id))
        }),
        "{done}"
    );
    let overview = board_json(&app, &board, "/overview").await;
    assert!(!overview.as_array().unwrap().is_empty(), "{overview}");

    // The log stream the UI's health indicator listens to is open.
    let resp = app
        .http
        .get(format!("{board}/api/v1/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let first = tokio::time::timeout(Duration::from_secs(5), resp.bytes_stream().next()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "no keep-alive: {first:?}");

    // Read-only: the API's push route is refused.
    let resp = app
        .http
        .put(format!("{board}/api/v1/queues/pixbatch.images/tasks"))
        .json(&serde_json::json!({"request_id": id, "row": 0, "position": 0}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn board_bind_off_opens_no_second_listener() {
    let app = TestServer::start(&[]).await; // the harness sets BOARD_BIND=off
    let pid = app.pid().expect("running");
    assert_eq!(listening_ports(pid), BTreeSet::from([port_of(&app.base)]));
    assert!(
        !app.logs().contains("dashboard listening"),
        "{}",
        app.logs()
    );
}

#[tokio::test]
async fn a_taken_board_port_stops_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let board = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_exit(
        dir.path(),
        "serve",
        &[("BIND", "127.0.0.1:0"), ("BOARD_BIND", &board)],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("BOARD_BIND={board}")), "{stderr}");
    drop(taken);
}

/// The Chromium binary, when installed.
fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Headless Chromium driven over the DevTools protocol on a pipe (`sh` puts our stdin
/// and stdout on its fds 3 and 4). Plain `--dump-dom --virtual-time-budget` never
/// returns here: virtual time waits for open requests, and the UI keeps its log stream
/// open.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(chromium: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let script = format!(
            "exec {chromium} --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
             --no-first-run --window-size=1400,900 --user-data-dir={} --remote-debugging-pipe \
             3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null",
            profile.path().display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..end])
                        && v.get("id").is_some()
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut browser = Self {
            child,
            stdin,
            replies,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().expect("target").to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().expect("session").to_owned();
        browser
    }

    /// Sends a command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let mut msg = json!({"id": self.next_id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.stdin.write_all(&bytes).expect("write to chromium");
        loop {
            let reply = self
                .replies
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium: {e}"));
            if reply["id"] == self.next_id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Loads `url` and waits until its visible text holds every `needle`; returns the text.
    fn text_with(&mut self, url: &str, needles: &[&str]) -> String {
        self.call("Page.navigate", json!({"url": url}));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let r = self.call(
                "Runtime.evaluate",
                json!({"expression": "document.body ? document.body.innerText : ''", "returnByValue": true}),
            );
            let text = r["result"]["value"].as_str().unwrap_or_default().to_owned();
            if needles.iter().all(|n| text.contains(n)) || Instant::now() > deadline {
                return text;
            }
        }
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png data"))
            .expect("base64");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Also writes the page to `PIXBATCH_DASHBOARD_SCREENSHOT` when set (how
/// `docs/dashboard.png` is made).
async fn headless_chromium_renders_the_queues_and_the_jobs(backend: Backend) {
    let Some(chromium) = chromium() else {
        crate::helpers::skip("chromium not installed");
        return;
    };
    let Some((app, board, id)) = app_with_a_finished_request(backend).await else {
        return;
    };
    let tasks = board_json(
        &app,
        &board,
        "/queues/pixbatch.images/tasks?status=Done&page_size=50",
    )
    .await;
    let task_ids: Vec<String> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["args"]["request_id"] == id.as_str())
        .filter_map(|t| t["ctx"]["task_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(task_ids.len(), 2, "{tasks}");

    let logs = app.logs();
    tokio::task::spawn_blocking(move || {
        let mut browser = Browser::open(chromium);
        // The overview: every queue, and the health indicator fed by the log stream.
        let mut wanted = QUEUES.to_vec();
        wanted.push("Healthy");
        let overview = browser.text_with(&format!("{board}/"), &wanted);
        for w in &wanted {
            assert!(
                overview.contains(w),
                "{w} not rendered:\n{overview}\n{logs}"
            );
        }
        // A queue's finished jobs, by task id, with the worker that ran them.
        let ids: Vec<&str> = task_ids.iter().map(String::as_str).collect();
        let done = browser.text_with(&format!("{board}/queues/pixbatch.images/Done"), &ids);
        for t in &ids {
            assert!(done.contains(t), "job {t} not rendered:\n{done}\n{logs}");
        }
        assert!(done.contains("serve-"), "{done}");
        if let Some(path) = std::env::var_os("PIXBATCH_DASHBOARD_SCREENSHOT") {
            browser.screenshot(Path::new(&path));
        }
    })
    .await
    .unwrap();
}

/// The dashboard's connections follow `HTTP_IDLE_TIMEOUT` as the API's do: half a
/// request, then silence, is closed (it was held for good; a log stream whose client
/// stopped reading held its connection, and starved every client after it), while a
/// log stream whose client reads outlives the timeout on its keep-alives.
#[tokio::test]
async fn dashboard_connections_follow_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app =
        TestServer::start(&[("BOARD_BIND", "127.0.0.1:0"), ("HTTP_IDLE_TIMEOUT", "2s")]).await;
    let board = board_addr(&app).await;

    let resp = app
        .http
        .get(format!("http://{board}/api/v1/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let chunk = tokio::time::timeout(Duration::from_secs(3), stream.next()).await;
        assert!(
            matches!(chunk, Ok(Some(Ok(_)))),
            "the stream ended after {:?}: {chunk:?}",
            started.elapsed()
        );
    }

    let mut conn = tokio::net::TcpStream::connect(board).await.unwrap();
    conn.write_all(b"GET /api/v1/overview HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "half a request still open after 20 s");
}
