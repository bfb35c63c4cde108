//! The product loop end to end: upload → per-image jobs → output CSV → signed webhook.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::{
    Backend, ImageServer, SECRET, TestServer, WebhookReceiver, csv_rows, files_under,
};

/// Verifies a Standard Webhooks signature from the specification, independently of
/// the server's own signing code.
fn verify_signature(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .any(|part| part.strip_prefix("v1,") == Some(expected.as_str()))
}

async fn classic_sample_completes_with_output_csv_and_signed_webhook(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n\
         1,SKU1,{},{}\n\
         2,SKU2,{}\n\
         3,SKU3,{},{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/img/b/small_aitzgorri.jpg"),
        images.url("/img/c/small_lamp_portrait.jpg"),
        images.url("/img/d/small_picos.jpg"),
        images.url("/img/e/small_aitzgorri.jpg"),
    );
    let (code, body) = app
        .upload(csv.as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["products"], 3);
    assert_eq!(body["images"], 5);
    assert_eq!(body["status"], "Pending");
    let id = body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(
        body["status_url"].as_str().unwrap(),
        format!("{}/status/{id}", app.base)
    );

    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(status["progress"]["succeeded"], 5);
    assert_eq!(status["progress"]["pending"], 0);
    assert!(status["finished_at"].is_string());

    // The output CSV: input columns plus Output Image Urls, same rows, same URL order.
    let out_url = status["output_csv"].as_str().unwrap().to_owned();
    let (code, ct, out) = app.get_bytes(&out_url).await;
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let rows = csv_rows(&out);
    assert_eq!(
        rows[0],
        vec![
            "Serial Number",
            "Product Name",
            "Input Image Urls",
            "Output Image Urls"
        ]
    );
    assert_eq!(rows.len(), 4);
    let expected_inputs = [
        vec!["/img/a/small_picos.jpg", "/img/b/small_aitzgorri.jpg"],
        vec!["/img/c/small_lamp_portrait.jpg"],
        vec!["/img/d/small_picos.jpg", "/img/e/small_aitzgorri.jpg"],
    ];
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], (i + 1).to_string());
        assert_eq!(row[1], format!("SKU{}", i + 1));
        let inputs: Vec<&str> = row[2].split(',').collect();
        let want: Vec<String> = expected_inputs[i].iter().map(|p| images.url(p)).collect();
        assert_eq!(inputs, want);
        let outputs: Vec<&str> = row[3].split(',').collect();
        assert_eq!(outputs.len(), inputs.len());
        for (pos, url) in outputs.iter().enumerate() {
            assert!(url.ends_with(&format!("/{i}-{pos}.jpg")), "{url}");
            let (code, ct, jpeg) = app.get_bytes(url).await;
            assert_eq!(code, 200);
            assert_eq!(ct, "image/jpeg");
            assert_eq!(
                pixbatch::imaging::sniff(&jpeg),
                Some(pixbatch::imaging::Format::Jpeg)
            );
            let q = pixbatch::imaging::estimate_jpeg_quality(&jpeg).expect("quality");
            assert!((45..=55).contains(&q), "quality {q} at {url}");
        }
    }
    // The same CSV through the request's own endpoint.
    let (code, _, again) = app
        .get_bytes(&format!("{}/requests/{id}/output.csv", app.base))
        .await;
    assert_eq!(code, 200);
    assert_eq!(again, out);

    // Per-image detail.
    let imgs = app.images(&id).await;
    assert_eq!(imgs.len(), 5);
    for img in &imgs {
        assert_eq!(img["state"], "succeeded");
        assert_eq!(img["attempts"], 1);
        assert!(img["output_bytes"].as_i64().unwrap() > 0);
        assert!(img["output_bytes"].as_i64() < img["input_bytes"].as_i64());
        assert!(img["width"].as_i64().unwrap() > 0);
        assert_eq!(img["report"]["quality"], 50);
    }

    // Exactly one signed webhook with the §8 payload.
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = hook.received();
    assert_eq!(got_all.len(), 1, "{got:?}");
    let call = &got_all[0];
    let payload = call.json();
    assert_eq!(payload["type"], "request.completed");
    assert_eq!(payload["request_id"], id.as_str());
    assert_eq!(payload["status"], "Completed");
    assert_eq!(payload["output_csv"], out_url.as_str());
    assert_eq!(
        payload["images"],
        serde_json::json!({
            "total": 5, "succeeded": 5, "failed": 0, "pending": 0, "cancelled": 0, "reused": 0,
        })
    );
    let wid = &call.headers["webhook-id"];
    let ts = &call.headers["webhook-timestamp"];
    assert!(wid.starts_with("msg_"));
    assert!(verify_signature(
        SECRET,
        wid,
        ts,
        &call.body,
        &call.headers["webhook-signature"]
    ));
}

async fn missing_image_gives_completed_with_errors_and_an_empty_slot(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls,Notes\n\
         1,SKU1,\"{},{},{}\",first\n\
         2,SKU2,\"{}\",second\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/missing/b.jpg"),
        images.url("/img/c/small_aitzgorri.jpg"),
        images.url("/img/d/small_lamp_portrait.jpg"),
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "CompletedWithErrors");
    assert_eq!(status["progress"]["failed"], 1);
    assert_eq!(status["progress"]["succeeded"], 3);
    // A 404 is permanent: tried once.
    assert_eq!(images.hits("/missing/b.jpg"), 1);

    let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    let rows = csv_rows(&out);
    assert_eq!(
        rows[0],
        vec![
            "Serial Number",
            "Product Name",
            "Input Image Urls",
            "Notes",
            "Output Image Urls",
            "Errors"
        ]
    );
    assert_eq!(rows[1][3], "first");
    let slots: Vec<&str> = rows[1][4].split(',').collect();
    assert_eq!(slots.len(), 3);
    assert!(slots[0].ends_with("/0-0.jpg"));
    assert_eq!(slots[1], "");
    assert!(slots[2].ends_with("/0-2.jpg"));
    assert!(rows[1][5].contains("2: HTTP 404"), "{:?}", rows[1]);
    assert_eq!(rows[2][5], "");
    let imgs = app.images(&id).await;
    let failed = imgs.iter().find(|i| i["state"] == "failed").unwrap();
    assert_eq!(failed["position"], 2);
    assert!(failed["error"].as_str().unwrap().contains("HTTP 404"));
    assert_eq!(failed["error_code"], "http_error", "{failed}");
    let stored = imgs.iter().find(|i| i["state"] == "succeeded").unwrap();
    assert!(stored.get("error_code").is_none(), "{stored}");
}

async fn flaky_image_succeeds_on_the_third_try(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let path = "/flaky/2/x/small_picos.jpg";
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url(path)
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(images.hits(path), 3);
    let imgs = app.images(&id).await;
    assert_eq!(imgs[0]["attempts"], 3);
    assert_eq!(imgs[0]["state"], "succeeded");
}

async fn exhausted_retries_fail_the_image_and_the_request(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[("FETCH_ATTEMPTS", "3")]).await else {
        return;
    };
    let path = "/flaky/99/x/small_picos.jpg";
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url(path)
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Failed", "{status}");
    assert_eq!(images.hits(path), 3);
    let imgs = app.images(&id).await;
    assert_eq!(imgs[0]["attempts"], 3);
    assert!(imgs[0]["error"].as_str().unwrap().contains("HTTP 500"));
    assert_eq!(imgs[0]["error_code"], "http_error", "{}", imgs[0]);
}

async fn formula_cells_come_back_prefixed(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,=HYPERLINK(\"http://evil\"),{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    let rows = csv_rows(&out);
    assert_eq!(rows[1][1], "'=HYPERLINK(\"http://evil\")");
}

/// An upload saved as Excel's "CSV UTF-8" (with a byte order mark) comes back with one,
/// so Excel reads `Café` as it wrote it; one without comes back without.
async fn a_byte_order_mark_comes_back_as_uploaded(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let body = format!(
        "Serial Number,Product Name,Input Image Urls\n1,Café,{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    for bom in [true, false] {
        let csv = if bom {
            format!("\u{feff}{body}")
        } else {
            body.clone()
        };
        let id = app.accepted(csv.as_bytes(), &[]).await;
        let status = app.wait_final(&id, Duration::from_secs(60)).await;
        let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(text.starts_with("\u{feff}Serial Number,"), bom, "{text}");
        assert_eq!(text.starts_with("Serial Number,"), !bom, "{text}");
        assert!(text.contains("\n1,Café,"), "{text}");
    }
}

async fn killed_mid_request_completes_after_restart_with_one_event(backend: Backend) {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(300));
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(mut app) = TestServer::start_on(backend, &[("WORKER_CONCURRENCY", "2")]).await else {
        return;
    };
    let n = 12;
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..n {
        csv += &format!(
            "{i},SKU{i},{}\n",
            images.url(&format!("/img/{i}/small_lamp_portrait.jpg"))
        );
    }
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    // Wait until some, not all, images are done, then kill -9.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, s) = app.get_json(&format!("/status/{id}")).await;
        let done = s["progress"]["succeeded"].as_i64().unwrap_or(0);
        if done >= 2 {
            assert!(done < n, "finished before the kill; slow the images down");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What had succeeded before the kill: its download and its file, which no later
    // run may repeat or rewrite.
    let inode =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let done_before: Vec<(String, std::path::PathBuf, u64)> = app
        .images(&id)
        .await
        .iter()
        .filter(|img| img["state"] == "succeeded")
        .map(|img| {
            let url = img["input_url"].as_str().unwrap();
            let path = url[url.find("/img/").unwrap()..].to_owned();
            let name = img["output_url"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            let file = app.uploads().join(&id).join(name);
            let ino = inode(&file);
            (path, file, ino)
        })
        .collect();
    assert!(!done_before.is_empty());
    app.kill();
    app.restart().await;
    let status = app.wait_final(&id, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(status["progress"]["succeeded"], n);
    for (path, file, ino) in &done_before {
        assert_eq!(
            images.hits(path),
            1,
            "{path} downloaded again after the restart"
        );
        assert_eq!(inode(file), *ino, "{} written again", file.display());
    }

    // Each output written once: one file per image, no temporaries left.
    let request_dir = app.uploads().join(&id);
    let files = files_under(&request_dir);
    let jpgs = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .count();
    assert_eq!(jpgs, n as usize, "{files:?}");
    assert!(
        files.iter().all(|p| !crate::helpers::is_staged(p)),
        "{files:?}"
    );
    let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), n as usize + 1);
    assert!(rows[1..].iter().all(|r| r[3].ends_with(".jpg")));

    // One completion event, however often jobs ran.
    hook.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids: std::collections::HashSet<String> = hook
        .received()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(hook.received().len(), 1);
}

/// The output CSV of a big request (written a page of rows at a time) holds exactly
/// the bytes of the same CSV written whole from the images API's answers: every row,
/// in order, each with its own error.
async fn big_output_csv_is_byte_correct(backend: Backend) {
    let n = 20_000usize;
    let Some(app) = TestServer::start_on(
        backend,
        &[
            ("MAX_ROWS", "100000"),
            ("MAX_CSV_BYTES", "104857600"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await
    else {
        return;
    };
    // Outside ALLOW_PRIVATE_NETWORKS: each fetch is refused at once, no network.
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..n {
        csv += &format!("{i},\"SKU {i}, \"\"big\"\"\",http://10.0.0.1/{i}.jpg\n");
    }
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(600)).await;
    assert_eq!(status["status"], "Failed", "{status}");
    assert_eq!(status["progress"]["failed"], n as i64);

    let images = app.images(&id).await;
    assert_eq!(images.len(), n);
    let mut expected = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    expected
        .write_record([
            "Serial Number",
            "Product Name",
            "Input Image Urls",
            "Output Image Urls",
            "Errors",
        ])
        .unwrap();
    for (i, image) in images.iter().enumerate() {
        assert_eq!(image["row"], i as i64, "{image}");
        let error = image["error"].as_str().expect("an error");
        expected
            .write_record([
                i.to_string(),
                format!("SKU {i}, \"big\""),
                format!("http://10.0.0.1/{i}.jpg"),
                String::new(),
                format!("1: {error}"),
            ])
            .unwrap();
    }
    let expected = expected.into_inner().unwrap();
    let (code, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    assert_eq!(code, 200);
    assert_eq!(out.len(), expected.len());
    assert!(
        out == expected,
        "the output CSV differs from the expected bytes"
    );
}

crate::on_both_backends!(
    classic_sample_completes_with_output_csv_and_signed_webhook,
    missing_image_gives_completed_with_errors_and_an_empty_slot,
    flaky_image_succeeds_on_the_third_try,
    exhausted_retries_fail_the_image_and_the_request,
    formula_cells_come_back_prefixed,
    a_byte_order_mark_comes_back_as_uploaded,
    killed_mid_request_completes_after_restart_with_one_event,
    big_output_csv_is_byte_correct,
);
