//! The usage function: `POST /usage` (the gateway's usage batches) and
//! `GET /entitlements/{key}` (may this key call), both behind the gateway's bearer secret.
//!
//! One batch is ONE DynamoDB transaction: the batch's claim, one `ADD` per
//! (subscription, meter, hour) bucket, and the new credit account of each prepaid consumer it
//! draws from. So a batch counts all or nothing; a re-sent, concurrent or retried batch finds
//! its claim and counts nothing more (the claim and the effect cannot be split: OpenMeter
//! #5118). After the commit come the reads for the answer and, rarely, small single writes:
//! a QuotaThreshold claim when a threshold is first reached, and key gates. Those are
//! re-done by a retry of the batch, which sees the claim and skips straight to them.
//!
//! Design and limits: `docs/usage.md`.

use futures::future::join_all;
use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_app::credit::{
    CreditStore, MAX_COMMIT_ITEMS, apply_gate_writes, credit_gate_writes, gate_subscription_keys,
    load_account, prepaid_keys, stored_version,
};
use tollgate_app::error::json_response;
use tollgate_app::{ApiError, FieldError, Secret};
use tollgate_domain::Catalog;
use tollgate_domain::credit::{CreditAccount, CreditPolicy, prepaid_usage};
use tollgate_domain::entitlement::GateFact;
use tollgate_domain::events::DomainEvent;
use tollgate_domain::ids::{ConsumerId, MeterId, ProductId, SubscriptionId};
use tollgate_domain::ports::{ClaimScope, EventPublisher, StoreError, Write};
use tollgate_domain::subscription::Subscription;
use tollgate_domain::time::{Clock, Duration, Timestamp, hour_start};
use tollgate_domain::usage::{
    self, BatchError, IngestWindow, MAX_BODY_BYTES, Rejection, UsageBatch, UsageState,
};

/// Attempts at committing one batch. A loser of a race (another batch of the same consumer's
/// credit account, or DynamoDB cancelling one of two transactions on one bucket) re-plans;
/// each round has a winner, so this covers well over a dozen concurrent batches of one
/// consumer before the gateway sees a 503 and retries later.
pub const MAX_ATTEMPTS: usize = 16;

/// The usage function's dependencies, built once per Lambda instance.
pub struct Usage {
    store: Arc<dyn CreditStore>,
    publisher: Arc<dyn EventPublisher>,
    catalog: Arc<Catalog>,
    policy: CreditPolicy,
    window: IngestWindow,
    clock: Arc<dyn Clock>,
    gateway_secret: Secret,
    /// Write requests sent to DynamoDB by this instance (each commit is one request).
    write_requests: AtomicU64,
}

/// One record counted as rejected although the batch was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRecord {
    pub index: usize,
    pub id: String,
    pub subscription_id: SubscriptionId,
    pub reason: Rejection,
    pub message: &'static str,
}

/// A subscription's quota in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaView {
    pub meter: MeterId,
    pub limit: u64,
    pub used: u64,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
}

/// One subscription the batch touched, after the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionUsage {
    pub subscription_id: SubscriptionId,
    pub product_id: ProductId,
    pub state: UsageState,
    /// Units in the billing period `period_start`..`period_end` (`usage::billing_period`), per
    /// meter the product bills or limits.
    pub usage: BTreeMap<MeterId, u64>,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaView>,
    /// Prepaid balance of the consumer, minor units (prepaid products only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_balance: Option<i64>,
}

/// The answer to `POST /usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestAnswer {
    pub batch_id: String,
    /// The batch was counted before (a re-send or a concurrent duplicate): nothing was added.
    pub duplicate: bool,
    /// Records counted by this delivery.
    pub accepted: usize,
    /// Records not counted (unknown or inactive subscription, meter not in the product).
    pub rejected: usize,
    /// Records of a batch with a `source` whose `seq` was at or below the source's mark:
    /// counted by an earlier batch, not counted again.
    pub already_counted: usize,
    pub rejections: Vec<RejectedRecord>,
    pub subscriptions: Vec<SubscriptionUsage>,
}

/// What one attempt at a batch will write.
struct Plan {
    writes: Vec<Write>,
    /// Gate writes that did not fit the transaction (applied right after it).
    overflow_gates: Vec<Write>,
    events: Vec<DomainEvent>,
    accepted: usize,
    /// Records at or below their source's mark (counted by an earlier batch).
    already_counted: usize,
    rejections: Vec<RejectedRecord>,
    subscriptions: BTreeMap<SubscriptionId, Option<Subscription>>,
    /// Credit accounts as committed.
    accounts: BTreeMap<ConsumerId, CreditAccount>,
}

impl Usage {
    pub fn new(
        store: Arc<dyn CreditStore>,
        publisher: Arc<dyn EventPublisher>,
        catalog: Arc<Catalog>,
        policy: CreditPolicy,
        window: IngestWindow,
        clock: Arc<dyn Clock>,
        gateway_secret: Secret,
    ) -> Self {
        Self {
            store,
            publisher,
            catalog,
            policy,
            window,
            clock,
            gateway_secret,
            write_requests: AtomicU64::new(0),
        }
    }

    /// Write requests (commits) this instance has sent.
    pub fn write_requests(&self) -> u64 {
        self.write_requests.load(Ordering::Relaxed)
    }

    /// The Lambda entry point: every failure becomes a JSON answer.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let resp = match self.route(&req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::Text(body)))
    }

    async fn route(&self, req: &Request) -> Result<Response<String>, ApiError> {
        let ok = self
            .gateway_secret
            .with(|secret| tollgate_app::auth::bearer_matches(req.headers(), secret))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !ok {
            return Err(ApiError::Unauthorized);
        }
        let path = req.uri().path().trim_end_matches('/');
        match (req.method(), path) {
            (&Method::POST, "/usage") => {
                let body: &[u8] = req.body().as_ref();
                match self.ingest(body).await {
                    Ok(answer) => Ok(json_response(StatusCode::OK, &answer)),
                    Err(IngestError::Batch(e)) => Ok(batch_error_response(&e)),
                    Err(IngestError::Api(e)) => Err(e),
                }
            }
            // The key in a header keeps it out of URLs and access logs; in the path for
            // gateways that can only build a URL.
            (&Method::GET, "/entitlements") => {
                let key = req
                    .headers()
                    .get(ENTITLEMENT_KEY_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                self.entitlement(ENTITLEMENT_KEY_HEADER, key).await
            }
            (&Method::GET, p) if p.starts_with("/entitlements/") => {
                self.entitlement("key", &p["/entitlements/".len()..]).await
            }
            (_, "/usage") => Err(ApiError::bad_request("method", "use POST /usage")),
            _ => Err(ApiError::not_found(format!("route {path}"))),
        }
    }

    /// `GET /entitlements`: the one-read check of a well-formed key. Anything else, a bare
    /// SHA-256 included (the table's copy is not a credential), is a 400 naming `field`.
    async fn entitlement(&self, field: &str, key: &str) -> Result<Response<String>, ApiError> {
        let hash = tollgate_app::entitlement::key_hash(key).ok_or_else(|| {
            ApiError::bad_request(field, "must be an API key (tg_ and 64 lowercase hex)")
        })?;
        let e = tollgate_app::entitlement::check(
            self.store.as_ref(),
            &self.catalog,
            &hash,
            self.clock.now(),
        )
        .await?;
        Ok(json_response(StatusCode::OK, &e))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.write_requests.fetch_add(1, Ordering::Relaxed);
        self.store.commit(writes).await
    }

    /// Validates, counts (exactly once) and answers one batch.
    pub async fn ingest(&self, body: &[u8]) -> Result<IngestAnswer, IngestError> {
        let now = self.clock.now();
        let batch = usage::parse_batch(body, &self.catalog, now, self.window)
            .map_err(IngestError::Batch)?;
        let digest = batch.digest();
        if let Some(claimed) = self
            .store
            .claim_digest(ClaimScope::UsageBatch, &batch.batch_id)
            .await?
        {
            return self.answer_claimed(&batch, &digest, claimed, now).await;
        }
        let mut last_err = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let plan = self.plan(&batch, &digest, now).await?;
            let items = plan.writes.len();
            match self.commit(plan.writes.clone()).await {
                Ok(()) => {
                    tracing::info!(
                        batch_id = %batch.batch_id,
                        records = batch.records.len(),
                        accepted = plan.accepted,
                        rejected = plan.rejections.len(),
                        items,
                        "usage batch committed in one transaction"
                    );
                    return self.finish(&batch, plan, now).await;
                }
                // The claim exists: a concurrent or earlier delivery counted this batch id.
                Err(StoreError::Conflict { index: 0, .. }) => {
                    let claimed = self
                        .store
                        .claim_digest(ClaimScope::UsageBatch, &batch.batch_id)
                        .await?
                        .unwrap_or(None);
                    return self.answer_claimed(&batch, &digest, claimed, now).await;
                }
                // A credit account moved (another batch of the same consumer), or DynamoDB
                // cancelled us for a concurrent transaction on one of our items: plan again.
                Err(e @ StoreError::Conflict { .. }) | Err(e @ StoreError::Unavailable(_)) => {
                    last_err = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IngestError::Api(ApiError::Unavailable(format!(
            "batch {} could not be committed: {}",
            batch.batch_id,
            last_err.map_or_else(String::new, |e| e.to_string())
        ))))
    }

    async fn read_subscriptions(
        &self,
        batch: &UsageBatch,
    ) -> Result<BTreeMap<SubscriptionId, Option<Subscription>>, StoreError> {
        let ids: BTreeSet<&SubscriptionId> =
            batch.records.iter().map(|r| &r.subscription_id).collect();
        let reads = join_all(ids.iter().map(|id| self.store.get_subscription(id))).await;
        ids.into_iter()
            .zip(reads)
            .map(|(id, r)| r.map(|s| (id.clone(), s)))
            .collect()
    }

    /// A batch id claimed before: the same content is a duplicate (200, nothing added), other
    /// content is a reused id (409 naming `batch_id`, nothing counted). A claim written before
    /// digests were kept (`None`) is taken as the same content.
    async fn answer_claimed(
        &self,
        batch: &UsageBatch,
        digest: &str,
        claimed: Option<String>,
        now: Timestamp,
    ) -> Result<IngestAnswer, IngestError> {
        match claimed {
            Some(d) if d != digest => {
                tracing::warn!(batch_id = %batch.batch_id, "batch_id reused with other content: refused");
                Err(IngestError::Batch(BatchError::ReusedId {
                    batch_id: batch.batch_id.clone(),
                }))
            }
            _ => self.answer_duplicate(batch, now).await,
        }
    }

    async fn plan(
        &self,
        batch: &UsageBatch,
        digest: &str,
        now: Timestamp,
    ) -> Result<Plan, IngestError> {
        let subscriptions = self.read_subscriptions(batch).await?;
        let mut admitted = Vec::with_capacity(batch.records.len());
        let mut rejections = Vec::new();
        // Per-record exactly-once (`docs/usage.md`): a record at or below its source's mark was
        // counted by an earlier batch; the mark moves to the batch's highest seq in the same
        // transaction, conditioned on the mark read here (a concurrent batch of the source
        // makes this attempt conflict and plan again).
        let mark = match &batch.source {
            Some(source) => Some(self.store.source_mark(source).await?),
            None => None,
        };
        let mut already_counted = 0;
        for r in &batch.records {
            if let (Some(Some(m)), Some(seq)) = (mark, r.seq)
                && seq <= m
            {
                already_counted += 1;
                continue;
            }
            let sub = subscriptions
                .get(&r.subscription_id)
                .and_then(Option::as_ref);
            let product = sub.and_then(|s| self.catalog.product(s.product_id.as_str()));
            // Judged at the record's own time: a record from before a cancel still counts.
            match usage::admit(sub, product, &r.meter, r.timestamp) {
                Ok(()) => admitted.push(r),
                Err(reason) => rejections.push(RejectedRecord {
                    index: r.index,
                    id: r.id.clone(),
                    subscription_id: r.subscription_id.clone(),
                    reason,
                    message: reason.reason(),
                }),
            }
        }
        // Buckets end at every period / quota-window boundary inside their hour, so each
        // window is a whole number of buckets (to the second).
        let buckets = usage::aggregate_by(admitted.iter().copied(), |r| {
            match subscriptions
                .get(&r.subscription_id)
                .and_then(Option::as_ref)
            {
                Some(sub) => usage::bucket_start(
                    sub,
                    self.catalog.product(sub.product_id.as_str()),
                    r.timestamp,
                ),
                None => hour_start(r.timestamp),
            }
        });
        let totals = usage::totals_by_meter(&buckets);

        // The claim lives as long as a re-send of this batch could still pass validation: a
        // record is refused once older than the late window, and none is newer than
        // now + the future allowance.
        let claim_expires = now + self.window.late + self.window.future + Duration::hours(1);
        let mut writes = vec![Write::ClaimContent {
            scope: ClaimScope::UsageBatch,
            id: batch.batch_id.clone(),
            digest: digest.to_string(),
            expires_at: claim_expires,
        }];
        if let (Some(source), Some(from), Some(top)) = (&batch.source, mark, batch.max_seq())
            && from.is_none_or(|m| top > m)
        {
            writes.push(Write::AdvanceSourceMark {
                source: source.clone(),
                from,
                to: top,
                at: now,
            });
        }
        writes.extend(
            buckets
                .into_iter()
                .map(|(key, quantity)| Write::AddUsage { key, quantity }),
        );

        // Prepaid draw-down, one account per consumer.
        let mut by_consumer: BTreeMap<ConsumerId, Vec<&Subscription>> = BTreeMap::new();
        for sub in subscriptions.values().flatten() {
            let prepaid = self
                .catalog
                .product(sub.product_id.as_str())
                .is_some_and(|p| p.prepaid);
            let used = totals.keys().any(|(s, _)| s == &sub.id);
            if prepaid && used && sub.status.grants_access() {
                by_consumer
                    .entry(sub.consumer_id.clone())
                    .or_default()
                    .push(sub);
            }
        }
        let mut accounts = BTreeMap::new();
        let mut events = Vec::new();
        let mut gates = Vec::new();
        for (consumer, subs) in by_consumer {
            let (mut account, expect) = load_account(self.store.as_ref(), &consumer, now).await?;
            let blocked_before = account.is_blocked();
            let mut usage_items = Vec::new();
            for sub in &subs {
                let product = self
                    .catalog
                    .product(sub.product_id.as_str())
                    .expect("prepaid subscriptions have a catalog product");
                usage_items.extend(prepaid_usage(product, &sub.id, |m| {
                    totals
                        .get(&(sub.id.clone(), m.clone()))
                        .copied()
                        .unwrap_or(0)
                }));
            }
            let drawn = account
                .draw(&usage_items, self.policy, now)
                .map_err(|e| ApiError::Internal(format!("pricing usage of {consumer}: {e}")))?;
            events.extend(drawn.events);
            if account.is_blocked() != blocked_before {
                // The consumer just ran out: its keys answer 402 from the next check on.
                let keys = prepaid_keys(self.store.as_ref(), &self.catalog, &consumer).await?;
                gates.extend(credit_gate_writes(
                    &keys,
                    account.is_blocked(),
                    stored_version(expect),
                ));
            }
            writes.push(Write::PutCreditAccount {
                account: account.clone(),
                expect,
            });
            accounts.insert(consumer, account);
        }
        if writes.len() > MAX_COMMIT_ITEMS {
            return Err(IngestError::Batch(BatchError::TooManyBuckets {
                count: writes.len() - 1,
                max: MAX_COMMIT_ITEMS - 1,
            }));
        }
        let room = MAX_COMMIT_ITEMS - writes.len();
        let overflow_gates = if gates.len() > room {
            gates.split_off(room)
        } else {
            Vec::new()
        };
        writes.extend(gates);
        Ok(Plan {
            writes,
            overflow_gates,
            events,
            accepted: admitted.len(),
            already_counted,
            rejections,
            subscriptions,
            accounts,
        })
    }

    async fn finish(
        &self,
        batch: &UsageBatch,
        plan: Plan,
        now: Timestamp,
    ) -> Result<IngestAnswer, IngestError> {
        if !plan.overflow_gates.is_empty() {
            self.write_requests
                .fetch_add(plan.overflow_gates.len() as u64, Ordering::Relaxed);
            apply_gate_writes(self.store.as_ref(), plan.overflow_gates).await?;
        }
        // The account flags that decided these alerts are committed, so they go out once.
        self.publish(&plan.events).await;
        let subscriptions = self
            .report(&plan.subscriptions, &plan.accounts, now)
            .await?;
        Ok(IngestAnswer {
            batch_id: batch.batch_id.clone(),
            duplicate: false,
            accepted: plan.accepted,
            rejected: plan.rejections.len(),
            already_counted: plan.already_counted,
            rejections: plan.rejections,
            subscriptions,
        })
    }

    /// A batch counted before: add nothing, but finish what the first delivery may not have
    /// (threshold events, quota gates) and answer with the current state.
    async fn answer_duplicate(
        &self,
        batch: &UsageBatch,
        now: Timestamp,
    ) -> Result<IngestAnswer, IngestError> {
        let subscriptions = self.read_subscriptions(batch).await?;
        let subscriptions = self.report(&subscriptions, &BTreeMap::new(), now).await?;
        Ok(IngestAnswer {
            batch_id: batch.batch_id.clone(),
            duplicate: true,
            accepted: 0,
            rejected: 0,
            already_counted: 0,
            rejections: Vec::new(),
            subscriptions,
        })
    }

    async fn publish(&self, events: &[DomainEvent]) {
        if events.is_empty() {
            return;
        }
        // The usage is counted whatever happens here; a lost alert is logged for the
        // operator rather than turned into a failed batch the gateway would re-send in vain.
        if let Err(e) = self.publisher.publish(events).await {
            tracing::error!(error = %e, count = events.len(), "domain events not published");
        }
    }

    /// Each known subscription's usage this period, quota and state; publishes each quota
    /// threshold once per period and gates the keys of a used-up quota.
    async fn report(
        &self,
        subscriptions: &BTreeMap<SubscriptionId, Option<Subscription>>,
        accounts: &BTreeMap<ConsumerId, CreditAccount>,
        now: Timestamp,
    ) -> Result<Vec<SubscriptionUsage>, IngestError> {
        let mut out = Vec::new();
        let mut accounts = accounts.clone();
        for sub in subscriptions.values().flatten() {
            let Some(product) = self.catalog.product(sub.product_id.as_str()) else {
                continue;
            };
            // THE windows: the quota's (its own cadence) and the billing period's, to the second.
            let (start, end) = usage::quota_window(sub, Some(product), now);
            let billing = usage::billing_period(sub, now);
            let mut meters: BTreeSet<MeterId> = product
                .metered()
                .filter_map(|c| c.meter().cloned())
                .collect();
            if let Some(q) = &product.quota {
                meters.insert(q.meter.clone());
            }
            let mut used = BTreeMap::new();
            for m in meters {
                // No bucket straddles a boundary: a window's buckets are those starting in it.
                let buckets = self
                    .store
                    .usage_buckets(&sub.id, &m, billing.0, billing.1)
                    .await?;
                used.insert(m, usage::total_quantity(buckets.iter().map(|b| b.quantity)));
            }
            let quota = match &product.quota {
                Some(q) => {
                    let in_window = if (start, end) == billing {
                        used.get(&q.meter).copied().unwrap_or(0)
                    } else {
                        self.store
                            .usage_buckets(&sub.id, &q.meter, start, end)
                            .await?
                            .iter()
                            .map(|b| b.quantity)
                            .sum()
                    };
                    Some(QuotaView {
                        meter: q.meter.clone(),
                        limit: q.limit,
                        used: in_window,
                        period_start: start,
                        period_end: end,
                    })
                }
                None => None,
            };
            let credit_balance = if product.prepaid {
                if !accounts.contains_key(&sub.consumer_id)
                    && let Some(a) = self.store.get_credit_account(&sub.consumer_id).await?
                {
                    accounts.insert(sub.consumer_id.clone(), a);
                }
                Some(accounts.get(&sub.consumer_id).map_or(0, |a| a.balance))
            } else {
                None
            };
            let exceeded = quota
                .as_ref()
                .is_some_and(|q| usage::quota_exceeded(q.used, q.limit));
            let state = if !sub.status.grants_access() {
                UsageState::Suspended
            } else if credit_balance.is_some_and(|b| b <= 0) {
                UsageState::NoCredit
            } else if exceeded {
                UsageState::QuotaExceeded
            } else {
                UsageState::Ok
            };
            if sub.status.grants_access()
                && let Some(q) = &quota
            {
                self.quota_thresholds(sub, q, now).await?;
                if exceeded {
                    self.gate_quota(&sub.id, start, end).await?;
                }
            }
            out.push(SubscriptionUsage {
                subscription_id: sub.id.clone(),
                product_id: sub.product_id.clone(),
                state,
                usage: used,
                period_start: billing.0,
                period_end: billing.1,
                quota,
                credit_balance,
            });
        }
        Ok(out)
    }

    /// QuotaThreshold once per (subscription, meter, period, threshold): the claim is the
    /// "once"; two batches that both see 80 % race for it and one publishes.
    async fn quota_thresholds(
        &self,
        sub: &Subscription,
        q: &QuotaView,
        now: Timestamp,
    ) -> Result<(), IngestError> {
        for percent in usage::thresholds_reached(q.used, q.limit) {
            let id = usage::threshold_claim_id(&sub.id, &q.meter, q.period_start, percent);
            // Every later batch of the period sees the threshold reached too: a read keeps
            // those batches from paying a (failing) conditional write each.
            if self
                .store
                .is_claimed(ClaimScope::QuotaThreshold, &id)
                .await?
            {
                continue;
            }
            let claim = Write::Claim {
                scope: ClaimScope::QuotaThreshold,
                id,
                expires_at: q.period_end + Duration::days(40),
            };
            match self.commit(vec![claim]).await {
                Ok(()) => {
                    self.publish(&[DomainEvent::QuotaThreshold {
                        subscription_id: sub.id.clone(),
                        consumer_id: sub.consumer_id.clone(),
                        meter: q.meter.clone(),
                        percent,
                        used: q.used,
                        limit: q.limit,
                        period_start: q.period_start,
                        at: now,
                    }])
                    .await;
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Copies "the quota window starting at `window_start` is used up until `until`" onto the
    /// subscription's keys that lack it (new keys included), so the entitlement check answers
    /// 429 with one read. The gate names its window: a newer window replaces it.
    async fn gate_quota(
        &self,
        sub: &SubscriptionId,
        window_start: Timestamp,
        until: Timestamp,
    ) -> Result<(), IngestError> {
        let fact = GateFact::Quota {
            window_start,
            blocked_until: Some(until),
        };
        let written = gate_subscription_keys(self.store.as_ref(), sub, fact).await?;
        self.write_requests
            .fetch_add(written as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The header `GET /entitlements` reads the key from.
pub const ENTITLEMENT_KEY_HEADER: &str = "x-api-key";

/// Why a batch was not counted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch itself is refused (4xx); nothing was written.
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        IngestError::Api(e.into())
    }
}

/// Retry pause for a contended commit: growing with the attempt (10–320 ms), with jitter.
fn backoff(attempt: usize) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = 10 * attempt.min(8) as u64;
    std::time::Duration::from_millis(base + u64::from(nanos) % (base * 3 + 1))
}

/// A refused batch: 413 for size, 400 for a malformed body, 422 for invalid records (every
/// one listed with its index, field path and reason). The JSON names the field.
pub fn batch_error_response(e: &BatchError) -> Response<String> {
    match e {
        BatchError::BodyTooLarge { max, .. } => json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": {"code": "payload_too_large", "field": "body",
                "message": e.to_string(), "limit": max}}),
        ),
        BatchError::ReusedId { .. } => json_response(
            StatusCode::CONFLICT,
            &json!({"error": {"code": "batch_id_reused", "field": "batch_id",
                "message": e.to_string()}}),
        ),
        BatchError::Malformed { field, reason } => {
            ApiError::bad_request(field.clone(), reason.clone()).into_response()
        }
        BatchError::TooManyRecords { .. } | BatchError::TooManyBuckets { .. } => {
            ApiError::Invalid {
                errors: vec![FieldError {
                    field: "records".into(),
                    message: e.to_string(),
                }],
            }
            .into_response()
        }
        BatchError::InvalidRecords(errs) => {
            let details: Vec<serde_json::Value> = errs
                .iter()
                .map(|r| {
                    json!({"index": r.index, "id": r.id, "field": r.path(), "message": r.reason})
                })
                .collect();
            json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"error": {
                    "code": "invalid_records",
                    "message": format!("{} of the batch's records are invalid; nothing was counted", errs.len()),
                    "field": errs.first().map(|r| r.path()),
                    "details": details,
                }}),
            )
        }
    }
}

/// The largest body the function reads (the batch limit).
pub const BODY_LIMIT: usize = MAX_BODY_BYTES;
