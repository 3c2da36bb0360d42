//! Every sample in `events/` parses as its function's input type, names a route the template
//! really has, and carries a body its function accepts. `cargo lambda invoke --data-file` and
//! the handler tests use these files, so a stale sample is a bug.

mod sam;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayV2httpRequest,
};
use aws_lambda_events::cloudwatch_logs::LogsEvent;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{NaiveDate, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sam as template;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The signing secret of `events/stripe-webhook/*` (documented in `events/README.md`).
const SAMPLE_WEBHOOK_SECRET: &str = "whsec_tollgate_sample_events_only";

/// Every `events/<function>/<name>.json`, by function folder.
fn samples() -> BTreeMap<String, Vec<(PathBuf, String)>> {
    let dir = template::repo_root().join("events");
    let mut out: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("events/") {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let function = path.file_name().unwrap().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&path).unwrap() {
            let file = file.unwrap().path();
            assert_eq!(
                file.extension().and_then(|e| e.to_str()),
                Some("json"),
                "{}: only .json samples belong in events/<function>/",
                file.display()
            );
            let text = std::fs::read_to_string(&file).unwrap();
            out.entry(function.clone()).or_default().push((file, text));
        }
    }
    out
}

/// Whether a concrete path fits a route path such as `/consumers/{consumer_id}/has-paid`;
/// returns the path parameters it binds.
fn match_route(route_path: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let r: Vec<&str> = route_path.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if r.len() != p.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (rs, ps) in r.iter().zip(&p) {
        match rs.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if !ps.is_empty() => {
                params.insert(name.to_owned(), (*ps).to_owned());
            }
            _ if rs == ps => {}
            _ => return None,
        }
    }
    Some(params)
}

fn check_http_sample(function: &str, routes: &[String], file: &Path, text: &str) {
    let name = file.display();
    // What lambda_http hands the handler...
    let request = lambda_http::request::from_str(text)
        .unwrap_or_else(|e| panic!("{name}: not an API Gateway request lambda_http accepts: {e}"));
    // ...and the payload 2.0 fields, strictly.
    let event: ApiGatewayV2httpRequest = serde_json::from_str(text).unwrap();
    assert_eq!(
        event.version.as_deref(),
        Some("2.0"),
        "{name}: HTTP API payload 2.0"
    );
    assert!(
        !event.is_base64_encoded,
        "{name}: samples keep bodies readable"
    );

    let route_key = event.route_key.clone().expect("routeKey");
    assert!(
        routes.contains(&route_key),
        "{name}: route {route_key:?} is not one of {function}'s routes in template.yaml {routes:?}"
    );
    let (method, route_path) = route_key.split_once(' ').unwrap();
    let raw_path = event.raw_path.clone().expect("rawPath");
    assert_eq!(request.method().as_str(), method, "{name}");
    assert_eq!(request.uri().path(), raw_path, "{name}");
    assert_eq!(event.request_context.http.method.as_str(), method, "{name}");
    let bound = match_route(route_path, &raw_path)
        .unwrap_or_else(|| panic!("{name}: rawPath {raw_path} does not fit {route_path}"));
    let given: BTreeMap<String, String> = event.path_parameters.clone().into_iter().collect();
    assert_eq!(given, bound, "{name}: pathParameters");
    if let Some(q) = request.uri().query() {
        assert_eq!(Some(q), event.raw_query_string.as_deref(), "{name}");
    }

    let header = |h: &str| request.headers().get(h).and_then(|v| v.to_str().ok());
    let body = request.body().as_ref();
    match function {
        "checkout" | "usage" => {
            let auth = header("authorization").unwrap_or_default();
            assert!(
                auth.starts_with("Bearer "),
                "{name}: the portal and gateway routes take a bearer secret"
            );
        }
        "stripe-webhook" => {
            let sig =
                header("stripe-signature").unwrap_or_else(|| panic!("{name}: Stripe-Signature"));
            verify_stripe_signature(sig, body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ev: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(ev["object"], "event", "{name}");
            assert!(ev["id"].as_str().unwrap().starts_with("evt_"), "{name}");
            assert!(
                ev["type"].is_string() && ev["data"]["object"].is_object(),
                "{name}"
            );
        }
        other => panic!("{other} is not an HTTP function"),
    }
    if method == "POST" && !body.is_empty() {
        assert!(
            header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "{name}: JSON body needs a JSON content-type"
        );
    }
    match route_key.as_str() {
        "POST /usage" => {
            let batch: tollgate_domain::usage::UsageBatchDoc = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("{name}: not a usage batch: {e}"));
            assert!(!batch.records.is_empty(), "{name}");
        }
        "POST /checkout/sessions" => {
            let b: Value = serde_json::from_slice(body).unwrap();
            for field in [
                "consumer_id",
                "product_id",
                "subscription_name",
                "success_url",
                "cancel_url",
            ] {
                assert!(b[field].is_string(), "{name}: body.{field}");
            }
        }
        _ => {}
    }
}

/// Stripe's scheme: `t=<unix>,v1=<hex hmac-sha256 of "t.body">` (timestamp not checked here).
fn verify_stripe_signature(header: &str, body: &[u8]) -> Result<(), String> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => v1.push(v),
            _ => {}
        }
    }
    let t = t.ok_or("Stripe-Signature without t=")?;
    let ok = v1.iter().any(|sig| {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(SAMPLE_WEBHOOK_SECRET.as_bytes()).unwrap();
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        hex::decode(sig).is_ok_and(|s| mac.verify_slice(&s).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err("no v1 signature matches the sample secret".into())
    }
}

fn check_authorizer_sample(file: &Path, text: &str) {
    let name = file.display();
    let event: ApiGatewayCustomAuthorizerRequestTypeRequest = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{name}: not a REQUEST authorizer event: {e}"));
    assert_eq!(event.type_.as_deref(), Some("REQUEST"), "{name}");
    assert!(
        event
            .method_arn
            .as_deref()
            .unwrap_or_default()
            .starts_with("arn:aws:execute-api:"),
        "{name}"
    );
    let key = event
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{name}: the authorizer reads the x-api-key header"));
    assert!(
        key.len() == 67
            && key.starts_with("tg_")
            && key[3..].chars().all(|c| c.is_ascii_hexdigit()),
        "{name}: a tollgate key is tg_ + 64 hex characters"
    );
}

fn check_billing_run_sample(file: &Path, text: &str) {
    let name = file.display();
    let payload: Value = serde_json::from_str(text).unwrap();
    if payload.get("detail-type").is_some() {
        let ev: EventBridgeEvent = serde_json::from_value(payload.clone())
            .unwrap_or_else(|e| panic!("{name}: not an EventBridge envelope: {e}"));
        assert_eq!(ev.detail_type, "Scheduled Event", "{name}");
    }
    // The function's own reading of its input: every sample bills the night of 2026-02-25.
    let now = Utc.with_ymd_and_hms(2026, 2, 26, 12, 0, 0).unwrap();
    let run = billing_run::input::parse(&payload, now)
        .unwrap_or_else(|e| panic!("{name}: the billing run refuses it: {e}"));
    assert_eq!(
        run.date,
        NaiveDate::from_ymd_opt(2026, 2, 25).unwrap(),
        "{name}"
    );
}

/// A CloudWatch Logs subscription delivery: `awslogs.data` is base64(gzip(JSON)), which
/// `LogsEvent` decodes; a data message's lines are the access-log format the function reads.
fn check_usage_from_logs_sample(file: &Path, text: &str) {
    let name = file.display();
    let event: LogsEvent = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{name}: not a CloudWatch Logs subscription event: {e}"));
    let data = event.aws_logs.data;
    match data.message_type.as_str() {
        "CONTROL_MESSAGE" => {}
        "DATA_MESSAGE" => {
            assert!(!data.log_events.is_empty(), "{name}");
            for e in &data.log_events {
                let line = usage_from_logs::parse_line(&e.message)
                    .unwrap_or_else(|err| panic!("{name}: event {}: {err}", e.id));
                assert_eq!(line.time.timestamp_millis(), e.timestamp, "{name}");
            }
            let planned = usage_from_logs::plan(
                &data.log_group,
                &data
                    .log_events
                    .iter()
                    .map(|e| usage_from_logs::LogEvent {
                        id: e.id.clone(),
                        message: e.message.clone(),
                    })
                    .collect::<Vec<_>>(),
            );
            assert!(planned.malformed.is_empty(), "{name}");
        }
        other => panic!("{name}: messageType {other}"),
    }
}

#[test]
fn every_sample_event_parses_as_its_functions_input() {
    let routes = template::routes_by_function(&template::load());
    let samples = samples();
    assert_eq!(
        samples.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        routes.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        "one events/ folder per function of template.yaml"
    );
    let mut checked = 0;
    for (function, files) in &samples {
        for (file, text) in files {
            match function.as_str() {
                "checkout" | "stripe-webhook" | "usage" => {
                    check_http_sample(function, &routes[function], file, text)
                }
                "authorizer" => check_authorizer_sample(file, text),
                "billing-run" => check_billing_run_sample(file, text),
                "usage-from-logs" => check_usage_from_logs_sample(file, text),
                other => panic!("events/{other}: no function of that name"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} samples");
}

#[test]
fn every_route_has_a_sample() {
    let routes = template::routes_by_function(&template::load());
    let sampled: BTreeSet<String> = samples()
        .values()
        .flatten()
        .filter_map(|(_, text)| {
            let v: Value = serde_json::from_str(text).ok()?;
            v["routeKey"].as_str().map(str::to_owned)
        })
        .collect();
    for route in routes.values().flatten() {
        assert!(sampled.contains(route), "no sample event for {route}");
    }
}

#[test]
fn a_tampered_webhook_body_fails_the_signature_check() {
    let text = std::fs::read_to_string(
        template::repo_root().join("events/stripe-webhook/checkout-session-completed.json"),
    )
    .unwrap();
    let event: ApiGatewayV2httpRequest = serde_json::from_str(&text).unwrap();
    let sig = event
        .headers
        .get("stripe-signature")
        .unwrap()
        .to_str()
        .unwrap();
    let body = event.body.unwrap();
    assert!(verify_stripe_signature(sig, body.as_bytes()).is_ok());
    let tampered = body.replace("\"amount_total\":8995", "\"amount_total\":1");
    assert_ne!(tampered, body);
    assert!(verify_stripe_signature(sig, tampered.as_bytes()).is_err());
}
