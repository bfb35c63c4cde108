//! Reuse of unchanged images across requests: conditional GETs against an image
//! server that honours validators, copies instead of transforms, and what the API,
//! the webhook and the metrics say about it.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;

use crate::durability::kill_nine_at_quarters;
use crate::helpers::{Backend, ImageServer, PHOTOS, TestServer, WebhookReceiver, photo};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A CSV with one image per row, row `i` at `url(i)`.
fn csv_of(n: usize, url: impl Fn(usize) -> String) -> String {
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..n {
        csv += &format!("{i},SKU{i},{}\n", url(i));
    }
    csv
}

/// Uploads `csv` with `fields`, waits for the final status; returns id and status.
async fn run(app: &TestServer, csv: &str, fields: &[(&str, &str)]) -> (String, Value) {
    let id = app.accepted(csv.as_bytes(), fields).await;
    let status = app.wait_final(&id, TIMEOUT).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    (id, status)
}

/// Each image's output bytes, by `(row, position)`.
async fn outputs(app: &TestServer, images: &[Value]) -> HashMap<(u64, u64), Vec<u8>> {
    let mut out = HashMap::new();
    for img in images {
        let url = img["output_url"].as_str().expect("output_url");
        let (code, ct, bytes) = app.get_bytes(url).await;
        assert_eq!((code, ct.as_str()), (200, "image/jpeg"), "{url}");
        let key = (
            img["row"].as_u64().unwrap(),
            img["position"].as_u64().unwrap(),
        );
        out.insert(key, bytes);
    }
    out
}

fn reused(images: &[Value]) -> usize {
    images.iter().filter(|i| i["reused"] == true).count()
}

/// The value of one series in the Prometheus text, 0 when absent.
async fn metric(app: &TestServer, series: &str) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn second_upload_makes_only_conditional_gets_and_copies(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    // ETag and Last-Modified origins, and one URL twice in a row (one download).
    let n = 6;
    let url = |i: usize| {
        let kind = if i.is_multiple_of(2) {
            "etag"
        } else {
            "lastmod"
        };
        images.url(&format!("/{kind}/{i}/{}", PHOTOS[i % PHOTOS.len()]))
    };
    let mut csv = csv_of(n, url);
    csv += &format!("{n},SKU{n},{},{}\n", url(0), url(1));
    let total = n + 2;
    let fields = [("webhook_url", hook.url.as_str())];

    let (first, status) = run(&app, &csv, &fields).await;
    assert_eq!(status["progress"]["reused"], 0, "{status}");
    let first_images = app.images(&first).await;
    assert_eq!(reused(&first_images), 0);
    assert!(first_images.iter().all(|i| i.get("reused_from").is_none()));
    let first_out = outputs(&app, &first_images).await;
    assert_eq!(images.conditional_hits(), 0);
    assert_eq!(images.plain_hits(), n as u32);

    images.reset_counts();
    let (second, status) = run(&app, &csv, &fields).await;
    assert_eq!(images.plain_hits(), 0, "a plain GET on the second run");
    assert_eq!(images.conditional_hits(), n as u32);
    assert_eq!(
        images.not_modified(),
        n as u32,
        "not every answer was a 304"
    );
    assert_eq!(status["progress"]["reused"], total as i64, "{status}");
    let second_images = app.images(&second).await;
    let second_out = outputs(&app, &second_images).await;
    for img in &second_images {
        assert_eq!(img["state"], "succeeded", "{img}");
        assert_eq!(img["reused"], true, "{img}");
        assert_eq!(img["reused_from"], first.as_str(), "{img}");
        let url = img["output_url"].as_str().unwrap();
        assert!(
            url.contains(&format!("/{second}/")),
            "not its own key: {url}"
        );
    }
    assert_eq!(
        first_out, second_out,
        "reused outputs are not byte-identical"
    );

    // The webhook and the metrics count them.
    let got = hook.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["images"]["reused"], 0);
    assert_eq!(got[1].json()["images"]["reused"], total as i64);
    assert_eq!(
        metric(&app, r#"pixbatch_images_reused_total{via="not_modified"}"#).await,
        total as f64
    );
    let saved: usize = (0..n).map(|i| photo(PHOTOS[i % PHOTOS.len()]).len()).sum();
    assert_eq!(
        metric(&app, "pixbatch_not_fetched_bytes_total").await,
        saved as f64
    );

    // Each request has its own files: removing the first's breaks neither the second
    // nor a third upload (the record names the newest copy).
    std::fs::remove_dir_all(app.uploads().join(&first)).unwrap();
    assert_eq!(outputs(&app, &second_images).await, first_out);
    images.reset_counts();
    let (third, _) = run(&app, &csv, &[]).await;
    let third_images = app.images(&third).await;
    assert_eq!(reused(&third_images), total);
    assert!(
        third_images
            .iter()
            .all(|i| i["reused_from"] == second.as_str())
    );
    assert_eq!(images.not_modified(), n as u32);

    // With every earlier output gone, the 304 finds nothing to copy: done in full.
    std::fs::remove_dir_all(app.uploads().join(&second)).unwrap();
    std::fs::remove_dir_all(app.uploads().join(&third)).unwrap();
    images.reset_counts();
    let (fourth, status) = run(&app, &csv, &[]).await;
    assert_eq!(status["progress"]["reused"], 0, "{status}");
    let fourth_images = app.images(&fourth).await;
    assert_eq!(reused(&fourth_images), 0);
    assert_eq!(outputs(&app, &fourth_images).await, first_out);
    assert_eq!(images.conditional_hits(), n as u32);
    assert_eq!(images.plain_hits(), n as u32, "no full fetch after the 304");
}

async fn only_changed_images_are_done_again(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let n = 4;
    for i in 0..n {
        images.put(&format!("p{i}.jpg"), photo(PHOTOS[i % PHOTOS.len()]));
    }
    // Rows 0..4 with ETags; row 4 from an origin that sends no validators at all.
    let mut csv = csv_of(n, |i| images.url(&format!("/etag/{i}/p{i}.jpg")));
    csv += &format!("{n},SKU{n},{}\n", images.url("/img/plain/small_picos.jpg"));
    let (first, _) = run(&app, &csv, &[]).await;
    let first_out = outputs(&app, &app.images(&first).await).await;

    // Two photos change at the origin.
    for i in [1, 3] {
        images.put(&format!("p{i}.jpg"), photo(PHOTOS[(i + 1) % PHOTOS.len()]));
    }
    images.reset_counts();
    let (second, status) = run(&app, &csv, &[]).await;
    assert_eq!(images.conditional_hits(), n as u32);
    assert_eq!(images.not_modified(), 2);
    assert_eq!(images.plain_hits(), 1, "only the origin without validators");
    assert_eq!(status["progress"]["reused"], 3, "{status}");
    let second_images = app.images(&second).await;
    let second_out = outputs(&app, &second_images).await;
    for img in &second_images {
        let row = img["row"].as_u64().unwrap();
        let key = (row, img["position"].as_u64().unwrap());
        if row == 1 || row == 3 {
            assert_eq!(img["reused"], false, "{img}");
            assert!(img.get("reused_from").is_none(), "{img}");
            assert_ne!(first_out[&key], second_out[&key], "row {row} not redone");
        } else {
            // Rows 0 and 2 by a 304, row 4 by the same bytes.
            assert_eq!(img["reused"], true, "{img}");
            assert_eq!(img["reused_from"], first.as_str(), "{img}");
            assert_eq!(first_out[&key], second_out[&key], "row {row}");
        }
    }
    assert_eq!(
        metric(&app, r#"pixbatch_images_reused_total{via="same_bytes"}"#).await,
        1.0
    );

    // The changed images' new records are used from now on.
    images.reset_counts();
    let (third, _) = run(&app, &csv, &[]).await;
    assert_eq!(images.not_modified(), n as u32);
    let third_images = app.images(&third).await;
    assert_eq!(reused(&third_images), n + 1);
    assert_eq!(outputs(&app, &third_images).await, second_out);
}

async fn reuse_false_fetches_everything_in_full(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let n = 3;
    let csv = csv_of(n, |i| {
        images.url(&format!("/etag/{i}/{}", PHOTOS[i % PHOTOS.len()]))
    });
    let (first, _) = run(&app, &csv, &[]).await;
    let first_out = outputs(&app, &app.images(&first).await).await;

    images.reset_counts();
    let (second, status) = run(&app, &csv, &[("reuse", "false")]).await;
    assert_eq!(images.conditional_hits(), 0, "reuse=false sent validators");
    assert_eq!(images.plain_hits(), n as u32);
    assert_eq!(status["progress"]["reused"], 0);
    let second_images = app.images(&second).await;
    assert_eq!(reused(&second_images), 0);
    assert_eq!(outputs(&app, &second_images).await, first_out);

    // It still recorded what it fetched: the next request reuses its outputs.
    images.reset_counts();
    let (third, _) = run(&app, &csv, &[]).await;
    assert_eq!(images.not_modified(), n as u32);
    let third_images = app.images(&third).await;
    assert!(
        third_images
            .iter()
            .all(|i| i["reused_from"] == second.as_str())
    );

    // A bad value is a 4xx, not a 500.
    let (code, body) = app.upload(csv.as_bytes(), &[("reuse", "maybe")]).await;
    assert!((400..500).contains(&code), "{code} {body}");
}

async fn reuse_env_default_off(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[("REUSE", "false")]).await else {
        return;
    };
    let csv = csv_of(2, |i| images.url(&format!("/etag/{i}/{}", PHOTOS[i])));
    run(&app, &csv, &[]).await;
    images.reset_counts();
    let (second, _) = run(&app, &csv, &[]).await;
    assert_eq!(images.conditional_hits(), 0);
    assert_eq!(reused(&app.images(&second).await), 0);
    // The upload's field wins over the default.
    images.reset_counts();
    let (third, _) = run(&app, &csv, &[("reuse", "true")]).await;
    assert_eq!(images.not_modified(), 2);
    assert_eq!(reused(&app.images(&third).await), 2);
}

async fn a_304_to_a_plain_get_is_retried(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let path = "/bare304/2/a/small_picos.jpg";
    let csv = csv_of(1, |_| images.url(path));
    let (id, _) = run(&app, &csv, &[]).await;
    let imgs = app.images(&id).await;
    assert_eq!(imgs[0]["attempts"], 3, "{}", imgs[0]);
    assert_eq!(imgs[0]["reused"], false);
    assert_eq!(images.hits(path), 3);
    assert_eq!(images.not_modified(), 2);
}

/// A product URL that redirects: its validators belong to the image it led to. Once it
/// leads to another image (here one that answers 304 to any conditional GET, as an old
/// placeholder does to a newer date), they are not sent there, and the new image is
/// done in full instead of the earlier output being copied.
async fn validators_stay_with_the_url_that_gave_them(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    images.put("p1", b"/lastmod/a/small_picos.jpg".to_vec());
    let csv = csv_of(1, |_| images.url("/redirect/p1"));
    let (first, _) = run(&app, &csv, &[("reuse", "true")]).await;
    let only = |out: HashMap<(u64, u64), Vec<u8>>| out.into_values().next().expect("an output");
    let first_out = only(outputs(&app, &app.images(&first).await).await);

    // Unchanged: a 304 from the image the validators came from, the output copied.
    let (second, _) = run(&app, &csv, &[("reuse", "true")]).await;
    let second_images = app.images(&second).await;
    assert_eq!(reused(&second_images), 1, "{second_images:?}");
    assert_eq!(images.not_modified(), 1);

    let other = "/bare304/1/b/small_aitzgorri.jpg";
    images.put("p1", other.as_bytes().to_vec());
    let (third, _) = run(&app, &csv, &[("reuse", "true")]).await;
    let third_images = app.images(&third).await;
    assert_eq!(third_images[0]["reused"], false, "{}", third_images[0]);
    // The first, plain, GET got the placeholder's 304 and was tried again.
    assert_eq!(images.hits(other), 2);
    assert_ne!(
        only(outputs(&app, &third_images).await),
        first_out,
        "the earlier photo passed off as the new one"
    );
}

async fn kill_nine_during_a_reuse_run(backend: Backend) {
    let n = 40usize;
    let images = ImageServer::start().await;
    let Some(mut app) = TestServer::start_on(backend, &[("WORKER_CONCURRENCY", "4")]).await else {
        return;
    };
    let csv = csv_of(n, |i| {
        images.url(&format!("/etag/{i}/{}", PHOTOS[i % PHOTOS.len()]))
    });
    let (first, _) = run(&app, &csv, &[]).await;
    let first_out = outputs(&app, &app.images(&first).await).await;

    images.set_latency(Duration::from_millis(150));
    let id = app.accepted(csv.as_bytes(), &[]).await;
    kill_nine_at_quarters(&mut app, &id, n).await;
    let (_, status) = app.get_json(&format!("/status/{id}")).await;
    assert_eq!(status["progress"]["reused"], n as i64, "{status}");
    let imgs = app.images(&id).await;
    assert!(imgs.iter().all(|i| i["reused_from"] == first.as_str()));
    assert_eq!(outputs(&app, &imgs).await, first_out);
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of the line; the slice starts at field 3 (state).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports these in USER_HZ, 100 on every mainstream architecture.
    ticks as f64 / 100.0
}

/// The figures in the README: a 500-image catalogue uploaded twice, then with 5
/// photos changed. Prints server CPU per run; run with
/// `cargo test --release --test api -- --ignored --nocapture measure_reuse` (the
/// pixbatch process' CPU; on PostgreSQL the database server's own is not in it).
#[tokio::test]
#[ignore]
async fn measure_reuse_of_a_500_image_catalogue_sqlite() {
    measure_reuse(Backend::Sqlite).await
}

#[tokio::test]
#[ignore]
async fn measure_reuse_of_a_500_image_catalogue_postgres() {
    measure_reuse(Backend::Postgres).await
}

async fn measure_reuse(backend: Backend) {
    let n = 500;
    let images = ImageServer::start().await;
    for i in 0..n {
        images.put(&format!("p{i}.jpg"), photo(PHOTOS[i % PHOTOS.len()]));
    }
    let Some(app) = TestServer::start_on(backend, &[("RUST_LOG", "warn")]).await else {
        return;
    };
    let pid = app.pid().expect("pid");
    let csv = csv_of(n, |i| images.url(&format!("/etag/{i}/p{i}.jpg")));
    let measure = |fields: &'static [(&'static str, &'static str)]| {
        let (app, csv) = (&app, &csv);
        async move {
            let before = cpu_seconds(pid);
            let started = std::time::Instant::now();
            let (id, _) = run(app, csv, fields).await;
            (id, cpu_seconds(pid) - before, started.elapsed())
        }
    };
    let (first, cpu1, wall1) = measure(&[]).await;
    let first_out = outputs(&app, &app.images(&first).await).await;
    images.reset_counts();
    let (second, cpu2, wall2) = measure(&[]).await;
    assert_eq!(images.plain_hits(), 0);
    assert_eq!(images.not_modified(), n as u32);
    let second_images = app.images(&second).await;
    assert_eq!(reused(&second_images), n);
    assert_eq!(outputs(&app, &second_images).await, first_out);
    for i in (0..n).step_by(100) {
        images.put(&format!("p{i}.jpg"), photo(PHOTOS[(i + 1) % PHOTOS.len()]));
    }
    images.reset_counts();
    let (third, cpu3, wall3) = measure(&[]).await;
    let third_images = app.images(&third).await;
    assert_eq!(n - reused(&third_images), 5, "exactly the 5 changed redone");
    assert_eq!(images.not_modified(), n as u32 - 5);
    println!(
        "reuse, {backend:?}, {n} images: first run {cpu1:.2} s CPU ({:.2} s wall); second {cpu2:.2} s CPU \
         ({:.2} s wall, {:.3}x the first's CPU); 5 changed {cpu3:.2} s CPU ({:.2} s wall)",
        wall1.as_secs_f64(),
        wall2.as_secs_f64(),
        cpu2 / cpu1,
        wall3.as_secs_f64()
    );
}

/// Two requests with the same URLs in flight at once: each image is done once or twice
/// (never half), both complete with whole outputs, and the record left behind names a
/// whole output that a third request reuses byte for byte.
async fn two_requests_with_the_same_urls_at_once(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let n = 8;
    let csv = csv_of(n, |i| {
        images.url(&format!("/etag/c{i}/{}", PHOTOS[i % PHOTOS.len()]))
    });
    // Slow answers: both requests' downloads of a URL overlap.
    images.set_latency(Duration::from_millis(300));
    let ((ca, a), (cb, b)) = tokio::join!(
        app.upload(csv.as_bytes(), &[]),
        app.upload(csv.as_bytes(), &[])
    );
    assert_eq!((ca, cb), (202, 202), "{a} {b}");
    let (a, b) = (
        a["request_id"].as_str().unwrap().to_owned(),
        b["request_id"].as_str().unwrap().to_owned(),
    );
    for id in [&a, &b] {
        let status = app.wait_final(id, TIMEOUT).await;
        assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    }
    assert!(
        images.plain_hits() >= n as u32 && images.plain_hits() <= 2 * n as u32,
        "{} plain GETs for {n} URLs in two requests",
        images.plain_hits()
    );
    let a_out = outputs(&app, &app.images(&a).await).await;
    let b_out = outputs(&app, &app.images(&b).await).await;
    for jpeg in a_out.values().chain(b_out.values()) {
        pixbatch::imaging::verify_jpeg(jpeg).expect("a whole JPEG");
    }
    assert_eq!(a_out, b_out, "same bytes, same settings, different outputs");

    images.set_latency(Duration::ZERO);
    let (third, _) = run(&app, &csv, &[]).await;
    let third_images = app.images(&third).await;
    assert_eq!(reused(&third_images), n, "{third_images:?}");
    for img in &third_images {
        let from = img["reused_from"].as_str().unwrap_or_default();
        assert!(from == a || from == b, "reused from {from}");
    }
    assert_eq!(outputs(&app, &third_images).await, a_out);
}

crate::on_both_backends!(
    two_requests_with_the_same_urls_at_once,
    second_upload_makes_only_conditional_gets_and_copies,
    only_changed_images_are_done_again,
    reuse_false_fetches_everything_in_full,
    reuse_env_default_off,
    a_304_to_a_plain_get_is_retried,
    validators_stay_with_the_url_that_gave_them,
    kill_nine_during_a_reuse_run,
);
