//! Following a request to its end for `pixbatch submit --wait`: the server's event
//! stream drives the progress bar; if the stream cannot be had or breaks off, the
//! status is polled every second instead.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use indicatif::ProgressBar;
use uuid::Uuid;

use super::{
    client::{Client, Progress, ok_or_problem},
    sse::SseParser,
};

/// The server sends a keep-alive comment every 15 s; this much silence means the
/// stream is dead.
const STREAM_SILENCE: Duration = Duration::from_secs(60);
/// How often the fallback polls.
const POLL: Duration = Duration::from_secs(1);
/// Consecutive failed polls before giving up.
const POLL_ERRORS: u32 = 30;

/// Waits until the request is final, showing its progress on `bar`; returns the final
/// counts and status.
pub async fn follow(client: &Client, id: Uuid, bar: &ProgressBar) -> anyhow::Result<Progress> {
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
fn show(bar: &ProgressBar, p: &Progress) {
    bar.set_length(p.total);
    bar.set_position(p.succeeded + p.failed);
    if p.failed > 0 {
        bar.set_message(format!("{} failed", p.failed));
    }
}

/// Reads `/requests/{id}/events` until its `status` event (`Some`), or until it ends
/// without one (`None`).
async fn stream(client: &Client, id: Uuid, bar: &ProgressBar) -> anyhow::Result<Option<Progress>> {
    let resp = client
        .request(reqwest::Method::GET, &format!("/requests/{id}/events"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .context("connect")?;
    let mut body = ok_or_problem(resp).await?.bytes_stream();
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(STREAM_SILENCE, body.next()).await {
            Err(_) => anyhow::bail!("no data for {}s", STREAM_SILENCE.as_secs()),
            Ok(None) => return Ok(None),
            Ok(Some(chunk)) => chunk.context("read")?,
        };
        for event in parser.push(&chunk) {
            let Ok(p) = serde_json::from_str::<Progress>(&event.data) else {
                continue;
            };
            show(bar, &p);
            if event.kind == "status" {
                return Ok(Some(p));
            }
        }
    }
}

/// Polls `/status/{id}` every second until the request is final.
async fn poll(client: &Client, id: Uuid, bar: &ProgressBar) -> anyhow::Result<Progress> {
    let mut errors = 0;
    loop {
        match client.status(id).await {
            Ok(p) => {
                errors = 0;
                show(bar, &p);
                if p.status.is_final() {
                    return Ok(p);
                }
            }
            Err(e) => {
                errors += 1;
                if errors >= POLL_ERRORS {
                    return Err(e.context("the server stopped answering"));
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
