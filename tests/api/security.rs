//! Access rules: the store cannot be escaped through `/files`, and `API_TOKEN` guards
//! everything but health, docs and files.

use std::time::Duration;

use crate::helpers::{ImageServer, TestServer};

#[tokio::test]
async fn files_cannot_escape_the_store() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    // Something worth stealing next to the store, in it but outside any request's
    // folder, one folder up, and the database itself: each escape below lands on one.
    std::fs::write(app.dir.path().join("secret.txt"), "top secret").unwrap();
    std::fs::create_dir_all(app.uploads()).unwrap();
    std::fs::write(app.uploads().join("secret.txt"), "top secret").unwrap();
    std::fs::create_dir_all(app.dir.path().join("secret.d")).unwrap();
    std::fs::write(app.dir.path().join("secret.d/x"), "top secret").unwrap();
    let root = "%2e%2e/".repeat(16);
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    app.wait_final(&id, Duration::from_secs(60)).await;
    let url = format!("{}/files/{id}/0-0.jpg", app.base);
    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // Revalidated, the answer keeps the caching rule of the 200.
    let (etag, cache) = (&resp.headers()["etag"], &resp.headers()["cache-control"]);
    let again = app
        .http
        .get(&url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(&again.headers()["cache-control"], cache);

    for path in [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/%2E%2E/pixbatch.db",
        &format!("/files/{id}/..%2f..%2fsecret.txt"),
        &format!("/files/{id}/%2e%2e%2f%2e%2e%2fsecret.txt"),
        "/files/..%2fsecret.d/x",
        "/files/%2e%2e/secret.d/x",
        &format!("/files/{id}/..%2f..%2fsecret.d/x"),
        &format!("/files/{id}/.%2e/secret.txt"),
        "/files/secret.txt",
        &format!("/files/{root}etc/passwd"),
        &format!("/files/{id}/{root}etc/passwd"),
        "/files/.hidden/x",
        // The uploaded CSV is kept in the store but is not an output.
        &format!("/files/{id}/input.csv"),
        // A stored output's name with more after an encoded slash: the store would
        // be asked to open a file inside a file (it answered 503).
        &format!("/files/{id}/0-0.jpg%2Fx"),
        &format!("/files/{id}%2F0-0.jpg/x"),
        // Names no output is written under.
        &format!("/files/{id}/00-0.jpg"),
        &format!("/files/{}/0-0.jpg", id.to_uppercase()),
    ] {
        let (status, body) = get_as_written(&app.base, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("top secret") && !body.contains("SQLite") && !body.contains("root:"),
            "{path}"
        );
    }
}

/// A GET sent with its path as written, dot segments and all (an HTTP client library
/// resolves them before sending, so `/files/../x` would arrive as `/x`): the status
/// and the whole answer.
async fn get_as_written(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok());
    (status.unwrap_or(0), answer)
}

#[tokio::test]
async fn api_token_guards_everything_but_health_docs_and_files() {
    let app = TestServer::start(&[("API_TOKEN", "s3cret-token")]).await;
    let csv = b"Serial Number,Product Name,Input Image Urls\n1,A,https://example.com/a.jpg\n";
    let (code, body) = app.upload(csv, &[("dry_run", "true")]).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["status"], 401);
    let (code, _) = app
        .upload_with(csv, &[("dry_run", "true")], Some("wrong"))
        .await;
    assert_eq!(code, 401);
    let (code, body) = app
        .upload_with(csv, &[("dry_run", "true")], Some("s3cret-token"))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = app
        .get_json("/status/01939a00-0000-7000-8000-000000000000")
        .await;
    assert_eq!(code, 401);
    // A 401 names the scheme it wants; the scheme's name is case-insensitive.
    let status = |scheme: &str| {
        app.http
            .get(format!(
                "{}/status/01939a00-0000-7000-8000-000000000000",
                app.base
            ))
            .header("Authorization", format!("{scheme} s3cret-token"))
            .send()
    };
    let refused = status("Basic").await.expect("status");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let answered = status(scheme).await.expect("status");
        assert_eq!(
            answered.status(),
            404,
            "{scheme}: no such request, but let in"
        );
    }
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        let (code, _) = app.get_json(open).await;
        assert_eq!(code, 200, "{open}");
    }
    // Files are let through without the token: no such file, rather than a 401.
    let (code, _, _) = app
        .get_bytes(&format!(
            "{}/files/01939a00-0000-7000-8000-000000000000/output.csv",
            app.base
        ))
        .await;
    assert_eq!(code, 404);
    let (code, _, page) = app.get_bytes(&format!("{}/docs", app.base)).await;
    assert_eq!(code, 200);
    // The document says so: the scheme (the Swagger UI's "Authorize" button), on
    // every guarded operation with its 401, and on none of the public ones.
    assert!(String::from_utf8_lossy(&page).contains("securitySchemes"));
    let (_, doc) = app.get_json("/openapi.json").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, method) in [
        ("/status/{request_id}", "get"),
        ("/upload", "post"),
        ("/metrics", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{path}");
        assert!(op["responses"]["401"].is_object(), "{path}");
    }
    for path in ["/healthz", "/readyz", "/files/{request_id}/{name}"] {
        assert!(doc["paths"][path]["get"]["security"].is_null(), "{path}");
    }
}

/// A connection that goes silent is closed after `HTTP_IDLE_TIMEOUT`: half a request
/// holds nothing for long. An event stream whose client reads is kept alive by its
/// keep-alive comments, at half the timeout, however long the request takes.
#[tokio::test]
async fn silent_connections_are_closed_and_reading_streams_kept() {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_secs(7));
    let app = TestServer::start(&[("HTTP_IDLE_TIMEOUT", "2s")]).await;

    // 7 s of download, more than three idle timeouts: the stream lasts to its end.
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let resp = app.events(&id).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("stream kept open")));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream did not end:\n{}", app.logs());
    assert!(text.contains("event: status"), "{text}");

    // Half a request, then silence. (After the stream: the client's pooled
    // connections have been closed meanwhile, as idle ones.)
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("an answer to half a request: {:?}", &buf[..n]),
        Err(_) => panic!("still open after 20 s"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}"
    );

    // Whole headers and half an upload's body, then silence: the handler waiting for
    // the rest is not busy. It kept the connection for good.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\n\
          Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n\
          --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n\
          Serial Number,Product Name,Input Image Urls\n",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "a half-sent upload still open after 20 s\n{}",
        app.logs()
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}"
    );
}

/// A handler that takes longer than `HTTP_IDLE_TIMEOUT`, sending nothing meanwhile (the
/// acceptance of a large upload), keeps its connection: it is busy, not silent, and
/// its answer comes.
#[tokio::test]
async fn a_handler_slower_than_the_idle_timeout_still_answers() {
    // The API alone: nothing downloads the images.
    let app = TestServer::start_cmd(
        "api",
        crate::helpers::Backend::Sqlite,
        &[("HTTP_IDLE_TIMEOUT", "2s")],
    )
    .await
    .expect("SQLite");
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..100_000 {
        csv += &format!("{i},SKU{i},https://images.example.com/{i}.jpg\n");
    }
    let started = std::time::Instant::now();
    let (code, body) = app.upload(csv.as_bytes(), &[]).await;
    assert_eq!(code, 202, "{body}\n{}", app.logs());
    // Only a run where the acceptance outlasted the timeout tells (it does in a
    // debug build on 2 cores): say how long it took.
    eprintln!(
        "accepting 100,000 rows took {:?} against an idle timeout of 2 s",
        started.elapsed()
    );
}

/// Out of file descriptors, the listener pauses between accepts instead of spinning:
/// every accept failed at once (EMFILE) and was tried again at once, a core or more
/// busy until descriptors were freed. Once the connections close, it serves again.
#[tokio::test]
async fn out_of_descriptors_the_listener_does_not_spin() {
    let app = TestServer::start(&[]).await;
    let pid = app.pid().expect("running");
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=64:64"])
        .status();
    if !limited.is_ok_and(|s| s.success()) {
        crate::helpers::skip("prlimit (util-linux) could not lower the server's descriptor limit");
        return;
    }
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1]
    };
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = cpu() - before;
    // Clock ticks are hundredths of a second: under a tenth of a core over 3 s.
    assert!(ticks < 30, "{ticks} ticks of CPU in 3 s\n{}", app.logs());
    assert!(app.logs().contains("pausing accepts"), "{}", app.logs());
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _) = app.get_json("/healthz").await;
    assert_eq!(code, 200);
}
