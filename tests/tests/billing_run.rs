//! The billing run end to end: the real DynamoDB store on DynamoDB Local (testkit), the real
//! Stripe adapter against the Stripe emulator, the real EventBridge publisher against the
//! capture server. Time is the emulator's clock, so a month passes in seconds.

use async_trait::async_trait;
use billing_run::{BillingRun, RunConfig, RunRequest, RunSummary};
use chrono::{DateTime, TimeZone, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;
use tollgate_domain::billing::RunMode;
use tollgate_domain::catalog::Catalog;
use tollgate_domain::events::DomainEvent;
use tollgate_domain::ids::{ConsumerId, MeterId, StripeId, SubscriptionId};
use tollgate_domain::money::Currency;
use tollgate_domain::ports::{
    CheckoutRequest, CheckoutSession, CustomerCredit, Expect, MeterEvent, Payments, PaymentsError,
    PaymentsResult, Purchase, Store, SubscriptionSnapshot, UsageBucketKey, Write,
    checkout_line_items,
};
use tollgate_domain::pricing::{QuoteRequest, quote};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::time::{Clock, Duration, Timestamp, hour_start};
use tollgate_events::EventBridgePublisher;
use tollgate_store::DynamoStore;
use tollgate_stripe::sync::sync_catalog;
use tollgate_stripe::{RetryPolicy, StripeAdapter, StripeConfig};
use tollgate_stripe_emulator::{Card, Emulator, EmulatorConfig, RunningEmulator};
use tollgate_testkit::eventbridge::EventBridgeCapture;

fn t(month: u32, day: u32, h: u32, m: u32) -> Timestamp {
    Utc.with_ymd_and_hms(2026, month, day, h, m, 0).unwrap()
}

fn api_calls() -> MeterId {
    MeterId::parse("api_calls").unwrap()
}

/// tollgate's clock is the emulator's: both move together.
struct EmulatorClock(Arc<RunningEmulator>);

impl Clock for EmulatorClock {
    fn now(&self) -> Timestamp {
        DateTime::from_timestamp(self.0.now(), 0).expect("emulator time")
    }
}

struct World {
    stripe: Arc<RunningEmulator>,
    payments: Arc<StripeAdapter>,
    store: Arc<DynamoStore>,
    catalog: Arc<Catalog>,
    capture: EventBridgeCapture,
    publisher: Arc<EventBridgePublisher>,
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
    let mut config = StripeConfig::new(
        SecretString::from("sk_test_tollgate"),
        Some(stripe.base_url().to_string()),
    );
    config.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: StdDuration::from_millis(5),
        max_delay: StdDuration::from_millis(20),
    };
    let payments = Arc::new(StripeAdapter::from_config(&config).expect("stripe client"));
    let catalog: Catalog =
        serde_json::from_str(include_str!("../../examples/catalog.json")).expect("catalog");
    sync_catalog(payments.as_ref(), &catalog, false)
        .await
        .expect("catalog sync");
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
    World {
        stripe,
        payments,
        store: Arc::new(tollgate_testkit::dynamo::fresh_store().await),
        catalog: Arc::new(catalog),
        capture,
        publisher,
    }
}

fn test_config() -> RunConfig {
    RunConfig {
        meter_events_per_second: 1000,
        ..RunConfig::default()
    }
}

impl World {
    fn now(&self) -> Timestamp {
        EmulatorClock(self.stripe.clone()).now()
    }

    fn set_time(&self, at: Timestamp) {
        if at.timestamp() > self.stripe.now() {
            self.stripe.set_time(at.timestamp());
        }
    }

    fn billing_run(&self, payments: Arc<dyn Payments>, config: RunConfig) -> BillingRun {
        BillingRun::new(
            self.store.clone(),
            payments,
            self.publisher.clone(),
            self.catalog.clone(),
            Arc::new(EmulatorClock(self.stripe.clone())),
            config,
        )
    }

    async fn run(&self, mode: RunMode) -> RunSummary {
        self.run_with(self.payments.clone(), mode).await
    }

    async fn run_with(&self, payments: Arc<dyn Payments>, mode: RunMode) -> RunSummary {
        let payload = match mode {
            RunMode::Nightly => json!({}),
            RunMode::PeriodClose => json!({"mode": "period_close"}),
        };
        let request = billing_run::input::parse(&payload, self.now()).unwrap();
        self.billing_run(payments, test_config())
            .run(request, None)
            .await
            .expect("run")
    }

    /// A consumer subscribes through Stripe Checkout and tollgate stores the subscription as
    /// the webhook would: Stripe's ids and period, status active.
    async fn subscribe(&self, name: &str, product: &str) -> Subscription {
        self.subscribe_as(name, name, product).await
    }

    /// `consumer`'s subscription `name`, all on the consumer's one Stripe customer: how
    /// subscriptions made before per-subscription customers share one (the billing run must
    /// still never call Stripe twice at once for one customer and meter). Checkout now gives
    /// each Stripe subscription its own customer (`tests/attribution.rs`).
    async fn subscribe_as(&self, consumer: &str, name: &str, product: &str) -> Subscription {
        let stripe = self.payments.as_ref();
        let consumer = ConsumerId::parse(format!("consumer-{consumer}")).unwrap();
        let customer = stripe.ensure_customer(&consumer, None).await.unwrap();
        let p = self.catalog.product(product).unwrap();
        let (mode, line_items) = checkout_line_items(p, Purchase::Product { seats: None }).unwrap();
        let id = SubscriptionId::parse(format!("sub_tg_{name}")).unwrap();
        let session: CheckoutSession = stripe
            .create_checkout_session(&CheckoutRequest {
                subscription_id: id.clone(),
                consumer_id: consumer.clone(),
                customer: customer.clone(),
                product_id: p.id.clone(),
                subscription_name: name.into(),
                mode,
                currency: Currency::usd(),
                line_items,
                trial_days: 0,
                extra_metadata: BTreeMap::new(),
                success_url: "https://portal.test/ok".into(),
                cancel_url: "https://portal.test/cancel".into(),
            })
            .await
            .unwrap();
        let done = self
            .stripe
            .complete_checkout(session.id.as_str(), Card::Good)
            .expect("checkout completes");
        let stripe_sub = StripeId::parse(done["subscription"].as_str().unwrap()).unwrap();
        let snap = stripe.get_subscription(&stripe_sub).await.unwrap();
        let now = self.now();
        let sub = Subscription {
            id,
            consumer_id: consumer,
            product_id: p.id.clone(),
            name: name.into(),
            status: SubscriptionStatus::Active,
            seats: None,
            stripe_customer_id: Some(customer),
            stripe_subscription_id: Some(stripe_sub),
            stripe_checkout_session_id: Some(session.id),
            current_period_start: snap.current_period_start,
            current_period_end: snap.current_period_end,
            cancel_at_period_end: false,
            access_expires_at: None,
            last_stripe_event_at: Some(now),
            periods: Default::default(),
            created_at: now,
            updated_at: now,
            version: 0,
        };
        self.store
            .commit(vec![Write::PutSubscription {
                subscription: sub.clone(),
                expect: Expect::Absent,
            }])
            .await
            .unwrap();
        sub
    }

    /// A key for `id`, stored and gated as the checkout function issues it.
    async fn issue_key(&self, id: &SubscriptionId) -> String {
        let sub = self.store.get_subscription(id).await.unwrap().unwrap();
        let key = tollgate_domain::apikey::NewApiKey::generate();
        let hash = key.hash();
        self.store
            .commit(vec![Write::PutApiKey(tollgate_domain::ports::ApiKey {
                hash: hash.clone(),
                prefix: key.display_prefix(),
                subscription_id: sub.id.clone(),
                consumer_id: sub.consumer_id.clone(),
                product_id: sub.product_id.clone(),
                created_at: self.now(),
                revoked_at: None,
            })])
            .await
            .unwrap();
        self.store
            .commit(vec![tollgate_domain::entitlement::status_gate_write(
                &sub,
                sub.version,
                &hash,
            )])
            .await
            .unwrap();
        key.expose_secret().to_string()
    }

    /// The authorizer's answer for `key` now (emulator clock): `(allow, status)`.
    async fn gateway(&self, key: &str) -> (bool, u64) {
        let a = authorizer::Authorizer::new(
            self.store.clone(),
            self.catalog.clone(),
            Arc::new(EmulatorClock(self.stripe.clone())),
            "x-api-key",
        )
        .authorize(&json!({"version": "2.0", "headers": {"x-api-key": key}}))
        .await
        .unwrap();
        (
            a["isAuthorized"].as_bool().unwrap(),
            a["context"]["status"].as_u64().unwrap(),
        )
    }

    /// The status copied onto the key for the one-read check.
    async fn key_status(&self, key: &str) -> Option<SubscriptionStatus> {
        use tollgate_domain::ports::EntitlementReads;
        let (_, gate) = self
            .store
            .get_key_entitlement(&tollgate_domain::ids::ApiKeyHash::of_key(key))
            .await
            .unwrap()
            .unwrap();
        gate.status
    }

    /// What the webhook does on `customer.subscription.updated`: the stored period follows
    /// Stripe's.
    async fn follow_stripe(&self, id: &SubscriptionId) {
        let mut sub = self.store.get_subscription(id).await.unwrap().unwrap();
        let snap = self
            .payments
            .get_subscription(sub.stripe_subscription_id.as_ref().unwrap())
            .await
            .unwrap();
        if snap.current_period_start != sub.current_period_start {
            let v = sub.version;
            sub.current_period_start = snap.current_period_start;
            sub.current_period_end = snap.current_period_end;
            sub.last_stripe_event_at = Some(self.now());
            self.store
                .commit(vec![Write::PutSubscription {
                    subscription: sub,
                    expect: Expect::Version(v),
                }])
                .await
                .unwrap();
        }
    }

    /// What the usage function does with a record: add it to its hour's bucket (the records of
    /// these tests never fall between an hour's start and a period boundary in that hour, where
    /// the usage function would start a bucket at the boundary: `usage::bucket_start`).
    async fn add_usage(&self, sub: &SubscriptionId, at: Timestamp, quantity: u64) {
        self.store
            .commit(vec![Write::AddUsage {
                key: UsageBucketKey {
                    subscription_id: sub.clone(),
                    meter: api_calls(),
                    hour: hour_start(at),
                },
                quantity,
            }])
            .await
            .unwrap();
    }

    /// Stripe's own count for a customer's meter over `[from, to)` (meter event summaries).
    async fn stripe_usage(&self, customer: &StripeId, from: Timestamp, to: Timestamp) -> u64 {
        let meters: Value = self.get("/v1/billing/meters?limit=100").await;
        let meter = meters["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["event_name"] == "api_calls")
            .expect("api_calls meter")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let s: Value = self
            .get(&format!(
                "/v1/billing/meters/{meter}/event_summaries?customer={customer}&start_time={}&end_time={}",
                from.timestamp(),
                to.timestamp()
            ))
            .await;
        s["data"][0]["aggregated_value"].as_f64().unwrap() as u64
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.stripe.base_url()))
            .bearer_auth("sk_test_tollgate")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn meter_event_posts(&self, identifier: &str) -> usize {
        self.stripe
            .requests()
            .iter()
            .filter(|r| {
                r.is_write()
                    && r.idempotency_key.as_deref()
                        == Some(&format!("tollgate:meter-event:{identifier}"))
            })
            .count()
    }
}

/// A payments port that dies at the Nth meter event: before Stripe sees it, or after Stripe
/// accepted it but before the run hears back. The run future is dropped there, which is what a
/// Lambda crash or timeout does to an invocation.
struct Crashing {
    inner: Arc<dyn Payments>,
    remaining: AtomicUsize,
    after_send: bool,
    crashed: tokio::sync::Notify,
}

impl Crashing {
    fn new(inner: Arc<dyn Payments>, nth: usize, after_send: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            remaining: AtomicUsize::new(nth),
            after_send,
            crashed: tokio::sync::Notify::new(),
        })
    }
}

#[async_trait]
impl Payments for Crashing {
    async fn ensure_customer(
        &self,
        consumer: &ConsumerId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        self.inner.ensure_customer(consumer, email).await
    }
    async fn create_subscription_customer(
        &self,
        consumer: &ConsumerId,
        subscription: &SubscriptionId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        self.inner
            .create_subscription_customer(consumer, subscription, email)
            .await
    }
    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> PaymentsResult<CheckoutSession> {
        self.inner.create_checkout_session(request).await
    }
    async fn get_subscription(&self, id: &StripeId) -> PaymentsResult<SubscriptionSnapshot> {
        self.inner.get_subscription(id).await
    }
    async fn set_cancel_at_period_end(
        &self,
        id: &StripeId,
        cancel: bool,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        self.inner
            .set_cancel_at_period_end(id, cancel, intent)
            .await
    }
    async fn cancel_subscription_now(
        &self,
        id: &StripeId,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        self.inner.cancel_subscription_now(id, intent).await
    }
    async fn expire_checkout_session(&self, id: &StripeId) -> PaymentsResult<bool> {
        self.inner.expire_checkout_session(id).await
    }
    async fn checkout_session_of_payment(
        &self,
        payment_intent: &str,
    ) -> PaymentsResult<Option<std::collections::BTreeMap<String, String>>> {
        self.inner.checkout_session_of_payment(payment_intent).await
    }
    async fn report_meter_event(&self, event: &MeterEvent) -> PaymentsResult<()> {
        let last = self.remaining.fetch_sub(1, Ordering::SeqCst) == 1;
        if last && !self.after_send {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        let result = self.inner.report_meter_event(event).await;
        if last {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        result
    }
    async fn add_customer_credit(&self, credit: &CustomerCredit) -> PaymentsResult<StripeId> {
        self.inner.add_customer_credit(credit).await
    }
}

/// Runs until the crashing port fires, then drops the run mid-flight.
async fn run_until_crash(w: &World, crashing: Arc<Crashing>, mode: RunMode) {
    let run = w.billing_run(crashing.clone(), test_config());
    let request = RunRequest {
        mode,
        date: (w.now() - Duration::days(1)).date_naive(),
    };
    tokio::select! {
        _ = run.run(request, None) => panic!("the run should have crashed"),
        _ = crashing.crashed.notified() => {}
    }
}

async fn crash_then_recover(after_send: bool) {
    let w = world(t(11, 1, 9, 0)).await;
    let sub = w.subscribe("crash", "payg").await;
    // Usage on two days: two slices, two meter events.
    w.add_usage(&sub.id, t(11, 3, 10, 0), 700).await;
    w.add_usage(&sub.id, t(11, 4, 15, 0), 300).await;
    w.set_time(t(11, 5, 0, 5));

    let crashing = Crashing::new(w.payments.clone(), 1, after_send);
    run_until_crash(&w, crashing, RunMode::Nightly).await;

    let ledger = w
        .store
        .ledger_entries(&sub.id, &api_calls(), t(11, 1, 0, 0))
        .await
        .unwrap();
    assert_eq!(ledger.len(), 1, "claimed before sending: {ledger:#?}");
    assert!(
        ledger[0].reported_at.is_none(),
        "the crash came before the mark"
    );
    let pending = ledger[0].clone();

    // The period-close pass an hour later finishes the night: re-sends the claim unchanged and
    // reports the other slice.
    w.set_time(t(11, 5, 1, 5));
    let s = w.run(RunMode::PeriodClose).await;
    assert_eq!((s.reported, s.resent), (2, 1), "{s:#?}");
    assert!(s.complete && s.failed.is_empty(), "{s:#?}");
    let ledger = w
        .store
        .ledger_entries(&sub.id, &api_calls(), t(11, 1, 0, 0))
        .await
        .unwrap();
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|e| e.reported_at.is_some()));
    let resent = ledger.iter().find(|e| e.from == pending.from).unwrap();
    assert_eq!(
        (&resent.identifier, resent.quantity, resent.event_timestamp),
        (
            &pending.identifier,
            pending.quantity,
            pending.event_timestamp
        )
    );
    let posts = w.meter_event_posts(&pending.identifier);
    assert_eq!(posts, if after_send { 2 } else { 1 });

    // Stripe counted every call once, whether or not it saw the first send.
    let customer = sub.stripe_customer_id.clone().unwrap();
    assert_eq!(
        w.stripe_usage(&customer, t(11, 1, 0, 0), t(11, 6, 0, 0))
            .await,
        1000
    );

    // Nothing is left for later runs.
    w.set_time(t(11, 5, 2, 5));
    let again = w.run(RunMode::Nightly).await;
    assert_eq!(again.reported, 0, "{again:#?}");
}

#[tokio::test]
async fn a_crash_after_stripe_accepted_an_event_does_not_count_it_twice() {
    crash_then_recover(true).await;
}

#[tokio::test]
async fn a_crash_before_stripe_saw_an_event_does_not_lose_it() {
    crash_then_recover(false).await;
}

#[tokio::test]
async fn the_usage_index_lists_each_metered_pair_of_a_day_once() {
    let store = tollgate_testkit::dynamo::fresh_store().await;
    let a = SubscriptionId::parse("sub_a").unwrap();
    let b = SubscriptionId::parse("sub_b").unwrap();
    let bytes = MeterId::parse("data_bytes").unwrap();
    let add = |sub: &SubscriptionId, meter: &MeterId, at: Timestamp| Write::AddUsage {
        key: UsageBucketKey {
            subscription_id: sub.clone(),
            meter: meter.clone(),
            hour: hour_start(at),
        },
        quantity: 5,
    };
    store
        .commit(vec![
            add(&a, &api_calls(), t(11, 20, 1, 0)),
            add(&a, &api_calls(), t(11, 20, 2, 0)),
            add(&a, &bytes, t(11, 20, 23, 0)),
            add(&b, &api_calls(), t(11, 21, 0, 0)),
        ])
        .await
        .unwrap();
    let day = |d: u32| t(11, d, 0, 0).date_naive();
    let on_20: BTreeSet<_> = store
        .metered_on(day(20))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        on_20,
        BTreeSet::from([(a.clone(), api_calls()), (a.clone(), bytes.clone())])
    );
    assert_eq!(
        store.metered_on(day(21)).await.unwrap(),
        vec![(b, api_calls())]
    );
    assert!(store.metered_on(day(22)).await.unwrap().is_empty());
}

#[tokio::test]
async fn expired_access_ends_and_is_announced() {
    let w = world(t(11, 1, 9, 0)).await;
    let mut sub = w.subscribe("pass", "payg").await;
    // A one-time pass that ended yesterday, and one that ends next week.
    let v = sub.version;
    sub.access_expires_at = Some(t(11, 3, 0, 0));
    w.store
        .commit(vec![Write::PutSubscription {
            subscription: sub.clone(),
            expect: Expect::Version(v),
        }])
        .await
        .unwrap();
    let mut later = w.subscribe("later", "payg").await;
    let v = later.version;
    later.access_expires_at = Some(t(11, 10, 0, 0));
    w.store
        .commit(vec![Write::PutSubscription {
            subscription: later.clone(),
            expect: Expect::Version(v),
        }])
        .await
        .unwrap();

    let key = w.issue_key(&sub.id).await;
    let later_key = w.issue_key(&later.id).await;
    w.set_time(t(11, 3, 0, 0) - chrono::Duration::seconds(1));
    assert_eq!(w.gateway(&key).await, (true, 200));
    // Refused the second access ends, before any nightly run.
    w.set_time(t(11, 3, 0, 0));
    assert_eq!(w.gateway(&key).await, (false, 403));

    w.set_time(t(11, 4, 0, 5));
    let s = w.run(RunMode::Nightly).await;
    assert_eq!(s.expired, vec![sub.id.clone()], "{s:#?}");
    // The run's expiry moved the key's gate with the status (the one path).
    assert_eq!(w.key_status(&key).await, Some(SubscriptionStatus::Expired));
    assert_eq!(w.gateway(&key).await, (false, 403));
    assert_eq!(w.gateway(&later_key).await, (true, 200));
    let stored = w.store.get_subscription(&sub.id).await.unwrap().unwrap();
    assert_eq!(stored.status, SubscriptionStatus::Expired);
    let later_now = w.store.get_subscription(&later.id).await.unwrap().unwrap();
    assert_eq!(later_now.status, SubscriptionStatus::Active);
    let published: Vec<DomainEvent> = w
        .capture
        .entries()
        .iter()
        .map(|e| serde_json::from_value(e.detail.clone()).unwrap())
        .collect();
    assert!(
        matches!(&published[..], [DomainEvent::SubscriptionExpired(e)] if e.subscription_id == sub.id),
        "{published:?}"
    );
    // The next night finds nothing more to expire.
    w.set_time(t(11, 5, 0, 5));
    assert!(w.run(RunMode::Nightly).await.expired.is_empty());
}

/// The renewal fails for good while tollgate hears nothing: the nightly reconcile reads Stripe's
/// `unpaid`, suspends the subscription, and the key is refused (its gate moved in the same
/// commit).
#[tokio::test]
async fn a_suspension_found_by_reconcile_refuses_the_key() {
    let w = world(t(11, 1, 9, 0)).await;
    w.stripe
        .set_billing_config(tollgate_stripe_emulator::BillingConfig {
            retry_delays_secs: vec![],
            after_retries: tollgate_stripe_emulator::AfterRetries::Unpaid,
            ..tollgate_stripe_emulator::BillingConfig::default()
        });
    let sub = w.subscribe("broke", "standard").await;
    let key = w.issue_key(&sub.id).await;
    assert_eq!(w.gateway(&key).await, (true, 200));
    w.stripe.set_customer_card(
        sub.stripe_customer_id.as_ref().unwrap().as_str(),
        Card::Declined,
    );
    w.set_time(t(12, 2, 0, 5));
    let stripe_status = w
        .payments
        .get_subscription(sub.stripe_subscription_id.as_ref().unwrap())
        .await
        .unwrap()
        .status;
    assert_eq!(
        stripe_status,
        tollgate_domain::ports::StripeSubscriptionStatus::Unpaid
    );
    let s = w.run(RunMode::Nightly).await;
    assert_eq!(s.reconciled, vec![sub.id.clone()], "{s:#?}");
    let stored = w.store.get_subscription(&sub.id).await.unwrap().unwrap();
    assert_eq!(stored.status, SubscriptionStatus::Suspended);
    assert_eq!(
        w.key_status(&key).await,
        Some(SubscriptionStatus::Suspended)
    );
    assert_eq!(w.gateway(&key).await, (false, 403));
}

#[tokio::test]
async fn a_subscription_whose_webhooks_went_missing_is_re_read_from_stripe() {
    let w = world(t(11, 1, 9, 0)).await;
    let sub = w.subscribe("quiet", "standard").await;
    // A month passes; Stripe renews, but tollgate never hears of it.
    w.set_time(t(12, 2, 0, 5));
    let stale = w.store.get_subscription(&sub.id).await.unwrap().unwrap();
    assert_eq!(stale.current_period_end, Some(t(12, 1, 9, 0)));
    let s = w.run(RunMode::Nightly).await;
    assert_eq!(s.reconciled, vec![sub.id.clone()], "{s:#?}");
    let fresh = w.store.get_subscription(&sub.id).await.unwrap().unwrap();
    assert_eq!(fresh.current_period_start, Some(t(12, 1, 9, 0)));
    assert_eq!(
        fresh.current_period_end,
        Some(Utc.with_ymd_and_hms(2027, 1, 1, 9, 0, 0).unwrap())
    );
}

/// What tollgate should have billed: the usage whose timestamps lie in the period, to the
/// second (keyed by the record's timestamp).
fn expected_usage(
    usage: &BTreeMap<(SubscriptionId, Timestamp), u64>,
    sub: &SubscriptionId,
    start: Timestamp,
    end: Timestamp,
) -> u64 {
    usage
        .iter()
        .filter(|((s, at), _)| s == sub && *at >= start && *at < end)
        .map(|(_, q)| q)
        .sum()
}

#[tokio::test]
async fn a_month_of_usage_is_invoiced_as_quoted() {
    let w = world(t(11, 1, 0, 0)).await;
    w.set_time(t(11, 1, 9, 0));
    let plans = [
        ("payg", "payg", 12_345u64),
        ("developer", "developer", 250),
        ("standard", "standard", 150_000),
        ("pro", "pro", 620_000),
        ("enterprise", "enterprise", 1_600_000),
    ];
    let mut subs = Vec::new();
    for (name, product, total) in plans {
        subs.push((w.subscribe(name, product).await, total));
    }
    // One subscription starts at 13:37: its period ends in the middle of an hour and a day.
    w.set_time(t(11, 1, 13, 37));
    subs.push((w.subscribe("midday", "standard").await, 123_456));

    // The gateway's records: over six days before the period ends, some arriving late, plus
    // usage after the period ended (the next period's, not on this invoice).
    // (hour of use, when it reaches tollgate, quantity)
    let mut records: Vec<(SubscriptionId, Timestamp, Timestamp, u64)> = Vec::new();
    for (sub, total) in &subs {
        let mut hours = Vec::new();
        for day in 25..=30 {
            for h in [3, 10, 17, 22] {
                hours.push(t(11, day, h, 20));
            }
        }
        for h in [0, 4, 8] {
            hours.push(t(12, 1, h, 30));
        }
        if sub.name == "midday" {
            // Minutes before the period's end at 13:37 belong to it, to the second.
            hours.extend([t(12, 1, 12, 10), t(12, 1, 13, 20)]);
        }
        let share = total / hours.len() as u64;
        let mut rest = *total;
        for (i, at) in hours.iter().enumerate() {
            let q = if i + 1 == hours.len() { rest } else { share };
            rest -= q;
            records.push((sub.id.clone(), *at, *at + Duration::minutes(3), q));
        }
        // Late: the night of the 27th was reported at 00:05 on the 28th; this arrives at 10:00.
        records.push((sub.id.clone(), t(11, 27, 22, 40), t(11, 28, 10, 0), 1_111));
        // Late and close to the period's end: Nov 30's usage arriving on Dec 1 at 08:45.
        records.push((sub.id.clone(), t(11, 30, 23, 50), t(12, 1, 8, 45), 222));
        // After the period ended: next period.
        records.push((sub.id.clone(), t(12, 1, 15, 0), t(12, 1, 15, 5), 999));
    }
    records.sort_by_key(|r| r.2);

    // The schedule: nightly at 00:05, on the 29th twice, on Dec 1 crashed halfway; the
    // period-close pass every 15 minutes of Dec 1 (it finishes the crashed night and flushes
    // the periods that end that day).
    let mut runs: Vec<(Timestamp, &str)> = Vec::new();
    for day in 2..=30 {
        runs.push((t(11, day, 0, 5), "nightly"));
    }
    runs.push((t(11, 29, 0, 7), "nightly"));
    runs.push((t(12, 1, 0, 5), "crash"));
    for h in 0..24 {
        for m in [5, 20, 35, 50] {
            if (h, m) != (0, 5) {
                runs.push((t(12, 1, h, m), "period_close"));
            }
        }
    }
    runs.push((t(12, 2, 0, 5), "nightly"));
    runs.sort();

    let mut usage: BTreeMap<(SubscriptionId, Timestamp), u64> = BTreeMap::new();
    let mut next_record = 0;
    let mut second_run_of_29th = None;
    for (at, what) in &runs {
        while next_record < records.len() && records[next_record].2 <= *at {
            let (sub, used_at, arrives, q) = records[next_record].clone();
            w.set_time(arrives);
            w.add_usage(&sub, used_at, q).await;
            *usage.entry((sub, used_at)).or_default() += q;
            next_record += 1;
        }
        w.set_time(*at);
        for (sub, _) in &subs {
            w.follow_stripe(&sub.id).await;
        }
        match *what {
            "nightly" => {
                let s = w.run(RunMode::Nightly).await;
                assert!(s.failed.is_empty() && s.late_unbilled.is_empty(), "{s:#?}");
                if *at == t(11, 29, 0, 7) {
                    second_run_of_29th = Some(s);
                }
            }
            "period_close" => {
                let s = w.run(RunMode::PeriodClose).await;
                assert!(s.failed.is_empty() && s.late_unbilled.is_empty(), "{s:#?}");
                if *at == t(12, 1, 0, 20) {
                    // The pass after the crash finished the night: the claims the crash left
                    // pending went out again, unchanged.
                    assert!(s.resent >= 1 && s.complete, "{s:#?}");
                }
            }
            "crash" => {
                let crashing = Crashing::new(w.payments.clone(), 3, true);
                run_until_crash(&w, crashing, RunMode::Nightly).await;
            }
            _ => unreachable!(),
        }
    }
    let second = second_run_of_29th.unwrap();
    assert_eq!(
        second.reported, 0,
        "the second run of a night sends nothing: {second:#?}"
    );
    // Remaining records (none expected after the last run).
    assert_eq!(next_record, records.len());

    // Stripe has closed the periods (1 h after their end) and invoiced them.
    for (sub, _) in &subs {
        let stripe_sub = w
            .stripe
            .object(sub.stripe_subscription_id.as_ref().unwrap().as_str())
            .unwrap();
        let invoice = w
            .stripe
            .object(stripe_sub["latest_invoice"].as_str().unwrap())
            .unwrap();
        assert_eq!(invoice["status"], "paid", "{invoice:#}");
        let (start, end) = (
            sub.current_period_start.unwrap(),
            sub.current_period_end.unwrap(),
        );
        let used = expected_usage(&usage, &sub.id, start, end);
        let product = w.catalog.product(sub.product_id.as_str()).unwrap();
        let q = quote(
            &w.catalog,
            product,
            &QuoteRequest {
                usage: BTreeMap::from([(api_calls(), used)]),
                ..QuoteRequest::default()
            },
        )
        .unwrap();
        assert_eq!(
            invoice["total"].as_i64().unwrap(),
            q.total,
            "{}: usage {used}, quote {q:#?}, invoice {invoice:#}",
            sub.name
        );
        let customer = sub.stripe_customer_id.as_ref().unwrap();
        assert_eq!(
            w.stripe_usage(customer, start, end).await,
            used,
            "{}",
            sub.name
        );
        // The next period has its usage too, stamped inside it.
        let next = expected_usage(&usage, &sub.id, end, end + Duration::days(30));
        assert!(next > 0);
        assert_eq!(
            w.stripe_usage(customer, end, end + Duration::days(30))
                .await,
            next,
            "{}",
            sub.name
        );
        eprintln!(
            "{}: usage {used}, invoice {} = quote {}",
            sub.name, invoice["total"], q.total
        );
    }
}

/// Counts meter-event calls in flight, overall and per (customer, meter), and can refuse the
/// events of one customer.
struct Watching {
    inner: Arc<dyn Payments>,
    in_flight: std::sync::Mutex<BTreeMap<String, usize>>,
    max_per_key: AtomicUsize,
    max_total: AtomicUsize,
    total: AtomicUsize,
    refuse: Option<StripeId>,
}

impl Watching {
    fn new(inner: Arc<dyn Payments>, refuse: Option<StripeId>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            in_flight: std::sync::Mutex::new(BTreeMap::new()),
            max_per_key: AtomicUsize::new(0),
            max_total: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            refuse,
        })
    }
}

#[async_trait]
impl Payments for Watching {
    async fn ensure_customer(
        &self,
        consumer: &ConsumerId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        self.inner.ensure_customer(consumer, email).await
    }
    async fn create_subscription_customer(
        &self,
        consumer: &ConsumerId,
        subscription: &SubscriptionId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        self.inner
            .create_subscription_customer(consumer, subscription, email)
            .await
    }
    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> PaymentsResult<CheckoutSession> {
        self.inner.create_checkout_session(request).await
    }
    async fn get_subscription(&self, id: &StripeId) -> PaymentsResult<SubscriptionSnapshot> {
        self.inner.get_subscription(id).await
    }
    async fn set_cancel_at_period_end(
        &self,
        id: &StripeId,
        cancel: bool,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        self.inner
            .set_cancel_at_period_end(id, cancel, intent)
            .await
    }
    async fn cancel_subscription_now(
        &self,
        id: &StripeId,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        self.inner.cancel_subscription_now(id, intent).await
    }
    async fn expire_checkout_session(&self, id: &StripeId) -> PaymentsResult<bool> {
        self.inner.expire_checkout_session(id).await
    }
    async fn checkout_session_of_payment(
        &self,
        payment_intent: &str,
    ) -> PaymentsResult<Option<std::collections::BTreeMap<String, String>>> {
        self.inner.checkout_session_of_payment(payment_intent).await
    }
    async fn report_meter_event(&self, event: &MeterEvent) -> PaymentsResult<()> {
        if self.refuse.as_ref() == Some(&event.customer) {
            return Err(PaymentsError::InvalidRequest {
                param: Some("payload[stripe_customer_id]".into()),
                code: Some("resource_missing".into()),
                message: "No such customer".into(),
            });
        }
        let key = format!("{}#{}", event.customer, event.event_name);
        {
            let mut m = self.in_flight.lock().unwrap();
            let n = m.entry(key.clone()).or_default();
            *n += 1;
            self.max_per_key.fetch_max(*n, Ordering::SeqCst);
        }
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_total.fetch_max(total, Ordering::SeqCst);
        // Long enough for overlapping calls to show.
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        let r = self.inner.report_meter_event(event).await;
        self.total.fetch_sub(1, Ordering::SeqCst);
        *self.in_flight.lock().unwrap().get_mut(&key).unwrap() -= 1;
        r
    }
    async fn add_customer_credit(&self, credit: &CustomerCredit) -> PaymentsResult<StripeId> {
        self.inner.add_customer_credit(credit).await
    }
}

#[tokio::test]
async fn calls_overlap_but_never_twice_for_one_customer_and_meter_and_one_failure_stops_nobody() {
    let w = world(t(11, 1, 9, 0)).await;
    // acme holds three subscriptions on the same meter: one Stripe customer.
    let mut acme = Vec::new();
    for i in 0..3 {
        acme.push(w.subscribe_as("acme", &format!("acme{i}"), "payg").await);
    }
    let mut others = Vec::new();
    for i in 0..6 {
        others.push(w.subscribe(&format!("o{i}"), "payg").await);
    }
    let broken = w.subscribe("broken", "payg").await;
    for sub in acme.iter().chain(&others).chain([&broken]) {
        for day in 2..=4 {
            w.add_usage(&sub.id, t(11, day, 12, 0), 10).await;
        }
    }
    // Stripe is briefly overloaded: the adapter's retries ride it out.
    w.stripe
        .inject_fault("POST", "/v1/billing/meter_events", 429, 2);
    w.set_time(t(11, 5, 0, 5));
    let watching = Watching::new(w.payments.clone(), broken.stripe_customer_id.clone());
    let s = w.run_with(watching.clone(), RunMode::Nightly).await;

    assert_eq!(watching.max_per_key.load(Ordering::SeqCst), 1);
    assert!(
        watching.max_total.load(Ordering::SeqCst) > 1,
        "calls ran concurrently"
    );
    assert_eq!(s.reported, 9 * 3, "{s:#?}");
    assert_eq!(s.failed.len(), 1, "{s:#?}");
    assert_eq!(s.failed[0].subscription_id, broken.id);
    assert!(!s.failed[0].retryable);
    let acme_customer = acme[0].stripe_customer_id.clone().unwrap();
    assert!(
        acme.iter()
            .all(|s| s.stripe_customer_id.as_ref() == Some(&acme_customer))
    );
    assert_eq!(
        w.stripe_usage(&acme_customer, t(11, 1, 0, 0), t(11, 5, 0, 0))
            .await,
        90
    );
    let retried = w
        .stripe
        .requests()
        .iter()
        .filter(|r| r.fault_injected)
        .count();
    assert_eq!(retried, 2);
}

#[tokio::test]
async fn two_runs_of_one_night_at_once_report_each_slice_once() {
    let w = world(t(11, 1, 9, 0)).await;
    let mut subs = Vec::new();
    for i in 0..8 {
        let sub = w.subscribe(&format!("twin{i}"), "payg").await;
        for day in 2..=4 {
            w.add_usage(&sub.id, t(11, day, 7, 0), 100 + i).await;
        }
        subs.push(sub);
    }
    w.set_time(t(11, 5, 0, 5));
    let (a, b) = tokio::join!(w.run(RunMode::Nightly), w.run(RunMode::Nightly));
    // Every slice was claimed by exactly one of them (the other saw a conflict or the entry).
    assert_eq!(a.reported + b.reported, 8 * 3, "{a:#?} {b:#?}");
    assert!(a.failed.is_empty() && b.failed.is_empty());
    for (i, sub) in subs.iter().enumerate() {
        let customer = sub.stripe_customer_id.as_ref().unwrap();
        let used = w
            .stripe_usage(customer, t(11, 1, 0, 0), t(11, 5, 0, 0))
            .await;
        assert_eq!(used, 3 * (100 + i as u64));
    }
}

#[tokio::test]
async fn a_run_near_its_deadline_stops_cleanly_and_the_next_pass_continues() {
    let w = world(t(11, 1, 9, 0)).await;
    let mut subs = Vec::new();
    for i in 0..5 {
        let sub = w.subscribe(&format!("late{i}"), "payg").await;
        w.add_usage(&sub.id, t(11, 3, 7, 0), 50).await;
        subs.push(sub);
    }
    w.set_time(t(11, 4, 0, 5));
    // The Lambda context says 10 s are left; the margin is 30 s: nothing new is started.
    let request = RunRequest {
        mode: RunMode::Nightly,
        date: t(11, 3, 0, 0).date_naive(),
    };
    let deadline = std::time::SystemTime::now() + StdDuration::from_secs(10);
    let s = w
        .billing_run(w.payments.clone(), test_config())
        .run(request, Some(deadline))
        .await
        .unwrap();
    assert_eq!(
        (s.reported, s.deferred, s.complete),
        (0, 5, false),
        "{s:#?}"
    );

    // Fifteen minutes later the period-close pass finishes the night, then marks it done.
    w.set_time(t(11, 4, 0, 20));
    let s = w.run(RunMode::PeriodClose).await;
    assert_eq!((s.reported, s.deferred, s.complete), (5, 0, true), "{s:#?}");
    w.set_time(t(11, 4, 0, 35));
    let s = w.run(RunMode::PeriodClose).await;
    assert_eq!((s.reported, s.skipped), (0, 0), "the night is done: {s:#?}");
}

/// The scale run: N subscriptions with usage, one nightly run against the emulator. CI runs
/// 200 (seconds); `BILLING_SCALE=10000 cargo test -p tollgate-tests --test billing_run
/// a_nightly_run_over_many -- --nocapture` is the measured run (minutes of setup) and prints
/// its duration and request count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nightly_run_over_many_subscriptions_completes() {
    let n: usize = std::env::var("BILLING_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let w = Arc::new(world(t(11, 1, 9, 0)).await);
    let setup = std::time::Instant::now();
    let subs: Vec<Subscription> = futures_lite_join(n, {
        let w = w.clone();
        move |i| {
            let w = w.clone();
            async move {
                let sub = w.subscribe(&format!("s{i:05}"), "payg").await;
                w.add_usage(&sub.id, t(11, 1, 10 + (i % 12) as u32, 0), 100 + i as u64)
                    .await;
                sub
            }
        }
    })
    .await;
    eprintln!("setup of {n} subscriptions: {:?}", setup.elapsed());
    w.set_time(t(11, 2, 0, 5));
    w.stripe.clear_request_log();
    let run = w.billing_run(w.payments.clone(), RunConfig::default());
    let started = std::time::Instant::now();
    let s = run
        .run(
            RunRequest {
                mode: RunMode::Nightly,
                date: t(11, 1, 0, 0).date_naive(),
            },
            None,
        )
        .await
        .unwrap();
    let took = started.elapsed();
    let requests = w.stripe.requests().len();
    eprintln!(
        "billing run over {n} subscriptions: {took:?}, {requests} Stripe requests, summary: reported {} quantity {} skipped {} failed {} stripe_calls {}",
        s.reported,
        s.quantity,
        s.skipped,
        s.failed.len(),
        s.stripe_calls
    );
    assert_eq!(
        s.reported as usize,
        n,
        "{:?}",
        &s.failed[..s.failed.len().min(5)]
    );
    assert!(s.complete);
    // Cost grows with subscriptions, not with events: one meter event per subscription.
    assert_eq!(requests, n, "one Stripe request per subscription");
    let expected: u64 = (0..n as u64).map(|i| 100 + i).sum();
    assert_eq!(s.quantity, expected);
    assert_eq!(subs.len(), n);

    // The same night again (a retry, or a run by hand): reads only, nothing sent.
    let started = std::time::Instant::now();
    let again = run
        .run(
            RunRequest {
                mode: RunMode::Nightly,
                date: t(11, 1, 0, 0).date_naive(),
            },
            None,
        )
        .await
        .unwrap();
    eprintln!(
        "the same night again: {:?}, reported {}, skipped {}",
        started.elapsed(),
        again.reported,
        again.skipped
    );
    assert_eq!(again.reported, 0);

    // A period-close pass with every subscription listed and none of them at a period end.
    w.set_time(t(11, 2, 0, 20));
    let started = std::time::Instant::now();
    let pass = run
        .run(
            RunRequest {
                mode: RunMode::PeriodClose,
                date: t(11, 1, 0, 0).date_naive(),
            },
            None,
        )
        .await
        .unwrap();
    eprintln!(
        "a period-close pass over {n} listed subscriptions: {:?}, reported {}",
        started.elapsed(),
        pass.reported
    );
    assert_eq!(pass.reported, 0);
}

/// Runs `f(0..n)` with at most 32 at a time, results in order.
async fn futures_lite_join<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(f)
        .buffered(32)
        .collect()
        .await
}
