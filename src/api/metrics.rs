//! `GET /metrics` for Prometheus, and the middleware that counts every HTTP answer
//! by route template.

use std::{sync::Arc, time::Instant};

use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::{ApiResponse, OpenApi, payload::PlainText};

use super::{ApiTags, AppState};
use crate::{
    lifecycle::{CompleteJob, DeliverJob, ImageJob, Job},
    telemetry::metrics,
};

/// The statuses the queue-depth gauge reports; see [`crate::store::QueueDepth`].
const QUEUE_STATUSES: [&str; 3] = ["Pending", "Queued", "Running"];

/// Answers of the metrics endpoint.
#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// The Prometheus text exposition format.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Ok(PlainText<String>),
}

/// Metrics endpoint.
pub struct MetricsApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Health")]
impl MetricsApi {
    /// Prometheus metrics
    ///
    /// Jobs started and finished by kind and outcome, job durations, bytes fetched and
    /// written, queue depth by queue and status (counted on every scrape), webhook
    /// outcomes, and HTTP requests by route and status. Needs the bearer token when
    /// `API_TOKEN` is set, like every endpoint but health, docs and files.
    #[oai(path = "/metrics", method = "get")]
    async fn metrics(&self) -> MetricsResponse {
        refresh_queue_depth(&self.0).await;
        MetricsResponse::Ok(PlainText(metrics::render()))
    }
}

/// Sets the queue-depth gauge from the queue table: every known queue and status
/// first to zero, so a drained queue reads 0 rather than its last value. When the
/// table cannot be read, NaN: the last values, kept, looked like a queue that had
/// stopped moving.
async fn refresh_queue_depth(state: &AppState) {
    let mut queues = vec![ImageJob::QUEUE, CompleteJob::QUEUE, DeliverJob::QUEUE];
    let rows = match state.db.queue_depth().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "queue depth unavailable");
            for queue in queues {
                for status in QUEUE_STATUSES {
                    metrics::queue_depth_unknown(queue, status);
                }
            }
            return;
        }
    };
    for row in &rows {
        if !queues.contains(&row.queue.as_str()) {
            queues.push(&row.queue);
        }
    }
    for queue in queues {
        for status in QUEUE_STATUSES {
            let jobs = rows
                .iter()
                .find(|r| r.queue == queue && r.status == status)
                .map_or(0, |r| r.jobs);
            metrics::queue_depth(queue, status, jobs);
        }
    }
}

/// Route templates as labels: the OpenAPI document's paths (`/status/{request_id}`),
/// matched segment by segment against the raw path. Built from the document rather
/// than from poem's matched pattern because poem-openapi renames path parameters
/// (`:param0`), and because answers the guard gives (401, 413) never reach a route.
#[derive(Debug, Clone, Default)]
pub struct RouteLabels {
    /// Each path template's segments, and the methods it takes (`GET, HEAD`, `POST`).
    templates: Arc<Vec<(Vec<String>, String)>>,
}

impl RouteLabels {
    /// The paths of an OpenAPI document (JSON) and their methods, plus the document's
    /// own route.
    pub fn from_spec(spec_json: &str) -> Self {
        let mut paths: Vec<(String, Vec<String>)> =
            serde_json::from_str::<serde_json::Value>(spec_json)
                .ok()
                .and_then(|doc| {
                    doc.get("paths").and_then(|p| p.as_object()).map(|p| {
                        p.iter()
                            .map(|(path, ops)| {
                                let methods = ops
                                    .as_object()
                                    .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                                    .unwrap_or_default();
                                (path.clone(), methods)
                            })
                            .collect()
                    })
                })
                .unwrap_or_default();
        paths.push(("/openapi.json".into(), vec!["GET".into()]));
        Self::new(paths)
    }

    fn new(paths: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        let mut templates: Vec<(Vec<String>, String)> = paths
            .into_iter()
            .map(|(p, mut methods)| {
                // poem answers HEAD wherever it answers GET.
                if methods.iter().any(|m| m == "GET") {
                    methods.push("HEAD".into());
                }
                (
                    segments(&p).map(str::to_owned).collect(),
                    methods.join(", "),
                )
            })
            .collect();
        // Most literal segments first, so `/a/b` wins over `/a/{x}`.
        templates
            .sort_by_key(|(t, _)| std::cmp::Reverse(t.iter().filter(|s| !is_param(s)).count()));
        Self {
            templates: Arc::new(templates),
        }
    }

    /// The template `path` matches, with its methods.
    fn matching(&self, path: &str) -> Option<&(Vec<String>, String)> {
        let parts: Vec<&str> = segments(path).collect();
        self.templates.iter().find(|(t, _)| {
            t.len() == parts.len() && t.iter().zip(&parts).all(|(t, p)| is_param(t) || t == p)
        })
    }

    /// The template `path` matches, `/docs` for the UI, or `unmatched`: never the raw
    /// path, so ids and junk paths cannot become label values.
    pub fn label(&self, path: &str) -> String {
        if path == "/docs" || path.starts_with("/docs/") {
            return "/docs".into();
        }
        self.matching(path)
            .map(|(t, _)| format!("/{}", t.join("/")))
            .unwrap_or_else(|| "unmatched".into())
    }

    /// The methods `path` takes, as a 405's `Allow` lists them (RFC 9110 §10.2.1).
    pub fn allowed(&self, path: &str) -> Option<&str> {
        self.matching(path).map(|(_, methods)| methods.as_str())
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// Middleware: counts and times every answer, errors and the guard's refusals
/// included, by method, route template and status.
pub async fn track<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    labels: RouteLabels,
) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = labels.label(req.uri().path());
    let result = ep.call(req).await.map(IntoResponse::into_response);
    let status = match &result {
        Ok(resp) => resp.status(),
        Err(e) => e.status(),
    };
    metrics::http_request(&method, &route, status.as_u16(), started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_templates_and_nothing_else() {
        let labels = RouteLabels::new(
            [
                "/upload",
                "/status/{request_id}",
                "/requests/{request_id}/images",
                "/requests/{request_id}/webhooks",
                "/requests/{request_id}/webhooks/redeliver",
                "/files/{request_id}/{name}",
            ]
            .map(|p| (String::from(p), vec!["GET".to_owned()])),
        );
        let id = "0193a7c2-1b2c-7d3e-8f40-123456789abc";
        assert_eq!(labels.label("/upload"), "/upload");
        assert_eq!(
            labels.label(&format!("/status/{id}")),
            "/status/{request_id}"
        );
        assert_eq!(
            labels.label(&format!("/requests/{id}/webhooks/redeliver")),
            "/requests/{request_id}/webhooks/redeliver"
        );
        assert_eq!(
            labels.label(&format!("/files/{id}/0-1.jpg")),
            "/files/{request_id}/{name}"
        );
        assert_eq!(labels.label("/docs/index.css"), "/docs");
        assert_eq!(labels.label(&format!("/requests/{id}/nope")), "unmatched");
        assert_eq!(labels.label("/wp-admin/login.php"), "unmatched");
        assert_eq!(labels.label("/"), "unmatched");
    }

    #[test]
    fn labels_come_from_the_document() {
        let labels =
            RouteLabels::from_spec(r#"{"paths":{"/metrics":{},"/status/{request_id}":{}}}"#);
        assert_eq!(labels.label("/metrics"), "/metrics");
        assert_eq!(labels.label("/status/x"), "/status/{request_id}");
        assert_eq!(labels.label("/openapi.json"), "/openapi.json");
    }
}
