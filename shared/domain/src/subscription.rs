//! A consumer's subscription to a product, as tollgate keeps it.
//!
//! The lifecycle transitions (state × event → state) live in `lifecycle` — one table.

use crate::ids::{ConsumerId, ProductId, StripeId, SubscriptionId};
use crate::ports::SubscriptionSnapshot;
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
    /// The period boundaries and life span as Stripe told them (the usage windows' source).
    #[serde(default)]
    pub periods: PeriodHistory,
}

/// Most period boundaries a subscription keeps: the billing run looks back 72 h, so a few
/// boundaries are enough even with re-anchors (trial end, plan changes) in between.
pub const MAX_PERIOD_BOUNDARIES: usize = 12;

/// What tollgate knows of a subscription's billing periods and life span, from the Stripe
/// subscription snapshots the webhook (and the billing run's reconcile) read. Ingestion, the
/// quota, the portal and the billing run derive every usage window from it
/// (`usage::billing_period`), so no usage bucket straddles a period boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodHistory {
    /// Since when usage counts: Stripe's `start_date` (the first period's start); `None` for a
    /// subscription Stripe does not bill, which starts at its `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Period starts and ends seen, ascending, the newest [`MAX_PERIOD_BOUNDARIES`] kept.
    /// A re-anchor (trial end, plan change, immediate cancel) is one more boundary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundaries: Vec<Timestamp>,
    /// Stripe's `billing_cycle_anchor`: renewals fall on its day of the month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Timestamp>,
    /// End of a Stripe trial: usage before it is not billed by Stripe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_end: Option<Timestamp>,
    /// When the subscription ended (Stripe `ended_at`, or tollgate's end of a free one).
    /// Records timestamped from then on are outside the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// When API access was last lost without ending (suspension); cleared when it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_lost_at: Option<Timestamp>,
}

impl PeriodHistory {
    /// Adds a boundary (kept sorted, deduplicated, newest [`MAX_PERIOD_BOUNDARIES`]).
    pub fn add_boundary(&mut self, at: Timestamp) {
        if let Err(i) = self.boundaries.binary_search(&at) {
            self.boundaries.insert(i, at);
        }
        let extra = self.boundaries.len().saturating_sub(MAX_PERIOD_BOUNDARIES);
        self.boundaries.drain(..extra);
    }
}

impl Subscription {
    /// Takes the period facts of a Stripe subscription snapshot: the current period (both
    /// bounds become boundaries), the trial end, the anchor, and the moment it ended (the
    /// last boundary: the final invoice bills the usage up to it).
    pub fn observe_stripe_periods(&mut self, snap: &SubscriptionSnapshot) {
        self.current_period_start = snap.current_period_start.or(self.current_period_start);
        self.current_period_end = snap.current_period_end.or(self.current_period_end);
        self.cancel_at_period_end = snap.cancel_at_period_end;
        let p = &mut self.periods;
        if p.started_at.is_none() {
            p.started_at = snap.start_date.or(snap.current_period_start);
        }
        if snap.billing_cycle_anchor.is_some() {
            p.anchor = snap.billing_cycle_anchor;
        }
        if snap.trial_end.is_some() {
            p.trial_end = snap.trial_end;
        }
        for b in [
            snap.current_period_start,
            snap.current_period_end,
            snap.trial_end,
        ]
        .into_iter()
        .flatten()
        {
            p.add_boundary(b);
        }
        if let Some(end) = snap.ended_at {
            p.ended_at = Some(end);
            // An immediate cancel ends the period early: nothing after it is billed.
            p.boundaries.retain(|b| *b <= end);
            p.add_boundary(end);
        }
    }
}
