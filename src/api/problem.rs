//! The RFC 9457 problem document: what the API answers on every error, and what the
//! `submit` client reads back. One type for both sides, so the CLI cannot drift from
//! the server: serde for the client (and for responses built outside poem-openapi),
//! poem-openapi for the handlers and the document. Every field but `errors` and
//! `invalid_params` is always written; reading, each may be missing (a proxy's answer,
//! a server of another version) and is then empty.

use poem_openapi::Object;
use serde::{Deserialize, Serialize};

/// One problem in an uploaded CSV.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct ProblemItem {
    /// Physical line in the file (the header is line 1).
    pub line: u64,
    /// Column name, when the problem belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// One invalid form field of an upload (RFC 9457's `invalid-params` example, in this
/// API's snake case).
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
pub struct InvalidParam {
    /// The field (`quality`, `max_bytes`, `webhook_url`).
    pub name: String,
    /// What is wrong with its value.
    pub reason: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, Deserialize)]
pub struct Problem {
    /// Stable identifier of the problem kind (`urn:pixbatch:problem:<code>`).
    #[oai(rename = "type")]
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Short summary of the kind.
    #[serde(default)]
    pub title: String,
    /// The HTTP status.
    #[serde(default)]
    pub status: u16,
    /// What happened in this case.
    #[serde(default)]
    pub detail: String,
    /// For invalid CSVs: every problem found (the first 100).
    #[oai(skip_serializing_if_is_none)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ProblemItem>>,
    /// For invalid form fields: each one, named, with what is wrong.
    #[oai(skip_serializing_if_is_none)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_params: Option<Vec<InvalidParam>>,
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;
    use serde_json::json;

    use super::*;

    fn invalid_csv() -> Problem {
        Problem {
            kind: "urn:pixbatch:problem:invalid-csv".into(),
            title: "Invalid CSV".into(),
            status: 422,
            detail: "the CSV has 2 problem(s)".into(),
            errors: Some(vec![
                ProblemItem {
                    line: 3,
                    column: Some("Input Image Urls".into()),
                    message: "not a URL".into(),
                },
                ProblemItem {
                    line: 7,
                    column: None,
                    message: "too few cells".into(),
                },
            ]),
            invalid_params: Some(vec![InvalidParam {
                name: "quality".into(),
                reason: "must be 1–100".into(),
            }]),
        }
    }

    #[test]
    fn serde_and_the_handlers_write_the_same_document() {
        let expected = json!({
            "type": "urn:pixbatch:problem:invalid-csv",
            "title": "Invalid CSV",
            "status": 422,
            "detail": "the CSV has 2 problem(s)",
            "errors": [
                {"line": 3, "column": "Input Image Urls", "message": "not a URL"},
                {"line": 7, "message": "too few cells"},
            ],
            "invalid_params": [{"name": "quality", "reason": "must be 1–100"}],
        });
        let p = invalid_csv();
        assert_eq!(serde_json::to_value(&p).unwrap(), expected);
        assert_eq!(p.to_json(), Some(expected));
        let bare = Problem {
            errors: None,
            invalid_params: None,
            ..p
        };
        let written = serde_json::to_value(&bare).unwrap();
        assert_eq!(written.get("errors"), None);
        assert_eq!(written.get("invalid_params"), None);
        assert_eq!(Some(written), bare.to_json());
    }

    #[test]
    fn the_client_reads_what_the_server_writes_and_tolerates_less() {
        let p = invalid_csv();
        let read: Problem = serde_json::from_value(p.to_json().unwrap()).unwrap();
        assert_eq!(read, p);
        let partial: Problem = serde_json::from_str(r#"{"status": 502}"#).unwrap();
        assert_eq!(
            (partial.status, partial.title.as_str(), partial.errors),
            (502, "", None)
        );
    }
}
