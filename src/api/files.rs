//! `GET /files/{request_id}/{name}`: stored outputs, streamed from the blob store
//! (local files or S3 objects alike, through this process, so the URLs and the
//! caching rules do not depend on the backend). Both segments are checked against the
//! key grammar, so nothing outside the store can be named, whatever encoding a client
//! tries.

use std::sync::Arc;

use poem::Body;
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path},
    payload::Binary,
};

use super::{ApiError, ApiTags, AppState, ProblemResponse};
use crate::{domain::RequestId, store::BlobKey};

/// Images never change once stored under their key. An output CSV's rows are those of
/// its run, but a repeated completion of the run writes the file again (the same bytes
/// under a new ETag on local storage), so CSVs are revalidated with their ETag.
const IMAGE_CACHE: &str = "public, max-age=31536000, immutable";
const CSV_CACHE: &str = "public, max-age=0, must-revalidate";

/// Answers of the files endpoint.
#[derive(ApiResponse)]
pub enum FileResponse {
    /// A stored JPEG.
    #[oai(status = 200, content_type = "image/jpeg")]
    Jpeg(
        Binary<Body>,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// A stored CSV.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(
        Binary<Body>,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The client's copy (`If-None-Match`) is current. It carries the caching rule a
    /// 200 would have (RFC 9110 §15.4.5), so a cache keeps applying it.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// File endpoints.
pub struct FilesApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Files")]
impl FilesApi {
    /// Download a stored file
    ///
    /// Output images (`image/jpeg`) and CSVs (`text/csv`), with Content-Length, an ETag
    /// and long caching for images. Public even when `API_TOKEN` is set, so the URLs in
    /// the output CSV work for whoever holds them.
    #[oai(path = "/files/:request_id/:name", method = "get")]
    async fn file(
        &self,
        request_id: Path<String>,
        name: Path<String>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> Result<FileResponse, ProblemResponse> {
        let not_found = || ApiError::NotFound("no such file".into());
        let key = BlobKey::output(&request_id.0, &name.0).ok_or_else(not_found)?;
        let key = self.latest(key, &request_id.0, &name.0).await?;
        let blob = self
            .0
            .blobs
            .get(&key)
            .await
            .map_err(|e| ApiError::Store(e.into()))?
            .ok_or_else(not_found)?;
        let etag = blob.etag;
        let jpeg = key.content_type() == "image/jpeg";
        let cache = if jpeg { IMAGE_CACHE } else { CSV_CACHE };
        if if_none_match
            .0
            .as_deref()
            .is_some_and(|h| none_match(h, &etag))
        {
            return Ok(FileResponse::NotModified(etag, cache.into()));
        }
        let body = Binary(Body::from_bytes_stream(blob.body));
        Ok(if jpeg {
            FileResponse::Jpeg(body, blob.len, etag, cache.into())
        } else {
            FileResponse::Csv(body, blob.len, etag, cache.into())
        })
    }
}

impl FilesApi {
    /// The blob a name serves: itself, except `output.csv`, the output CSV's stable
    /// name (SPEC §4), which serves what `GET /requests/{id}/output.csv` does
    /// ([`super::requests::latest_output_csv`]; a retry's run writes its CSV under a
    /// key of its own, `output-{run}.csv`, so that no completion of one run can replace
    /// another's file). Where that answers 409 (not finished, or a cancel's CSV not
    /// recorded yet), there is no such file: a 404. Before, the file written by a
    /// completion not yet recorded was served while the request was still
    /// `Processing`, and a retried run's cancel served the run before's CSV.
    async fn latest(&self, key: BlobKey, request: &str, name: &str) -> Result<BlobKey, ApiError> {
        let (true, Ok(id)) = (name == "output.csv", request.parse::<RequestId>()) else {
            return Ok(key);
        };
        let Some(request) = self.0.db.request(id).await? else {
            return Ok(key);
        };
        super::requests::latest_output_csv(&request).map_err(|e| match e {
            ApiError::Conflict(_) => ApiError::NotFound("no such file".into()),
            other => other,
        })
    }
}

/// Whether an `If-None-Match` header names `etag`: `*`, or a list of tags compared
/// weakly (RFC 9110 §13.1.2), so that `W/"…"` (a tag a compressing proxy weakened)
/// and one tag of several match too.
pub(super) fn none_match(header: &str, etag: &str) -> bool {
    let opaque = |tag: &str| {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag).to_owned()
    };
    let etag = opaque(etag);
    header.trim() == "*" || header.split(',').any(|tag| opaque(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::none_match;

    #[test]
    fn if_none_match_compares_weakly_over_a_list() {
        let etag = "\"5d41402abc4b2a76\"";
        for header in [
            "\"5d41402abc4b2a76\"",
            "W/\"5d41402abc4b2a76\"",
            "\"other\", \"5d41402abc4b2a76\"",
            " \"other\",W/\"5d41402abc4b2a76\" ",
            "*",
        ] {
            assert!(none_match(header, etag), "{header}");
        }
        for header in ["\"other\"", "5d41402abc4b2a76", "\"5d41402abc4b2a7\"", ""] {
            assert!(!none_match(header, etag), "{header}");
        }
    }
}
