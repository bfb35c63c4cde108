//! A last pass over the generated OpenAPI document so that client generators read it.
//!
//! poem-openapi documents a field whose type is a named schema (an enum or an object)
//! as `{"allOf": [{"$ref": …}, {"description": …}], "description": …}`: the field's
//! own annotations go both beside `allOf` and into a second, inline `allOf` member.
//! That member adds nothing, and openapi-python-client refuses an `allOf` that mixes a
//! `$ref` to an enum with an inline schema, dropping every model holding such a field
//! (status, image and delivery-log bodies). Without the member the field reads
//! `{"allOf": [{"$ref": …}], "description": …}`, the usual OpenAPI 3.0 way to annotate
//! a reference. Key order is kept, so the document changes only there.

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
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
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
    use super::tidy;

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
    fn keeps_members_that_add_something() {
        let spec =
            r##"{"x":{"description":"d","allOf":[{"$ref":"#/c/S"},{"description":"other"}]}}"##;
        assert_eq!(tidy(spec).matches("other").count(), 1);
        let unchanged = r#"{"allOf":[{"type":"object"}]}"#;
        assert!(tidy(unchanged).contains("object"));
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
