//! SQL for requests, products and images, including the fan-in: the guarded update
//! that moves an image out of `pending` once, and the counter whose last decrement
//! tells the caller to enqueue the completion.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, QueryBuilder};

use super::{
    BlobKey, Db, Pool, StoreError, Tx,
    sources::{SourceFacts, StoredOutput},
    with_pool, with_tx,
};
use crate::{
    domain::{
        Failure, FailureCode, ImageId, ImageRef, ImageState, Progress, RequestId, RequestStatus,
    },
    imaging::{MaxBytes, Quality},
};

/// A request of at least this many images refreshes the planner's statistics once
/// stored ([`Db::refresh_planner_stats`]).
pub const BIG_REQUEST_IMAGES: usize = 1000;

/// SQLite allows 32766 bound parameters per statement, PostgreSQL 65535; stay well below.
const INSERT_CHUNK: usize = 2000;

/// A request about to be stored.
#[derive(Debug)]
pub struct NewRequest {
    /// Its id.
    pub id: RequestId,
    /// Quality choice (stored as written: `50`, `relative:50%`, `auto:70`).
    pub quality: Quality,
    /// Byte cap of each output, if any.
    pub max_bytes: Option<MaxBytes>,
    /// Where to send the completion event, if anywhere.
    pub webhook_url: Option<String>,
    /// The input columns in order.
    pub header: Vec<String>,
    /// Index of the URL column in `header`.
    pub urls_column: usize,
    /// Blob key of the stored upload.
    pub input_key: String,
    /// Whether unchanged images of earlier requests may be reused (the upload's `reuse`).
    pub reuse: bool,
    /// Whether the upload began with a byte order mark (the output CSV repeats it).
    pub bom: bool,
}

/// One row about to be stored.
#[derive(Debug)]
pub struct NewProduct<'a> {
    /// 0-based data row.
    pub row: u32,
    /// Physical line in the upload.
    pub line: u64,
    /// Serial number cell.
    pub serial: &'a str,
    /// Product name cell.
    pub product_name: &'a str,
    /// Every cell in header order, as a JSON array of strings.
    pub cells_json: &'a str,
}

/// One image about to be stored.
#[derive(Debug)]
pub struct NewImage<'a> {
    /// 0-based data row.
    pub row: u32,
    /// 0-based position in the row's URLs.
    pub position: u32,
    /// The URL to fetch.
    pub url: &'a str,
}

/// A stored request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Its id.
    pub id: RequestId,
    /// Current status.
    pub status: RequestStatus,
    /// Quality choice as given.
    pub quality: String,
    /// Webhook target, if any.
    pub webhook_url: Option<String>,
    /// Input columns in order.
    pub header: Vec<String>,
    /// Index of the URL column.
    pub urls_column: usize,
    /// Output CSV key once final.
    pub output_key: Option<String>,
    /// Images in the request.
    pub total: i64,
    /// Images stored.
    pub succeeded: i64,
    /// Images failed.
    pub failed: i64,
    /// Images still pending in this run.
    pub remaining: i64,
    /// Run number (bumped by retry).
    pub run: i64,
    /// Whether it reuses unchanged images of earlier requests.
    pub reuse: bool,
    /// Images whose output was copied from an earlier request's.
    pub reused: i64,
    /// Whether the upload began with a byte order mark (the output CSV repeats it).
    pub bom: bool,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first image started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
}

impl RequestRecord {
    /// Its image counts, as the API, the events and the webhook show them.
    pub fn progress(&self) -> Progress {
        Progress::of_counters(
            self.total,
            self.succeeded,
            self.failed,
            self.remaining,
            self.reused,
        )
    }
}

/// A stored image with its product, for the images API.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// Its id.
    pub id: ImageId,
    /// 0-based data row.
    pub row: u32,
    /// 0-based position in the row.
    pub position: u32,
    /// Serial of its product.
    pub serial: String,
    /// Name of its product.
    pub product_name: String,
    /// The URL fetched.
    pub input_url: String,
    /// Where it is.
    pub state: ImageState,
    /// Tries so far.
    pub attempts: i64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// The stable code of the last error.
    pub error_code: Option<FailureCode>,
    /// Output blob key once stored.
    pub output_key: Option<String>,
    /// Bytes downloaded.
    pub input_bytes: Option<i64>,
    /// Bytes stored.
    pub output_bytes: Option<i64>,
    /// Output width.
    pub width: Option<i64>,
    /// Output height.
    pub height: Option<i64>,
    /// What the transform did (JSON).
    pub report: Option<serde_json::Value>,
    /// The request whose output was copied, when this one was reused.
    pub reused_from: Option<RequestId>,
}

/// What an image job needs to know before it works.
#[derive(Debug, Clone)]
pub struct ImageWork {
    /// The URL.
    pub input_url: String,
    /// Where the image is.
    pub state: ImageState,
    /// Tries so far.
    pub attempts: i64,
    /// Of those, the ones that waited for the blob store, which refused writes when
    /// they started (not counted against `FETCH_ATTEMPTS`).
    pub storage_tries: i64,
    /// The request's status.
    pub request_status: RequestStatus,
    /// The request's quality choice.
    pub quality: Quality,
    /// The request's byte cap of each output.
    pub max_bytes: Option<MaxBytes>,
    /// The request's run.
    pub run: i64,
    /// Whether the request reuses earlier outputs.
    pub reuse: bool,
}

/// How an image ended.
#[derive(Debug, Clone)]
pub enum ImageOutcomeUpdate {
    /// Stored, each image under its own deterministic key.
    Succeeded {
        /// Bytes downloaded.
        input_bytes: i64,
        /// Bytes stored.
        output_bytes: i64,
        /// Output width.
        width: i64,
        /// Output height.
        height: i64,
        /// What the transform did.
        report: serde_json::Value,
        /// The request whose output was copied instead of transforming, if any.
        reused_from: Option<RequestId>,
        /// What the origin said about the bytes, recorded for later requests.
        source: Option<SourceFacts>,
    },
    /// Failed for good.
    Failed(Failure),
}

/// One image job's outcome, to be recorded with others in one transaction
/// ([`Db::finish_image_batch`]).
#[derive(Debug, Clone)]
pub struct ImageFinish {
    /// The request.
    pub request_id: RequestId,
    /// The image the job worked on first, then the same-URL duplicates that share
    /// its outcome.
    pub targets: Vec<(u32, u32)>,
    /// The run the job worked for: nothing is recorded once the request has moved on
    /// to another (a try of a finished run, still going when a retry started the next).
    pub run: i64,
    /// How they ended.
    pub outcome: ImageOutcomeUpdate,
}

/// What a batch of outcomes changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishedBatch {
    /// Per item, in the order given: `false` when its first image had already left
    /// `pending` (a redelivered job) and nothing of it was changed.
    pub recorded: Vec<bool>,
    /// The requests whose run this batch finished (their `remaining` reached zero),
    /// with that run: each needs its completion enqueued.
    pub last_of_run: Vec<(RequestId, i64)>,
}

/// A request's counter changes within one batch.
#[derive(Debug, Default)]
struct Counts {
    finished: i64,
    succeeded: i64,
    failed: i64,
    reused: i64,
}

/// One image's outcome as the output CSV needs it: state, output key, last error.
pub type ImageSlot = (ImageState, Option<String>, Option<String>);

/// One row of the output CSV as stored ([`Db::output_page`]).
#[derive(Debug, Clone)]
pub struct OutputSourceRow {
    /// The 0-based row.
    pub row: u32,
    /// Every input cell in header order.
    pub cells: Vec<String>,
    /// One slot per URL position, in order.
    pub images: Vec<ImageSlot>,
}

pub(super) fn corrupt<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A `requests` row as stored (either backend).
#[derive(FromRow)]
struct RequestRow {
    id: String,
    status: String,
    quality: String,
    webhook_url: Option<String>,
    header: String,
    urls_column: i64,
    output_key: Option<String>,
    total: i64,
    succeeded: i64,
    failed: i64,
    remaining: i64,
    run: i64,
    reuse: bool,
    reused: i64,
    bom: bool,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<RequestRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(r: RequestRow) -> Result<Self, StoreError> {
        Ok(RequestRecord {
            id: r.id.parse().map_err(corrupt)?,
            status: r.status.parse().map_err(corrupt)?,
            quality: r.quality,
            webhook_url: r.webhook_url,
            header: serde_json::from_str(&r.header)?,
            urls_column: r.urls_column as usize,
            output_key: r.output_key,
            total: r.total,
            succeeded: r.succeeded,
            failed: r.failed,
            remaining: r.remaining,
            run: r.run,
            reuse: r.reuse,
            reused: r.reused,
            bom: r.bom,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

/// An `images` row joined with its product.
#[derive(FromRow)]
struct ImageRow {
    id: i64,
    row: i64,
    position: i64,
    serial: String,
    product_name: String,
    input_url: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    error_code: Option<String>,
    output_key: Option<String>,
    input_bytes: Option<i64>,
    output_bytes: Option<i64>,
    width: Option<i64>,
    height: Option<i64>,
    report: Option<String>,
    reused_from: Option<String>,
}

/// What [`Db::image_work`] reads.
#[derive(FromRow)]
struct WorkRow {
    input_url: String,
    state: String,
    attempts: i64,
    storage_tries: i64,
    status: String,
    quality: String,
    max_bytes: Option<i64>,
    run: i64,
    reuse: bool,
}

/// A query builder for the database `conn` talks to.
fn builder<C: sqlx::Connection>(_conn: &C, init: &str) -> QueryBuilder<C::Database>
where
    <C::Database as sqlx::Database>::Arguments: Default,
{
    QueryBuilder::new(init)
}

fn request_record(row: Option<RequestRow>) -> Result<Option<RequestRecord>, StoreError> {
    row.map(RequestRecord::try_from).transpose()
}

/// What an image job reads first: the image and its request.
const IMAGE_WORK_SQL: &str = "select i.input_url, i.state, i.attempts, i.storage_tries,
                          r.status, r.quality, r.max_bytes, r.run, r.reuse
                     from images i join requests r on r.id = i.request_id
                    where i.request_id = $1 and i.row = $2 and i.position = $3";

/// Pending images of a request with one URL (served by `images_request_url`).
const DUPLICATES_SQL: &str = "select row, position from images
                    where request_id = $1 and input_url = $2 and state = 'pending'
                      and not (row = $3 and position = $4)
                    order by row, position";

const RECORD_RETRY_SQL: &str = "update images set attempts = attempts + 1,
                                     storage_tries = storage_tries + $9, last_error = $1,
                                     error_code = $2, started_at = coalesce(started_at, $3)
                    where request_id = $4 and row = $5 and position = $6 and state = 'pending'
                      and attempts = $7
                      and exists (select 1 from requests r where r.id = $4 and r.run = $8)";

/// A request's status and counts (the event stream's poll; by the primary key).
const PROGRESS_SQL: &str = "select status, total, succeeded, failed, remaining, reused
                     from requests where id = $1";

/// One update of a request's counters for a whole batch of its images.
const COUNT_SQL: &str = "update requests set succeeded = succeeded + $1, failed = failed + $2,
                         reused = reused + $3, remaining = remaining - $4
                  where id = $5 returning remaining, run";

/// A page of a request's products after a row (served by the primary key).
const OUTPUT_PRODUCTS_SQL: &str = "select row, cells from products
                    where request_id = $1 and row > $2 order by row limit $3";

/// The images of a range of a request's rows (served by `(request_id, row, position)`).
const OUTPUT_IMAGES_SQL: &str = "select row, state, output_key, last_error from images
                    where request_id = $1 and row between $2 and $3 order by row, position";

/// The product holding a request's image number `$2` (0-based, output order) and the
/// ordinal of its first image (served by `products_request_images_before`).
const IMAGES_PAGE_START_SQL: &str = "select row, images_before from products
                    where request_id = $1 and images_before <= $2
                    order by images_before desc limit 1";

/// A page of a request's images from (row, position) on, with their products: a
/// range of the `(request_id, row, position)` index and one of the products' primary
/// key, both starting at the page's row, however deep the page. With `limit … offset`
/// the images' index was walked from the request's first image; and without
/// `p.row >= $2` PostgreSQL merge-joins the products from the request's first row
/// (7 ms at row 15,000 of an idle database, 100 ms and more while the jobs run).
const IMAGES_PAGE_SQL: &str = "select i.*, p.serial, p.product_name
                     from images i
                     join products p on p.request_id = i.request_id and p.row = i.row
                    where i.request_id = $1 and (i.row, i.position) >= ($2, $3)
                      and p.row >= $2
                    order by i.row, i.position limit $4";

/// The statements every image job runs, the completion's pages and the images API's page, by name: each must be served by an index,
/// whatever the size of the request (a test runs `EXPLAIN` on each, on both backends).
pub const HOT_QUERIES: &[(&str, &str)] = &[
    ("image_work", IMAGE_WORK_SQL),
    ("duplicates_of", DUPLICATES_SQL),
    ("record_retry", RECORD_RETRY_SQL),
    ("finish_image_succeeded", SUCCEEDED_SQL),
    ("finish_image_failed", FAILED_SQL),
    ("count_finished", COUNT_SQL),
    ("source", super::sources::SOURCE_SQL),
    ("record_source", super::sources::RECORD_SOURCE_SQL),
    ("output_products", OUTPUT_PRODUCTS_SQL),
    ("output_images", OUTPUT_IMAGES_SQL),
    ("images_page_start", IMAGES_PAGE_START_SQL),
    ("images_page", IMAGES_PAGE_SQL),
    ("progress", PROGRESS_SQL),
];

const SUCCEEDED_SQL: &str = "update images set state = 'succeeded', attempts = attempts + 1,
        last_error = null, error_code = null, output_key = $1, input_bytes = $2,
        output_bytes = $3, width = $4, height = $5, report = $6, reused_from = $7,
        started_at = coalesce(started_at, $8), finished_at = $9
  where request_id = $10 and row = $11 and position = $12 and state = 'pending'
    and exists (select 1 from requests r where r.id = $10 and r.run = $13)";

const FAILED_SQL: &str = "update images set state = 'failed', attempts = attempts + 1,
        last_error = $1, error_code = $2, started_at = coalesce(started_at, $3), finished_at = $4
  where request_id = $5 and row = $6 and position = $7 and state = 'pending'
    and exists (select 1 from requests r where r.id = $5 and r.run = $8)";

impl Db {
    /// Stores a request with all its rows and images, inside the caller's transaction
    /// (which also pushes the jobs, so rows and jobs commit together).
    pub async fn insert_request(
        tx: &mut Tx,
        req: &NewRequest,
        products: &[NewProduct<'_>],
        images: &[NewImage<'_>],
    ) -> Result<(), StoreError> {
        let total = images.len() as i64;
        let header = serde_json::to_string(&req.header)?;
        let id = req.id.to_string();
        // Each product's first ordinal: how many images of earlier rows there are.
        let mut image_rows: Vec<u32> = images.iter().map(|i| i.row).collect();
        image_rows.sort_unstable();
        with_tx!(tx, c => {
            sqlx::query(
                "insert into requests (id, status, quality, webhook_url, header, urls_column,
                                       input_key, total, remaining, created_at, reuse, max_bytes,
                                       bom)
                 values ($1, 'Pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&id)
            .bind(req.quality.to_string())
            .bind(&req.webhook_url)
            .bind(&header)
            .bind(req.urls_column as i64)
            .bind(&req.input_key)
            .bind(total)
            .bind(total)
            .bind(Utc::now())
            .bind(req.reuse)
            // At most 1 GB: the cast cannot truncate.
            .bind(req.max_bytes.map(|m| m.get() as i64))
            .bind(req.bom)
            .execute(&mut *c)
            .await?;
            for chunk in products.chunks(INSERT_CHUNK) {
                let mut q = builder(&*c,
                    "insert into products (request_id, row, line, serial, product_name, cells, \
                     images_before) ",
                );
                q.push_values(chunk, |mut b, p| {
                    let before = image_rows.partition_point(|&r| r < p.row) as i64;
                    b.push_bind(id.clone())
                        .push_bind(p.row as i64)
                        .push_bind(p.line as i64)
                        .push_bind(p.serial.to_owned())
                        .push_bind(p.product_name.to_owned())
                        .push_bind(p.cells_json.to_owned())
                        .push_bind(before);
                });
                q.build().execute(&mut *c).await?;
            }
            for chunk in images.chunks(INSERT_CHUNK) {
                let mut q = builder(&*c,
                    "insert into images (request_id, row, position, input_url) ",
                );
                q.push_values(chunk, |mut b, i| {
                    b.push_bind(id.clone())
                        .push_bind(i.row as i64)
                        .push_bind(i.position as i64)
                        .push_bind(i.url.to_owned());
                });
                q.build().execute(&mut *c).await?;
            }
        });
        Ok(())
    }

    /// One request, or `None`.
    pub async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        let sql = "select * from requests where id = $1";
        let row = with_pool!(self, p => sqlx::query_as(sql).bind(id.to_string()).fetch_optional(p).await?);
        request_record(row)
    }

    /// A request's status and counts alone: what the event stream polls four times a
    /// second, without the whole row (its header, as long as the upload's first line).
    pub async fn progress(
        &self,
        id: RequestId,
    ) -> Result<Option<(RequestStatus, Progress)>, StoreError> {
        let row: Option<(String, i64, i64, i64, i64, i64)> = with_pool!(self, p => {
            sqlx::query_as(PROGRESS_SQL)
                .bind(id.to_string())
                .fetch_optional(p)
                .await?
        });
        row.map(|(status, total, succeeded, failed, remaining, reused)| {
            let progress = Progress::of_counters(total, succeeded, failed, remaining, reused);
            Ok((status.parse().map_err(corrupt)?, progress))
        })
        .transpose()
    }

    /// A page of a request's images in output order, with their products.
    pub async fn images(
        &self,
        id: RequestId,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let rid = id.to_string();
        // Where the page starts: the product holding image number `offset`, found by
        // its first ordinal; then the page is read from that (row, position) on.
        let start: Option<(i64, i64)> = with_pool!(self, p => {
            sqlx::query_as(IMAGES_PAGE_START_SQL)
                .bind(&rid)
                .bind(i64::from(offset))
                .fetch_optional(p)
                .await?
        });
        let Some((row, before)) = start else {
            return Ok(Vec::new());
        };
        let rows: Vec<ImageRow> = with_pool!(self, p => {
            sqlx::query_as(IMAGES_PAGE_SQL)
                .bind(&rid)
                .bind(row)
                .bind(i64::from(offset) - before)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(ImageRecord {
                    id: ImageId(r.id),
                    row: r.row as u32,
                    position: r.position as u32,
                    serial: r.serial,
                    product_name: r.product_name,
                    input_url: r.input_url,
                    state: r.state.parse().map_err(corrupt)?,
                    attempts: r.attempts,
                    last_error: r.last_error,
                    error_code: r
                        .error_code
                        .map(|c| c.parse().map_err(corrupt))
                        .transpose()?,
                    output_key: r.output_key,
                    input_bytes: r.input_bytes,
                    output_bytes: r.output_bytes,
                    width: r.width,
                    height: r.height,
                    report: r.report.map(|s| serde_json::from_str(&s)).transpose()?,
                    reused_from: r
                        .reused_from
                        .map(|s| s.parse().map_err(corrupt))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// Refreshes PostgreSQL's planner statistics of the request tables, after a big
    /// request was stored (on SQLite nothing: its statistics are fixed by migrations).
    ///
    /// An image job's statements are prepared once per connection and then run with a
    /// generic plan. Planned with statistics that predate the request (never analyzed,
    /// or analyzed while the tables were small, and autovacuum may be off or a minute
    /// behind), that plan took the `(request_id, state)` index for the guarded update
    /// and the same-URL lookup and read every pending image of the request per job:
    /// 20,000 images ran at 0.44× the rate of 2,000. An `ANALYZE` (a sample of
    /// 30,000 rows, a fraction of a second) invalidates those plans, and the new ones
    /// use the indexes that name one image.
    pub async fn refresh_planner_stats(&self) -> Result<(), StoreError> {
        if let Pool::Postgres(p) = self.pool() {
            sqlx::query("analyze images, products").execute(p).await?;
        }
        Ok(())
    }

    /// What an image job needs, or `None` when the image does not exist.
    pub async fn image_work(
        &self,
        id: RequestId,
        row: u32,
        position: u32,
    ) -> Result<Option<ImageWork>, StoreError> {
        let row: Option<WorkRow> = with_pool!(self, p => {
            sqlx::query_as(IMAGE_WORK_SQL)
                .bind(id.to_string())
                .bind(row as i64)
                .bind(position as i64)
                .fetch_optional(p)
                .await?
        });
        let Some(r) = row else { return Ok(None) };
        Ok(Some(ImageWork {
            input_url: r.input_url,
            state: r.state.parse().map_err(corrupt)?,
            attempts: r.attempts,
            storage_tries: r.storage_tries,
            request_status: r.status.parse().map_err(corrupt)?,
            quality: Quality::parse(&r.quality).map_err(corrupt)?,
            max_bytes: r
                .max_bytes
                .map(|m| {
                    u64::try_from(m)
                        .ok()
                        .and_then(MaxBytes::from_bytes)
                        .ok_or_else(|| corrupt(format!("max_bytes {m}")))
                })
                .transpose()?,
            run: r.run,
            reuse: r.reuse,
        }))
    }

    /// Pending → Processing, when the first image of a request starts.
    pub async fn mark_started(&self, id: RequestId) -> Result<(), StoreError> {
        let sql = "select count(*) from requests where id = $1 and status = 'Pending'";
        let pending: i64 =
            with_pool!(self, p => sqlx::query_scalar(sql).bind(id.to_string()).fetch_one(p).await?);
        if pending == 0 {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        with_tx!(&mut tx, c => {
            sqlx::query(
                "update requests set status = 'Processing', started_at = coalesce(started_at, $1)
                  where id = $2 and status = 'Pending'",
            )
            .bind(Utc::now())
            .bind(id.to_string())
            .execute(&mut *c)
            .await?;
        });
        tx.commit().await?;
        Ok(())
    }

    /// Counts a failed try that will be retried (one that waited for the blob store
    /// also in `storage_tries`), if the image is still `pending` with `tries_before`
    /// tries counted; `false` otherwise (a redelivered job, or one racing its twin), in
    /// which case nothing is to be scheduled.
    pub async fn record_retry(
        tx: &mut Tx,
        image: ImageRef,
        run: i64,
        tries_before: u32,
        failure: &Failure,
        waited_for_store: bool,
    ) -> Result<bool, StoreError> {
        let changed = with_tx!(tx, c => {
            sqlx::query(RECORD_RETRY_SQL)
                .bind(&failure.message)
                .bind(failure.code.as_str())
                .bind(Utc::now())
                .bind(image.request.to_string())
                .bind(image.row as i64)
                .bind(image.position as i64)
                .bind(i64::from(tries_before))
                .bind(run)
                .bind(i64::from(waited_for_store))
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Pending images of a request with the same URL as the given one (not itself):
    /// they wait for its outcome instead of downloading the same bytes again.
    pub async fn duplicates_of(
        &self,
        id: RequestId,
        row: u32,
        position: u32,
        url: &str,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let rows: Vec<(i64, i64)> = with_pool!(self, p => {
            sqlx::query_as(DUPLICATES_SQL)
                .bind(id.to_string())
                .bind(url)
                .bind(row as i64)
                .bind(position as i64)
                .fetch_all(p)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(r, p)| (r as u32, p as u32))
            .collect())
    }

    /// Records many image jobs' outcomes in the caller's transaction (one commit for
    /// all: on PostgreSQL every image-finish transaction used to queue on its request's
    /// row lock, commit and WAL flush included, one at a time).
    ///
    /// Each item moves its images out of `pending` (each once: the update is guarded);
    /// when an item's first image has already left `pending` (a redelivered job),
    /// nothing of that item is changed. The counters of each request are then moved
    /// once for the whole batch, and a request whose `remaining` that reaches zero is
    /// reported in [`FinishedBatch::last_of_run`] (only that decrement reaches zero,
    /// so each run is reported once). Items of one request run in the order given.
    ///
    /// On PostgreSQL the request rows are locked first, in the order of their ids:
    /// two items whose targets overlap (same-URL duplicates) would otherwise lock the
    /// same image rows in opposite orders, and two processes' batches lock their
    /// requests in one order, so they cannot deadlock. SQLite's `BEGIN IMMEDIATE`
    /// already serialises writers.
    pub async fn finish_image_batch(
        tx: &mut Tx,
        items: &[ImageFinish],
    ) -> Result<FinishedBatch, StoreError> {
        let now = Utc::now();
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| items[i].request_id);
        let mut requests: Vec<RequestId> = order.iter().map(|&i| items[i].request_id).collect();
        requests.dedup();
        if let Tx::Postgres(t) = &mut *tx {
            for id in &requests {
                sqlx::query("select 1 from requests where id = $1 for update")
                    .bind(id.to_string())
                    .execute(&mut **t)
                    .await?;
            }
        }
        let mut recorded = vec![false; items.len()];
        let mut counts: Vec<Counts> = requests.iter().map(|_| Counts::default()).collect();
        let mut slot = 0;
        for &i in &order {
            let item = &items[i];
            while requests[slot] != item.request_id {
                slot += 1;
            }
            let finished = Db::mark_targets(tx, item, now).await?;
            if finished == 0 {
                continue;
            }
            recorded[i] = true;
            let c = &mut counts[slot];
            c.finished += finished;
            match &item.outcome {
                ImageOutcomeUpdate::Succeeded { reused_from, .. } => {
                    c.succeeded += finished;
                    if reused_from.is_some() {
                        c.reused += finished;
                    }
                }
                ImageOutcomeUpdate::Failed(_) => c.failed += finished,
            }
        }
        Db::record_sources(tx, items, &recorded).await?;
        let mut last_of_run = Vec::new();
        for (id, c) in requests.iter().zip(&counts) {
            if c.finished == 0 {
                continue;
            }
            let (remaining, run): (i64, i64) = with_tx!(&mut *tx, conn => {
                sqlx::query_as(COUNT_SQL)
                    .bind(c.succeeded)
                    .bind(c.failed)
                    .bind(c.reused)
                    .bind(c.finished)
                    .bind(id.to_string())
                    .fetch_one(&mut *conn)
                    .await?
            });
            if remaining == 0 {
                last_of_run.push((*id, run));
            }
        }
        Ok(FinishedBatch {
            recorded,
            last_of_run,
        })
    }

    /// Moves one item's images out of `pending` and, for a success, records its source
    /// for reuse. Returns how many images it moved: 0 when its first image had already
    /// left `pending`, and then nothing is changed.
    async fn mark_targets(
        tx: &mut Tx,
        item: &ImageFinish,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let id = item.request_id;
        let rid = id.to_string();
        let outcome = &item.outcome;
        let mut finished = 0i64;
        for (i, &(row, position)) in item.targets.iter().enumerate() {
            let changed = with_tx!(&mut *tx, c => {
                let q = match outcome {
                    ImageOutcomeUpdate::Succeeded {
                        input_bytes,
                        output_bytes,
                        width,
                        height,
                        report,
                        reused_from,
                        ..
                    } => sqlx::query(SUCCEEDED_SQL)
                        .bind(BlobKey::image(id, row, position).as_str().to_owned())
                        .bind(*input_bytes)
                        .bind(*output_bytes)
                        .bind(*width)
                        .bind(*height)
                        .bind(report.to_string())
                        .bind(reused_from.map(|r| r.to_string())),
                    ImageOutcomeUpdate::Failed(failure) => sqlx::query(FAILED_SQL)
                        .bind(failure.message.clone())
                        .bind(failure.code.as_str()),
                };
                q.bind(now)
                    .bind(now)
                    .bind(&rid)
                    .bind(row as i64)
                    .bind(position as i64)
                    .bind(item.run)
                    .execute(&mut *c)
                    .await?
                    .rows_affected() as i64
            });
            if i == 0 && changed == 0 {
                return Ok(0);
            }
            finished += changed;
        }
        Ok(finished)
    }

    /// Records, for reuse, the source of every recorded success in `items` that
    /// carries one. Rows of `sources` are shared between requests, so two batches
    /// upserting the same URLs in arrival order could lock them in opposite orders
    /// and deadlock on PostgreSQL: they are upserted in key order, each key once
    /// (the last item of the batch wins, as it would have one by one).
    async fn record_sources(
        tx: &mut Tx,
        items: &[ImageFinish],
        recorded: &[bool],
    ) -> Result<(), StoreError> {
        let mut stored: Vec<(&SourceFacts, StoredOutput<'_>)> = Vec::new();
        for (item, _) in items.iter().zip(recorded).filter(|&(_, &r)| r) {
            if let ImageOutcomeUpdate::Succeeded {
                input_bytes,
                output_bytes,
                width,
                height,
                report,
                source: Some(facts),
                ..
            } = &item.outcome
                && let Some(&(row, position)) = item.targets.first()
            {
                let out = StoredOutput {
                    request_id: item.request_id,
                    output_key: BlobKey::image(item.request_id, row, position),
                    input_bytes: *input_bytes,
                    output_bytes: *output_bytes,
                    width: *width,
                    height: *height,
                    report,
                };
                stored.push((facts, out));
            }
        }
        // A stable sort keeps arrival order within a key; the last of each key is kept.
        stored.sort_by(|(a, _), (b, _)| (&a.url, &a.settings).cmp(&(&b.url, &b.settings)));
        for (i, (facts, out)) in stored.iter().enumerate() {
            let superseded = stored
                .get(i + 1)
                .is_some_and(|(next, _)| next.url == facts.url && next.settings == facts.settings);
            if !superseded {
                Db::record_source(tx, facts, out).await?;
            }
        }
        Ok(())
    }
    /// Puts a finished request's failed images back to `pending` for a new run.
    /// Returns the new run and the images to push jobs for, or `None` when the request
    /// is not finished or has no failed image.
    pub async fn retry_failed(
        tx: &mut Tx,
        id: RequestId,
    ) -> Result<Option<(i64, Vec<(u32, u32, String)>)>, StoreError> {
        let rid = id.to_string();
        let run: Option<i64> = with_tx!(&mut *tx, c => {
            sqlx::query_scalar(
                "update requests
                    set run = run + 1, status = 'Processing', remaining = failed, failed = 0,
                        output_key = null, finished_at = null
                  where id = $1 and status in ('CompletedWithErrors', 'Failed') and failed > 0
                 returning run",
            )
            .bind(&rid)
            .fetch_optional(&mut *c)
            .await?
        });
        let Some(run) = run else { return Ok(None) };
        // Tries are counted per run: a retried image gets FETCH_ATTEMPTS tries again.
        let images: Vec<(i64, i64, String)> = with_tx!(tx, c => {
            sqlx::query_as(
                "update images set state = 'pending', attempts = 0, storage_tries = 0,
                        finished_at = null
                  where request_id = $1 and state = 'failed'
                 returning row, position, input_url",
            )
            .bind(&rid)
            .fetch_all(&mut *c)
            .await?
        });
        let mut out: Vec<(u32, u32, String)> = images
            .into_iter()
            .map(|(r, p, u)| (r as u32, p as u32, u))
            .collect();
        out.sort();
        Ok(Some((run, out)))
    }

    /// Cancels an unfinished request: its pending images become `cancelled` and the
    /// request `Cancelled`. Returns the run, or `None` when it had already finished or
    /// has no image left to finish (its completion is queued: a cancel then would turn
    /// a run that did all its work `Cancelled`, and race that completion's CSV).
    pub async fn cancel(tx: &mut Tx, id: RequestId) -> Result<Option<(i64, u64)>, StoreError> {
        let now = Utc::now();
        let rid = id.to_string();
        let run: Option<i64> = with_tx!(&mut *tx, c => {
            sqlx::query_scalar(
                "update requests set status = 'Cancelled', remaining = 0, finished_at = $1
                  where id = $2 and status in ('Pending', 'Processing') and remaining > 0
                 returning run",
            )
            .bind(now)
            .bind(&rid)
            .fetch_optional(&mut *c)
            .await?
        });
        let Some(run) = run else { return Ok(None) };
        let stopped = with_tx!(tx, c => {
            sqlx::query(
                "update images set state = 'cancelled', finished_at = $1
                  where request_id = $2 and state = 'pending'",
            )
            .bind(now)
            .bind(&rid)
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        Ok(Some((run, stopped)))
    }

    /// Records the output CSV of a cancelled run, once.
    pub async fn finalize_cancelled(
        tx: &mut Tx,
        id: RequestId,
        run: i64,
        output_key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let sql = "update requests set output_key = $1
                    where id = $2 and run = $3 and status = 'Cancelled' and output_key is null
                   returning *";
        let row = with_tx!(tx, c => {
            sqlx::query_as(sql)
                .bind(output_key)
                .bind(id.to_string())
                .bind(run)
                .fetch_optional(&mut *c)
                .await?
        });
        request_record(row)
    }

    /// Up to `limit` rows of a request's output after row `after` (from the first
    /// when `None`), in order, each with its images' outcomes in position order: the
    /// completion writes the output CSV a page at a time, whatever the request's size.
    pub async fn output_page(
        &self,
        id: RequestId,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<OutputSourceRow>, StoreError> {
        let rid = id.to_string();
        let after = after.map_or(-1, i64::from);
        let products: Vec<(i64, String)> = with_pool!(self, p => {
            sqlx::query_as(OUTPUT_PRODUCTS_SQL)
                .bind(&rid)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?
        });
        let (Some(first), Some(last)) = (products.first(), products.last()) else {
            return Ok(Vec::new());
        };
        let images: Vec<ImageSlotRow> = with_pool!(self, p => {
            sqlx::query_as(OUTPUT_IMAGES_SQL)
                .bind(&rid)
                .bind(first.0)
                .bind(last.0)
                .fetch_all(p)
                .await?
        });
        let mut rows = Vec::with_capacity(products.len());
        for (row, cells) in products {
            rows.push(OutputSourceRow {
                row: row as u32,
                cells: serde_json::from_str(&cells)?,
                images: Vec::new(),
            });
        }
        // Both in row order: walk them side by side.
        let mut slot = 0;
        for (row, state, output_key, last_error) in images {
            while slot < rows.len() && i64::from(rows[slot].row) < row {
                slot += 1;
            }
            let target = rows
                .get_mut(slot)
                .filter(|r| i64::from(r.row) == row)
                .ok_or_else(|| StoreError::Corrupt(format!("image of missing row {row}")))?;
            target
                .images
                .push((state.parse().map_err(corrupt)?, output_key, last_error));
        }
        Ok(rows)
    }

    /// Sets the final status of a run, once: `None` when the run was already
    /// finalised (a redelivered completion), superseded by a retry, cancelled, or has
    /// images left.
    pub async fn finalize_request(
        tx: &mut Tx,
        id: RequestId,
        run: i64,
        output_key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let sql = "update requests
                      set status = case when failed = 0 then 'Completed'
                                        when succeeded = 0 then 'Failed'
                                        else 'CompletedWithErrors' end,
                          output_key = $1, finished_at = $2
                    where id = $3 and run = $4 and remaining = 0
                      and status in ('Pending', 'Processing')
                   returning *";
        let row = with_tx!(tx, c => {
            sqlx::query_as(sql)
                .bind(output_key)
                .bind(Utc::now())
                .bind(id.to_string())
                .bind(run)
                .fetch_optional(&mut *c)
                .await?
        });
        request_record(row)
    }
}

/// One image's outcome as stored: row, state, output key, last error.
type ImageSlotRow = (i64, String, Option<String>, Option<String>);
