//! JSON request bodies with a repeated key.
//!
//! RFC 8259 §4 says names within an object SHOULD be unique and that parsers differ on
//! duplicates; serde_json keeps the last one. A body such as
//! `{"value": 1, "value": 1000000}` would then mean what the last key says while a gateway,
//! a log or a WAF that keeps the first one saw something else. tollgate refuses such bodies
//! (400 naming the key) before reading them.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// The path (`records[3].value`, `consumer_id`) of the first key repeated within one object of
/// `body`, or `None` when every object's keys are unique. Malformed JSON is `None` too: the
/// caller's parser reports it with its own message.
pub fn first_repeated_key(body: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    (Walk {
        path: String::new(),
    })
    .deserialize(&mut de)
    .unwrap_or_default()
}

/// Walks one value at `path`; answers the first repeated key's path found inside it.
struct Walk {
    path: String,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if found.is_none() && !seen.insert(key) {
                found = Some(path.clone());
            }
            let inner = map.next_value_seed(Walk { path })?;
            found = found.or(inner);
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0usize;
        while let Some(inner) = seq.next_element_seed(Walk {
            path: format!("{}[{i}]", self.path),
        })? {
            found = found.or(inner);
            i += 1;
        }
        Ok(found)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_repeated_key_with_its_path() {
        for (body, want) in [
            (r#"{"a":1,"a":2}"#, Some("a")),
            (r#"{"a":{"b":1,"c":2,"b":3}}"#, Some("a.b")),
            (
                r#"{"records":[{"id":"x"},{"id":"y","value":1,"value":9}]}"#,
                Some("records[1].value"),
            ),
            (r#"[{"k":1},{"k":1,"k":1}]"#, Some("[1].k")),
            (r#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}"#, None),
            (r#"{"a":"\u0061","\u0061":1}"#, Some("a")),
            ("not json", None),
            ("", None),
        ] {
            assert_eq!(
                first_repeated_key(body.as_bytes()).as_deref(),
                want,
                "{body}"
            );
        }
    }
}
