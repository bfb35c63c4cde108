//! End-to-end tests of [`Fetcher`] against tiny raw HTTP/1.1 servers on
//! 127.0.0.0/8 (see `testutil.rs`). No other address is ever contacted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::testutil::*;
use super::*;

#[tokio::test]
async fn download_works_with_allow_list() {
    let seen = Arc::new(Mutex::new(String::new()));
    let seen2 = Arc::clone(&seen);
    let server = serve("127.0.0.1", move |s, head| {
        *seen2.lock().expect("lock") = head;
        reply(s, "200 OK", "Content-Type: image/png\r\n", b"\x89PNG fake")
    })
    .await;
    let got = fetcher("127.0.0.0/8")
        .download(&server.url("/a.png?x=1"))
        .await
        .expect("download");
    assert_eq!(&got.bytes[..], b"\x89PNG fake");
    assert_eq!(got.final_url, server.url("/a.png?x=1"));
    assert_eq!(got.content_type.as_deref(), Some("image/png"));
    let head = seen.lock().expect("lock").to_ascii_lowercase();
    assert!(head.starts_with("get /a.png?x=1 http/1.1"), "{head}");
    assert!(head.contains("user-agent: pixbatch/9.9.9-test"), "{head}");
}

#[tokio::test]
async fn refused_before_any_connection() {
    let canary = canary().await;
    let f = fetcher("");
    let port = canary.addr.port();
    for (url, ip) in [
        (canary.url("/"), "127.0.0.1"),
        (format!("http://2130706433:{port}/"), "127.0.0.1"),
        (format!("http://0x7f.1:{port}/"), "127.0.0.1"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "::ffff:127.0.0.1",
        ),
    ] {
        let err = f.download(&url).await.expect_err("refused");
        assert_eq!(err.to_string(), format!("refused address {ip}"), "{url}");
        assert!(!err.is_transient());
    }
    let err = f
        .post_webhook(
            &canary.url("/hook"),
            &[],
            b"{}".to_vec(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, FetchError::RefusedAddress { .. }), "{err:?}");
    settle().await;
    assert_eq!(canary.accepted(), 0);
}

#[tokio::test]
async fn redirect_to_denied_address_is_refused() {
    let canary = canary().await;
    let port = canary.addr.port();
    let targets = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
    ];
    for target in targets {
        let location = format!("Location: {target}\r\n");
        let server = serve("127.0.0.2", move |s, _| {
            let location = location.clone();
            async move { reply(s, "302 Found", &location, b"").await }
        })
        .await;
        let err = fetcher("127.0.0.2/32")
            .download(&server.url("/img.jpg"))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, FetchError::RefusedAddress { ip, .. } if ip.to_string().contains("127.0.0.1") || ip.is_loopback()),
            "{target}: {err:?}"
        );
        assert_eq!(server.accepted(), 1);
    }
    settle().await;
    assert_eq!(canary.accepted(), 0);
}

#[tokio::test]
async fn localhost_name_is_resolved_and_checked() {
    let canary = canary().await;
    let url = format!("http://localhost:{}/", canary.addr.port());
    let err = fetcher("").download(&url).await.expect_err("refused");
    match &err {
        FetchError::RefusedAddress { ip, reason, name } => {
            assert!(ip.is_loopback(), "{ip}");
            assert_eq!(reason, "loopback");
            assert_eq!(name.as_deref(), Some("localhost"));
            assert_eq!(
                err.to_string(),
                "refused address of localhost (a private or reserved network)",
                "the address a name resolves to is not told"
            );
        }
        other => panic!("{other:?}"),
    }
    settle().await;
    assert_eq!(canary.accepted(), 0);
    // With 127.0.0.0/8 open the name works (::1 is dropped, 127.0.0.1 used).
    let got = fetcher("127.0.0.0/8")
        .download(&url)
        .await
        .expect("download");
    assert_eq!(&got.bytes[..], b"canary");
    assert_eq!(canary.accepted(), 1);
}

#[tokio::test]
async fn too_large_by_content_length_is_not_read() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve("127.0.0.1", move |s, _| {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 60 * MIB);
        blast(s, head, 60 * MIB, tx.clone())
    })
    .await;
    let f = fetcher_with("127.0.0.0/8", |c| c.max_bytes = 30 * MIB);
    let err = f
        .download(&server.url("/big"))
        .await
        .expect_err("too large");
    assert_eq!(err, FetchError::TooLarge(30 * MIB));
    assert_eq!(err.to_string(), "larger than 30 MiB");
    assert!(!err.is_transient());
    drop(f);
    let written = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("server finished")
        .expect("count");
    assert!(written < 60 * MIB, "server wrote everything: {written}");
}

#[tokio::test]
async fn too_large_while_streaming_stops_at_cap() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve("127.0.0.1", move |s, _| {
        // No Content-Length: the body runs until the connection closes.
        let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_owned();
        blast(s, head, 60 * MIB, tx.clone())
    })
    .await;
    let f = fetcher_with("127.0.0.0/8", |c| c.max_bytes = 30 * MIB);
    let err = f
        .download(&server.url("/big"))
        .await
        .expect_err("too large");
    assert_eq!(err, FetchError::TooLarge(30 * MIB));
    drop(f);
    let written = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("server finished")
        .expect("count");
    assert!(written < 60 * MIB, "server wrote everything: {written}");
}

#[tokio::test]
async fn lying_content_length() {
    // Says 10, sends 1000: HTTP framing wins, we read exactly 10 bytes.
    let server = serve("127.0.0.1", |mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            .await;
        let _ = s.write_all(&[b'x'; 1000]).await;
    })
    .await;
    let got = fetcher("127.0.0.0/8")
        .download(&server.url("/"))
        .await
        .expect("ok");
    assert_eq!(got.bytes.len(), 10);
    // Says 10, but the cap is 5.
    let err = fetcher_with("127.0.0.0/8", |c| c.max_bytes = 5)
        .download(&server.url("/"))
        .await
        .expect_err("too large");
    assert_eq!(err, FetchError::TooLarge(5));
    assert_eq!(err.to_string(), "larger than 5 bytes");

    // Says 100 MiB, sends 5 bytes: refused on the header alone.
    let server = serve("127.0.0.1", |mut s, _| async move {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\nhello",
            100 * MIB
        );
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let err = fetcher("127.0.0.0/8")
        .download(&server.url("/"))
        .await
        .expect_err("too large");
    assert_eq!(err.to_string(), "larger than 30 MiB");

    // Says 1000, sends 5 and hangs up: a transient read error.
    let server = serve("127.0.0.1", |mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nhello")
            .await;
    })
    .await;
    let err = fetcher("127.0.0.0/8")
        .download(&server.url("/"))
        .await
        .expect_err("short");
    assert!(matches!(err, FetchError::Read(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().starts_with("connection failed: "), "{err}");
}

#[tokio::test]
async fn trickling_server_times_out() {
    let server = serve("127.0.0.1", |mut s, _| async move {
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..100 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let f = fetcher_with("127.0.0.0/8", |c| c.timeout = Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = f.download(&server.url("/slow")).await.expect_err("timeout");
    let took = started.elapsed();
    assert_eq!(err, FetchError::Timeout(Duration::from_secs(2)));
    assert_eq!(err.to_string(), "timed out after 2 s");
    assert!(err.is_transient());
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[tokio::test]
async fn statuses_map_to_transient_or_permanent() {
    let server = serve("127.0.0.1", |s, head| async move {
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        match path.as_str() {
            "/500" => reply(s, "500 Internal Server Error", "", b"oops").await,
            "/404" => reply(s, "404 Not Found", "", b"").await,
            "/410" => reply(s, "410 Gone", "", b"").await,
            "/408" => reply(s, "408 Request Timeout", "", b"").await,
            "/429" => reply(s, "429 Too Many Requests", "Retry-After: 7\r\n", b"").await,
            "/503" => {
                let h = "Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
                reply(s, "503 Service Unavailable", h, b"").await
            }
            "/no-location" => reply(s, "302 Found", "", b"").await,
            "/304" => reply(s, "304 Not Modified", "Location: /x\r\n", b"").await,
            _ => reply(s, "200 OK", "", b"ok").await,
        }
    })
    .await;
    let f = fetcher("127.0.0.0/8");
    let get = |p: &str| {
        let f = f.clone();
        let url = server.url(p);
        async move { f.download(&url).await.expect_err("error status") }
    };

    let e = get("/500").await;
    assert_eq!(e.to_string(), "HTTP 500");
    assert!(e.is_transient());
    let e = get("/404").await;
    assert_eq!(e.to_string(), "HTTP 404");
    assert!(!e.is_transient());
    assert!(!get("/410").await.is_transient());
    assert!(get("/408").await.is_transient());
    let e = get("/429").await;
    assert!(e.is_transient());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    let e = get("/503").await;
    assert!(e.is_transient());
    assert_eq!(e.retry_after(), Some(Duration::ZERO));
    let e = get("/no-location").await;
    assert_eq!(e, FetchError::BadRedirect(302));
    assert!(!e.is_transient());
    // A 304 to a request that sent no validator: transient, not a redirect.
    let e = get("/304").await;
    assert_eq!(e, FetchError::UnexpectedNotModified);
    assert!(e.is_transient());
}

/// Validators go to the URL that sent them and to no other hop: a 304 from anywhere
/// else (a redirect that now leads to another image, a redirector answering for its
/// own resource) would pass a different image off as unchanged.
#[tokio::test]
async fn conditional_get_sends_one_validator_to_the_url_that_gave_it() {
    let server = serve("127.0.0.1", |s, head| async move {
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let lower = head.to_ascii_lowercase();
        let conditional = lower.contains("if-none-match") || lower.contains("if-modified-since");
        match path.as_str() {
            // A redirector that would answer 304 for its own resource.
            "/moved" | "/moved-elsewhere" if conditional => {
                return reply(s, "304 Not Modified", "", b"").await;
            }
            "/moved" => {
                return reply(s, "301 Moved Permanently", "Location: /photo\r\n", b"").await;
            }
            "/moved-elsewhere" => {
                return reply(s, "302 Found", "Location: /placeholder\r\n", b"").await;
            }
            // An old placeholder: any date after 2019 is "not modified" for it.
            "/placeholder" if lower.contains("if-modified-since") => {
                return reply(s, "304 Not Modified", "", b"").await;
            }
            "/placeholder" => {
                let h = "Last-Modified: Tue, 01 Jan 2019 10:00:00 GMT\r\n";
                return reply(s, "200 OK", h, b"placeholder").await;
            }
            _ => {}
        }
        if lower.contains("if-none-match: \"v1\"") && !lower.contains("if-modified-since") {
            return reply(s, "304 Not Modified", "ETag: \"v1\"\r\n", b"").await;
        }
        if lower.contains("if-modified-since: tue, 01 dec 2026 10:00:00 gmt") {
            return reply(s, "304 Not Modified", "", b"").await;
        }
        let h = "ETag: \"v2\"\r\nLast-Modified: Wed, 02 Dec 2026 10:00:00 GMT\r\n";
        reply(s, "200 OK", h, b"new bytes").await
    })
    .await;
    let f = fetcher("127.0.0.0/8");
    let url = server.url("/moved");
    let photo = Some(server.url("/photo"));

    let etag = Validators {
        etag: Some("\"v1\"".into()),
        last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()),
        url: photo.clone(),
    };
    match f.download_conditional(&url, &etag).await.expect("304") {
        Conditional::NotModified { final_url } => assert_eq!(final_url, server.url("/photo")),
        other => panic!("{other:?}"),
    }
    let date = Validators {
        etag: None,
        last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()),
        url: photo.clone(),
    };
    assert!(matches!(
        f.download_conditional(&url, &date).await.expect("304"),
        Conditional::NotModified { .. }
    ));
    let stale = Validators {
        etag: Some("\"v0\"".into()),
        last_modified: None,
        url: photo.clone(),
    };
    let Conditional::Modified(got) = f.download_conditional(&url, &stale).await.expect("200")
    else {
        panic!("expected a body");
    };
    assert_eq!(&got.bytes[..], b"new bytes");
    assert_eq!(got.validators.etag.as_deref(), Some("\"v2\""));
    assert_eq!(
        got.validators.last_modified.as_deref(),
        Some("Wed, 02 Dec 2026 10:00:00 GMT")
    );
    assert_eq!(got.validators.url, photo, "the hop that sent them");

    // The product's URL now redirects to a placeholder: the day-old date is not sent
    // there, so the placeholder comes in full instead of a 304.
    let elsewhere = server.url("/moved-elsewhere");
    let Conditional::Modified(got) = f
        .download_conditional(&elsewhere, &date)
        .await
        .expect("200")
    else {
        panic!("the placeholder passed off as the earlier photo");
    };
    assert_eq!(&got.bytes[..], b"placeholder");
    assert_eq!(got.validators.url, Some(server.url("/placeholder")));
    // Validators of no known URL (a record from before it was kept) are not sent.
    let unplaced = Validators { url: None, ..date };
    assert!(matches!(
        f.download_conditional(&url, &unplaced).await.expect("200"),
        Conditional::Modified(_)
    ));
    // No validators: a plain GET.
    let plain = f.download(&url).await.expect("200");
    assert_eq!(&plain.bytes[..], b"new bytes");
}

#[tokio::test]
async fn redirect_chain_is_limited_to_five() {
    let server = serve("127.0.0.1", |s, head| async move {
        let path = head.split(' ').nth(1).unwrap_or("/");
        let n: u32 = path
            .strip_prefix("/r/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if n == 0 {
            reply(s, "200 OK", "Content-Type: image/jpeg\r\n", b"final").await;
        } else {
            let loc = format!("Location: /r/{}\r\n", n - 1);
            reply(s, "301 Moved Permanently", &loc, b"").await;
        }
    })
    .await;
    let f = fetcher("127.0.0.0/8");
    let got = f.download(&server.url("/r/5")).await.expect("five hops");
    assert_eq!(&got.bytes[..], b"final");
    assert_eq!(got.final_url, server.url("/r/0"));
    let err = f.download(&server.url("/r/6")).await.expect_err("six hops");
    assert_eq!(err, FetchError::TooManyRedirects);
    assert!(!err.is_transient());
}

/// Some servers send a `Location` in raw UTF-8: followed, percent-encoded, as browsers do.
#[tokio::test]
async fn a_redirect_to_a_raw_utf8_location_is_followed() {
    let server = serve("127.0.0.1", |s, head| async move {
        match head.split(' ').nth(1).unwrap_or("/") {
            "/start" => reply(s, "302 Found", "Location: /img/café.jpg\r\n", b"").await,
            "/img/caf%C3%A9.jpg" => {
                reply(s, "200 OK", "Content-Type: image/jpeg\r\n", b"final").await
            }
            _ => reply(s, "404 Not Found", "", b"").await,
        }
    })
    .await;
    let got = fetcher("127.0.0.0/8")
        .download(&server.url("/start"))
        .await
        .expect("followed");
    assert_eq!(&got.bytes[..], b"final");
    assert_eq!(got.final_url, server.url("/img/caf%C3%A9.jpg"));
}

#[tokio::test]
async fn webhook_does_not_follow_redirects() {
    let canary = canary().await;
    let location = format!("Location: {}\r\n", canary.url("/"));
    let seen = Arc::new(Mutex::new(String::new()));
    let seen2 = Arc::clone(&seen);
    let server = serve("127.0.0.1", move |s, head| {
        *seen2.lock().expect("lock") = head;
        let location = location.clone();
        async move { reply(s, "302 Found", &location, b"").await }
    })
    .await;
    let headers = vec![("X-Pixbatch-Signature".to_owned(), "sha256=abc".to_owned())];
    let resp = fetcher("127.0.0.0/8")
        .post_webhook(
            &server.url("/hook"),
            &headers,
            br#"{"job":1}"#.to_vec(),
            Duration::from_secs(5),
        )
        .await
        .expect("any status is Ok");
    assert_eq!(
        resp,
        WebhookResponse {
            status: 302,
            retry_after: None
        }
    );
    let head = seen.lock().expect("lock").clone();
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("post /hook http/1.1"), "{head}");
    assert!(lower.contains("x-pixbatch-signature: sha256=abc"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(head.ends_with(r#"{"job":1}"#), "{head}");
    settle().await;
    assert_eq!(canary.accepted(), 0);
}

#[tokio::test]
async fn webhook_statuses_timeouts_and_bad_headers() {
    let server = serve("127.0.0.1", |s, head| async move {
        if head.starts_with("POST /slow") {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        if head.starts_with("POST /429") {
            return reply(s, "429 Too Many Requests", "Retry-After: 30\r\n", b"").await;
        }
        reply(s, "410 Gone", "", b"").await
    })
    .await;
    let f = fetcher("127.0.0.0/8");
    let r = f
        .post_webhook(
            &server.url("/gone"),
            &[],
            Vec::new(),
            Duration::from_secs(5),
        )
        .await
        .expect("ok");
    assert_eq!(r.status, 410);
    let r = f
        .post_webhook(&server.url("/429"), &[], Vec::new(), Duration::from_secs(5))
        .await
        .expect("ok");
    assert_eq!(
        r,
        WebhookResponse {
            status: 429,
            retry_after: Some(Duration::from_secs(30))
        }
    );
    let err = f
        .post_webhook(
            &server.url("/slow"),
            &[],
            Vec::new(),
            Duration::from_millis(500),
        )
        .await
        .expect_err("timeout");
    assert_eq!(err.to_string(), "timed out after 500 ms");
    assert!(err.is_transient());
    let bad = vec![("X-Bad".to_owned(), "line\nbreak".to_owned())];
    let err = f
        .post_webhook(
            &server.url("/gone"),
            &bad,
            Vec::new(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("bad header");
    assert!(matches!(err, FetchError::Setup(_)), "{err:?}");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = fetcher("127.0.0.0/8")
        .download(&format!("http://{addr}/"))
        .await
        .expect_err("refused connection");
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    assert!(err.to_string().starts_with("connection failed: "), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn per_host_limit_caps_parallel_connections() {
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (c, p) = (Arc::clone(&current), Arc::clone(&peak));
    let server = serve("127.0.0.1", move |s, _| {
        let (c, p) = (Arc::clone(&c), Arc::clone(&p));
        async move {
            let now = c.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Leave before answering, so the client's next request cannot
            // overlap with this bookkeeping.
            c.fetch_sub(1, Ordering::SeqCst);
            reply(s, "200 OK", "", b"ok").await;
        }
    })
    .await;
    let f = fetcher_with("127.0.0.0/8", |c| c.per_host_limit = 2);
    let url = server.url("/img");
    let runs = (0..6).map(|_| {
        let f = f.clone();
        let url = url.clone();
        async move { f.download(&url).await }
    });
    let results = futures::future::join_all(runs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Six downloads wanting to run at once: the limit is reached, never passed (a
    // peak of 1 would be a limit of 1).
    let peak = peak.load(Ordering::SeqCst);
    assert_eq!(peak, 2, "peak {peak}");
    assert_eq!(server.accepted(), 6);
    assert_eq!(f.inner_tracked_hosts(), 0);
}

#[test]
fn invalid_url_messages() {
    let f = || fetcher("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let err = f()
            .download("ftp://example.com/a.jpg")
            .await
            .expect_err("invalid");
        assert_eq!(err.to_string(), "invalid URL: unsupported scheme ftp");
        assert!(!err.is_transient());
        let err = f()
            .download("http://user:pw@example.com/")
            .await
            .expect_err("invalid");
        assert!(err.to_string().starts_with("invalid URL: "), "{err}");
    });
}

#[test]
fn logged_urls_keep_no_query_or_user_info() {
    use super::loggable;
    assert_eq!(
        loggable("https://u:p@img.example.com:8443/a/b.jpg?X-Amz-Signature=SECRET#f"),
        "https://img.example.com:8443/a/b.jpg?…"
    );
    assert_eq!(loggable("http://x.io/a.jpg"), "http://x.io/a.jpg");
    assert_eq!(loggable("not a url ?token=SECRET"), "(not a URL)");
}

/// A server that takes the TCP connection and never answers the TLS handshake: the
/// connect timeout ends it, and says so with its own limit (it said "timed out after
/// 10 s", the whole download's limit, after the connect timeout's 500 ms).
#[tokio::test]
async fn a_stalled_handshake_is_a_connect_timeout_named_as_such() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let f = fetcher_with("127.0.0.0/8", |c| {
        c.connect_timeout = Duration::from_millis(500);
    });
    let started = std::time::Instant::now();
    let err = f
        .download(&format!("https://{addr}/a.jpg"))
        .await
        .expect_err("no handshake");
    assert_eq!(err, FetchError::ConnectTimeout(Duration::from_millis(500)));
    assert_eq!(err.to_string(), "no connection within 500 ms");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}
