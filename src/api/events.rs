//! `GET /requests/{id}/events`: live progress as Server-Sent Events.
//!
//! The stream polls the request's row rather than listening to the workers: the
//! workers may run in other processes, and the row's counters are the truth that
//! `/status` shows too. A `progress` event goes out whenever the counts or the status
//! change, a `status` event once the request is final, and then the stream ends.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use poem::web::sse::Event;
use poem_openapi::{
    ApiResponse, Object, OpenApi, param::Path, payload::EventStream, types::ToJSON,
};

use serde::Deserialize;

use super::{ApiError, ApiTags, AppState, ProblemResponse};
use crate::{
    domain::{Progress, RequestId, RequestStatus},
    store::Db,
};

/// The longest a stream lasts; it then ends without its `status` event, as at a
/// shutdown, and its client reconnects. A client that stopped reading but keeps its
/// connection open is otherwise noticed only when the socket's buffers fill, which the
/// keep-alive comments take days to do: this bounds how long it holds its place.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How often the stream looks at the request.
const POLL: Duration = Duration::from_millis(250);
/// A comment line this often (or at half `HTTP_IDLE_TIMEOUT`, when that is sooner)
/// keeps proxies, and our own idle timeout, from closing a stream whose client reads.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The body of a `progress` or `status` event: the image counts and the status.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
pub struct ProgressEvent {
    /// The counts, at the top level of the body.
    #[oai(flatten)]
    #[serde(flatten)]
    pub progress: Progress,
    /// The request's status; final in the `status` event.
    pub status: RequestStatus,
    /// Whether this is the closing `status` event (the event type, not in the body).
    #[oai(skip)]
    #[serde(skip)]
    pub last: bool,
}

/// Answers of the events endpoint.
#[derive(ApiResponse)]
pub enum EventsResponse {
    /// `event: progress` with the counts whenever images have finished (those within
    /// one 250 ms look share an event); `event: status` once the request is final,
    /// after which the stream ends. `:` comment lines keep it alive.
    #[oai(status = 200)]
    Ok(EventStream<BoxStream<'static, ProgressEvent>>),
}

/// Live progress endpoint.
pub struct EventsApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Requests")]
impl EventsApi {
    /// Live progress of a request
    ///
    /// Server-Sent Events: a `progress` event (`{total, succeeded, failed, pending,
    /// cancelled, reused, status}`) at once and whenever images have finished (the
    /// request is looked at every 250 ms: images that finish within one look share
    /// an event), then a `status` event with the final status, then the stream ends. 404 for an unknown
    /// request; 503 when the server holds `MAX_EVENT_STREAMS` streams already.
    #[oai(path = "/requests/:request_id/events", method = "get")]
    async fn events(&self, request_id: Path<String>) -> Result<EventsResponse, ProblemResponse> {
        let r = self.0.request(&request_id).await?;
        // Held by the stream, given back when it ends or its client goes away.
        let permit = self
            .0
            .event_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyStreams {
                limit: self.0.settings.server.max_event_streams,
            })?;
        // A stream ends with the process, without its closing `status` event: the
        // client sees the connection end and may reconnect to another API process.
        let stream = progress(self.0.db.clone(), r.id)
            .take_until(self.0.stopping.clone().cancelled_owned())
            .take_until(tokio::time::sleep(MAX_LIFETIME))
            .map(move |event| {
                let _held = &permit;
                event
            })
            .boxed();
        Ok(EventsResponse::Ok(
            EventStream::new(stream)
                .keep_alive(KEEP_ALIVE.min(self.0.settings.server.idle_timeout / 2))
                .to_event(|e| {
                    let kind = if e.last { "status" } else { "progress" };
                    Event::message(e.to_json_string()).event_type(kind)
                }),
        ))
    }
}

struct Poll {
    db: Db,
    id: RequestId,
    last: Option<ProgressEvent>,
    wait: bool,
    done: bool,
}

/// Polls the request until it is final: an event per change, then the closing one.
fn progress(db: Db, id: RequestId) -> BoxStream<'static, ProgressEvent> {
    let start = Poll {
        db,
        id,
        last: None,
        wait: false,
        done: false,
    };
    futures::stream::unfold(start, |mut p| async move {
        if p.done {
            return None;
        }
        loop {
            if p.wait {
                tokio::time::sleep(POLL).await;
            }
            p.wait = true;
            let (status, progress) = match p.db.progress(p.id).await {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(request_id = %p.id, error = %e, "event stream stopped");
                    return None;
                }
            };
            let now = ProgressEvent {
                progress,
                status,
                last: false,
            };
            if p.last.as_ref() != Some(&now) {
                // Final: the closing event follows at once.
                p.wait = !status.is_final();
                p.last = Some(now.clone());
                return Some((now, p));
            }
            if status.is_final() {
                p.done = true;
                return Some((ProgressEvent { last: true, ..now }, p));
            }
        }
    })
    .boxed()
}
