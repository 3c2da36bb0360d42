//! Every published event has a schema in `schemas/events/`, and the schema describes exactly
//! what is serialized: the same keys, all required, each of the declared JSON type.

mod common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events")
}

fn load(detail_type: &str) -> Value {
    let path = schema_dir().join(format!("{detail_type}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no schema for {detail_type} at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks `value` against the subset of JSON Schema our event schemas use.
fn check(schema: &Value, value: &Value, at: &str) {
    if let Some(c) = schema.get("const") {
        assert_eq!(value, c, "{at}: const");
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        assert!(options.contains(value), "{at}: {value} not in {options:?}");
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => {
            let s = value
                .as_str()
                .unwrap_or_else(|| panic!("{at}: not a string"));
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                assert!(s.chars().count() as u64 >= min, "{at}: shorter than {min}");
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                assert!(s.chars().count() as u64 <= max, "{at}: longer than {max}");
            }
            if schema.get("format").and_then(Value::as_str) == Some("date-time") {
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap_or_else(|e| panic!("{at}: {s:?} is not RFC 3339: {e}"));
            }
        }
        Some("integer") => {
            let n = value
                .as_i64()
                .unwrap_or_else(|| panic!("{at}: not an integer"));
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
                assert!(n >= min, "{at}: below {min}");
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_i64) {
                assert!(n <= max, "{at}: above {max}");
            }
        }
        Some("object") => {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object"));
            let props = schema["properties"].as_object().expect("properties");
            let declared: BTreeSet<&str> = props.keys().map(String::as_str).collect();
            let required: BTreeSet<&str> = schema["required"]
                .as_array()
                .expect("required")
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let present: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(required, declared, "{at}: every property is required");
            assert_eq!(present, declared, "{at}: serialized keys vs schema");
            assert_eq!(schema["additionalProperties"], Value::Bool(false), "{at}");
            for (k, v) in obj {
                check(&props[k], v, &format!("{at}.{k}"));
            }
        }
        Some(other) => panic!("{at}: type {other} not handled by this checker"),
        None => assert!(schema.get("const").is_some(), "{at}: no type and no const"),
    }
}

#[test]
fn every_event_matches_its_schema() {
    for event in common::one_of_each() {
        let schema = load(event.detail_type());
        assert_eq!(schema["title"], event.detail_type());
        check(
            &schema,
            &serde_json::to_value(&event).unwrap(),
            event.detail_type(),
        );
    }
}

#[test]
fn there_is_no_schema_without_an_event() {
    let detail_types: BTreeSet<String> = common::one_of_each()
        .iter()
        .map(|e| e.detail_type().to_owned())
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(schema_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    assert_eq!(files, detail_types);
}

#[test]
fn the_checker_rejects_a_missing_key() {
    let event = &common::one_of_each()[0];
    let mut value = serde_json::to_value(event).unwrap();
    value.as_object_mut().unwrap().remove("product_id");
    let schema = load(event.detail_type());
    let result = std::panic::catch_unwind(|| check(&schema, &value, "x"));
    assert!(result.is_err());
}
