//! Ports: what the domain needs from the outside world, as traits. Adapters (DynamoDB, Stripe,
//! EventBridge) implement them in their own crates; tests run the real adapters against
//! DynamoDB Local, the Stripe emulator and a captured EventBridge endpoint.
//!
//! Writes go through [`Store::commit`]: a list of [`Write`]s applied all-or-nothing (one
//! DynamoDB `TransactWriteItems`). An idempotency claim and its effect are always in the same
//! commit, so a failed effect leaves the claim unmade and a retry is not lost (OpenMeter #5118).

use crate::events::DomainEvent;
use crate::ids::{ApiKeyHash, ConsumerId, MeterId, ProductId, StripeId, SubscriptionId};
use crate::subscription::Subscription;
use crate::time::Timestamp;
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

/// What a conditional write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The item must not exist yet (create).
    Absent,
    /// The item must exist with exactly this version (optimistic concurrency); the write
    /// stores version + 1.
    Version(u64),
}

/// One write of a [`Store::commit`]. Variants are added as features need them; each maps to
/// one item operation in the DynamoDB adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Records that `(scope, id)` was processed. Fails the commit if it already was. The
    /// record expires at `expires_at` (DynamoDB TTL).
    Claim {
        scope: ClaimScope,
        id: String,
        expires_at: Timestamp,
    },
    PutConsumer { consumer: Consumer, expect: Expect },
    PutSubscription { subscription: Subscription, expect: Expect },
    /// Creates a key; fails if the hash exists.
    PutApiKey(ApiKey),
    RevokeApiKey { hash: ApiKeyHash, at: Timestamp },
    /// Adds to a usage bucket, creating it at zero first.
    AddUsage { key: UsageBucketKey, quantity: u64 },
}

/// Namespaces of idempotency claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimScope {
    StripeEvent,
    UsageBatch,
    CheckoutSession,
    CreditPurchase,
}

impl ClaimScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimScope::StripeEvent => "stripe_event",
            ClaimScope::UsageBatch => "usage_batch",
            ClaimScope::CheckoutSession => "checkout_session",
            ClaimScope::CreditPurchase => "credit_purchase",
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
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync {
    /// Applies all writes or none.
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()>;
    async fn is_claimed(&self, scope: ClaimScope, id: &str) -> StoreResult<bool>;

    async fn get_consumer(&self, id: &ConsumerId) -> StoreResult<Option<Consumer>>;
    async fn get_subscription(&self, id: &SubscriptionId) -> StoreResult<Option<Subscription>>;
    async fn find_subscription_by_stripe_id(
        &self,
        stripe_subscription_id: &StripeId,
    ) -> StoreResult<Option<Subscription>>;
    async fn list_subscriptions(&self, consumer: &ConsumerId) -> StoreResult<Vec<Subscription>>;
    async fn get_api_key(&self, hash: &ApiKeyHash) -> StoreResult<Option<ApiKey>>;
    async fn list_api_keys(&self, subscription: &SubscriptionId) -> StoreResult<Vec<ApiKey>>;
    /// Buckets of one subscription and meter with `from <= hour < to`, oldest first.
    async fn usage_buckets(
        &self,
        subscription: &SubscriptionId,
        meter: &MeterId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UsageBucket>>;
}

#[derive(Debug, thiserror::Error)]
#[error("event publishing failed: {0}")]
pub struct PublishError(pub String);

/// Where domain events go (EventBridge in AWS).
#[async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError>;
}
