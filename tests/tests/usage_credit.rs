//! Usage ingestion, prepaid credit and the entitlement check, end to end: the usage function's
//! handler and the authorizer on DynamoDB Local (a fresh table per test) and the real
//! EventBridge publisher against the capture server.
//!
//! The store is the real `DynamoStore` behind `Probe`, which counts requests and can fail a
//! commit before or after DynamoDB applied it (the "lost answer" case), to inject failures
//! between writes. Nothing here imitates DynamoDB.

use async_trait::async_trait;
use chrono::{Duration, Utc};
use futures::future::join_all;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tollgate_app::Secret;
use tollgate_app::credit::{CreditPurchase, PurchaseOutcome, apply_credit_purchase};
use tollgate_domain::Catalog;
use tollgate_domain::credit::{CreditAccount, CreditPolicy};
use tollgate_domain::entitlement::{KeyGate, status_gate_write};
use tollgate_domain::ids::{ApiKeyHash, ConsumerId, MeterId, ProductId, StripeId, SubscriptionId};
use tollgate_domain::ports::{
    ApiKey, ClaimScope, Consumer, CreditBalance, CreditMovement, EntitlementReads, Expect,
    LedgerEntry, Page, Store, StoreError, StoreResult, UsageBucket, Write,
};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::time::{FixedClock, NaiveDate, Timestamp, hour_start};
use tollgate_domain::usage::IngestWindow;
use tollgate_events::EventBridgePublisher;
use tollgate_store::DynamoStore;
use tollgate_testkit::eventbridge::EventBridgeCapture;
use usage::Usage;

const GATEWAY_SECRET: &str = "gw-secret-for-tests";

fn catalog() -> Catalog {
    serde_json::from_value(json!({
        "version": 1, "currency": "usd",
        "meters": [{"id": "api_calls", "name": "API calls"}, {"id": "bytes", "name": "Bytes"}],
        "products": [
            {"id": "free", "name": "Free", "quota": {"meter": "api_calls", "limit": 100},
             "rate_limit_per_minute": 100},
            {"id": "payg", "name": "PAYG", "interval": "month", "rate_limit_per_minute": 200,
             "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount_decimal": "0.15"}]},
            {"id": "credits", "name": "Prepaid", "prepaid": true, "rate_limit_per_minute": 300,
             "credit": {"packs": [1000]},
             "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount": 1}]}
        ]
    }))
    .expect("test catalog")
}

// ---------------------------------------------------------------------------------------------
// Probe: the real store, counted, with failures on demand.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The commit is not sent; the caller sees a failure.
    Before,
    /// The commit is applied, then the caller sees a failure (the answer was lost).
    After,
    /// Let this commit through untouched.
    Pass,
}

struct Probe {
    inner: DynamoStore,
    commits: AtomicUsize,
    items: AtomicUsize,
    reads: AtomicUsize,
    faults: Mutex<VecDeque<Fault>>,
}

impl Probe {
    fn new(inner: DynamoStore) -> Self {
        Self {
            inner,
            commits: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            faults: Mutex::new(VecDeque::new()),
        }
    }
    fn fail_next(&self, faults: &[Fault]) {
        self.faults.lock().unwrap().extend(faults.iter().copied());
    }
    fn counts(&self) -> (usize, usize, usize) {
        (
            self.commits.load(Ordering::SeqCst),
            self.items.load(Ordering::SeqCst),
            self.reads.load(Ordering::SeqCst),
        )
    }
    fn reset(&self) {
        self.commits.store(0, Ordering::SeqCst);
        self.items.store(0, Ordering::SeqCst);
        self.reads.store(0, Ordering::SeqCst);
    }
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

fn injected() -> StoreError {
    StoreError::Unavailable("injected failure".into())
}

#[async_trait]
impl Store for Probe {
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        let fault = self.faults.lock().unwrap().pop_front();
        if fault == Some(Fault::Before) {
            return Err(injected());
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.items.fetch_add(writes.len(), Ordering::SeqCst);
        self.inner.commit(writes).await?;
        if fault == Some(Fault::After) {
            return Err(injected());
        }
        Ok(())
    }
    async fn is_claimed(&self, scope: ClaimScope, id: &str) -> StoreResult<bool> {
        self.read();
        self.inner.is_claimed(scope, id).await
    }
    async fn claim_digest(
        &self,
        scope: ClaimScope,
        id: &str,
    ) -> StoreResult<Option<Option<String>>> {
        self.read();
        self.inner.claim_digest(scope, id).await
    }
    async fn source_mark(&self, source: &str) -> StoreResult<Option<u64>> {
        self.read();
        self.inner.source_mark(source).await
    }
    async fn get_consumer(&self, id: &ConsumerId) -> StoreResult<Option<Consumer>> {
        self.read();
        self.inner.get_consumer(id).await
    }
    async fn find_consumer_by_stripe_customer(
        &self,
        id: &StripeId,
    ) -> StoreResult<Option<Consumer>> {
        self.read();
        self.inner.find_consumer_by_stripe_customer(id).await
    }
    async fn get_subscription(&self, id: &SubscriptionId) -> StoreResult<Option<Subscription>> {
        self.read();
        self.inner.get_subscription(id).await
    }
    async fn find_subscription_by_stripe_id(
        &self,
        id: &StripeId,
    ) -> StoreResult<Option<Subscription>> {
        self.read();
        self.inner.find_subscription_by_stripe_id(id).await
    }
    async fn list_subscriptions(&self, c: &ConsumerId) -> StoreResult<Vec<Subscription>> {
        self.read();
        self.inner.list_subscriptions(c).await
    }
    async fn list_all_subscriptions(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Subscription>> {
        self.read();
        self.inner.list_all_subscriptions(cursor, limit).await
    }
    async fn get_api_key(&self, hash: &ApiKeyHash) -> StoreResult<Option<ApiKey>> {
        self.read();
        self.inner.get_api_key(hash).await
    }
    async fn list_api_keys(&self, s: &SubscriptionId) -> StoreResult<Vec<ApiKey>> {
        self.read();
        self.inner.list_api_keys(s).await
    }
    async fn usage_buckets(
        &self,
        s: &SubscriptionId,
        m: &MeterId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UsageBucket>> {
        self.read();
        self.inner.usage_buckets(s, m, from, to).await
    }
    async fn ledger_entries(
        &self,
        s: &SubscriptionId,
        m: &MeterId,
        since: Timestamp,
    ) -> StoreResult<Vec<LedgerEntry>> {
        self.read();
        self.inner.ledger_entries(s, m, since).await
    }
    async fn metered_on(&self, day: NaiveDate) -> StoreResult<Vec<(SubscriptionId, MeterId)>> {
        self.read();
        self.inner.metered_on(day).await
    }
    async fn access_expiring_by(&self, at: Timestamp) -> StoreResult<Vec<Subscription>> {
        self.read();
        self.inner.access_expiring_by(at).await
    }
    async fn get_credit_balance(&self, c: &ConsumerId) -> StoreResult<Option<CreditBalance>> {
        self.read();
        self.inner.get_credit_balance(c).await
    }
    async fn list_credit_movements(&self, c: &ConsumerId) -> StoreResult<Vec<CreditMovement>> {
        self.read();
        self.inner.list_credit_movements(c).await
    }
}

#[async_trait]
impl EntitlementReads for Probe {
    async fn get_credit_account(&self, c: &ConsumerId) -> StoreResult<Option<CreditAccount>> {
        self.read();
        self.inner.get_credit_account(c).await
    }
    async fn get_key_entitlement(&self, h: &ApiKeyHash) -> StoreResult<Option<(ApiKey, KeyGate)>> {
        self.read();
        self.inner.get_key_entitlement(h).await
    }
    async fn list_key_entitlements(
        &self,
        s: &SubscriptionId,
    ) -> StoreResult<Vec<(ApiKey, KeyGate)>> {
        self.read();
        self.inner.list_key_entitlements(s).await
    }
}

// ---------------------------------------------------------------------------------------------
// The world of one test.
// ---------------------------------------------------------------------------------------------

struct World {
    store: Arc<Probe>,
    capture: EventBridgeCapture,
    catalog: Arc<Catalog>,
    usage: Arc<Usage>,
    now: Timestamp,
    policy: CreditPolicy,
}

/// Half past the current hour: every record of a test lies in one UTC hour, and the claims'
/// expiry (which DynamoDB compares with the real clock) is in the future.
fn test_now() -> Timestamp {
    hour_start(Utc::now()) + Duration::minutes(30)
}

async fn world_with(policy: CreditPolicy) -> World {
    let store = Arc::new(Probe::new(tollgate_testkit::dynamo::fresh_store().await));
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
    let catalog = Arc::new(catalog());
    let now = test_now();
    let usage = Arc::new(Usage::new(
        store.clone(),
        publisher,
        catalog.clone(),
        policy,
        IngestWindow::default(),
        Arc::new(FixedClock(now)),
        Secret::from_value("GATEWAY_SECRET", GATEWAY_SECRET),
    ));
    World {
        store,
        capture,
        catalog,
        usage,
        now,
        policy,
    }
}

async fn world() -> World {
    world_with(CreditPolicy {
        floor: 0,
        low_threshold: 200,
    })
    .await
}

impl World {
    /// An active subscription with one key whose status gate is set in the same commit, as
    /// the lifecycle code is asked to do. Returns the key.
    async fn subscribe(
        &self,
        consumer: &str,
        sub: &str,
        product: &str,
        status: SubscriptionStatus,
    ) -> String {
        let s = Subscription {
            id: SubscriptionId::parse(sub).unwrap(),
            consumer_id: ConsumerId::parse(consumer).unwrap(),
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
            periods: Default::default(),
            created_at: self.now - Duration::days(1),
            updated_at: self.now - Duration::days(1),
            version: 0,
        };
        // A well-formed key (tg_ + 64 hex), fixed per subscription.
        let key = format!("tg_{}", ApiKeyHash::of_key(sub).as_str());
        let hash = ApiKeyHash::of_key(&key);
        self.store
            .inner
            .commit(vec![
                Write::PutSubscription {
                    subscription: s.clone(),
                    expect: Expect::Absent,
                },
                Write::PutApiKey(ApiKey {
                    hash: hash.clone(),
                    prefix: key[..8].to_string(),
                    subscription_id: s.id.clone(),
                    consumer_id: s.consumer_id.clone(),
                    product_id: s.product_id.clone(),
                    created_at: s.created_at,
                    revoked_at: None,
                }),
            ])
            .await
            .expect("subscription and key");
        // A separate write: one transaction may not touch the key item twice.
        self.store
            .inner
            .commit(vec![status_gate_write(&s, 0, &hash)])
            .await
            .expect("status gate");
        key
    }

    async fn post(&self, body: &[u8], secret: &str) -> (u16, Value) {
        let req = http::Request::builder()
            .method("POST")
            .uri("/usage")
            .header("authorization", format!("Bearer {secret}"))
            .header("content-type", "application/json")
            .body(lambda_http::Body::from(body.to_vec()))
            .unwrap();
        self.send(req).await
    }

    async fn entitlement(&self, key: &str) -> Value {
        let (status, v) = self
            .entitlement_at(&format!("/entitlements/{key}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        // The same answer with the key in the `x-api-key` header instead of the URL.
        let (status, h) = self.entitlement_at("/entitlements", Some(key)).await;
        assert_eq!((status, &h), (200, &v));
        v
    }

    async fn entitlement_at(&self, path: &str, header_key: Option<&str>) -> (u16, Value) {
        let mut req = http::Request::builder()
            .method("GET")
            .uri(path)
            .header("authorization", format!("Bearer {GATEWAY_SECRET}"));
        if let Some(k) = header_key {
            req = req.header("x-api-key", k);
        }
        self.send(req.body(lambda_http::Body::Empty).unwrap()).await
    }

    async fn send(&self, req: lambda_http::Request) -> (u16, Value) {
        let resp = self.usage.handle(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = match resp.body() {
            lambda_http::Body::Text(t) => t.clone(),
            other => panic!("unexpected body {other:?}"),
        };
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn total(&self, sub: &str) -> u64 {
        self.store
            .inner
            .usage_buckets(
                &SubscriptionId::parse(sub).unwrap(),
                &MeterId::parse("api_calls").unwrap(),
                self.now - Duration::days(5),
                self.now + Duration::days(1),
            )
            .await
            .unwrap()
            .iter()
            .map(|b| b.quantity)
            .sum()
    }

    async fn buy(&self, consumer: &str, session: &str, amount: i64) -> PurchaseOutcome {
        apply_credit_purchase(
            self.store.as_ref(),
            &self.catalog,
            &CreditPurchase {
                consumer_id: ConsumerId::parse(consumer).unwrap(),
                checkout_session_id: session.into(),
                amount,
            },
            self.policy,
            self.now,
        )
        .await
        .expect("credit purchase")
    }

    async fn balance(&self, consumer: &str) -> i64 {
        self.store
            .inner
            .get_credit_account(&ConsumerId::parse(consumer).unwrap())
            .await
            .unwrap()
            .expect("account")
            .balance
    }

    fn count(&self, detail_type: &str) -> usize {
        self.capture
            .detail_types()
            .iter()
            .filter(|t| *t == detail_type)
            .count()
    }
}

/// A batch of `n` one-call records, spread over `subs`, in the current hour.
fn batch(id: &str, subs: &[&str], n: usize, now: Timestamp) -> Vec<u8> {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("{id}-{i}"),
                "subscription_id": subs[i % subs.len()],
                "timestamp": (now - Duration::seconds((i % 1500) as i64)).to_rfc3339(),
                "meter": "api_calls",
                "value": 1,
                "operation": "GET /forecast"
            })
        })
        .collect();
    serde_json::to_vec(&json!({"batch_id": id, "records": records})).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Exactly once
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_batch_sent_three_times_counts_once() {
    let w = world().await;
    for s in ["sub_a", "sub_b", "sub_c"] {
        w.subscribe("c1", s, "payg", SubscriptionStatus::Active)
            .await;
    }
    let body = batch("b-seq", &["sub_a", "sub_b", "sub_c"], 30, w.now);
    let mut dupes = Vec::new();
    for _ in 0..3 {
        let (status, v) = w.post(&body, GATEWAY_SECRET).await;
        assert_eq!(status, 200, "{v}");
        dupes.push(v["duplicate"].as_bool().unwrap());
    }
    assert_eq!(dupes, [false, true, true]);
    for s in ["sub_a", "sub_b", "sub_c"] {
        assert_eq!(w.total(s).await, 10, "{s}");
    }
}

#[tokio::test]
async fn a_batch_sent_three_times_concurrently_counts_once() {
    let w = world().await;
    for s in ["sub_a", "sub_b"] {
        w.subscribe("c1", s, "payg", SubscriptionStatus::Active)
            .await;
    }
    let body = batch("b-conc", &["sub_a", "sub_b"], 40, w.now);
    let answers = join_all((0..3).map(|_| w.post(&body, GATEWAY_SECRET))).await;
    let fresh = answers
        .iter()
        .inspect(|(status, v)| assert_eq!(*status, 200, "{v}"))
        .filter(|(_, v)| v["duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "exactly one delivery counts: {answers:?}");
    assert_eq!(w.total("sub_a").await, 20);
    assert_eq!(w.total("sub_b").await, 20);
}

#[tokio::test]
async fn a_reused_batch_id_with_other_content_is_409_and_counts_nothing() {
    let w = world().await;
    w.subscribe("c1", "sub_a", "payg", SubscriptionStatus::Active)
        .await;
    let first = batch("b-reuse", &["sub_a"], 10, w.now);
    let (status, v) = w.post(&first, GATEWAY_SECRET).await;
    assert_eq!(
        (status, v["duplicate"].as_bool()),
        (200, Some(false)),
        "{v}"
    );
    // A gateway whose counter restarted: same id, other records (5 of them, other ids).
    let other: Vec<Value> = (0..5)
        .map(|i| {
            json!({"id": format!("x-{i}"), "subscription_id": "sub_a",
                   "timestamp": w.now.to_rfc3339(), "meter": "api_calls", "value": 7})
        })
        .collect();
    let body = serde_json::to_vec(&json!({"batch_id": "b-reuse", "records": other})).unwrap();
    w.store.reset();
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "batch_id_reused");
    assert_eq!(v["error"]["field"], "batch_id");
    assert_eq!(w.store.counts().0, 0, "nothing written");
    assert_eq!(w.total("sub_a").await, 10, "nothing counted");
    // The same records with only one value changed are other content too.
    let mut changed: Value = serde_json::from_slice(&first).unwrap();
    changed["records"][3]["value"] = 2.into();
    let (status, _) = w
        .post(&serde_json::to_vec(&changed).unwrap(), GATEWAY_SECRET)
        .await;
    assert_eq!(status, 409);
    // The identical batch, re-formatted (keys reordered, `Z` for `+00:00`, no `operation`),
    // is still a duplicate.
    let mut same: Value = serde_json::from_slice(&first).unwrap();
    for r in same["records"].as_array_mut().unwrap() {
        let ts = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap()).unwrap();
        r["timestamp"] = ts
            .with_timezone(&Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into();
        r.as_object_mut().unwrap().remove("operation");
    }
    let (status, v) = w
        .post(&serde_json::to_vec(&same).unwrap(), GATEWAY_SECRET)
        .await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(w.total("sub_a").await, 10);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_batch_id_with_different_content_count_one() {
    let w = world().await;
    w.subscribe("c1", "sub_a", "payg", SubscriptionStatus::Active)
        .await;
    let a = batch("b-race", &["sub_a"], 10, w.now);
    let mut b: Value = serde_json::from_slice(&a).unwrap();
    b["records"][0]["value"] = 100.into();
    let b = serde_json::to_vec(&b).unwrap();
    let (ra, rb) = tokio::join!(w.post(&a, GATEWAY_SECRET), w.post(&b, GATEWAY_SECRET));
    let mut statuses = [ra.0, rb.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{ra:?} {rb:?}");
    let total = w.total("sub_a").await;
    assert!(
        total == 10 || total == 109,
        "one of the two counted: {total}"
    );
}

/// `n` records of one call each with seqs `from..from + n`, from source `source`.
fn sourced(id: &str, source: &str, sub: &str, from: u64, n: u64, now: Timestamp) -> Vec<u8> {
    let records: Vec<Value> = (from..from + n)
        .map(|seq| {
            json!({"id": format!("r{seq}"), "subscription_id": sub, "seq": seq,
                   "timestamp": (now - Duration::seconds(seq as i64 % 600)).to_rfc3339(),
                   "meter": "api_calls", "value": 1})
        })
        .collect();
    serde_json::to_vec(&json!({"batch_id": id, "source": source, "records": records})).unwrap()
}

#[tokio::test]
async fn re_batched_records_of_a_source_count_once_at_one_write_request_a_batch() {
    let w = world().await;
    for s in ["sub_a", "sub_b"] {
        w.subscribe("c1", s, "payg", SubscriptionStatus::Active)
            .await;
    }
    // Without a source, the case: 10 records re-sent under a new batch id count twice
    // (the batch path's contract is per batch).
    let (s1, _) = w
        .post(&batch("plain-1", &["sub_b"], 10, w.now), GATEWAY_SECRET)
        .await;
    let (s2, _) = w
        .post(&batch("plain-2", &["sub_b"], 10, w.now), GATEWAY_SECRET)
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(w.total("sub_b").await, 20);

    // With a source: records 1–10 counted; the answer is lost; the gateway re-forms its
    // buffer (1–10 again plus 11–15) into a new batch: only 11–15 count.
    w.store.reset();
    let (status, v) = w
        .post(
            &sourced("gw1-1", "gw-1", "sub_a", 1, 10, w.now),
            GATEWAY_SECRET,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["already_counted"].as_u64()),
        (Some(10), Some(0))
    );
    let (requests, items, reads) = w.store.counts();
    eprintln!(
        "batch with a source: {requests} write request(s) carrying {items} items; {reads} reads"
    );
    assert_eq!(requests, 1, "one TransactWriteItems per batch");
    assert_eq!(items, 3, "the claim, the mark, one bucket");
    w.store.reset();
    let (status, v) = w
        .post(
            &sourced("gw1-2", "gw-1", "sub_a", 1, 15, w.now),
            GATEWAY_SECRET,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(
        (v["accepted"].as_u64(), v["already_counted"].as_u64()),
        (Some(5), Some(10))
    );
    assert_eq!(w.store.counts().0, 1);
    assert_eq!(w.total("sub_a").await, 15);
    // Only old records: counted nothing, the mark stays; one write request (the claim).
    w.store.reset();
    let (status, v) = w
        .post(
            &sourced("gw1-3", "gw-1", "sub_a", 3, 5, w.now),
            GATEWAY_SECRET,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["already_counted"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(w.store.counts().0, 1);
    assert_eq!(w.total("sub_a").await, 15);
    // Another source has its own mark.
    let (_, v) = w
        .post(
            &sourced("gw2-1", "gw-2", "sub_a", 1, 4, w.now),
            GATEWAY_SECRET,
        )
        .await;
    assert_eq!(v["accepted"], 4, "{v}");
    assert_eq!(w.total("sub_a").await, 19);
    // The same re-formed batch sent by two instances at once: counted once.
    let body = sourced("gw1-4", "gw-1", "sub_a", 10, 11, w.now);
    let body2 = sourced("gw1-5", "gw-1", "sub_a", 10, 11, w.now);
    let (a, b) = tokio::join!(
        w.post(&body, GATEWAY_SECRET),
        w.post(&body2, GATEWAY_SECRET)
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(w.total("sub_a").await, 19 + 5, "seqs 16–20 once");
}

#[tokio::test]
async fn seq_and_source_go_together() {
    let w = world().await;
    w.subscribe("c1", "sub_a", "payg", SubscriptionStatus::Active)
        .await;
    let mut no_seq: Value =
        serde_json::from_slice(&sourced("s1", "gw", "sub_a", 1, 3, w.now)).unwrap();
    no_seq["records"][1].as_object_mut().unwrap().remove("seq");
    let (status, v) = w
        .post(&serde_json::to_vec(&no_seq).unwrap(), GATEWAY_SECRET)
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "records[1].seq");
    let mut no_source: Value =
        serde_json::from_slice(&sourced("s2", "gw", "sub_a", 1, 3, w.now)).unwrap();
    no_source.as_object_mut().unwrap().remove("source");
    let (status, v) = w
        .post(&serde_json::to_vec(&no_source).unwrap(), GATEWAY_SECRET)
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "records[0].seq");
    let mut dup: Value =
        serde_json::from_slice(&sourced("s3", "gw", "sub_a", 1, 3, w.now)).unwrap();
    dup["records"][2]["seq"] = 1.into();
    let (status, v) = w
        .post(&serde_json::to_vec(&dup).unwrap(), GATEWAY_SECRET)
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "records[2].seq");
    assert_eq!(w.total("sub_a").await, 0);
}

#[tokio::test]
async fn a_retry_after_an_injected_failure_counts_once() {
    let w = world().await;
    w.subscribe("c1", "sub_q", "free", SubscriptionStatus::Active)
        .await;

    // 1. DynamoDB applied the batch but its answer was lost. The function's own retry finds
    //    the claim; so does the gateway's re-send.
    w.store.fail_next(&[Fault::After]);
    let body = batch("b-lost", &["sub_q"], 50, w.now);
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(w.total("sub_q").await, 50);
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(w.total("sub_q").await, 50);

    // 2. DynamoDB stays unavailable for every attempt: 503, nothing written; the gateway's
    //    retry counts the batch.
    w.store.fail_next(&[Fault::Before; usage::MAX_ATTEMPTS]);
    let body = batch("b-never", &["sub_q"], 30, w.now);
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(
        w.total("sub_q").await,
        50,
        "nothing of a failed commit is written"
    );
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!(
        (status, v["duplicate"].as_bool()),
        (200, Some(false)),
        "{v}"
    );
    assert_eq!(w.total("sub_q").await, 80);
    assert_eq!(w.count("QuotaThreshold"), 1, "80 % of 100 reached once");

    // 3. Failure between two writes: the batch commit succeeds, the 100 % threshold claim
    //    after it fails. The retry adds nothing and publishes the threshold once.
    w.store.fail_next(&[Fault::Pass, Fault::Before]);
    let body = batch("b-between", &["sub_q"], 25, w.now);
    let (status, _) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!(status, 503);
    assert_eq!(w.count("QuotaThreshold"), 1);
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(w.total("sub_q").await, 105);
    assert_eq!(w.count("QuotaThreshold"), 2, "100 % published by the retry");
    assert_eq!(v["subscriptions"][0]["state"], "quota_exceeded");
    assert_eq!(v["subscriptions"][0]["quota"]["used"], 105);
}

// ---------------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_thousand_records_over_ten_subscriptions_is_one_write_request() {
    let w = world().await;
    let subs: Vec<String> = (0..10).map(|i| format!("sub_{i:02}")).collect();
    for s in &subs {
        w.subscribe("c1", s, "payg", SubscriptionStatus::Active)
            .await;
    }
    let refs: Vec<&str> = subs.iter().map(String::as_str).collect();
    let body = batch("b-1000", &refs, 1000, w.now);
    w.store.reset();
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 1000);
    let (requests, items, reads) = w.store.counts();
    eprintln!(
        "1,000 records / 10 subscriptions / 1 hour: {requests} DynamoDB write request(s) \
         carrying {items} items; {reads} read requests"
    );
    assert_eq!(requests, 1, "one TransactWriteItems");
    assert_eq!(
        items, 11,
        "the claim + one ADD per (subscription, meter, hour)"
    );
    assert!(requests <= 11);
    assert_eq!(w.usage.write_requests(), 1);
    for s in &subs {
        assert_eq!(w.total(s).await, 100);
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_input_is_refused_with_the_field_and_writes_nothing() {
    let w = world().await;
    w.subscribe("c1", "sub_a", "payg", SubscriptionStatus::Active)
        .await;
    w.store.reset();
    let good = batch("b-good", &["sub_a"], 3, w.now);

    let (status, v) = w.post(&good, "wrong-secret").await;
    assert_eq!(status, 401, "{v}");

    let (status, v) = w
        .post(b"{\"batch_id\": \"x\", \"records\": [", GATEWAY_SECRET)
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("body")),
        "{v}"
    );

    let big = vec![b' '; tollgate_domain::usage::MAX_BODY_BYTES + 1];
    let (status, v) = w.post(&big, GATEWAY_SECRET).await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (413, Some("body")),
        "{v}"
    );

    let ts = (w.now - Duration::days(4)).to_rfc3339();
    let bad_ts = json!({"batch_id": "b-ts", "records": [
        {"id": "ok", "subscription_id": "sub_a", "timestamp": w.now.to_rfc3339(), "meter": "api_calls"},
        {"id": "old", "subscription_id": "sub_a", "timestamp": ts, "meter": "api_calls"},
        {"id": "soon", "subscription_id": "sub_a", "timestamp": (w.now + Duration::hours(1)).to_rfc3339(), "meter": "api_calls"}
    ]});
    let (status, v) = w
        .post(&serde_json::to_vec(&bad_ts).unwrap(), GATEWAY_SECRET)
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "records[1].timestamp");
    assert_eq!(v["error"]["details"][1]["index"], 2);
    assert!(
        v["error"]["details"][1]["message"]
            .as_str()
            .unwrap()
            .contains("future")
    );

    let bad_meter = json!({"batch_id": "b-m", "records": [
        {"id": "m", "subscription_id": "sub_a", "timestamp": w.now.to_rfc3339(), "meter": "calls"}
    ]});
    let (status, v) = w
        .post(&serde_json::to_vec(&bad_meter).unwrap(), GATEWAY_SECRET)
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("records[0].meter")),
        "{v}"
    );

    let (requests, _, _) = w.store.counts();
    assert_eq!(requests, 0, "no refused batch writes anything");
    for id in ["b-ts", "b-m", "x"] {
        assert!(
            !w.store
                .inner
                .is_claimed(ClaimScope::UsageBatch, id)
                .await
                .unwrap()
        );
    }
    assert_eq!(w.total("sub_a").await, 0);
}

#[tokio::test]
async fn records_of_unknown_and_inactive_subscriptions_are_counted_as_rejected() {
    let w = world().await;
    w.subscribe("c1", "sub_ok", "payg", SubscriptionStatus::Active)
        .await;
    w.subscribe("c1", "sub_off", "payg", SubscriptionStatus::Suspended)
        .await;
    let body = batch("b-mixed", &["sub_ok", "sub_off", "sub_nobody"], 9, w.now);
    let (status, v) = w.post(&body, GATEWAY_SECRET).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(3), Some(6))
    );
    let reasons: Vec<&str> = v["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == "unknown_subscription")
            .count(),
        3
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == "inactive_subscription")
            .count(),
        3
    );
    assert_eq!(w.total("sub_ok").await, 3);
    assert_eq!(w.total("sub_off").await, 0);
    let states: Vec<(&str, &str)> = v["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["subscription_id"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("sub_off", "suspended"), ("sub_ok", "ok")]);
}

// ---------------------------------------------------------------------------------------------
// Quota
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn quota_thresholds_publish_once_per_period_and_the_key_gets_429() {
    let w = world().await;
    let key = w
        .subscribe("c1", "sub_f", "free", SubscriptionStatus::Active)
        .await;
    let wr = &w;
    let post = |id: &'static str, n: usize| {
        let body = batch(id, &["sub_f"], n, wr.now);
        async move { wr.post(&body, GATEWAY_SECRET).await }
    };
    let (_, v) = post("q1", 79).await;
    assert_eq!(v["subscriptions"][0]["state"], "ok");
    assert_eq!(w.count("QuotaThreshold"), 0);
    post("q2", 1).await;
    assert_eq!(w.count("QuotaThreshold"), 1);
    assert_eq!(w.entitlement(&key).await["allow"], true);
    let (_, v) = post("q3", 25).await;
    assert_eq!(v["subscriptions"][0]["state"], "quota_exceeded");
    assert_eq!(v["subscriptions"][0]["quota"]["used"], 105);
    w.store.reset();
    post("q4", 1).await;
    assert_eq!(w.count("QuotaThreshold"), 2, "80 % and 100 %, once each");
    assert_eq!(
        w.store.counts().0,
        1,
        "past the thresholds, with the keys gated, a batch is one write request again"
    );
    let percents: Vec<u64> = w
        .capture
        .entries()
        .iter()
        .map(|e| e.detail["percent"].as_u64().unwrap())
        .collect();
    assert_eq!(percents, [80, 100]);
    let e = w.entitlement(&key).await;
    assert_eq!(
        (
            e["allow"].as_bool(),
            e["reason"].as_str(),
            e["status"].as_u64()
        ),
        (Some(false), Some("quota_exceeded"), Some(429)),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Prepaid credit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn prepaid_credit_end_to_end_402_alerts_and_top_up() {
    let w = world().await;
    let key = w
        .subscribe("dev-1", "sub_p", "credits", SubscriptionStatus::Active)
        .await;

    // Never bought: refused with 402 from the start.
    let e = w.entitlement(&key).await;
    assert_eq!(
        (e["reason"].as_str(), e["status"].as_u64()),
        (Some("no_credit"), Some(402)),
        "{e}"
    );

    // Buy a $10 pack; the webhook's re-delivery changes nothing.
    assert_eq!(
        w.buy("dev-1", "cs_pack_1", 1000).await,
        PurchaseOutcome::Applied { balance: 1000 }
    );
    assert_eq!(
        w.buy("dev-1", "cs_pack_1", 1000).await,
        PurchaseOutcome::AlreadyApplied { balance: 1000 }
    );
    let e = w.entitlement(&key).await;
    assert_eq!(e["allow"], true, "{e}");
    assert_eq!(e["rate_limit_per_minute"], 300);

    // The hot path is one read.
    w.store.reset();
    w.entitlement(&key).await;
    assert_eq!(
        w.store.counts().2,
        2,
        "one GetItem per entitlement check (path, header)"
    );

    // $9.99 of usage (999 calls at 1 cent): CreditsLow, still allowed.
    let (_, v) = w
        .post(&batch("p1", &["sub_p"], 999, w.now), GATEWAY_SECRET)
        .await;
    assert_eq!(v["subscriptions"][0]["credit_balance"], 1, "{v}");
    assert_eq!(v["subscriptions"][0]["state"], "ok");
    assert_eq!(w.entitlement(&key).await["allow"], true);

    // $0.02 more: the balance stops at the floor (0) and the key gets 402.
    let (_, v) = w
        .post(&batch("p2", &["sub_p"], 2, w.now), GATEWAY_SECRET)
        .await;
    assert_eq!(v["subscriptions"][0]["state"], "no_credit", "{v}");
    assert_eq!(w.balance("dev-1").await, 0);
    let e = w.entitlement(&key).await;
    assert_eq!(
        (
            e["allow"].as_bool(),
            e["reason"].as_str(),
            e["status"].as_u64()
        ),
        (Some(false), Some("no_credit"), Some(402)),
        "{e}"
    );
    w.store.reset();
    w.entitlement(&key).await;
    assert_eq!(w.store.counts().2, 2, "the 402 is one read per check too");

    // The authorizer says the same, with the reason in its context.
    let authorizer = authorizer::Authorizer::new(
        w.store.clone(),
        w.catalog.clone(),
        Arc::new(FixedClock(w.now)),
        "x-api-key",
    );
    let rest = json!({"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:1:api/prod/GET/x",
                      "headers": {"X-Api-Key": key}});
    let a = authorizer.authorize(&rest).await.unwrap();
    assert_eq!(a["policyDocument"]["Statement"][0]["Effect"], "Deny", "{a}");
    assert_eq!(a["context"]["reason"], "no_credit");
    assert_eq!(a["context"]["status"], 402);

    // More usage after depletion: counted, no new alert.
    w.post(&batch("p3", &["sub_p"], 5, w.now), GATEWAY_SECRET)
        .await;
    assert_eq!(w.count("CreditsLow"), 1);
    assert_eq!(w.count("CreditsDepleted"), 1);
    assert_eq!(w.total("sub_p").await, 1006);

    // Another pack: allowed on the very next check.
    w.buy("dev-1", "cs_pack_2", 1000).await;
    let e = w.entitlement(&key).await;
    assert_eq!(e["allow"], true, "{e}");
    let a = authorizer.authorize(&rest).await.unwrap();
    assert_eq!(
        a["policyDocument"]["Statement"][0]["Effect"], "Allow",
        "{a}"
    );
    assert_eq!(a["context"]["subscription_id"], "sub_p");
    assert_eq!(a["context"]["product_id"], "credits");
    assert_eq!(a["context"]["rate_limit_per_minute"], 300);
    assert_eq!(w.balance("dev-1").await, 1000);
    // A missing key is 401 (REST authorizers fail with exactly "Unauthorized").
    let err = authorizer
        .authorize(&json!({"type": "REQUEST", "methodArn": "x", "headers": {}}))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Unauthorized");
}

#[tokio::test]
async fn concurrent_batches_never_take_the_balance_below_the_floor() {
    let w = world_with(CreditPolicy {
        floor: -50,
        low_threshold: 200,
    })
    .await;
    w.subscribe("dev-2", "sub_x", "credits", SubscriptionStatus::Active)
        .await;
    w.subscribe("dev-2", "sub_y", "credits", SubscriptionStatus::Active)
        .await;
    w.buy("dev-2", "cs_x", 100).await;
    // Ten batches of 30 calls (30 cents each) at once: 300 cents of usage on 100 of credit.
    let bodies: Vec<Vec<u8>> = (0..10)
        .map(|i| batch(&format!("c{i}"), &["sub_x", "sub_y"], 30, w.now))
        .collect();
    let answers = join_all(bodies.iter().map(|b| w.post(b, GATEWAY_SECRET))).await;
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
    }
    let account = w
        .store
        .inner
        .get_credit_account(&ConsumerId::parse("dev-2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.balance, -50, "down to the floor and not below");
    assert_eq!(account.drawn, 150);
    assert_eq!(account.uncovered, 150);
    assert_eq!(
        w.total("sub_x").await + w.total("sub_y").await,
        300,
        "all usage counted"
    );
    assert_eq!(w.count("CreditsLow"), 1);
    assert_eq!(w.count("CreditsDepleted"), 1);
}

#[tokio::test]
async fn an_operator_adjustment_is_not_lost_by_the_next_draw_down() {
    let w = world().await;
    w.subscribe("dev-3", "sub_z", "credits", SubscriptionStatus::Active)
        .await;
    w.buy("dev-3", "cs_z", 1000).await;
    // An operator's correction with the plain ADD (no version read)...
    w.store
        .inner
        .commit(vec![Write::AdjustCredit {
            consumer_id: ConsumerId::parse("dev-3").unwrap(),
            delta: 500,
            floor: None,
            at: w.now,
        }])
        .await
        .unwrap();
    // ...then usage, which writes the whole account under its version.
    let (status, v) = w
        .post(&batch("adj", &["sub_z"], 10, w.now), GATEWAY_SECRET)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(w.balance("dev-3").await, 1490);
}

// ---------------------------------------------------------------------------------------------
// The check path: read only, and only a key is a credential
// ---------------------------------------------------------------------------------------------

/// The authorizer's IAM role may only read (`template.yaml`): the first check of a prepaid key
/// whose gates were never written (no purchase yet) must answer from reads alone, and so must
/// every later check, through the authorizer and `GET /entitlements` alike.
#[tokio::test]
async fn the_check_path_never_writes_even_for_a_new_prepaid_key() {
    let w = world().await;
    let key = w
        .subscribe("dev-9", "sub_n", "credits", SubscriptionStatus::Active)
        .await;
    let authorizer = authorizer::Authorizer::new(
        w.store.clone(),
        w.catalog.clone(),
        Arc::new(FixedClock(w.now)),
        "x-api-key",
    );
    let rest = |k: &str| {
        json!({"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:1:api/prod/GET/x",
               "headers": {"X-Api-Key": k}})
    };
    let http = |k: &str| json!({"version": "2.0", "headers": {"x-api-key": k}});

    w.store.reset();
    let a = authorizer.authorize(&rest(&key)).await.unwrap();
    assert_eq!(a["context"]["reason"], "no_credit", "{a}");
    let a = authorizer.authorize(&http(&key)).await.unwrap();
    assert_eq!(a["isAuthorized"], false);
    assert_eq!(w.entitlement(&key).await["reason"], "no_credit");
    assert_eq!(w.store.counts().0, 0, "no write request on the check path");

    w.buy("dev-9", "cs_n_1", 1000).await;
    w.store.reset();
    let a = authorizer.authorize(&rest(&key)).await.unwrap();
    assert_eq!(
        a["policyDocument"]["Statement"][0]["Effect"], "Allow",
        "{a}"
    );
    assert_eq!(w.entitlement(&key).await["allow"], true);
    assert_eq!(w.store.counts().0, 0, "no write request on the check path");
    assert_eq!(
        w.store.counts().2,
        3,
        "one read per check (authorizer, path, header)"
    );
}

/// The table stores SHA-256(key); that hash must never work as a key. Refused on both paths
/// without reading the table.
#[tokio::test]
async fn a_bare_hash_is_refused_by_the_route_and_the_authorizer() {
    let w = world().await;
    let key = w
        .subscribe("c1", "sub_h", "free", SubscriptionStatus::Active)
        .await;
    assert_eq!(w.entitlement(&key).await["allow"], true);
    let hash = ApiKeyHash::of_key(&key).as_str().to_string();
    w.store.reset();
    for (path, header) in [
        (format!("/entitlements/{hash}"), None),
        ("/entitlements".to_string(), Some(hash.as_str())),
        ("/entitlements".to_string(), None),
        (format!("/entitlements/{}", key.to_uppercase()), None),
    ] {
        let (status, v) = w.entitlement_at(&path, header).await;
        assert_eq!(status, 400, "{path} {header:?}: {v}");
        let field = if path == "/entitlements" {
            "x-api-key"
        } else {
            "key"
        };
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let authorizer = authorizer::Authorizer::new(
        w.store.clone(),
        w.catalog.clone(),
        Arc::new(FixedClock(w.now)),
        "x-api-key",
    );
    let rest = json!({"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:1:api/prod/GET/x",
                      "headers": {"X-Api-Key": hash}});
    let a = authorizer.authorize(&rest).await.unwrap();
    assert_eq!(a["policyDocument"]["Statement"][0]["Effect"], "Deny", "{a}");
    let a = authorizer
        .authorize(&json!({"version": "2.0", "headers": {"x-api-key": hash}}))
        .await
        .unwrap();
    assert_eq!(a["isAuthorized"], false, "{a}");
    assert_eq!(w.store.counts(), (0, 0, 0), "junk never reaches DynamoDB");
}
