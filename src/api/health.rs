//! Liveness and readiness, for load balancers and orchestrators.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{ApiTags, AppState};
use crate::store::Writable;

/// A health answer.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok` or what is wrong.
    status: String,
}

/// Answers of the readiness check.
#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// Database reachable, migrations applied, blob store writable.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Not ready; the body says why.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

/// Health endpoints.
pub struct HealthApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process serves HTTP.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness
    ///
    /// 200 when the database answers, every migration is applied and the blob store
    /// takes writes (the last write's outcome if it is a few seconds old at most, else
    /// a tiny probe write). 503 with the reason otherwise, e.g. `blob store not
    /// writable: storage: no space left on device`.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self) -> ReadyResponse {
        match self.0.db.ready().await {
            Ok(true) => match self.0.blobs.writable().await {
                Writable::Yes => ReadyResponse::Ready(Json(Health {
                    status: "ok".into(),
                })),
                Writable::No(e) => ReadyResponse::NotReady(Json(Health {
                    status: format!("blob store not writable: {e}"),
                })),
            },
            Ok(false) => ReadyResponse::NotReady(Json(Health {
                status: "migrations not applied".into(),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                ReadyResponse::NotReady(Json(Health {
                    status: "database unavailable".into(),
                }))
            }
        }
    }
}
