//! A consumer's subscription to a product, as tollgate keeps it.
//!
//! The lifecycle transitions (state × event → state) live in `lifecycle` — one table.

use crate::ids::{ConsumerId, ProductId, StripeId, SubscriptionId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Checkout started, not paid yet: no API access.
    Pending,
    /// Paid (or free, or trialing): API access.
    Active,
    /// A payment failed; Stripe is retrying. Access continues (grace).
    PastDue,
    /// Payment retries exhausted or unpaid: no API access until an invoice is paid.
    Suspended,
    /// Ended. Final.
    Canceled,
    /// One-time access whose end date has passed. Final.
    Expired,
}

impl SubscriptionStatus {
    /// Whether API keys of a subscription in this state may call the API.
    pub fn grants_access(self) -> bool {
        matches!(self, Self::Active | Self::PastDue)
    }
    pub fn is_final(self) -> bool {
        matches!(self, Self::Canceled | Self::Expired)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Suspended => "suspended",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub consumer_id: ConsumerId,
    pub product_id: ProductId,
    /// The consumer's name for it ("prod-backend").
    pub name: String,
    pub status: SubscriptionStatus,
    #[serde(default)]
    pub seats: Option<u32>,
    #[serde(default)]
    pub stripe_customer_id: Option<StripeId>,
    #[serde(default)]
    pub stripe_subscription_id: Option<StripeId>,
    #[serde(default)]
    pub stripe_checkout_session_id: Option<StripeId>,
    /// Current billing period as Stripe anchors it (start inclusive, end exclusive).
    #[serde(default)]
    pub current_period_start: Option<Timestamp>,
    #[serde(default)]
    pub current_period_end: Option<Timestamp>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// End of one-time access (seed 003); the billing run expires it.
    #[serde(default)]
    pub access_expires_at: Option<Timestamp>,
    /// `created` of the newest Stripe event applied, to ignore older ones arriving late.
    #[serde(default)]
    pub last_stripe_event_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Optimistic-concurrency version: every write must name the version it read.
    pub version: u64,
}
