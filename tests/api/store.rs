//! The store's fan-in, retry, cancel and finalisation, called directly on a real SQLite
//! file and a real PostgreSQL database: exact counters, states and answers, including
//! the redeliveries and late finishes that the guarded updates exist for.

use pixbatch::{
    domain::{
        EventId, EventState, Failure, FailureCode, ImageRef, ImageState, RequestId, RequestStatus,
    },
    imaging::Quality,
    store::{
        DEAD_ROWS, Db, FinishedBatch, ImageFinish, ImageOutcomeUpdate, ImageRecord, NewImage,
        NewProduct, NewRequest, RequestRecord, SourceFacts,
    },
};

use crate::helpers::{Backend, TestDb};

/// Stores a request whose rows hold these URLs (one image per URL, in order).
async fn insert(db: &Db, rows: &[&[&str]]) -> RequestId {
    let id = RequestId::new();
    let req = NewRequest {
        id,
        quality: Quality::parse("50").unwrap(),
        max_bytes: None,
        webhook_url: None,
        header: ["S. No.", "Product Name", "Input Image Urls"]
            .map(str::to_owned)
            .to_vec(),
        urls_column: 2,
        input_key: format!("inputs/{id}.csv"),
        reuse: false,
        bom: false,
    };
    let cells: Vec<(Vec<String>, String)> = rows
        .iter()
        .enumerate()
        .map(|(r, urls)| {
            let c = vec![(r + 1).to_string(), format!("Product {r}"), urls.join(",")];
            let json = serde_json::to_string(&c).unwrap();
            (c, json)
        })
        .collect();
    let products: Vec<NewProduct<'_>> = cells
        .iter()
        .enumerate()
        .map(|(r, (c, json))| NewProduct {
            row: r as u32,
            line: r as u64 + 2,
            serial: &c[0],
            product_name: &c[1],
            cells_json: json,
        })
        .collect();
    let images: Vec<NewImage<'_>> = rows
        .iter()
        .enumerate()
        .flat_map(|(r, urls)| {
            urls.iter().enumerate().map(move |(p, url)| NewImage {
                row: r as u32,
                position: p as u32,
                url,
            })
        })
        .collect();
    let mut tx = db.begin_write().await.unwrap();
    Db::insert_request(&mut tx, &req, &products, &images)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

fn stored(reused_from: Option<RequestId>) -> ImageOutcomeUpdate {
    ImageOutcomeUpdate::Succeeded {
        input_bytes: 1000,
        output_bytes: 400,
        width: 64,
        height: 48,
        report: serde_json::json!({"quality": 50}),
        reused_from,
        source: None,
    }
}

fn failed(error: &str) -> ImageOutcomeUpdate {
    ImageOutcomeUpdate::Failed(Failure::new(FailureCode::Undecodable, error))
}

/// An outcome of a job of the request's first run.
fn item(id: RequestId, targets: &[(u32, u32)], outcome: ImageOutcomeUpdate) -> ImageFinish {
    item_in(1, id, targets, outcome)
}

fn item_in(
    run: i64,
    id: RequestId,
    targets: &[(u32, u32)],
    outcome: ImageOutcomeUpdate,
) -> ImageFinish {
    ImageFinish {
        request_id: id,
        targets: targets.to_vec(),
        run,
        outcome,
    }
}

/// Records a batch of outcomes in a transaction of its own.
async fn finish(db: &Db, items: &[ImageFinish]) -> FinishedBatch {
    let mut tx = db.begin_write().await.unwrap();
    let done = Db::finish_image_batch(&mut tx, items).await.unwrap();
    tx.commit().await.unwrap();
    done
}

async fn request(db: &Db, id: RequestId) -> RequestRecord {
    db.request(id).await.unwrap().expect("request exists")
}

/// `(succeeded, failed, remaining)`.
async fn counters(db: &Db, id: RequestId) -> (i64, i64, i64) {
    let r = request(db, id).await;
    (r.succeeded, r.failed, r.remaining)
}

async fn images(db: &Db, id: RequestId) -> Vec<ImageRecord> {
    db.images(id, 0, 1000).await.unwrap()
}

async fn states(db: &Db, id: RequestId) -> Vec<ImageState> {
    images(db, id).await.into_iter().map(|i| i.state).collect()
}

/// Records a failed try of image (`row`, `position`) of the first run made with
/// `tries_before` tries counted.
async fn record_retry(
    db: &Db,
    id: RequestId,
    image: (u32, u32),
    tries_before: u32,
    error: &str,
) -> bool {
    record_retry_in(1, db, id, image, tries_before, error).await
}

async fn record_retry_in(
    run: i64,
    db: &Db,
    id: RequestId,
    image: (u32, u32),
    tries_before: u32,
    error: &str,
) -> bool {
    let failure = Failure::new(FailureCode::ConnectFailed, error);
    record_failure_in(run, db, id, image, tries_before, &failure, false).await
}

async fn record_failure_in(
    run: i64,
    db: &Db,
    id: RequestId,
    (row, position): (u32, u32),
    tries_before: u32,
    failure: &Failure,
    waited_for_store: bool,
) -> bool {
    let mut tx = db.begin_write().await.unwrap();
    let image = ImageRef {
        request: id,
        row,
        position,
    };
    let counted = Db::record_retry(&mut tx, image, run, tries_before, failure, waited_for_store)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counted
}

async fn retry_failed(db: &Db, id: RequestId) -> Option<(i64, Vec<(u32, u32, String)>)> {
    let mut tx = db.begin_write().await.unwrap();
    let retried = Db::retry_failed(&mut tx, id).await.unwrap();
    tx.commit().await.unwrap();
    retried
}

/// The cancelled run and how many images it stopped.
async fn cancel(db: &Db, id: RequestId) -> Option<(i64, u64)> {
    let mut tx = db.begin_write().await.unwrap();
    let cancelled = Db::cancel(&mut tx, id).await.unwrap();
    tx.commit().await.unwrap();
    cancelled
}

async fn finalize(db: &Db, id: RequestId, run: i64) -> Option<RequestRecord> {
    let mut tx = db.begin_write().await.unwrap();
    let key = format!("outputs/{id}/{run}.csv");
    let done = Db::finalize_request(&mut tx, id, run, &key).await.unwrap();
    tx.commit().await.unwrap();
    done
}

async fn finalize_cancelled(db: &Db, id: RequestId, run: i64) -> Option<RequestRecord> {
    let mut tx = db.begin_write().await.unwrap();
    let key = format!("outputs/{id}/{run}.csv");
    let done = Db::finalize_cancelled(&mut tx, id, run, &key)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    done
}

/// Each image moves the counters once; the decrement that reaches zero is reported
/// once; a redelivered finish records nothing and changes nothing.
async fn finish_counts_each_image_once(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = insert(db, &[&["http://x/a", "http://x/b"], &["http://x/c"]]).await;
    let r = request(db, id).await;
    assert_eq!(
        (r.status, r.total, r.run, r.reused),
        (RequestStatus::Pending, 3, 1, 0)
    );
    assert_eq!(counters(db, id).await, (0, 0, 3));

    let done = finish(db, &[item(id, &[(0, 0)], stored(None))]).await;
    assert_eq!(done.recorded, [true]);
    assert!(done.last_of_run.is_empty());
    assert_eq!(counters(db, id).await, (1, 0, 2));

    // The same job delivered again: nothing recorded, nothing counted.
    let done = finish(db, &[item(id, &[(0, 0)], failed("late"))]).await;
    assert_eq!(
        done,
        FinishedBatch {
            recorded: vec![false],
            last_of_run: vec![],
        }
    );
    assert_eq!(counters(db, id).await, (1, 0, 2));
    let imgs = images(db, id).await;
    let first = &imgs[0];
    assert_eq!(
        (first.state, first.attempts, first.last_error.as_deref()),
        (ImageState::Succeeded, 1, None)
    );

    // The last two in one batch, one of them twice: the run ends once.
    let done = finish(
        db,
        &[
            item(id, &[(0, 1)], failed("404 Not Found")),
            item(id, &[(1, 0)], stored(None)),
            item(id, &[(1, 0)], stored(None)),
        ],
    )
    .await;
    assert_eq!(done.recorded, [true, true, false]);
    assert_eq!(done.last_of_run, [(id, 1)]);
    assert_eq!(counters(db, id).await, (2, 1, 0));

    // Redelivered after the run ended: remaining stays at zero, nothing is reported.
    let done = finish(
        db,
        &[
            item(id, &[(0, 1)], failed("404 Not Found")),
            item(id, &[(1, 0)], stored(None)),
        ],
    )
    .await;
    assert_eq!(done.recorded, [false, false]);
    assert!(done.last_of_run.is_empty());
    assert_eq!(counters(db, id).await, (2, 1, 0));

    let imgs = images(db, id).await;
    assert_eq!(
        imgs.iter().map(|i| i.state).collect::<Vec<_>>(),
        [
            ImageState::Succeeded,
            ImageState::Failed,
            ImageState::Succeeded
        ]
    );
    assert_eq!(imgs[1].last_error.as_deref(), Some("404 Not Found"));
    assert_eq!(imgs[1].output_key, None);
    for i in [&imgs[0], &imgs[2]] {
        assert_eq!(i.attempts, 1);
        assert_eq!(
            (i.input_bytes, i.output_bytes, i.width, i.height),
            (Some(1000), Some(400), Some(64), Some(48))
        );
        assert!(i.output_key.is_some(), "{i:?}");
    }
    assert_ne!(imgs[0].output_key, imgs[2].output_key);
}

/// One batch over several requests: each request's counters move by its own items,
/// and every request whose run the batch ends is reported once, whatever the order
/// of the items.
async fn one_batch_ends_several_runs(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let a = insert(db, &[&["http://x/1", "http://x/2"]]).await;
    let b = insert(db, &[&["http://x/1"]]).await;
    let c = insert(db, &[&["http://x/1", "http://x/2"]]).await;
    let done = finish(
        db,
        &[
            item(c, &[(0, 0)], stored(None)),
            item(a, &[(0, 1)], failed("timeout")),
            item(b, &[(0, 0)], stored(None)),
            item(a, &[(0, 0)], stored(None)),
        ],
    )
    .await;
    assert_eq!(done.recorded, [true, true, true, true]);
    let mut ended = done.last_of_run.clone();
    ended.sort();
    let mut expected = vec![(a, 1), (b, 1)];
    expected.sort();
    assert_eq!(ended, expected);
    assert_eq!(counters(db, a).await, (1, 1, 0));
    assert_eq!(counters(db, b).await, (1, 0, 0));
    assert_eq!(counters(db, c).await, (1, 0, 1));
}

/// Images of one request with one URL share the outcome of the job that fetched it:
/// all move together, each counted once, the reused counter with them.
async fn duplicate_targets_finish_together(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = insert(
        db,
        &[&["http://x/same", "http://x/other"], &["http://x/same"]],
    )
    .await;
    assert_eq!(
        db.duplicates_of(id, 0, 0, "http://x/same").await.unwrap(),
        [(1, 0)]
    );
    let done = finish(db, &[item(id, &[(0, 0), (1, 0)], failed("403 Forbidden"))]).await;
    assert_eq!(done.recorded, [true]);
    assert!(done.last_of_run.is_empty());
    assert_eq!(counters(db, id).await, (0, 2, 1));
    let imgs = images(db, id).await;
    for i in [&imgs[0], &imgs[2]] {
        assert_eq!(
            (i.state, i.attempts, i.last_error.as_deref()),
            (ImageState::Failed, 1, Some("403 Forbidden"))
        );
    }
    assert_eq!(imgs[1].state, ImageState::Pending);
    assert!(
        db.duplicates_of(id, 0, 0, "http://x/same")
            .await
            .unwrap()
            .is_empty()
    );
    // The duplicate's own job, delivered later, finds it finished.
    let done = finish(db, &[item(id, &[(1, 0)], stored(None))]).await;
    assert_eq!(done.recorded, [false]);
    assert_eq!(counters(db, id).await, (0, 2, 1));

    // A duplicate that its own job already finished is not counted twice; a reused
    // output counts as reused for every image it fills.
    let earlier = insert(db, &[&["http://x/w"]]).await;
    let id = insert(db, &[&["http://x/w"], &["http://x/w"], &["http://x/w"]]).await;
    let done = finish(db, &[item(id, &[(2, 0)], stored(Some(earlier)))]).await;
    assert_eq!(done.recorded, [true]);
    assert_eq!(counters(db, id).await, (1, 0, 2));
    let done = finish(
        db,
        &[item(id, &[(0, 0), (1, 0), (2, 0)], stored(Some(earlier)))],
    )
    .await;
    assert_eq!(done.recorded, [true]);
    assert_eq!(done.last_of_run, [(id, 1)]);
    assert_eq!(counters(db, id).await, (3, 0, 0));
    assert_eq!(request(db, id).await.reused, 3);
    for i in images(db, id).await {
        assert_eq!(
            (i.state, i.attempts, i.reused_from),
            (ImageState::Succeeded, 1, Some(earlier))
        );
    }
}

/// A try to be repeated counts an attempt and keeps its error while the image is
/// pending with the count the try started from, and is refused once it is not: a
/// second delivery of a try already counted schedules nothing.
async fn record_retry_counts_pending_tries(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = insert(db, &[&["http://x/a", "http://x/b"]]).await;
    assert!(record_retry(db, id, (0, 0), 0, "connection reset").await);
    assert!(!record_retry(db, id, (0, 0), 0, "the same try again").await);
    assert!(record_retry(db, id, (0, 0), 1, "503 Service Unavailable").await);
    let imgs = images(db, id).await;
    assert_eq!(
        (
            imgs[0].state,
            imgs[0].attempts,
            imgs[0].last_error.as_deref()
        ),
        (ImageState::Pending, 2, Some("503 Service Unavailable"))
    );
    assert_eq!(imgs[0].error_code, Some(FailureCode::ConnectFailed));
    assert_eq!((imgs[1].attempts, imgs[1].last_error.as_deref()), (0, None));
    assert_eq!(imgs[1].error_code, None);
    assert_eq!(counters(db, id).await, (0, 0, 2));

    let done = finish(db, &[item(id, &[(0, 0)], failed("gave up after 3 tries"))]).await;
    assert_eq!(done.recorded, [true]);
    assert!(!record_retry(db, id, (0, 0), 2, "late").await);
    let imgs = images(db, id).await;
    let first = &imgs[0];
    assert_eq!(
        (first.state, first.attempts, first.last_error.as_deref()),
        (ImageState::Failed, 3, Some("gave up after 3 tries"))
    );
    assert_eq!(first.error_code, Some(FailureCode::Undecodable));
    assert_eq!(counters(db, id).await, (0, 1, 1));
    // No such image.
    assert!(!record_retry(db, id, (5, 0), 0, "nowhere").await);
}

/// Retry reopens exactly the failed images of a finished run, in a new run; the old
/// run's late finishes and completion change nothing.
async fn retry_failed_starts_a_new_run(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = insert(db, &[&["http://x/a", "http://x/b"], &["http://x/c"]]).await;
    assert_eq!(retry_failed(db, id).await, None, "pending");
    finish(
        db,
        &[
            item(id, &[(0, 0)], stored(None)),
            item(id, &[(0, 1)], failed("404")),
        ],
    )
    .await;
    assert_eq!(retry_failed(db, id).await, None, "still running");
    let done = finish(db, &[item(id, &[(1, 0)], failed("timeout"))]).await;
    assert_eq!(done.last_of_run, [(id, 1)]);
    assert_eq!(retry_failed(db, id).await, None, "not finalised yet");
    assert_eq!(
        finalize(db, id, 1).await.unwrap().status,
        RequestStatus::CompletedWithErrors
    );

    let (run, reopened) = retry_failed(db, id).await.expect("retried");
    assert_eq!(run, 2);
    assert_eq!(
        reopened,
        [
            (0, 1, "http://x/b".to_owned()),
            (1, 0, "http://x/c".to_owned())
        ]
    );
    let r = request(db, id).await;
    assert_eq!(
        (r.status, r.run, r.succeeded, r.failed, r.remaining),
        (RequestStatus::Processing, 2, 1, 0, 2)
    );
    assert_eq!((r.output_key, r.finished_at), (None, None));
    let imgs = images(db, id).await;
    assert_eq!(
        imgs.iter()
            .map(|i| (i.state, i.attempts))
            .collect::<Vec<_>>(),
        [
            (ImageState::Succeeded, 1),
            (ImageState::Pending, 0),
            (ImageState::Pending, 0)
        ]
    );
    assert_eq!(retry_failed(db, id).await, None, "the new run is running");

    // The old run, late: a redelivered finish and its completion.
    let done = finish(db, &[item(id, &[(0, 0)], failed("late"))]).await;
    assert_eq!(done.recorded, [false]);
    assert_eq!(counters(db, id).await, (1, 0, 2));
    assert!(finalize(db, id, 1).await.is_none());
    assert_eq!(request(db, id).await.status, RequestStatus::Processing);
    // A try of the old run still going when the retry started, on an image the new
    // run reopened: its failure is not counted as the new run's (which would make the
    // new run's first job stand down as stale and strand the image), nor its outcome
    // recorded as the new run's.
    assert!(!record_retry_in(1, db, id, (0, 1), 0, "late timeout").await);
    let done = finish(db, &[item_in(1, id, &[(0, 1)], stored(None))]).await;
    assert_eq!(done.recorded, [false]);
    assert_eq!(counters(db, id).await, (1, 0, 2));
    let imgs = images(db, id).await;
    assert_eq!((imgs[1].state, imgs[1].attempts), (ImageState::Pending, 0));
    // The new run's own try counts.
    assert!(record_retry_in(2, db, id, (0, 1), 0, "timeout").await);
    assert_eq!(images(db, id).await[1].attempts, 1);

    let done = finish(
        db,
        &[
            item_in(2, id, &[(0, 1)], stored(None)),
            item_in(2, id, &[(1, 0)], failed("timeout again")),
        ],
    )
    .await;
    assert_eq!(done.last_of_run, [(id, 2)]);
    assert_eq!(counters(db, id).await, (2, 1, 0));
    let r = finalize(db, id, 2).await.unwrap();
    assert_eq!((r.status, r.run), (RequestStatus::CompletedWithErrors, 2));
    assert_eq!(
        retry_failed(db, id).await,
        Some((3, vec![(1, 0, "http://x/c".to_owned())]))
    );

    // Every image failed: retried too.
    let all_failed = insert(db, &[&["http://x/d"]]).await;
    finish(db, &[item(all_failed, &[(0, 0)], failed("404"))]).await;
    assert_eq!(
        finalize(db, all_failed, 1).await.unwrap().status,
        RequestStatus::Failed
    );
    assert_eq!(
        retry_failed(db, all_failed).await,
        Some((2, vec![(0, 0, "http://x/d".to_owned())]))
    );
    assert_eq!(counters(db, all_failed).await, (0, 0, 1));

    // Nothing failed: nothing to retry.
    let clean = insert(db, &[&["http://x/e"]]).await;
    finish(db, &[item(clean, &[(0, 0)], stored(None))]).await;
    finalize(db, clean, 1).await.unwrap();
    assert_eq!(retry_failed(db, clean).await, None);
    assert_eq!(request(db, clean).await.run, 1);

    // Cancelled with a failed image: not retried.
    let cancelled = insert(db, &[&["http://x/f", "http://x/g"]]).await;
    finish(db, &[item(cancelled, &[(0, 0)], failed("404"))]).await;
    cancel(db, cancelled).await.unwrap();
    assert_eq!(retry_failed(db, cancelled).await, None);
    assert_eq!(request(db, cancelled).await.run, 1);
}

/// A request of two images, one stored and one failed (so that a retry has work).
async fn one_stored_one_failed(db: &Db) -> RequestId {
    let id = insert(db, &[&["http://x/a", "http://x/b"]]).await;
    finish(
        db,
        &[
            item(id, &[(0, 0)], stored(None)),
            item(id, &[(0, 1)], failed("404")),
        ],
    )
    .await;
    id
}

/// Finalises `run` of the request and writes its webhook event, as a completion does.
async fn finalize_with_event(db: &Db, id: RequestId, run: i64) -> EventId {
    let event = EventId::of_run(id, run);
    let mut tx = db.begin_write().await.unwrap();
    let key = format!("outputs/{id}/{run}.csv");
    assert!(
        Db::finalize_request(&mut tx, id, run, &key)
            .await
            .unwrap()
            .is_some()
    );
    Db::insert_event(&mut tx, &event, id, run, "http://hook", "{}")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    event
}

/// An event belongs to the run that wrote it: once the request is retried, it is not
/// redelivered, and its failing tries learn of the newer run.
async fn an_event_is_of_its_run(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = one_stored_one_failed(db).await;
    let event = &finalize_with_event(db, id, 1).await;
    let redeliver = || async {
        let mut tx = db.begin_write().await.unwrap();
        let again = Db::redeliver(&mut tx, event).await.unwrap();
        tx.commit().await.unwrap();
        again
    };
    let deliver = |tries: i64| async move {
        let mut tx = db.begin_write().await.unwrap();
        let newer = Db::newer_run(&mut tx, event).await.unwrap();
        let logged = Db::record_delivery(
            &mut tx,
            event,
            tries,
            Some(200),
            None,
            1,
            EventState::Delivered,
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(logged);
        newer
    };
    assert_eq!(redeliver().await, None, "pending: its first try is queued");
    assert_eq!(deliver(0).await, None);
    assert_eq!(redeliver().await, Some(1));
    assert_eq!(deliver(1).await, None);

    assert_eq!(retry_failed(db, id).await.map(|(run, _)| run), Some(2));
    assert_eq!(redeliver().await, None, "the request moved on");
    // Delivered already: nothing for the newer run to give up (a pending one's last try
    // says it was superseded: `webhooks::a_try_failing_after_a_retry_is_the_old_events_last`).
    let mut tx = db.begin_write().await.unwrap();
    assert_eq!(Db::newer_run(&mut tx, event).await.unwrap(), None);
    tx.commit().await.unwrap();
}

/// An event whose first try waited while a retry's run finished with an event of its
/// own is given up before it is sent (its log says why), and the latest event is the
/// latest run's however the workers' clocks stamped them.
async fn an_event_outrun_by_a_newer_runs_event_is_given_up(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = one_stored_one_failed(db).await;
    let first = finalize_with_event(db, id, 1).await;
    assert_eq!(db.newer_event_run(&first).await.unwrap(), None);
    assert_eq!(retry_failed(db, id).await.map(|(run, _)| run), Some(2));
    // Not yet: the new run has no event, and the old one goes out ahead of it.
    assert_eq!(db.newer_event_run(&first).await.unwrap(), None);
    finish(db, &[item_in(2, id, &[(0, 1)], stored(None))]).await;
    let second = finalize_with_event(db, id, 2).await;
    // The first event's worker had a clock five minutes fast.
    let later = chrono::Utc::now() + chrono::Duration::minutes(5);
    let sql = "update webhook_events set created_at = $1 where id = $2";
    match db.pool() {
        pixbatch::store::Pool::Sqlite(p) => {
            let q = sqlx::query(sql).bind(later).bind(first.as_str());
            q.execute(p).await.map(|_| ())
        }
        pixbatch::store::Pool::Postgres(p) => {
            let q = sqlx::query(sql).bind(later).bind(first.as_str());
            q.execute(p).await.map(|_| ())
        }
    }
    .unwrap();
    let events = db.events_of(id).await.unwrap();
    assert_eq!(
        events.last().unwrap().id,
        second,
        "the latest run's is the latest"
    );

    assert_eq!(db.newer_event_run(&first).await.unwrap(), Some(2));
    assert_eq!(db.newer_event_run(&second).await.unwrap(), None);
    let give_up = |tries: i64| {
        let first = first.clone();
        async move {
            let mut tx = db.begin_write().await.unwrap();
            let done = Db::give_up_event(&mut tx, &first, tries, "superseded")
                .await
                .unwrap();
            tx.commit().await.unwrap();
            done
        }
    };
    assert!(!give_up(1).await, "a try the event has not reached");
    assert!(give_up(0).await);
    assert!(!give_up(0).await, "given up once");
    let events = db.events_of(id).await.unwrap();
    let old = events.iter().find(|e| e.id == first).unwrap();
    assert_eq!((old.state, old.attempts), (EventState::Failed, 0));
    let log = db.attempts_of(id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event_id, first);
    assert_eq!(log[0].error.as_deref(), Some("superseded"));
    assert_eq!(log[0].http_status, None);
}

/// A run whose every image has finished has its completion queued: a cancel then has
/// nothing to stop, and would turn a run that did all its work `Cancelled`.
async fn cancel_finds_nothing_to_stop_once_every_image_finished(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = insert(db, &[&["http://x/a", "http://x/b"]]).await;
    let done = finish(
        db,
        &[
            item(id, &[(0, 0)], stored(None)),
            item(id, &[(0, 1)], failed("404")),
        ],
    )
    .await;
    assert_eq!(done.last_of_run.len(), 1, "{done:?}");
    let before = request(db, id).await;
    assert!(
        !before.status.is_final() && before.remaining == 0,
        "{before:?}"
    );
    assert_eq!(cancel(db, id).await, None);
    let r = request(db, id).await;
    assert_eq!((r.status, r.succeeded, r.failed), (before.status, 1, 1));
}

/// Cancel stops what is pending and only that; late finishes of cancelled images
/// record nothing, and the cancelled run's output is recorded once.
async fn cancel_stops_pending_images(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = insert(db, &[&["http://x/a", "http://x/b"], &["http://x/c"]]).await;
    finish(
        db,
        &[
            item(id, &[(0, 0)], stored(None)),
            item(id, &[(0, 1)], failed("404")),
        ],
    )
    .await;
    assert_eq!(cancel(db, id).await, Some((1, 1)));
    let r = request(db, id).await;
    assert_eq!(
        (r.status, r.succeeded, r.failed, r.remaining),
        (RequestStatus::Cancelled, 1, 1, 0)
    );
    assert!(r.finished_at.is_some());
    assert_eq!(r.output_key, None);
    assert_eq!(
        states(db, id).await,
        [
            ImageState::Succeeded,
            ImageState::Failed,
            ImageState::Cancelled
        ]
    );
    assert_eq!(cancel(db, id).await, None, "already cancelled");

    // The job that was working on the cancelled image finishes late.
    let done = finish(db, &[item(id, &[(1, 0)], stored(None))]).await;
    assert_eq!(
        done,
        FinishedBatch {
            recorded: vec![false],
            last_of_run: vec![],
        }
    );
    assert!(!record_retry(db, id, (1, 0), 0, "late").await);
    assert_eq!(counters(db, id).await, (1, 1, 0));
    assert_eq!(states(db, id).await[2], ImageState::Cancelled);
    assert!(finalize(db, id, 1).await.is_none(), "not a completion");

    assert!(finalize_cancelled(db, id, 2).await.is_none(), "wrong run");
    let r = finalize_cancelled(db, id, 1).await.expect("first time");
    assert_eq!(r.status, RequestStatus::Cancelled);
    assert_eq!(r.output_key, Some(format!("outputs/{id}/1.csv")));
    assert!(finalize_cancelled(db, id, 1).await.is_none(), "second time");

    // A finished request is not cancelled, nor finalised as cancelled.
    let done_id = insert(db, &[&["http://x/d"]]).await;
    finish(db, &[item(done_id, &[(0, 0)], stored(None))]).await;
    finalize(db, done_id, 1).await.unwrap();
    assert_eq!(cancel(db, done_id).await, None);
    assert_eq!(request(db, done_id).await.status, RequestStatus::Completed);
    assert!(finalize_cancelled(db, done_id, 1).await.is_none());

    // One that never started is.
    let fresh = insert(db, &[&["http://x/e"]]).await;
    assert_eq!(cancel(db, fresh).await, Some((1, 1)));
    assert_eq!(states(db, fresh).await, [ImageState::Cancelled]);
    assert_eq!(counters(db, fresh).await, (0, 0, 0));
}

/// A run is finalised once, when nothing of it remains, with the status its counts
/// give; a redelivered completion gets `None`.
async fn finalize_request_once_per_run(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let cases: [(&[bool], RequestStatus); 3] = [
        (&[true, true], RequestStatus::Completed),
        (&[true, false], RequestStatus::CompletedWithErrors),
        (&[false, false], RequestStatus::Failed),
    ];
    let unfinished = insert(db, &[&["http://x/a"], &["http://x/b"]]).await;
    finish(db, &[item(unfinished, &[(0, 0)], stored(None))]).await;
    assert!(
        finalize(db, unfinished, 1).await.is_none(),
        "an image remains"
    );
    assert_eq!(request(db, unfinished).await.status, RequestStatus::Pending);

    for (outcomes, status) in cases {
        let id = insert(db, &[&["http://x/a"], &["http://x/b"]]).await;
        let items: Vec<ImageFinish> = outcomes
            .iter()
            .enumerate()
            .map(|(row, &ok)| {
                let outcome = if ok { stored(None) } else { failed("404") };
                item(id, &[(row as u32, 0)], outcome)
            })
            .collect();
        assert_eq!(finish(db, &items).await.last_of_run, [(id, 1)]);
        assert!(finalize(db, id, 2).await.is_none(), "no such run");
        let r = finalize(db, id, 1).await.expect("first completion");
        assert_eq!(r.status, status);
        assert_eq!(r.output_key, Some(format!("outputs/{id}/1.csv")));
        assert!(r.finished_at.is_some());
        let succeeded = outcomes.iter().filter(|&&ok| ok).count() as i64;
        assert_eq!(
            (r.succeeded, r.failed, r.remaining),
            (succeeded, 2 - succeeded, 0)
        );
        assert!(
            finalize(db, id, 1).await.is_none(),
            "redelivered completion"
        );
        assert_eq!(request(db, id).await.status, status);
    }
}

/// The housekeeping vacuum: a hot table with more than `DEAD_ROWS` dead row versions
/// is vacuumed (and then has none), a clean one is left alone; SQLite has nothing to do.
async fn tidy_vacuums_tables_full_of_dead_rows(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let count = usize::try_from(DEAD_ROWS).unwrap() + 2_000;
    let urls: Vec<String> = (0..count).map(|i| format!("http://x/{i}")).collect();
    let rows: Vec<[&str; 1]> = urls.iter().map(|u| [u.as_str()]).collect();
    let rows: Vec<&[&str]> = rows.iter().map(|r| &r[..]).collect();
    let id = insert(db, &rows).await;
    // Cancelling rewrites every pending image: one dead version each.
    assert_eq!(cancel(db, id).await, Some((1, count as u64)));
    if backend == Backend::Sqlite {
        assert_eq!(db.tidy().await.unwrap(), []);
        return;
    }
    // PostgreSQL's statistics reach the counters within about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let vacuumed = loop {
        let done = db.tidy().await.unwrap();
        if let Some(v) = done.iter().find(|v| v.table == "images") {
            break v.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "images never vacuumed: {done:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(vacuumed.dead_rows >= DEAD_ROWS, "{vacuumed:?}");
    let again = db.tidy().await.unwrap();
    assert!(
        again.iter().all(|v| v.table != "images"),
        "vacuumed twice: {again:?}"
    );
    // The vacuum changed no data.
    assert_eq!(request(db, id).await.status, RequestStatus::Cancelled);
}

/// A job of a test queue with this idempotency key, due now.
fn test_job(key: &str) -> pixbatch::store::NewJob {
    pixbatch::store::NewJob {
        args: b"{}".to_vec(),
        idempotency_key: key.to_owned(),
        run_at: std::time::SystemTime::now(),
        max_attempts: 3,
    }
}

/// The first column of every row `sqlite` or `postgres` selects, whichever the
/// backend, sorted.
async fn sorted_strings(db: &Db, sqlite: &'static str, postgres: &'static str) -> Vec<String> {
    use pixbatch::store::Pool;
    let mut all: Vec<String> = match db.pool() {
        Pool::Sqlite(p) => sqlx::query_scalar(sqlite).fetch_all(p).await.unwrap(),
        Pool::Postgres(p) => sqlx::query_scalar(postgres).fetch_all(p).await.unwrap(),
    };
    all.sort();
    all
}

/// Finished jobs older than the retention go, a batch per call; younger ones, jobs
/// still to run and jobs that gave up stay.
async fn purge_deletes_only_jobs_done_before_the_retention(backend: Backend) {
    use pixbatch::store::{NewJob, PURGE_BATCH, Pool};
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let old = usize::try_from(PURGE_BATCH).unwrap() + 5;
    let mut jobs: Vec<NewJob> = (0..old).map(|i| test_job(&format!("old-{i}"))).collect();
    jobs.extend(["recent", "pending", "gave-up"].map(test_job));
    let mut tx = db.begin_write().await.unwrap();
    Db::push_jobs(&mut tx, "pixbatch.test", &jobs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // (status, seconds since it finished, keys)
    let set = |status: &'static str, ago: i64, like: &'static str| async move {
        match db.pool() {
            Pool::Sqlite(p) => sqlx::query(
                "update Jobs set status = ?1, attempts = max_attempts,
                        done_at = strftime('%s', 'now') - ?2
                  where idempotency_key like ?3",
            )
            .bind(status)
            .bind(ago)
            .bind(like)
            .execute(p)
            .await
            .map(drop)
            .unwrap(),
            Pool::Postgres(p) => sqlx::query(
                "update apalis.jobs set status = $1, attempts = max_attempts,
                        done_at = now() - make_interval(secs => $2)
                  where idempotency_key like $3",
            )
            .bind(status)
            .bind(ago as f64)
            .bind(like)
            .execute(p)
            .await
            .map(drop)
            .unwrap(),
        };
    };
    set("Done", 2 * 3600, "old-%").await;
    set("Done", 600, "recent").await;
    set("Failed", 2 * 3600, "gave-up").await;
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(
        db.purge_done_jobs(hour).await.unwrap(),
        PURGE_BATCH as u64,
        "one batch per call"
    );
    assert_eq!(db.purge_done_jobs(hour).await.unwrap(), 5);
    assert_eq!(db.purge_done_jobs(hour).await.unwrap(), 0);
    let left = sorted_strings(
        db,
        "select idempotency_key from Jobs",
        "select idempotency_key from apalis.jobs",
    )
    .await;
    assert_eq!(left, ["gave-up", "pending", "recent"]);
}

/// Workers not seen for the retention go, unless a job names them: one they hold
/// (apalis hands it back through the worker's row) or a finished one (the jobs
/// table's foreign key would refuse the delete, failing every purge); recent ones stay.
async fn stale_workers_go_unless_they_hold_a_job(backend: Backend) {
    use pixbatch::store::Pool;
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let mut tx = db.begin_write().await.unwrap();
    Db::push_jobs(
        &mut tx,
        "pixbatch.test",
        &[test_job("held"), test_job("done")],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let workers = [
        ("old-idle", 7200),
        ("old-busy", 7200),
        ("old-done", 7200),
        ("recent", 600),
    ];
    match db.pool() {
        Pool::Sqlite(p) => {
            for (id, ago) in workers {
                sqlx::query(
                    "insert into Workers (id, worker_type, storage_name, layers, last_seen)
                     values (?1, 'pixbatch.test', 'test', '', strftime('%s', 'now') - ?2)",
                )
                .bind(id)
                .bind(ago)
                .execute(p)
                .await
                .unwrap();
            }
            for sql in [
                "update Jobs set status = 'Done', lock_by = 'old-done'",
                "update Jobs set status = 'Running', lock_by = 'old-busy'
                  where id = (select min(id) from Jobs)",
            ] {
                sqlx::query(sql).execute(p).await.unwrap();
            }
        }
        Pool::Postgres(p) => {
            for (id, ago) in workers {
                sqlx::query(
                    "insert into apalis.workers (id, worker_type, storage_name, layers, last_seen)
                     values ($1, 'pixbatch.test', 'test', '', now() - make_interval(secs => $2))",
                )
                .bind(id)
                .bind(f64::from(ago))
                .execute(p)
                .await
                .unwrap();
            }
            for sql in [
                "update apalis.jobs set status = 'Done', lock_by = 'old-done'",
                "update apalis.jobs set status = 'Running', lock_by = 'old-busy'
                  where id = (select min(id) from apalis.jobs)",
            ] {
                sqlx::query(sql).execute(p).await.unwrap();
            }
        }
    }
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(db.purge_stale_workers(hour).await.unwrap(), 1);
    let left = sorted_strings(
        db,
        "select id from Workers",
        "select id from apalis.workers",
    )
    .await;
    // A finished job's worker stays too (the foreign key would refuse its delete).
    assert_eq!(left, ["old-busy", "old-done", "recent"]);
}

/// A push whose keys were partly pushed before adds the others (on PostgreSQL a
/// duplicate key fails the whole insert: the rest must not go with it).
async fn a_push_skips_only_the_keys_pushed_before(backend: Backend) {
    use pixbatch::store::NewJob;
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    for keys in [&["a", "b"][..], &["b", "c", "d"], &["d"]] {
        let jobs: Vec<NewJob> = keys.iter().map(|k| test_job(k)).collect();
        let mut tx = db.begin_write().await.unwrap();
        Db::push_jobs(&mut tx, "pixbatch.test", &jobs)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let keys = sorted_strings(
        db,
        "select idempotency_key from Jobs",
        "select idempotency_key from apalis.jobs",
    )
    .await;
    assert_eq!(keys, ["a", "b", "c", "d"]);
}

/// A page of images starts at its offset, in output order, whatever row that falls
/// in: rows of one, two and three images, read a page at a time from every offset.
async fn pages_start_at_their_offset(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let urls: Vec<Vec<String>> = (0..12)
        .map(|r| (0..=r % 3).map(|p| format!("http://x/{r}/{p}")).collect())
        .collect();
    let rows: Vec<Vec<&str>> = urls
        .iter()
        .map(|u| u.iter().map(String::as_str).collect())
        .collect();
    let rows: Vec<&[&str]> = rows.iter().map(|r| &r[..]).collect();
    let id = insert(db, &rows).await;
    // Another request in between, so ordinals are per request.
    insert(db, &[&["http://y/0"], &["http://y/1", "http://y/2"]]).await;
    let all: Vec<(u32, u32)> = images(db, id)
        .await
        .iter()
        .map(|i| (i.row, i.position))
        .collect();
    let expected: Vec<(u32, u32)> = (0..12u32)
        .flat_map(|r| (0..=r % 3).map(move |p| (r, p)))
        .collect();
    assert_eq!(all, expected);
    for offset in 0..=expected.len() as u32 + 1 {
        for limit in [1, 2, 5] {
            let page: Vec<(u32, u32)> = db
                .images(id, offset, limit)
                .await
                .unwrap()
                .iter()
                .map(|i| (i.row, i.position))
                .collect();
            let want: Vec<(u32, u32)> = expected
                .iter()
                .skip(offset as usize)
                .take(limit as usize)
                .copied()
                .collect();
            assert_eq!(page, want, "offset {offset}, limit {limit}");
        }
    }
    let page = db.images(id, 4, 1).await.unwrap();
    assert_eq!(page[0].serial, "3");
    assert_eq!(page[0].input_url, "http://x/2/1");
    assert!(db.images(RequestId::new(), 0, 10).await.unwrap().is_empty());
}

/// A success from the URL `url`, as an image job that downloaded it records it.
fn stored_from(url: &str, hash: &str) -> ImageOutcomeUpdate {
    let mut outcome = stored(None);
    if let ImageOutcomeUpdate::Succeeded { source, .. } = &mut outcome {
        *source = Some(SourceFacts {
            url: url.to_owned(),
            settings: "q50".to_owned(),
            etag: None,
            last_modified: None,
            validated_url: Some(url.to_owned()),
            content_hash: hash.to_owned(),
        });
    }
    outcome
}

/// One batch records the sources of its successes once per URL, whatever order its
/// items came in (they are written in key order, so batches cannot deadlock on the
/// shared rows): the last item of a URL is the one kept.
async fn a_batch_records_each_source_once(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let first = insert(db, &[&["http://x/b", "http://x/a"]]).await;
    let second = insert(db, &[&["http://x/a"]]).await;
    finish(
        db,
        &[
            item(first, &[(0, 0)], stored_from("http://x/b", "b1")),
            item(first, &[(0, 1)], stored_from("http://x/a", "a1")),
            item(second, &[(0, 0)], stored_from("http://x/a", "a2")),
        ],
    )
    .await;
    let a = db.source("http://x/a", "q50").await.unwrap().expect("a");
    assert_eq!((a.request_id, a.content_hash.as_str()), (second, "a2"));
    assert_eq!(a.output_key, format!("{second}/0-0.jpg"));
    let b = db.source("http://x/b", "q50").await.unwrap().expect("b");
    assert_eq!((b.request_id, b.content_hash.as_str()), (first, "b1"));
    assert_eq!(b.validated_url.as_deref(), Some("http://x/b"));
    assert_eq!(b.output_key, format!("{first}/0-0.jpg"));
}

/// Tries that waited for the blob store are counted apart (they do not spend the
/// image's `FETCH_ATTEMPTS`), a write the store refused while it took others is not,
/// and a retry starts both counts afresh.
async fn storage_refusals_are_counted_apart(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    let id = insert(db, &[&["http://x/a"]]).await;
    let full = Failure::new(
        FailureCode::StorageUnavailable,
        "storage: no space left on device",
    );
    assert!(record_failure_in(1, db, id, (0, 0), 0, &full, true).await);
    assert!(record_failure_in(1, db, id, (0, 0), 1, &full, true).await);
    assert!(record_failure_in(1, db, id, (0, 0), 2, &full, false).await);
    assert!(record_retry(db, id, (0, 0), 3, "connection reset").await);
    let work = db.image_work(id, 0, 0).await.unwrap().expect("image");
    assert_eq!((work.attempts, work.storage_tries), (4, 2));

    let done = finish(db, &[item(id, &[(0, 0)], failed("gave up"))]).await;
    assert_eq!(done.recorded, [true]);
    assert!(finalize(db, id, 1).await.is_some());
    assert!(retry_failed(db, id).await.is_some());
    let work = db.image_work(id, 0, 0).await.unwrap().expect("image");
    assert_eq!((work.attempts, work.storage_tries), (0, 0));
}

crate::on_both_backends!(
    storage_refusals_are_counted_apart,
    a_batch_records_each_source_once,
    pages_start_at_their_offset,
    finish_counts_each_image_once,
    one_batch_ends_several_runs,
    duplicate_targets_finish_together,
    record_retry_counts_pending_tries,
    retry_failed_starts_a_new_run,
    cancel_stops_pending_images,
    finalize_request_once_per_run,
    tidy_vacuums_tables_full_of_dead_rows,
    purge_deletes_only_jobs_done_before_the_retention,
    a_push_skips_only_the_keys_pushed_before,
    stale_workers_go_unless_they_hold_a_job,
    cancel_finds_nothing_to_stop_once_every_image_finished,
    an_event_is_of_its_run,
    an_event_outrun_by_a_newer_runs_event_is_given_up,
);
