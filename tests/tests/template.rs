//! template.yaml points at the code that exists: every function's `CodeUri` is a crate of the
//! workspace with a binary, built by cargo-lambda for arm64 / provided.al2023, and the HTTP API
//! serves exactly the routes the product defines.

mod sam;

use sam as template;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

/// `cargo metadata` for the workspace: package manifest dir → binary target names.
fn workspace_binaries() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(template::repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Json = serde_json::from_slice(&out.stdout).unwrap();
    let root = template::repo_root().canonicalize().unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let manifest = std::path::Path::new(p["manifest_path"].as_str().unwrap());
            let dir = manifest.parent().unwrap().canonicalize().unwrap();
            let rel = dir
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            (rel, bins)
        })
        .collect()
}

#[test]
fn every_code_uri_is_a_workspace_crate_with_a_binary() {
    let tpl = template::load();
    let members = workspace_binaries();
    let functions = template::functions(&tpl);
    assert_eq!(
        functions.len(),
        5,
        "checkout, stripe-webhook, usage, billing-run, authorizer"
    );
    for f in &functions {
        let bins = members.get(&f.code_uri).unwrap_or_else(|| {
            panic!(
                "{}: CodeUri {} is not a workspace member (members: {:?})",
                f.logical_id,
                f.code_uri,
                members.keys().collect::<Vec<_>>()
            )
        });
        // cargo-lambda builds the package's only binary and SAM zips it as `bootstrap`.
        assert_eq!(
            bins.len(),
            1,
            "{}: expected one binary, found {bins:?}",
            f.logical_id
        );
        assert_eq!(
            f.metadata["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{}",
            f.logical_id
        );
    }
    // And the other way round: no function crate is left out of the template.
    let in_template: BTreeSet<&str> = functions.iter().map(|f| f.code_uri.as_str()).collect();
    let crates: BTreeSet<&str> = members
        .keys()
        .map(String::as_str)
        .filter(|d| d.starts_with("functions/"))
        .collect();
    assert_eq!(in_template, crates);
}

#[test]
fn functions_run_on_arm64_provided_al2023_with_bootstrap() {
    let tpl = template::load();
    let g = &tpl["Globals"]["Function"];
    assert_eq!(g["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(g["Handler"].as_str(), Some("bootstrap"));
    assert_eq!(g["Architectures"][0].as_str(), Some("arm64"));
    for f in template::functions(&tpl) {
        for key in ["Runtime", "Handler", "Architectures"] {
            assert!(
                f.properties.get(key).is_none(),
                "{} overrides {key}: keep it in Globals",
                f.logical_id
            );
        }
    }
}

#[test]
fn the_http_api_serves_the_product_routes() {
    let routes = template::routes_by_function(&template::load());
    let expected: BTreeMap<String, Vec<String>> = [
        (
            "checkout",
            vec![
                "POST /checkout/sessions",
                "GET /catalog",
                "GET /consumers/{consumer_id}/subscriptions",
                "POST /subscriptions/{subscription_id}/cancel",
                "POST /subscriptions/{subscription_id}/resume",
                "POST /subscriptions/{subscription_id}/keys",
                "GET /consumers/{consumer_id}/has-paid",
            ],
        ),
        ("stripe-webhook", vec!["POST /stripe/webhook"]),
        (
            "usage",
            vec![
                "POST /usage",
                "GET /entitlements/{key}",
                "GET /entitlements",
            ],
        ),
        ("billing-run", vec![]),
        ("authorizer", vec![]),
    ]
    .into_iter()
    .map(|(f, r)| (f.to_owned(), r.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(routes, expected);
}

#[test]
fn functions_get_secret_arns_never_secret_values() {
    let tpl = template::load();
    let g = &tpl["Globals"]["Function"]["Environment"]["Variables"];
    for f in template::functions(&tpl) {
        let vars = f.properties["Environment"]["Variables"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        let names: Vec<String> = vars
            .keys()
            .chain(g.as_mapping().unwrap().keys())
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        for name in &names {
            let secretish = ["SECRET", "KEY", "TOKEN", "PASSWORD"]
                .iter()
                .any(|w| name.contains(w));
            assert!(
                !secretish || name.ends_with("_ARN"),
                "{}: {name} looks like a secret value in the environment",
                f.logical_id
            );
        }
    }
}
