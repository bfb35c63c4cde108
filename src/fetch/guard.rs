//! Address rules: which URLs and which IP addresses the service may reach.
//!
//! URLs come from strangers, so every address we would connect to is checked
//! against a deny table of loopback, private, link-local, metadata, reserved
//! and documentation ranges, including IPv6 forms that embed such an IPv4
//! (mapped, compatible, NAT64, 6to4, Teredo). The operator can reopen chosen
//! ranges with `ALLOW_PRIVATE_NETWORKS` (see [`parse_allow_list`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

use super::error::FetchError;

/// Longest URL we accept (bytes); longer ones are almost always garbage or an attack.
pub const MAX_URL_LEN: usize = 2048;

/// IPv4 deny table: (network, prefix length, reason). More specific entries
/// come first so the reason is the most telling one.
const DENY_V4: &[([u8; 4], u8, &str)] = &[
    ([169, 254, 169, 254], 32, "cloud metadata"),
    ([255, 255, 255, 255], 32, "broadcast"),
    ([0, 0, 0, 0], 8, "this network"),
    ([10, 0, 0, 0], 8, "private (RFC 1918)"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private (RFC 1918)"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "private (RFC 1918)"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// IPv6 deny table for ranges that do not embed an IPv4 address.
const DENY_V6: &[([u16; 8], u8, &str)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
    ([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
    (
        [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254],
        128,
        "cloud metadata",
    ),
    (
        [0x0064, 0xff9b, 0x0001, 0, 0, 0, 0, 0],
        48,
        "local-use NAT64",
    ),
    ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
    ([0x2001, 0x0002, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
    ([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local"),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    Ipv4Net::new(Ipv4Addr::from(net), len).is_ok_and(|n| n.contains(&ip))
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u8) -> bool {
    Ipv6Net::new(Ipv6Addr::from(net), len).is_ok_and(|n| n.contains(&ip))
}

/// The IPv4 address an IPv6 address stands for, if it is one of the
/// embedding forms, with the name of the form.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let o = ip.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((last32, "IPv4-mapped")),
        // ::ffff:0:a.b.c.d (SIIT, RFC 6145)
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some((last32, "IPv4-translated")),
        // ::a.b.c.d (deprecated IPv4-compatible); :: and ::1 are handled by the table.
        [0, 0, 0, 0, 0, 0, _, _] => Some((last32, "IPv4-compatible")),
        // 64:ff9b::a.b.c.d (well-known NAT64 prefix, RFC 6052)
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some((last32, "NAT64")),
        // 2002:aabb:ccdd::/48 (6to4)
        [0x2002, ..] => Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), "6to4")),
        // 2001:0::/32 Teredo: client address is the last 32 bits XOR-ed with ones.
        [0x2001, 0, ..] => Some((!last32, "Teredo")),
        _ => None,
    }
}

fn deny_reason_v4(ip: Ipv4Addr) -> Option<&'static str> {
    DENY_V4
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|(_, _, reason)| *reason)
}

/// The deny rule an address matches, ignoring the allow list.
fn deny_reason(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => deny_reason_v4(v4).map(str::to_owned),
        IpAddr::V6(v6) => {
            if let Some((_, _, reason)) = DENY_V6.iter().find(|(net, len, _)| in_v6(v6, *net, *len))
            {
                return Some((*reason).to_owned());
            }
            let (v4, form) = embedded_v4(v6)?;
            deny_reason_v4(v4).map(|r| format!("{form} {r}"))
        }
    }
}

/// Whether the operator opened this address with `ALLOW_PRIVATE_NETWORKS`.
/// An IPv4-mapped IPv6 address counts as its IPv4 address, because that is
/// where the kernel actually connects.
fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    allow
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// The deny-table decision for one address: `Ok(())` when it may be
/// contacted, otherwise [`FetchError::RefusedAddress`] with a reason such as
/// `"loopback"`. Addresses inside one of `allow` pass even if denied; the
/// allow list opens nothing else.
pub fn check_ip(ip: IpAddr, allow: &[IpNet]) -> Result<(), FetchError> {
    match deny_reason(ip) {
        Some(_) if allowed(ip, allow) => Ok(()),
        Some(reason) => Err(FetchError::RefusedAddress {
            ip,
            reason,
            name: None,
        }),
        None => Ok(()),
    }
}

/// Parses a host the way `inet_aton` does (decimal, `0x` hex and `0` octal
/// parts; 1 to 4 parts; optional trailing dot). The `url` crate already turns
/// such hosts into IPv4 for http(s) URLs; this is a second line in case a
/// spelling slips through as a domain name.
pub(crate) fn parse_legacy_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"))
        {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        let n = if digits.is_empty() {
            // "0x" alone is 0 for inet_aton; an empty part is not a number.
            if radix == 16 { 0 } else { return None }
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << rest_bits {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    v |= last;
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

/// Checks one URL string before anything is sent: length ≤ 2048, scheme
/// http or https, a host, no `user:pass@` credentials (they would be sent as
/// Basic auth and end up in logs), and, when the host is an IP literal (in
/// any spelling), the deny table. Names are checked later, at resolution.
/// Used for every redirect hop and by CSV validation.
pub fn check_url(url: &str, allow: &[IpNet]) -> Result<Url, FetchError> {
    let invalid = |m: &str| FetchError::InvalidUrl(m.to_owned());
    let url = url.trim();
    if url.len() > MAX_URL_LEN {
        return Err(invalid("longer than 2048 characters"));
    }
    if url.is_empty() {
        return Err(invalid("empty"));
    }
    let parsed = Url::parse(url).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
    check_parsed(&parsed, allow)?;
    Ok(parsed)
}

/// [`check_url`] for an already parsed URL (redirect targets).
pub(crate) fn check_parsed(url: &Url, allow: &[IpNet]) -> Result<(), FetchError> {
    let invalid = |m: String| FetchError::InvalidUrl(m);
    if url.as_str().len() > MAX_URL_LEN {
        return Err(invalid("longer than 2048 characters".into()));
    }
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(invalid(format!("unsupported scheme {other}"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL are not allowed".into()));
    }
    match url.host() {
        None => Err(invalid("no host".into())),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow),
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow),
        Some(Host::Domain(d)) => {
            if d.is_empty() {
                return Err(invalid("no host".into()));
            }
            if let Some(ip) = parse_legacy_ipv4(d) {
                return check_ip(IpAddr::V4(ip), allow);
            }
            Ok(())
        }
    }
}

/// Parses `ALLOW_PRIVATE_NETWORKS`: a comma-separated list of CIDRs (a bare
/// address means just that address). An empty string or `off` means none.
/// Errors name the offending entry so startup can fail with a clear message.
pub fn parse_allow_list(s: &str) -> Result<Vec<IpNet>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(Vec::new());
    }
    let mut nets = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let net = match part.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match part.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "ALLOW_PRIVATE_NETWORKS: {part:?} is not a CIDR like 10.0.0.0/8"
                    ));
                }
            },
        };
        nets.push(net.trunc());
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &str) -> Vec<IpNet> {
        parse_allow_list(s).expect("allow list")
    }

    /// (URL, expected: None = allowed, Some(reason) = refused with that reason).
    const URL_TABLE: &[(&str, Option<&str>)] = &[
        // Odd IPv4 spellings of 127.0.0.1
        ("http://127.0.0.1/", Some("loopback")),
        ("http://2130706433/", Some("loopback")),
        ("http://0x7f.1/", Some("loopback")),
        ("http://0177.0.0.1/", Some("loopback")),
        ("http://127.1/", Some("loopback")),
        ("http://0x7f000001/", Some("loopback")),
        ("http://0x7F.0.0.1/", Some("loopback")),
        ("http://017700000001/", Some("loopback")),
        ("http://127.0.0.1./", Some("loopback")),
        ("http://127.0.0.1%2e/", Some("loopback")),
        ("http://%31%32%37.0.0.1/", Some("loopback")),
        ("http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/", Some("loopback")),
        ("https://127.255.255.254:8443/x", Some("loopback")),
        ("http://0/", Some("this network")),
        ("http://0.0.0.0:8080/", Some("this network")),
        // Private, link-local, metadata, CGNAT, reserved, documentation …
        ("http://10.1.2.3/a.jpg", Some("private (RFC 1918)")),
        ("http://172.16.0.1/", Some("private (RFC 1918)")),
        ("http://172.31.255.255/", Some("private (RFC 1918)")),
        ("http://192.168.1.1/", Some("private (RFC 1918)")),
        (
            "http://169.254.169.254/latest/meta-data/",
            Some("cloud metadata"),
        ),
        ("http://0xa9fea9fe/", Some("cloud metadata")),
        ("http://2852039166/", Some("cloud metadata")),
        ("http://169.254.1.1/", Some("link-local")),
        ("http://100.64.0.1/", Some("carrier-grade NAT")),
        ("http://100.127.255.255/", Some("carrier-grade NAT")),
        ("http://224.0.0.1/", Some("multicast")),
        ("http://239.255.255.250/", Some("multicast")),
        ("http://255.255.255.255/", Some("broadcast")),
        ("http://240.0.0.1/", Some("reserved")),
        ("http://192.0.2.10/", Some("documentation")),
        ("http://198.51.100.7/", Some("documentation")),
        ("http://203.0.113.99/", Some("documentation")),
        ("http://198.18.0.1/", Some("benchmarking")),
        ("http://198.19.255.1/", Some("benchmarking")),
        ("http://192.0.0.8/", Some("IETF protocol assignments")),
        // IPv6
        ("http://[::1]/", Some("loopback")),
        ("http://[::]/", Some("unspecified")),
        ("http://[fc00::1]/", Some("unique local")),
        ("http://[fd12:3456::1]/", Some("unique local")),
        ("http://[fd00:ec2::254]/", Some("cloud metadata")),
        ("http://[fe80::1]/", Some("link-local")),
        ("http://[ff02::1]/", Some("multicast")),
        ("http://[2001:db8::1]/", Some("documentation")),
        ("http://[fec0::1]/", Some("site-local")),
        // IPv6 embedding denied IPv4
        ("http://[::ffff:127.0.0.1]/", Some("IPv4-mapped loopback")),
        ("http://[::ffff:7f00:1]/", Some("IPv4-mapped loopback")),
        (
            "http://[::ffff:169.254.169.254]/",
            Some("IPv4-mapped cloud metadata"),
        ),
        (
            "http://[::ffff:10.0.0.1]/",
            Some("IPv4-mapped private (RFC 1918)"),
        ),
        (
            "http://[::ffff:0:127.0.0.1]/",
            Some("IPv4-translated loopback"),
        ),
        ("http://[::127.0.0.1]/", Some("IPv4-compatible loopback")),
        (
            "http://[::169.254.169.254]/",
            Some("IPv4-compatible cloud metadata"),
        ),
        (
            "http://[::10.0.0.1]/",
            Some("IPv4-compatible private (RFC 1918)"),
        ),
        ("http://[64:ff9b::127.0.0.1]/", Some("NAT64 loopback")),
        ("http://[64:ff9b::a9fe:a9fe]/", Some("NAT64 cloud metadata")),
        (
            "http://[64:ff9b::10.0.0.1]/",
            Some("NAT64 private (RFC 1918)"),
        ),
        ("http://[64:ff9b:1::808:808]/", Some("local-use NAT64")),
        ("http://[64:ff9b:1:abcd::7f00:1]/", Some("local-use NAT64")),
        ("http://[2002:7f00:1::]/", Some("6to4 loopback")),
        ("http://[2002:a9fe:a9fe::1]/", Some("6to4 cloud metadata")),
        (
            "http://[2002:0a00:0001::]/",
            Some("6to4 private (RFC 1918)"),
        ),
        // Teredo: client 127.0.0.1 is stored as !0x7f000001 = 0x80ff:fffe.
        (
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            Some("Teredo loopback"),
        ),
        (
            "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
            Some("Teredo cloud metadata"),
        ),
        (
            "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
            Some("Teredo private (RFC 1918)"),
        ),
        // Public: allowed
        ("http://8.8.8.8/", None),
        ("https://1.1.1.1/img.png", None),
        ("http://[2606:4700:4700::1111]/", None),
        ("http://93.184.215.14:8080/a", None),
        ("http://[::ffff:8.8.8.8]/", None),
        ("http://[64:ff9b::8.8.8.8]/", None),
        ("http://[2002:0808:0808::1]/", None),
        ("http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/", None),
        ("http://172.32.0.1/", None),
        ("http://100.128.0.1/", None),
        ("http://example.com/a.jpg", None),
        ("https://cdn.example.com:8443/x/y.webp?s=1#frag", None),
        ("http://localhost/", None), // names are checked at resolution, not here
    ];

    #[test]
    fn url_table() {
        assert!(URL_TABLE.len() >= 40);
        for (url, want) in URL_TABLE {
            let got = check_url(url, &[]);
            match (want, &got) {
                (None, Ok(_)) => {}
                (Some(reason), Err(FetchError::RefusedAddress { reason: r, .. })) => {
                    assert_eq!(r.as_str(), *reason, "{url}")
                }
                _ => panic!("{url}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn refused_message_names_normalised_ip() {
        let e = check_url("http://0xa9fea9fe/", &[]).expect_err("refused");
        assert_eq!(e.to_string(), "refused address 169.254.169.254");
        let e = check_url("http://0177.0.0.1/", &[]).expect_err("refused");
        assert_eq!(e.to_string(), "refused address 127.0.0.1");
    }

    #[test]
    fn invalid_urls() {
        let long = format!("http://example.com/{}", "a".repeat(2100));
        for url in [
            "",
            "not a url",
            "ftp://example.com/a.jpg",
            "file:///etc/passwd",
            "gopher://127.0.0.1/",
            "data:image/png;base64,AAAA",
            "http://user:pass@example.com/",
            "http://user@example.com/",
            "http://",
            "http://:80/",
            "http://[::1/",
            "http://exa mple.com/",
            long.as_str(),
        ] {
            match check_url(url, &[]) {
                Err(FetchError::InvalidUrl(_)) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn allow_list_opens_only_its_ranges() {
        let allow = nets("127.0.0.0/8, 10.1.0.0/16");
        assert!(check_url("http://127.0.0.1:8080/", &allow).is_ok());
        assert!(check_url("http://0x7f.1/", &allow).is_ok());
        assert!(check_url("http://[::ffff:127.0.0.1]/", &allow).is_ok());
        assert!(check_url("http://10.1.200.3/", &allow).is_ok());
        assert!(check_url("http://10.2.0.1/", &allow).is_err());
        assert!(check_url("http://169.254.169.254/", &allow).is_err());
        assert!(check_url("http://[::1]/", &allow).is_err());
        // NAT64/6to4 of an allowed IPv4 are not opened by an IPv4 entry.
        assert!(check_url("http://[64:ff9b::127.0.0.1]/", &allow).is_err());
        let v6 = nets("::1/128");
        assert!(check_ip("::1".parse().expect("ip"), &v6).is_ok());
        assert!(check_ip("127.0.0.1".parse().expect("ip"), &v6).is_err());
    }

    #[test]
    fn allow_list_parsing() {
        assert!(nets("").is_empty());
        assert!(nets("  ").is_empty());
        assert!(nets("off").is_empty());
        assert!(nets("OFF").is_empty());
        assert_eq!(nets("10.0.0.0/8").len(), 1);
        assert_eq!(nets("10.0.0.0/8,,fd00::/8 ,").len(), 2);
        assert_eq!(
            nets("127.0.0.2"),
            vec!["127.0.0.2/32".parse::<IpNet>().expect("net")]
        );
        assert_eq!(
            nets("10.1.2.3/8"),
            vec!["10.0.0.0/8".parse::<IpNet>().expect("net")]
        );
        assert!(parse_allow_list("10.0.0.0/33").is_err());
        assert!(parse_allow_list("private").is_err());
        assert!(parse_allow_list("10.0.0.0/8;192.168.0.0/16").is_err());
    }

    #[test]
    fn legacy_ipv4_parser() {
        let lo = Some(Ipv4Addr::LOCALHOST);
        for s in [
            "127.0.0.1",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "127.1",
            "0x7f000001",
            "127.0.1",
            "0x7f.0.0.1.",
            "017700000001",
            "0x7F.00.0x0.01",
        ] {
            assert_eq!(parse_legacy_ipv4(s), lo, "{s}");
        }
        for s in [
            "",
            ".",
            "example.com",
            "1.2.3.4.5",
            "256.0.0.1",
            "127.0.0.256",
            "1..1",
            "09",
            "0x1g",
            "4294967296",
        ] {
            assert_eq!(parse_legacy_ipv4(s), None, "{s}");
        }
        assert_eq!(
            parse_legacy_ipv4("1.2.65535"),
            Some(Ipv4Addr::new(1, 2, 255, 255))
        );
    }

    #[test]
    fn url_crate_normalises_odd_spellings() {
        // The url crate turns every odd spelling into an IPv4 host, so the
        // legacy parser above is only a second line of defence.
        for s in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://127.0.0.1./",
        ] {
            let u = Url::parse(s).expect("parse");
            assert_eq!(u.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)), "{s}");
        }
    }
}
