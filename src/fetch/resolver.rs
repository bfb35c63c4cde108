//! The DNS resolver plugged into reqwest: it resolves with the system
//! resolver and drops every address the deny table refuses, so a name that
//! points at 127.0.0.1 or 169.254.169.254 never gets a connection.
//!
//! IP-literal hosts never reach a resolver (hyper connects to them
//! directly); those are checked by [`super::check_url`] instead.

use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::error::FetchError;
use super::guard::check_ip;

/// Resolver that filters answers through [`check_ip`]; when nothing is left
/// it fails with [`FetchError::RefusedAddress`] for the first refused
/// address, which [`FetchError::from_reqwest`] finds again in reqwest's
/// error chain.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    allow: Arc<[IpNet]>,
}

impl GuardedResolver {
    pub(crate) fn new(allow: Arc<[IpNet]>) -> Self {
        Self { allow }
    }

    /// Resolves `host` and keeps only permitted addresses.
    pub(crate) async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, FetchError> {
        let found = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| FetchError::Connect(format!("could not resolve {host}: {e}")))?;
        filter(found, &self.allow, host)
    }
}

/// Keeps the permitted addresses; refuses when none is left.
fn filter(
    found: impl IntoIterator<Item = SocketAddr>,
    allow: &[IpNet],
    host: &str,
) -> Result<Vec<SocketAddr>, FetchError> {
    let mut kept = Vec::new();
    let mut first_refusal = None;
    for addr in found {
        match check_ip(addr.ip(), allow) {
            Ok(()) => {
                if !kept.contains(&addr) {
                    kept.push(addr);
                }
            }
            Err(e) => {
                tracing::debug!(host, addr = %addr.ip(), "dropping refused DNS answer");
                first_refusal.get_or_insert(match e {
                    FetchError::RefusedAddress { ip, reason, .. } => FetchError::RefusedAddress {
                        ip,
                        reason,
                        name: Some(host.to_owned()),
                    },
                    other => other,
                });
            }
        }
    }
    if !kept.is_empty() {
        return Ok(kept);
    }
    Err(first_refusal
        .unwrap_or_else(|| FetchError::Connect(format!("could not resolve {host}: no addresses"))))
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.lookup(&host).await?;
            let iter: Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket addr")
    }

    #[test]
    fn filter_drops_refused_and_keeps_public() {
        let got = filter(
            [
                sa("127.0.0.1:0"),
                sa("8.8.8.8:0"),
                sa("[::1]:0"),
                sa("[2606:4700::1]:0"),
            ],
            &[],
            "mixed.test",
        )
        .expect("some left");
        assert_eq!(got, vec![sa("8.8.8.8:0"), sa("[2606:4700::1]:0")]);
    }

    #[test]
    fn filter_refuses_when_nothing_left() {
        let err = filter(
            [sa("169.254.169.254:0"), sa("10.0.0.1:0")],
            &[],
            "meta.test",
        )
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "refused address of meta.test (a private or reserved network)"
        );
        assert!(
            matches!(&err, FetchError::RefusedAddress { ip, .. } if ip.to_string() == "169.254.169.254"),
            "the log's line keeps the address: {err:?}"
        );
        let err = filter([], &[], "empty.test").expect_err("none");
        assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    }

    #[tokio::test]
    async fn localhost_is_refused_without_allow_list() {
        let r = GuardedResolver::new(Arc::from(Vec::<IpNet>::new()));
        let err = r.lookup("localhost").await.expect_err("refused");
        assert!(matches!(err, FetchError::RefusedAddress { .. }), "{err:?}");
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        let r = GuardedResolver::new(Arc::from(allow));
        let got = r.lookup("localhost").await.expect("allowed");
        assert!(
            got.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{got:?}"
        );
    }
}
