//! Every statement on an image job's path is served by an index that narrows it to the
//! rows it asks for: `EXPLAIN` on each of `store::HOT_QUERIES`, on SQLite and
//! PostgreSQL, must show no full scan and no search of the images (or the products)
//! by request alone. A full scan
//! there makes the cost per image grow with the request (a 20k-image request was
//! quadratic on SQLite through the same-URL lookup).

use pixbatch::store::{HOT_QUERIES, PURGE_POSTGRES_SQL, PURGE_SQLITE_SQL, Pool};

use crate::helpers::{Backend, TestDb};

/// What apalis-sqlite (1.0.0, `queries/task/`) runs on `Jobs` for every job: marking
/// fetched jobs Running, and the ack. Copied here because its planner statistics are
/// ours (`migrations/sqlite/*_queue_planner_stats*.sql`): without them both walked the
/// whole queue per job.
const SQLITE_QUEUE_QUERIES: &[(&str, &str)] = &[
    (
        "apalis lock",
        "UPDATE Jobs SET status = 'Running', lock_at = strftime('%s', 'now'), lock_by = ?2
          WHERE id IN (SELECT value FROM json_each(?1))
            AND (status = 'Queued' OR status = 'Pending'
                 OR (status = 'Failed' AND attempts < max_attempts))",
    ),
    (
        "apalis ack",
        "WITH j AS (SELECT value ->> 'task_id' AS task_id, value ->> 'attempt' AS attempt,
                           value ->> 'result' AS result, value ->> 'status' AS status
                      FROM json_each(?1))
         UPDATE Jobs SET status = j.status, attempts = j.attempt, last_result = j.result,
                         done_at = strftime('%s', 'now')
           FROM j WHERE Jobs.id = j.task_id AND Jobs.lock_by = ?2",
    ),
];

/// How many `$n` (or `?n`) parameters a statement takes.
fn params(sql: &str) -> usize {
    (1..=32)
        .rev()
        .find(|n| sql.contains(&format!("${n}")) || sql.contains(&format!("?{n}")))
        .unwrap_or(0)
}

async fn hot_queries_use_indexes(backend: Backend) {
    let Some(test) = TestDb::open(backend).await else {
        return;
    };
    let db = &test.db;
    // The housekeeping's purge of finished jobs runs under the write lock (SQLite) on
    // a table of a week of jobs: it must not read them all either.
    let queue: Vec<(&str, &str)> = match backend {
        Backend::Sqlite => [SQLITE_QUEUE_QUERIES, &[("purge", PURGE_SQLITE_SQL)]].concat(),
        Backend::Postgres => vec![("purge", PURGE_POSTGRES_SQL)],
    };
    for (name, sql) in HOT_QUERIES.iter().chain(&queue) {
        let plan: Vec<String> = match db.pool() {
            Pool::Sqlite(p) => {
                // Unbound parameters are NULL; the plan does not depend on the values.
                let explain = format!("explain query plan {sql}");
                let mut q =
                    sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
                for _ in 0..params(sql) {
                    q = q.bind(None::<String>);
                }
                let rows = q.fetch_all(p).await.expect("explain");
                rows.into_iter().map(|r| r.3).collect()
            }
            Pool::Postgres(p) => {
                use sqlx::Acquire;
                let mut conn = p.acquire().await.unwrap();
                let c = conn.acquire().await.unwrap();
                // Empty tables: without this the planner rightly prefers a scan.
                sqlx::query("set enable_seqscan = off")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("prepare hot as {sql}")))
                    .execute(&mut *c)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let types: Vec<String> = sqlx::query_scalar(
                    "select parameter_types::text[] from pg_prepared_statements where name = 'hot'",
                )
                .fetch_one(&mut *c)
                .await
                .unwrap();
                // A value of each parameter's type; the plan is the same for any.
                let args: Vec<&str> = types
                    .iter()
                    .map(|t| match t.as_str() {
                        "bigint" | "integer" | "smallint" | "double precision" => "1",
                        t if t.starts_with("timestamp") => "'2026-01-01T00:00:00Z'",
                        _ => "'x'",
                    })
                    .collect();
                let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "explain execute hot({})",
                    args.join(", ")
                )))
                .fetch_all(&mut *c)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
                sqlx::query("deallocate hot")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                plan
            }
        };
        // A full scan, or a search of the images or products by request (and state)
        // alone, which reads every one of the request, or of the jobs by status: all
        // grow with the request. A search of the images must be keyed by row or URL too; json_each is
        // the list of ids the statement was given.
        let narrow = |key: &str| {
            key.contains("row") || key.contains("input_url") || key.contains("images_before")
        };
        let mut scans = Vec::new();
        let mut images_node = false;
        for line in &plan {
            let l = line.trim_start().trim_start_matches("->").trim_start();
            let full_scan = (l.starts_with("SCAN ") && !l.starts_with("SCAN json_each"))
                || l.contains("Seq Scan");
            // SQLite names a table by its alias in a join: a key of the request alone
            // is what gives the search away.
            let by_request = l.starts_with("SEARCH ")
                && ((l.contains("images") && !narrow(l)) || l.contains("(request_id=?)"));
            let jobs_by_status = l.starts_with("SEARCH Jobs") && l.contains("(status=?)");
            if full_scan || by_request || jobs_by_status {
                scans.push(line);
            }
            if l.contains("Index") && (l.contains(" on images") || l.contains(" on products")) {
                images_node = true;
            } else if images_node && l.starts_with("Index Cond:") {
                images_node = false;
                if !narrow(l) {
                    scans.push(line);
                }
            }
        }
        assert!(
            scans.is_empty(),
            "{name} scans a whole table:\n{}\n{sql}",
            plan.join("\n")
        );
    }
}

crate::on_both_backends!(hot_queries_use_indexes);

/// A PostgreSQL test database whose image queue holds `jobs` pending jobs (one image
/// a row of one request) and knows worker `w`; `None` where no PostgreSQL answers.
async fn postgres_queue_of(jobs: u32) -> Option<TestDb> {
    use pixbatch::{
        domain::{ImageRef, RequestId},
        lifecycle::ImageJob,
    };
    let test_db = TestDb::open(Backend::Postgres).await?;
    let db = &test_db.db;
    let p = test_db.postgres();
    sqlx::query(
        "insert into apalis.workers (id, worker_type, storage_name) \
         values ('w', 'pixbatch.images', 'PgStorage')",
    )
    .execute(p)
    .await
    .unwrap();
    let request = RequestId::new();
    let pushed = (0..jobs).map(|row| {
        let image = ImageRef {
            request,
            row,
            position: 0,
        };
        ImageJob::try_of(image, 1, 0)
    });
    let mut tx = db.begin_write().await.unwrap();
    pixbatch::lifecycle::push_many(&mut tx, pushed)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Some(test_db)
}

/// The body of `apalis.get_jobs` (apalis-postgres 1.0.0,
/// `migrations/20260902075949_remove_pl_in_get_jobs.sql`), planned the way the function
/// plans it: with its arguments as parameters.
const PG_GET_JOBS: &str = "WITH jobs AS (
        SELECT id FROM apalis.jobs
         WHERE (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))
           AND run_at < now() AND job_type = $2
         ORDER BY priority DESC, run_at ASC
         LIMIT $3
         FOR UPDATE SKIP LOCKED)
    UPDATE apalis.jobs j SET status = 'Queued', lock_by = $1, lock_at = now()
      FROM jobs WHERE j.id = jobs.id
    RETURNING j.id";

/// On PostgreSQL the queue's fetch touches the jobs it takes, not the table: it joins
/// them by primary key, under the planner settings our migration gives
/// `apalis.get_jobs` (checked in place, and by the plan they give).
#[tokio::test]
async fn queue_fetch_joins_by_primary_key_on_postgres() {
    // Enough jobs that a scan of the table costs more than the planner's guess of a join.
    let Some(test_db) = postgres_queue_of(3000).await else {
        return;
    };
    let p = test_db.postgres();

    // apalis' own function takes jobs with the settings in place.
    let taken: Vec<String> =
        sqlx::query_scalar("select id from apalis.get_jobs('w', 'pixbatch.images', 100)")
            .fetch_all(p)
            .await
            .unwrap();
    assert_eq!(taken.len(), 100);
    // The function carries its planner settings...
    let config: Vec<String> = sqlx::query_scalar(
        "select unnest(proconfig) from pg_proc where oid = 'apalis.get_jobs(text, text, integer)'::regprocedure",
    )
    .fetch_all(p)
    .await
    .unwrap();
    for setting in ["enable_hashjoin=off", "enable_mergejoin=off"] {
        assert!(
            config.iter().any(|c| c == setting),
            "apalis.get_jobs lost {setting} (an apalis upgrade?): {config:?}"
        );
    }
    // ...and under them its statement, planned with parameters over a table with
    // statistics, finds the jobs it takes by primary key instead of scanning them all.
    sqlx::query("analyze apalis.jobs").execute(p).await.unwrap();
    let mut conn = p.acquire().await.unwrap();
    let mut settings = config.clone();
    settings.push("plan_cache_mode=force_generic_plan".into());
    for s in &settings {
        let (name, value) = s.split_once('=').unwrap();
        sqlx::query("select set_config($1, $2, false)")
            .bind(name)
            .bind(value)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "prepare take_jobs(text, text, integer) as {PG_GET_JOBS}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar("explain execute take_jobs('w', 'pixbatch.images', 8)")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let plan = plan.join("\n");
    assert!(
        !plan.contains("Seq Scan"),
        "the fetch scans the queue's table:\n{plan}"
    );
    assert!(
        plan.contains("jobs_pkey"),
        "the fetch joins by primary key:\n{plan}"
    );
    drop(conn);
}

/// apalis' ack (apalis-postgres 1.0.0, `queries/task/handle_result.sql`).
const PG_ACK: &str = "WITH j AS (
        SELECT (value ->> 'task_id')::text AS task_id, (value ->> 'attempt')::integer AS attempt,
               value -> 'result' AS result, value ->> 'status' AS status
          FROM jsonb_array_elements($1::jsonb) AS value),
    locked AS (
        SELECT jobs.id FROM apalis.jobs AS jobs INNER JOIN j ON j.task_id = jobs.id
         WHERE jobs.lock_by = $2 ORDER BY jobs.id FOR UPDATE)
    UPDATE apalis.jobs AS jobs
       SET status = j.status, attempts = j.attempt, last_result = j.result, done_at = NOW()
      FROM j INNER JOIN locked ON locked.id = j.task_id
     WHERE jobs.id = locked.id";

/// On PostgreSQL the ack looks the acked jobs up by primary key, not by the worker that
/// ran them: every job a worker finished keeps its name, so a search by `lock_by`
/// reads the worker's whole history per ack. Checked on a worker that has run 20,000
/// jobs (on a small table a scan is rightly cheaper), with statistics, planned
/// generically (as a prepared statement runs).
#[tokio::test]
async fn queue_ack_finds_jobs_by_primary_key_on_postgres() {
    let Some(test_db) = postgres_queue_of(20_000).await else {
        return;
    };
    let p = test_db.postgres();
    // The worker's history: all but a few done, the rest running.
    sqlx::query(
        "update apalis.jobs set status = 'Done', lock_by = 'w', lock_at = now(), done_at = now()",
    )
    .execute(p)
    .await
    .unwrap();
    sqlx::query(
        "update apalis.jobs set status = 'Running', done_at = null
          where id in (select id from apalis.jobs order by id limit 16)",
    )
    .execute(p)
    .await
    .unwrap();
    sqlx::query("analyze apalis.jobs").execute(p).await.unwrap();
    let mut conn = p.acquire().await.unwrap();
    sqlx::query("set plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "prepare ack(jsonb, text) as {PG_ACK}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "explain execute ack('[{\"task_id\": \"x\", \"attempt\": 1, \"result\": null, \"status\": \"Done\"}]', 'w')",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let by_other_index = plan.iter().any(|l| {
        (l.contains("Index Scan") || l.contains("Index Only Scan")) && !l.contains("jobs_pkey")
    });
    let plan = plan.join("\n");
    assert!(
        !plan.contains("Seq Scan on jobs") && !by_other_index,
        "the ack reads the worker's jobs:\n{plan}"
    );
    assert!(
        plan.contains("jobs_pkey"),
        "the ack finds jobs by primary key:\n{plan}"
    );
    // The heartbeat's search for a dead worker's unfinished jobs keeps an index.
    let indexes: Vec<String> = sqlx::query_scalar(
        "select indexdef from pg_indexes where schemaname = 'apalis' and tablename = 'jobs'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(
        indexes
            .iter()
            .any(|i| i.contains("(lock_by)") && i.contains("Running")),
        "{indexes:?}"
    );
    drop(conn);
}
