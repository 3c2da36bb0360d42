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
        6,
        "checkout, stripe-webhook, usage, billing-run, authorizer, usage-from-logs"
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
                "POST /consumers/{consumer_id}/credit/adjustments",
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
        ("usage-from-logs", vec![]),
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

/// A value that may be a CloudFormation short tag (`!Sub tollgate/${AWS::StackName}`): the
/// tag's string.
fn plain_or_tagged(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Tagged(t) => t.value.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `tollgate/<stack>` in the operations guide stands for `tollgate/${AWS::StackName}`.
fn documented_namespace(ns: &str) -> String {
    ns.replace("<stack>", "${AWS::StackName}")
}

/// Every alarm docs/operations.md lists exists in template.yaml on the metric it names, every
/// alarm of the template is listed, and a metric that comes from a log metric filter has a
/// filter producing it.
#[test]
fn every_documented_alarm_exists_with_its_metric() {
    let doc = std::fs::read_to_string(template::repo_root().join("docs/operations.md")).unwrap();
    let tpl = template::load();
    let resources = tpl["Resources"].as_mapping().unwrap();
    let section = doc
        .split("## The alarms")
        .nth(1)
        .expect("docs/operations.md has a section \"The alarms\"");
    let section = section.split("\n## ").next().unwrap();
    let mut documented: BTreeMap<String, (String, String)> = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let names: Vec<&str> = cells[1]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| n.ends_with("Alarm"))
            .collect();
        let metric: Vec<&str> = cells[2].split('`').skip(1).step_by(2).collect();
        assert!(
            metric.len() >= 2,
            "metric cell must be `namespace` `name`: {row}"
        );
        for n in names {
            documented.insert(
                n.to_owned(),
                (documented_namespace(metric[0]), metric[1].to_owned()),
            );
        }
    }
    assert!(
        documented.len() >= 10,
        "alarms read from the guide: {documented:?}"
    );

    let alarms: BTreeMap<String, &serde_yaml::Value> = resources
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|(id, r)| (id.as_str().unwrap().to_owned(), &r["Properties"]))
        .collect();
    let filters: Vec<(String, String)> = resources
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Logs::MetricFilter"))
        .flat_map(|(_, r)| {
            r["Properties"]["MetricTransformations"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        plain_or_tagged(&t["MetricNamespace"]).unwrap(),
                        t["MetricName"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();

    let mut problems = Vec::new();
    for (name, (ns, metric)) in &documented {
        let Some(props) = alarms.get(name) else {
            problems.push(format!("{name}: documented, not in template.yaml"));
            continue;
        };
        let got = (
            plain_or_tagged(&props["Namespace"]).unwrap_or_default(),
            props["MetricName"].as_str().unwrap_or_default().to_owned(),
        );
        if got != (ns.clone(), metric.clone()) {
            problems.push(format!(
                "{name}: template watches {got:?}, guide says {ns} {metric}"
            ));
        }
        if ns.starts_with("tollgate/") && !filters.contains(&(ns.clone(), metric.clone())) {
            problems.push(format!(
                "{name}: no log metric filter produces {ns} {metric}"
            ));
        }
        if props["AlarmActions"].is_null() {
            problems.push(format!(
                "{name}: notifies no one even with AlarmTopicArn set"
            ));
        }
    }
    for name in alarms.keys() {
        if !documented.contains_key(name) {
            problems.push(format!(
                "{name}: in template.yaml, not in docs/operations.md"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each HTTP API route has a 5xx alarm on exactly its method and path (API Gateway's detailed
/// metrics, which the API must enable), and the webhook route a 4xx alarm.
#[test]
fn every_route_has_a_5xx_alarm_on_its_own_metric() {
    let tpl = template::load();
    let api = &tpl["Resources"]["TollgateHttpApi"]["Properties"];
    assert_eq!(
        api["DefaultRouteSettings"]["DetailedMetricsEnabled"].as_bool(),
        Some(true),
        "per-route metrics need DetailedMetricsEnabled on the HTTP API"
    );
    let mut alarmed: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (_, r) in tpl["Resources"].as_mapping().unwrap() {
        let p = &r["Properties"];
        if r["Type"].as_str() != Some("AWS::CloudWatch::Alarm")
            || p["Namespace"].as_str() != Some("AWS/ApiGateway")
        {
            continue;
        }
        let dims: BTreeMap<String, String> = p["Dimensions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["Name"].as_str().unwrap().to_owned(),
                    d["Value"].as_str().unwrap_or("(ref)").to_owned(),
                )
            })
            .collect();
        assert_eq!(dims.get("Stage").map(String::as_str), Some("$default"));
        assert_eq!(
            p["Dimensions"][0]["Value"],
            serde_yaml::from_str::<serde_yaml::Value>("!Ref TollgateHttpApi").unwrap()
        );
        alarmed
            .entry((dims["Method"].clone(), dims["Resource"].clone()))
            .or_default()
            .insert(p["MetricName"].as_str().unwrap().to_owned());
    }
    let mut missing = Vec::new();
    for f in template::functions(&tpl) {
        for route in &f.routes {
            let (method, path) = route.split_once(' ').unwrap();
            let metrics = alarmed
                .get(&(method.to_owned(), path.to_owned()))
                .cloned()
                .unwrap_or_default();
            if !metrics.contains("5xx") {
                missing.push(format!("{route}: no 5xx alarm"));
            }
        }
    }
    assert!(
        alarmed
            .get(&("POST".to_owned(), "/stripe/webhook".to_owned()))
            .is_some_and(|m| m.contains("4xx")),
        "the webhook route has no 4xx alarm"
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The log metric filters match what the functions really log: each filter's message is a
/// literal in the code that logs it, and the billing run's fields are in its EMF line.
#[test]
fn log_metric_filters_match_what_the_functions_log() {
    let tpl = template::load();
    let root = template::repo_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    // A function's log group carries its own lines and those of the application layer it
    // calls (the one transition step publishes for checkout and the webhook).
    let transition = read("shared/app/src/subscriptions.rs");
    let sources: BTreeMap<&str, String> = [
        (
            "CheckoutLogGroup",
            read("functions/checkout/src/routes.rs") + &transition,
        ),
        (
            "StripeWebhookLogGroup",
            read("functions/stripe-webhook/src/lib.rs") + &transition,
        ),
        ("UsageLogGroup", read("functions/usage/src/lib.rs")),
        (
            "BillingRunLogGroup",
            read("functions/billing-run/src/summary.rs"),
        ),
    ]
    .into_iter()
    .collect();
    let config = read("shared/app/src/config.rs");
    let mut checked = 0;
    for (id, r) in tpl["Resources"].as_mapping().unwrap() {
        if r["Type"].as_str() != Some("AWS::Logs::MetricFilter") {
            continue;
        }
        let p = &r["Properties"];
        let group = plain_or_tagged(&p["LogGroupName"]).unwrap();
        let pattern = p["FilterPattern"].as_str().unwrap();
        let code = &sources[group.as_str()];
        if let Some(msg) = pattern
            .split("$.fields.message = \"")
            .nth(1)
            .and_then(|m| m.split('"').next())
        {
            let literal = format!("\"{msg}\"");
            assert!(
                code.contains(&literal)
                    || (msg == "configuration error" && config.contains(&literal)),
                "{id:?}: no code logs {literal} into {group}"
            );
        } else {
            for field in ["Unconfirmed", "LateUnbilled", "Failed"] {
                if pattern.contains(&format!("$.{field} ")) {
                    assert!(code.contains(&format!("\"{field}\":")), "{id:?}: {field}");
                }
            }
            assert!(code.contains("\"Function\": \"billing-run\""), "{id:?}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} metric filters");
}

/// The access-log format tollgate exports for the provider's stage is the one
/// usage-from-logs reads, and the sample provider API uses the export (not a copy).
#[test]
fn the_exported_access_log_format_is_the_one_usage_from_logs_reads() {
    let tpl = template::load();
    let exported = tpl["Outputs"]["UsageFromLogsAccessLogFormat"]["Value"]
        .as_str()
        .expect("UsageFromLogsAccessLogFormat output");
    assert_eq!(exported, usage_from_logs::ACCESS_LOG_FORMAT);
    let text =
        std::fs::read_to_string(template::repo_root().join("examples/provider-api/template.yaml"))
            .unwrap();
    assert!(text.contains("${TollgateStackName}-AccessLogFormat"));
    assert!(text.contains("${TollgateStackName}-UsageFromLogsFunctionArn"));
    assert!(text.contains("${TollgateStackName}-AuthorizerFunctionArn"));
    for export in [
        "AccessLogFormat",
        "UsageFromLogsFunctionArn",
        "AuthorizerFunctionArn",
    ] {
        let found = tpl["Outputs"]
            .as_mapping()
            .unwrap()
            .values()
            .any(|o| format!("{:?}", o["Export"]["Name"]).contains(&format!("-{export}")));
        assert!(found, "template.yaml exports {export}");
    }
}
