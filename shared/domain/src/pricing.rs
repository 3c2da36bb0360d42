//! The pricing engine: what Stripe will invoice for a product, given usage per meter and seats.
//!
//! Every amount is computed exactly and rounded to integer minor units once per invoice line,
//! where Stripe rounds. The rules, each with the Stripe page it follows:
//!
//! 1. **Decimal amounts round per line, to the nearest minor unit.** A `unit_amount_decimal`
//!    (at most 12 decimal places) is multiplied by the quantity and the line's amount is rounded
//!    to the nearest whole cent; each line is rounded before the invoice total is summed, so the
//!    total is the sum of rounded lines. Stripe's example: 0.05 × 30 = 1.5, "rounded up to 2
//!    cents"; we round halves away from zero (amounts are never negative here).
//!    <https://docs.stripe.com/billing/subscriptions/decimal-amounts> (section "Rounding").
//! 2. **Graduated tiers** price each unit at the tier it falls in and sum the tiers; a tier's
//!    `flat_amount` is charged once when usage reaches that tier. The first tier starts at zero,
//!    so its flat amount is charged for every period, even one with no usage — this is what
//!    makes "$89.95/month for the first 100,000 calls" (seed 001, Standard) a monthly fee.
//!    Tier `i` covers `(up_to[i-1], up_to[i]]`, the last tier is unbounded (`inf`).
//!    <https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing> ("Graduated
//!    pricing"), Price API `tiers.flat_amount`: "the flat billing amount for an entire tier,
//!    regardless of the number of units in the tier" (<https://docs.stripe.com/api/prices/object>).
//! 3. **Volume tiers** price the whole quantity at the single tier the total falls in (flat
//!    amount of that tier plus quantity × its unit amount); a larger usage can cost less.
//!    <https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing> ("Volume-based
//!    pricing").
//! 4. **Packages** (`transform_quantity`): usage is divided by `divide_by` and rounded up or
//!    down *before* the unit price applies; a usage of 0 is 0 packages. Stripe does not allow
//!    quantity transformation together with tiers (our catalog type cannot express it).
//!    <https://docs.stripe.com/billing/subscriptions/usage-based/transform-quantities>.
//! 5. **Licensed prices** (flat fee, per seat) bill `unit_amount × quantity` whatever the usage;
//!    per-seat quantity is the number of seats.
//!    <https://docs.stripe.com/products-prices/pricing-models> ("Flat rate", "Per-seat").
//!
//! Arithmetic is integer: an exact amount is an `i128` count of 10⁻¹² minor units (Stripe's
//! finest decimal precision). Catalog amounts are bounded by [`MAX_AMOUNT`] (10⁸) and usage is
//! a `u64`, so usage × price stays below 10³³ and never overflows `i128` (max ≈ 1.7 × 10³⁸).
//! Only the final conversion to `i64` minor units can fail, as [`PricingError::TooLarge`].

use crate::catalog::{
    Catalog, MAX_AMOUNT, MAX_DECIMAL_PLACES, Package, PriceComponent, Product, Rounding, Tier,
    TierMode, UnitPrice,
};
use crate::ids::{MeterId, PriceKey, ProductId};
use crate::money::{Currency, MinorUnits};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Exact amounts are counted in 10⁻¹² minor units.
const SCALE: i128 = 1_000_000_000_000;

/// Why a quote cannot be computed. All are bad input (4xx / exit code 2), never a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("unknown meter {0:?}")]
    UnknownMeter(String),
    #[error("seats: {seats} is outside {min}..={max} for price {key:?}")]
    SeatsOutOfRange {
        key: PriceKey,
        seats: u32,
        min: u32,
        max: u32,
    },
    #[error("seats: product {0:?} has no per-seat price")]
    NoSeatPrice(ProductId),
    #[error("price {key:?}: {reason}")]
    InvalidPrice { key: PriceKey, reason: String },
    #[error("amount does not fit in 64-bit minor units")]
    TooLarge,
}

/// An exact, unrounded amount: an integer count of 10⁻¹² minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExactAmount(i128);

impl ExactAmount {
    pub const ZERO: ExactAmount = ExactAmount(0);

    pub fn from_minor(m: MinorUnits) -> Self {
        Self(i128::from(m) * SCALE)
    }

    /// The exact per-unit price of a [`UnitPrice`]; exactly one of its fields must be set.
    pub fn unit_price(key: &PriceKey, u: &UnitPrice) -> Result<Self, PricingError> {
        let invalid = |reason: &str| PricingError::InvalidPrice {
            key: key.clone(),
            reason: reason.to_string(),
        };
        match (u.unit_amount, u.unit_amount_decimal) {
            (Some(a), None) => Ok(Self::from_minor(a)),
            (None, Some(d)) => Self::from_decimal(d).ok_or_else(|| {
                invalid("unit_amount_decimal must have at most 12 decimal places and at most 8 integer digits")
            }),
            (Some(_), Some(_)) => Err(invalid(
                "set only one of unit_amount and unit_amount_decimal",
            )),
            (None, None) => Err(invalid("set unit_amount or unit_amount_decimal")),
        }
    }

    /// A decimal minor-unit amount with at most 12 places and |d| ≤ [`MAX_AMOUNT`].
    pub fn from_decimal(d: Decimal) -> Option<Self> {
        let d = d.normalize();
        if d.scale() > MAX_DECIMAL_PLACES || d.abs() > Decimal::from(MAX_AMOUNT) {
            return None;
        }
        let factor = 10i128.pow(MAX_DECIMAL_PLACES - d.scale());
        Some(Self(d.mantissa() * factor))
    }

    /// This amount times a quantity, checked: a catalog amount (≤ 10⁸ minor units = 10²⁰
    /// here) times usage up to 10¹⁸ fits `i128`, but a full-range `u64` quantity might not.
    pub fn times(self, quantity: u64) -> Result<Self, PricingError> {
        self.0
            .checked_mul(i128::from(quantity))
            .map(Self)
            .ok_or(PricingError::TooLarge)
    }

    pub fn plus(self, other: Self) -> Result<Self, PricingError> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .ok_or(PricingError::TooLarge)
    }

    /// Rounds to the nearest minor unit, halves away from zero (rule 1 in the module docs).
    pub fn round(self) -> Result<MinorUnits, PricingError> {
        let q = self.0 / SCALE;
        let r = self.0 % SCALE;
        let q = if r.abs() * 2 >= SCALE {
            q + self.0.signum()
        } else {
            q
        };
        MinorUnits::try_from(q).map_err(|_| PricingError::TooLarge)
    }

    /// The raw count of 10⁻¹² minor units.
    pub fn pico_minor_units(self) -> i128 {
        self.0
    }
}

/// Decimal notation in minor units, trailing zeros trimmed: `1.5`, `15000`, `0.000000009`.
impl fmt::Display for ExactAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.unsigned_abs();
        let int = v / SCALE as u128;
        let frac = v % SCALE as u128;
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:012}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for ExactAmount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How one tier contributed to a tiered line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierLine {
    /// 1-based tier number, as Stripe's invoice shows it.
    pub tier: usize,
    /// Units priced in this tier (graduated) or all units (volume).
    pub quantity: u64,
    pub flat_amount: MinorUnits,
    /// Unit price in minor units (decimal string).
    pub unit_amount: ExactAmount,
    /// Exact, unrounded contribution: flat + quantity × unit.
    pub amount: ExactAmount,
}

/// The exact price of a metered component for some usage, before rounding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredPrice {
    /// The quantity Stripe bills: usage, or packages for package pricing.
    pub quantity: u64,
    pub exact: ExactAmount,
    /// Per-tier breakdown (tiered prices only).
    pub tiers: Vec<TierLine>,
}

impl MeteredPrice {
    /// The line amount Stripe invoices (rule 1).
    pub fn amount(&self) -> Result<MinorUnits, PricingError> {
        self.exact.round()
    }
}

/// The price of `units` units of a metered component, exactly (rules 2–4). This is the pure
/// function the prepaid credit draw-down uses: the cost of the next `n` units after `u` is
/// `price(u + n) - price(u)` on the rounded amounts, which never charges a rounding twice.
///
/// Non-metered components are an error: they do not depend on usage.
pub fn price_metered(component: &PriceComponent, units: u64) -> Result<MeteredPrice, PricingError> {
    match component {
        PriceComponent::PerUnit {
            key, unit, package, ..
        } => {
            let unit_price = ExactAmount::unit_price(key, unit)?;
            let quantity = match package {
                Some(p) => packages(key, p, units)?,
                None => units,
            };
            Ok(MeteredPrice {
                quantity,
                exact: unit_price.times(quantity)?,
                tiers: Vec::new(),
            })
        }
        PriceComponent::Tiered {
            key, mode, tiers, ..
        } => price_tiers(key, *mode, tiers, units),
        other => Err(PricingError::InvalidPrice {
            key: other.key().clone(),
            reason: "is not a metered price".into(),
        }),
    }
}

/// `quantity` priced on `tiers` (rules 2–3): the metered quantity of a tiered metered price, or
/// the seats of a tiered licensed price — Stripe applies the same tier arithmetic to both
/// (docs.stripe.com/products-prices/pricing-models#tiered-pricing).
fn price_tiers(
    key: &PriceKey,
    mode: TierMode,
    tiers: &[Tier],
    quantity: u64,
) -> Result<MeteredPrice, PricingError> {
    let tiers = match mode {
        TierMode::Graduated => graduated(key, tiers, quantity)?,
        TierMode::Volume => volume(key, tiers, quantity)?,
    };
    let mut exact = ExactAmount::ZERO;
    for t in &tiers {
        exact = exact.plus(t.amount)?;
    }
    Ok(MeteredPrice {
        quantity,
        exact,
        tiers,
    })
}

/// [`price_metered`] rounded to the invoice line amount.
pub fn metered_amount(component: &PriceComponent, units: u64) -> Result<MinorUnits, PricingError> {
    price_metered(component, units)?.amount()
}

/// Rule 4: `transform_quantity` — divide, then round up or down.
fn packages(key: &PriceKey, p: &Package, units: u64) -> Result<u64, PricingError> {
    if p.size == 0 {
        return Err(PricingError::InvalidPrice {
            key: key.clone(),
            reason: "package size must be at least 1".into(),
        });
    }
    Ok(match p.round {
        Rounding::Down => units / p.size,
        Rounding::Up => units.div_ceil(p.size),
    })
}

fn tier_unit(key: &PriceKey, t: &Tier) -> Result<ExactAmount, PricingError> {
    // A tier may be flat-only (Stripe accepts a tier with just `flat_amount`).
    if t.unit.unit_amount.is_none() && t.unit.unit_amount_decimal.is_none() {
        return Ok(ExactAmount::ZERO);
    }
    ExactAmount::unit_price(key, &t.unit)
}

fn tier_line(
    key: &PriceKey,
    index: usize,
    t: &Tier,
    quantity: u64,
) -> Result<TierLine, PricingError> {
    let unit_amount = tier_unit(key, t)?;
    let flat_amount = t.flat_amount.unwrap_or(0);
    let amount = ExactAmount::from_minor(flat_amount).plus(unit_amount.times(quantity)?)?;
    Ok(TierLine {
        tier: index + 1,
        quantity,
        flat_amount,
        unit_amount,
        amount,
    })
}

/// Rule 2: graduated. Tier `i` covers `(lower, up_to]`; it is reached when usage exceeds
/// `lower`, and the first tier (lower = 0) is always reached.
fn graduated(key: &PriceKey, tiers: &[Tier], units: u64) -> Result<Vec<TierLine>, PricingError> {
    let mut lines = Vec::new();
    let mut lower = 0u64;
    for (i, t) in tiers.iter().enumerate() {
        let upper = t.up_to.unwrap_or(u64::MAX);
        if upper <= lower && i > 0 {
            return Err(PricingError::InvalidPrice {
                key: key.clone(),
                reason: format!("tier {} does not ascend", i + 1),
            });
        }
        let in_tier = units.min(upper) - lower;
        lines.push(tier_line(key, i, t, in_tier)?);
        if units <= upper {
            return Ok(lines);
        }
        lower = upper;
    }
    Err(PricingError::InvalidPrice {
        key: key.clone(),
        reason: "the last tier must be unbounded".into(),
    })
}

/// Rule 3: volume. All units at the first tier whose `up_to` is ≥ usage.
fn volume(key: &PriceKey, tiers: &[Tier], units: u64) -> Result<Vec<TierLine>, PricingError> {
    let (i, t) = tiers
        .iter()
        .enumerate()
        .find(|(_, t)| t.up_to.is_none_or(|up| units <= up))
        .ok_or_else(|| PricingError::InvalidPrice {
            key: key.clone(),
            reason: "the last tier must be unbounded".into(),
        })?;
    Ok(vec![tier_line(key, i, t, units)?])
}

/// What a quote is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuoteRequest {
    /// Usage per meter in the period.
    pub usage: BTreeMap<MeterId, u64>,
    /// Seats for a per-seat price; defaults to its `min_seats`.
    pub seats: Option<u32>,
    /// Include one-time prices (setup fee, one-time product): the first invoice / checkout.
    pub include_one_time: bool,
}

/// How a line is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// Every interval, whatever the usage (Stripe `licensed`).
    Licensed,
    /// For the usage of the interval, in arrears (Stripe `metered`).
    Metered,
    /// For the usage, drawn from the consumer's prepaid credit balance.
    Prepaid,
    /// Once (setup fee, one-time product).
    OneTime,
}

/// One invoice line: one price component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuoteLine {
    pub key: PriceKey,
    /// The Stripe Price lookup key (`{product}.{key}`).
    pub lookup_key: String,
    pub billing: Billing,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter: Option<MeterId>,
    /// Usage on the meter (metered lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<u64>,
    /// Quantity billed: 1, seats, usage, or packages.
    pub quantity: u64,
    /// Exact, unrounded amount (minor units, decimal string).
    pub exact: ExactAmount,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierLine>,
    /// Rounded line amount in minor units.
    pub amount: MinorUnits,
}

/// Quota state for the usage quoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaStatus {
    pub meter: MeterId,
    pub limit: u64,
    pub used: u64,
    pub exceeded: bool,
}

/// The priced answer: invoice lines and their total, in integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quote {
    pub product: ProductId,
    pub currency: Currency,
    pub lines: Vec<QuoteLine>,
    /// Sum of the rounded lines (rule 1).
    pub total: MinorUnits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaStatus>,
}

/// Prices `product` of `catalog` for the usage and seats of `req`.
pub fn quote(
    catalog: &Catalog,
    product: &Product,
    req: &QuoteRequest,
) -> Result<Quote, PricingError> {
    if let Some(m) = req
        .usage
        .keys()
        .find(|m| catalog.meter(m.as_str()).is_none())
    {
        return Err(PricingError::UnknownMeter(m.to_string()));
    }
    let used = |m: &MeterId| req.usage.get(m).copied().unwrap_or(0);
    if req.seats.is_some() && !product.prices.iter().any(|p| p.seat_bounds().is_some()) {
        return Err(PricingError::NoSeatPrice(product.id.clone()));
    }
    let mut lines = Vec::new();
    for component in &product.prices {
        let lookup_key = component.lookup_key(&product.id);
        let key = component.key().clone();
        let line = match component {
            PriceComponent::Flat { amount, .. } => QuoteLine {
                key,
                lookup_key,
                billing: Billing::Licensed,
                meter: None,
                usage: None,
                quantity: 1,
                exact: ExactAmount::from_minor(*amount),
                tiers: Vec::new(),
                amount: *amount,
            },
            PriceComponent::PerSeat { unit_amount, .. } => {
                seat_line(component, lookup_key, req.seats, |seats| {
                    Ok(MeteredPrice {
                        quantity: seats,
                        exact: ExactAmount::from_minor(*unit_amount).times(seats)?,
                        tiers: Vec::new(),
                    })
                })?
            }
            PriceComponent::TieredPerSeat {
                key, mode, tiers, ..
            } => seat_line(component, lookup_key, req.seats, |seats| {
                price_tiers(key, *mode, tiers, seats)
            })?,
            PriceComponent::OneTime { amount, .. } => {
                if !req.include_one_time {
                    continue;
                }
                QuoteLine {
                    key,
                    lookup_key,
                    billing: Billing::OneTime,
                    meter: None,
                    usage: None,
                    quantity: 1,
                    exact: ExactAmount::from_minor(*amount),
                    tiers: Vec::new(),
                    amount: *amount,
                }
            }
            PriceComponent::PerUnit { meter, .. } | PriceComponent::Tiered { meter, .. } => {
                let usage = used(meter);
                let priced = price_metered(component, usage)?;
                QuoteLine {
                    key,
                    lookup_key,
                    billing: if product.prepaid {
                        Billing::Prepaid
                    } else {
                        Billing::Metered
                    },
                    meter: Some(meter.clone()),
                    usage: Some(usage),
                    quantity: priced.quantity,
                    amount: priced.amount()?,
                    exact: priced.exact,
                    tiers: priced.tiers,
                }
            }
        };
        lines.push(line);
    }
    let total = lines
        .iter()
        .try_fold(0i64, |acc, l| acc.checked_add(l.amount))
        .ok_or(PricingError::TooLarge)?;
    let quota = product.quota.as_ref().map(|q| QuotaStatus {
        meter: q.meter.clone(),
        limit: q.limit,
        used: used(&q.meter),
        exceeded: crate::usage::quota_exceeded(used(&q.meter), q.limit),
    });
    Ok(Quote {
        product: product.id.clone(),
        currency: catalog.currency.clone(),
        lines,
        total,
        quota,
    })
}

/// The licensed line of a price on the seat count: `seats` (default the minimum) checked
/// against the bounds, then priced by `price`.
fn seat_line(
    component: &PriceComponent,
    lookup_key: String,
    seats: Option<u32>,
    price: impl FnOnce(u64) -> Result<MeteredPrice, PricingError>,
) -> Result<QuoteLine, PricingError> {
    let key = component.key().clone();
    let (min, max) = component.seat_bounds().unwrap_or((1, None));
    let seats = seats.unwrap_or(min);
    if component.seats_allowed(seats) == Some(false) {
        return Err(PricingError::SeatsOutOfRange {
            key,
            seats,
            min,
            max: max.unwrap_or(u32::MAX),
        });
    }
    let priced = price(u64::from(seats))?;
    Ok(QuoteLine {
        key,
        lookup_key,
        billing: Billing::Licensed,
        meter: None,
        usage: None,
        quantity: priced.quantity,
        amount: priced.amount()?,
        exact: priced.exact,
        tiers: priced.tiers,
    })
}

/// Looks the product up by id, then [`quote`]s it.
pub fn quote_product(
    catalog: &Catalog,
    product_id: &str,
    req: &QuoteRequest,
) -> Result<Quote, PricingError> {
    let product = catalog
        .product(product_id)
        .ok_or_else(|| PricingError::UnknownProduct(product_id.to_string()))?;
    quote(catalog, product, req)
}
