//! The DNS resolver plugged into reqwest: it resolves with the system
//! resolver and refuses a name when the deny table refuses any of its addresses,
//! so a name that points at 127.0.0.1 or 169.254.169.254 never gets a connection.
//!
//! IP-literal hosts never reach a resolver (hyper connects to them
//! directly); those are checked by [`super::check_url`] instead.

use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::error::FetchError;
use super::guard::check_ip;

/// Resolver that checks answers through [`check_ip`]; it fails with
/// [`FetchError::RefusedAddress`] for the first refused address, which [`FetchError::from_reqwest`] finds again in reqwest's
/// error chain.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    allow: Arc<[IpNet]>,
}

impl GuardedResolver {
    pub(crate) fn new(allow: Arc<[IpNet]>) -> Self {
        Self { allow }
    }

    /// Resolves `host`; refused unless every address is permitted.
    pub(crate) async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, FetchError> {
        let found = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| FetchError::Connect(format!("could not resolve {host}: {e}")))?;
        filter(found, &self.allow, host)
    }
}

/// The answer's addresses when every one is permitted (SPEC §7); else refused whole.
/// A name that resolves to a private address beside public ones is refused even
/// though only the public ones would be connected: such an answer is how a
/// rebinding attack or a split-horizon name reaches inside, and which address wins
/// is not ours to choose.
fn filter(
    found: impl IntoIterator<Item = SocketAddr>,
    allow: &[IpNet],
    host: &str,
) -> Result<Vec<SocketAddr>, FetchError> {
    let mut kept = Vec::new();
    for addr in found {
        if let Err(e) = check_ip(addr.ip(), allow) {
            tracing::debug!(host, addr = %addr.ip(), "refusing a name that resolves to a refused address");
            return Err(match e {
                FetchError::RefusedAddress { ip, reason, .. } => FetchError::RefusedAddress {
                    ip,
                    reason,
                    name: Some(host.to_owned()),
                },
                other => other,
            });
        }
        if !kept.contains(&addr) {
            kept.push(addr);
        }
    }
    if kept.is_empty() {
        return Err(FetchError::Connect(format!(
            "could not resolve {host}: no addresses"
        )));
    }
    Ok(kept)
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
    fn filter_keeps_an_answer_that_is_all_public() {
        let got = filter(
            [sa("8.8.8.8:0"), sa("[2606:4700::1]:0"), sa("8.8.8.8:0")],
            &[],
            "public.test",
        )
        .expect("public");
        assert_eq!(got, vec![sa("8.8.8.8:0"), sa("[2606:4700::1]:0")]);
    }

    /// SPEC §7: every address a name resolves to must be public, so one refused
    /// address refuses the name, wherever it comes in the answer.
    #[test]
    fn filter_refuses_a_name_with_any_refused_address() {
        for answer in [
            [sa("8.8.8.8:0"), sa("127.0.0.1:0")],
            [sa("[::1]:0"), sa("[2606:4700::1]:0")],
        ] {
            let err = filter(answer, &[], "mixed.test").expect_err("refused");
            assert_eq!(
                err.to_string(),
                "refused address of mixed.test (a private or reserved network)"
            );
        }
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        let got =
            filter([sa("8.8.8.8:0"), sa("127.0.0.1:0")], &allow, "mixed.test").expect("allowed");
        assert_eq!(got, vec![sa("8.8.8.8:0"), sa("127.0.0.1:0")]);
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
        // Both loopbacks: a host's `localhost` may resolve to `::1` too.
        let allow: Vec<IpNet> = ["127.0.0.0/8", "::1/128"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        let r = GuardedResolver::new(Arc::from(allow));
        let got = r.lookup("localhost").await.expect("allowed");
        assert!(
            !got.is_empty() && got.iter().all(|a| a.ip().is_loopback()),
            "{got:?}"
        );
    }
}
