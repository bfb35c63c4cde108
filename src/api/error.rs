//! Every error the API can answer, mapped to an RFC 9457 `application/problem+json`
//! body in this one place. 5xx bodies are generic; their cause goes to the log.

use poem::{Response, http::StatusCode};
use poem_openapi::{ApiResponse, payload::Json};

use super::problem::{InvalidParam, Problem, ProblemItem};
use crate::{csv::CsvProblem, lifecycle::LifecycleError, store::StoreError};

/// At most this many CSV problems are listed in one answer.
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// `Retry-After` (seconds) of a 503 when every event stream is taken: streams last
/// as long as their requests, so not at once.
const RETRY_AFTER_BUSY: u32 = 30;
/// ... when the database did not answer: a failover or a restart takes seconds.
const RETRY_AFTER_DATABASE: u32 = 5;
/// ... when storage refused a write (full, read-only): an operator's fix, not a moment's.
const RETRY_AFTER_STORAGE: u32 = 60;

/// Error answers, each as `application/problem+json`.
#[derive(Debug, ApiResponse)]
pub enum ProblemResponse {
    /// The request is malformed (not multipart, no file, bad parameter).
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// A bearer token is required.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// No such resource.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The resource is not in a state that allows this.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The upload is over the size limit.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The input is well-formed but invalid (every CSV problem listed).
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// Something failed on our side.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// A dependency (the database, storage) is unavailable, or the server is busy; try
    /// again after `Retry-After` seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u32),
}

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Unknown resource.
    #[error("{0}")]
    NotFound(String),
    /// Wrong state for the operation.
    #[error("{0}")]
    Conflict(String),
    /// Upload over the limit.
    #[error("the upload is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The CSV is invalid; every problem listed.
    #[error("{}", csv_summary(.0))]
    InvalidCsv(Vec<CsvProblem>),
    /// Form fields are invalid, each named; the CSV's problems (if any) are listed
    /// with them.
    #[error("{}{}", fields_text(.fields), csv_too(.csv))]
    InvalidFields {
        /// Each invalid field, named, with what is wrong.
        fields: Vec<InvalidParam>,
        /// The CSV's problems, when it has any.
        csv: Vec<CsvProblem>,
    },
    /// Every live event stream this process may hold is taken.
    #[error(
        "{limit} event streams are open on this server, the most it holds (MAX_EVENT_STREAMS); poll the status instead, or try again later"
    )]
    TooManyStreams {
        /// `MAX_EVENT_STREAMS`.
        limit: u32,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A fault of the server's own (a panic in a blocking task): a 500, the cause
    /// in the log only.
    #[error("{0}")]
    Internal(String),
}

/// The CSV's problems as a problem document lists them: the first
/// [`MAX_LISTED_PROBLEMS`].
fn listed(problems: Vec<CsvProblem>) -> Vec<ProblemItem> {
    problems
        .into_iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(|c| ProblemItem {
            line: c.line,
            column: c.column,
            message: c.message,
        })
        .collect()
}

/// How many problems a CSV has, and how many of them a problem document lists.
fn csv_summary(problems: &[CsvProblem]) -> String {
    match problems.len() {
        // Checking stopped: the count is a lower bound.
        n if n > crate::csv::MAX_PROBLEMS => format!(
            "the CSV has more than {} problems; the first {MAX_LISTED_PROBLEMS} are listed",
            crate::csv::MAX_PROBLEMS
        ),
        n if n > MAX_LISTED_PROBLEMS => {
            format!("the CSV has {n} problem(s); the first {MAX_LISTED_PROBLEMS} are listed")
        }
        n => format!("the CSV has {n} problem(s)"),
    }
}

/// `field: what is wrong; …`, for the detail.
fn fields_text(fields: &[InvalidParam]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.name, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What [`ApiError::InvalidFields`] says of the CSV's problems, when it has some.
fn csv_too(csv: &[CsvProblem]) -> String {
    if csv.is_empty() {
        String::new()
    } else {
        format!("; {}", csv_summary(csv))
    }
}

fn problem(status: StatusCode, code: &str, title: &str, detail: String) -> Problem {
    Problem {
        kind: format!("urn:pixbatch:problem:{code}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail,
        errors: None,
        invalid_params: None,
    }
}

impl From<ApiError> for ProblemResponse {
    fn from(e: ApiError) -> Self {
        let detail = e.to_string();
        match e {
            ApiError::BadRequest(_) => Self::BadRequest(Json(problem(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                detail,
            ))),
            ApiError::Unauthorized => Self::Unauthorized(Json(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                detail,
            ))),
            ApiError::NotFound(_) => Self::NotFound(Json(problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                detail,
            ))),
            ApiError::Conflict(_) => Self::Conflict(Json(problem(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                detail,
            ))),
            ApiError::TooLarge { .. } => Self::PayloadTooLarge(Json(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Upload too large",
                detail,
            ))),
            ApiError::InvalidCsv(problems) => {
                let mut p = problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-csv",
                    "Invalid CSV",
                    detail,
                );
                p.errors = Some(listed(problems));
                Self::Unprocessable(Json(p))
            }
            ApiError::InvalidFields { fields, csv } => {
                let mut p = problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-field",
                    "Invalid field",
                    detail,
                );
                p.errors = (!csv.is_empty()).then(|| listed(csv));
                p.invalid_params = Some(fields);
                Self::Unprocessable(Json(p))
            }
            ApiError::TooManyStreams { .. } => Self::Unavailable(
                Json(problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "Too many event streams",
                    detail,
                )),
                RETRY_AFTER_BUSY,
            ),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error while answering a request");
                Self::Internal(Json(internal_problem()))
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "storage error while answering a request");
                let database = matches!(e, StoreError::Database(_) | StoreError::Queue(_));
                if database {
                    Self::Unavailable(
                        Json(problem(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "Service unavailable",
                            "the database is unavailable; try again shortly".into(),
                        )),
                        RETRY_AFTER_DATABASE,
                    )
                } else if let StoreError::Blob(blob) = e {
                    // The operator's problem, named by its kind (`storage: no space
                    // left on device`), so the caller knows a retry later can work;
                    // its whole text (an S3 URL, a path) only in the log above.
                    Self::Unavailable(
                        Json(problem(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "storage-unavailable",
                            "Storage unavailable",
                            format!("{}; try again later", blob.public()),
                        )),
                        RETRY_AFTER_STORAGE,
                    )
                } else {
                    Self::Internal(Json(internal_problem()))
                }
            }
        }
    }
}

/// The body of every 500: generic, the cause is in the log.
fn internal_problem() -> Problem {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "an internal error occurred; it has been logged".into(),
    )
}

/// A use case that did not happen: the caller's part (404, 409) named, the rest a
/// storage failure.
impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::NotFound(_) => Self::NotFound(e.to_string()),
            LifecycleError::NothingToRetry { .. }
            | LifecycleError::AlreadyFinished { .. }
            | LifecycleError::Completing(_)
            | LifecycleError::EventComing { .. }
            | LifecycleError::NoEvent { .. }
            | LifecycleError::NotFinished { .. }
            | LifecycleError::DeliveryScheduled(_) => Self::Conflict(e.to_string()),
            LifecycleError::Store(e) => Self::Store(e),
        }
    }
}

impl From<LifecycleError> for ProblemResponse {
    fn from(e: LifecycleError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<StoreError> for ProblemResponse {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e).into()
    }
}

/// Turns an error raised outside our handlers (unknown route, wrong method, a body
/// poem-openapi could not parse) into a problem document with the same status;
/// responses that already are problem documents pass through unchanged.
pub fn problem_from_poem_error(err: poem::Error) -> Response {
    let status = err.status();
    let detail = err.to_string();
    let err_is_path =
        err.is::<poem::error::ParsePathError>() || err.is::<poem_openapi::error::ParsePathError>();
    let resp = err.into_response();
    let is_problem = resp
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if is_problem {
        return resp;
    }
    // A body that is not multipart is a malformed upload, not a media-type negotiation.
    let (status, detail) = if err_is_path {
        // A path segment whose percent-encoding is not UTF-8 (`/status/%FF`) names
        // nothing, as any other id that is not one does.
        (StatusCode::NOT_FOUND, "no such resource".to_owned())
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        (
            StatusCode::BAD_REQUEST,
            format!("{detail}; expected multipart/form-data with a `file` field"),
        )
    } else {
        (status, detail)
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let code = title.to_ascii_lowercase().replace(' ', "-");
    let body = problem(status, &code, title, detail);
    problem_response(status, &body)
}

/// Serialises a problem as a plain poem response (for middleware outside poem-openapi).
pub fn problem_response(status: StatusCode, p: &Problem) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(serde_json::to_string(p).unwrap_or_default())
}

/// A problem response for middleware: the same mapping as the handlers use. A 401
/// also says which scheme it wants (`WWW-Authenticate: Bearer`, RFC 9110 §11.6.1).
pub fn api_error_response(e: ApiError) -> Response {
    use poem::IntoResponse;
    let challenge = matches!(e, ApiError::Unauthorized);
    let mut response = ProblemResponse::from(e).into_response();
    if challenge {
        response.headers_mut().insert(
            poem::http::header::WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobError;

    /// `/files` is public: a storage failure answers its kind, never the store's own
    /// words (an S3 URL with its bucket, a local path), which only the log gets.
    #[test]
    fn a_storage_failure_names_its_kind_and_not_the_store() {
        for (io, detail) in [
            (
                std::io::Error::other("/srv/pixbatch/uploads/7f/0-0.jpg: disk on fire"),
                "storage: I/O error; try again later",
            ),
            (
                std::io::Error::from_raw_os_error(28),
                "storage: no space left on device; try again later",
            ),
        ] {
            let answer =
                ProblemResponse::from(ApiError::Store(StoreError::Blob(BlobError::from(io))));
            let ProblemResponse::Unavailable(Json(problem), retry_after) = answer else {
                panic!("not a 503: {answer:?}");
            };
            assert_eq!(problem.detail, detail);
            assert_eq!(problem.status, 503);
            assert_eq!(retry_after, RETRY_AFTER_STORAGE);
        }
    }
}
