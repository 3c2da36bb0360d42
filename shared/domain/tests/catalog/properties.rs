//! Property tests of the pricing engine's invariants.

use super::pricing::tiered;
use proptest::prelude::*;
use rust_decimal::Decimal;
use tollgate_domain::catalog::{MAX_AMOUNT, Tier, TierMode, UnitPrice};
use tollgate_domain::pricing::{ExactAmount, PricingError, price_metered};

const MAX_USAGE: u64 = 1_000_000_000_000;

/// A unit price as a catalog may hold it: whole minor units, or a decimal with up to 12 places.
fn unit_price(max_minor: i64) -> impl Strategy<Value = UnitPrice> {
    prop_oneof![
        (0..=max_minor).prop_map(|a| UnitPrice {
            unit_amount: Some(a),
            unit_amount_decimal: None
        }),
        (0..=max_minor, 0u64..1_000_000_000_000, 0u32..=12).prop_map(|(int, frac, places)| {
            let frac = frac % 10u64.pow(places);
            let d = Decimal::from(int) + Decimal::from_i128_with_scale(i128::from(frac), places);
            UnitPrice {
                unit_amount: None,
                unit_amount_decimal: Some(d.min(Decimal::from(MAX_AMOUNT))),
            }
        }),
    ]
}

/// 1–5 tiers with ascending bounds, the last unbounded.
fn tiers(max_minor: i64) -> impl Strategy<Value = Vec<Tier>> {
    prop::collection::vec(
        (
            1u64..MAX_USAGE / 10,
            prop::option::of(0..=max_minor),
            unit_price(max_minor),
        ),
        1..=5,
    )
    .prop_map(|raw| {
        let mut bound = 0u64;
        let n = raw.len();
        raw.into_iter()
            .enumerate()
            .map(|(i, (step, flat, unit))| {
                bound += step;
                Tier {
                    up_to: (i + 1 < n).then_some(bound),
                    flat_amount: flat,
                    unit,
                }
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn graduated_total_is_monotone_in_usage(
        tiers in tiers(100_000),
        a in 0..=MAX_USAGE,
        b in 0..=MAX_USAGE,
    ) {
        let (lo, hi) = (a.min(b), a.max(b));
        let c = tiered(TierMode::Graduated, tiers);
        let at_lo = price_metered(&c, lo).unwrap();
        let at_hi = price_metered(&c, hi).unwrap();
        prop_assert!(at_lo.exact <= at_hi.exact);
        prop_assert!(at_lo.amount().unwrap() <= at_hi.amount().unwrap());
    }

    #[test]
    fn volume_and_graduated_agree_on_a_single_tier(
        flat in prop::option::of(0..=MAX_AMOUNT),
        unit in unit_price(1_000_000),
        usage in 0..=MAX_USAGE,
    ) {
        let one = vec![Tier { up_to: None, flat_amount: flat, unit }];
        let g = price_metered(&tiered(TierMode::Graduated, one.clone()), usage).unwrap();
        let v = price_metered(&tiered(TierMode::Volume, one), usage).unwrap();
        prop_assert_eq!(g.exact, v.exact);
        prop_assert_eq!(g.amount(), v.amount());
    }

    /// With every amount at Stripe's maximum and usage up to 10¹², the exact arithmetic never
    /// overflows; the only failure is a total beyond i64 minor units, reported as TooLarge.
    #[test]
    fn no_overflow_for_usage_up_to_10_pow_12(
        tiers in tiers(MAX_AMOUNT),
        mode in prop_oneof![Just(TierMode::Graduated), Just(TierMode::Volume)],
        usage in 0..=MAX_USAGE,
    ) {
        let c = tiered(mode, tiers);
        let priced = price_metered(&c, usage).unwrap();
        let cents = priced.exact.pico_minor_units() / 1_000_000_000_000;
        match priced.amount() {
            Ok(amount) => prop_assert!((i128::from(amount) - cents).abs() <= 1),
            Err(e) => {
                prop_assert_eq!(e, PricingError::TooLarge);
                prop_assert!(cents >= i128::from(i64::MAX));
            }
        }
    }

    /// Graduated pricing equals an independent unit-by-tier reference computation.
    #[test]
    fn graduated_matches_a_reference_sum(tiers in tiers(10_000), usage in 0..=MAX_USAGE) {
        let mut expected = ExactAmount::ZERO;
        let mut lower = 0u64;
        for (i, t) in tiers.iter().enumerate() {
            if i > 0 && usage <= lower { break; }
            let upper = t.up_to.unwrap_or(u64::MAX);
            let n = usage.min(upper) - lower;
            let unit = ExactAmount::unit_price(&"k".parse_key(), &t.unit).unwrap();
            expected = expected
                .plus(ExactAmount::from_minor(t.flat_amount.unwrap_or(0)))
                .unwrap()
                .plus(unit.times(n).unwrap())
                .unwrap();
            lower = upper;
        }
        let c = tiered(TierMode::Graduated, tiers);
        prop_assert_eq!(price_metered(&c, usage).unwrap().exact, expected);
    }
}

trait ParseKey {
    fn parse_key(&self) -> tollgate_domain::PriceKey;
}
impl ParseKey for &str {
    fn parse_key(&self) -> tollgate_domain::PriceKey {
        tollgate_domain::PriceKey::parse(*self).unwrap()
    }
}
