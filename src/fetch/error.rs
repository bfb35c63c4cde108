//! The one error type of the fetch module, its transient/permanent split
//! (spec §6) and the small formatting helpers behind its messages.

use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::domain::FailureCode;

/// Longest `Retry-After` we pass on: a stranger's server must not be able to
/// park a job for years.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a download or webhook call failed, worded for the person who wrote the CSV.
///
/// Every variant is either transient (worth retrying later) or permanent
/// (retrying cannot help); see [`FetchError::is_transient`]. The type is
/// `Clone` and owns only strings so it can be stored in job results.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL is malformed, too long, not http(s), has no host or carries credentials.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The destination address is in the deny table (loopback, private, metadata, …).
    /// `reason` names the matching rule, e.g. `"loopback"`; it is kept out of the
    /// message so the message stays exactly `refused address <ip>`. For a host name
    /// the message names the name, not the address it resolved to: the person who
    /// wrote the CSV (or the webhook URL) must not learn the addresses of names inside
    /// a private network by asking for them. The log line ([`Reason`]) has both.
    #[error("refused address {}", RefusedTarget(ip, name.as_deref()))]
    RefusedAddress {
        /// The refused address (the embedded IPv4 is not substituted: this is what was asked for).
        ip: IpAddr,
        /// Short name of the deny rule that matched.
        reason: String,
        /// The host name that resolved to `ip`; `None` for an IP literal.
        name: Option<String>,
    },
    /// DNS failure, TCP connect failure or TLS handshake failure.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The connection broke while the response was being read.
    #[error("connection failed: {0}")]
    Read(String),
    /// The whole operation (connect, redirects, body) took longer than allowed.
    #[error("timed out after {}", fmt_duration(*.0))]
    Timeout(Duration),
    /// No connection (DNS, TCP and TLS) within the connect timeout: said apart from
    /// [`Self::Timeout`], whose longer limit it is not.
    #[error("no connection within {}", fmt_duration(*.0))]
    ConnectTimeout(Duration),
    /// The server answered with a non-success status (downloads only; webhooks return any status).
    #[error("HTTP {status}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// `Retry-After` of a 429 or 503, capped at 24 h.
        retry_after: Option<Duration>,
    },
    /// A 3xx without a `Location` we can follow.
    #[error("HTTP {0} redirect without a usable Location")]
    BadRedirect(u16),
    /// `304 Not Modified` to a request that sent no validator: nothing to be
    /// "not modified" from. Transient (a misbehaving cache in front of the origin).
    #[error("HTTP 304 to a request without validators")]
    UnexpectedNotModified,
    /// More than the allowed number of redirect hops.
    #[error("too many redirects")]
    TooManyRedirects,
    /// The body (announced or actually sent) exceeds `max_bytes`.
    #[error("larger than {}", fmt_bytes(*.0))]
    TooLarge(u64),
    /// The request could not be built (bad header name or value, client setup).
    #[error("request setup failed: {0}")]
    Setup(String),
}

impl FetchError {
    /// Whether retrying later may succeed: connect/read errors, timeouts,
    /// 5xx, 408 and 429 are transient; everything else is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Connect(_)
            | FetchError::Read(_)
            | FetchError::Timeout(_)
            | FetchError::ConnectTimeout(_)
            | FetchError::UnexpectedNotModified => true,
            FetchError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            FetchError::InvalidUrl(_)
            | FetchError::RefusedAddress { .. }
            | FetchError::BadRedirect(_)
            | FetchError::TooManyRedirects
            | FetchError::TooLarge(_)
            | FetchError::Setup(_) => false,
        }
    }

    /// The stable code of this kind of failure.
    pub fn code(&self) -> FailureCode {
        match self {
            FetchError::InvalidUrl(_) | FetchError::BadRedirect(_) => FailureCode::InvalidUrl,
            FetchError::RefusedAddress { .. } => FailureCode::RefusedAddress,
            FetchError::Connect(_) | FetchError::Read(_) => FailureCode::ConnectFailed,
            FetchError::Timeout(_) | FetchError::ConnectTimeout(_) => FailureCode::Timeout,
            FetchError::Http { .. } => FailureCode::HttpError,
            FetchError::TooManyRedirects => FailureCode::TooManyRedirects,
            FetchError::TooLarge(_) => FailureCode::TooLarge,
            FetchError::UnexpectedNotModified | FetchError::Setup(_) => FailureCode::FetchFailed,
        }
    }

    /// The server's `Retry-After` (429/503 only), so the caller can wait at
    /// least that long before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Maps a reqwest error to ours. A [`FetchError`] raised inside reqwest
    /// (by the guarded resolver) is found in the source chain and returned as is.
    /// `timeout` is the whole operation's limit, `connect_timeout` the connection's.
    pub(crate) fn from_reqwest(
        err: &reqwest::Error,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> FetchError {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(ours) = e.downcast_ref::<FetchError>() {
                return ours.clone();
            }
            cur = e.source();
        }
        if err.is_timeout() && err.is_connect() {
            return FetchError::ConnectTimeout(connect_timeout);
        }
        if err.is_timeout() {
            return FetchError::Timeout(timeout);
        }
        if err.is_builder() {
            return FetchError::Setup(root_cause(err));
        }
        if err.is_body() || err.is_decode() {
            return FetchError::Read(root_cause(err));
        }
        FetchError::Connect(root_cause(err))
    }
}

/// The most specific messages of an error chain, without reqwest's
/// "error sending request for url (…)" wrapper that would repeat the URL.
fn root_cause(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p == &s) {
            parts.push(s);
        }
        cur = e.source();
    }
    match parts.len() {
        0 => err.to_string(),
        1 => parts.remove(0),
        n => format!("{}: {}", parts[n - 2], parts[n - 1]),
    }
}

/// Formats a byte count for people: `30 MiB`, `1.5 MiB`, `512 KiB`, `100 bytes`.
pub fn fmt_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * 1024 * 1024;
    let (unit, name) = if n >= GIB {
        (GIB, "GiB")
    } else if n >= MIB {
        (MIB, "MiB")
    } else if n >= KIB {
        (KIB, "KiB")
    } else {
        return format!("{n} bytes");
    };
    if n.is_multiple_of(unit) {
        format!("{} {name}", n / unit)
    } else {
        let v = n as f64 / unit as f64;
        let s = format!("{v:.1}");
        format!("{} {name}", s.trim_end_matches(".0"))
    }
}

/// Formats a timeout for people: `30 s`, `2.5 s`, `500 ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        return format!("{} ms", d.as_millis());
    }
    if d.subsec_millis() == 0 {
        return format!("{} s", d.as_secs());
    }
    let s = format!("{:.1}", d.as_secs_f64());
    format!("{} s", s.trim_end_matches(".0"))
}

/// Parses a `Retry-After` value: delay in seconds or an HTTP date; capped at 24 h.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let d = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = humantime::parse_rfc3339_weak(value)
            .ok()
            .or_else(|| httpdate::parse_http_date(value).ok())?;
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// What a refusal names to the user: the IP literal as written, or the host name.
struct RefusedTarget<'a>(&'a IpAddr, Option<&'a str>);

impl fmt::Display for RefusedTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(name) => write!(f, "of {name} (a private or reserved network)"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Display helper used in tracing fields.
pub(crate) struct Reason<'a>(pub &'a FetchError);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            FetchError::RefusedAddress { ip, reason, name } => match name {
                Some(name) => write!(f, "refused address {ip} of {name} ({reason})"),
                None => write!(f, "refused address {ip} ({reason})"),
            },
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            FetchError::TooLarge(30 * 1024 * 1024).to_string(),
            "larger than 30 MiB"
        );
        assert_eq!(
            FetchError::TooLarge(1536 * 1024).to_string(),
            "larger than 1.5 MiB"
        );
        assert_eq!(
            FetchError::TooLarge(512 * 1024).to_string(),
            "larger than 512 KiB"
        );
        assert_eq!(
            FetchError::TooLarge(100).to_string(),
            "larger than 100 bytes"
        );
        assert_eq!(
            FetchError::TooLarge(3 << 30).to_string(),
            "larger than 3 GiB"
        );
        assert_eq!(
            FetchError::Timeout(Duration::from_secs(30)).to_string(),
            "timed out after 30 s"
        );
        assert_eq!(
            FetchError::Timeout(Duration::from_millis(2500)).to_string(),
            "timed out after 2.5 s"
        );
        assert_eq!(
            FetchError::Timeout(Duration::from_millis(200)).to_string(),
            "timed out after 200 ms"
        );
        let refused = FetchError::RefusedAddress {
            ip: "169.254.169.254".parse().expect("ip"),
            reason: "cloud metadata".into(),
            name: None,
        };
        assert_eq!(refused.to_string(), "refused address 169.254.169.254");
        assert_eq!(
            Reason(&refused).to_string(),
            "refused address 169.254.169.254 (cloud metadata)"
        );
        let by_name = FetchError::RefusedAddress {
            ip: "10.20.30.40".parse().expect("ip"),
            reason: "private".into(),
            name: Some("db.corp.internal".into()),
        };
        assert_eq!(
            by_name.to_string(),
            "refused address of db.corp.internal (a private or reserved network)"
        );
        assert_eq!(
            Reason(&by_name).to_string(),
            "refused address 10.20.30.40 of db.corp.internal (private)"
        );
        assert_eq!(
            FetchError::Http {
                status: 404,
                retry_after: None
            }
            .to_string(),
            "HTTP 404"
        );
        assert_eq!(
            FetchError::TooManyRedirects.to_string(),
            "too many redirects"
        );
        assert_eq!(
            FetchError::InvalidUrl("no host".into()).to_string(),
            "invalid URL: no host"
        );
    }

    #[test]
    fn transient_split() {
        let http = |status| FetchError::Http {
            status,
            retry_after: None,
        };
        for s in [500, 502, 503, 504, 408, 429] {
            assert!(http(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 451, 300, 304] {
            assert!(!http(s).is_transient(), "{s}");
        }
        assert!(FetchError::Connect("x".into()).is_transient());
        assert!(FetchError::Read("x".into()).is_transient());
        assert!(FetchError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!FetchError::TooLarge(1).is_transient());
        assert!(!FetchError::TooManyRedirects.is_transient());
        assert!(!FetchError::BadRedirect(302).is_transient());
        assert!(!FetchError::InvalidUrl("x".into()).is_transient());
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("99999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let future = SystemTime::now() + Duration::from_secs(3600);
        let text = humantime::format_rfc3339_seconds(future).to_string();
        let d = parse_retry_after(&text).expect("rfc3339 date");
        assert!(d > Duration::from_secs(3500) && d <= Duration::from_secs(3600));
        let text = httpdate::fmt_http_date(future);
        let d = parse_retry_after(&text).expect("HTTP date");
        assert!(d > Duration::from_secs(3500) && d <= Duration::from_secs(3600));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }
}
