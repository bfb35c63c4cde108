//! A last pass over the generated OpenAPI document so that client generators read it.
//!
//! poem-openapi documents a field whose type is a named schema (an enum or an object)
//! as `{"allOf": [{"$ref": …}, {"description": …}], "description": …}`: the field's
//! own annotations go both beside `allOf` and into a second, inline `allOf` member.
//! That member adds nothing, and openapi-python-client refuses an `allOf` that mixes a
//! `$ref` to an enum with an inline schema, dropping every model holding such a field
//! (status, image and delivery-log bodies). Without the member the field reads
//! `{"allOf": [{"$ref": …}], "description": …}`, the usual OpenAPI 3.0 way to annotate
//! a reference.
//!
//! It also writes one `"200"` per response variant: `/files/{request_id}/{name}` (a
//! JPEG or a CSV) had the key twice, and a JSON reader keeps only one of them, so
//! clients saw only the CSV. Repeated status codes are merged into one response with
//! both media types. Key order is kept, so the document changes only there.
//!
//! And every operation answers its errors with the one `ProblemResponse`, so each was
//! documented with every error status: 413 and 422 on a status read, 401 on public
//! files. Each keeps only those it can answer (see [`can_answer`]).
//!
//! And the completion event, which poem-openapi puts under a top-level `webhooks` (an
//! OpenAPI 3.1 field a 3.0 validator refuses, so strict tools refused the whole
//! document), goes where 3.0 documents such a call: a callback of `POST /upload`.

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap, SerializeSeq},
};

/// The document with redundant inline `allOf` members removed, pretty-printed like
/// poem-openapi prints it. Returns the input unchanged if it is not JSON (it always
/// is: poem-openapi wrote it with serde_json).
pub fn tidy(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Node>(spec) else {
        return spec.to_owned();
    };
    drop_redundant_all_of(&mut doc);
    merge_repeated_responses(&mut doc);
    keep_possible_responses(&mut doc, super::is_public);
    declare_bearer_security(&mut doc, super::is_public);
    webhooks_as_upload_callbacks(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
}

/// Moves the top-level `webhooks` into `POST /upload`'s `callbacks`, each event as a
/// call to the upload's `webhook_url` (`{$request.body#/webhook_url}`; the server's
/// `WEBHOOK_URL` when the form has none, which the operation's text says). The Swagger
/// UI shows it on the upload, under "Callbacks".
fn webhooks_as_upload_callbacks(doc: &mut Node) {
    let Node::Object(top) = doc else {
        return;
    };
    let Some(at) = top.iter().position(|(key, _)| key == "webhooks") else {
        return;
    };
    let webhooks = top.remove(at);
    let Node::Object(events) = &webhooks.1 else {
        top.insert(at, webhooks);
        return;
    };
    let callbacks = events
        .iter()
        .map(|(name, item)| {
            let call = vec![("{$request.body#/webhook_url}".to_owned(), item.clone())];
            (name.clone(), Node::Object(call))
        })
        .collect();
    if let Some(Node::Object(paths)) = field(top, "paths")
        && let Some(Node::Object(item)) = field(paths, "/upload")
        && let Some(Node::Object(post)) = field(item, "post")
    {
        post.push(("callbacks".to_owned(), Node::Object(callbacks)));
    } else {
        // No upload to hang them on (never in pixbatch's document): left as they were.
        top.insert(at, webhooks);
    }
}

/// Says in the document what the token check (`api::guard`, a middleware no handler
/// declares) enforces: a `bearer` scheme, which every operation outside `is_public`
/// takes when the server sets `API_TOKEN` (`[{"bearer": []}, {}]`: the token, or
/// nothing when none is set), and a 401 among each one's responses. The Swagger UI
/// then offers its "Authorize" button, and generated clients a token setting.
fn declare_bearer_security(doc: &mut Node, is_public: impl Fn(&str) -> bool) {
    let parse = |json: &str| serde_json::from_str::<Node>(json).expect("a constant");
    let Node::Object(top) = doc else {
        return;
    };
    let Some(Node::Object(paths)) = field(top, "paths") else {
        return;
    };
    let unauthorized = paths
        .iter()
        .flat_map(|(_, item)| operations(item))
        .find_map(|op| match op {
            Node::Object(fields) => match get(fields, "responses") {
                Some(Node::Object(codes)) => get(codes, "401").cloned(),
                _ => None,
            },
            _ => None,
        });
    for (path, item) in paths.iter_mut() {
        if is_public(path) {
            continue;
        }
        for op in operations_mut(item) {
            let Node::Object(fields) = op else {
                continue;
            };
            if let (Some(Node::Object(codes)), Some(response)) =
                (field(fields, "responses"), &unauthorized)
                && get(codes, "401").is_none()
            {
                codes.push(("401".to_owned(), response.clone()));
            }
            fields.push(("security".to_owned(), parse(r#"[{"bearer": []}, {}]"#)));
        }
    }
    let scheme = parse(
        r#"{"bearer": {"type": "http", "scheme": "bearer", "description": "The server's `API_TOKEN`, when it sets one: then every endpoint but health, docs and `/files` needs `Authorization: Bearer <token>`."}}"#,
    );
    match field(top, "components") {
        Some(Node::Object(components)) => components.push(("securitySchemes".to_owned(), scheme)),
        _ => top.push((
            "components".to_owned(),
            Node::Object(vec![("securitySchemes".to_owned(), scheme)]),
        )),
    }
}

/// Drops from each operation the error statuses it cannot answer.
fn keep_possible_responses(doc: &mut Node, is_public: impl Fn(&str) -> bool) {
    let Node::Object(top) = doc else {
        return;
    };
    let Some(Node::Object(paths)) = field(top, "paths") else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for op in operations_mut(item) {
            if let Node::Object(fields) = op
                && let Some(Node::Object(codes)) = field(fields, "responses")
            {
                codes.retain(|(code, _)| can_answer(path, code, &is_public));
            }
        }
    }
}

/// Whether `path` can answer `code`: the upload alone reads a body (413, 422); only
/// what names a request can miss it (404); a 400 (a malformed form or parameter) is
/// left to those and the upload; 409 is a state conflict of actions and of a request's
/// output; public paths take no token.
fn can_answer(path: &str, code: &str, is_public: impl Fn(&str) -> bool) -> bool {
    let names_a_request = path.contains('{');
    match code {
        "413" | "422" => path == "/upload",
        "400" => names_a_request || path == "/upload",
        "404" => names_a_request,
        "409" => ["/retry", "/cancel", "/redeliver", "/output.csv"]
            .iter()
            .any(|end| path.ends_with(end)),
        "401" => !is_public(path),
        _ => true,
    }
}

/// The value of `key` in an object's entries.
fn get<'a>(entries: &'a [(String, Node)], key: &str) -> Option<&'a Node> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// [`get`], to change.
fn field<'a>(entries: &'a mut [(String, Node)], key: &str) -> Option<&'a mut Node> {
    entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The operations of a path item (its HTTP methods' entries).
fn operations(item: &Node) -> impl Iterator<Item = &Node> {
    let entries = match item {
        Node::Object(entries) => entries.as_slice(),
        _ => &[],
    };
    entries
        .iter()
        .filter(|(method, _)| is_method(method))
        .map(|(_, op)| op)
}

/// [`operations`], to change.
fn operations_mut(item: &mut Node) -> impl Iterator<Item = &mut Node> {
    let entries = match item {
        Node::Object(entries) => entries.as_mut_slice(),
        _ => &mut [],
    };
    entries
        .iter_mut()
        .filter(|(method, _)| is_method(method))
        .map(|(_, op)| op)
}

fn is_method(key: &str) -> bool {
    matches!(
        key,
        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
    )
}

/// A JSON value whose objects keep their key order and repeated keys.
///
/// Not `serde_json::Value` with `preserve_order`: that feature is global to the build
/// and changes poem-openapi's own output (its examples come out in field order instead
/// of sorted), and a map keeps one of repeated keys, while poem-openapi writes one
/// `"200"` per response variant (`/files/{request_id}/{name}` has two).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

fn drop_redundant_all_of(node: &mut Node) {
    match node {
        Node::Object(entries) => {
            let siblings: Vec<(String, Node)> = entries
                .iter()
                .filter(|(k, _)| k != "allOf")
                .cloned()
                .collect();
            for (key, value) in entries.iter_mut() {
                if key == "allOf"
                    && let Node::Array(members) = value
                    && members.iter().any(is_reference)
                {
                    members.retain(|m| !repeats_siblings(m, &siblings));
                }
                drop_redundant_all_of(value);
            }
        }
        Node::Array(items) => items.iter_mut().for_each(drop_redundant_all_of),
        _ => {}
    }
}

/// In every `responses` object, merges entries with the same status code into the
/// first: descriptions joined, `content` and `headers` entries it lacks appended.
fn merge_repeated_responses(node: &mut Node) {
    match node {
        Node::Object(entries) => {
            for (key, value) in entries.iter_mut() {
                if key == "responses"
                    && let Node::Object(codes) = value
                {
                    let mut merged: Vec<(String, Node)> = Vec::with_capacity(codes.len());
                    for (code, response) in codes.drain(..) {
                        match merged.iter_mut().find(|(c, _)| *c == code) {
                            Some((_, first)) => merge_response(first, response),
                            None => merged.push((code, response)),
                        }
                    }
                    *codes = merged;
                }
                merge_repeated_responses(value);
            }
        }
        Node::Array(items) => items.iter_mut().for_each(merge_repeated_responses),
        _ => {}
    }
}

/// Folds `other` into the response object `into` (see [`merge_repeated_responses`]).
fn merge_response(into: &mut Node, other: Node) {
    let (Node::Object(fields), Node::Object(others)) = (into, other) else {
        return;
    };
    for (key, value) in others {
        match fields.iter_mut().find(|(k, _)| *k == key) {
            None => fields.push((key, value)),
            Some((_, Node::String(a))) if key == "description" => {
                if let Node::String(b) = value
                    && *a != b
                {
                    a.push(' ');
                    a.push_str(&b);
                }
            }
            Some((_, Node::Object(mine))) => {
                if let Node::Object(theirs) = value {
                    for (k, v) in theirs {
                        if !mine.iter().any(|(m, _)| *m == k) {
                            mine.push((k, v));
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
}

fn is_reference(node: &Node) -> bool {
    matches!(node, Node::Object(fields) if fields.iter().any(|(k, _)| k == "$ref"))
}

/// An inline member whose every keyword is already beside `allOf` with the same value.
fn repeats_siblings(member: &Node, siblings: &[(String, Node)]) -> bool {
    match member {
        Node::Object(fields) => fields
            .iter()
            .all(|(k, v)| k != "$ref" && siblings.iter().any(|(sk, sv)| sk == k && sv == v)),
        _ => false,
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::String(v) => s.serialize_str(v),
            Node::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom("a non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::{can_answer, tidy};

    #[test]
    fn drops_the_repeated_member_and_keeps_key_order() {
        let spec = r##"{"z":1,"status":{"description":"d","allOf":[{"$ref":"#/c/S"},{"description":"d"}]},"a":[1.5,null,true]}"##;
        let out: serde_json::Value = serde_json::from_str(&tidy(spec)).unwrap();
        assert_eq!(
            out["status"],
            serde_json::json!({"description": "d", "allOf": [{"$ref": "#/c/S"}]})
        );
        let text = tidy(spec);
        assert!(
            text.find("\"z\"").unwrap() < text.find("\"a\"").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn webhooks_become_callbacks_of_the_upload() {
        let spec = r#"{"openapi":"3.0.0","webhooks":{"request.completed":{"post":{"summary":"s"}}},"paths":{"/upload":{"post":{"summary":"u"}}}}"#;
        let out: serde_json::Value = serde_json::from_str(&tidy(spec)).unwrap();
        assert!(out.get("webhooks").is_none(), "{out}");
        assert_eq!(
            out["paths"]["/upload"]["post"]["callbacks"]["request.completed"]["{$request.body#/webhook_url}"]
                ["post"]["summary"],
            "s"
        );
        assert_eq!(out["paths"]["/upload"]["post"]["summary"], "u");
    }

    #[test]
    fn merges_repeated_status_codes_into_one_response() {
        let spec = r#"{"responses":{"200":{"description":"A JPEG.","content":{"image/jpeg":{"schema":{}}},"headers":{"ETAG":{}}},"200":{"description":"A CSV.","content":{"text/csv":{"schema":{}}},"headers":{"ETAG":{}}},"304":{"description":"Same."}}}"#;
        let text = tidy(spec);
        assert_eq!(text.matches("\"200\"").count(), 1, "{text}");
        let out: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ok = &out["responses"]["200"];
        assert_eq!(ok["description"], "A JPEG. A CSV.");
        assert!(ok["content"]["image/jpeg"].is_object() && ok["content"]["text/csv"].is_object());
        assert_eq!(ok["headers"].as_object().unwrap().len(), 1);
        assert_eq!(out["responses"]["304"]["description"], "Same.");
    }

    #[test]
    fn keeps_members_that_add_something() {
        let spec =
            r##"{"x":{"description":"d","allOf":[{"$ref":"#/c/S"},{"description":"other"}]}}"##;
        assert_eq!(tidy(spec).matches("other").count(), 1);
        let unchanged = r#"{"allOf":[{"type":"object"}]}"#;
        assert!(tidy(unchanged).contains("object"));
    }

    /// Each operation keeps the error statuses it can answer, and only those.
    #[test]
    fn operations_keep_the_statuses_they_can_answer() {
        let public = |p: &str| p.starts_with("/files/");
        let codes = |path: &str| -> Vec<&str> {
            ["400", "401", "404", "409", "413", "422", "500", "503"]
                .into_iter()
                .filter(|c| can_answer(path, c, public))
                .collect()
        };
        assert_eq!(codes("/upload"), ["400", "401", "413", "422", "500", "503"]);
        assert_eq!(
            codes("/status/{request_id}"),
            ["400", "401", "404", "500", "503"]
        );
        assert_eq!(
            codes("/requests/{request_id}/cancel"),
            ["400", "401", "404", "409", "500", "503"]
        );
        assert_eq!(
            codes("/files/{request_id}/{name}"),
            ["400", "404", "500", "503"]
        );
    }

    #[test]
    fn round_trips_everything_else_exactly() {
        let spec = serde_json::to_string_pretty(&serde_json::json!({
            "b": {"n": -3, "f": 0.25, "u": 18446744073709551615u64, "s": "\u{e9}\"", "e": []},
            "a": {}
        }))
        .unwrap();
        assert_eq!(tidy(&spec), spec);
    }
}
