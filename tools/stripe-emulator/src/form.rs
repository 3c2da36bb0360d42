//! Stripe's form encoding: `a[b][0][c]=v` pairs become a JSON tree of strings.
//!
//! async-stripe encodes with serde_qs (indexed arrays `a[0]=`), curl users write `a[]=`; both are
//! accepted. Leaves stay strings: Stripe itself types them per parameter, and so do the handlers.

use serde_json::{Map, Value};

/// Parses an `application/x-www-form-urlencoded` body or query string into a JSON object.
pub fn parse(input: &str) -> Result<Value, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(input).map_err(|e| format!("invalid form encoding: {e}"))?;
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        let path = split_key(&key)?;
        insert(&mut root, &path, value, &key)?;
    }
    Ok(arrays_from_indexed_objects(root))
}

fn split_key(key: &str) -> Result<Vec<String>, String> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let mut path = vec![head.to_string()];
    while !rest.is_empty() {
        let end = rest
            .find(']')
            .filter(|_| rest.starts_with('['))
            .ok_or_else(|| format!("invalid parameter name `{key}`"))?;
        path.push(rest[1..end].to_string());
        rest = &rest[end + 1..];
    }
    Ok(path)
}

fn insert(node: &mut Value, path: &[String], value: String, key: &str) -> Result<(), String> {
    let Value::Object(map) = node else {
        return Err(format!(
            "parameter `{key}` conflicts with another parameter"
        ));
    };
    let segment = if path[0].is_empty() {
        // `a[]=x`: append, keeping order by using the next free index.
        map.len().to_string()
    } else {
        path[0].clone()
    };
    if path.len() == 1 {
        map.insert(segment, Value::String(value));
        return Ok(());
    }
    let child = map
        .entry(segment)
        .or_insert_with(|| Value::Object(Map::new()));
    insert(child, &path[1..], value, key)
}

/// Objects whose keys are all indices (`tiers[0]`, `tiers[1]`) are arrays.
fn arrays_from_indexed_objects(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let all_indices = !map.is_empty()
                && map
                    .keys()
                    .all(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
            if all_indices {
                let mut items: Vec<(usize, Value)> = map
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.parse().unwrap_or(usize::MAX),
                            arrays_from_indexed_objects(v),
                        )
                    })
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(
                    map.into_iter()
                        .map(|(k, v)| (k, arrays_from_indexed_objects(v)))
                        .collect(),
                )
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_indexed_and_appended_params() {
        let v = parse(
            "currency=usd&tiers%5B0%5D%5Bup_to%5D=100&tiers%5B0%5D%5Bflat_amount%5D=8995\
             &tiers%5B1%5D%5Bup_to%5D=inf&lookup_keys[]=a&lookup_keys[]=b&metadata[k]=v",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"currency":"usd","tiers":[{"up_to":"100","flat_amount":"8995"},{"up_to":"inf"}],
                   "lookup_keys":["a","b"],"metadata":{"k":"v"}})
        );
    }

    #[test]
    fn ten_or_more_indices_keep_numeric_order() {
        let q: String = (0..12).map(|i| format!("expand[{i}]=f{i}&")).collect();
        let v = parse(&q).unwrap();
        assert_eq!(v["expand"][10], json!("f10"));
        assert_eq!(v["expand"][2], json!("f2"));
    }

    #[test]
    fn malformed_key_is_rejected() {
        assert!(parse("a[b=1").is_err());
    }
}
