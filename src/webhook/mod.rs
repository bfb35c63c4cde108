//! The completion webhook: its payload, and signatures per Standard Webhooks
//! (<https://www.standardwebhooks.com/>): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`,
//! one `v1,` entry per configured secret so receivers can rotate keys.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{Progress, RequestStatus};

/// The JSON body POSTed when a request reaches a final status. Serialised with serde
/// for delivery; the same type documents the webhook in the OpenAPI document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Object)]
pub struct CompletionEvent {
    /// Always `request.completed`.
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: String,
    /// The request.
    pub request_id: uuid::Uuid,
    /// Its final status.
    pub status: RequestStatus,
    /// Absolute URL of the output CSV: the same for every run, serving the latest
    /// finished run's CSV.
    #[oai(skip_serializing_if_is_none)]
    pub output_csv: Option<String>,
    /// Image counts.
    pub images: Progress,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

impl CompletionEvent {
    /// The event type sent for every final status.
    pub const TYPE: &'static str = "request.completed";
}

/// Parses `WEBHOOK_SECRET`: one or more space-separated `whsec_<base64>` secrets.
pub fn parse_secrets(s: &str) -> Result<Vec<Vec<u8>>, String> {
    let keys = s
        .split_whitespace()
        .map(|part| {
            let b64 = part
                .strip_prefix("whsec_")
                .ok_or_else(|| "each secret must start with whsec_".to_owned())?;
            let key = B64
                .decode(b64)
                .map_err(|e| format!("secret is not base64: {e}"))?;
            if key.len() < 16 {
                return Err("secret must be at least 16 bytes".to_owned());
            }
            Ok(key)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err("no secret given".into());
    }
    Ok(keys)
}

/// The `webhook-signature` header value: `v1,<sig>` for each key, space-separated.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| {
            // HMAC accepts keys of any length; this cannot fail.
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The headers of one delivery try.
pub fn headers(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let mut h = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("webhook-id".to_owned(), id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
    ];
    if !keys.is_empty() {
        h.push((
            "webhook-signature".to_owned(),
            sign(keys, id, timestamp, body),
        ));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference test vectors.
    #[test]
    fn matches_reference_vector() {
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_key() {
        let keys =
            parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_AAAAAAAAAAAAAAAAAAAAAAAA")
                .unwrap();
        let sig = sign(&keys, "msg_1", 1, b"{}");
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|s| s.starts_with("v1,")));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(parse_secrets("").is_err());
        assert!(parse_secrets("secret").is_err());
        assert!(parse_secrets("whsec_!!!").is_err());
        assert!(parse_secrets("whsec_AAAA").is_err());
    }
}
