//! The documented alarms' metrics move when what they watch happens: a delivery signed with
//! the wrong webhook secret and a malformed secret write log lines (in the functions' real
//! JSON format) that the template's metric filters count.

mod sam;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_eventbridge::config::Credentials;
use lambda_http::Body;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use stripe_webhook::Webhook;
use tollgate_app::Secret;
use tollgate_domain::Catalog;
use tollgate_domain::time::SystemClock;
use tollgate_events::EventBridgePublisher;
use tollgate_stripe::{StripeAdapter, StripeConfig};
use tollgate_testkit::eventbridge::EventBridgeCapture;

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn json(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

/// The metric filter `id` of template.yaml: its log group and its pattern, which must be of
/// the form `{ $.a.b = "literal" }` (the only form the message filters use).
fn message_filter(id: &str) -> (String, Vec<String>, String) {
    let tpl = sam::load();
    let p = &tpl["Resources"][id]["Properties"];
    let group = match &p["LogGroupName"] {
        serde_yaml::Value::Tagged(t) => t.value.as_str().unwrap().to_owned(),
        other => panic!("{id}: LogGroupName {other:?}"),
    };
    let pattern = p["FilterPattern"].as_str().unwrap();
    let inner = pattern
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    let (path, literal) = inner.split_once(" = ").expect("$.path = \"literal\"");
    let path = path
        .trim_start_matches("$.")
        .split('.')
        .map(str::to_owned)
        .collect();
    (group, path, literal.trim_matches('"').to_owned())
}

/// How many of `lines` the filter `{ $.path = "literal" }` counts.
fn count(lines: &[Value], path: &[String], literal: &str) -> usize {
    lines
        .iter()
        .filter(|l| {
            path.iter()
                .try_fold(*l, |v, k| v.get(k))
                .and_then(Value::as_str)
                == Some(literal)
        })
        .count()
}

async fn webhook_holding(secret: &str) -> (Webhook, EventBridgeCapture) {
    let table = tollgate_testkit::dynamo::fresh_table().await;
    let capture = EventBridgeCapture::start().await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(tollgate_events::https_client())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(capture.endpoint_url())
        .load()
        .await;
    let catalog: Arc<Catalog> =
        Arc::new(serde_json::from_str(tollgate_app::config::EMBEDDED_CATALOG).unwrap());
    let stripe = StripeConfig::new(
        "sk_test_unused".to_string().into(),
        Some("http://127.0.0.1:9".into()),
    );
    let webhook = Webhook {
        store: Arc::new(table.store.clone()),
        payments: Arc::new(StripeAdapter::from_config(&stripe).unwrap()),
        publisher: Arc::new(EventBridgePublisher::new(&sdk, "tollgate-test-bus")),
        clock: Arc::new(SystemClock),
        catalog,
        webhook_secret: Secret::from_value("STRIPE_WEBHOOK_SECRET", secret),
        credit_policy: tollgate_domain::credit::CreditPolicy {
            floor: 0,
            low_threshold: 200,
        },
    };
    (webhook, capture)
}

async fn deliver(webhook: &Webhook, signed_with: &str) -> u16 {
    let now = chrono::Utc::now().timestamp();
    let body = json!({
        "id": "evt_alarm_1", "object": "event", "type": "radar.early_fraud_warning.created",
        "api_version": "2019-02-19", "created": now, "livemode": false,
        "data": {"object": {"id": "issfr_1", "object": "radar.early_fraud_warning"}}
    })
    .to_string();
    let sig = stripe_webhook::signature::sign(body.as_bytes(), signed_with.as_bytes(), now);
    let req = http::Request::builder()
        .method("POST")
        .uri("/stripe/webhook")
        .header("stripe-signature", sig)
        .body(Body::Binary(body.into_bytes()))
        .unwrap();
    webhook.handle(req).await.unwrap().status().as_u16()
}

fn capture_logs() -> (Lines, tracing::subscriber::DefaultGuard) {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber =
        tollgate_app::telemetry::json_subscriber(tracing_subscriber_filter(), move || {
            writer.clone()
        });
    (lines, tracing::subscriber::set_default(subscriber))
}

fn tracing_subscriber_filter() -> tollgate_app::telemetry::EnvFilter {
    tollgate_app::telemetry::EnvFilter::new("info")
}

/// Issue 21's done-when: webhook secret wrong → the documented alarm's metric moves.
#[tokio::test]
async fn a_wrong_webhook_secret_moves_the_refused_webhooks_metric() {
    let (group, path, literal) = message_filter("StripeWebhookRefusedMetricFilter");
    assert_eq!(group, "StripeWebhookLogGroup");
    let (lines, _guard) = capture_logs();
    let (webhook, _capture) = webhook_holding("whsec_what_tollgate_holds").await;

    // Stripe signs with the endpoint's real secret; tollgate holds another one.
    for _ in 0..5 {
        assert_eq!(deliver(&webhook, "whsec_what_stripe_signs_with").await, 400);
    }
    let logged = lines.json();
    assert_eq!(count(&logged, &path, &literal), 5, "{logged:?}");
    // The alarm on that metric fires at 5 in 15 minutes.
    let tpl = sam::load();
    let alarm = &tpl["Resources"]["StripeWebhookRefusedAlarm"]["Properties"];
    assert_eq!(alarm["MetricName"], "WebhooksRefused");
    assert_eq!(alarm["Threshold"].as_u64(), Some(5));

    // The right secret: the metric does not move.
    let before = count(&lines.json(), &path, &literal);
    let (good, _c) = webhook_holding("whsec_what_stripe_signs_with").await;
    assert_eq!(deliver(&good, "whsec_what_stripe_signs_with").await, 200);
    assert_eq!(count(&lines.json(), &path, &literal), before);
}

#[tokio::test]
async fn a_malformed_secret_moves_the_configuration_errors_metric_once() {
    let (group, path, literal) = message_filter("StripeWebhookConfigurationErrorMetricFilter");
    assert_eq!(group, "StripeWebhookLogGroup");
    let (lines, _guard) = capture_logs();
    let (webhook, _capture) = webhook_holding("sk_test_pasted_into_the_wrong_secret").await;
    for _ in 0..3 {
        assert_eq!(
            deliver(&webhook, "sk_test_pasted_into_the_wrong_secret").await,
            500
        );
    }
    let logged = lines.json();
    assert_eq!(count(&logged, &path, &literal), 1, "{logged:?}");
    assert!(
        !serde_json::to_string(&logged)
            .unwrap()
            .contains("pasted_into_the_wrong_secret"),
        "the secret's value leaked into the log"
    );
}
