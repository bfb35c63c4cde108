//! `POST /upload`: parse and check the whole form and CSV first (every problem
//! listed), then hand the checked upload to [`crate::lifecycle::Lifecycle::accept`].

use std::{borrow::Cow, sync::Arc};

use poem_openapi::{
    ApiResponse, Multipart, Object, OpenApi,
    payload::Json,
    registry::{MetaSchema, MetaSchemaRef},
    types::{Example, ParseError, ParseFromMultipartField, ParseResult, Type, multipart::Upload},
};
use uuid::Uuid;

use super::{ApiError, ApiTags, AppState, InvalidParam, ProblemResponse};
use crate::{
    csv::{self, CsvLimits},
    domain::RequestStatus,
    fetch,
    imaging::{MaxBytes, Quality},
    lifecycle::CheckedUpload,
};

/// The upload form.
#[derive(Debug, Multipart)]
pub struct UploadForm {
    /// The CSV: columns `Serial Number`, `Product Name`, `Input Image Urls` (found by
    /// name, any order, other columns passed through).
    file: Upload,
    /// Where to POST the completion event; the server's `WEBHOOK_URL` when absent.
    /// An IP literal in a refused range (loopback, private, link-local, …) or
    /// `user:pass@` is refused (422): no delivery could ever reach it.
    webhook_url: Option<String>,
    /// Output quality: `1`–`100`, `relative:N%` for N % of each input's own
    /// estimated quality, or `auto` / `auto:N` for the lowest quality (30–95) whose
    /// output reaches SSIMULACRA2 score N (1–100, up to two decimals: `auto:65.5`;
    /// 70 for `auto`). The server default
    /// (`JPEG_QUALITY`, 50) when absent.
    quality: Option<String>,
    /// `false` to fetch every image in full and reuse nothing; by default (`REUSE`, on)
    /// an image whose URL an earlier request fetched with the same settings is fetched
    /// conditionally and, when unchanged, its earlier output is copied.
    reuse: Option<FormFlag>,
    /// Most bytes per output: `150000`, `150KB` or `2MB` (KB = 1000 bytes), 2000 to
    /// 1000000000. The highest quality that fits is used (it wins over an `auto`
    /// target), the image downscaled when even quality 30 (or the quality asked,
    /// when lower) does not fit. The
    /// server's `MAX_OUTPUT_BYTES` when absent, no cap when that is unset.
    max_bytes: Option<String>,
    /// `true` to check the CSV and count its images without storing anything.
    dry_run: Option<FormFlag>,
}

/// A true/false form field (`true`/`false` in any case, `1`/`0`, `yes`/`no`, `on`/`off`:
/// what HTML forms and HTTP libraries send; empty counts as absent, as for the other
/// fields). Another value does not fail the form with
/// a 400 the way a plain `bool` field would: it is an invalid field, answered 422 with
/// the form's other problems and the CSV's, like `quality=150`.
#[derive(Debug)]
pub struct FormFlag(Result<Option<bool>, String>);

impl FormFlag {
    fn parse(text: &str) -> Self {
        let value = text.trim();
        Self(match value.to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => {
                let shown: String = value.chars().take(32).collect();
                Err(format!("must be true or false, not \"{shown}\""))
            }
        })
    }
}

impl Type for FormFlag {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "boolean".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("boolean")))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromMultipartField for FormFlag {
    async fn parse_from_multipart(field: Option<poem::web::Field>) -> ParseResult<Self> {
        match field {
            Some(field) => Ok(Self::parse(&field.text().await?)),
            None => Err(ParseError::expected_input()),
        }
    }
}

/// An accepted (or dry-run) upload.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct UploadAccepted {
    /// The new request's id (absent for a dry run).
    request_id: Option<Uuid>,
    /// Its status: `Pending` when accepted.
    status: Option<RequestStatus>,
    /// Absolute URL to poll.
    status_url: Option<String>,
    /// Product rows in the CSV.
    products: u64,
    /// Image URLs in the CSV.
    images: u64,
}

impl Example for UploadAccepted {
    fn example() -> Self {
        Self {
            request_id: Some(Uuid::nil()),
            status: Some(RequestStatus::Pending),
            status_url: Some(
                "http://127.0.0.1:8080/status/00000000-0000-0000-0000-000000000000".into(),
            ),
            products: 2,
            images: 3,
        }
    }
}

/// Answers of `POST /upload`.
#[derive(Debug, ApiResponse)]
pub enum UploadResponse {
    /// Accepted: the work is queued; `Location` is the status URL.
    #[oai(status = 202)]
    Accepted(Json<UploadAccepted>, #[oai(header = "Location")] String),
    /// Dry run: the CSV is valid; nothing was stored.
    #[oai(status = 200)]
    Checked(Json<UploadAccepted>),
}

/// Upload endpoints.
pub struct UploadApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Upload")]
impl UploadApi {
    /// Upload a CSV
    ///
    /// Checks the whole CSV and answers 422 listing every problem (line and column),
    /// or stores the request and queues one job per image and answers 202 at once.
    /// The upload is capped at `MAX_CSV_BYTES` while it streams (413).
    #[oai(path = "/upload", method = "post")]
    async fn upload(&self, form: UploadForm) -> Result<UploadResponse, ProblemResponse> {
        // Carried to its end in a task of its own, even when the client goes away
        // meanwhile (hyper drops a handler whose request was reset or whose connection
        // closed): dropped half way, a whole upload would be lost after its body was
        // read, or its stored CSV left with no request to own it.
        self.0
            .uploads
            .spawn(receive(self.0.clone(), form))
            .await
            .map_err(|e| ApiError::Internal(format!("the upload did not finish: {e}")))?
    }
}

/// The upload's whole handling: the form read and checked, the CSV parsed, the
/// request accepted.
async fn receive(
    state: Arc<AppState>,
    form: UploadForm,
) -> Result<UploadResponse, ProblemResponse> {
    let s = &state.settings;
    let max = s.limits.max_csv_bytes;
    if form.file.size() as u64 > max {
        return Err(ApiError::TooLarge { limit: max }.into());
    }
    // Every problem of the form is listed, the CSV's too: a bad field does not
    // hide the file's problems from the same answer.
    let mut fields = Vec::new();
    let mut field = |name: &str, e: &dyn std::fmt::Display| {
        fields.push(InvalidParam {
            name: name.to_owned(),
            reason: e.to_string(),
        })
    };
    let quality = match form.quality.as_deref().map(str::trim) {
        None | Some("") => Some(s.default_quality),
        Some(q) => Quality::parse(q).map_err(|e| field("quality", &e)).ok(),
    };
    let max_bytes = match form.max_bytes.as_deref().map(str::trim) {
        None | Some("") => Some(s.defaults.max_output_bytes),
        Some(m) => MaxBytes::parse(m)
            .map(Some)
            .map_err(|e| field("max_bytes", &e))
            .ok(),
    };
    let mut flag = |name: &str, given: Option<FormFlag>, default: bool| match given {
        None | Some(FormFlag(Ok(None))) => Some(default),
        Some(FormFlag(Ok(Some(value)))) => Some(value),
        Some(FormFlag(Err(e))) => {
            field(name, &e);
            None
        }
    };
    let reuse = flag("reuse", form.reuse, s.defaults.reuse);
    let dry_run = flag("dry_run", form.dry_run, false);
    let webhook_url = match form.webhook_url.as_deref().map(str::trim) {
        None | Some("") => Some(None),
        // A URL no delivery may ever reach (credentials, an IP literal in a
        // refused range) is refused now rather than after a 202; a name is
        // checked at each delivery, when it resolves.
        Some(u) => csv::ImageUrl::parse(u)
            .map_err(|e| e.to_string())
            .and_then(|url| {
                fetch::check_url(url.as_str(), &s.fetch.allow_private)
                    .map(|_| Some(url))
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| field("webhook_url", &e))
            .ok(),
    };
    let bytes = form
        .file
        .into_vec()
        .await
        .map_err(|e| ApiError::BadRequest(format!("could not read the file: {e}")))?;
    let limits = CsvLimits {
        max_rows: s.limits.max_rows,
        max_urls_per_row: s.limits.max_urls_per_row,
    };
    // Parsing 100k rows is CPU work: keep it off the async threads.
    let (bytes, parsed) = tokio::task::spawn_blocking(move || {
        let parsed = csv::parse(&bytes, &limits);
        (bytes, parsed)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the CSV parse did not finish: {e}")))?;
    let (Some(quality), Some(max_bytes), Some(webhook_url), Some(reuse), Some(dry_run)) =
        (quality, max_bytes, webhook_url, reuse, dry_run)
    else {
        return Err(ApiError::InvalidFields {
            fields,
            csv: parsed.err().unwrap_or_default(),
        }
        .into());
    };
    let parsed = parsed.map_err(ApiError::InvalidCsv)?;
    let products = parsed.rows.len() as u64;
    let images = parsed.image_count() as u64;

    if dry_run {
        return Ok(UploadResponse::Checked(Json(UploadAccepted {
            request_id: None,
            status: None,
            status_url: None,
            products,
            images,
        })));
    }

    let accepted = state
        .lifecycle
        .accept(CheckedUpload {
            csv: bytes,
            parsed,
            quality,
            max_bytes,
            webhook_url,
            reuse,
        })
        .await?;
    let id = accepted.id;
    let status_url = state.status_url(id);
    Ok(UploadResponse::Accepted(
        Json(UploadAccepted {
            request_id: Some(id.as_uuid()),
            status: Some(RequestStatus::Pending),
            status_url: Some(status_url.clone()),
            products,
            images,
        }),
        status_url,
    ))
}
