//! The catalog: what is sold, as code. One JSON file (`examples/catalog.json`), versioned by
//! its `version` field, described by `schemas/catalog.schema.json` (generated from these types).
//!
//! A product's pricing model is the list of its price components; each component becomes one
//! Stripe Price (lookup key `{product}.{key}`), so what the catalog says is what Stripe bills.

use crate::ids::{MeterId, PriceKey, ProductId};
use crate::money::{Currency, MinorUnits};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The catalog format version this build reads.
pub const CATALOG_VERSION: u32 = 1;

/// Largest amount (minor units) one price field may hold: Stripe rejects `unit_amount`,
/// `flat_amount` and one-time amounts above 8 digits (99,999,999 = $999,999.99). Keeping the
/// catalog inside Stripe's limit also bounds every product of pricing arithmetic.
pub const MAX_AMOUNT: MinorUnits = 99_999_999;

/// Stripe's `unit_amount_decimal` accepts at most 12 decimal places
/// (<https://docs.stripe.com/billing/subscriptions/decimal-amounts>).
pub const MAX_DECIMAL_PLACES: u32 = 12;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Format version; must be 1.
    pub version: u32,
    /// Currency of every price (lowercase ISO 4217, e.g. "usd").
    pub currency: Currency,
    /// Meters usage is counted on. Each becomes a Stripe Billing Meter.
    #[serde(default)]
    pub meters: Vec<Meter>,
    pub products: Vec<Product>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    /// Id used in usage records (`api_calls`).
    pub id: MeterId,
    /// Human name shown on invoices.
    pub name: String,
    /// Stripe meter `event_name`; defaults to the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Unit shown to people (`call`, `byte`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Meter {
    pub fn event_name(&self) -> &str {
        self.event_name.as_deref().unwrap_or(self.id.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Month,
    Year,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Billing interval of a subscription product; absent for one-time and credit products.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// Free trial days before the first charge (subscription products only).
    #[serde(default)]
    pub trial_days: u32,
    /// Usage allowed per quota window ([`Quota::period`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Calls per minute the gateway allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    /// The price components. Empty for a free product.
    #[serde(default)]
    pub prices: Vec<PriceComponent>,
    /// Time-limited access bought by a one-time payment (seed 003).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// Prepaid credit packs this product sells (seed 004).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<CreditPacks>,
    /// When true, this product's metered usage is paid from the consumer's prepaid credit
    /// balance (drawn down at ingestion) instead of being invoiced in arrears.
    #[serde(default)]
    pub prepaid: bool,
    /// `active` (the default) or `retired`. A retired product takes no new subscriptions
    /// (hidden from `GET /catalog`, checkout answers 409 naming it, `catalog sync` archives its
    /// Stripe Prices so Stripe refuses new sales too) while its live subscriptions keep their
    /// access, quota and billing: Stripe keeps billing subscriptions on archived Prices
    /// (docs.stripe.com/products-prices/manage-prices#archive-price).
    #[serde(default, skip_serializing_if = "ProductStatus::is_active")]
    pub status: ProductStatus,
    /// Only on a retired product: the product its subscribers are offered instead (the
    /// portal's upgrade target; moving them at renewal goes through the plan-change path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<ProductId>,
    /// Which calls of the provider's API count as usage when usage is read from the API
    /// Gateway access log (`functions/usage-from-logs`): by default the successful ones
    /// (HTTP 2xx and 3xx). Usage posted to `POST /usage` is counted as posted.
    #[serde(default, skip_serializing_if = "BillableCalls::is_default")]
    pub billable_calls: BillableCalls,
}

/// Whether a product is on sale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// On sale.
    #[default]
    Active,
    /// No new subscriptions; existing ones continue.
    Retired,
}

impl ProductStatus {
    pub fn is_active(&self) -> bool {
        matches!(self, ProductStatus::Active)
    }
}

/// Which answered calls are billable, by the HTTP status the consumer received.
///
/// A call the tollgate authorizer refused (402 / 429 / 403, or 401 without a key) is never
/// billable whatever this says: it was not served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillableCalls {
    /// 200–399: the call succeeded (the default).
    #[default]
    Successful,
    /// 200–499: client errors count too (the API did the work of answering them), server
    /// errors (5xx) do not.
    NotServerError,
    /// Every status from 100 to 599, server errors included.
    All,
}

impl BillableCalls {
    /// Whether a call answered with HTTP `status` is billable under this setting. Statuses
    /// outside 100–599 are never billable.
    pub fn counts(self, status: u16) -> bool {
        match self {
            BillableCalls::Successful => (200..400).contains(&status),
            BillableCalls::NotServerError => (200..500).contains(&status),
            BillableCalls::All => (100..600).contains(&status),
        }
    }

    fn is_default(&self) -> bool {
        *self == BillableCalls::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub meter: MeterId,
    /// Units per quota window; the gateway blocks (HTTP 429) once `used >= limit`.
    pub limit: u64,
    /// The window the limit counts over. Default: the billing period for monthly products,
    /// `month` for yearly products and products Stripe does not bill by period (free,
    /// one-time, prepaid). Months and billing periods are anchored at the subscription's
    /// anchor (a yearly plan's monthly quota resets on its anniversary day each month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<QuotaPeriod>,
}

/// The cadence a quota resets on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// A month anchored at the subscription's anchor (its start, or Stripe's billing cycle
    /// anchor), clamped to the month's last day as Stripe does.
    Month,
    /// The UTC day.
    Day,
    /// The subscription's billing period as Stripe tells it.
    BillingPeriod,
}

impl Quota {
    /// The cadence in force for a quota of `product` (see [`Quota::period`]).
    pub fn cadence(&self, product: &Product) -> QuotaPeriod {
        self.period.unwrap_or(match product.interval {
            Some(Interval::Month) => QuotaPeriod::BillingPeriod,
            _ => QuotaPeriod::Month,
        })
    }
}

/// One-time access: either until a fixed date or for a number of days from purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Access {
    /// Access ends at the start of this UTC date.
    Until(chrono::NaiveDate),
    /// Access lasts this many days from payment.
    Days(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditPacks {
    /// Fixed pack amounts, minor units of credit each.
    #[serde(default)]
    pub packs: Vec<MinorUnits>,
    /// An amount chosen by the consumer, within bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomAmount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomAmount {
    pub min: MinorUnits,
    pub max: MinorUnits,
}

/// One Stripe Price of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriceComponent {
    /// Recurring licensed price, quantity 1 (a monthly fee).
    Flat { key: PriceKey, amount: MinorUnits },
    /// Recurring licensed price per seat (quantity = seats).
    PerSeat {
        key: PriceKey,
        unit_amount: MinorUnits,
        #[serde(default = "one")]
        min_seats: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_seats: Option<u32>,
    },
    /// Recurring licensed price on the seat count, in tiers (Stripe: a licensed Price with
    /// `billing_scheme=tiered`, quantity = seats; docs.stripe.com/products-prices/pricing-models#tiered-pricing),
    /// e.g. graduated 1–10 seats for a $100 flat amount, then $8 a seat up to 50.
    TieredPerSeat {
        key: PriceKey,
        mode: TierMode,
        tiers: Vec<Tier>,
        #[serde(default = "one")]
        min_seats: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_seats: Option<u32>,
    },
    /// Metered price per unit of a meter, optionally sold in packages of N units.
    PerUnit {
        key: PriceKey,
        meter: MeterId,
        #[serde(flatten)]
        unit: UnitPrice,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        package: Option<Package>,
    },
    /// Metered tiered price (graduated or volume).
    Tiered {
        key: PriceKey,
        meter: MeterId,
        mode: TierMode,
        tiers: Vec<Tier>,
    },
    /// A one-time charge: the setup fee of a subscription product, or the price of a
    /// one-time product.
    OneTime { key: PriceKey, amount: MinorUnits },
}

fn one() -> u32 {
    1
}

impl PriceComponent {
    /// The Stripe Price lookup key of this component: `{product}.{key}`.
    pub fn lookup_key(&self, product: &ProductId) -> String {
        format!("{}.{}", product, self.key())
    }
    /// Billed every interval whatever the usage (Stripe `usage_type=licensed`).
    pub fn is_licensed(&self) -> bool {
        matches!(
            self,
            PriceComponent::Flat { .. }
                | PriceComponent::PerSeat { .. }
                | PriceComponent::TieredPerSeat { .. }
        )
    }
    /// Whether `seats` lies in this seat price's bounds (`None` when it is not a seat price).
    pub fn seats_allowed(&self, seats: u32) -> Option<bool> {
        self.seat_bounds()
            .map(|(min, max)| seats >= min && max.is_none_or(|m| seats <= m))
    }
    /// `(min_seats, max_seats)` of a price on the seat count (quantity = seats).
    pub fn seat_bounds(&self) -> Option<(u32, Option<u32>)> {
        match self {
            PriceComponent::PerSeat {
                min_seats,
                max_seats,
                ..
            }
            | PriceComponent::TieredPerSeat {
                min_seats,
                max_seats,
                ..
            } => Some((*min_seats, *max_seats)),
            _ => None,
        }
    }
    pub fn key(&self) -> &PriceKey {
        match self {
            PriceComponent::Flat { key, .. }
            | PriceComponent::PerSeat { key, .. }
            | PriceComponent::TieredPerSeat { key, .. }
            | PriceComponent::PerUnit { key, .. }
            | PriceComponent::Tiered { key, .. }
            | PriceComponent::OneTime { key, .. } => key,
        }
    }
    /// The meter a metered component bills, if it is metered.
    pub fn meter(&self) -> Option<&MeterId> {
        match self {
            PriceComponent::PerUnit { meter, .. } | PriceComponent::Tiered { meter, .. } => {
                Some(meter)
            }
            _ => None,
        }
    }
}

/// A unit price: whole minor units, or a decimal with up to 12 places (Stripe's
/// `unit_amount_decimal`) for sub-cent prices. Exactly one must be given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnitPrice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_amount: Option<MinorUnits>,
    /// Sub-cent unit price in minor units, as a decimal string (`"0.15"` = 0.15 cents).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    #[schemars(with = "Option<DecimalString>")]
    pub unit_amount_decimal: Option<Decimal>,
}

/// A decimal number written as a JSON string, as Stripe's `*_decimal` fields are, so that no
/// float ever touches a price.
struct DecimalString;

impl JsonSchema for DecimalString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DecimalString".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"})
    }
}

/// Package pricing (Stripe `transform_quantity`): usage is divided by `size` and rounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub size: u64,
    pub round: Rounding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierMode {
    /// Each unit is priced by the tier it falls in (Stripe `tiers_mode=graduated`).
    Graduated,
    /// All units are priced by the tier the total falls in (Stripe `tiers_mode=volume`).
    Volume,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Upper bound (inclusive) of this tier; `null` for the last tier (Stripe's `inf`).
    pub up_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_amount: Option<MinorUnits>,
    #[serde(flatten)]
    pub unit: UnitPrice,
}

impl Catalog {
    /// The catalog as sold today: retired products left out (`GET /catalog`).
    pub fn on_sale(&self) -> Catalog {
        Catalog {
            products: self
                .products
                .iter()
                .filter(|p| p.on_sale())
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.id.as_str() == id)
    }
    pub fn meter(&self, id: &str) -> Option<&Meter> {
        self.meters.iter().find(|m| m.id.as_str() == id)
    }
}

impl Product {
    /// Whether new subscriptions may be started (not retired).
    pub fn on_sale(&self) -> bool {
        self.status.is_active()
    }
    /// A product with no price component costs nothing and needs no Stripe at all.
    pub fn is_free(&self) -> bool {
        self.prices.is_empty() && self.credit.is_none()
    }
    pub fn is_recurring(&self) -> bool {
        self.interval.is_some()
    }
    /// Whether usage on `meter` counts for this product: a metered price or the quota uses
    /// it (the rule `POST /usage` admits records by).
    pub fn uses_meter(&self, meter: &MeterId) -> bool {
        self.metered().any(|p| p.meter() == Some(meter))
            || self.quota.as_ref().is_some_and(|q| &q.meter == meter)
    }
    /// Metered components, in catalog order.
    pub fn metered(&self) -> impl Iterator<Item = &PriceComponent> {
        self.prices.iter().filter(|p| p.meter().is_some())
    }
    /// The meter "usage" means for this product when no meter is named (`tollgate quote
    /// --usage N`, the gateway's plain call count): the first metered price's meter, else the
    /// quota's meter, else the catalog's first meter.
    pub fn primary_meter<'a>(&'a self, catalog: &'a Catalog) -> Option<&'a MeterId> {
        self.metered()
            .find_map(|p| p.meter())
            .or(self.quota.as_ref().map(|q| &q.meter))
            .or(catalog.meters.first().map(|m| &m.id))
    }
}

/// The catalog's JSON Schema (`schemas/catalog.schema.json`), generated from these types so
/// the published schema cannot drift from what the parser accepts.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Catalog);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod billable_calls_tests {
    use super::*;

    #[test]
    fn each_setting_counts_its_statuses() {
        let s = BillableCalls::Successful;
        assert!(!s.counts(199) && s.counts(200) && s.counts(399) && !s.counts(400));
        let n = BillableCalls::NotServerError;
        assert!(!n.counts(101) && n.counts(200) && n.counts(499) && !n.counts(500));
        let a = BillableCalls::All;
        assert!(!a.counts(99) && a.counts(100) && a.counts(599) && !a.counts(600));
        assert_eq!(BillableCalls::default(), BillableCalls::Successful);
    }

    #[test]
    fn a_product_without_the_setting_bills_successful_calls_and_keeps_it_out_of_its_json() {
        let p: Product = serde_json::from_str(r#"{"id": "payg", "name": "PAYG"}"#).unwrap();
        assert_eq!(p.billable_calls, BillableCalls::Successful);
        assert!(
            !serde_json::to_string(&p)
                .unwrap()
                .contains("billable_calls")
        );
        let p: Product = serde_json::from_str(
            r#"{"id": "payg", "name": "PAYG", "billable_calls": "not_server_error"}"#,
        )
        .unwrap();
        assert_eq!(p.billable_calls, BillableCalls::NotServerError);
        assert!(
            serde_json::from_str::<Product>(r#"{"id": "p", "name": "P", "billable_calls": "2xx"}"#)
                .is_err()
        );
    }
}
