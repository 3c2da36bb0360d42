//! The payments port: what tollgate needs from Stripe, in tollgate's words.
//!
//! No Stripe type appears here; the `tollgate-stripe` adapter translates at the edge. Every
//! write names the domain operation it performs so the adapter can derive a stable
//! `Idempotency-Key` from it: a Lambda retried after a timeout sends the same key and Stripe
//! replays the first answer instead of charging, creating or counting twice.

use crate::catalog::{Catalog, Interval, PriceComponent, Product, Rounding, TierMode};
use crate::ids::{ConsumerId, ProductId, StripeId, SubscriptionId};
use crate::money::{Currency, MinorUnits};
use crate::time::Timestamp;
use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Metadata keys tollgate writes on Stripe objects (and reads back from webhooks).
pub mod metadata {
    pub const CONSUMER_ID: &str = "tollgate_consumer_id";
    pub const PRODUCT_ID: &str = "tollgate_product_id";
    pub const SUBSCRIPTION_ID: &str = "tollgate_subscription_id";
    pub const SUBSCRIPTION_NAME: &str = "tollgate_subscription_name";
    pub const PRICE_KEY: &str = "tollgate_price_key";
    /// Marks a checkout that buys prepaid credit (value: amount in minor units).
    pub const CREDIT_AMOUNT: &str = "tollgate_credit_amount";
}

/// The Stripe Price lookup key of a catalog price component: `{product}.{key}`. Checkout finds
/// the current Price by it, and catalog sync moves it to a new Price when the price changes.
pub fn lookup_key(product: &ProductId, key: &crate::ids::PriceKey) -> String {
    format!("{product}.{key}")
}

/// The Stripe Product id of a catalog product. Stripe accepts caller-chosen product ids, which
/// makes the mapping stateless.
pub fn stripe_product_id(product: &ProductId) -> String {
    format!("tg_{product}")
}

/// The meter-event payload key that names the customer (Stripe's default mapping key).
pub const METER_CUSTOMER_KEY: &str = "stripe_customer_id";
/// The meter-event payload key that holds the value (Stripe's default value key).
pub const METER_VALUE_KEY: &str = "value";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PaymentsError {
    /// The customer's card was declined (`card_error`).
    #[error("card declined: {message}")]
    CardDeclined {
        decline_code: Option<String>,
        message: String,
    },
    /// Stripe rejected the parameters (`invalid_request_error`); `param` names the field.
    #[error("invalid request{}: {message}", param.as_ref().map(|p| format!(" ({p})")).unwrap_or_default())]
    InvalidRequest {
        param: Option<String>,
        code: Option<String>,
        message: String,
    },
    /// The object does not exist (`resource_missing`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The same Idempotency-Key was used with other parameters: a programming error.
    #[error("idempotency key reused with other parameters: {0}")]
    IdempotencyConflict(String),
    /// Still rate limited (HTTP 429) after the bounded retries.
    #[error("rate limited by Stripe: {0}")]
    RateLimited(String),
    /// Stripe could not be reached or kept failing (5xx, 409, timeouts) after retries.
    #[error("Stripe unavailable: {0}")]
    Unavailable(String),
    /// A catalog or request that cannot be expressed in Stripe (a bug or bad input).
    #[error("cannot build Stripe request: {0}")]
    Unsupported(String),
    /// Stripe answered something we could not parse, or the adapter is misconfigured.
    #[error("unexpected Stripe response: {0}")]
    Unexpected(String),
}

impl PaymentsError {
    /// Whether the caller (a Lambda invocation, a queue) may retry the whole operation later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited(_) | Self::Unavailable(_))
    }
}

pub type PaymentsResult<T> = Result<T, PaymentsError>;

// ---------------------------------------------------------------------------------------------
// Checkout
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutMode {
    /// A recurring product: Stripe creates a Subscription.
    Subscription,
    /// One-time products and credit packs: a single payment.
    Payment,
}

/// Where a line item's price comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutPrice {
    /// A Price created by catalog sync, found by its lookup key.
    Synced { lookup_key: String },
    /// An ad-hoc one-time amount (`price_data`) on the product, e.g. a credit pack.
    Amount {
        product: ProductId,
        unit_amount: MinorUnits,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutLineItem {
    pub price: CheckoutPrice,
    /// `None` for metered prices: Stripe rejects a quantity on them.
    pub quantity: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    /// tollgate's subscription (or purchase) this checkout pays for; the idempotency anchor.
    pub subscription_id: SubscriptionId,
    pub consumer_id: ConsumerId,
    pub customer: StripeId,
    pub product_id: ProductId,
    pub subscription_name: String,
    pub mode: CheckoutMode,
    pub currency: Currency,
    pub line_items: Vec<CheckoutLineItem>,
    /// Trial days (subscription mode only; 0 = none).
    pub trial_days: u32,
    /// Extra metadata (e.g. the credit amount of a credit purchase).
    pub extra_metadata: BTreeMap<String, String>,
    pub success_url: String,
    pub cancel_url: String,
}

impl CheckoutRequest {
    /// The metadata put on the session and on the Subscription / PaymentIntent it creates, so
    /// webhooks can find the tollgate subscription without any lookup.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.extra_metadata.clone();
        m.insert(metadata::CONSUMER_ID.into(), self.consumer_id.to_string());
        m.insert(metadata::PRODUCT_ID.into(), self.product_id.to_string());
        m.insert(
            metadata::SUBSCRIPTION_NAME.into(),
            self.subscription_name.clone(),
        );
        m.insert(
            metadata::SUBSCRIPTION_ID.into(),
            self.subscription_id.to_string(),
        );
        m
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: StripeId,
    pub url: String,
}

/// What the consumer buys in one checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase {
    /// The product itself (subscription or one-time), with seats for per-seat prices.
    Product { seats: Option<u32> },
    /// A prepaid credit pack or custom amount of the product, in minor units.
    Credit { amount: MinorUnits },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("product is free: no checkout needed")]
    FreeProduct,
    #[error("seats: must be between {min} and {max}")]
    SeatsOutOfRange { min: u32, max: u32 },
    #[error("seats: required for a per-seat product")]
    SeatsRequired,
    #[error("amount: product sells no credit")]
    NoCredit,
    #[error("amount: {amount} is not a pack this product sells")]
    NotAPack { amount: MinorUnits },
}

/// Whether a metered component is billed by Stripe in arrears. Prepaid products draw their
/// usage from tollgate's own credit balance, and products without an interval have no Stripe
/// subscription to meter: neither gets a metered Stripe Price.
pub fn bills_metered_in_stripe(product: &Product) -> bool {
    product.interval.is_some() && !product.prepaid
}

/// The checkout mode and line items of a purchase, derived from the catalog.
///
/// Licensed prices carry a quantity (1, or the seats), metered prices none (Stripe counts them
/// from meter events), a setup fee is a one-time price added to the first invoice, and a
/// one-time product or a credit pack is a payment-mode checkout.
pub fn checkout_line_items(
    product: &Product,
    purchase: Purchase,
) -> Result<(CheckoutMode, Vec<CheckoutLineItem>), CheckoutError> {
    let seats = match purchase {
        Purchase::Credit { amount } => {
            let credit = product.credit.as_ref().ok_or(CheckoutError::NoCredit)?;
            let is_pack = credit.packs.contains(&amount);
            let in_custom = credit
                .custom
                .as_ref()
                .is_some_and(|c| (c.min..=c.max).contains(&amount));
            if !(is_pack || in_custom) {
                return Err(CheckoutError::NotAPack { amount });
            }
            return Ok((
                CheckoutMode::Payment,
                vec![CheckoutLineItem {
                    price: CheckoutPrice::Amount {
                        product: product.id.clone(),
                        unit_amount: amount,
                    },
                    quantity: Some(1),
                }],
            ));
        }
        Purchase::Product { seats } => seats,
    };
    if product.prices.is_empty() {
        return Err(CheckoutError::FreeProduct);
    }
    let mode = if product.is_recurring() {
        CheckoutMode::Subscription
    } else {
        CheckoutMode::Payment
    };
    let mut items = Vec::new();
    for component in &product.prices {
        let price = CheckoutPrice::Synced {
            lookup_key: lookup_key(&product.id, component.key()),
        };
        let quantity = match component {
            PriceComponent::Flat { .. } | PriceComponent::OneTime { .. } => Some(1),
            PriceComponent::PerSeat { .. } | PriceComponent::TieredPerSeat { .. } => {
                let n = seats.ok_or(CheckoutError::SeatsRequired)?;
                if component.seats_allowed(n) == Some(false) {
                    let (min, max) = component.seat_bounds().unwrap_or((1, None));
                    return Err(CheckoutError::SeatsOutOfRange {
                        min,
                        max: max.unwrap_or(u32::MAX),
                    });
                }
                Some(u64::from(n))
            }
            PriceComponent::PerUnit { .. } | PriceComponent::Tiered { .. } => {
                if !bills_metered_in_stripe(product) {
                    continue;
                }
                None
            }
        };
        items.push(CheckoutLineItem { price, quantity });
    }
    Ok((mode, items))
}

// ---------------------------------------------------------------------------------------------
// Subscriptions, meter events, customer balance
// ---------------------------------------------------------------------------------------------

/// Stripe's subscription status, kept as Stripe says it; [`Self::to_domain`] maps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StripeSubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
    /// A status newer than this build knows.
    Other(String),
}

impl StripeSubscriptionStatus {
    /// Whether Stripe may still bill it (anything but canceled / incomplete_expired; an
    /// unknown status counts as live, so tollgate errs towards stopping the billing).
    pub fn is_live(&self) -> bool {
        !matches!(self, Self::Canceled | Self::IncompleteExpired)
    }
}

impl StripeSubscriptionStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            other => Self::Other(other.to_string()),
        }
    }

    /// The tollgate status a Stripe status implies. `None` for statuses this build does not
    /// know: the caller keeps the current state rather than guess.
    pub fn to_domain(&self) -> Option<crate::subscription::SubscriptionStatus> {
        use crate::subscription::SubscriptionStatus as S;
        Some(match self {
            Self::Incomplete => S::Pending,
            Self::Trialing | Self::Active => S::Active,
            Self::PastDue => S::PastDue,
            // Stripe stops retrying and leaves the subscription open: no access until paid.
            Self::Unpaid | Self::Paused => S::Suspended,
            // `incomplete_expired`: the first payment never succeeded within 23 hours.
            Self::Canceled | Self::IncompleteExpired => S::Canceled,
            Self::Other(_) => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionItemSnapshot {
    pub id: StripeId,
    pub price_id: StripeId,
    pub lookup_key: Option<String>,
    pub quantity: Option<u64>,
}

/// A Stripe subscription as the domain needs it (re-read when webhooks arrive out of order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSnapshot {
    pub id: StripeId,
    pub customer: StripeId,
    pub status: StripeSubscriptionStatus,
    /// Since API version 2025-03-31 periods live on subscription items; all items of a
    /// subscription share one period, so these come from the first item.
    pub current_period_start: Option<Timestamp>,
    pub current_period_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub metadata: BTreeMap<String, String>,
    pub items: Vec<SubscriptionItemSnapshot>,
    /// Stripe `start_date`: when the subscription (its first period) started.
    #[serde(default)]
    pub start_date: Option<Timestamp>,
    /// Stripe `billing_cycle_anchor`.
    #[serde(default)]
    pub billing_cycle_anchor: Option<Timestamp>,
    /// Stripe `trial_end` (the trial is a period of its own; usage in it is not billed).
    #[serde(default)]
    pub trial_end: Option<Timestamp>,
    /// Stripe `ended_at`: the moment a canceled subscription ended.
    #[serde(default)]
    pub ended_at: Option<Timestamp>,
}

/// One usage report to a Stripe Billing Meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterEvent {
    pub event_name: String,
    pub customer: StripeId,
    /// Stripe accepts whole numbers only.
    pub value: u64,
    /// Unique per report (tollgate's ledger key); also the idempotency anchor.
    pub identifier: String,
    pub timestamp: Timestamp,
}

/// Prepaid credit put on a customer's Stripe balance (applied to the next invoice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerCredit {
    pub customer: StripeId,
    /// Positive amount of credit in minor units (sent to Stripe negated: negative = credit).
    pub amount: MinorUnits,
    pub currency: Currency,
    /// tollgate's purchase id (e.g. the checkout session id); the idempotency anchor.
    pub purchase_id: String,
    pub description: String,
}

#[async_trait]
pub trait Payments: Send + Sync {
    /// The consumer-level Stripe customer (one-time payments and credit packs), created on
    /// first use. Concurrent callers for the same consumer get the same customer whatever
    /// `email` each passes: the create request carries only the consumer id (the intent's
    /// Idempotency-Key is derived from it), and the email is set afterwards if the customer has
    /// none.
    async fn ensure_customer(
        &self,
        consumer: &ConsumerId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId>;
    /// A Stripe customer of its own for one tollgate subscription billed by a Stripe
    /// subscription. Stripe Billing Meters aggregate usage per customer and meter, so each
    /// metered subscription needs its own customer for its invoice to charge only its own
    /// usage (`docs/billing-run.md`, "Attribution"). Metadata names the consumer and the
    /// subscription; the Idempotency-Key names the intent ("customer for subscription X"), so
    /// a retry returns the same customer.
    async fn create_subscription_customer(
        &self,
        consumer: &ConsumerId,
        subscription: &SubscriptionId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId>;
    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> PaymentsResult<CheckoutSession>;
    async fn get_subscription(&self, id: &StripeId) -> PaymentsResult<SubscriptionSnapshot>;
    /// Sets `cancel_at_period_end` (true: cancel at the end of the paid period; false: undo
    /// that, "resume"). `intent` names this request (e.g. `tgsub_x:v7`): it goes into the
    /// Idempotency-Key, so cancel → resume → cancel within Stripe's 24-hour replay window sends
    /// three distinct requests instead of replaying the first answer.
    async fn set_cancel_at_period_end(
        &self,
        id: &StripeId,
        cancel: bool,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot>;
    /// Cancels a Stripe subscription at once (`DELETE /v1/subscriptions/{id}`), e.g. one paid
    /// for after tollgate's subscription was canceled. `intent` as above.
    async fn cancel_subscription_now(
        &self,
        id: &StripeId,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot>;
    /// Expires an open Checkout Session so it can no longer be paid
    /// (`POST /v1/checkout/sessions/{id}/expire`). A session that is no longer open (paid, or
    /// expired already) answers `Ok(false)`.
    async fn expire_checkout_session(&self, id: &StripeId) -> PaymentsResult<bool>;
    async fn report_meter_event(&self, event: &MeterEvent) -> PaymentsResult<()>;
    /// The metadata of the Checkout Session a payment (PaymentIntent `pi_...`) was made in, or
    /// `None` when no session made it: how a refund or a dispute of a charge is traced back to
    /// what tollgate sold (a credit pack, one-time access). Stripe's advice for webhooks is to
    /// re-read the object; the session list filters by `payment_intent`
    /// (https://docs.stripe.com/api/checkout/sessions/list).
    async fn checkout_session_of_payment(
        &self,
        payment_intent: &str,
    ) -> PaymentsResult<Option<BTreeMap<String, String>>>;
    /// Returns the id of the customer balance transaction.
    async fn add_customer_credit(&self, credit: &CustomerCredit) -> PaymentsResult<StripeId>;
}

// ---------------------------------------------------------------------------------------------
// Catalog sync: the desired Stripe objects of a catalog, what Stripe has, and the actions that
// turn one into the other.
// ---------------------------------------------------------------------------------------------

/// A Billing Meter as the catalog wants it. Aggregation is always `sum`, the customer is
/// mapped by [`METER_CUSTOMER_KEY`] and the value read from [`METER_VALUE_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterSpec {
    pub event_name: String,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedMeter {
    pub id: StripeId,
    pub event_name: String,
    pub display_name: String,
    /// `sum`, `count` or `last`.
    pub aggregation: String,
    pub customer_payload_key: String,
    pub value_payload_key: String,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSpec {
    /// `tg_{product}`.
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedProduct {
    pub spec: ProductSpec,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageType {
    Licensed,
    /// Bound to the Billing Meter with this event name.
    Metered {
        meter_event_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSpec {
    /// `None` = `inf`.
    pub up_to: Option<u64>,
    /// Normalised: an absent amount is zero, so Stripe's `null` and `0` compare equal.
    pub flat_amount: Decimal,
    pub unit_amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceScheme {
    PerUnit {
        /// In minor units; sub-cent values go to Stripe as `unit_amount_decimal`.
        unit_amount: Decimal,
        /// Stripe `transform_quantity`: divide usage by `divide_by`, then round.
        transform: Option<(u64, Rounding)>,
    },
    Tiered {
        mode: TierMode,
        tiers: Vec<TierSpec>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringSpec {
    pub interval: Interval,
    pub usage: UsageType,
}

/// A Stripe Price as the catalog wants it. Everything here is immutable in Stripe except the
/// lookup key, so any difference means a new Price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceSpec {
    pub lookup_key: String,
    /// Stripe product id (`tg_{product}`).
    pub product: String,
    pub currency: Currency,
    /// `None` = one-time price.
    pub recurring: Option<RecurringSpec>,
    pub scheme: PriceScheme,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedPrice {
    pub id: StripeId,
    pub lookup_key: String,
    pub active: bool,
    /// `None` when Stripe's price uses something tollgate never creates (e.g. a meter this
    /// account does not have): it never matches, so sync replaces it.
    pub spec: Option<PriceSpec>,
}

/// What Stripe holds for a catalog: all meters, the catalog's products and the prices that
/// currently own the catalog's lookup keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedCatalog {
    pub meters: Vec<ObservedMeter>,
    pub products: Vec<ObservedProduct>,
    pub prices: Vec<ObservedPrice>,
}

/// One write of a catalog sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SyncAction {
    CreateMeter {
        spec: MeterSpec,
    },
    UpdateMeter {
        id: StripeId,
        spec: MeterSpec,
    },
    ReactivateMeter {
        id: StripeId,
        spec: MeterSpec,
    },
    CreateProduct {
        spec: ProductSpec,
    },
    UpdateProduct {
        spec: ProductSpec,
        /// What Stripe had; part of the idempotency key so A→B→A within 24 h is not replayed.
        from: ProductSpec,
        reactivate: bool,
    },
    /// A new Price that takes over the lookup key (`transfer_lookup_key=true`) from `replaces`,
    /// which stays for the subscriptions already on it.
    CreatePrice {
        spec: PriceSpec,
        replaces: Option<StripeId>,
    },
    /// `active=false` on a Price of a retired product: no new Checkout Session or subscription
    /// can use it, while the subscriptions already on it keep being billed
    /// (docs.stripe.com/products-prices/manage-prices#archive-price). Never a delete.
    ArchivePrice {
        id: StripeId,
        lookup_key: String,
    },
}

/// The Stripe side of catalog sync; the plan between the two calls is pure code.
#[async_trait]
pub trait CatalogSync: Send + Sync {
    /// Reads what Stripe holds for this catalog (reads only).
    async fn observe(&self, catalog: &Catalog) -> PaymentsResult<ObservedCatalog>;
    /// Applies one action; returns the id of the object it wrote.
    async fn apply(&self, action: &SyncAction) -> PaymentsResult<StripeId>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        serde_json::from_value(serde_json::json!({
            "version": 1, "currency": "usd",
            "meters": [{"id": "api_calls", "name": "API calls"}],
            "products": [
                {"id": "free", "name": "Free"},
                {"id": "std", "name": "Standard", "interval": "month", "prices": [
                    {"type": "flat", "key": "base", "amount": 8995},
                    {"type": "tiered", "key": "calls", "meter": "api_calls", "mode": "graduated",
                     "tiers": [{"up_to": 100000, "unit_amount": 0}, {"up_to": null, "unit_amount_decimal": "0.1"}]},
                    {"type": "one_time", "key": "setup", "amount": 5000}
                ]},
                {"id": "team", "name": "Team", "interval": "year", "prices": [
                    {"type": "per_seat", "key": "seat", "unit_amount": 1000, "min_seats": 2, "max_seats": 10}
                ]},
                {"id": "pass", "name": "Pass", "access": {"days": 30}, "prices": [
                    {"type": "one_time", "key": "once", "amount": 2500}
                ]},
                {"id": "credits", "name": "Credits", "prepaid": true, "interval": "month",
                 "credit": {"packs": [1000, 5000], "custom": {"min": 500, "max": 100000}},
                 "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount_decimal": "0.2"}]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn subscription_line_items_follow_the_catalog() {
        let c = catalog();
        let (mode, items) =
            checkout_line_items(c.product("std").unwrap(), Purchase::Product { seats: None })
                .unwrap();
        assert_eq!(mode, CheckoutMode::Subscription);
        let got: Vec<(String, Option<u64>)> = items
            .iter()
            .map(|i| match &i.price {
                CheckoutPrice::Synced { lookup_key } => (lookup_key.clone(), i.quantity),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("std.base".into(), Some(1)),
                ("std.calls".into(), None),
                ("std.setup".into(), Some(1)),
            ]
        );
    }

    #[test]
    fn seats_are_the_quantity_and_are_bounded() {
        let c = catalog();
        let team = c.product("team").unwrap();
        let (_, items) = checkout_line_items(team, Purchase::Product { seats: Some(3) }).unwrap();
        assert_eq!(items[0].quantity, Some(3));
        assert_eq!(
            checkout_line_items(team, Purchase::Product { seats: Some(1) }),
            Err(CheckoutError::SeatsOutOfRange { min: 2, max: 10 })
        );
        assert_eq!(
            checkout_line_items(team, Purchase::Product { seats: None }),
            Err(CheckoutError::SeatsRequired)
        );
    }

    #[test]
    fn one_time_products_and_credit_are_payments() {
        let c = catalog();
        let (mode, items) = checkout_line_items(
            c.product("pass").unwrap(),
            Purchase::Product { seats: None },
        )
        .unwrap();
        assert_eq!(mode, CheckoutMode::Payment);
        assert_eq!(items.len(), 1);

        let credits = c.product("credits").unwrap();
        let (mode, items) =
            checkout_line_items(credits, Purchase::Credit { amount: 5000 }).unwrap();
        assert_eq!(mode, CheckoutMode::Payment);
        assert_eq!(
            items[0].price,
            CheckoutPrice::Amount {
                product: credits.id.clone(),
                unit_amount: 5000
            }
        );
        assert!(checkout_line_items(credits, Purchase::Credit { amount: 700 }).is_ok());
        assert_eq!(
            checkout_line_items(credits, Purchase::Credit { amount: 200 }),
            Err(CheckoutError::NotAPack { amount: 200 })
        );
        // Prepaid usage is drawn from tollgate's balance, never a metered Stripe line.
        let (_, items) = checkout_line_items(credits, Purchase::Product { seats: None }).unwrap();
        assert!(items.is_empty());
        assert_eq!(
            checkout_line_items(
                c.product("free").unwrap(),
                Purchase::Product { seats: None }
            ),
            Err(CheckoutError::FreeProduct)
        );
    }

    #[test]
    fn stripe_statuses_map_to_domain_statuses() {
        use crate::subscription::SubscriptionStatus as S;
        let cases = [
            ("incomplete", Some(S::Pending)),
            ("trialing", Some(S::Active)),
            ("active", Some(S::Active)),
            ("past_due", Some(S::PastDue)),
            ("unpaid", Some(S::Suspended)),
            ("paused", Some(S::Suspended)),
            ("canceled", Some(S::Canceled)),
            ("incomplete_expired", Some(S::Canceled)),
            ("something_new", None),
        ];
        for (s, want) in cases {
            assert_eq!(StripeSubscriptionStatus::parse(s).to_domain(), want, "{s}");
        }
    }

    #[test]
    fn metadata_names_the_tollgate_subscription() {
        let req = CheckoutRequest {
            subscription_id: SubscriptionId::parse("sub_1").unwrap(),
            consumer_id: ConsumerId::parse("c1").unwrap(),
            customer: StripeId::parse("cus_1").unwrap(),
            product_id: ProductId::parse("std").unwrap(),
            subscription_name: "prod".into(),
            mode: CheckoutMode::Subscription,
            currency: Currency::usd(),
            line_items: vec![],
            trial_days: 0,
            extra_metadata: BTreeMap::new(),
            success_url: "https://x/ok".into(),
            cancel_url: "https://x/no".into(),
        };
        let m = req.metadata();
        assert_eq!(m[metadata::SUBSCRIPTION_ID], "sub_1");
        assert_eq!(m[metadata::CONSUMER_ID], "c1");
        assert_eq!(m[metadata::PRODUCT_ID], "std");
        assert_eq!(m[metadata::SUBSCRIPTION_NAME], "prod");
    }
}
