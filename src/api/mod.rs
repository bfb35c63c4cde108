//! The HTTP API: poem-openapi handlers grouped by tag, Swagger UI at `/docs`, the
//! document at `/openapi.json`, bearer-token check, and the streaming size cap on uploads.

mod error;
mod events;
mod files;
mod health;
pub mod idle;
mod metrics;
mod problem;
mod report;
mod requests;
mod spec;
mod upload;
mod webhooks;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures::StreamExt;
use poem::{
    Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, http::Method,
    middleware::Tracing,
};
use poem_openapi::{OpenApiService, Tags};
use subtle::ConstantTimeEq;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::{ApiError, ProblemResponse};
pub use events::ProgressEvent;
pub use problem::{InvalidParam, Problem, ProblemItem};

use crate::{
    config::{Secret, Settings},
    domain::RequestId,
    lifecycle::{Lifecycle, Links},
    store::{BlobStore, Db, RequestRecord},
};

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    /// Our tables.
    pub db: Db,
    /// Stored CSVs and images.
    pub blobs: BlobStore,
    /// Validated configuration.
    pub settings: Settings,
    /// Every change of a request's state (accept, retry, cancel, redeliver).
    pub lifecycle: Lifecycle,
    /// Cancelled when the process is asked to stop: long-lived answers (the event
    /// streams) end then, so the graceful shutdown does not wait them out.
    pub stopping: CancellationToken,
    /// Uploads being received, each in a task of its own (so that a client going away
    /// does not drop one half way); the server waits for them when it stops.
    pub uploads: TaskTracker,
    /// Requests being handled per connection, which the idle timeout waits for.
    pub busy: idle::Busy,
    /// One permit per live event stream (`MAX_EVENT_STREAMS`), held while it runs.
    pub event_streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The handlers' state over an opened database and store, with the lifecycle
    /// that owns every change of a request's state.
    pub fn new(db: Db, blobs: BlobStore, settings: Settings) -> Arc<Self> {
        let lifecycle = Lifecycle::new(db.clone(), blobs.clone(), Links::of(&settings));
        let streams = settings.server.max_event_streams as usize;
        Arc::new(Self {
            db,
            blobs,
            settings,
            lifecycle,
            stopping: CancellationToken::new(),
            uploads: TaskTracker::new(),
            busy: idle::Busy::default(),
            event_streams: Arc::new(tokio::sync::Semaphore::new(streams)),
        })
    }

    /// The request's status URL: where an accepted upload, retry or cancel shows its
    /// outcome (the body's `status_url`, the 202's `Location`).
    pub fn status_url(&self, id: RequestId) -> String {
        format!("{}/status/{id}", self.settings.public_base_url)
    }

    /// The request id in a path, or 404 for one that is not a UUID.
    pub fn request_id(id: &str) -> Result<RequestId, ApiError> {
        id.parse()
            .map_err(|_| ApiError::NotFound(format!("no request {id:?}")))
    }

    /// Loads a request by the id in a path, or answers 404 (also for ids that are not UUIDs).
    pub async fn request(&self, id: &str) -> Result<RequestRecord, ApiError> {
        let rid = Self::request_id(id)?;
        self.db
            .request(rid)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no request {id:?}")))
    }

    /// The absolute URL under which a blob is served.
    pub fn file_url(&self, key: &str) -> String {
        self.lifecycle.links().file_url(key)
    }
}

/// Operation groups in the document.
#[derive(Tags)]
pub enum ApiTags {
    /// Submitting CSVs.
    Upload,
    /// Following a request and fetching its results.
    Requests,
    /// Completion events and their delivery log.
    Webhooks,
    /// Stored outputs.
    Files,
    /// Liveness and readiness.
    Health,
}

type Apis = (
    upload::UploadApi,
    requests::RequestsApi,
    webhooks::WebhooksApi,
    files::FilesApi,
    health::HealthApi,
    events::EventsApi,
    metrics::MetricsApi,
);

/// The webhook pixbatch sends, documented in the `webhooks` section of the document.
#[poem_openapi::Webhook]
#[allow(dead_code)]
trait Webhooks {
    /// Request finished
    ///
    /// POSTed to the request's `webhook_url` (or `WEBHOOK_URL`) when it reaches a final
    /// status. Signed per Standard Webhooks: verify `webhook-signature` (space-separated
    /// `v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`, one
    /// per configured secret) against the raw body, reject old timestamps, and dedupe
    /// on `webhook-id`, which is the same on every try of one event. Answer any 2xx to
    /// acknowledge, 410 to stop; anything else is retried on `WEBHOOK_RETRY_SCHEDULE`.
    #[oai(name = "request.completed", method = "post")]
    fn request_completed(
        &self,
        /// The event id, the same on every try: dedupe on it.
        #[oai(name = "webhook-id")]
        id: poem_openapi::param::Header<String>,
        /// Unix seconds when this try was signed.
        #[oai(name = "webhook-timestamp")]
        timestamp: poem_openapi::param::Header<i64>,
        /// `v1,<base64 signature>` entries, space-separated; absent when no secret is set.
        #[oai(name = "webhook-signature")]
        signature: poem_openapi::param::Header<Option<String>>,
        body: poem_openapi::payload::Json<crate::webhook::CompletionEvent>,
    );
}

fn service(state: Arc<AppState>, server_url: &str) -> OpenApiService<Apis, &'static dyn Webhooks> {
    OpenApiService::new(
        (
            upload::UploadApi(state.clone()),
            requests::RequestsApi(state.clone()),
            webhooks::WebhooksApi(state.clone()),
            files::FilesApi(state.clone()),
            health::HealthApi(state.clone()),
            events::EventsApi(state.clone()),
            metrics::MetricsApi(state),
        ),
        "pixbatch",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Upload a CSV of products and image URLs; every image is downloaded, re-encoded \
         as JPEG and stored; the same CSV comes back with an `Output Image Urls` column, \
         and a signed webhook reports completion.",
    )
    .webhooks::<&'static dyn Webhooks>()
    .server(server_url)
}

/// The OpenAPI document as JSON, without serving or connecting to anything (for
/// `pixbatch openapi` and the drift test). The handlers' state is built on a lazy
/// pool that is never used (it needs a Tokio runtime to exist, not to connect).
pub fn openapi_document() -> anyhow::Result<String> {
    let settings = crate::config::Cli::defaults()?.validate()?;
    let db = Db::lazy(settings.storage.database_url.expose())?;
    let blobs = BlobStore::new(&settings.storage.blobs)?;
    let state = AppState::new(db, blobs, settings);
    Ok(spec::tidy(&service(state, "http://127.0.0.1:8080").spec()))
}

/// The whole HTTP application.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let api = service(state.clone(), &state.settings.public_base_url);
    let labels = metrics::RouteLabels::from_spec(&api.spec());
    let raw = api.spec();
    let document = spec::tidy(&raw);
    // The Swagger UI over the tidied document (its security scheme gives the UI an
    // "Authorize" button): poem-openapi's page embeds the document it generated.
    let ui_html = api.swagger_ui_html().replacen(&raw, &document, 1);
    let ui = Route::new().at(
        "/",
        poem::endpoint::make_sync(move |_| poem::web::Html(ui_html.clone())),
    );
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
    });
    let token = state.settings.server.api_token.clone().map(Arc::new);
    let max_csv = state.settings.limits.max_csv_bytes;
    let busy = state.busy.clone();
    Route::new()
        .nest("/docs", ui)
        .at("/openapi.json", spec)
        .nest("/", api)
        .around(move |ep, req| {
            let token = token.clone();
            async move { guard(ep, req, token.as_deref().map(Secret::expose), max_csv).await }
        })
        .around({
            let labels = labels.clone();
            move |ep, req| metrics::track(ep, req, labels.clone())
        })
        .with(Tracing)
        .catch_all_error(|e| async move { error::problem_from_poem_error(e) })
        .around(move |ep, req| with_allow(ep, req, labels.clone()))
        .around(move |ep, req| idle::serving(ep, req, busy.clone()))
}

/// A 405 says which methods its path takes (`Allow`, which RFC 9110 §15.5.6 requires;
/// poem's router leaves it out), from the OpenAPI document's paths.
async fn with_allow<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    labels: metrics::RouteLabels,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let mut resp = ep.call(req).await?.into_response();
    if resp.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = labels
            .allowed(&path)
            .and_then(|m| poem::http::HeaderValue::from_str(m).ok())
    {
        resp.headers_mut().insert(poem::http::header::ALLOW, allow);
    }
    Ok(resp)
}

/// The side listener of `pixbatch worker`: `/healthz`, `/readyz` and `/metrics` only
/// (the worker's own job metrics, and the shared queue depth).
pub fn health_routes(state: Arc<AppState>) -> impl Endpoint {
    let busy = state.busy.clone();
    let api = OpenApiService::new(
        (health::HealthApi(state.clone()), metrics::MetricsApi(state)),
        "pixbatch worker",
        env!("CARGO_PKG_VERSION"),
    );
    Route::new()
        .nest("/", api)
        .with(Tracing)
        .catch_all_error(|e| async move { error::problem_from_poem_error(e) })
        .around(move |ep, req| idle::serving(ep, req, busy.clone()))
}

/// Paths anyone may read, even when `API_TOKEN` is set (SPEC §1: health, docs and
/// `/files`). `/metrics` is not one: a scraper sends the token like any client. The
/// worker's side listener has no token check and binds to loopback by default.
fn is_public(path: &str) -> bool {
    path == "/healthz"
        || path == "/readyz"
        || path == "/openapi.json"
        || path == "/docs"
        || path.starts_with("/docs/")
        || path.starts_with("/files/")
}

/// Bearer check and the streaming cap on upload bodies.
async fn guard<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    token: Option<&str>,
    max_csv: u64,
) -> poem::Result<Response> {
    if let Some(token) = token
        && !is_public(req.uri().path())
    {
        // The scheme's name is case-insensitive (RFC 9110 §11.1): `bearer` is as good.
        let given = req
            .headers()
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, credentials)| credentials.trim());
        // Compared without an early exit, so timing does not reveal a prefix.
        if !given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes()))) {
            return Ok(error::api_error_response(ApiError::Unauthorized));
        }
    }
    if req.method() != Method::POST || req.uri().path() != "/upload" {
        return Ok(ep.call(req).await?.into_response());
    }
    // The multipart envelope adds a little around the file itself.
    let limit = max_csv.saturating_add(64 * 1024);
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Ok(error::api_error_response(ApiError::TooLarge {
            limit: max_csv,
        }));
    }
    // Count bytes as they stream in and cut the body off at the limit, whatever
    // Content-Length said (or if it was absent, with chunked encoding).
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let mut seen = 0u64;
    let body = req.take_body().into_bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > limit {
            flag.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("upload over the size limit"));
        }
        Ok(chunk)
    });
    req.set_body(Body::from_bytes_stream(body));
    let result = ep.call(req).await;
    if exceeded.load(Ordering::SeqCst) {
        return Ok(error::api_error_response(ApiError::TooLarge {
            limit: max_csv,
        }));
    }
    Ok(result?.into_response())
}
