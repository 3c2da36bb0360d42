//! The store port (DynamoDB in production and in tests).

use crate::credit::CreditAccount;
use crate::entitlement::{GateFact, KeyGate};
use crate::ids::{ApiKeyHash, ConsumerId, MeterId, ProductId, StripeId, SubscriptionId};
use crate::money::MinorUnits;
use crate::subscription::Subscription;
use crate::time::{NaiveDate, Timestamp};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub id: ConsumerId,
    #[serde(default)]
    pub stripe_customer_id: Option<StripeId>,
    #[serde(default)]
    pub email: Option<String>,
    pub created_at: Timestamp,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub hash: ApiKeyHash,
    /// First characters of the key, safe to show ("tg_3f9a…").
    pub prefix: String,
    pub subscription_id: SubscriptionId,
    pub consumer_id: ConsumerId,
    pub product_id: ProductId,
    pub created_at: Timestamp,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
}

/// Usage of one subscription on one meter in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsageBucketKey {
    pub subscription_id: SubscriptionId,
    pub meter: MeterId,
    /// Start of the hour (UTC, whole hour).
    pub hour: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBucket {
    pub key: UsageBucketKey,
    pub quantity: u64,
}

/// One report of usage to a Stripe Billing Meter: what is sent (or was), with which
/// `identifier`. Stripe dedupes identifiers for ~24 h only, so this entry is tollgate's own
/// exactly-once record. Its key is (subscription, meter, `from`, `seq`): two runs that try to
/// report the same slice collide on the same item, and only one `Expect::Absent` create wins.
/// `seq` 0 is a slice's first report; late records add entries 1, 2, ... (see `billing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub subscription_id: SubscriptionId,
    pub meter: MeterId,
    /// The Stripe billing period the usage belongs to, as far as tollgate knew it.
    #[serde(default)]
    pub period_start: Option<Timestamp>,
    #[serde(default)]
    pub period_end: Option<Timestamp>,
    /// The usage buckets covered (one slice): `from <= hour < to`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Which report of the slice this is.
    #[serde(default)]
    pub seq: u32,
    /// The meter event's value: usage of the slice not covered by earlier entries.
    pub quantity: u64,
    /// The meter event's `identifier` (deterministic, so a resend within 24 h is a no-op at Stripe).
    pub identifier: String,
    /// The meter event's `timestamp` (inside the period the usage happened in).
    pub event_timestamp: Timestamp,
    pub created_at: Timestamp,
    /// When Stripe accepted the meter event; `None` while the report is in flight.
    #[serde(default)]
    pub reported_at: Option<Timestamp>,
    pub version: u64,
}

/// A consumer's prepaid credit (seed 004), in minor units of the catalog currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBalance {
    pub consumer_id: ConsumerId,
    pub balance: MinorUnits,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditReason {
    /// A credit pack was bought (id: the Checkout Session id).
    Purchase,
    /// Usage drew the balance down (id: the usage batch id).
    Usage,
    /// An operator's correction.
    Adjustment,
    /// Credit taken back because Stripe refunded its payment or a bank reversed it in a lost
    /// dispute (id: `{charge}:{total reversed}`).
    Reversal,
}

impl CreditReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditReason::Purchase => "purchase",
            CreditReason::Usage => "usage",
            CreditReason::Adjustment => "adjustment",
            CreditReason::Reversal => "reversal",
        }
    }
}

/// One change of a credit balance. Keyed by (consumer, reason, id): recording the same
/// purchase twice is a conflict, so a re-delivered webhook cannot credit twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditMovement {
    pub consumer_id: ConsumerId,
    pub reason: CreditReason,
    pub id: String,
    /// Positive adds credit, negative draws it down.
    pub amount: MinorUnits,
    pub at: Timestamp,
    /// What was asked, when the floor may have limited `amount` (an operator's deduction):
    /// a retry with the same id must ask the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<MinorUnits>,
    /// Why (an operator's adjustment: their words, for the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One page of a long listing; pass `next` back to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque cursor; `None` on the last page.
    pub next: Option<String>,
}

/// What a conditional write expects to find.
///
/// The store sets the stored `version` itself: `Absent` stores 0, `Version(v)` stores `v + 1`;
/// the `version` field of the value written is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The item must not exist yet (create).
    Absent,
    /// The item must exist with exactly this version (optimistic concurrency); the write
    /// stores version + 1.
    Version(u64),
}

/// One write of a [`Store::commit`]. Variants are added as features need them; each maps to
/// one item operation in the DynamoDB adapter. A commit may touch each item once only (a
/// DynamoDB transaction rule): aggregate first, e.g. one `AddUsage` per bucket.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Records that `(scope, id)` was processed. Fails the commit if it already was. The
    /// record expires at `expires_at` (DynamoDB TTL).
    Claim {
        scope: ClaimScope,
        id: String,
        expires_at: Timestamp,
    },
    /// A [`Write::Claim`] whose item also keeps `digest` (of the claimed content, e.g.
    /// [`crate::usage::UsageBatch::digest`]), so a later delivery under the same id can be told
    /// apart: the same content (a re-send) or other content (a reused id).
    ClaimContent {
        scope: ClaimScope,
        id: String,
        digest: String,
        expires_at: Timestamp,
    },
    /// Moves a usage source's high-water mark (the highest record `seq` counted) from `from`
    /// (`None`: no mark yet) to `to`. Conflicts when the stored mark is not `from`, so two
    /// batches of one source cannot both count the same seqs.
    AdvanceSourceMark {
        source: String,
        from: Option<u64>,
        to: u64,
        at: Timestamp,
    },
    PutConsumer {
        consumer: Consumer,
        expect: Expect,
    },
    PutSubscription {
        subscription: Subscription,
        expect: Expect,
    },
    /// Creates a key; fails if the hash exists.
    PutApiKey(ApiKey),
    RevokeApiKey {
        hash: ApiKeyHash,
        at: Timestamp,
    },
    /// Adds to a usage bucket, creating it at zero first.
    AddUsage {
        key: UsageBucketKey,
        quantity: u64,
    },
    /// Creates a billing-ledger entry (`Absent`: claims the window) or updates it
    /// (`Version`: e.g. marks it reported).
    PutLedgerEntry {
        entry: LedgerEntry,
        expect: Expect,
    },
    /// Adds `delta` (negative: draws down) to the consumer's credit balance, creating it at zero
    /// first. With a `floor`, fails with a conflict instead of taking the balance below it, so
    /// concurrent draw-downs cannot overdraw.
    AdjustCredit {
        consumer_id: ConsumerId,
        delta: MinorUnits,
        floor: Option<MinorUnits>,
        at: Timestamp,
    },
    /// Records a credit movement; fails if (consumer, reason, id) was recorded already.
    PutCreditMovement(CreditMovement),
    /// Writes a consumer's prepaid credit account whole (see `credit`), under optimistic
    /// concurrency: concurrent draw-downs serialise on its version, so neither the floor nor
    /// the once-per-crossing alerts can be raced past. Same item as [`CreditBalance`].
    PutCreditAccount {
        account: CreditAccount,
        expect: Expect,
    },
    /// Copies one fact onto a key item for the one-read entitlement check (see
    /// `entitlement`). A conflict when the key does not exist or already holds a newer copy.
    SetKeyGate {
        hash: ApiKeyHash,
        fact: GateFact,
    },
}

/// Namespaces of idempotency claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimScope {
    StripeEvent,
    UsageBatch,
    CheckoutSession,
    CreditPurchase,
    /// A billing run that finished (id: `nightly:YYYY-MM-DD`): hourly runs continue one that
    /// did not.
    BillingRun,
    /// A QuotaThreshold event of one (subscription, meter, period, percent).
    QuotaThreshold,
}

impl ClaimScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimScope::StripeEvent => "stripe_event",
            ClaimScope::UsageBatch => "usage_batch",
            ClaimScope::CheckoutSession => "checkout_session",
            ClaimScope::CreditPurchase => "credit_purchase",
            ClaimScope::QuotaThreshold => "quota_threshold",
            ClaimScope::BillingRun => "billing_run",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition failed: the index of the [`Write`] in the commit and why.
    #[error("write {index} conflicted: {reason}")]
    Conflict { index: usize, reason: String },
    /// The commit is larger than one transaction can hold (100 items / 4 MB).
    #[error("commit too large: {0}")]
    TooLarge(String),
    /// A stored item could not be read back into a domain value.
    #[error("corrupt item: {0}")]
    Corrupt(String),
    /// The store could not be reached or throttled us; retrying may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (two writes on one item, an item over 400 KB, a bad
    /// cursor): a bug in the caller, retrying cannot help.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
    /// Whether the same request may succeed later (throttling, a network failure, a
    /// concurrent transaction on the same item).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync {
    /// Applies all writes or none. At most 100 writes and 4 MB ([`StoreError::TooLarge`]).
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()>;
    /// Whether `(scope, id)` is claimed and the claim has not expired.
    async fn is_claimed(&self, scope: ClaimScope, id: &str) -> StoreResult<bool>;
    /// The content digest kept by a live claim: `None` when `(scope, id)` is not claimed (or
    /// the claim expired), `Some(None)` for a claim without one (a plain [`Write::Claim`]).
    async fn claim_digest(
        &self,
        scope: ClaimScope,
        id: &str,
    ) -> StoreResult<Option<Option<String>>>;
    /// A usage source's high-water mark: the highest record `seq` counted (see
    /// [`Write::AdvanceSourceMark`]); `None` before its first batch. Strongly consistent.
    async fn source_mark(&self, source: &str) -> StoreResult<Option<u64>>;

    async fn get_consumer(&self, id: &ConsumerId) -> StoreResult<Option<Consumer>>;
    async fn find_consumer_by_stripe_customer(
        &self,
        stripe_customer_id: &StripeId,
    ) -> StoreResult<Option<Consumer>>;
    async fn get_subscription(&self, id: &SubscriptionId) -> StoreResult<Option<Subscription>>;
    /// Many subscriptions at once (the billing run's work list), in no particular order; ids
    /// not found are left out. The default reads them one by one.
    async fn get_subscriptions(&self, ids: &[SubscriptionId]) -> StoreResult<Vec<Subscription>> {
        let mut subs = Vec::with_capacity(ids.len());
        for id in ids {
            subs.extend(self.get_subscription(id).await?);
        }
        Ok(subs)
    }
    async fn find_subscription_by_stripe_id(
        &self,
        stripe_subscription_id: &StripeId,
    ) -> StoreResult<Option<Subscription>>;
    /// A consumer's subscriptions, oldest first.
    async fn list_subscriptions(&self, consumer: &ConsumerId) -> StoreResult<Vec<Subscription>>;
    /// Every subscription, a page at a time (the nightly billing run).
    async fn list_all_subscriptions(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Subscription>>;
    async fn get_api_key(&self, hash: &ApiKeyHash) -> StoreResult<Option<ApiKey>>;
    /// A subscription's keys, oldest first (revoked ones included).
    async fn list_api_keys(&self, subscription: &SubscriptionId) -> StoreResult<Vec<ApiKey>>;
    /// Buckets of one subscription and meter with `from <= hour < to`, oldest first.
    async fn usage_buckets(
        &self,
        subscription: &SubscriptionId,
        meter: &MeterId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UsageBucket>>;

    /// Ledger entries of one subscription and meter with `from >= since`, by (`from`, `seq`),
    /// oldest first.
    async fn ledger_entries(
        &self,
        subscription: &SubscriptionId,
        meter: &MeterId,
        since: Timestamp,
    ) -> StoreResult<Vec<LedgerEntry>>;
    /// The (subscription, meter) pairs with a usage bucket in an hour of UTC `day` (the billing
    /// run's listing; each pair once, in no particular order).
    async fn metered_on(&self, day: NaiveDate) -> StoreResult<Vec<(SubscriptionId, MeterId)>>;
    /// Subscriptions whose one-time access ends at or before `at` and that are not expired
    /// yet (the billing run expires them).
    async fn access_expiring_by(&self, at: Timestamp) -> StoreResult<Vec<Subscription>>;
    async fn get_credit_balance(&self, consumer: &ConsumerId)
    -> StoreResult<Option<CreditBalance>>;
    /// A consumer's credit movements, oldest first.
    async fn list_credit_movements(
        &self,
        consumer: &ConsumerId,
    ) -> StoreResult<Vec<CreditMovement>>;
}

/// Reads of the prepaid-credit and entitlement features (`credit`, `entitlement`), apart from
/// [`Store`] so that its other users need not care.
#[async_trait]
pub trait EntitlementReads: Send + Sync {
    /// The consumer's credit account, strongly consistent (a writer needs its latest version).
    async fn get_credit_account(&self, consumer: &ConsumerId)
    -> StoreResult<Option<CreditAccount>>;
    /// A key and its gate: the entitlement check's one read.
    async fn get_key_entitlement(
        &self,
        hash: &ApiKeyHash,
    ) -> StoreResult<Option<(ApiKey, KeyGate)>>;
    /// A subscription's keys with their gates (revoked ones included).
    async fn list_key_entitlements(
        &self,
        subscription: &SubscriptionId,
    ) -> StoreResult<Vec<(ApiKey, KeyGate)>>;
}
