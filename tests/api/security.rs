//! Access rules: the store cannot be escaped through `/files`, and `API_TOKEN` guards
//! everything but health, docs and files.

use std::time::Duration;

use crate::helpers::{ImageServer, TestServer};

#[tokio::test]
async fn files_cannot_escape_the_store() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    // Something worth stealing next to the store, and the database itself.
    std::fs::write(app.dir.path().join("secret.txt"), "top secret").unwrap();
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
        "/files/..%2f..%2fsecret.txt/x",
        &format!("/files/{id}/.%2e/secret.txt"),
        "/files/%2e%2e/%2e%2e/etc/passwd",
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
            !body.contains("top secret") && !body.contains("SQLite"),
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
