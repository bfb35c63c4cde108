//! The HTTP side of `pixbatch submit`: one client with the server's base URL and
//! token, and the shapes of the answers it reads.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, de::DeserializeOwned};
use uuid::Uuid;

pub use crate::api::{Problem, ProgressEvent};
use crate::domain::{Progress, RequestStatus};

/// Ordinary calls get this long; the upload and the event stream have their own limits.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a call is tried again while the server is passing through trouble: no
/// connection (a restart), a timeout, 429, 502, 503 (its database or storage away) or
/// 504; and how long a finished request's output CSV is waited for (a cancel's CSV is
/// written moments after the status turns final, unless storage is refusing writes).
/// A request followed for hours is not given up on one bad answer at its end.
const PATIENCE: Duration = Duration::from_secs(60);

/// A pixbatch server, as a client sees it.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

/// `202` from `POST /upload`.
#[derive(Debug, Deserialize)]
pub struct Accepted {
    /// The new request.
    pub request_id: Uuid,
    /// Where to poll.
    pub status_url: String,
    /// Product rows.
    pub products: u64,
    /// Image URLs.
    pub images: u64,
}

/// `GET /status/{id}`, the parts the client uses.
#[derive(Debug, Deserialize)]
struct StatusBody {
    status: RequestStatus,
    progress: Progress,
}

/// One image from `GET /requests/{id}/images`.
#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    /// Its product's serial.
    pub serial: String,
    /// 1-based position in the row.
    pub position: u32,
    /// The URL fetched.
    pub input_url: String,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Bytes downloaded.
    pub input_bytes: Option<i64>,
    /// Bytes stored.
    pub output_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ImagePage {
    items: Vec<Image>,
    next_offset: Option<u32>,
}

impl Client {
    /// A client for `server` (its base URL), sending `token` as a bearer when given.
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let server = server.trim_end_matches('/').to_owned();
        url::Url::parse(&server).with_context(|| format!("invalid server URL {server:?}"))?;
        crate::tls::use_ring();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Well inside any server's idle timeout (`HTTP_IDLE_TIMEOUT` is at least
            // 2 s): a pooled connection the server is closing is not reused.
            .pool_idle_timeout(Duration::from_secs(1))
            .user_agent(format!("pixbatch-submit/{}", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            server,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    /// A request to `path` on the server, with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.server));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// GETs `path`, asking again for up to [`PATIENCE`] while the answer is a passing
    /// failure (see there) or `also_wait_on`; returns the first other answer.
    async fn get_patiently(
        &self,
        path: &str,
        timeout: Duration,
        also_wait_on: Option<reqwest::StatusCode>,
    ) -> anyhow::Result<reqwest::Response> {
        use reqwest::StatusCode;
        let give_up = tokio::time::Instant::now() + PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            let sent = self
                .request(reqwest::Method::GET, path)
                .timeout(timeout)
                .send()
                .await;
            let passing = match &sent {
                Ok(resp) => {
                    let s = resp.status();
                    matches!(
                        s,
                        StatusCode::TOO_MANY_REQUESTS
                            | StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) || Some(s) == also_wait_on
                }
                // No connection, a timeout, or one dropped mid-request (a restart).
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if !passing || tokio::time::Instant::now() + pause >= give_up {
                return sent.with_context(|| format!("GET {path}"));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// GETs `path` (patiently) and decodes the JSON answer; a non-2xx becomes an error
    /// with the problem's detail.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.get_patiently(path, CALL_TIMEOUT, None).await?;
        let resp = ok_or_problem(resp).await?;
        resp.json()
            .await
            .with_context(|| format!("GET {path}: unexpected answer"))
    }

    /// The request's counts and status, as its events carry them.
    pub async fn status(&self, id: Uuid) -> anyhow::Result<ProgressEvent> {
        let s: StatusBody = self.get_json(&format!("/status/{id}")).await?;
        Ok(ProgressEvent {
            progress: s.progress,
            status: s.status,
            last: s.status.is_final(),
        })
    }

    /// Every image of the request, page by page.
    pub async fn images(&self, id: Uuid) -> anyhow::Result<Vec<Image>> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page: ImagePage = self
                .get_json(&format!("/requests/{id}/images?offset={offset}&limit=1000"))
                .await?;
            out.extend(page.items);
            match page.next_offset {
                Some(next) if next > offset => offset = next,
                _ => return Ok(out),
            }
        }
    }

    /// The output CSV's bytes, of a request whose status is final. A cancelled
    /// request is final at once and its CSV follows: a 409 is asked again, for up to
    /// [`PATIENCE`]. So is a download cut off mid-body (a server restart, a proxy's):
    /// the whole GET again, as a cut before the answer is.
    pub async fn output_csv(&self, id: Uuid) -> anyhow::Result<Vec<u8>> {
        let path = format!("/requests/{id}/output.csv");
        let give_up = tokio::time::Instant::now() + PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            let resp = self
                .get_patiently(&path, CALL_TIMEOUT * 5, Some(reqwest::StatusCode::CONFLICT))
                .await?;
            let resp = ok_or_problem(resp).await?;
            match resp.bytes().await {
                Ok(bytes) => return Ok(bytes.to_vec()),
                Err(e) if tokio::time::Instant::now() + pause < give_up => {
                    tell!("the output CSV's download was cut off ({e}); asking again");
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("GET {path}: the body"));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// The response when it is a success; otherwise an error carrying the problem.
pub async fn ok_or_problem(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let p = problem_of(resp).await;
    anyhow::bail!("HTTP {} {}: {}", p.status, p.title, p.detail)
}

/// Reads a problem body; anything else (another JSON object from a proxy, say) becomes
/// a problem with the response's status and the body as its detail.
pub async fn problem_of(resp: reqwest::Response) -> Problem {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    // Every member of a problem is optional: only a body naming a status is taken as one.
    serde_json::from_slice::<Problem>(&body)
        .ok()
        .filter(|p| p.status != 0)
        .unwrap_or_else(|| Problem {
            // RFC 9457's type for a problem described by its status alone.
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&body).chars().take(500).collect(),
            errors: None,
            invalid_params: None,
        })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use poem::{
        EndpointExt, Response, Route, Server, handler,
        http::StatusCode,
        listener::{Acceptor, Listener, TcpListener},
        web::Data,
    };

    use super::*;

    /// Answers 409 to the first two calls (a cancelled request whose CSV is still
    /// being written), then the CSV.
    #[handler]
    fn csv_after_two_conflicts(calls: Data<&Arc<AtomicU32>>) -> Response {
        if calls.fetch_add(1, Ordering::SeqCst) < 2 {
            return Response::builder()
                .status(StatusCode::CONFLICT)
                .content_type("application/problem+json")
                .body(r#"{"status":409,"title":"Conflict","detail":"still being written"}"#);
        }
        Response::builder().content_type("text/csv").body("a,b\n")
    }

    /// Answers 503 (the server's database away) to the first two calls, then a page.
    #[handler]
    fn images_after_two_outages(calls: Data<&Arc<AtomicU32>>) -> Response {
        if calls.fetch_add(1, Ordering::SeqCst) < 2 {
            return Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .content_type("application/problem+json")
                .body(r#"{"status":503,"title":"Service Unavailable","detail":"the database is unavailable"}"#);
        }
        Response::builder()
            .content_type("application/json")
            .body(r#"{"items":[],"next_offset":null}"#)
    }

    /// The CSV cut off after its first bytes the first time (the connection dropped
    /// mid-body), whole the second.
    #[handler]
    fn csv_cut_off_once(calls: Data<&Arc<AtomicU32>>) -> Response {
        use futures::StreamExt;
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        let head = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"a,b\n"))
        });
        // The rest a moment later: the answer's head and first bytes are out by then.
        let rest = futures::stream::once(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if first {
                Err(std::io::Error::other("cut off"))
            } else {
                Ok(bytes::Bytes::from_static(b"1,2\n"))
            }
        });
        let body = head.chain(rest);
        // Its length declared, as the server declares it: the cut is then seen.
        Response::builder()
            .content_type("text/csv")
            .header("content-length", "8")
            .body(poem::Body::from_bytes_stream(body))
    }

    /// A proxy's answer: JSON, but not a problem document.
    #[handler]
    fn proxy_refusal(calls: Data<&Arc<AtomicU32>>) -> Response {
        calls.fetch_add(1, Ordering::SeqCst);
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .content_type("application/json")
            .body(r#"{"message":"blocked by policy"}"#)
    }

    /// A client of a server with `app`'s routes, on a port of its own.
    async fn client_of(app: impl poem::Endpoint + 'static) -> Client {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind");
        let addr = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .expect("a TCP address");
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Client::new(&format!("http://{addr}"), None).expect("client")
    }

    #[tokio::test]
    async fn the_output_csv_of_a_finished_request_is_waited_for() {
        let calls = Arc::new(AtomicU32::new(0));
        let client = client_of(
            Route::new()
                .at("/requests/:id/output.csv", csv_after_two_conflicts)
                .data(calls.clone()),
        )
        .await;
        let csv = client.output_csv(Uuid::nil()).await.expect("the CSV");
        assert_eq!(csv, b"a,b\n");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// A download cut off mid-body is asked again, whole (it ended `submit --wait`
    /// with no file, however long the wait before it).
    #[tokio::test]
    async fn an_output_csv_cut_off_mid_body_is_asked_again() {
        let calls = Arc::new(AtomicU32::new(0));
        let client = client_of(
            Route::new()
                .at("/requests/:id/output.csv", csv_cut_off_once)
                .data(calls.clone()),
        )
        .await;
        let csv = client.output_csv(Uuid::nil()).await.expect("the CSV");
        assert_eq!(csv, b"a,b\n1,2\n");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A 503 is the server passing through trouble: asked again. A refusal is final, and
    /// one that is not a problem document still says its status and what it said.
    #[tokio::test]
    async fn passing_failures_are_asked_again_and_refusals_are_not() {
        let pages = Arc::new(AtomicU32::new(0));
        let refusals = Arc::new(AtomicU32::new(0));
        let client = client_of(
            Route::new()
                .at(
                    "/requests/:id/images",
                    images_after_two_outages.data(pages.clone()),
                )
                .at("/status/:id", proxy_refusal.data(refusals.clone())),
        )
        .await;
        let images = client.images(Uuid::nil()).await.expect("the images");
        assert!(images.is_empty());
        assert_eq!(pages.load(Ordering::SeqCst), 3);

        let err = client.status(Uuid::nil()).await.expect_err("refused");
        assert_eq!(refusals.load(Ordering::SeqCst), 1);
        let err = format!("{err:#}");
        assert!(err.contains("HTTP 403 Forbidden"), "{err}");
        assert!(err.contains("blocked by policy"), "{err}");
    }
}
