//! The events the bench feeds the functions: the samples in `events/` (what AWS delivers), the
//! webhook sample re-signed with the current time (its own signature is long past Stripe's
//! 300 s tolerance), and usage batches of live subscriptions, generated per request.

use anyhow::Context;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::Path;
use tollgate_domain::time::{Duration, Timestamp, hour_start};

/// The secret `events/stripe-webhook/checkout-session-completed.json` was signed with.
pub const SAMPLE_WEBHOOK_SECRET: &str = "whsec_tollgate_sample_events_only";

/// Every `events/<function>/*.json`, sorted by name.
pub fn samples(root: &Path, function: &str) -> anyhow::Result<Vec<Value>> {
    let dir = root.join("events").join(function);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)?;
            serde_json::from_str(&text).with_context(|| format!("parse {}", p.display()))
        })
        .collect()
}

/// A webhook sample signed now, as Stripe would deliver it.
pub fn resign_webhook(mut event: Value, now: i64) -> Value {
    let body = event["body"].as_str().unwrap_or_default().to_string();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(SAMPLE_WEBHOOK_SECRET.as_bytes()).expect("any key size");
    mac.update(format!("{now}.{body}").as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    event["headers"]["stripe-signature"] = json!(format!("t={now},v1={sig}"));
    event
}

/// The body of a usage batch: `records` records over `subscriptions`, spread over the hour
/// before `now` (so all of it lands in one bucket per subscription).
pub fn usage_batch_body(
    batch_id: &str,
    subscriptions: &[String],
    records: usize,
    now: Timestamp,
) -> String {
    let hour = hour_start(now) - Duration::hours(1);
    let records: Vec<Value> = (0..records)
        .map(|i| {
            let t = hour + Duration::seconds((i * 7 % 3600) as i64);
            json!({
                "id": format!("{batch_id}-{i:05}"),
                "subscription_id": subscriptions[i % subscriptions.len()],
                "timestamp": t.to_rfc3339(),
                "meter": "api_calls",
                "value": 1,
                "operation": "GET /v1/forecast"
            })
        })
        .collect();
    json!({"batch_id": batch_id, "records": records}).to_string()
}

/// `events/usage/post-batch.json` carrying `body` instead of its own.
pub fn usage_post(template: &Value, body: String) -> Bytes {
    let mut e = template.clone();
    e["headers"]["content-length"] = json!(body.len().to_string());
    e["body"] = json!(body);
    Bytes::from(e.to_string())
}

pub fn bytes(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}
