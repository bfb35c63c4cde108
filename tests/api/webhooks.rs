//! Webhooks people can trust: signatures, persisted retries, the delivery log.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    helpers::{Backend, ImageServer, Reply, TestServer, WebhookReceiver},
    observability::{metrics_until, sample},
};

/// Standard Webhooks verification written from the specification, independent of
/// the server's signing code: every `v1,` entry is checked against every secret.
pub fn verify(
    secret: &str,
    headers: &std::collections::HashMap<String, String>,
    body: &[u8],
) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(headers["webhook-id"].as_bytes());
    mac.update(b".");
    mac.update(headers["webhook-timestamp"].as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    headers.get("webhook-signature").is_some_and(|h| {
        h.split(' ')
            .any(|p| p.strip_prefix("v1,") == Some(&expected))
    })
}

/// Uploads one image with a webhook and waits for the request to finish.
async fn run_one(app: &TestServer, images: &ImageServer, hook_url: &str) -> String {
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url("/img/a/small_lamp_portrait.jpg")
    );
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", hook_url)])
        .await;
    app.wait_final(&id, Duration::from_secs(60)).await;
    id
}

/// The tries of the delivery log's event number `event`, oldest first.
fn tries_of(log: &serde_json::Value, event: usize) -> Vec<serde_json::Value> {
    let id = &log["events"][event]["id"];
    log["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| &a["event_id"] == id)
        .cloned()
        .collect()
}

/// Polls the delivery log until the event is no longer pending.
async fn settled_log(app: &TestServer, id: &str, timeout: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (code, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
        assert_eq!(code, 200, "{log}");
        if log["events"][0]["state"]
            .as_str()
            .is_some_and(|s| s != "pending")
        {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "event still pending: {log}\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn retried_until_delivered_with_one_id_and_a_full_log(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![500, 500, 200]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let id = run_one(&app, &images, &hook.url).await;
    let log = settled_log(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(log["events"][0]["state"], "delivered", "{log}");
    assert_eq!(log["events"][0]["attempts"], 3);
    let statuses: Vec<i64> = log["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![500, 500, 200]);
    assert!(
        log["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    let got = hook.received();
    assert_eq!(got.len(), 3);
    let ids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "one webhook-id on every try");
    assert_eq!(
        log["events"][0]["id"].as_str().unwrap(),
        got[0].headers["webhook-id"]
    );
    // The run's id, not a random one: a completion written again has the same.
    assert_eq!(
        got[0].headers["webhook-id"],
        format!("msg_{}_1", id.replace('-', ""))
    );
    for r in &got {
        assert!(verify(crate::helpers::SECRET, &r.headers, &r.body));
    }
}

async fn gone_stops_after_one_try(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![410]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let id = run_one(&app, &images, &hook.url).await;
    let log = settled_log(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(log["events"][0]["state"], "failed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.received().len(), 1);
    let (_, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
    assert_eq!(log["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(log["attempts"][0]["http_status"], 410);
}

async fn slow_receiver_times_out_after_ten_seconds_and_is_retried(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start_with(vec![Reply::Sleep(Duration::from_secs(30))]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let id = run_one(&app, &images, &hook.url).await;
    let log = settled_log(&app, &id, Duration::from_secs(40)).await;
    assert_eq!(log["events"][0]["state"], "delivered", "{log}");
    let first = &log["attempts"][0];
    assert!(first["http_status"].is_null(), "{first}");
    assert!(
        first["error"].as_str().unwrap().contains("timed out"),
        "{first}"
    );
    let ms = first["duration_ms"].as_i64().unwrap();
    assert!((9_000..20_000).contains(&ms), "{ms} ms");
    assert_eq!(log["attempts"][1]["http_status"], 200);
}

/// Receivers that never answer hold a delivery slot each until the try times out
/// (10 s). More of them than a handful must not hold every slot: the first tries of
/// eight such events are all in flight at once, where with four slots the fifth
/// started only when the first had timed out.
async fn stalling_receivers_do_not_hold_every_delivery_slot(backend: Backend) {
    const STALLING: usize = 8;
    let images = ImageServer::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let stalling =
        WebhookReceiver::start_with(vec![Reply::Held(gate.clone(), 200); STALLING]).await;
    // The requests finish together, whatever the machine's pace: their downloads
    // run side by side and each takes 2 s, longer than the uploads take.
    images.set_latency(Duration::from_secs(2));
    let Some(app) = TestServer::start_on(backend, &[("WORKER_CONCURRENCY", "8")]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url("/img/a/small_lamp_portrait.jpg")
    );
    for _ in 0..STALLING {
        app.accepted(csv.as_bytes(), &[("webhook_url", &stalling.url)])
            .await;
    }
    let held = stalling.wait_for(STALLING, Duration::from_secs(90)).await;
    assert_eq!(held.len(), STALLING, "{}", app.logs());
    let spread = held[STALLING - 1].at - held[0].at;
    assert!(
        spread < WEBHOOK_TIMEOUT,
        "the last stalled try started {spread:?} after the first: it waited for a slot\n{}",
        app.logs()
    );
    gate.notify_waiters();
}

/// How long the server waits for a webhook receiver's answer (README, Webhook).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

async fn redirects_are_not_followed(backend: Backend) {
    let images = ImageServer::start().await;
    let elsewhere = WebhookReceiver::start(vec![]).await;
    let hook = WebhookReceiver::start_with(vec![Reply::Redirect(elsewhere.url.clone())]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let id = run_one(&app, &images, &hook.url).await;
    let log = settled_log(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(log["attempts"][0]["http_status"], 302);
    assert!(log["attempts"][0]["error"].as_str().is_some());
    assert_eq!(log["events"][0]["state"], "delivered");
    assert_eq!(log["events"][0]["attempts"], 2);
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
}

/// How long ago the receiver got its first try.
fn got_first_elapsed(hook: &WebhookReceiver) -> Duration {
    hook.received()[0].at.elapsed()
}

async fn schedule_resumes_after_a_kill_between_tries(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![503]).await;
    let Some(mut app) = TestServer::start_on(backend, &[("WEBHOOK_RETRY_SCHEDULE", "15s")]).await
    else {
        return;
    };
    let id = run_one(&app, &images, &hook.url).await;
    hook.wait_for(1, Duration::from_secs(20)).await;
    // Kill between tries: once the first try is logged and the next one scheduled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
        if log["events"][0]["attempts"] == 1 {
            assert_eq!(log["events"][0]["state"], "pending", "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.kill();
    let killed_at = std::time::Instant::now();
    app.restart().await;
    let restarted_after = got_first_elapsed(&hook);
    let got = hook.wait_for(2, Duration::from_secs(40)).await;
    assert_eq!(got.len(), 2, "{}", app.logs());
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    let log = settled_log(&app, &id, Duration::from_secs(10)).await;
    assert_eq!(log["events"][0]["state"], "delivered");
    assert_eq!(log["events"][0]["attempts"], 2);
    // The second try is the schedule's, not a fresh start: it came 15 s after the
    // first, less at most the second the queue rounds a due time down to (a restart
    // that forgot the schedule would send at once, as soon as it was up), and the
    // schedule had no step left for a third.
    let gap = got[1].at - got[0].at;
    assert!(
        restarted_after < Duration::from_millis(13_900),
        "the restart took {restarted_after:?}: too slow to tell"
    );
    assert!(gap >= Duration::from_millis(13_900), "{gap:?}");
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hook.received().len(), 2);
}

async fn rotation_signs_with_every_secret_and_redeliver_keeps_the_id(backend: Backend) {
    let second = "whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHMh";
    let secrets = format!("{} {second}", crate::helpers::SECRET);
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(app) = TestServer::start_on(backend, &[("WEBHOOK_SECRET", secrets.as_str())]).await
    else {
        return;
    };
    let (code, _) = app
        .post_json("/requests/01939a00-0000-7000-8000-000000000000/webhooks/redeliver")
        .await;
    assert_eq!(code, 404);
    let id = run_one(&app, &images, &hook.url).await;
    settled_log(&app, &id, Duration::from_secs(30)).await;
    let first = hook.received();
    assert_eq!(first.len(), 1);
    let r = &first[0];
    assert_eq!(r.headers["webhook-signature"].split(' ').count(), 2);
    assert!(verify(crate::helpers::SECRET, &r.headers, &r.body));
    assert!(verify(second, &r.headers, &r.body));
    assert!(!verify(
        "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==",
        &r.headers,
        &r.body
    ));

    let (code, _) = app
        .post_json(&format!("/requests/{id}/webhooks/redeliver"))
        .await;
    assert_eq!(code, 202);
    let got = hook.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(got[0].body, got[1].body);
    let log = settled_log(&app, &id, Duration::from_secs(10)).await;
    assert_eq!(log["attempts"].as_array().unwrap().len(), 2);
}

/// `WEBHOOK_URL` gets the event of a request that names no webhook, signed as any
/// other; a request that names its own is reported there instead, and only there.
async fn webhook_url_is_the_default_target(backend: Backend) {
    let images = ImageServer::start().await;
    let default = WebhookReceiver::start(vec![]).await;
    let own = WebhookReceiver::start(vec![]).await;
    let env = [
        ("WEBHOOK_URL", default.url.as_str()),
        ("LOG_FORMAT", "json"),
    ];
    let Some(app) = TestServer::start_on(backend, &env).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,SKU1,{}\n",
        images.url("/img/a/small_lamp_portrait.jpg")
    );
    let id = app.accepted(csv.as_bytes(), &[]).await;
    app.wait_final(&id, Duration::from_secs(60)).await;
    let got = default.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["request_id"], id.as_str());
    assert_eq!(got[0].json()["status"], "Completed");
    assert!(verify(
        crate::helpers::SECRET,
        &got[0].headers,
        &got[0].body
    ));
    // The delivery's log line names the request it reports (its span's field).
    let delivered_for = |logs: String| {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|l| l["message"] == "webhook delivered" && l["span"]["request_id"] == id.as_str())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !delivered_for(app.logs()) {
        assert!(std::time::Instant::now() < deadline, "{}", app.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mine = run_one(&app, &images, &own.url).await;
    let got = own.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["request_id"], mine.as_str());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        default.received().len(),
        1,
        "the default got another's event"
    );
}

async fn unsigned_without_a_secret(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(app) = TestServer::start_on(backend, &[("WEBHOOK_SECRET", "")]).await else {
        return;
    };
    run_one(&app, &images, &hook.url).await;
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert!(!got[0].headers.contains_key("webhook-signature"));
    assert!(got[0].headers.contains_key("webhook-id"));
    assert!(app.logs().contains("WEBHOOK_SECRET is not set"));
}

/// A request of two images, one behind the image server's closed gate, finished
/// `CompletedWithErrors` with `hook` as its webhook: a retry has one image to do once
/// the gate opens.
async fn finished_with_a_failed_image(
    app: &TestServer,
    images: &ImageServer,
    hook: &WebhookReceiver,
) -> String {
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{},{}\n",
        images.url("/img/a/small_picos.jpg"),
        images.url("/gate/b/small_aitzgorri.jpg"),
    );
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "CompletedWithErrors", "{status}");
    id
}

/// A retry gives up the previous run's event while it is still being delivered: the
/// new run's event says how the request ended, and the old one, arriving hours later
/// on its schedule, would tell the receiver a stale status. Its log says why; a
/// redelivery while the retried run goes on is refused for the same reason.
async fn a_retry_supersedes_the_previous_runs_undelivered_event(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![503]).await;
    let Some(app) = TestServer::start_on(backend, &[("WEBHOOK_RETRY_SCHEDULE", "1h")]).await else {
        return;
    };
    let id = finished_with_a_failed_image(&app, &images, &hook).await;
    // The first event's first try got a 503; its next is an hour away.
    hook.wait_for(1, Duration::from_secs(20)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let (_, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
        if log["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "no try logged: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(log["events"][0]["state"], "pending", "{log}");

    images.open_gate();
    let (code, _) = app.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 202);
    let (_, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
    let first = &log["events"][0];
    assert_eq!(first["state"], "failed", "{log}");
    assert!(first["next_attempt_at"].is_null(), "{log}");
    let superseded = log["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("superseded"))
        })
        .unwrap_or_else(|| panic!("no line saying why: {log}"));
    assert_eq!(superseded["event_id"], first["id"]);
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");
    let got = hook.wait_for(2, Duration::from_secs(20)).await;
    let body: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["status"], "Completed");
    // Nothing more of the first event: a second look finds no third call.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.received().len(), 2);
}

/// The previous run's event whose first try is in flight when the retry comes (and so
/// is not given up by it): when that try fails, it is the event's last, superseded,
/// rather than the start of a schedule that would bring the receiver the old status
/// after the new run's.
async fn a_try_failing_after_a_retry_is_the_old_events_last(backend: Backend) {
    let images = ImageServer::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let hook = WebhookReceiver::start_with(vec![Reply::Held(gate.clone(), 503)]).await;
    let Some(app) = TestServer::start_on(backend, &[("WEBHOOK_RETRY_SCHEDULE", "1s")]).await else {
        return;
    };
    let id = finished_with_a_failed_image(&app, &images, &hook).await;
    // The first try is at the receiver, which answers 503 once the retry is in.
    hook.wait_for(1, Duration::from_secs(20)).await;
    images.open_gate();
    let (code, body) = app.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 202, "{body}");
    gate.notify_one();
    let status = app.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "Completed", "{status}");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let (_, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
        if log["events"][0]["state"] == "failed" && log["events"][1]["state"] == "delivered" {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tries = tries_of(&log, 0);
    assert_eq!(tries.len(), 1, "{log}");
    assert_eq!(tries[0]["http_status"], 503, "{log}");
    assert!(
        tries[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("superseded")),
        "{log}"
    );
    // With tries 1 s apart, a second look finds no further call of the first event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = hook.received();
    assert_eq!(got.len(), 2, "{} calls", got.len());
    assert_eq!(got[1].json()["status"], "Completed");
}

/// A try at the receiver when a retry gives its event up is still logged: the
/// receiver got the event, and the log says so, after the line saying it was given up.
async fn a_try_out_when_its_event_is_given_up_is_logged(backend: Backend) {
    let images = ImageServer::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let hook =
        WebhookReceiver::start_with(vec![Reply::Status(503), Reply::Held(gate.clone(), 200)]).await;
    let Some(app) = TestServer::start_on(backend, &[("WEBHOOK_RETRY_SCHEDULE", "1s")]).await else {
        return;
    };
    let id = finished_with_a_failed_image(&app, &images, &hook).await;
    // The second try is at the receiver, which answers 200 once the retry is in.
    assert_eq!(hook.wait_for(2, Duration::from_secs(20)).await.len(), 2);
    images.open_gate();
    let (code, body) = app.post_json(&format!("/requests/{id}/retry")).await;
    assert_eq!(code, 202, "{body}");
    gate.notify_one();
    app.wait_final(&id, Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (log, tries) = loop {
        let (_, log) = app.get_json(&format!("/requests/{id}/webhooks")).await;
        let tries = tries_of(&log, 0);
        if tries.len() == 3 && log["events"][1]["state"] == "delivered" {
            break (log, tries);
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(log["events"][0]["state"], "failed", "{log}");
    assert_eq!(tries[0]["http_status"], 503, "{log}");
    assert!(
        tries[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("superseded")),
        "{log}"
    );
    assert_eq!(tries[2]["http_status"], 200, "{log}");
    // Counted as delivered too: the new run's event and this one.
    let delivered = [("outcome", "delivered")];
    metrics_until(&app, |t| {
        sample(t, "pixbatch_webhook_deliveries_total", &delivered) == Some(2.0)
    })
    .await;
}

/// Redelivery is of a finished request's latest event: while a run goes on, the
/// latest event (a retried request's previous run's) no longer says how it stands.
async fn redelivery_waits_for_the_run_to_finish(backend: Backend) {
    let images = ImageServer::start().await;
    let hook = WebhookReceiver::start(vec![]).await;
    let Some(app) = TestServer::start_on(backend, &[]).await else {
        return;
    };
    let csv = format!(
        "Serial Number,Product Name,Input Image Urls\n1,A,{}\n",
        images.url("/slow/3000/a/small_picos.jpg"),
    );
    let id = app
        .accepted(csv.as_bytes(), &[("webhook_url", &hook.url)])
        .await;
    let (code, body) = app
        .post_json(&format!("/requests/{id}/webhooks/redeliver"))
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("when the run finishes"),
        "{body}"
    );
    app.wait_final(&id, Duration::from_secs(60)).await;
    hook.wait_for(1, Duration::from_secs(20)).await;
    let (code, body) = app
        .post_json(&format!("/requests/{id}/webhooks/redeliver"))
        .await;
    assert_eq!(code, 202, "{body}");
}

crate::on_both_backends!(
    webhook_url_is_the_default_target,
    a_retry_supersedes_the_previous_runs_undelivered_event,
    a_try_failing_after_a_retry_is_the_old_events_last,
    a_try_out_when_its_event_is_given_up_is_logged,
    redelivery_waits_for_the_run_to_finish,
    retried_until_delivered_with_one_id_and_a_full_log,
    gone_stops_after_one_try,
    slow_receiver_times_out_after_ten_seconds_and_is_retried,
    redirects_are_not_followed,
    stalling_receivers_do_not_hold_every_delivery_slot,
    schedule_resumes_after_a_kill_between_tries,
    rotation_signs_with_every_secret_and_redeliver_keeps_the_id,
    unsigned_without_a_secret,
);
