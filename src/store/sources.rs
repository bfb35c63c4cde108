//! SQL for `sources`: what an earlier request fetched from a URL with given settings
//! (the origin's validators, a hash of the bytes) and the output it stored, so a later
//! request can fetch conditionally and copy that output instead of transforming again.

use chrono::Utc;
use sqlx::FromRow;

use super::{BlobKey, Db, StoreError, Tx, requests::corrupt, with_pool, with_tx};
use crate::domain::RequestId;

/// What one URL gave under one settings fingerprint, and where its output is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The origin's `ETag`, as sent.
    pub etag: Option<String>,
    /// The origin's `Last-Modified`, as sent.
    pub last_modified: Option<String>,
    /// The URL after redirects that sent the validators: the only one they are sent
    /// back to. `None` for records made before it was kept.
    pub validated_url: Option<String>,
    /// SHA-256 (hex) of the bytes downloaded.
    pub content_hash: String,
    /// Bytes downloaded.
    pub input_bytes: i64,
    /// Blob key of the output made from them.
    pub output_key: String,
    /// Its size.
    pub output_bytes: i64,
    /// Its width.
    pub width: i64,
    /// Its height.
    pub height: i64,
    /// What the transform did (JSON).
    pub report: serde_json::Value,
    /// The request whose output `output_key` is.
    pub request_id: RequestId,
}

/// What the origin said about the bytes an image was made from: recorded with the
/// image's success, so later requests can ask whether they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFacts {
    /// The URL as written in the CSV.
    pub url: String,
    /// The settings fingerprint the output was made under.
    pub settings: String,
    /// The origin's `ETag`.
    pub etag: Option<String>,
    /// The origin's `Last-Modified`.
    pub last_modified: Option<String>,
    /// The URL after redirects that sent the validators.
    pub validated_url: Option<String>,
    /// SHA-256 (hex) of the bytes.
    pub content_hash: String,
}

#[derive(FromRow)]
struct SourceRow {
    etag: Option<String>,
    last_modified: Option<String>,
    validated_url: Option<String>,
    content_hash: String,
    input_bytes: i64,
    output_key: String,
    output_bytes: i64,
    width: i64,
    height: i64,
    report: String,
    request_id: String,
}

/// The record an image job looks up first (served by the primary key).
pub(super) const SOURCE_SQL: &str =
    "select etag, last_modified, validated_url, content_hash, input_bytes,
        output_key, output_bytes, width, height, report, request_id
   from sources where url = $1 and settings = $2";

/// Inserts or replaces the record of one URL and settings (served by the primary key).
pub(super) const RECORD_SOURCE_SQL: &str = "insert into sources (url, settings, etag,
        last_modified, content_hash, input_bytes, output_key, output_bytes, width, height,
        report, request_id, updated_at, validated_url)
 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
 on conflict (url, settings) do update set etag = excluded.etag,
        last_modified = excluded.last_modified, validated_url = excluded.validated_url,
        content_hash = excluded.content_hash,
        input_bytes = excluded.input_bytes, output_key = excluded.output_key,
        output_bytes = excluded.output_bytes, width = excluded.width,
        height = excluded.height, report = excluded.report,
        request_id = excluded.request_id, updated_at = excluded.updated_at";

/// The output an image was stored as, to record with its [`SourceFacts`].
#[derive(Debug, Clone)]
pub(super) struct StoredOutput<'a> {
    pub request_id: RequestId,
    pub output_key: BlobKey,
    pub input_bytes: i64,
    pub output_bytes: i64,
    pub width: i64,
    pub height: i64,
    pub report: &'a serde_json::Value,
}

impl Db {
    /// The record of `url` under `settings`, if an earlier image stored one.
    pub async fn source(&self, url: &str, settings: &str) -> Result<Option<Source>, StoreError> {
        let row: Option<SourceRow> = with_pool!(self, p => {
            sqlx::query_as(SOURCE_SQL)
                .bind(url)
                .bind(settings)
                .fetch_optional(p)
                .await?
        });
        row.map(|r| {
            Ok(Source {
                etag: r.etag,
                last_modified: r.last_modified,
                validated_url: r.validated_url,
                content_hash: r.content_hash,
                input_bytes: r.input_bytes,
                output_key: r.output_key,
                output_bytes: r.output_bytes,
                width: r.width,
                height: r.height,
                report: serde_json::from_str(&r.report)?,
                request_id: r.request_id.parse().map_err(corrupt)?,
            })
        })
        .transpose()
    }

    /// Records (or replaces) what `facts.url` gave and the output stored from it, inside
    /// the transaction that marks the image succeeded: the record and the success
    /// commit together, after the output is durable.
    pub(super) async fn record_source(
        tx: &mut Tx,
        facts: &SourceFacts,
        out: &StoredOutput<'_>,
    ) -> Result<(), StoreError> {
        with_tx!(tx, c => {
            sqlx::query(RECORD_SOURCE_SQL)
                .bind(&facts.url)
                .bind(&facts.settings)
                .bind(&facts.etag)
                .bind(&facts.last_modified)
                .bind(&facts.content_hash)
                .bind(out.input_bytes)
                .bind(out.output_key.as_str())
                .bind(out.output_bytes)
                .bind(out.width)
                .bind(out.height)
                .bind(out.report.to_string())
                .bind(out.request_id.to_string())
                .bind(Utc::now())
                .bind(&facts.validated_url)
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }
}
