//! The `tollgate` binary, run as an operator runs it.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example() -> String {
    repo().join("examples/catalog.json").display().to_string()
}

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("tollgate runs")
}

fn quote(args: &[&str]) -> Value {
    let catalog = example();
    let mut all = vec!["quote", "--catalog", catalog.as_str()];
    all.extend_from_slice(args);
    let out = tollgate(&all);
    assert!(
        out.status.success(),
        "tollgate {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn quote_standard_250000_is_23995() {
    let q = quote(&["--product", "standard", "--usage", "250000"]);
    assert_eq!(q["product"], "standard");
    assert_eq!(q["currency"], "usd");
    assert_eq!(q["total"], 23995);
    assert_eq!(q["lines"][0]["lookup_key"], "standard.calls");
    assert_eq!(q["lines"][0]["tiers"][1]["quantity"], 150000);
}

#[test]
fn quote_every_seed_table_product() {
    let cases: &[(&str, u64, i64)] = &[
        ("free", 100, 0),
        ("developer", 100, 0),
        ("developer", 10_100, 2_000),
        ("payg", 10_000, 1_500),
        ("payg", 250_000, 37_500),
        ("basic", 50_000, 1_495),
        ("standard", 0, 8_995),
        ("standard", 150_000, 13_995),
        ("pro", 500_000, 44_995),
        ("pro", 1_000_000, 74_995),
        ("enterprise", 1_500_000, 74_995),
        ("enterprise", 3_000_001, 224_985),
    ];
    for &(product, usage, total) in cases {
        let q = quote(&["--product", product, "--usage", &usage.to_string()]);
        assert_eq!(q["total"], total, "{product} at {usage} calls");
    }
}

#[test]
fn quote_with_named_meters_and_seats() {
    let q = quote(&[
        "--product",
        "data",
        "--usage",
        "1000",
        "--meter",
        "data_bytes=5000000000",
    ]);
    assert_eq!(q["total"], 145);
    let q = quote(&["--product", "team", "--seats", "3"]);
    assert_eq!(q["total"], 4500);
    let q = quote(&["--product", "managed", "--recurring-only"]);
    assert_eq!(q["total"], 4995);
}

#[test]
fn quote_errors_go_to_stderr_with_exit_code_2() {
    let catalog = example();
    for (args, expected) in [
        (
            vec!["--product", "gold", "--usage", "1"],
            "unknown product \"gold\"",
        ),
        (
            vec!["--product", "payg", "--meter", "requests=5"],
            "unknown meter \"requests\"",
        ),
        (vec!["--product", "team", "--seats", "99"], "seats"),
        (
            vec!["--product", "payg", "--meter", "api_calls"],
            "expected NAME=N",
        ),
        (vec!["--product", "payg", "--usage", "-5"], "error"),
    ] {
        let mut all = vec!["quote", "--catalog", catalog.as_str()];
        all.extend(args.iter().copied());
        let out = tollgate(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert!(out.stdout.is_empty(), "{all:?} printed to stdout");
        assert!(stderr(&out).contains(expected), "{all:?}: {}", stderr(&out));
    }
}

#[test]
fn catalog_validate_accepts_the_example() {
    let out = tollgate(&["catalog", "validate", &example()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (18 products, 2 meters)"));
}

#[test]
fn catalog_validate_prints_every_error_and_exits_2() {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(example()).unwrap()).unwrap();
    v["version"] = 2.into();
    v["products"][3]["id"] = "free".into();
    v["products"][14]["prices"][0]["tiers"][1]["up_to"] = 50000.into();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad-catalog.json");
    std::fs::write(&path, v.to_string()).unwrap();

    let out = tollgate(&["catalog", "validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for expected in [
        "version: must be 1",
        "products[3].id: duplicate product id \"free\"",
        "products[14].prices[0].tiers[1].up_to: must be greater than the previous tier",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    // The quote command refuses an invalid catalog the same way.
    let out = tollgate(&[
        "quote",
        "--catalog",
        path.to_str().unwrap(),
        "--product",
        "payg",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("version: must be 1"));
}

#[test]
fn catalog_validate_reports_a_missing_file() {
    let out = tollgate(&["catalog", "validate", "/nonexistent/catalog.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read catalog"));
}

#[test]
fn catalog_schema_is_the_checked_in_schema() {
    let out = tollgate(&["catalog", "schema"]);
    assert!(out.status.success());
    let on_disk = std::fs::read(repo().join("schemas/catalog.schema.json")).unwrap();
    assert!(
        out.stdout == on_disk,
        "schemas/catalog.schema.json is stale"
    );
}
