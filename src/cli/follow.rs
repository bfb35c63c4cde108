//! Following a request to its end for `pixbatch submit --wait`: the server's event
//! stream drives the progress bar; if the stream cannot be had or breaks off, the
//! status is polled every second instead.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use indicatif::ProgressBar;
use uuid::Uuid;

use super::client::{Client, ProgressEvent, ok_or_problem};

/// The server sends a keep-alive comment every 15 s; this much silence means the
/// stream is dead.
const STREAM_SILENCE: Duration = Duration::from_secs(60);
/// How often the fallback polls.
const POLL: Duration = Duration::from_secs(1);
/// How long polls may fail one after another before the follow gives up. Each poll is
/// already patient with a server passing through trouble (see `client`); this bounds
/// the other failures too (a 500, an answer cut off by a restart), which a follow of
/// hours does not end on at once, and a server that is gone.
const POLL_GIVE_UP: Duration = Duration::from_secs(120);

/// Waits until the request is final, showing its progress on `bar`; returns the final
/// counts and status.
pub async fn follow(client: &Client, id: Uuid, bar: &ProgressBar) -> anyhow::Result<ProgressEvent> {
    match stream(client, id, bar).await {
        Ok(Some(last)) => return Ok(last),
        Ok(None) => bar.println("event stream ended early; polling the status instead"),
        Err(e) => bar.println(format!(
            "event stream unavailable ({e:#}); polling the status"
        )),
    }
    poll(client, id, bar).await
}

/// Shows the counts on the bar.
fn show(bar: &ProgressBar, e: &ProgressEvent) {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let p = &e.progress;
    bar.set_length(count(p.total));
    bar.set_position(count(p.finished()));
    if p.failed > 0 {
        bar.set_message(format!("{} failed", p.failed));
    }
}

/// Reads `/requests/{id}/events` until its `status` event (`Some`), or until it ends
/// without one (`None`).
async fn stream(
    client: &Client,
    id: Uuid,
    bar: &ProgressBar,
) -> anyhow::Result<Option<ProgressEvent>> {
    // The answer's head, too, within the silence allowed: a server (or a proxy) that
    // takes the connection and never answers would otherwise hold `--wait` for ever.
    let sent = client
        .request(reqwest::Method::GET, &format!("/requests/{id}/events"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send();
    let resp = tokio::time::timeout(STREAM_SILENCE, sent)
        .await
        .map_err(|_| anyhow::anyhow!("no answer for {}s", STREAM_SILENCE.as_secs()))?
        .context("connect")?;
    let body = ok_or_problem(resp).await?.bytes_stream();
    let mut events = std::pin::pin!(until_silent(body).eventsource());
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(EventStreamError::Transport(e)) => return Err(e),
            Err(e) => return Err(e).context("read"),
        };
        let Ok(p) = serde_json::from_str::<ProgressEvent>(&event.data) else {
            continue;
        };
        show(bar, &p);
        if event.event == "status" {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The body's chunks, ending in an error after [`STREAM_SILENCE`] without one. Timed
/// on chunks rather than events: keep-alive comments arrive as chunks, though no
/// event comes of them.
fn until_silent(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = anyhow::Result<Bytes>> {
    futures::stream::unfold(Box::pin(body), |mut body| async move {
        let chunk = match tokio::time::timeout(STREAM_SILENCE, body.next()).await {
            Err(_) => Err(anyhow::anyhow!("no data for {}s", STREAM_SILENCE.as_secs())),
            Ok(None) => return None,
            Ok(Some(chunk)) => chunk.context("read"),
        };
        Some((chunk, body))
    })
}

/// Polls `/status/{id}` every second until the request is final, giving up when no
/// poll has succeeded for [`POLL_GIVE_UP`].
async fn poll(client: &Client, id: Uuid, bar: &ProgressBar) -> anyhow::Result<ProgressEvent> {
    let mut answered = tokio::time::Instant::now();
    loop {
        match client.status(id).await {
            Ok(p) => {
                answered = tokio::time::Instant::now();
                show(bar, &p);
                if p.status.is_final() {
                    return Ok(p);
                }
            }
            Err(e) if answered.elapsed() >= POLL_GIVE_UP => {
                return Err(e.context("the server stopped answering"));
            }
            Err(_) => {}
        }
        tokio::time::sleep(POLL).await;
    }
}
