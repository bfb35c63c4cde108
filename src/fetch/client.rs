//! [`Fetcher`]: the one outbound HTTP client, with the address guard at
//! every layer (URL check, guarded resolver, per-hop redirect check,
//! connected-address check), size and time limits and the per-host cap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use reqwest::header::{
    CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
    LOCATION, RETRY_AFTER,
};
use reqwest::{Response, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::FetchConfig;
use super::error::{FetchError, Reason, parse_retry_after};
use super::guard::{check_ip, check_parsed, check_url};
use super::limit::HostLimiter;
use super::resolver::GuardedResolver;

/// Redirect hops a download may follow; the 6th is refused.
pub const MAX_REDIRECTS: usize = 5;

/// How long an idle connection is kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// A downloaded body and where it finally came from.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// The whole body, at most `max_bytes` long.
    pub bytes: Bytes,
    /// The URL after redirects, for reports and logs.
    pub final_url: String,
    /// The `Content-Type` the server sent, if any and if it was valid text.
    pub content_type: Option<String>,
    /// The validators the server sent with the body, for a later conditional GET.
    pub validators: Validators,
}

/// A response's cache validators, as the origin sent them: what a later conditional
/// GET hands back (`If-None-Match`, else `If-Modified-Since`) to the URL that sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`, verbatim (strong or weak).
    pub etag: Option<String>,
    /// `Last-Modified`, verbatim (an HTTP date).
    pub last_modified: Option<String>,
    /// The URL (after redirects) whose response carried them; `None`: not sent at all.
    /// They describe that resource only: sent to another hop of a redirect chain that
    /// changed since, a 304 from it would pass a different image off as unchanged.
    pub url: Option<String>,
}

impl Validators {
    fn of(resp: &Response) -> Self {
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let etag = header(ETAG);
        let last_modified = header(LAST_MODIFIED);
        Self {
            url: (etag.is_some() || last_modified.is_some()).then(|| resp.url().to_string()),
            etag,
            last_modified,
        }
    }

    /// The one conditional header to send to `url`: none unless it is the URL that
    /// sent the validators; then `If-None-Match` when there is an ETag (it takes
    /// precedence at the origin anyway), else `If-Modified-Since`.
    fn header_for(&self, url: &Url) -> Option<(HeaderName, HeaderValue)> {
        if self.url.as_deref() != Some(url.as_str()) {
            return None;
        }
        if let Some(v) = self
            .etag
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            return Some((IF_NONE_MATCH, v));
        }
        self.last_modified
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
            .map(|v| (IF_MODIFIED_SINCE, v))
    }
}

/// What a conditional download got.
#[derive(Debug, Clone)]
pub enum Conditional {
    /// `304 Not Modified`: the bytes behind the validators sent are still current.
    NotModified {
        /// The URL after redirects that answered 304.
        final_url: String,
    },
    /// A full body (the resource changed, or the origin ignores validators).
    Modified(Downloaded),
}

/// What a webhook endpoint answered; the caller decides what the status means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    /// The HTTP status, including 3xx (redirects are never followed for webhooks).
    pub status: u16,
    /// `Retry-After` of a 429 or 503, capped at 24 h.
    pub retry_after: Option<Duration>,
}

/// The one outbound HTTP client for downloads and webhooks, with the address
/// guard inside it. Cheap to clone: everything sits behind one `Arc`.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    config: FetchConfig,
    allow: Arc<[IpNet]>,
    limiter: Arc<HostLimiter>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Outcome of one request in a redirect chain.
enum Hop {
    Redirect(Url),
    Done(Downloaded),
    NotModified,
}

impl Fetcher {
    /// Builds the client: guarded DNS resolver, no redirects followed by
    /// reqwest (we follow them ourselves to check each hop), no proxy from
    /// the environment, connect timeout and User-Agent from `config`.
    pub fn new(config: FetchConfig) -> Result<Fetcher, FetchError> {
        let allow: Arc<[IpNet]> = Arc::from(config.allow.clone());
        crate::tls::use_ring();
        let client = reqwest::Client::builder()
            .dns_resolver(GuardedResolver::new(Arc::clone(&allow)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .connect_timeout(config.connect_timeout)
            // reqwest keeps every idle connection for 90 s, with no bound: a CSV of
            // thousands of distinct hosts would hold a socket open for each, up to
            // the process' file limit. Connections to a catalogue's few image hosts
            // are reused within seconds (as many as may be open to one at once); the
            // rest go soon.
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(config.per_host_limit)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| FetchError::Setup(e.to_string()))?;
        Ok(Fetcher {
            inner: Arc::new(Inner {
                client,
                limiter: Arc::new(HostLimiter::new(config.per_host_limit)),
                allow,
                config,
            }),
        })
    }

    /// Hosts with downloads in flight or queued (tests check the map is cleaned up).
    #[cfg(test)]
    pub(crate) fn inner_tracked_hosts(&self) -> usize {
        self.inner.limiter.tracked_hosts()
    }

    /// The configuration this fetcher was built with.
    pub fn config(&self) -> &FetchConfig {
        &self.inner.config
    }

    /// GET with every guard; returns the whole body (≤ `max_bytes`).
    ///
    /// Follows at most 5 redirects, checking each target. The total timeout
    /// covers connecting, every hop and the body; time spent queued behind
    /// the per-host cap does not count.
    pub async fn download(&self, url: &str) -> Result<Downloaded, FetchError> {
        match self
            .download_conditional(url, &Validators::default())
            .await?
        {
            Conditional::Modified(done) => Ok(done),
            // Only a hop that sent validators can see a 304 as Ok.
            Conditional::NotModified { .. } => Err(FetchError::UnexpectedNotModified),
        }
    }

    /// As [`Self::download`], sending `validators` (when there are any) as
    /// `If-None-Match`, else `If-Modified-Since`, to the hop whose URL sent them
    /// ([`Validators::url`]), and to no other. Redirects, address
    /// checks, limits and timeouts are exactly those of a plain download. A `304` to a
    /// request that carried no validator is [`FetchError::UnexpectedNotModified`]
    /// (transient: a confused cache in front of the origin).
    pub async fn download_conditional(
        &self,
        url: &str,
        validators: &Validators,
    ) -> Result<Conditional, FetchError> {
        let result = self.download_inner(url, validators).await;
        if let Err(e) = &result {
            tracing::debug!(url = super::loggable(url), error = %Reason(e), transient = e.is_transient(), "download failed");
        }
        result
    }

    async fn download_inner(
        &self,
        url: &str,
        validators: &Validators,
    ) -> Result<Conditional, FetchError> {
        let inner = &self.inner;
        let timeout = inner.config.timeout;
        let mut url = check_url(url, &inner.allow)?;
        let mut deadline: Option<Instant> = None;
        let mut redirects = 0usize;
        loop {
            let host = url.host_str().unwrap_or_default().to_owned();
            let queued = Instant::now();
            let permit = inner.limiter.acquire(&host).await;
            let now = Instant::now();
            let hop_deadline = match deadline {
                None => now + timeout,
                Some(d) => d + (now - queued),
            };
            deadline = Some(hop_deadline);
            let hop = tokio::time::timeout_at(hop_deadline, self.get_once(&url, validators))
                .await
                .map_err(|_| FetchError::Timeout(timeout))??;
            match hop {
                Hop::Done(done) => return Ok(Conditional::Modified(done)),
                Hop::NotModified => {
                    return Ok(Conditional::NotModified {
                        final_url: url.to_string(),
                    });
                }
                Hop::Redirect(next) => {
                    drop(permit);
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(FetchError::TooManyRedirects);
                    }
                    check_parsed(&next, &inner.allow)?;
                    tracing::debug!(
                        from = super::loggable(url.as_str()),
                        to = super::loggable(next.as_str()),
                        "following redirect"
                    );
                    url = next;
                }
            }
        }
    }

    /// One GET: checks the connected address, turns statuses into errors or
    /// a redirect target, and reads the body under the size cap.
    async fn get_once(&self, url: &Url, validators: &Validators) -> Result<Hop, FetchError> {
        let inner = &self.inner;
        let timeout = inner.config.timeout;
        let conditional = validators.header_for(url);
        let mut req = inner.client.get(url.clone());
        if let Some((name, value)) = &conditional {
            req = req.header(name, value);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| FetchError::from_reqwest(&e, timeout, inner.config.connect_timeout))?;
        check_remote(resp.remote_addr(), &inner.allow)?;

        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return match conditional {
                Some(_) => Ok(Hop::NotModified),
                None => Err(FetchError::UnexpectedNotModified),
            };
        }
        if status.is_redirection() {
            let next = resp
                .headers()
                .get(LOCATION)
                // Raw UTF-8 as some servers send it (`/img/café.jpg`): `join`
                // percent-encodes it, as browsers do; `to_str` takes ASCII only.
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .filter(|_| is_follow_status(status))
                .ok_or(FetchError::BadRedirect(status.as_u16()))?;
            let next = url
                .join(next.trim())
                .map_err(|e| FetchError::InvalidUrl(format!("redirect target: {e}")))?;
            return Ok(Hop::Redirect(next));
        }
        if !status.is_success() {
            return Err(FetchError::Http {
                status: status.as_u16(),
                retry_after: retry_after(&resp),
            });
        }

        let max = inner.config.max_bytes;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(FetchError::TooLarge(max));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let validators = Validators::of(&resp);
        let capacity = resp.content_length().unwrap_or(0).min(max).min(1 << 20);
        let mut body = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::from_reqwest(&e, timeout, inner.config.connect_timeout))?
        {
            if (body.len() as u64).saturating_add(chunk.len() as u64) > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Hop::Done(Downloaded {
            bytes: body.freeze(),
            final_url: url.to_string(),
            content_type,
            validators,
        }))
    }

    /// POST a JSON body with extra headers for a webhook: no redirects, its
    /// own timeout; any HTTP status is returned as `Ok` (the caller decides
    /// what 2xx/410/other mean); refused address, timeouts and connect
    /// errors are `Err`. `Content-Type: application/json` is added unless
    /// `headers` has one.
    pub async fn post_webhook(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<WebhookResponse, FetchError> {
        let inner = &self.inner;
        let url = check_url(url, &inner.allow)?;
        let mut req = inner.client.post(url).body(body);
        let mut has_content_type = false;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| FetchError::Setup(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| FetchError::Setup(format!("header {name}: {e}")))?;
            has_content_type |= name == CONTENT_TYPE;
            req = req.header(name, value);
        }
        if !has_content_type {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let call = async {
            let resp = req
                .send()
                .await
                .map_err(|e| FetchError::from_reqwest(&e, timeout, inner.config.connect_timeout))?;
            check_remote(resp.remote_addr(), &inner.allow)?;
            Ok(WebhookResponse {
                status: resp.status().as_u16(),
                retry_after: retry_after(&resp),
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }
}

/// Statuses whose `Location` we follow; 300, 304, 305 and 306 are not redirects to follow.
fn is_follow_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Last guard: the address we are actually talking to. A missing address
/// fails closed.
fn check_remote(addr: Option<SocketAddr>, allow: &[IpNet]) -> Result<(), FetchError> {
    match addr {
        Some(a) => check_ip(a.ip(), allow),
        None => Err(FetchError::Connect("peer address unknown".into())),
    }
}

/// `Retry-After` of a 429 or 503 response.
fn retry_after(resp: &Response) -> Option<Duration> {
    if !matches!(resp.status().as_u16(), 429 | 503) {
        return None;
    }
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}
