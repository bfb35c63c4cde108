//! `STORAGE_URL` and the S3 settings: where blobs live, parsed once at start.

use std::{fmt, path::PathBuf};

/// Where blobs live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageConfig {
    /// `file://DIR`: files under `DIR` (relative to the working directory unless it
    /// starts with `/`, as in `file:///var/lib/pixbatch`).
    Local(PathBuf),
    /// `s3://BUCKET[/PREFIX]` on AWS S3 or an S3-compatible server.
    S3(S3Config),
}

/// An S3 bucket, the key prefix inside it, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket name.
    pub bucket: String,
    /// Prepended to every key, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// An S3-compatible server (`http://127.0.0.1:9000`); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The region; the client's default (`us-east-1`, or `AWS_DEFAULT_REGION`) when `None`.
    pub region: Option<String>,
    /// Static credentials; when `None`, the usual AWS sources (session token, web
    /// identity, container or instance credentials) are asked.
    pub credentials: Option<S3Credentials>,
}

/// A static access key.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.credentials.as_ref().map(|c| &c.access_key_id),
            )
            .finish_non_exhaustive()
    }
}

impl fmt::Display for StorageConfig {
    /// The store as a URL, for logs (no credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(dir) => write!(f, "file://{}", dir.display()),
            Self::S3(s3) if s3.prefix.is_empty() => write!(f, "s3://{}", s3.bucket),
            Self::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

impl StorageConfig {
    /// Parses `file://DIR` or `s3://BUCKET[/PREFIX]`. An S3 location comes back
    /// without endpoint, region or credentials: those are separate settings.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                return Err("file:// needs a directory, as in file://uploads".into());
            }
            return Ok(Self::Local(PathBuf::from(dir)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty() {
                check_prefix(prefix)?;
            }
            return Ok(Self::S3(S3Config {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                endpoint: None,
                region: None,
                credentials: None,
            }));
        }
        Err(format!(
            "{url:?}: expected file://DIR or s3://BUCKET[/PREFIX]"
        ))
    }
}

/// S3's bucket naming rules: 3–63 of `[a-z0-9.-]`, starting and ending with a letter or
/// digit, no two dots side by side, not an IP address, none of the prefixes and
/// suffixes S3 keeps for itself. A name S3 refuses would otherwise start the service
/// and fail every write.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(format!(
            "bucket name {bucket:?}: expected 3–63 lowercase letters, digits, dots and \
             hyphens, starting and ending with a letter or digit"
        ));
    }
    const RESERVED_PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const RESERVED_SUFFIXES: [&str; 4] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3"];
    let why = if bucket.contains("..") {
        Some("two dots side by side".to_owned())
    } else if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        Some("an IP address".to_owned())
    } else if let Some(p) = RESERVED_PREFIXES.iter().find(|p| bucket.starts_with(*p)) {
        Some(format!("the prefix {p:?}, which S3 keeps for itself"))
    } else {
        RESERVED_SUFFIXES
            .iter()
            .find(|s| bucket.ends_with(*s))
            .map(|s| format!("the suffix {s:?}, which S3 keeps for itself"))
    };
    match why {
        Some(why) => Err(format!("bucket name {bucket:?}: S3 refuses {why}")),
        None => Ok(()),
    }
}

/// The prefix follows the key grammar: `/`-separated segments of `[A-Za-z0-9._-]`,
/// none empty, none `.` or `..`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    for seg in prefix.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(format!(
                "prefix {prefix:?}: segment {seg:?} is not made of letters, digits, '.', '_', '-'"
            ));
        }
    }
    Ok(())
}

/// Checks an `S3_ENDPOINT`: an `http` or `https` URL with a host and nothing after
/// the path; returned without a trailing `/`.
pub fn parse_endpoint(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("{endpoint:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{endpoint:?}: expected an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?}: no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: the user info may be a key pair.
        return Err(
            "no user info expected (credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{endpoint:?}: no query or fragment expected"));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> StorageConfig {
        StorageConfig::S3(S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: None,
            region: None,
            credentials: None,
        })
    }

    #[test]
    fn storage_urls_parse() {
        for (url, expected) in [
            ("file://uploads", StorageConfig::Local("uploads".into())),
            (
                "file:///var/lib/pixbatch",
                StorageConfig::Local("/var/lib/pixbatch".into()),
            ),
            ("s3://my-bucket", s3("my-bucket", "")),
            ("s3://my-bucket/", s3("my-bucket", "")),
            ("s3://my.bucket-1/pixbatch", s3("my.bucket-1", "pixbatch")),
            ("s3://abc/a/b_c/d.e/", s3("abc", "a/b_c/d.e")),
        ] {
            assert_eq!(StorageConfig::parse(url).unwrap(), expected, "{url}");
        }
    }

    #[test]
    fn bad_storage_urls_are_refused_with_a_reason() {
        for url in [
            "",
            "uploads",
            "file://",
            "s3://",
            "s3:///prefix",
            "s3://ab",
            "s3://My-Bucket",
            "s3://-bucket",
            "s3://bucket-",
            "s3://bucket_name",
            &format!("s3://{}", "a".repeat(64)),
            "s3://bucket//x",
            "s3://bucket/a/../b",
            "s3://bucket/./b",
            "s3://bucket/a b",
            "s3://bucket/p?x=1",
            "s3://user@bucket/p",
            "gs://bucket/p",
            "S3://bucket",
            "https://bucket.s3.amazonaws.com/p",
            "s3://a..b",
            "s3://192.168.1.1",
            "s3://xn--abc",
            "s3://sthree-bucket",
            "s3://x-s3alias",
            "s3://bucket--ol-s3",
        ] {
            let err = StorageConfig::parse(url).expect_err(url);
            assert!(!err.is_empty(), "{url}");
        }
        assert!(
            StorageConfig::parse("gs://b/p")
                .unwrap_err()
                .contains("expected file://DIR or s3://BUCKET[/PREFIX]")
        );
    }

    #[test]
    fn display_names_the_store_without_secrets() {
        let mut cfg = StorageConfig::parse("s3://bucket/some/prefix").unwrap();
        if let StorageConfig::S3(s3) = &mut cfg {
            s3.credentials = Some(S3Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "very-secret".into(),
            });
        }
        assert_eq!(cfg.to_string(), "s3://bucket/some/prefix");
        assert!(!format!("{cfg:?}").contains("very-secret"));
        assert_eq!(
            StorageConfig::parse("file://uploads").unwrap().to_string(),
            "file://uploads"
        );
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:9000/").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            parse_endpoint("https://s3.example.com").unwrap(),
            "https://s3.example.com"
        );
        for bad in [
            "127.0.0.1:9000",
            "ftp://host",
            "http://",
            "http://host/?x=1",
            "http://u:p@host",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
