//! The server never fetches what it must not: every spelling of loopback and the
//! private ranges is refused before connecting, for downloads and webhooks alike.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::helpers::TestServer;

/// A TCP listener that counts connections and never answers.
async fn canary(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("canary");
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    (port, seen)
}

#[tokio::test]
async fn every_spelling_of_a_private_address_is_refused_and_the_canary_sees_nothing() {
    let (p, seen) = canary("127.0.0.1").await;
    let app = TestServer::start(&[("ALLOW_PRIVATE_NETWORKS", "off")]).await;
    let urls = [
        format!("http://127.0.0.1:{p}/a.jpg"),
        format!("http://localhost:{p}/a.jpg"),
        format!("http://2130706433:{p}/a.jpg"),
        format!("http://0x7f.1:{p}/a.jpg"),
        format!("http://0177.0.0.1:{p}/a.jpg"),
        format!("http://127.1:{p}/a.jpg"),
        format!("http://0x7f000001:{p}/a.jpg"),
        format!("http://[::1]:{p}/a.jpg"),
        format!("http://[::ffff:127.0.0.1]:{p}/a.jpg"),
        format!("http://[::ffff:7f00:1]:{p}/a.jpg"),
        format!("http://[64:ff9b::7f00:1]:{p}/a.jpg"),
        format!("http://[2002:7f00:1::]:{p}/a.jpg"),
        format!("http://0.0.0.0:{p}/a.jpg"),
        format!("http://127.0.0.2:{p}/a.jpg"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
        "http://10.0.0.1/a.jpg".to_owned(),
        "http://192.168.1.1/a.jpg".to_owned(),
        "http://172.16.0.1/a.jpg".to_owned(),
        "http://100.64.0.1/a.jpg".to_owned(),
    ];
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for (i, u) in urls.iter().enumerate() {
        csv += &format!("{i},SKU{i},{u}\n");
    }
    // A webhook at a refused IP literal is refused at upload, naming the field.
    let literal = format!("http://127.0.0.1:{p}/hook");
    let (code, body) = app
        .upload(csv.as_bytes(), &[("webhook_url", &literal)])
        .await;
    assert_eq!(code, 422, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("webhook_url: ") && detail.contains("refused address"),
        "{body}"
    );
    // A name is only known to be refused when it resolves, at each delivery.
    let hook = format!("http://localhost:{p}/hook");
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", &hook)])
        .await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Failed", "{status}");
    for img in app.images(&id).await {
        assert_eq!(img["state"], "failed", "{img}");
        assert_eq!(img["attempts"], 1, "refusals are permanent: {img}");
        let err = img["error"].as_str().unwrap();
        assert_eq!(img["error_code"], "refused_address", "{img}");
        assert!(
            err.contains("refused address"),
            "{}: {err}",
            img["input_url"]
        );
        if img["input_url"].as_str().unwrap().contains("localhost") {
            // A name's refusal names the name, not what it resolves to.
            assert_eq!(
                err, "refused address of localhost (a private or reserved network)",
                "{img}"
            );
        }
    }
    // The webhook aimed at the canary is refused at every try of the schedule (SPEC
    // §8: only a 410 stops it), then given up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let (_, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
        if log["events"][0]["state"] == "failed" {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tries = log["attempts"].as_array().unwrap();
    assert_eq!(
        tries.len(),
        4,
        "one try and the test schedule's three: {log}"
    );
    for t in tries {
        assert!(
            t["error"].as_str().unwrap().contains("refused address"),
            "{log}"
        );
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the canary was reached");
}

#[tokio::test]
async fn a_redirect_into_a_refused_network_is_refused() {
    let (canary_port, seen) = canary("127.0.0.1").await;
    // An allowed host (127.0.0.2) that redirects to the canary on 127.0.0.1.
    let target = format!("http://127.0.0.1:{canary_port}/a.jpg");
    let redirector = tokio::net::TcpListener::bind(("127.0.0.2", 0))
        .await
        .unwrap();
    let rport = redirector.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = redirector.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    let app = TestServer::start(&[("ALLOW_PRIVATE_NETWORKS", "127.0.0.2/32")]).await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,http://127.0.0.2:{rport}/start.jpg\n"
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Failed");
    let img = &app.images(&id).await[0];
    assert!(
        img["error"]
            .as_str()
            .unwrap()
            .contains("refused address 127.0.0.1"),
        "{img}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the canary was reached");
}

#[tokio::test]
async fn the_same_url_twice_is_downloaded_once() {
    let images = crate::helpers::ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    let u = images.url("/img/same/small_picos.jpg");
    let other = images.url("/img/other/small_aitzgorri.jpg");
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,\"{u},{other}\"\n2,B,{u}\n3,C,{u}\n"
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(status["progress"]["succeeded"], 4);
    assert_eq!(images.hits("/img/same/small_picos.jpg"), 1);
    let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    let rows = crate::helpers::csv_rows(&out);
    assert!(rows[2][3].ends_with("/1-0.jpg"), "{rows:?}");
    assert!(rows[3][3].ends_with("/2-0.jpg"), "{rows:?}");
    let (code, ct, bytes) = app.get_bytes(&rows[3][3]).await;
    assert_eq!((code, ct.as_str()), (200, "image/jpeg"));
    assert!(!bytes.is_empty());
}

/// Proxy variables in the environment are not followed (SPEC §7): downloads and
/// webhooks go straight to their address, where the guard checked it, never through
/// a proxy that would reach whatever it is asked for. The proxy here is a canary.
#[tokio::test]
async fn proxy_variables_are_ignored() {
    let (port, seen) = canary("127.0.0.1").await;
    let proxy = format!("http://127.0.0.1:{port}");
    let images = crate::helpers::ImageServer::start().await;
    let hook = crate::helpers::WebhookReceiver::start(vec![]).await;
    let app = TestServer::start(&[
        ("HTTP_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("HTTPS_PROXY", proxy.as_str()),
        ("ALL_PROXY", proxy.as_str()),
        ("all_proxy", proxy.as_str()),
    ])
    .await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    let delivered = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        delivered.len(),
        1,
        "the webhook went straight to its receiver"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a request went through the proxy"
    );
}
