//! Every unit of usage on the invoice of the period its timestamp is in (issue 13), and quota
//! windows on their own cadence (issue 17, item 5) — end to end through the real routes: the
//! portal (checkout function), the gateway's `POST /usage` and `GET /entitlements/{key}` (usage
//! function), the Stripe webhook function, and the billing run, on DynamoDB Local and the Stripe
//! emulator, all on the emulator's clock (each test takes its start time as a parameter).

use billing_run::{BillingRun, RunConfig};
use checkout::Checkout;
use chrono::{DateTime, TimeZone, Utc};
use lambda_http::Body;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use stripe_webhook::{StripeEvent, Webhook};
use tollgate_app::Secret;
use tollgate_domain::Catalog;
use tollgate_domain::billing::RunMode;
use tollgate_domain::credit::CreditPolicy;
use tollgate_domain::ids::MeterId;
use tollgate_domain::pricing::{QuoteRequest, quote};
use tollgate_domain::time::{Clock, Duration, Timestamp};
use tollgate_domain::usage::IngestWindow;
use tollgate_events::EventBridgePublisher;
use tollgate_store::DynamoStore;
use tollgate_stripe::{StripeAdapter, StripeConfig};
use tollgate_stripe_emulator::{Card, Emulator, EmulatorConfig, RunningEmulator};
use tollgate_testkit::eventbridge::EventBridgeCapture;
use usage::Usage;

const PORTAL_SECRET: &str = "portal-secret-for-tests";
const GATEWAY_SECRET: &str = "gateway-secret-for-tests";
const PORTAL: &str = "https://portal.example.com";

struct EmulatorClock(Arc<RunningEmulator>);

impl Clock for EmulatorClock {
    fn now(&self) -> Timestamp {
        DateTime::from_timestamp(self.0.now(), 0).expect("emulator time")
    }
}

struct World {
    stripe: Arc<RunningEmulator>,
    catalog: Arc<Catalog>,
    checkout: Checkout,
    webhook: Webhook,
    usage: Usage,
    billing: BillingRun,
    _capture: EventBridgeCapture,
    delivered: Mutex<usize>,
    batches: Mutex<u32>,
}

async fn world(start: Timestamp) -> World {
    let stripe = Arc::new(
        Emulator::start(EmulatorConfig {
            start_time: Some(start.timestamp()),
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator starts"),
    );
    let config = StripeConfig::new(
        "sk_test_tollgate".to_string().into(),
        Some(stripe.base_url().into()),
    );
    let payments = Arc::new(StripeAdapter::from_config(&config).unwrap());
    let catalog: Arc<Catalog> =
        Arc::new(serde_json::from_str(include_str!("../../examples/catalog.json")).unwrap());
    tollgate_stripe::sync::sync_catalog(&*payments, &catalog, false)
        .await
        .unwrap();
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
    let publisher = Arc::new(EventBridgePublisher::new(&sdk, "tollgate-test-bus"));
    let store: Arc<DynamoStore> = Arc::new(tollgate_testkit::dynamo::fresh_store().await);
    let clock = Arc::new(EmulatorClock(stripe.clone()));
    let policy = CreditPolicy {
        floor: 0,
        low_threshold: 200,
    };
    World {
        checkout: Checkout {
            store: store.clone(),
            payments: payments.clone(),
            publisher: publisher.clone(),
            clock: clock.clone(),
            catalog: catalog.clone(),
            portal_secret: Secret::from_value("PORTAL_SECRET", PORTAL_SECRET),
            return_url_allowlist: vec![PORTAL.to_string()],
            credit_policy: policy,
        },
        webhook: Webhook {
            store: store.clone(),
            payments: payments.clone(),
            publisher: publisher.clone(),
            clock: clock.clone(),
            catalog: catalog.clone(),
            webhook_secret: Secret::from_value("STRIPE_WEBHOOK_SECRET", "whsec_tests"),
            credit_policy: policy,
        },
        usage: Usage::new(
            store.clone(),
            publisher.clone(),
            catalog.clone(),
            policy,
            IngestWindow::default(),
            clock.clone(),
            Secret::from_value("GATEWAY_SECRET", GATEWAY_SECRET),
        ),
        billing: BillingRun::new(
            store,
            payments,
            publisher,
            catalog.clone(),
            clock,
            RunConfig {
                meter_events_per_second: 1000,
                ..RunConfig::default()
            },
        ),
        stripe,
        catalog,
        _capture: capture,
        delivered: Mutex::new(0),
        batches: Mutex::new(0),
    }
}

fn ts(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl World {
    fn now(&self) -> Timestamp {
        EmulatorClock(self.stripe.clone()).now()
    }

    /// Moves Stripe's (and so tollgate's) clock; renewals and finalisations on the way run.
    fn at(&self, t: Timestamp) {
        assert!(
            t.timestamp() >= self.stripe.now(),
            "time only moves forward"
        );
        self.stripe.set_time(t.timestamp());
    }

    /// Delivers the Stripe events not delivered yet to the webhook function, in order. Tests
    /// call it when they want the webhook to arrive (possibly late).
    async fn deliver_webhooks(&self) {
        let events = self.stripe.events();
        let from = *self.delivered.lock().unwrap();
        for ev in &events[from..] {
            let ev: StripeEvent = serde_json::from_value(ev.clone()).unwrap();
            self.webhook.process(&ev).await.expect("webhook processed");
        }
        *self.delivered.lock().unwrap() = events.len();
    }

    async fn call(
        &self,
        handler: Handler,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let secret = match handler {
            Handler::Portal => PORTAL_SECRET,
            Handler::Gateway => GATEWAY_SECRET,
        };
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {secret}"))
            .body(body.map_or(Body::Empty, |b| Body::Text(b.to_string())))
            .unwrap();
        let resp = match handler {
            Handler::Portal => self.checkout.handle(req).await.unwrap(),
            Handler::Gateway => self.usage.handle(req).await.unwrap(),
        };
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(resp.body().as_ref()).unwrap(),
        )
    }

    /// A consumer buys `product` through the portal and pays; the webhooks arrive.
    async fn subscribe(&self, consumer: &str, product: &str) -> (String, String) {
        let (status, body) = self
            .call(
                Handler::Portal,
                "POST",
                "/checkout/sessions",
                Some(json!({
                    "consumer_id": consumer, "product_id": product, "subscription_name": "main",
                    "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/cancel"),
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        self.stripe
            .complete_checkout(body["id"].as_str().unwrap(), Card::Good)
            .unwrap();
        self.deliver_webhooks().await;
        let sub = body["subscription_id"].as_str().unwrap().to_string();
        let (_, view) = self.view(consumer, &sub).await;
        assert_eq!(view["status"], "active", "{view}");
        (sub, body["api_key"].as_str().unwrap().to_string())
    }

    /// `POST /usage` with one record per `(timestamp, calls)`.
    async fn post_usage(&self, sub: &str, records: &[(Timestamp, u64)]) -> Value {
        let n = {
            let mut b = self.batches.lock().unwrap();
            *b += 1;
            *b
        };
        let records: Vec<Value> = records
            .iter()
            .enumerate()
            .map(|(i, (t, v))| {
                json!({"id": format!("r{i}"), "subscription_id": sub, "timestamp": ts(*t),
                       "meter": "api_calls", "value": v})
            })
            .collect();
        let (status, body) = self
            .call(
                Handler::Gateway,
                "POST",
                "/usage",
                Some(json!({"batch_id": format!("batch-{n}"), "records": records})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn entitlement(&self, key: &str) -> Value {
        let (status, body) = self
            .call(
                Handler::Gateway,
                "GET",
                &format!("/entitlements/{key}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn view(&self, consumer: &str, sub: &str) -> (u16, Value) {
        let (status, body) = self
            .call(
                Handler::Portal,
                "GET",
                &format!("/consumers/{consumer}/subscriptions"),
                None,
            )
            .await;
        let view = body["subscriptions"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == sub).cloned())
            .unwrap_or(body);
        (status, view)
    }

    async fn run(&self, mode: RunMode) {
        let payload = match mode {
            RunMode::Nightly => json!({}),
            RunMode::PeriodClose => json!({"mode": "period_close"}),
        };
        let request = billing_run::input::parse(&payload, self.now()).unwrap();
        let summary = self.billing.run(request, None).await.expect("run");
        assert!(summary.failed.is_empty(), "{summary:?}");
        assert!(summary.late_unbilled.is_empty(), "{summary:?}");
    }

    /// The Stripe subscription behind a tollgate subscription (its metadata names it).
    fn stripe_subscription(&self, sub: &str) -> String {
        self.stripe
            .events()
            .iter()
            .find(|e| {
                e["type"] == "customer.subscription.created"
                    && e["data"]["object"]["metadata"]["tollgate_subscription_id"] == sub
            })
            .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_string())
            .expect("Stripe subscription")
    }

    /// The finalised invoices of a subscription billing metered usage, oldest first:
    /// (usage period start, end, quantity, total).
    async fn usage_invoices(&self, sub: &str) -> Vec<(Timestamp, Timestamp, u64, i64)> {
        let stripe_sub = self.stripe_subscription(sub);
        let list: Value = reqwest::Client::new()
            .get(format!(
                "{}/v1/invoices?subscription={stripe_sub}&limit=100",
                self.stripe.base_url()
            ))
            .bearer_auth("sk_test_tollgate")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut out: Vec<(Timestamp, Timestamp, u64, i64)> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] != "draft")
            .filter_map(|i| {
                let line = i["lines"]["data"]
                    .as_array()?
                    .iter()
                    .find(|l| {
                        l["description"]
                            .as_str()
                            .is_some_and(|d| d.contains("usage:"))
                    })?
                    .clone();
                let t = |v: &Value| DateTime::from_timestamp(v.as_i64().unwrap(), 0).unwrap();
                Some((
                    t(&line["period"]["start"]),
                    t(&line["period"]["end"]),
                    line["quantity"].as_u64().unwrap(),
                    i["total"].as_i64().unwrap(),
                ))
            })
            .collect();
        out.sort();
        out
    }

    /// tollgate's own price for `calls` of `product` (`pricing::quote`).
    fn quote(&self, product: &str, calls: u64) -> i64 {
        let p = self.catalog.product(product).unwrap();
        let usage = [(MeterId::parse("api_calls").unwrap(), calls)].into();
        quote(
            &self.catalog,
            p,
            &QuoteRequest {
                usage,
                seats: None,
                include_one_time: false,
            },
        )
        .unwrap()
        .total
    }
}

#[derive(Clone, Copy)]
enum Handler {
    Portal,
    Gateway,
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn minutes(m: i64) -> Duration {
    Duration::minutes(m)
}

/// The case: a `payg` month anchored at hh:37, 333 and 77 calls 25 and 5 minutes before
/// the boundary, 500 a few minutes after (posted before the renewal webhook arrives). The
/// period's invoice holds 9,000 + 333 + 77 = 9,410 calls, the next one the 500; each invoice
/// equals the pricing engine's quote to the cent. A record 20 minutes before the subscription
/// started is listed as `outside_subscription`.
async fn boundary_minutes_land_in_their_own_period(start: Timestamp) {
    let w = world(start).await;
    let (sub, _) = w.subscribe("acme", "payg").await;
    let end = start + chrono::Months::new(1);

    let before = w
        .post_usage(&sub, &[(start - minutes(20), 5), (start + minutes(1), 0)])
        .await;
    assert_eq!(before["accepted"], 1, "{before}");
    assert_eq!(
        before["rejections"][0]["reason"], "outside_subscription",
        "{before}"
    );
    assert_eq!(before["rejections"][0]["index"], 0, "{before}");

    // The bulk of the month, the day before its end (the nightly run reports it).
    let day_before = end - Duration::days(1);
    w.at(day_before);
    w.post_usage(&sub, &[(day_before - minutes(30), 9_000)])
        .await;
    w.at(end - minutes(25));
    w.post_usage(&sub, &[(end - minutes(25), 333)]).await;
    w.at(end - minutes(5));
    w.post_usage(&sub, &[(end - minutes(5), 77)]).await;
    // The portal's bill so far is the period's usage, priced as Stripe will.
    let (_, view) = w.view("acme", &sub).await;
    assert_eq!(view["usage"]["api_calls"], 9_410, "{view}");
    assert_eq!(view["quote"]["total"], w.quote("payg", 9_410), "{view}");
    assert_eq!(view["period_end"], ts(end), "{view}");

    // Three minutes after the boundary; the renewal webhook has not arrived yet.
    w.at(end + minutes(3));
    let after = w.post_usage(&sub, &[(end + minutes(2), 500)]).await;
    assert_eq!(after["accepted"], 1, "{after}");
    assert_eq!(
        after["subscriptions"][0]["usage"]["api_calls"], 500,
        "{after}"
    );
    w.deliver_webhooks().await;

    // The period-close pass flushes the last slice before Stripe finalises (end + 1 h).
    w.at(end + minutes(20));
    w.run(RunMode::PeriodClose).await;
    w.at(end + minutes(70));
    let invoices = w.usage_invoices(&sub).await;
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    assert_eq!(invoices[0].0, start);
    assert_eq!(invoices[0].1, end);
    assert_eq!(invoices[0].2, 9_410, "{invoices:?}");
    assert_eq!(invoices[0].3, w.quote("payg", 9_410));

    // The next night reports the 500 to the next period; its invoice bills them and nothing
    // of the old one.
    w.at(tollgate_domain::billing::day_start(end) + Duration::days(1) + minutes(30));
    w.run(RunMode::Nightly).await;
    let end2 = start + chrono::Months::new(2);
    w.at(end2 + minutes(20));
    w.deliver_webhooks().await;
    w.run(RunMode::PeriodClose).await;
    w.at(end2 + minutes(70));
    let invoices = w.usage_invoices(&sub).await;
    assert_eq!(invoices.len(), 2, "{invoices:?}");
    assert_eq!((invoices[1].0, invoices[1].2), (end, 500), "{invoices:?}");
    assert_eq!(invoices[1].3, w.quote("payg", 500));
}

#[tokio::test]
async fn usage_minutes_around_a_mid_hour_boundary_land_in_their_own_period() {
    boundary_minutes_land_in_their_own_period(utc(2026, 10, 15, 13, 37)).await;
}

#[tokio::test]
async fn usage_around_a_month_end_anchor_lands_in_its_own_period() {
    // Anchored on Jan 31 at 22:51: the period ends Feb 28 (clamped), in a common year.
    boundary_minutes_land_in_their_own_period(utc(2027, 1, 31, 22, 51)).await;
}

/// Cancel at period end, and an immediate cancel with `invoice_now` (Dashboard / API
/// `DELETE /v1/subscriptions/{id}`): the final invoice carries all usage up to the cancel
/// moment, including records that happened before the cancel but arrive after it. A record
/// timestamped after the cancel is `outside_subscription`.
#[tokio::test]
async fn cancellation_flushes_usage_up_to_the_cancel_moment() {
    let start = utc(2026, 10, 15, 13, 37);
    let w = world(start).await;
    let (at_end, _) = w.subscribe("ada", "payg").await;
    let (now_sub, _) = w.subscribe("bob", "payg").await;
    let end = start + chrono::Months::new(1);

    // Bob's subscription is cancelled at once with invoice_now on Nov 3 at 10:20.
    let cancel = utc(2026, 11, 3, 10, 20);
    w.at(cancel - minutes(30));
    w.post_usage(&now_sub, &[(cancel - minutes(30), 1_000)])
        .await;
    w.at(cancel);
    let stripe_sub = w.stripe_subscription(&now_sub);
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/v1/subscriptions/{stripe_sub}",
            w.stripe.base_url()
        ))
        .bearer_auth("sk_test_tollgate")
        .form(&[("invoice_now", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    w.deliver_webhooks().await;
    // A record from a minute before the cancel arrives two minutes after it: counted.
    w.at(cancel + minutes(2));
    let late = w
        .post_usage(
            &now_sub,
            &[(cancel - minutes(1), 42), (cancel + minutes(1), 7)],
        )
        .await;
    assert_eq!(late["accepted"], 1, "{late}");
    assert_eq!(
        late["rejections"][0]["reason"], "outside_subscription",
        "{late}"
    );
    w.at(cancel + minutes(15));
    w.run(RunMode::PeriodClose).await;
    w.at(cancel + minutes(70));
    let invoices = w.usage_invoices(&now_sub).await;
    assert_eq!(
        invoices,
        vec![(start, cancel, 1_042, w.quote("payg", 1_042))]
    );

    // Ada cancels at period end through the portal; usage up to the last minutes counts.
    let (status, body) = w
        .call(
            Handler::Portal,
            "POST",
            &format!("/subscriptions/{at_end}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancel_at_period_end"], true, "{body}");
    w.at(end - Duration::days(1));
    w.post_usage(&at_end, &[(end - Duration::days(1), 2_000)])
        .await;
    w.at(end - minutes(4));
    w.post_usage(&at_end, &[(end - minutes(4), 123)]).await;
    w.at(end + minutes(2));
    w.deliver_webhooks().await;
    let (_, view) = w.view("ada", &at_end).await;
    assert_eq!(view["status"], "canceled", "{view}");
    // Late, but timestamped before the end: counted and billed on the final invoice.
    let late = w.post_usage(&at_end, &[(end - minutes(1), 10)]).await;
    assert_eq!(late["accepted"], 1, "{late}");
    w.at(end + minutes(15));
    w.run(RunMode::PeriodClose).await;
    w.at(end + minutes(70));
    let invoices = w.usage_invoices(&at_end).await;
    assert_eq!(invoices, vec![(start, end, 2_133, w.quote("payg", 2_133))]);
}

/// A yearly plan with "50,000 calls a month" counts its quota per month anchored at the
/// subscription's start and resets on the anniversary day (clamped at month ends), not over
/// the whole year; the 429 gate belongs to its month.
#[tokio::test]
async fn a_yearly_plans_monthly_quota_resets_on_its_anniversary() {
    let start = utc(2027, 1, 31, 9, 15);
    let w = world(start).await;
    let (sub, key) = w.subscribe("yan", "basic-yearly").await;
    w.at(start + Duration::days(3));
    let body = w
        .post_usage(&sub, &[(start + Duration::days(3), 50_000)])
        .await;
    assert_eq!(
        body["subscriptions"][0]["state"], "quota_exceeded",
        "{body}"
    );
    let q = &body["subscriptions"][0]["quota"];
    assert_eq!(q["period_start"], ts(start), "{body}");
    // Feb 28 (the 31st clamped) at the anchor's time of day.
    let reset = utc(2027, 2, 28, 9, 15);
    assert_eq!(q["period_end"], ts(reset), "{body}");
    assert_eq!(w.entitlement(&key).await["status"], 429);
    w.at(reset - minutes(1));
    assert_eq!(w.entitlement(&key).await["status"], 429);
    w.at(reset + minutes(1));
    assert_eq!(w.entitlement(&key).await["status"], 200);
    let body = w.post_usage(&sub, &[(reset + minutes(1), 10)]).await;
    assert_eq!(body["subscriptions"][0]["state"], "ok", "{body}");
    assert_eq!(body["subscriptions"][0]["quota"]["used"], 10, "{body}");
    // The yearly billing period is still the year.
    assert_eq!(
        body["subscriptions"][0]["period_end"],
        ts(utc(2028, 1, 31, 9, 15)),
        "{body}"
    );
    let (_, view) = w.view("yan", &sub).await;
    assert_eq!(view["quota"]["used"], 10, "{view}");
    assert_eq!(view["quota"]["exceeded"], false, "{view}");
}

/// A monthly quota used up in the last minutes of a period anchored at hh:37: the renewal
/// webhook arrives minutes late, and the gateway answers 200 in the new period before and
/// after it; quota exceeded is `used >= limit`, in the portal too.
#[tokio::test]
async fn a_late_renewal_webhook_leaves_the_new_period_open() {
    let start = utc(2026, 10, 15, 13, 37);
    let w = world(start).await;
    let (sub, key) = w.subscribe("lea", "basic").await;
    let end = start + chrono::Months::new(1);
    w.at(end - minutes(10));
    let body = w.post_usage(&sub, &[(end - minutes(10), 50_000)]).await;
    assert_eq!(
        body["subscriptions"][0]["state"], "quota_exceeded",
        "{body}"
    );
    assert_eq!(w.entitlement(&key).await["status"], 429);
    let (_, view) = w.view("lea", &sub).await;
    assert_eq!(view["quota"]["used"], 50_000, "{view}");
    assert_eq!(view["quota"]["exceeded"], true, "{view}");

    // Stripe renews at `end`; its webhook is late. The gate belonged to the old period.
    w.at(end + minutes(4));
    assert_eq!(w.entitlement(&key).await["status"], 200);
    let body = w.post_usage(&sub, &[(end + minutes(3), 5)]).await;
    assert_eq!(body["subscriptions"][0]["state"], "ok", "{body}");
    assert_eq!(body["subscriptions"][0]["quota"]["used"], 5, "{body}");
    assert_eq!(w.entitlement(&key).await["status"], 200);
    w.deliver_webhooks().await;
    assert_eq!(w.entitlement(&key).await["status"], 200);
    let (_, view) = w.view("lea", &sub).await;
    assert_eq!(view["period_start"], ts(end), "{view}");
    assert_eq!(view["quota"]["used"], 5, "{view}");
    // The new period's quota blocks on its own.
    let body = w.post_usage(&sub, &[(end + minutes(4), 49_995)]).await;
    assert_eq!(
        body["subscriptions"][0]["state"], "quota_exceeded",
        "{body}"
    );
    assert_eq!(w.entitlement(&key).await["status"], 429);
}

/// During a Stripe trial the portal's quote is what Stripe bills for it: nothing (the trial's
/// invoice is $0; usage in a trial is not billed either: the emulator's first cycle invoice
/// after the trial bills no usage of it). After the trial, the quote is the period's price.
#[tokio::test]
async fn the_quote_during_a_trial_is_what_stripe_bills_for_it() {
    let start = utc(2026, 10, 15, 13, 37);
    let w = world(start).await;
    let (status, body) = w
        .call(
            Handler::Portal,
            "POST",
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "tia", "product_id": "team", "subscription_name": "main", "seats": 2,
                "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/cancel"),
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    w.stripe
        .complete_checkout(body["id"].as_str().unwrap(), Card::Good)
        .unwrap();
    w.deliver_webhooks().await;
    let sub = body["subscription_id"].as_str().unwrap().to_string();
    let trial_end = start + Duration::days(14);
    w.at(start + Duration::days(3));
    let (_, view) = w.view("tia", &sub).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["trial_ends_at"], ts(trial_end), "{view}");
    assert_eq!(view["quote"]["total"], 0, "{view}");
    assert_eq!(view["period_end"], ts(trial_end), "{view}");
    // Stripe's own bill for the trial: the subscription's first invoice.
    let stripe_sub = w.stripe_subscription(&sub);
    let first = w
        .stripe
        .object(
            w.stripe.object(&stripe_sub).unwrap()["latest_invoice"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(first["total"], 0, "{first:#}");

    w.at(trial_end + minutes(5));
    w.deliver_webhooks().await;
    let (_, view) = w.view("tia", &sub).await;
    assert!(view.get("trial_ends_at").is_none(), "{view}");
    assert_eq!(view["period_start"], ts(trial_end), "{view}");
    assert_eq!(view["quote"]["total"], 3_000, "{view}");
}
