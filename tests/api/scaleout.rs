//! Scale-out: `pixbatch api` and `pixbatch worker` as separate processes sharing one
//! database and one file store, on PostgreSQL (skipped without
//! PIXBATCH_TEST_POSTGRES_URL) and, for what the roles' configuration alone decides,
//! on SQLite.

use std::time::{Duration, Instant};

use crate::helpers::{
    Backend, ImageServer, PHOTOS, TestServer, WebhookReceiver, csv_rows, run_to_exit, stored_jpgs,
};

/// `rows` rows of `per_row` distinct URLs each.
fn csv_of(images: &ImageServer, rows: usize, per_row: usize) -> String {
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..rows {
        let urls: Vec<String> = (0..per_row)
            .map(|j| images.url(&format!("/img/{i}-{j}/{}", PHOTOS[(i + j) % PHOTOS.len()])))
            .collect();
        csv += &format!("{i},SKU{i},\"{}\"\n", urls.join(","));
    }
    csv
}

async fn succeeded(app: &TestServer, id: &str) -> i64 {
    let (_, s) = app.get_json(&format!("/status/{id}")).await;
    s["progress"]["succeeded"].as_i64().unwrap_or(0)
}

/// Every image succeeded with one recorded try, one output file each, a complete
/// output CSV, and exactly one webhook event.
async fn assert_complete_once(
    app: &TestServer,
    hook: &WebhookReceiver,
    status: &serde_json::Value,
    id: &str,
    rows: usize,
    per_row: usize,
) {
    let n = rows * per_row;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    assert_eq!(status["progress"]["succeeded"], n as i64);
    let all = app.images(id).await;
    assert_eq!(all.len(), n);
    for img in &all {
        assert_eq!(img["state"], "succeeded", "{img}");
        assert_eq!(img["attempts"], 1, "{img}");
    }
    let jpgs = stored_jpgs(&app.uploads().join(id));
    assert_eq!(jpgs.len(), n, "{jpgs:?}");
    let (code, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    assert_eq!(code, 200);
    let out = csv_rows(&out);
    assert_eq!(out.len(), rows + 1);
    for (i, row) in out[1..].iter().enumerate() {
        let urls: Vec<&str> = row[3].split(',').collect();
        assert_eq!(urls.len(), per_row, "{row:?}");
        for (j, url) in urls.iter().enumerate() {
            assert!(url.ends_with(&format!("/{i}-{j}.jpg")), "{row:?}");
            assert!(
                url.starts_with(&app.base),
                "{url} is not under the API's base"
            );
        }
    }
    hook.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = hook.received();
    assert_eq!(
        got.len(),
        1,
        "{:?}",
        got.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    assert_eq!(got[0].json()["request_id"], id);
}

#[tokio::test]
async fn one_api_two_workers_and_a_kill_nine_complete_every_image_once() {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(40));
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(api) = TestServer::start_cmd("api", Backend::Postgres, &[]).await else {
        return;
    };
    let workers = [("WORKER_CONCURRENCY", "4")];
    let mut w1 = api.join("worker", &workers).await;
    let w2 = api.join("worker", &workers).await;

    // A worker answers health and metrics only.
    let (code, _) = w2.get_json("/healthz").await;
    assert_eq!(code, 200);
    let (code, _, metrics) = w2.get_bytes(&format!("{}/metrics", w2.base)).await;
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&metrics).contains("queue"));
    let (code, _) = w2
        .get_json("/status/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(code, 404);

    let (rows, per_row) = (100, 2);
    let id = api
        .accepted(
            csv_of(&images, rows, per_row).as_bytes(),
            &[("webhook_url", &hook.url)],
        )
        .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = succeeded(&api, &id).await;
        if done >= 40 {
            assert!(done < (rows * per_row) as i64, "finished before the kill");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stuck at {done}\n{}\n{}",
            w1.logs(),
            w2.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w1.kill();

    let status = api.wait_final(&id, Duration::from_secs(120)).await;
    assert_complete_once(&api, &hook, &status, &id, rows, per_row).await;
    assert!(
        w2.logs().contains("image stored"),
        "the surviving worker did no work"
    );
    assert!(
        !api.logs().contains("image stored"),
        "the API process ran jobs"
    );
    // Split roles on one disk work here (one host); each process says what it needs.
    for logs in [api.logs(), w2.logs()] {
        assert!(logs.contains("every api and worker process must see the same folder"));
    }
}

/// Restarts the PostgreSQL server mid-run (needs root, and it disturbs every other
/// test using that server, so it runs alone: `cargo test --test api -- --ignored
/// postgres_restart`). The restart command is `PIXBATCH_TEST_POSTGRES_RESTART`, by
/// default `pg_ctlcluster 15 main restart`.
#[tokio::test]
#[ignore]
async fn postgres_restart_mid_run_completes() {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(40));
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(api) = TestServer::start_cmd("api", Backend::Postgres, &[]).await else {
        return;
    };
    let w = api.join("worker", &[("WORKER_CONCURRENCY", "4")]).await;
    let (rows, per_row) = (60, 2);
    let id = api
        .accepted(
            csv_of(&images, rows, per_row).as_bytes(),
            &[("webhook_url", &hook.url)],
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while succeeded(&api, &id).await < 20 {
        assert!(Instant::now() < deadline, "{}", w.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart = std::env::var("PIXBATCH_TEST_POSTGRES_RESTART")
        .unwrap_or_else(|_| "pg_ctlcluster 15 main restart".into());
    let ok = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .expect("run the restart command");
    assert!(ok.success(), "{restart}: {ok}");

    let status = api
        .wait_final_through_outages(&id, Duration::from_secs(180))
        .await;
    assert_complete_once(&api, &hook, &status, &id, rows, per_row).await;
    // Both processes are still alive and healthy.
    assert_eq!(api.get_json("/readyz").await.0, 200);
    assert_eq!(w.get_json("/readyz").await.0, 200);
}

/// Jobs that wait in a worker for a free slot longer than two heartbeats are not taken
/// as orphans by another worker while they wait or run: every image is downloaded
/// once. Downloads of unequal lengths free the slots one at a time, so a worker that
/// fetched more jobs than it had free slots holds some of them back for seconds.
#[tokio::test]
async fn jobs_waiting_for_a_slot_are_not_taken_by_another_worker() {
    let images = ImageServer::start().await;
    let Some(api) = TestServer::start_cmd("api", Backend::Postgres, &[]).await else {
        return;
    };
    let workers = [("WORKER_CONCURRENCY", "3")];
    let w1 = api.join("worker", &workers).await;
    let w2 = api.join("worker", &workers).await;
    let rows = 24;
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..rows {
        let ms = [200, 3500, 1800][i % 3];
        let url = images.url(&format!("/slow/{ms}/{i}/{}", PHOTOS[i % PHOTOS.len()]));
        csv += &format!("{i},SKU{i},{url}\n");
    }
    let id = api.accepted(csv.as_bytes(), &[]).await;
    let status = api.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(
        images.total_hits(),
        rows as u32,
        "images downloaded more than once\n{}\n{}",
        w1.logs(),
        w2.logs()
    );
}

/// In split roles `WEBHOOK_URL` may be set on the `api` process alone, where uploads
/// arrive: the default is stored with the request, so the worker that completes it
/// (configured without one) still delivers the event. Before, the default was read
/// only at completion, in the worker, and no event was ever written.
#[tokio::test]
async fn a_default_webhook_set_on_the_api_alone_is_delivered() {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    // No secret on the api: it signs nothing, so it does not warn that webhooks go
    // unsigned (the worker, which has one, signs them).
    let api = TestServer::start_cmd(
        "api",
        Backend::Sqlite,
        &[("WEBHOOK_URL", &hook.url), ("WEBHOOK_SECRET", "")],
    )
    .await
    .expect("SQLite");
    let worker = api.join("worker", &[]).await;
    let id = api.accepted(csv_of(&images, 2, 1).as_bytes(), &[]).await;
    let status = api.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", worker.logs());
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["request_id"], id);
    assert!(
        got[0].headers.contains_key("webhook-signature"),
        "{:?}",
        got[0].headers
    );
    assert!(!api.logs().contains("unsigned"), "{}", api.logs());
}

/// `/files/{id}/output.csv` serves what `GET /requests/{id}/output.csv` does. A retried
/// run cancelled before its CSV is written (no worker here to write it) has no output
/// CSV yet: 409 from the API and 404 from `/files`, where `/files` served the run
/// before's CSV, whose counts the request no longer has. Once a worker writes the
/// cancel's CSV, both serve it.
#[tokio::test]
async fn the_output_csv_is_the_same_at_both_addresses_through_a_retry_and_a_cancel() {
    let images = ImageServer::start().await;
    let api = TestServer::start_cmd("api", Backend::Sqlite, &[("FETCH_ATTEMPTS", "1")])
        .await
        .expect("SQLite");
    let mut worker = api.join("worker", &[("FETCH_ATTEMPTS", "1")]).await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n2,B,{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/missing/b.jpg"),
    );
    let id = api.accepted(csv.as_bytes(), &[]).await;
    let status = api.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "CompletedWithErrors", "{status}");
    worker.terminate(Duration::from_secs(20)).await;

    let both = || async {
        let api_csv = api
            .get_bytes(&format!("{}/requests/{id}/output.csv", api.base))
            .await;
        let file = api
            .get_bytes(&format!("{}/files/{id}/output.csv", api.base))
            .await;
        ((api_csv.0, api_csv.2), (file.0, file.2))
    };
    let ((code, first), (file_code, file)) = both().await;
    assert_eq!((code, file_code), (200, 200));
    assert_eq!(first, file);

    // A retry goes on: both serve the run before's CSV.
    let (code, body) = api.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 202, "{body}");
    let ((code, during), (file_code, file)) = both().await;
    assert_eq!((code, file_code), (200, 200));
    assert_eq!((&during, &file), (&first, &first));

    // Cancelled, its CSV not written yet.
    let (code, body) = api.post_json(&format!("/requests/{id}/cancel")).await;
    assert_eq!(code, 202, "{body}");
    let ((code, _), (file_code, _)) = both().await;
    assert_eq!((code, file_code), (409, 404));

    // A worker writes the cancel's CSV: both serve it.
    let worker = api.join("worker", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let ((code, csv), (file_code, file)) = both().await;
        if code == 200 {
            assert_eq!((file_code, &file), (200, &csv));
            break csv;
        }
        assert!(Instant::now() < deadline, "{}", worker.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(last, first);
}

/// A first run cancelled has no event until its completion writes it with the output
/// CSV: redelivery then says to try again shortly (it said there was no event, as if
/// for good), and once a worker has written it, redelivers it.
#[tokio::test]
async fn redelivery_of_a_cancelled_first_run_waits_for_its_event() {
    let hook = WebhookReceiver::start(vec![]).await;
    let api = TestServer::start_cmd("api", Backend::Sqlite, &[("WEBHOOK_URL", &hook.url)])
        .await
        .expect("SQLite");
    let csv = "Serial Number,Product Name,Input Image Urls\n1,A,https://example.com/a.jpg\n";
    let id = api.accepted(csv.as_bytes(), &[]).await;
    let (code, body) = api.post_json(&format!("/requests/{id}/cancel")).await;
    assert_eq!(code, 202, "{body}");
    let redeliver = format!("/requests/{id}/webhooks/redeliver");
    let (code, body) = api.post_json(&redeliver).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("try again shortly")),
        "{body}"
    );

    let worker = api.join("worker", &[]).await;
    hook.wait_for(1, Duration::from_secs(30)).await;
    let (code, body) = api.post_json(&redeliver).await;
    assert_eq!(code, 202, "{body}\n{}", worker.logs());
    hook.wait_for(2, Duration::from_secs(30)).await;
}

/// Processes starting together on one fresh SQLite file (`api` and `worker` started
/// by one script, or every process after an upgrade) all start: SQLite has no
/// migration lock, and most such starts failed ("database is locked" while one
/// switched the file to WAL, or a migration applied twice).
#[tokio::test]
async fn processes_starting_together_on_one_sqlite_file_all_migrate() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let starts = (0..3).map(|_| run_to_exit(dir.path(), "migrate", &[]));
        for out in futures::future::join_all(starts).await {
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
