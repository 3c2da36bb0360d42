//! usage-from-logs on DynamoDB Local, through its Lambda entry point (a CloudWatch Logs
//! subscription event, gzip + base64) and the real usage service: which calls count under each
//! `billable_calls` setting, which meters they add to, and what happens to the lines that are
//! not usage (malformed, refused, keyless, unknown subscription, ended subscription, older than
//! the late window, a control message).

use base64::Engine;
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use std::io::Write as _;
use std::sync::Arc;
use tollgate_app::Secret;
use tollgate_domain::Catalog;
use tollgate_domain::credit::CreditPolicy;
use tollgate_domain::ids::{ConsumerId, MeterId, ProductId, SubscriptionId};
use tollgate_domain::ports::{Expect, Store, Write};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::time::{FixedClock, Timestamp, hour_start};
use tollgate_domain::usage::IngestWindow;
use tollgate_events::EventBridgePublisher;
use tollgate_store::DynamoStore;
use tollgate_testkit::eventbridge::EventBridgeCapture;
use usage::Usage;
use usage_from_logs::{Summary, UsageFromLogs};

fn catalog() -> Catalog {
    serde_json::from_value(json!({
        "version": 1, "currency": "usd",
        "meters": [{"id": "api_calls", "name": "API calls"}, {"id": "data_bytes", "name": "Bytes"}],
        "products": [
            {"id": "payg", "name": "PAYG", "interval": "month",
             "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount_decimal": "0.15"}]},
            {"id": "lenient", "name": "Client errors count", "interval": "month",
             "billable_calls": "not_server_error",
             "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount_decimal": "0.15"}]},
            {"id": "every", "name": "Every answer counts", "interval": "month",
             "billable_calls": "all",
             "quota": {"meter": "api_calls", "limit": 1000}},
            {"id": "data", "name": "Data", "interval": "month",
             "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount_decimal": "0.1"},
                        {"type": "per_unit", "key": "data", "meter": "data_bytes", "unit_amount_decimal": "0.000000009"}]},
            {"id": "bytes-only", "name": "Bytes only", "interval": "month",
             "prices": [{"type": "per_unit", "key": "data", "meter": "data_bytes", "unit_amount_decimal": "0.000000009"}]}
        ]
    }))
    .expect("test catalog")
}

struct World {
    store: Arc<DynamoStore>,
    logs: UsageFromLogs,
    now: Timestamp,
    _capture: EventBridgeCapture,
}

/// Half past the current hour, as in usage_credit.rs: the batch claims' expiry is compared
/// with DynamoDB's real clock. Every line of a test lies in this one hour.
async fn world() -> World {
    let store = Arc::new(tollgate_testkit::dynamo::fresh_store().await);
    let capture = EventBridgeCapture::start().await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(tollgate_events::https_client())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .endpoint_url(capture.endpoint_url())
        .load()
        .await;
    let catalog = Arc::new(catalog());
    let now = hour_start(Utc::now()) + Duration::minutes(30);
    let usage = Arc::new(Usage::new(
        store.clone(),
        Arc::new(EventBridgePublisher::new(&sdk, "tollgate-test-bus")),
        catalog.clone(),
        CreditPolicy {
            floor: 0,
            low_threshold: 200,
        },
        IngestWindow::default(),
        Arc::new(FixedClock(now)),
        Secret::from_value("GATEWAY_SECRET", "unused"),
    ));
    World {
        logs: UsageFromLogs::new(usage, store.clone(), catalog),
        store,
        now,
        _capture: capture,
    }
}

impl World {
    async fn subscribe(&self, sub: &str, product: &str, status: SubscriptionStatus) {
        let s = Subscription {
            id: SubscriptionId::parse(sub).unwrap(),
            consumer_id: ConsumerId::parse(format!("c-{sub}")).unwrap(),
            product_id: ProductId::parse(product).unwrap(),
            name: "test".into(),
            status,
            seats: None,
            stripe_customer_id: None,
            stripe_subscription_id: None,
            stripe_checkout_session_id: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            access_expires_at: None,
            last_stripe_event_at: None,
            created_at: self.now - Duration::days(1),
            updated_at: self.now - Duration::days(1),
            periods: Default::default(),
            version: 0,
        };
        self.store
            .commit(vec![Write::PutSubscription {
                subscription: s,
                expect: Expect::Absent,
            }])
            .await
            .unwrap();
    }

    async fn usage(&self, sub: &str, meter: &str) -> u64 {
        self.store
            .usage_buckets(
                &SubscriptionId::parse(sub).unwrap(),
                &MeterId::parse(meter).unwrap(),
                self.now - Duration::days(5),
                self.now + Duration::days(1),
            )
            .await
            .unwrap()
            .iter()
            .map(|b| b.quantity)
            .sum()
    }

    /// Hands `data` (the decoded `awslogs.data`) to the function's Lambda entry point, as
    /// CloudWatch Logs delivers it.
    async fn deliver(&self, data: &Value) -> Summary {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data.to_string().as_bytes()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let text = json!({"awslogs": {"data": b64}}).to_string();
        let payload = serde_json::from_str(&text).expect("a LogsEvent");
        self.logs
            .handle(lambda_runtime::LambdaEvent::new(
                payload,
                lambda_runtime::Context::default(),
            ))
            .await
            .expect("the delivery is handled")
    }
}

fn line(at: Timestamp, status: u16, sub: &str, allow: &str, bytes: &str) -> String {
    json!({"id": "req", "time": at.timestamp_millis().to_string(), "status": status.to_string(),
           "sub": sub, "allow": allow, "bytes": bytes, "method": "GET", "route": "/v1/x"})
    .to_string()
}

fn data_message(lines: &[String]) -> Value {
    json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/provider/access",
        "logStream": "s1", "subscriptionFilters": ["tollgate-usage"],
        "logEvents": lines.iter().enumerate().map(|(i, m)| json!({
            "id": format!("{:056}", 1_000 + i), "timestamp": 0, "message": m,
        })).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn each_product_counts_the_calls_its_billable_calls_names_into_the_meters_it_uses() {
    let w = world().await;
    for (sub, product) in [
        ("s-payg", "payg"),
        ("s-lenient", "lenient"),
        ("s-every", "every"),
        ("s-data", "data"),
        ("s-bytes", "bytes-only"),
    ] {
        w.subscribe(sub, product, SubscriptionStatus::Active).await;
    }
    let t = w.now - Duration::minutes(10);
    // Every subscription gets the same eight answers.
    let statuses = [101, 200, 204, 301, 404, 429, 500, 503];
    let mut lines = Vec::new();
    for sub in ["s-payg", "s-lenient", "s-every", "s-data", "s-bytes"] {
        for s in statuses {
            lines.push(line(t, s, sub, "true", "100"));
        }
    }
    let summary = w.deliver(&data_message(&lines)).await;
    // payg: 200, 204, 301. lenient: + 404, 429. every: all 8. data: 3 calls, 300 bytes.
    // bytes-only: no api_calls, 300 bytes.
    assert_eq!(w.usage("s-payg", "api_calls").await, 3);
    assert_eq!(w.usage("s-lenient", "api_calls").await, 5);
    assert_eq!(w.usage("s-every", "api_calls").await, 8);
    assert_eq!(w.usage("s-data", "api_calls").await, 3);
    assert_eq!(w.usage("s-data", "data_bytes").await, 300);
    assert_eq!(w.usage("s-payg", "data_bytes").await, 0);
    assert_eq!(w.usage("s-bytes", "api_calls").await, 0);
    assert_eq!(w.usage("s-bytes", "data_bytes").await, 300);
    assert_eq!(summary.billable_calls, 3 + 5 + 8 + 3 + 3);
    assert_eq!(summary.not_billable, 40 - 22);
    assert_eq!(summary.records_accepted, 3 + 5 + 8 + 6 + 3);
    assert_eq!((summary.batches, summary.duplicate_batches), (1, 0));
}

#[tokio::test]
async fn lines_that_are_not_usage_never_block_the_rest_and_a_redelivery_counts_nothing() {
    let w = world().await;
    w.subscribe("s-ok", "payg", SubscriptionStatus::Active)
        .await;
    w.subscribe("s-ended", "payg", SubscriptionStatus::Canceled)
        .await;
    let t = w.now - Duration::minutes(5);
    let lines = vec![
        line(t, 200, "s-ok", "true", "10"),
        "GET /v1/x 200".to_string(), // malformed: not JSON
        r#"{"id":"x","status":"200","sub":"s-ok"}"#.into(), // malformed: no time
        line(t, 403, "s-ok", "false", "40"), // refused by the authorizer
        line(t, 401, "-", "-", "30"), // no key
        line(t, 200, "s-ghost", "true", "10"), // unknown subscription
        line(t, 200, "s-ended", "true", "10"), // ended: the usage service refuses it
        line(w.now - Duration::hours(80), 200, "s-ok", "true", "10"), // past the late window
        line(t, 200, "s-ok", "true", "10"),
    ];
    let data = data_message(&lines);
    let first = w.deliver(&data).await;
    assert_eq!(w.usage("s-ok", "api_calls").await, 2);
    assert_eq!(w.usage("s-ended", "api_calls").await, 0);
    assert_eq!(first.log_events, 9);
    assert_eq!(first.malformed, 2);
    assert_eq!(first.refused, 1);
    assert_eq!(first.unattributed, 1);
    assert_eq!(first.unknown_subscription, 1);
    assert_eq!(first.records_rejected, 1, "{first:?}");
    assert_eq!(first.records_dropped, 1, "{first:?}");
    assert_eq!(first.records_accepted, 2);
    assert_eq!(first.failed_batches, 0);

    // The same delivery again: the same batch id, counted once.
    let again = w.deliver(&data).await;
    assert_eq!(
        (again.batches, again.duplicate_batches),
        (1, 1),
        "{again:?}"
    );
    assert_eq!(w.usage("s-ok", "api_calls").await, 2);

    // The same events in another order: the batch id does not depend on the order.
    let mut reordered = data.clone();
    reordered["logEvents"].as_array_mut().unwrap().reverse();
    let third = w.deliver(&reordered).await;
    assert_eq!(
        third.duplicate_batches, 1,
        "order does not change the batch id"
    );
    assert_eq!(w.usage("s-ok", "api_calls").await, 2);

    // CloudWatch's reachability check.
    let control = json!({"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs",
        "logGroup": "", "logStream": "", "subscriptionFilters": [],
        "logEvents": [{"id": "", "timestamp": 0, "message": "CWL CONTROL MESSAGE: Checking health of destination Lambda."}]});
    assert_eq!(w.deliver(&control).await, Summary::default());
}
