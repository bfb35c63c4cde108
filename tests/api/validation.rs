//! Bad input: every CSV problem listed, limits enforced while streaming, nothing stored.

use std::time::Duration;

use futures::StreamExt;

use crate::helpers::{Backend, ImageServer, TestServer, files_under};

fn problems(body: &serde_json::Value) -> Vec<(u64, String)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                format!(
                    "{} {}",
                    e["column"].as_str().unwrap_or("-"),
                    e["message"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn invalid_csvs_list_every_problem_and_store_nothing() {
    let app = TestServer::start(&[]).await;

    // Missing column.
    let (code, body) = app
        .upload(b"Serial Number,Product Name\n1,SKU1\n", &[])
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["type"], "urn:pixbatch:problem:invalid-csv");
    assert_eq!(body["status"], 422);
    let p = problems(&body);
    assert!(
        p.iter()
            .any(|(l, m)| *l == 1 && m.contains("Input Image Urls")),
        "{p:?}"
    );

    // Duplicate serial.
    let (code, body) = app
        .upload(
            b"Serial Number,Product Name,Input Image Urls\n1,A,https://example.com/a.jpg\n1,B,https://example.com/b.jpg\n",
            &[],
        )
        .await;
    assert_eq!(code, 422);
    let p = problems(&body);
    assert!(p.iter().any(|(l, m)| *l == 3 && m.contains('2')), "{p:?}");

    // Bad URL.
    let (code, body) = app
        .upload(
            b"Serial Number,Product Name,Input Image Urls\n1,A,ftp://example.com/a.jpg\n",
            &[],
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(problems(&body)[0].0, 2);

    // Not UTF-8.
    let (code, body) = app
        .upload(
            b"Serial Number,Product Name,Input Image Urls\n1,Caf\xe9,https://example.com/a.jpg\n",
            &[],
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(problems(&body)[0].0, 2);

    // Four bad rows at once: all four listed with their lines.
    let csv = "Serial Number,Product Name,Input Image Urls\n\
               1,ok,https://example.com/1.jpg\n\
               ,no serial,https://example.com/2.jpg\n\
               3,,https://example.com/3.jpg\n\
               4,no url,\n\
               5,bad url,not-a-url\n\
               6,ok,https://example.com/6.jpg\n";
    let (code, body) = app.upload(csv.as_bytes(), &[]).await;
    assert_eq!(code, 422);
    let lines: Vec<u64> = problems(&body).iter().map(|(l, _)| *l).collect();
    for line in [3, 4, 5, 6] {
        assert!(lines.contains(&line), "line {line} missing from {lines:?}");
    }
    assert!(!lines.contains(&2) && !lines.contains(&7), "{lines:?}");

    // Bad form fields.
    let good = b"Serial Number,Product Name,Input Image Urls\n1,A,https://example.com/a.jpg\n";
    let (code, body) = app.upload(good, &[("quality", "150")]).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["type"], "urn:pixbatch:problem:invalid-field");
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["invalid_params"][0]["name"], "quality", "{body}");
    assert!(body["invalid_params"][0]["reason"].is_string(), "{body}");
    // Every problem in one answer: each bad field named, the CSV's listed.
    let (code, body) = app
        .upload(
            csv.as_bytes(),
            &[
                ("quality", "150"),
                ("max_bytes", "10"),
                ("reuse", "sometimes"),
                ("dry_run", "maybe"),
                ("webhook_url", "http://10.1.2.3/hook"),
            ],
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["type"], "urn:pixbatch:problem:invalid-field");
    let detail = body["detail"].as_str().unwrap();
    for field in [
        "quality:",
        "max_bytes:",
        "reuse: must be true or false, not \"sometimes\"",
        "dry_run:",
        "webhook_url:",
        "the CSV has",
    ] {
        assert!(detail.contains(field), "{field} missing from {detail}");
    }
    let named: Vec<&str> = body["invalid_params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        ["quality", "max_bytes", "reuse", "dry_run", "webhook_url"],
        "{body}"
    );
    let listed: Vec<u64> = problems(&body).iter().map(|(l, _)| *l).collect();
    for line in [3, 4, 5, 6] {
        assert!(
            listed.contains(&line),
            "line {line} missing from {listed:?}"
        );
    }
    let (code, _) = app
        .upload(good, &[("webhook_url", "javascript:alert(1)")])
        .await;
    assert_eq!(code, 422);

    // 1,500 bad rows and more rows than allowed: the first 100 problems are listed,
    // the ones about the whole file first, and the count says checking stopped.
    let mut many = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..1500 {
        many.push_str(&format!("{i},,https://example.com/{i}.jpg\n"));
    }
    let capped = TestServer::start(&[("MAX_ROWS", "500")]).await;
    let (code, body) = capped.upload(many.as_bytes(), &[]).await;
    assert_eq!(code, 422, "{body}");
    let listed = problems(&body);
    assert_eq!(listed.len(), 100, "{body}");
    assert!(
        listed[0].1.starts_with("- too many product rows"),
        "{listed:?}"
    );
    assert!(
        listed[1].1.starts_with("- more than 1000 problems"),
        "{listed:?}"
    );
    assert_eq!(listed[2].0, 2);
    assert_eq!(
        body["detail"],
        "the CSV has more than 1000 problems; the first 100 are listed"
    );
    assert!(files_under(&capped.uploads()).is_empty());

    // Nothing was stored by any of them.
    assert!(files_under(&app.uploads()).is_empty());
}

#[tokio::test]
async fn not_multipart_or_no_file_is_a_400_problem() {
    let app = TestServer::start(&[]).await;
    let resp = app
        .http
        .post(format!("{}/upload", app.base))
        .header("content-type", "text/csv")
        .body("Serial Number,Product Name,Input Image Urls\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let form = reqwest::multipart::Form::new().text("quality", "50");
    let resp = app
        .http
        .post(format!("{}/upload", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (code, body) = app.get_json("/status/not-a-uuid").await;
    assert_eq!(code, 404);
    assert_eq!(body["status"], 404);
    // A method the path does not take: 405, saying which it does.
    let id = "01939a00-0000-7000-8000-000000000000";
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/upload".to_owned(), "POST"),
        (reqwest::Method::POST, format!("/status/{id}"), "GET, HEAD"),
        (
            reqwest::Method::GET,
            format!("/requests/{id}/retry"),
            "POST",
        ),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
    }
    // Nor is a segment whose escapes are not UTF-8: no id, so nothing there.
    for path in [
        "/status/%FF",
        "/requests/%C0/images",
        "/files/%FF/0-0.jpg",
        "/files/01939a00-0000-7000-8000-000000000000/%C0.jpg",
    ] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let (code, _) = app
        .get_json("/status/01939a00-0000-7000-8000-000000000000")
        .await;
    assert_eq!(code, 404);
}

/// The server's peak resident memory so far, in bytes (Linux `VmHWM`).
fn peak_memory(app: &TestServer) -> u64 {
    let pid = app.pid().expect("server running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kb * 1024
}

/// A file within the size limit that is one line of millions of commas would have
/// the reader hold millions of cells, many times the upload's size in memory (about
/// 40×: ~0.75 GB for 19 MB). Refused by counting, it costs a few times its size, and
/// both lines are named.
#[tokio::test]
async fn a_line_of_millions_of_cells_is_refused_without_holding_them() {
    let app = TestServer::start(&[]).await;
    let commas = ",".repeat(9 * 1024 * 1024);
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls{commas}\n1,A,https://example.com/a.jpg{commas}\n"
    );
    let before = peak_memory(&app);
    let (code, body) = app.upload(csv.as_bytes(), &[("dry_run", "true")]).await;
    assert_eq!(code, 422, "{body}");
    let p = problems(&body);
    assert_eq!(
        p.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [1, 2],
        "{p:?}"
    );
    assert!(p[0].1.contains("more than 10000 cells"), "{p:?}");
    let grown = peak_memory(&app).saturating_sub(before);
    assert!(
        grown < 200 << 20,
        "peak memory grew by {} MB for an 18 MB upload",
        grown >> 20
    );
}

/// Many rows of many empty cells, every row valid and within every limit: each cell
/// was held as a string of its own (24 bytes for one byte of input, about 0.45 GB for
/// this 18 MB file), dry run or not. A row's cells are now held as the one compact
/// text they are stored as, and the upload is still accepted whole.
#[tokio::test]
async fn wide_rows_cost_about_their_size() {
    let app = TestServer::start(&[]).await;
    let columns = 1000;
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls");
    for c in 4..=columns {
        csv += &format!(",c{c}");
    }
    csv.push('\n');
    let padding = ",".repeat(columns - 3);
    let mut rows = 0;
    while csv.len() < 18 << 20 {
        csv += &format!("{rows},A,https://example.com/a.jpg{padding}\n");
        rows += 1;
    }
    let before = peak_memory(&app);
    let (code, body) = app.upload(csv.as_bytes(), &[("dry_run", "true")]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["products"], rows, "{body}");
    let grown = peak_memory(&app).saturating_sub(before);
    eprintln!("peak memory grew by {} MB", grown >> 20);
    assert!(
        grown < 200 << 20,
        "peak memory grew by {} MB for an 18 MB upload of {rows} rows × {columns} cells",
        grown >> 20
    );
}

#[tokio::test]
async fn oversized_upload_is_cut_off_while_streaming() {
    let app = TestServer::start(&[("MAX_CSV_BYTES", "1000")]).await;
    let mut big = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..200 {
        big += &format!("{i},SKU{i},https://example.com/{i}.jpg\n");
    }
    let (code, body) = app.upload(big.as_bytes(), &[]).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["status"], 413);

    // Chunked, with no Content-Length to check up front.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.as_bytes().chunks(100).map(|c| Ok(c.to_vec())).collect();
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .file_name("big.csv");
    let form = reqwest::multipart::Form::new().part("file", part);
    let resp = app
        .http
        .post(format!("{}/upload", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // Over the limit with the multipart envelope's allowance, then never ending: only
    // a body counted while it streams in is answered (read to its end, it would wait
    // forever). The declared length of a whole body is refused up front.
    let over = vec![b'x'; 80 * 1024];
    let endless = futures::stream::iter([Ok::<_, std::io::Error>(over.clone())])
        .chain(futures::stream::pending());
    for part in [
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(endless)),
        reqwest::multipart::Part::bytes(over),
    ] {
        let form = reqwest::multipart::Form::new().part("file", part.file_name("big.csv"));
        let send = app
            .http
            .post(format!("{}/upload", app.base))
            .multipart(form)
            .send();
        let resp = tokio::time::timeout(Duration::from_secs(30), send)
            .await
            .expect("no answer while the body was still coming")
            .unwrap();
        assert_eq!(resp.status(), 413);
    }
    assert!(files_under(&app.uploads()).is_empty());
}

#[tokio::test]
async fn dry_run_counts_without_storing() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    let csv = format!(
        "S. No.,product name,INPUT IMAGE URLS\n1,A,\"{},{}\"\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/img/b/small_picos.jpg")
    );
    // As Python's `requests` sends `True`; an empty field is an absent one.
    let (code, body) = app
        .upload(csv.as_bytes(), &[("dry_run", "True"), ("reuse", "")])
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["products"], 1);
    assert_eq!(body["images"], 2);
    assert!(body["request_id"].is_null());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(images.total_hits(), 0);
    assert!(files_under(&app.uploads()).is_empty());
}

/// A client that sends a whole upload and gives up while it is being accepted does not
/// leave its CSV stored without a request: the acceptance, which the server would drop
/// with the request (HTTP/2 resets the stream; the handler's future goes with it),
/// runs to its end and the request is accepted all the same.
#[tokio::test]
async fn an_upload_whose_client_hangs_up_is_accepted_whole() {
    // The API alone: nothing downloads the images, the acceptance is all there is.
    let app = TestServer::start_cmd("api", Backend::Sqlite, &[])
        .await
        .expect("SQLite");
    send_then_reset(&app, 20_000).await;
    assert_the_csv_has_its_request(&app, 20_000).await;
}

/// The same upload, its client gone, then the process asked to stop: it waits for the
/// upload to be accepted (up to `SHUTDOWN_TIMEOUT`) rather than drop it half way, its
/// CSV stored and its rows not.
#[tokio::test]
async fn a_stop_waits_for_an_upload_whose_client_hung_up() {
    let mut app = TestServer::start_cmd("api", Backend::Sqlite, &[])
        .await
        .expect("SQLite");
    send_then_reset(&app, 100_000).await;
    let exit = app.terminate(Duration::from_secs(60)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        app.logs()
    );
    app.restart().await;
    assert_the_csv_has_its_request(&app, 100_000).await;
}

/// A stop takes `SHUTDOWN_TIMEOUT` from the signal once, also with an upload that
/// outlasts it (here waiting for a write lock the test holds): the wait for uploads
/// counts from the signal like the server's own, instead of starting after it and
/// doubling the stop.
#[tokio::test]
async fn a_stop_with_an_upload_stuck_takes_the_shutdown_timeout_once() {
    let mut app = TestServer::start_cmd("api", Backend::Sqlite, &[("SHUTDOWN_TIMEOUT", "4s")])
        .await
        .expect("SQLite");
    let mut lock = app.sqlite_connection().await;
    sqlx::query("begin immediate")
        .execute(&mut lock)
        .await
        .expect("write lock");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(
            b"Serial Number,Product Name,Input Image Urls\n1,A,https://images.example.com/a.jpg\n"
                .to_vec(),
        )
        .file_name("p.csv"),
    );
    let request = reqwest::Client::new()
        .post(format!("{}/upload", app.base))
        .multipart(form)
        .send();
    let upload = tokio::spawn(request);
    wait_for_stored_csv(&app).await;
    // Its transaction now waits for the lock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = std::time::Instant::now();
    let exit = app.terminate(Duration::from_secs(30)).await;
    let took = asked.elapsed();
    sqlx::query("rollback")
        .execute(&mut lock)
        .await
        .expect("release");
    upload.abort();
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        app.logs()
    );
    assert!(
        app.logs()
            .contains("uploads still being received at shutdown"),
        "{}",
        app.logs()
    );
    // 4 s, not 4 + 4.
    assert!(
        took < Duration::from_millis(6500),
        "took {took:?}\n{}",
        app.logs()
    );
}

/// Waits (up to 30 s) until an upload's CSV is stored: the server is accepting it.
async fn wait_for_stored_csv(app: &TestServer) {
    let csv_stored = || {
        files_under(&app.uploads())
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "input.csv"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !csv_stored() {
        assert!(std::time::Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends an upload of `rows` rows over HTTP/2 and resets it once the server is
/// accepting it (its CSV is stored first, its rows then), before the answer.
async fn send_then_reset(app: &TestServer, rows: usize) {
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..rows {
        csv += &format!("{i},SKU{i},https://images.example.com/{i}.jpg\n");
    }
    let boundary = "pixbatch-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(csv.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let request = h2
        .post(format!("{}/upload", app.base))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send();
    let upload = tokio::spawn(request);
    wait_for_stored_csv(app).await;
    assert!(
        !upload.is_finished(),
        "answered before the reset: nothing to tell"
    );
    upload.abort();
    drop(h2);
}

/// The one CSV stored belongs to a request of `rows` images, once its acceptance is
/// through.
async fn assert_the_csv_has_its_request(app: &TestServer, rows: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored: Vec<String> = files_under(&app.uploads())
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "input.csv"))
            .filter_map(|p| Some(p.parent()?.file_name()?.to_string_lossy().into_owned()))
            .collect();
        if let [id] = stored.as_slice() {
            let (code, status) = app.get_json(&format!("/status/{id}")).await;
            if code == 200 {
                assert_eq!(status["progress"]["total"], rows, "{status}");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stored: {stored:?}\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A NUL character is valid UTF-8 but cannot be stored in a PostgreSQL text column: it
/// is a 422 naming its cell on both backends, not a database error.
async fn nul_characters_are_a_422_on_every_backend(backend: Backend) {
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = b"Serial Number,Product Name,Input Image Urls\n\
                1\0,A,https://example.com/a.jpg\n\
                2,B\0,https://example.com/b.jpg\n";
    let (code, body) = app.upload(csv, &[]).await;
    assert_eq!(code, 422, "{body}");
    let p = problems(&body);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].0 == 2 && p[0].1.starts_with("Serial Number") && p[0].1.contains("NUL"));
    assert!(p[1].0 == 3 && p[1].1.starts_with("Product Name") && p[1].1.contains("NUL"));
    assert!(files_under(&app.uploads()).is_empty());
}

crate::on_both_backends!(nul_characters_are_a_422_on_every_backend);
