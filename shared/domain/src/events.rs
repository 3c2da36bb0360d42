//! Domain events tollgate publishes (on EventBridge in AWS) for whoever subscribes: a gateway
//! adapter, an email sender. Each variant's JSON is the event's `detail`; its `detail-type` is
//! [`DomainEvent::detail_type`]. Schemas: `schemas/events/*.json`.

use crate::ids::{ConsumerId, MeterId, ProductId, SubscriptionId};
use crate::money::MinorUnits;
use crate::subscription::SubscriptionStatus;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DomainEvent {
    SubscriptionActivated(SubscriptionEvent),
    SubscriptionSuspended(SubscriptionEvent),
    SubscriptionReactivated(SubscriptionEvent),
    SubscriptionCanceled(SubscriptionEvent),
    SubscriptionExpired(SubscriptionEvent),
    /// A key was issued (never carries the key itself).
    ApiKeyIssued {
        subscription_id: SubscriptionId,
        consumer_id: ConsumerId,
        key_prefix: String,
        at: Timestamp,
    },
    /// Usage crossed a share of the quota (80 or 100 %), once per threshold per period.
    QuotaThreshold {
        subscription_id: SubscriptionId,
        consumer_id: ConsumerId,
        meter: MeterId,
        percent: u8,
        used: u64,
        limit: u64,
        period_start: Timestamp,
        at: Timestamp,
    },
    /// Prepaid balance fell below the configured threshold (once per crossing).
    CreditsLow {
        consumer_id: ConsumerId,
        balance: MinorUnits,
        threshold: MinorUnits,
        at: Timestamp,
    },
    /// Credit bought and not yet used was taken back: Stripe refunded its payment, or the
    /// consumer's bank reversed it in a lost dispute. `amount` is what the balance lost
    /// (minor units, ≥ 0: credit already used cannot be taken back).
    CreditRevoked {
        consumer_id: ConsumerId,
        amount: MinorUnits,
        balance: MinorUnits,
        /// The Stripe charge whose money went back.
        charge: String,
        at: Timestamp,
    },
    /// Prepaid balance reached zero (or the floor): calls now get HTTP 402.
    CreditsDepleted {
        consumer_id: ConsumerId,
        balance: MinorUnits,
        at: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEvent {
    pub subscription_id: SubscriptionId,
    pub consumer_id: ConsumerId,
    pub product_id: ProductId,
    pub status: SubscriptionStatus,
    pub at: Timestamp,
}

impl DomainEvent {
    /// EventBridge `detail-type`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            DomainEvent::SubscriptionActivated(_) => "SubscriptionActivated",
            DomainEvent::SubscriptionSuspended(_) => "SubscriptionSuspended",
            DomainEvent::SubscriptionReactivated(_) => "SubscriptionReactivated",
            DomainEvent::SubscriptionCanceled(_) => "SubscriptionCanceled",
            DomainEvent::SubscriptionExpired(_) => "SubscriptionExpired",
            DomainEvent::ApiKeyIssued { .. } => "ApiKeyIssued",
            DomainEvent::QuotaThreshold { .. } => "QuotaThreshold",
            DomainEvent::CreditsLow { .. } => "CreditsLow",
            DomainEvent::CreditsDepleted { .. } => "CreditsDepleted",
            DomainEvent::CreditRevoked { .. } => "CreditRevoked",
        }
    }
}
