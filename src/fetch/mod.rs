//! Outbound HTTP for pixbatch (spec §7): downloading image URLs and posting
//! webhooks, both to URLs written by strangers.
//!
//! Because the URLs are untrusted, every request is guarded against
//! server-side request forgery at each layer:
//!
//! 1. [`check_url`]: scheme http/https, a host, ≤ 2048 characters, no
//!    `user:pass@` credentials (rejected: they would be sent as Basic auth
//!    and leak into logs); IP-literal hosts in any spelling are checked
//!    against the deny table before connecting.
//! 2. A guarded DNS resolver refuses a name when any address it resolves to
//!    is denied (SPEC §7: every address must be public), not just the one
//!    that would be connected.
//! 3. Redirects are followed by hand (at most [`MAX_REDIRECTS`] for
//!    downloads, none for webhooks) and each target goes through step 1.
//! 4. The address actually connected is checked once more.
//!
//! No proxy is taken from the environment. The deny table is in
//! [`check_ip`]; `ALLOW_PRIVATE_NETWORKS` ([`parse_allow_list`]) reopens
//! chosen ranges and nothing else.
//!
//! Errors ([`FetchError`]) carry user-facing messages and say whether a
//! retry may help (spec §6).

mod client;
mod error;
mod guard;
mod limit;
mod resolver;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::time::Duration;

pub use client::{Conditional, Downloaded, Fetcher, MAX_REDIRECTS, Validators, WebhookResponse};
pub use error::{FetchError, fmt_bytes, fmt_duration};
pub use guard::{MAX_URL_LEN, check_ip, check_url, parse_allow_list};

/// A URL as logs show it: scheme, host, port and path, without user info, query or
/// fragment (`?…` marks a query left out). Merchants' image URLs are often signed in
/// their query (`X-Amz-Signature=`, `token=`), and a log line goes to log storage
/// and the dashboard's log stream; the whole URL stays in the database and the API.
pub fn loggable(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let had_query = parsed.query().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut shown = parsed.to_string();
            if had_query {
                shown.push_str("?…");
            }
            shown
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Longest wait for a TCP (and TLS) connection, downloads and webhooks alike.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default total timeout of one download (`FETCH_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest body accepted.
pub const DEFAULT_MAX_BYTES: u64 = 30 * 1024 * 1024;
/// Default number of parallel downloads from one host (`FETCH_PER_HOST_LIMIT`). A
/// catalogue's images usually share one host, so this also caps a process's rate: 8
/// with 100 ms to the first byte held two fast cores to ~75 images/s where they
/// convert ~89 (README, "Decisions"); 16 leaves room, and is still a handful of
/// connections to any one server.
pub const DEFAULT_PER_HOST_LIMIT: usize = 16;

/// Settings of the [`Fetcher`], filled from the environment by the caller.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Networks opened despite the deny table (`ALLOW_PRIVATE_NETWORKS`).
    pub allow: Vec<ipnet::IpNet>,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest a whole download may take, redirects and body included (`FETCH_TIMEOUT`).
    pub timeout: Duration,
    /// Largest body accepted, checked against `Content-Length` and while streaming.
    pub max_bytes: u64,
    /// Parallel downloads per host name (values below 1 count as 1).
    pub per_host_limit: usize,
    /// Sent as `User-Agent`, normally `pixbatch/<version>`.
    pub user_agent: String,
}

impl Default for FetchConfig {
    /// The documented defaults, deny table closed, User-Agent from the
    /// version of the crate this module is compiled into.
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_bytes: DEFAULT_MAX_BYTES,
            per_host_limit: DEFAULT_PER_HOST_LIMIT,
            user_agent: format!("pixbatch/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}
