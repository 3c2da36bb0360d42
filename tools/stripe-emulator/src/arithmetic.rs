//! Stripe's invoice arithmetic, written independently of tollgate's pricing engine so that each
//! checks the other.
//!
//! Rules implemented (Stripe docs "Usage-based pricing models" and the Price object):
//! - `per_unit`: quantity × `unit_amount_decimal`; with `transform_quantity` the quantity is first
//!   divided by `divide_by` and rounded `up` or `down` (package pricing).
//! - `tiered` + `graduated`: each tier charges its own units at its unit price, plus its flat
//!   amount when any unit falls in it. The first tier's flat amount is charged even at zero
//!   quantity (a tier-plus-overage plan's base fee is due whether or not the API was called).
//! - `tiered` + `volume`: the tier that contains the whole quantity prices every unit.
//! - Sub-cent unit prices are exact decimals; the line total is rounded once, half away from
//!   zero, to the minor unit.

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// `None` is `inf`.
    pub up_to: Option<u64>,
    pub unit_amount: Decimal,
    pub flat_amount: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TiersMode {
    Graduated,
    Volume,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scheme {
    PerUnit {
        unit_amount: Decimal,
        transform: Option<(u64, bool)>,
    },
    Tiered {
        mode: TiersMode,
        tiers: Vec<Tier>,
    },
}

impl Scheme {
    /// Reads the scheme from a stored Price object (which always keeps its `tiers`).
    pub fn from_price(price: &Value) -> Scheme {
        let dec = |v: &Value| -> Decimal {
            match v {
                Value::String(s) => s.parse().unwrap_or_default(),
                Value::Number(n) => n.to_string().parse().unwrap_or_default(),
                _ => Decimal::ZERO,
            }
        };
        if price["billing_scheme"] == "tiered" {
            let tiers = price["tiers"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| Tier {
                            up_to: t["up_to"].as_u64(),
                            unit_amount: dec(&t["unit_amount_decimal"]),
                            flat_amount: dec(&t["flat_amount_decimal"]),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mode = if price["tiers_mode"] == "volume" {
                TiersMode::Volume
            } else {
                TiersMode::Graduated
            };
            Scheme::Tiered { mode, tiers }
        } else {
            let transform = price["transform_quantity"]["divide_by"]
                .as_u64()
                .map(|d| (d, price["transform_quantity"]["round"] == "up"));
            Scheme::PerUnit {
                unit_amount: dec(&price["unit_amount_decimal"]),
                transform,
            }
        }
    }

    /// The exact (unrounded) amount in minor units for `quantity`.
    pub fn exact_amount(&self, quantity: u64) -> Decimal {
        match self {
            Scheme::PerUnit {
                unit_amount,
                transform,
            } => {
                let q = match transform {
                    None => quantity,
                    Some((divide_by, round_up)) => {
                        let whole = quantity / divide_by;
                        if *round_up && !quantity.is_multiple_of(*divide_by) {
                            whole + 1
                        } else {
                            whole
                        }
                    }
                };
                Decimal::from(q) * unit_amount
            }
            Scheme::Tiered {
                mode: TiersMode::Graduated,
                tiers,
            } => {
                let mut total = Decimal::ZERO;
                let mut lower = 0u64;
                for (i, tier) in tiers.iter().enumerate() {
                    let upper = tier.up_to.unwrap_or(u64::MAX);
                    let in_tier = quantity.min(upper).saturating_sub(lower);
                    if in_tier > 0 || i == 0 {
                        total += tier.flat_amount + Decimal::from(in_tier) * tier.unit_amount;
                    }
                    if quantity <= upper {
                        break;
                    }
                    lower = upper;
                }
                total
            }
            Scheme::Tiered {
                mode: TiersMode::Volume,
                tiers,
            } => tiers
                .iter()
                .find(|t| t.up_to.is_none_or(|u| quantity <= u))
                .map(|t| t.flat_amount + Decimal::from(quantity) * t.unit_amount)
                .unwrap_or_default(),
        }
    }

    /// The line amount in minor units.
    pub fn amount(&self, quantity: u64) -> i64 {
        round_minor(self.exact_amount(quantity))
    }
}

pub fn round_minor(d: Decimal) -> i64 {
    let r = d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(r.mantissa() / 10i128.pow(r.scale())).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn standard() -> Scheme {
        Scheme::Tiered {
            mode: TiersMode::Graduated,
            tiers: vec![
                Tier {
                    up_to: Some(100_000),
                    unit_amount: dec!(0),
                    flat_amount: dec!(8995),
                },
                Tier {
                    up_to: None,
                    unit_amount: dec!(0.1),
                    flat_amount: dec!(0),
                },
            ],
        }
    }

    #[test]
    fn graduated_tier_plus_overage() {
        assert_eq!(standard().amount(250_000), 23_995);
        assert_eq!(standard().amount(100_000), 8_995);
        assert_eq!(standard().amount(100_001), 8_995); // 0.1¢ rounds to nothing
        assert_eq!(standard().amount(100_005), 8_996); // 0.5¢ rounds half away from zero
        assert_eq!(standard().amount(0), 8_995);
    }

    #[test]
    fn freemium_graduated_without_flat_fee() {
        // first 100 calls free, then $0.20 per 100 calls = 0.2¢ per call
        let s = Scheme::Tiered {
            mode: TiersMode::Graduated,
            tiers: vec![
                Tier {
                    up_to: Some(100),
                    unit_amount: dec!(0),
                    flat_amount: dec!(0),
                },
                Tier {
                    up_to: None,
                    unit_amount: dec!(0.2),
                    flat_amount: dec!(0),
                },
            ],
        };
        assert_eq!(s.amount(0), 0);
        assert_eq!(s.amount(100), 0);
        assert_eq!(s.amount(1_100), 200);
    }

    #[test]
    fn volume_prices_every_unit_at_the_reached_tier() {
        let s = Scheme::Tiered {
            mode: TiersMode::Volume,
            tiers: vec![
                Tier {
                    up_to: Some(10),
                    unit_amount: dec!(500),
                    flat_amount: dec!(0),
                },
                Tier {
                    up_to: None,
                    unit_amount: dec!(400),
                    flat_amount: dec!(1000),
                },
            ],
        };
        assert_eq!(s.amount(10), 5_000);
        assert_eq!(s.amount(11), 11 * 400 + 1000);
    }

    #[test]
    fn package_pricing_rounds_blocks() {
        let up = Scheme::PerUnit {
            unit_amount: dec!(74995),
            transform: Some((1_500_000, true)),
        };
        assert_eq!(up.amount(1), 74_995);
        assert_eq!(up.amount(1_500_000), 74_995);
        assert_eq!(up.amount(1_500_001), 149_990);
        let down = Scheme::PerUnit {
            unit_amount: dec!(100),
            transform: Some((10, false)),
        };
        assert_eq!(down.amount(19), 100);
    }

    /// A graduated price is one invoice line, rounded once (Stripe: "Rounding occurs on the line
    /// item level of your invoices", https://docs.stripe.com/billing/subscriptions/decimal-amounts):
    /// 3 × 0.2 + 2 × 0.3 = 1.2 → 1¢, not 0.6 → 1 plus 0.6 → 1 = 2¢ per tier line. The twin of
    /// tollgate's `graduated_price_is_one_invoice_line_rounded_once`.
    #[test]
    fn graduated_price_is_one_line_rounded_once() {
        let s = Scheme::Tiered {
            mode: TiersMode::Graduated,
            tiers: vec![
                Tier {
                    up_to: Some(3),
                    unit_amount: dec!(0.2),
                    flat_amount: dec!(0),
                },
                Tier {
                    up_to: None,
                    unit_amount: dec!(0.3),
                    flat_amount: dec!(0),
                },
            ],
        };
        assert_eq!(s.exact_amount(5), dec!(1.2));
        assert_eq!(s.amount(5), 1);
    }

    #[test]
    fn decimal_unit_amount_rounds_to_nearest_minor_unit() {
        let s = Scheme::PerUnit {
            unit_amount: dec!(0.15),
            transform: None,
        };
        assert_eq!(s.amount(3), 0); // 0.45
        assert_eq!(s.amount(4), 1); // 0.60
        assert_eq!(s.amount(10_000), 1_500);
    }
}
