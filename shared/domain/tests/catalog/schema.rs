//! `schemas/catalog.schema.json` is generated from the catalog types; this test fails when the
//! checked-in file is stale. Regenerate with
//! `UPDATE_SCHEMA=1 cargo test -p tollgate-domain --test catalog schema`
//! (or `tollgate catalog schema > schemas/catalog.schema.json`).

use std::path::PathBuf;

#[test]
fn checked_in_schema_matches_the_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/catalog.schema.json");
    let generated = tollgate_domain::catalog::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is stale: run `UPDATE_SCHEMA=1 cargo test -p tollgate-domain --test catalog schema`",
        path.display()
    );
}

#[test]
fn schema_describes_the_catalog_shape() {
    let schema: serde_json::Value =
        serde_json::from_str(&tollgate_domain::catalog::json_schema()).unwrap();
    assert_eq!(schema["title"], "Catalog");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level fields are rejected"
    );
    let required = schema["required"].as_array().unwrap();
    for field in ["version", "currency", "products"] {
        assert!(required.iter().any(|r| r == field), "{field} is required");
    }
    let defs = schema["$defs"].as_object().unwrap();
    for name in [
        "Product",
        "PriceComponent",
        "Tier",
        "DecimalString",
        "CreditPacks",
    ] {
        assert!(defs.contains_key(name), "schema defines {name}");
    }
}
