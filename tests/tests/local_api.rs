//! Zero-code metering end to end on the local stack: consumers call the provider's API
//! (`/_local/api`, the REST API of `examples/provider-api/template.yaml`) with their keys,
//! through the real authorizer; the gateway's access log reaches the real usage-from-logs
//! handler as CloudWatch Logs subscription events, each batch delivered twice and the batches
//! last first. The usage tollgate counts must equal, exactly, the billable calls the
//! consumers saw answered (2xx/3xx by default), and the response bytes of the product that
//! meters `data_bytes`.

use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tollgate_domain::ids::{MeterId, SubscriptionId};
use tollgate_domain::ports::Store;
use tollgate_domain::pricing::{QuoteRequest, quote};
use tollgate_local::gateway::Delivery;
use tollgate_local::{LocalStack, StackOptions};
use tollgate_stripe_emulator::Card;

struct Consumer {
    id: &'static str,
    product: &'static str,
    subscription: String,
    key: String,
}

async fn subscribe(
    stack: &LocalStack,
    http: &reqwest::Client,
    id: &'static str,
    product: &'static str,
) -> Consumer {
    let base = &stack.info.base_url;
    let answer: Value = http
        .post(format!("{base}/checkout/sessions"))
        .bearer_auth(&stack.info.portal_secret)
        .json(&json!({
            "consumer_id": id, "product_id": product,
            "subscription_name": format!("{id} {product}"),
            "success_url": format!("{base}/portal/?ok"), "cancel_url": format!("{base}/portal/?no"),
            "email": format!("billing@{id}.example"),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = answer["id"].as_str().unwrap_or_default();
    if session.starts_with("cs_") {
        stack
            .emulator()
            .complete_checkout(session, Card::Good)
            .unwrap();
        stack.emulator().wait_for_webhooks_idle().await;
    }
    Consumer {
        id,
        product,
        subscription: answer["subscription_id"]
            .as_str()
            .expect("subscription_id")
            .into(),
        key: answer["api_key"].as_str().expect("api_key").into(),
    }
}

/// (status, body length, body) of one call of the provider's API.
async fn call(
    http: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    city: &str,
) -> (u16, usize, Value) {
    let mut req = http.get(format!("{base}/_local/api/v1/forecast?city={city}"));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        text.len(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn usage(stack: &LocalStack, sub: &str, meter: &str) -> u64 {
    let now = stack.now();
    stack
        .store
        .usage_buckets(
            &SubscriptionId::parse(sub).unwrap(),
            &MeterId::parse(meter).unwrap(),
            now - chrono::Duration::days(2),
            now + chrono::Duration::days(1),
        )
        .await
        .unwrap()
        .iter()
        .map(|b| b.quantity)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_through_the_gateway_are_counted_exactly_once_from_the_access_log() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    // A fixed clock: no run depends on today's date.
    opts.start_time = Some(
        chrono::DateTime::parse_from_rfc3339("2027-03-10T09:00:00Z")
            .unwrap()
            .timestamp(),
    );
    // Deliveries only when the test asks, so it chooses their batching and order.
    opts.access_log_delivery = None;
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let http = reqwest::Client::new();
    let base = stack.info.base_url.clone();

    let consumers = [
        subscribe(&stack, &http, "ana-payg", "payg").await,
        subscribe(&stack, &http, "ben-data", "data").await,
        subscribe(&stack, &http, "cy-free", "free").await,
    ];

    // 1,000 calls; every 7th asks for a city the upstream does not know (404, not billable).
    let plan: Vec<(usize, &str)> = (0..1_000)
        .map(|i| (i % 3, if i % 7 == 0 { "atlantis" } else { "lisbon" }))
        .collect();
    let answers: Vec<(usize, u16, usize, Value)> = futures::stream::iter(plan)
        .map(|(c, city)| {
            let (http, base, key) = (http.clone(), base.clone(), consumers[c].key.clone());
            async move {
                let (s, len, body) = call(&http, &base, Some(&key), city).await;
                (c, s, len, body)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    // And calls that are not any consumer's: no key (401), a key tollgate never issued (403).
    let (s, _, body) = call(&http, &base, None, "lisbon").await;
    assert_eq!((s, &body["error"]), (401, &json!("missing_key")));
    let forged = format!("tg_{}", "0".repeat(64));
    let (s, _, body) = call(&http, &base, Some(&forged), "lisbon").await;
    assert_eq!(
        (s, &body["error"], &body["status"]),
        (403, &json!("unknown_key"), &json!(403))
    );

    let mut billable: BTreeMap<usize, u64> = BTreeMap::new();
    let mut bytes: BTreeMap<usize, u64> = BTreeMap::new();
    let mut not_found = 0;
    for (c, status, len, _) in &answers {
        match status {
            200 => {
                *billable.entry(*c).or_default() += 1;
                *bytes.entry(*c).or_default() += *len as u64;
            }
            404 => not_found += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        not_found, 143,
        "every 7th of 1,000 calls asks for an unknown city"
    );
    assert_eq!(billable.values().sum::<u64>(), 857);
    assert_eq!(stack.pending_access_log(), 1_002);

    // Every batch delivered twice, the batches last first.
    let report = stack
        .flush_access_log(Delivery {
            batch_size: 37,
            redeliver_every: 1,
            reverse: true,
        })
        .await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.deliveries, 2 * 1_002usize.div_ceil(37), "{report:?}");
    assert_eq!(report.log_events, 2 * 1_002);
    // Each delivery makes usage batches of the same ids: the second of each pair counts
    // nothing (a delivery of only unbillable lines sends no batch at all).
    assert_eq!(report.batches, 2 * report.duplicate_batches, "{report:?}");
    assert!(report.duplicate_batches >= 1_002 / 37, "{report:?}");
    assert_eq!(
        report.billable_calls,
        2 * 857,
        "both deliveries judge the same calls billable"
    );
    assert_eq!(stack.pending_access_log(), 0);

    for (i, c) in consumers.iter().enumerate() {
        assert_eq!(
            usage(&stack, &c.subscription, "api_calls").await,
            billable[&i],
            "{} ({})",
            c.id,
            c.product
        );
        let expected_bytes = if c.product == "data" { bytes[&i] } else { 0 };
        assert_eq!(
            usage(&stack, &c.subscription, "data_bytes").await,
            expected_bytes,
            "{} ({})",
            c.id,
            c.product
        );
    }
    assert!(bytes[&1] > 0);

    // The free consumer is past its 100-call quota now: its next call is refused (ACCESS_DENIED,
    // 403 on the wire, the intended 429 in the body) and is not usage either.
    let (s, _, body) = call(&http, &base, Some(&consumers[2].key), "lisbon").await;
    assert_eq!(
        (s, &body["error"], &body["status"]),
        (403, &json!("quota_exceeded"), &json!(429))
    );
    let (s, _, _) = call(&http, &base, Some(&consumers[0].key), "oslo").await;
    assert_eq!(s, 200);
    let report = stack.flush_access_log(Delivery::default()).await;
    assert_eq!(
        (report.billable_calls, report.records_accepted),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        usage(&stack, &consumers[0].subscription, "api_calls").await,
        billable[&0] + 1
    );
    assert_eq!(
        usage(&stack, &consumers[2].subscription, "api_calls").await,
        billable[&2]
    );

    // The month's invoices: the period closes, the billing run reports the counted usage to
    // Stripe's meters, Stripe invoices it; each invoice equals the pricing engine's quote for
    // the calls (and bytes) the consumers were served.
    let payg = stack
        .store
        .get_subscription(&SubscriptionId::parse(consumers[0].subscription.as_str()).unwrap())
        .await
        .unwrap()
        .unwrap();
    let period_end = payg.current_period_end.expect("a Stripe period");
    // The night after the calls: the nightly run reports the day's usage (2027-03-10).
    let night = chrono::DateTime::parse_from_rfc3339("2027-03-11T00:05:00Z").unwrap();
    stack
        .advance_clock(
            (night.with_timezone(&chrono::Utc) - stack.now())
                .to_std()
                .unwrap(),
        )
        .await;
    let run = stack
        .billing_run(&json!({"date": "2027-03-10"}))
        .await
        .expect("nightly run");
    assert!(run.reported > 0, "{run:?}");
    for minutes in [10, 40] {
        let target = period_end + chrono::Duration::minutes(minutes);
        let by = (target - stack.now()).to_std().unwrap();
        stack.advance_clock(by).await;
        stack
            .billing_run(&json!({"mode": "period_close"}))
            .await
            .expect("period-close run");
    }
    stack
        .advance_clock(std::time::Duration::from_secs(2 * 3600))
        .await;
    for (i, c) in consumers.iter().enumerate().take(2) {
        let sub = stack
            .store
            .get_subscription(&SubscriptionId::parse(c.subscription.as_str()).unwrap())
            .await
            .unwrap()
            .unwrap();
        let stripe_sub = sub.stripe_subscription_id.expect("a Stripe subscription");
        let invoice = tollgate_local::demo::month_invoice(&stack, stripe_sub.as_str(), period_end)
            .unwrap_or_else(|| panic!("{}: the month's invoice", c.id));
        let calls = billable[&i] + u64::from(i == 0);
        let mut usage = BTreeMap::from([(MeterId::parse("api_calls").unwrap(), calls)]);
        if c.product == "data" {
            usage.insert(MeterId::parse("data_bytes").unwrap(), bytes[&i]);
        }
        let product = stack.catalog.product(c.product).unwrap();
        let q = quote(
            &stack.catalog,
            product,
            &QuoteRequest {
                usage,
                ..QuoteRequest::default()
            },
        )
        .unwrap();
        assert!(q.total > 0, "{}: {q:?}", c.id);
        assert_eq!(invoice.total, q.total, "{}: {invoice:?} vs {q:?}", c.id);
    }
}

/// What metering from the access log costs in DynamoDB writes: 1,000 billable calls of three
/// PAYG consumers in one hour, delivered as one subscription batch (a busy log group's
/// delivery) and then as batches of 100. The numbers are printed for docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_write_requests_per_thousand_log_lines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    opts.start_time = Some(
        chrono::DateTime::parse_from_rfc3339("2027-07-01T00:10:00Z")
            .unwrap()
            .timestamp(),
    );
    opts.access_log_delivery = None;
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let http = reqwest::Client::new();
    let base = stack.info.base_url.clone();
    let consumers = [
        subscribe(&stack, &http, "ida-payg", "payg").await,
        subscribe(&stack, &http, "jo-payg", "payg").await,
        subscribe(&stack, &http, "kai-payg", "payg").await,
    ];
    let mut measured = Vec::new();
    for batch_size in [1_000, 100] {
        let statuses: Vec<u16> = futures::stream::iter(0..1_000)
            .map(|i| {
                let (http, base, key) = (http.clone(), base.clone(), consumers[i % 3].key.clone());
                async move { call(&http, &base, Some(&key), "lisbon").await.0 }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        assert!(statuses.iter().all(|s| *s == 200));
        let before = stack.usage_write_requests();
        let report = stack
            .flush_access_log(Delivery {
                batch_size,
                redeliver_every: 0,
                reverse: false,
            })
            .await;
        let writes = stack.usage_write_requests() - before;
        assert_eq!(report.records_accepted, 1_000, "{report:?}");
        // One transaction per usage batch: one per delivery here (3 subscriptions, one hour).
        assert_eq!(writes as usize, report.batches, "{report:?}");
        assert_eq!(report.batches, 1_000usize.div_ceil(batch_size));
        measured.push((batch_size, writes));
    }
    println!(
        "usage-from-logs DynamoDB write requests per 1,000 log lines (delivery size, writes): {measured:?}"
    );
}
