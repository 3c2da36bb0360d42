//! Every unit of usage on its own subscription's invoice (issue 13, attribution): the whole
//! local stack (DynamoDB Local, the Stripe emulator aggregating meter events per customer and
//! meter as Stripe does, every function behind its HTTP route, the billing run). One consumer
//! holds `payg` and `standard` on the same meter, another holds `payg` twice; each Stripe
//! invoice must equal the pricing engine's quote for its own subscription's usage.

use chrono::{Duration as Span, TimeZone, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tollgate_domain::ids::{MeterId, SubscriptionId};
use tollgate_domain::ports::Store;
use tollgate_domain::pricing::{QuoteRequest, quote};
use tollgate_domain::time::Timestamp;
use tollgate_local::{LocalStack, StackOptions};
use tollgate_stripe_emulator::Card;

struct Client {
    http: reqwest::Client,
    base: String,
    portal: String,
    gateway: String,
}

impl Client {
    fn new(stack: &LocalStack) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: stack.info.base_url.clone(),
            portal: stack.info.portal_secret.clone(),
            gateway: stack.info.gateway_secret.clone(),
        }
    }

    async fn post(&self, path: &str, bearer: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn checkout_body(&self, consumer: &str, product: &str, email: &str) -> Value {
        json!({
            "consumer_id": consumer,
            "product_id": product,
            "subscription_name": format!("{consumer} {product}"),
            "success_url": format!("{}/portal/?checkout=success", self.base),
            "cancel_url": format!("{}/portal/?checkout=cancel", self.base),
            "email": email,
        })
    }

    /// Checkout on the portal route, paid on the emulator's hosted page; returns the
    /// tollgate subscription id.
    async fn subscribe(&self, stack: &LocalStack, consumer: &str, product: &str) -> String {
        let body = self.checkout_body(consumer, product, &format!("billing@{consumer}.example"));
        let (status, answer) = self.post("/checkout/sessions", &self.portal, body).await;
        assert_eq!(status, 201, "{answer}");
        stack
            .emulator()
            .complete_checkout(answer["id"].as_str().unwrap(), Card::Good)
            .expect("checkout completes");
        stack.emulator().wait_for_webhooks_idle().await;
        answer["subscription_id"].as_str().unwrap().to_string()
    }
}

async fn advance_to(stack: &LocalStack, target: Timestamp) {
    let now = stack.now();
    if target > now {
        stack
            .advance_clock(Duration::from_secs((target - now).num_seconds() as u64))
            .await;
    }
}

fn api_calls() -> MeterId {
    MeterId::parse("api_calls").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invoice_charges_only_its_own_subscriptions_usage() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    // A fixed start (09:00 on 3 March 2026): the test does not depend on today's date.
    opts.start_time = Some(
        Utc.with_ymd_and_hms(2026, 3, 3, 9, 0, 0)
            .unwrap()
            .timestamp(),
    );
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let client = Client::new(&stack);

    // (consumer, product, calls) — the cases: payg + standard on one meter for one
    // consumer, payg twice for another.
    let plan = [
        ("multi-co", "payg", 10_000u64),
        ("multi-co", "standard", 200_000),
        ("twin-co", "payg", 3_000),
        ("twin-co", "payg", 50_000),
    ];
    let mut subs = Vec::new();
    for (consumer, product, calls) in plan {
        let id = client.subscribe(&stack, consumer, product).await;
        subs.push((id, consumer, product, calls));
    }
    // Each Stripe subscription has a Stripe customer of its own.
    let mut customers = BTreeSet::new();
    let mut stored = Vec::new();
    for (id, ..) in &subs {
        let sub = stack
            .store
            .get_subscription(&SubscriptionId::parse(id.as_str()).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            sub.status,
            tollgate_domain::subscription::SubscriptionStatus::Active,
            "{sub:?}"
        );
        let customer = sub.stripe_customer_id.clone().unwrap();
        let c = stack.emulator().object(customer.as_str()).unwrap();
        assert_eq!(c["metadata"]["tollgate_subscription_id"], id.as_str());
        assert_eq!(
            c["metadata"]["tollgate_consumer_id"],
            sub.consumer_id.as_str()
        );
        customers.insert(customer);
        stored.push(sub);
    }
    assert_eq!(customers.len(), subs.len());

    // A day later each subscription's gateway posts its usage, timestamped mid-day.
    let day1 = Utc.with_ymd_and_hms(2026, 3, 4, 0, 0, 0).unwrap();
    advance_to(&stack, day1 + Span::hours(18)).await;
    for (n, (id, _, _, calls)) in subs.iter().enumerate() {
        let records: Vec<Value> = (0..4)
            .map(|i| {
                json!({
                    "id": format!("r{i}"),
                    "subscription_id": id,
                    "timestamp": (day1 + Span::hours(9 + i) + Span::minutes(10)).to_rfc3339(),
                    "meter": "api_calls",
                    "value": calls / 4,
                })
            })
            .collect();
        let (status, answer) = client
            .post(
                "/usage",
                &client.gateway,
                json!({"batch_id": format!("attr-{n}"), "records": records}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], 4, "{answer}");
    }

    // The nightly run reports the day; the period-close passes and Stripe closes the month.
    advance_to(&stack, day1 + Span::days(1) + Span::minutes(5)).await;
    let s = stack
        .billing_run(&json!({"date": "2026-03-04"}))
        .await
        .unwrap();
    assert_eq!(s.reported as usize, subs.len(), "{s:#?}");
    let period_end = stored[0].current_period_end.unwrap();
    for (sub, _) in stored.iter().zip(&subs) {
        assert_eq!(sub.current_period_end, Some(period_end));
    }
    for minutes in [10, 40] {
        advance_to(&stack, period_end + Span::minutes(minutes)).await;
        stack
            .billing_run(&json!({"mode": "period_close"}))
            .await
            .unwrap();
    }
    advance_to(&stack, period_end + Span::minutes(70)).await;
    stack.emulator().wait_for_webhooks_idle().await;

    let mut totals = BTreeMap::new();
    for (sub, (_, consumer, product, calls)) in stored.iter().zip(&subs) {
        let stripe_sub = stack
            .emulator()
            .object(sub.stripe_subscription_id.as_ref().unwrap().as_str())
            .unwrap();
        let invoice = stack
            .emulator()
            .object(stripe_sub["latest_invoice"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            invoice["billing_reason"], "subscription_cycle",
            "{invoice:#}"
        );
        assert_eq!(invoice["status"], "paid", "{invoice:#}");
        let q = quote(
            &stack.catalog,
            stack.catalog.product(product).unwrap(),
            &QuoteRequest {
                usage: BTreeMap::from([(api_calls(), *calls)]),
                ..QuoteRequest::default()
            },
        )
        .unwrap();
        assert_eq!(
            invoice["total"].as_i64().unwrap(),
            q.total,
            "{consumer} {product}: {calls} calls, invoice {invoice:#}"
        );
        totals.insert(sub.id.to_string(), q.total);
    }
    // The figures: 1,500 and 18,995 cents (not 31,500 and 19,995).
    assert_eq!(totals[&subs[0].0], 1_500);
    assert_eq!(totals[&subs[1].0], 18_995);
    assert_eq!(totals[&subs[2].0], 450);
    assert_eq!(totals[&subs[3].0], 7_500);
}

/// Issue 17 item 6: two first checkouts of one consumer at once, with different emails, both
/// succeed. Subscriptions get a customer each; credit packs share the consumer's one customer,
/// created once whatever the email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_checkouts_with_different_emails_both_succeed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    opts.start_time = Some(
        Utc.with_ymd_and_hms(2026, 3, 3, 9, 0, 0)
            .unwrap()
            .timestamp(),
    );
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let client = Client::new(&stack);

    // Two metered subscriptions.
    let a = client.checkout_body("race-co", "payg", "a@race.example");
    let b = client.checkout_body("race-co", "payg", "b@race.example");
    let ((sa, ra), (sb, rb)) = tokio::join!(
        client.post("/checkout/sessions", &client.portal, a),
        client.post("/checkout/sessions", &client.portal, b)
    );
    assert_eq!((sa, sb), (201, 201), "{ra} {rb}");

    // Two credit packs (one-time payments on the consumer's customer).
    let mut a = client.checkout_body("race-co", "credits", "a@race.example");
    a["credit_amount"] = 1_000.into();
    let mut b = client.checkout_body("race-co", "credits", "b@race.example");
    b["credit_amount"] = 1_000.into();
    let ((sa, ra), (sb, rb)) = tokio::join!(
        client.post("/checkout/sessions", &client.portal, a),
        client.post("/checkout/sessions", &client.portal, b)
    );
    assert_eq!((sa, sb), (201, 201), "{ra} {rb}");

    let customers: Vec<Value> = stack
        .emulator()
        .events()
        .iter()
        .filter(|e| e["type"] == "customer.created")
        .map(|e| e["data"]["object"].clone())
        .filter(|c| c["metadata"]["tollgate_consumer_id"] == "race-co")
        .collect();
    let (own, per_sub): (Vec<_>, Vec<_>) = customers
        .iter()
        .partition(|c| c["metadata"]["tollgate_subscription_id"].is_null());
    assert_eq!(own.len(), 1, "one consumer-level customer: {customers:#?}");
    assert_eq!(per_sub.len(), 2, "one customer per subscription");
    // The consumer-level customer got one of the two emails.
    let email = stack
        .emulator()
        .object(own[0]["id"].as_str().unwrap())
        .unwrap()["email"]
        .clone();
    assert!(
        email == "a@race.example" || email == "b@race.example",
        "{email}"
    );
    let consumer = stack
        .store
        .get_consumer(&tollgate_domain::ids::ConsumerId::parse("race-co").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        consumer.stripe_customer_id.as_ref().map(|c| c.as_str()),
        own[0]["id"].as_str()
    );
}
