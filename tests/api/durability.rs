//! Crash-proof: kill -9 at several points, SIGTERM, retry and cancel, through the
//! real binary.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use crate::helpers::{
    Backend, ImageServer, PHOTOS, PgDatabase, TestServer, WebhookReceiver, csv_rows, postgres_url,
    stored_jpgs,
};

fn csv_of(images: &ImageServer, prefix: &str, n: usize) -> String {
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..n {
        csv += &format!(
            "{i},SKU{i},{}\n",
            images.url(&format!("/{prefix}/{i}/{}", PHOTOS[i % PHOTOS.len()]))
        );
    }
    csv
}

async fn succeeded(app: &TestServer, id: &str) -> i64 {
    let (_, s) = app.get_json(&format!("/status/{id}")).await;
    s["progress"]["succeeded"].as_i64().unwrap_or(0)
}

async fn wait_until_succeeded(app: &TestServer, id: &str, at_least: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = succeeded(app, id).await;
        if done >= at_least {
            return done;
        }
        assert!(Instant::now() < deadline, "stuck at {done}\n{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every image's output exists once, no temporaries are left, the CSV is complete.
async fn assert_complete_once(app: &TestServer, id: &str, n: usize) {
    let status = app.wait_final(id, Duration::from_secs(120)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    assert_eq!(status["progress"]["succeeded"], n as i64);
    let jpgs = stored_jpgs(&app.uploads().join(id));
    assert_eq!(jpgs.len(), n, "{jpgs:?}");
    let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), n + 1);
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], i.to_string());
        assert!(row[3].ends_with(&format!("/{i}-0.jpg")), "{row:?}");
    }
    for img in app.images(id).await {
        assert_eq!(img["state"], "succeeded");
    }
}

/// `kill -9` once a quarter, half and three quarters of the request's `n` images have
/// succeeded, restarting each time; then every image is done exactly once.
pub(crate) async fn kill_nine_at_quarters(app: &mut TestServer, id: &str, n: usize) {
    for quarter in 1..=3 {
        let done = wait_until_succeeded(app, id, (n * quarter / 4) as i64).await;
        assert!(done < n as i64, "finished before kill {quarter}");
        app.kill();
        app.restart().await;
    }
    assert_complete_once(app, id, n).await;
}

async fn kill_nine_at_a_quarter_half_and_three_quarters(backend: Backend) {
    let n = 60usize;
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(150));
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(mut app) = TestServer::start_on(backend, &[("WORKER_CONCURRENCY", "4")]).await else {
        return;
    };
    let id = app
        .accepted(
            csv_of(&images, "img", n).as_bytes(),
            &[("webhook_url", &hook.url)],
        )
        .await;
    kill_nine_at_quarters(&mut app, &id, n).await;
    hook.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = hook.received();
    let ids: HashSet<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(got.len(), 1);
}

/// SIGTERM while images are being fetched and transformed: the process exits 0 within
/// the shutdown bound, every image already started has finished by then (read back by
/// an `api` process, which runs no jobs), nothing failed, and a restart completes the
/// rest, each image once.
async fn sigterm_mid_run_finishes_in_flight_images_and_a_restart_completes(backend: Backend) {
    let n = 20usize;
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(300));
    let Some(mut app) = TestServer::start_on(backend, &[("WORKER_CONCURRENCY", "2")]).await else {
        return;
    };
    let id = app
        .accepted(csv_of(&images, "img", n).as_bytes(), &[])
        .await;
    wait_until_succeeded(&app, &id, 3).await;
    let path_of = |img: &serde_json::Value| {
        reqwest::Url::parse(img["input_url"].as_str().unwrap())
            .unwrap()
            .path()
            .to_owned()
    };
    // Between two images both workers may be idle, waiting for the queue's next poll:
    // look again until an image has been fetched and has not yet finished.
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let listed = app.images(&id).await;
        let started: Vec<String> = listed
            .iter()
            .map(path_of)
            .filter(|p| images.hits(p) > 0)
            .collect();
        let succeeded_before = listed.iter().filter(|i| i["state"] == "succeeded").count();
        if started.len() > succeeded_before {
            break started;
        }
        assert!(Instant::now() < deadline, "nothing in flight: {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let asked = Instant::now();
    let status = app
        .terminate(Duration::from_secs(20))
        .await
        .expect("exited within the shutdown bound");
    assert!(status.success(), "{status}\n{}", app.logs());
    assert!(asked.elapsed() < Duration::from_secs(15));

    let api = app.join("api", &[]).await;
    let after = api.images(&id).await;
    for img in &after {
        if started.contains(&path_of(img)) {
            assert_eq!(
                img["state"],
                "succeeded",
                "in flight at SIGTERM: {img}\n{}",
                app.logs()
            );
        } else {
            assert!(
                img["state"] == "succeeded" || img["state"] == "pending",
                "{img}"
            );
        }
    }
    assert!(
        after.iter().any(|i| i["state"] == "pending"),
        "finished before the signal"
    );
    drop(api);
    app.restart().await;
    assert_complete_once(&app, &id, n).await;
}

/// A SIGTERM that finds the queue's own database work in flight (here a fetch for
/// the free slot, held up by a write lock the test takes) still lets the image in
/// flight record its outcome. apalis polls no backend while its worker drains, so
/// such a fetch kept SQLite's one write connection, inside its transaction, and the
/// image waited for it until the shutdown timeout cut it off: downloaded, encoded and
/// stored, but never recorded.
#[tokio::test]
async fn a_drain_is_not_held_up_by_the_queues_own_work_in_flight() {
    let images = ImageServer::start().await;
    let mut app = TestServer::start(&[("WORKER_CONCURRENCY", "2")]).await;
    let path = "/slow/1500/a/small_picos.jpg";
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
        images.url(path)
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    app.wait_fetched(&images, &[path]).await;
    let mut lock = app.sqlite_connection().await;
    sqlx::query("begin immediate")
        .execute(&mut lock)
        .await
        .expect("write lock");
    // The worker looks for a job for its free slot every 50 ms: its fetch now waits
    // on the lock, and is in flight when the signal comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    app.signal_term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("rollback")
        .execute(&mut lock)
        .await
        .expect("release");
    drop(lock);
    let status = app
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exited");
    assert!(status.success(), "{status}\n{}", app.logs());
    let took = asked.elapsed();
    let api = app.join("api", &[]).await;
    let after = api.images(&id).await;
    assert_eq!(after[0]["state"], "succeeded", "{after:?}\n{}", app.logs());
    // Well before SHUTDOWN_TIMEOUT (10 s), which cut the image off.
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}\n{}",
        app.logs()
    );
}

/// A wind-down step that fails during the drain (here the queue's acknowledgement of a
/// finished job, refused by the database) ends the worker cleanly: the failure is
/// logged, the images finished meanwhile are recorded, and after a restart nothing is
/// done twice. The failed step stayed in the queue's state, and apalis' own last poll
/// resumed it: a panic, and a worker restarted in the middle of the stop.
#[tokio::test]
async fn a_wind_down_that_fails_during_the_drain_ends_cleanly() {
    let images = ImageServer::start().await;
    let mut app = TestServer::start(&[("WORKER_CONCURRENCY", "2")]).await;
    let (a, b) = (
        "/slow/2000/a/small_picos.jpg",
        "/slow/4000/b/small_aitzgorri.jpg",
    );
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n0,SKU0,{}\n1,SKU1,{}\n",
        images.url(a),
        images.url(b)
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    app.wait_fetched(&images, &[a, b]).await;
    app.signal_term();
    let mut db = app.sqlite_connection().await;
    sqlx::query(
        "create trigger refuse_acks before update on Jobs when new.status = 'Done' \
         begin select raise(abort, 'acknowledgements refused by the test'); end",
    )
    .execute(&mut db)
    .await
    .expect("refuse acknowledgements");
    let status = app
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exited");
    let logs = app.logs();
    assert!(status.success(), "{status}\n{logs}");
    assert!(
        logs.contains("wind-down failed during the drain"),
        "no failed step: {logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains("restarting it"), "{logs}");
    sqlx::query("drop trigger refuse_acks")
        .execute(&mut db)
        .await
        .expect("take acknowledgements again");
    app.restart().await;
    assert_complete_once(&app, &id, 2).await;
    assert_eq!((images.hits(a), images.hits(b)), (1, 1), "fetched again");
}

/// A queue error (here the database refusing the fetch for the free slot) ends the
/// worker only once its jobs in flight are done: the image being downloaded is stored
/// and recorded, not dropped to be taken over and downloaded again a heartbeat
/// window later; the restarted worker runs the rest.
#[tokio::test]
async fn a_queue_error_lets_the_jobs_in_flight_finish() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[("WORKER_CONCURRENCY", "2")]).await;
    let a = "/slow/5000/a/small_picos.jpg";
    let first = app
        .accepted(
            format!(
                "Serial Number,Product Name,Input Image Urls\n0,SKU0,{}\n",
                images.url(a)
            )
            .as_bytes(),
            &[],
        )
        .await;
    app.wait_fetched(&images, &[a]).await;
    let mut db = app.sqlite_connection().await;
    sqlx::query(
        "create trigger refuse_fetches before update on Jobs when new.status = 'Queued' \
         begin select raise(abort, 'fetches refused by the test'); end",
    )
    .execute(&mut db)
    .await
    .expect("refuse fetches");
    // A job for the free slot: its fetch fails.
    let second = app
        .accepted(csv_of(&images, "img", 1).as_bytes(), &[])
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.logs().contains("fetches refused by the test") {
        assert!(Instant::now() < deadline, "no queue error\n{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, status) = app.get_json(&format!("/status/{first}")).await;
    assert_eq!(
        status["progress"]["pending"], 1,
        "the error came too late: {status}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("drop trigger refuse_fetches")
        .execute(&mut db)
        .await
        .expect("take fetches again");
    // Well inside the takeover's window (12 heartbeats of 1 s here).
    for id in [&first, &second] {
        let status = app.wait_final(id, Duration::from_secs(10)).await;
        assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    }
    assert_eq!(images.hits(a), 1, "downloaded again\n{}", app.logs());
    assert!(app.logs().contains("restarting it"), "{}", app.logs());
}

/// A try that cannot look at its image just before writing (the database does not
/// answer) writes nothing: it may be a straggler whose image a newer try has recorded,
/// and its own record could not be made anyway. Its job runs again once the database
/// answers, and the image is stored then.
#[tokio::test]
async fn a_try_that_cannot_look_before_writing_writes_nothing() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[]).await;
    let path = "/slow/1500/a/small_picos.jpg";
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n0,SKU0,{}\n",
        images.url(path)
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    app.wait_fetched(&images, &[path]).await;
    let mut db = app.sqlite_connection().await;
    sqlx::query("alter table images rename to images_away")
        .execute(&mut db)
        .await
        .expect("hide the images");
    // The download ends 1.5 s after it began; the transform and the look follow, and
    // the job gives up this run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.logs().contains("job hit an infrastructure error") {
        assert!(Instant::now() < deadline, "no error\n{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = stored_jpgs(&app.uploads().join(&id));
    sqlx::query("alter table images_away rename to images")
        .execute(&mut db)
        .await
        .expect("bring the images back");
    assert!(
        written.is_empty(),
        "written unlooked: {written:?}\n{}",
        app.logs()
    );
    assert_complete_once(&app, &id, 1).await;
    assert!(images.hits(path) >= 2, "the job ran again");
}

async fn retry_reruns_only_the_failed_images(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n\
         1,A,{},{}\n\
         2,B,{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/gate/b/small_aitzgorri.jpg"),
        images.url("/gate/c/small_lamp_portrait.jpg"),
    );
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "CompletedWithErrors");
    assert_eq!(status["progress"]["failed"], 2);
    let first_url = status["output_csv"].as_str().unwrap().to_owned();
    assert!(first_url.ends_with(&format!("/files/{id}/output.csv")));
    let (_, _, first_csv) = app.get_bytes(&first_url).await;
    assert_eq!(csv_rows(&first_csv)[0].len(), 5, "Errors column");

    // Unknown ids are not found.
    let (code, _) = app.post_json("/requests/nope/retry").await;
    assert_eq!(code, 404);

    images.open_gate();
    let (code, body) = app.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 202);
    assert_eq!(body["images"], 2);
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert_eq!(status["progress"]["succeeded"], 3);
    assert_eq!(
        images.hits("/img/a/small_picos.jpg"),
        1,
        "succeeded image fetched again"
    );
    assert_eq!(images.hits("/gate/b/small_aitzgorri.jpg"), 2);
    let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    let rows = csv_rows(&out);
    assert_eq!(
        rows[0].len(),
        4,
        "no Errors column once all succeeded: {rows:?}"
    );
    assert!(rows[1][3].split(',').all(|u| u.ends_with(".jpg")));
    // The output CSV's URL is stable (SPEC §4): the same after the retry, now
    // serving the second run's CSV, which that run wrote under a key of its own (no
    // completion of one run can replace the other's file).
    assert_eq!(status["output_csv"].as_str().unwrap(), first_url);
    assert_ne!(out, first_csv);
    let (code, _, own) = app
        .get_bytes(&format!("{}/files/{id}/output-2.csv", app.base))
        .await;
    assert_eq!(code, 200);
    assert_eq!(own, out, "output.csv serves the latest run's CSV");
    let (_, _, served) = app
        .get_bytes(&format!("{}/requests/{id}/output.csv", app.base))
        .await;
    assert_eq!(served, out, "the request's output CSV is the latest run's");

    // A new completion, a new event, both naming the stable URL.
    let got = hook.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(got[0].json()["status"], "CompletedWithErrors");
    assert_eq!(got[1].json()["status"], "Completed");
    assert_eq!(got[0].json()["output_csv"], first_url.as_str());
    assert_eq!(got[1].json()["output_csv"], first_url.as_str());

    // Nothing left to retry.
    let (code, _) = app.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 409);
}

async fn cancel_stops_pending_images(backend: Backend) {
    let n = 30usize;
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(400));
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(app) = TestServer::start_on(backend, &[("WORKER_CONCURRENCY", "1")]).await else {
        return;
    };
    let id = app
        .accepted(
            csv_of(&images, "img", n).as_bytes(),
            &[("webhook_url", &hook.url)],
        )
        .await;
    wait_until_succeeded(&app, &id, 1).await;
    // Cancelled as the next try's download starts: it is in flight for 400 ms, far
    // from the moment it writes.
    let hits = images.total_hits();
    let deadline = Instant::now() + Duration::from_secs(10);
    while images.total_hits() == hits {
        assert!(
            Instant::now() < deadline,
            "no next download\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (code, _) = app.post_json(&format!("/requests/{id}/cancel")).await;
    assert_eq!(code, 202);
    let status = app.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(status["status"], "Cancelled", "{status}");
    let hits_at_cancel = images.total_hits();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // At most the one in flight at the moment of cancelling was still fetched.
    assert!(images.total_hits() <= hits_at_cancel + 1);
    assert!((images.total_hits() as usize) < n / 2);
    let imgs = app.images(&id).await;
    let cancelled = imgs.iter().filter(|i| i["state"] == "cancelled").count();
    assert!(cancelled >= n - 4, "{cancelled} cancelled");
    // The try in flight at the cancel finished its download but wrote nothing: a
    // file for each image that succeeded, none for a cancelled one.
    let succeeded: std::collections::HashSet<String> = imgs
        .iter()
        .filter(|i| i["state"] == "succeeded")
        .map(|i| {
            let url = i["output_url"].as_str().unwrap();
            url.rsplit('/').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        crate::helpers::stored_jpgs(&app.uploads().join(&id)),
        succeeded,
        "{}",
        app.logs()
    );

    // The output CSV (written by the completion job just after) and the event report it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out_url = loop {
        let (_, s) = app.get_json(&format!("/status/{id}")).await;
        if let Some(u) = s["output_csv"].as_str() {
            break u.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no output CSV: {s}\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, _, out) = app.get_bytes(&out_url).await;
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), n + 1);
    // Which images were done before the cancel is the queue's order, not the rows':
    // every cancelled image, and only those, says so in its row.
    let says_cancelled = rows[1..]
        .iter()
        .filter(|r| r[4].contains("cancelled"))
        .count();
    assert_eq!(says_cancelled, cancelled, "{rows:?}");
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["status"], "Cancelled");
    // The webhook's counts are the status' progress, cancelled images included.
    let counts = &got[0].json()["images"];
    assert_eq!(counts["total"], n);
    assert_eq!(counts["pending"], 0);
    assert_eq!(counts["cancelled"], cancelled);
    let (_, s) = app.get_json(&format!("/status/{id}")).await;
    assert_eq!(counts, &s["progress"]);
    let (code, _) = app.post_json(&format!("/requests/{id}/cancel")).await;
    assert_eq!(code, 409);
}

/// Many image jobs finishing at once, in batches of one commit each, with same-URL
/// duplicates (whose jobs race for the same rows) and failures, and a `kill -9` in the
/// middle: every image is counted once, the counters match the images, and the run
/// completes once (one webhook event).
async fn group_commit_keeps_the_fan_in_exact(backend: Backend) {
    let n = 400usize;
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_millis(200));
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(mut app) = TestServer::start_on(backend, &[("WORKER_CONCURRENCY", "8")]).await else {
        return;
    };
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    let mut expect_failed = 0;
    for i in 0..n {
        let url = if i % 8 == 0 {
            expect_failed += 1;
            images.url(&format!("/img/missing/{}/none.jpg", i % 3))
        } else {
            images.url(&format!("/img/dup/{}/{}", i % 25, PHOTOS[i % PHOTOS.len()]))
        };
        csv += &format!("{i},SKU{i},{url}\n");
    }
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    let done = wait_until_succeeded(&app, &id, 60).await;
    assert!(
        done < (n - expect_failed) as i64,
        "finished before the kill"
    );
    app.kill();
    app.restart().await;

    let status = app.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(
        status["status"],
        "CompletedWithErrors",
        "{status}\n{}",
        app.logs()
    );
    assert_eq!(status["progress"]["succeeded"], (n - expect_failed) as i64);
    assert_eq!(status["progress"]["failed"], expect_failed as i64);
    let all = app.images(&id).await;
    assert_eq!(all.len(), n);
    let succeeded = all.iter().filter(|i| i["state"] == "succeeded").count();
    let failed = all.iter().filter(|i| i["state"] == "failed").count();
    assert_eq!((succeeded, failed), (n - expect_failed, expect_failed));
    let jpgs = stored_jpgs(&app.uploads().join(&id));
    assert_eq!(jpgs.len(), n - expect_failed);

    let (_, _, out) = app.get_bytes(status["output_csv"].as_str().unwrap()).await;
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), n + 1);
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], i.to_string());
        if i % 8 == 0 {
            assert_eq!(row[3], "", "{row:?}");
            assert!(row[4].starts_with("1: "), "{row:?}");
        } else {
            assert!(row[3].ends_with(&format!("/{i}-0.jpg")), "{row:?}");
        }
    }

    hook.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = hook.received();
    assert_eq!(got.len(), 1, "the run completed more than once");
    assert_eq!(
        got[0].json()["images"]["succeeded"],
        (n - expect_failed) as i64
    );
}

/// 20 uploads of 500 rows at once: nothing lost, no "database is locked" anywhere.
/// Slow (about 10 000 images): run with `cargo test -- --ignored soak`.
#[tokio::test]
#[ignore]
async fn soak_twenty_uploads_of_five_hundred_rows() {
    let images = ImageServer::start().await;
    let app = TestServer::start(&[("RUST_LOG", "warn")]).await;
    let started = Instant::now();
    let uploads = (0..20).map(|u| {
        let csv = csv_of(&images, &format!("img/u{u}"), 500);
        let app = &app;
        async move { app.accepted(csv.as_bytes(), &[]).await }
    });
    let ids = futures::future::join_all(uploads).await;
    let accepted = started.elapsed();
    for id in &ids {
        let s = app.wait_final(id, Duration::from_secs(1800)).await;
        assert_eq!(s["status"], "Completed", "{s}");
        assert_eq!(s["progress"]["succeeded"], 500);
    }
    let elapsed = started.elapsed();
    let logs = app.logs();
    assert!(
        !logs.contains("database is locked"),
        "lock errors in the logs"
    );
    println!(
        "soak: 20 × 500 images; all accepted in {:.2} s; all completed in {:.1} s ({:.1} images/s)",
        accepted.as_secs_f64(),
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
}

/// The running binary deletes the jobs that finished longer than `JOB_RETENTION` (a
/// week by default) ago, and nothing else: the request, its images and its files stay.
#[tokio::test]
async fn finished_jobs_are_purged_after_the_retention() {
    let images = ImageServer::start().await;
    let mut app = TestServer::start(&[]).await;
    let n = 3;
    let id = app
        .accepted(csv_of(&images, "img", n).as_bytes(), &[])
        .await;
    assert_complete_once(&app, &id, n).await;
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}/pixbatch.db",
        app.dir.path().display()
    ))
    .await
    .expect("the test's own pool");
    let done = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from Jobs where status = 'Done'")
            .fetch_one(&db)
            .await
            .expect("count")
    };
    // One job per image, one completion: the completion's own acknowledgement follows
    // the status it wrote, so it may take a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while done().await < n as i64 + 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done().await, n as i64 + 1);
    app.terminate(Duration::from_secs(30))
        .await
        .expect("stopped");
    // A week and a day later, for the queue.
    sqlx::query("update Jobs set done_at = done_at - 8 * 86400 where status = 'Done'")
        .execute(&db)
        .await
        .expect("age the jobs");
    app.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app.logs().contains("purged finished jobs") {
        assert!(Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done().await, 0);
    assert_complete_once(&app, &id, n).await;
}

/// The output CSV's stable URL serves the latest finished run's CSV, also while a
/// later retry's run goes on: run 1 fails two images, run 2 (the gate open) fixes
/// one, and during run 3 (the other, slow to fail again) the URL is still run 2's
/// CSV, not run 1's.
async fn the_stable_url_serves_the_latest_finished_run(backend: Backend) {
    let images = ImageServer::start().await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n\
         1,A,{},{}\n",
        images.url("/gate/a/small_picos.jpg"),
        images.url("/missing/b.jpg"),
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["progress"]["failed"], 2, "{status}");
    let url = status["output_csv"].as_str().unwrap().to_owned();
    let (_, _, run1) = app.get_bytes(&url).await;

    images.open_gate();
    let (code, _) = app.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 202);
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "CompletedWithErrors", "{status}");
    assert_eq!(status["output_csv"], url.as_str());
    let (_, _, run2) = app.get_bytes(&url).await;
    assert_ne!(run2, run1, "run 2 stored the gated image");

    images.set_latency(Duration::from_secs(3));
    let (code, _) = app.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 202);
    let (_, status) = app.get_json(&format!("/status/{id}")).await;
    assert!(
        !status["status"].as_str().unwrap().starts_with("Completed"),
        "{status}"
    );
    let (code, _, during) = app.get_bytes(&url).await;
    assert_eq!(code, 200);
    assert_eq!(
        during, run2,
        "while run 3 goes on, the latest finished run's CSV"
    );
    // The API's own endpoint serves the same file meanwhile, and revalidates it.
    let api_url = format!("{}/requests/{id}/output.csv", app.base);
    let resp = app.http.get(&api_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].clone();
    assert_eq!(
        resp.headers()["cache-control"],
        "private, max-age=0, must-revalidate"
    );
    assert_eq!(resp.bytes().await.unwrap(), run2);
    let again = app
        .http
        .get(&api_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    images.set_latency(Duration::ZERO);
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["output_csv"], url.as_str());
    let (_, _, own) = app
        .get_bytes(&format!("{}/files/{id}/output-3.csv", app.base))
        .await;
    assert_eq!(app.get_bytes(&url).await.2, own);
}

crate::on_both_backends!(
    the_stable_url_serves_the_latest_finished_run,
    kill_nine_at_a_quarter_half_and_three_quarters,
    sigterm_mid_run_finishes_in_flight_images_and_a_restart_completes,
    retry_reruns_only_the_failed_images,
    cancel_stops_pending_images,
    group_commit_keeps_the_fan_in_exact,
);

/// A database that refuses every image outcome for 25 s: long enough that a fixed
/// handful of quick infrastructure re-runs would have given the jobs up, leaving the
/// request `Processing` forever. The jobs back off and wait it out, and once the
/// database takes writes again the request completes with every image stored.
#[tokio::test]
async fn image_jobs_outlast_a_long_database_failure() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let pg = PgDatabase::create(&admin).await;
    let images = ImageServer::start().await;
    let app = TestServer::start(&[("DATABASE_URL", pg.url.as_str())]).await;
    let conn = sqlx::PgPool::connect(&pg.url)
        .await
        .expect("test's own pool");
    for sql in [
        "create function refuse_outcomes() returns trigger language plpgsql as \
         $$ begin raise exception 'outcomes refused by the test'; end $$",
        "create trigger refuse_outcomes before update on images \
         for each row execute function refuse_outcomes()",
    ] {
        sqlx::query(sql)
            .execute(&conn)
            .await
            .expect("install the failure");
    }
    let n = 4;
    let id = app
        .accepted(csv_of(&images, "img", n).as_bytes(), &[])
        .await;

    tokio::time::sleep(Duration::from_secs(25)).await;
    let runs: i32 = sqlx::query_scalar(
        "select coalesce(max(attempts), 0) from apalis.jobs where job_type = 'pixbatch.images'",
    )
    .fetch_one(&conn)
    .await
    .expect("attempts");
    assert!(
        runs >= 3,
        "the jobs were not re-run: {runs}\n{}",
        app.logs()
    );
    assert_eq!(succeeded(&app, &id).await, 0, "nothing can be recorded yet");
    sqlx::query("drop trigger refuse_outcomes on images")
        .execute(&conn)
        .await
        .expect("end the failure");
    // Completed, every image succeeded and stored once.
    assert_complete_once(&app, &id, n).await;
}

/// A try delivered again after it recorded its failure (its worker killed before the
/// queue marked the job done, or the acknowledgement lost with a database crash)
/// stands down: the retry it scheduled is the image's one next try. Before, it tried
/// again, counted a second failure and scheduled a second retry beside the first:
/// two chains of tries, twice the downloads, `FETCH_ATTEMPTS` spent in half the time.
#[tokio::test]
async fn a_try_delivered_again_after_scheduling_its_retry_stands_down() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let pg = PgDatabase::create(&admin).await;
    let images = ImageServer::start().await;
    // The retry is due 10 to 20 s after the first failure: time to deliver the first
    // try again and see it stand down before the retry runs, on a busy machine too.
    let app = TestServer::start(&[
        ("DATABASE_URL", pg.url.as_str()),
        ("FETCH_ATTEMPTS", "3"),
        ("FETCH_BACKOFF_BASE", "20s"),
        ("FETCH_BACKOFF_CAP", "20s"),
    ])
    .await;
    let conn = sqlx::PgPool::connect(&pg.url)
        .await
        .expect("test's own pool");
    // Fails twice, then serves the photo.
    let path = "/flaky/2/redelivered/small_picos.jpg";
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
        images.url(path)
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let tries = || async { app.images(&id).await[0]["attempts"].as_i64().unwrap_or(0) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tries().await < 1 {
        assert!(Instant::now() < deadline, "no failed try\n{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let first_try = "select status from apalis.jobs where idempotency_key like 'image:%:try0'";
    let reopened = sqlx::query(
        "update apalis.jobs set status = 'Pending', lock_by = null, lock_at = null, \
         done_at = null, run_at = now() where idempotency_key like 'image:%:try0'",
    )
    .execute(&conn)
    .await
    .expect("deliver the first try again")
    .rows_affected();
    assert_eq!(reopened, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String = sqlx::query_scalar(first_try)
            .fetch_one(&conn)
            .await
            .expect("status");
        if status == "Done" {
            break;
        }
        assert!(Instant::now() < deadline, "{status}\n{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        images.hits(path),
        1,
        "the first try ran twice\n{}",
        app.logs()
    );
    assert_eq!(tries().await, 1);

    let status = app.wait_final(&id, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "Completed", "{status}\n{}", app.logs());
    assert_eq!(images.hits(path), 3);
    assert_eq!(tries().await, 3);
}

/// A TCP proxy in front of PostgreSQL that, once armed, cuts the connection of the
/// next upload's transaction at its `COMMIT`: pixbatch's side is closed before the
/// `COMMIT` goes on, so pixbatch has its commit answered with an error while the
/// server has yet to see it. The `COMMIT` then reaches the server after `delay`
/// (`Some`: the upload did commit, later), or never (`None`: the server aborts).
struct CommitCutter {
    addr: std::net::SocketAddr,
    armed: std::sync::Arc<std::sync::Mutex<Option<Option<Duration>>>>,
}

impl CommitCutter {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let shared = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(Self::pipe(client, server, shared.clone()));
            }
        });
        Self { addr, armed }
    }

    /// Cuts the next upload's commit; its `COMMIT` reaches the server after `delay`,
    /// or never.
    fn arm(&self, delay: Option<Duration>) {
        *self.armed.lock().unwrap() = Some(delay);
    }

    /// Whether the armed cut has happened.
    fn has_cut(&self) -> bool {
        self.armed.lock().unwrap().is_none()
    }

    /// Copies the server's bytes as they come and the client's a message at a time
    /// (the startup message, then `type, length, body`), watching for the upload.
    async fn pipe(
        client: tokio::net::TcpStream,
        server: tokio::net::TcpStream,
        armed: std::sync::Arc<std::sync::Mutex<Option<Option<Duration>>>>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let answers =
            tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
        let mut len = [0u8; 4];
        from_client.read_exact(&mut len).await?;
        let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        from_client.read_exact(&mut startup).await?;
        to_server.write_all(&len).await?;
        to_server.write_all(&startup).await?;
        let mut uploading = false;
        loop {
            let mut head = [0u8; 5];
            from_client.read_exact(&mut head).await?;
            let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; n.saturating_sub(4)];
            from_client.read_exact(&mut body).await?;
            let text = String::from_utf8_lossy(&body).to_ascii_lowercase();
            let armed_now = armed.lock().unwrap().is_some();
            uploading |= armed_now && text.contains("insert into requests");
            if uploading && head[0] == b'Q' && text.starts_with("commit") {
                let delay = armed.lock().unwrap().take().flatten();
                // pixbatch's side goes first: its commit is answered with an error.
                answers.abort();
                let _ = answers.await;
                drop(from_client);
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                    to_server.write_all(&head).await?;
                    to_server.write_all(&body).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                return Ok(());
            }
            to_server.write_all(&head).await?;
            to_server.write_all(&body).await?;
        }
    }
}

/// PostgreSQL: an upload whose commit is answered with an error is judged by what the
/// server did with its transaction, waited for while its `COMMIT` is still on the way.
/// One that committed a second after its answer was lost is accepted (202) and runs
/// with its input CSV; before, its row was looked for at once, not found, the upload
/// answered 503 and its CSV was removed, and then the request ran anyway. One whose
/// `COMMIT` never arrives is refused (503) and leaves nothing.
#[tokio::test]
async fn an_upload_whose_commit_answer_is_lost_is_judged_by_the_server() {
    let Some(admin) = postgres_url() else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .find(std::net::SocketAddr::is_ipv4)
        .unwrap();
    let cutter = CommitCutter::start(upstream).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(cutter.addr.port())).unwrap();
    url.set_query(Some("sslmode=disable"));
    let app = TestServer::start(&[("DATABASE_URL", url.as_str())]).await;
    let images = ImageServer::start().await;

    cutter.arm(Some(Duration::from_secs(1)));
    let (code, body) = app.upload(csv_of(&images, "img", 2).as_bytes(), &[]).await;
    assert!(cutter.has_cut(), "the commit was not cut");
    assert_eq!(code, 202, "{body}\n{}", app.logs());
    let id = body["request_id"].as_str().unwrap().to_owned();
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    assert!(app.uploads().join(&id).join("input.csv").is_file());

    cutter.arm(None);
    let (code, body) = app.upload(csv_of(&images, "img", 3).as_bytes(), &[]).await;
    assert!(cutter.has_cut(), "the commit was not cut");
    assert_eq!(code, 503, "{body}");
    let dirs: Vec<_> = std::fs::read_dir(app.uploads())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(dirs, [id], "a refused upload left its CSV");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (requests,): (i64,) = sqlx::query_as("select count(*) from requests")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(requests, 1, "the refused upload's request exists");
    pool.close().await;
}

/// A second SIGTERM (or Ctrl-C) stops at once, exit 130, where the first waits for the
/// work in flight: the signal handlers had replaced the default ones, and a second
/// signal did nothing until `SHUTDOWN_TIMEOUT` ran out. The image cut off is taken up
/// again by the next start.
#[tokio::test]
async fn a_second_signal_stops_at_once() {
    let images = ImageServer::start().await;
    images.set_latency(Duration::from_secs(8));
    let mut app = TestServer::start(&[("SHUTDOWN_TIMEOUT", "10s")]).await;
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
        images.url("/img/a/small_picos.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while images.total_hits() == 0 {
        assert!(Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.signal_term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = app.terminate(Duration::from_secs(5)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "still running after a second signal\n{}",
        app.logs()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    images.set_latency(Duration::ZERO);
    app.restart().await;
    let status = app.wait_final(&id, Duration::from_secs(90)).await;
    assert_eq!(status["status"], "Completed", "{status}");
}
