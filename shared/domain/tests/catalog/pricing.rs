//! The pricing engine against the seed-001 table and each Stripe rule it implements.

use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use tollgate_domain::catalog::{PriceComponent, Tier, TierMode, UnitPrice};
use tollgate_domain::pricing::{
    Billing, ExactAmount, PricingError, QuoteRequest, metered_amount, price_metered, quote_product,
};
use tollgate_domain::{MeterId, PriceKey};

fn meter(id: &str) -> MeterId {
    MeterId::parse(id).unwrap()
}

fn usage(pairs: &[(&str, u64)]) -> QuoteRequest {
    QuoteRequest {
        usage: pairs
            .iter()
            .map(|(m, n)| (meter(m), *n))
            .collect::<BTreeMap<_, _>>(),
        seats: None,
        include_one_time: true,
    }
}

fn total(product: &str, calls: u64) -> i64 {
    quote_product(&super::example(), product, &usage(&[("api_calls", calls)]))
        .unwrap()
        .total
}

#[test]
fn seed_table_free_costs_nothing_and_tracks_its_quota() {
    let q = quote_product(&super::example(), "free", &usage(&[("api_calls", 150)])).unwrap();
    assert_eq!(q.total, 0);
    assert!(q.lines.is_empty());
    let quota = q.quota.unwrap();
    assert_eq!((quota.limit, quota.used, quota.exceeded), (100, 150, true));
    // The gateway's rule: used up at `used >= limit` (429 from the 100th call's answer on).
    assert!(
        quote_product(&super::example(), "free", &usage(&[("api_calls", 100)]))
            .unwrap()
            .quota
            .unwrap()
            .exceeded
    );
    assert!(
        !quote_product(&super::example(), "free", &usage(&[("api_calls", 99)]))
            .unwrap()
            .quota
            .unwrap()
            .exceeded
    );
}

#[test]
fn seed_table_developer_first_100_free_then_20_cents_per_100() {
    assert_eq!(total("developer", 0), 0);
    assert_eq!(total("developer", 100), 0);
    assert_eq!(total("developer", 200), 20);
    assert_eq!(total("developer", 1_100), 200);
    assert_eq!(total("developer", 250_000), 49_980);
    // 3 billable calls = 0.6 cents, rounded to 1 (nearest cent).
    assert_eq!(total("developer", 103), 1);
    // 2 billable calls = 0.4 cents, rounded to 0.
    assert_eq!(total("developer", 102), 0);
}

#[test]
fn seed_table_payg_15_cents_per_100() {
    assert_eq!(total("payg", 0), 0);
    assert_eq!(total("payg", 100), 15);
    assert_eq!(total("payg", 10_000), 1_500);
    assert_eq!(total("payg", 250_000), 37_500);
    // 10 calls = 1.5 cents: Stripe's own example rounds 1.5 up to 2.
    assert_eq!(total("payg", 10), 2);
    assert_eq!(total("payg", 3), 0);
}

#[test]
fn seed_table_basic_is_a_flat_monthly_fee() {
    for calls in [0, 50_000, 60_000] {
        assert_eq!(total("basic", calls), 1_495);
    }
    let q = quote_product(&super::example(), "basic", &usage(&[("api_calls", 60_000)])).unwrap();
    assert!(q.quota.unwrap().exceeded);
    assert_eq!(q.lines[0].billing, Billing::Licensed);
    assert_eq!(q.lines[0].lookup_key, "basic.base");
}

#[test]
fn seed_table_standard_8995_for_100k_then_10_cents_per_100() {
    assert_eq!(
        total("standard", 0),
        8_995,
        "the first tier's flat amount is the monthly fee"
    );
    assert_eq!(total("standard", 100_000), 8_995);
    assert_eq!(total("standard", 100_001), 8_995, "0.1 cent rounds to 0");
    assert_eq!(total("standard", 100_005), 8_996, "0.5 cent rounds up");
    assert_eq!(total("standard", 200_000), 18_995);
    assert_eq!(total("standard", 250_000), 23_995);
}

#[test]
fn seed_table_pro_44995_for_500k_then_6_cents_per_100() {
    assert_eq!(total("pro", 0), 44_995);
    assert_eq!(total("pro", 500_000), 44_995);
    assert_eq!(total("pro", 600_000), 50_995);
    assert_eq!(total("pro", 1_500_000), 104_995);
}

#[test]
fn seed_table_enterprise_74995_per_started_block_of_1_5m() {
    assert_eq!(total("enterprise", 0), 0);
    assert_eq!(total("enterprise", 1), 74_995);
    assert_eq!(total("enterprise", 1_500_000), 74_995);
    assert_eq!(total("enterprise", 1_500_001), 149_990);
    assert_eq!(total("enterprise", 4_500_000), 224_985);
    let q = quote_product(
        &super::example(),
        "enterprise",
        &usage(&[("api_calls", 1_500_001)]),
    )
    .unwrap();
    assert_eq!(
        q.lines[0].quantity, 2,
        "billed quantity is the number of packages"
    );
    assert_eq!(q.lines[0].usage, Some(1_500_001));
}

#[test]
fn graduated_flat_amount_applies_once_a_tier_is_reached() {
    let c = tiered(
        TierMode::Graduated,
        vec![
            tier(Some(10), None, Some(100)),
            tier(None, Some(500), Some(50)),
        ],
    );
    assert_eq!(metered_amount(&c, 0).unwrap(), 0);
    assert_eq!(metered_amount(&c, 10).unwrap(), 1_000);
    assert_eq!(metered_amount(&c, 11).unwrap(), 1_000 + 500 + 50);
    assert_eq!(metered_amount(&c, 12).unwrap(), 1_000 + 500 + 100);
    let p = price_metered(&c, 12).unwrap();
    assert_eq!(
        p.tiers.iter().map(|t| t.quantity).collect::<Vec<_>>(),
        [10, 2]
    );
}

/// Issue 13, "Rounding of graduated prices". Stripe rounds "on the line item level of your
/// invoices … If you have multiple line items, each will be rounded before summing up the total"
/// (https://docs.stripe.com/billing/subscriptions/decimal-amounts, "Rounding"). A graduated
/// price is one subscription item and tollgate (like the emulator) bills it as one line, so its
/// exact tier sum is rounded once: 3 × 0.2 + 2 × 0.3 = 1.2 → 1¢ (2¢ if each tier were its own
/// rounded line: 0.6 → 1 and 0.6 → 1). Stripe's docs as found do not say whether a graduated
/// price is split into one invoice line per tier; if it is, this test and its twin in the
/// emulator's arithmetic must change together.
#[test]
fn graduated_price_is_one_invoice_line_rounded_once() {
    let sub_cent = |up_to, unit: &str| Tier {
        up_to,
        flat_amount: None,
        unit: UnitPrice {
            unit_amount: None,
            unit_amount_decimal: Some(unit.parse().unwrap()),
        },
    };
    let c = tiered(
        TierMode::Graduated,
        vec![sub_cent(Some(3), "0.2"), sub_cent(None, "0.3")],
    );
    let p = price_metered(&c, 5).unwrap();
    assert_eq!(p.exact.to_string(), "1.2");
    assert_eq!(
        p.tiers
            .iter()
            .map(|t| t.amount.to_string())
            .collect::<Vec<_>>(),
        ["0.6", "0.6"]
    );
    assert_eq!(metered_amount(&c, 5).unwrap(), 1, "rounded once per price");
}

#[test]
fn volume_prices_every_unit_at_the_reached_tier() {
    assert_eq!(total("volume", 0), 0);
    assert_eq!(total("volume", 100_000), 10_000);
    // 100,001 × 0.08 = 8,000.08: a bigger usage can cost less under volume pricing.
    assert_eq!(total("volume", 100_001), 8_000);
    assert_eq!(total("volume", 1_000_000), 80_000);
    // The last tier adds its flat amount: 5,000 + 1,000,001 × 0.05 = 55,000.05.
    assert_eq!(total("volume", 1_000_001), 55_000);
}

#[test]
fn packages_round_up_or_down() {
    use tollgate_domain::catalog::{Package, Rounding};
    let per_unit = |round| PriceComponent::PerUnit {
        key: PriceKey::parse("k").unwrap(),
        meter: meter("api_calls"),
        unit: UnitPrice {
            unit_amount: Some(100),
            unit_amount_decimal: None,
        },
        package: Some(Package { size: 1_000, round }),
    };
    assert_eq!(metered_amount(&per_unit(Rounding::Up), 1_001).unwrap(), 200);
    assert_eq!(
        metered_amount(&per_unit(Rounding::Down), 1_999).unwrap(),
        100
    );
    assert_eq!(metered_amount(&per_unit(Rounding::Down), 999).unwrap(), 0);
    assert_eq!(metered_amount(&per_unit(Rounding::Up), 0).unwrap(), 0);
}

#[test]
fn per_seat_multiplies_by_seats_within_bounds() {
    let c = super::example();
    let mut req = usage(&[]);
    assert_eq!(
        quote_product(&c, "team", &req).unwrap().total,
        1_500,
        "min_seats by default"
    );
    req.seats = Some(7);
    let q = quote_product(&c, "team", &req).unwrap();
    assert_eq!((q.total, q.lines[0].quantity), (10_500, 7));
    req.seats = Some(51);
    assert!(matches!(
        quote_product(&c, "team", &req),
        Err(PricingError::SeatsOutOfRange {
            seats: 51,
            max: 50,
            ..
        })
    ));
    assert!(matches!(
        quote_product(&c, "basic", &req),
        Err(PricingError::NoSeatPrice(_))
    ));
}

#[test]
fn setup_fee_is_a_one_time_line() {
    let c = super::example();
    let mut req = usage(&[]);
    let first = quote_product(&c, "managed", &req).unwrap();
    assert_eq!(first.total, 19_900 + 4_995);
    assert_eq!(first.lines[0].billing, Billing::OneTime);
    req.include_one_time = false;
    assert_eq!(quote_product(&c, "managed", &req).unwrap().total, 4_995);
}

#[test]
fn one_time_products() {
    let c = super::example();
    for (product, amount) in [
        ("report", 4_900),
        ("season-pass", 2_900),
        ("week-pass", 999),
    ] {
        let q = quote_product(&c, product, &usage(&[])).unwrap();
        assert_eq!(q.total, amount, "{product}");
    }
    assert_eq!(
        quote_product(&c, "basic-yearly", &usage(&[]))
            .unwrap()
            .total,
        14_950
    );
}

#[test]
fn two_meters_are_priced_on_their_own_lines() {
    // 1,000 calls × 0.1 = 100; 5 GB × 0.000000009 cents/byte = 45.
    let q = quote_product(
        &super::example(),
        "data",
        &usage(&[("api_calls", 1_000), ("data_bytes", 5_000_000_000)]),
    )
    .unwrap();
    assert_eq!(
        q.lines.iter().map(|l| l.amount).collect::<Vec<_>>(),
        [100, 45]
    );
    assert_eq!(q.total, 145);
}

#[test]
fn rounding_happens_per_line_not_on_the_total() {
    // 4 calls × 0.1 = 0.4 and 50,000,000 bytes × 0.000000009 = 0.45 are two lines.
    let q = quote_product(
        &super::example(),
        "data",
        &usage(&[("api_calls", 4), ("data_bytes", 50_000_000)]),
    )
    .unwrap();
    // 0.4 → 0 and 0.45 → 0: the total is 0 although 0.4 + 0.45 = 0.85 would round to 1.
    assert_eq!(q.total, 0);
}

#[test]
fn prepaid_usage_is_marked_as_paid_from_credit() {
    let q = quote_product(
        &super::example(),
        "prepaid",
        &usage(&[("api_calls", 1_000)]),
    )
    .unwrap();
    assert_eq!(q.total, 100);
    assert_eq!(q.lines[0].billing, Billing::Prepaid);
    let credits = quote_product(&super::example(), "credits", &usage(&[])).unwrap();
    assert_eq!(
        credits.total, 0,
        "buying credit is a checkout amount, not a price"
    );
}

#[test]
fn bad_requests_are_errors() {
    let c = super::example();
    assert!(matches!(
        quote_product(&c, "nope", &usage(&[])),
        Err(PricingError::UnknownProduct(_))
    ));
    assert!(matches!(
        quote_product(&c, "payg", &usage(&[("requests", 1)])),
        Err(PricingError::UnknownMeter(m)) if m == "requests"
    ));
}

#[test]
fn price_of_n_units_for_credit_draw_down() {
    let c = super::example();
    let payg = &c.product("payg").unwrap().prices[0];
    // The cost of the next 10 calls after 10 calls: round(3.0) - round(1.5) = 3 - 2 = 1.
    let before = metered_amount(payg, 10).unwrap();
    let after = metered_amount(payg, 20).unwrap();
    assert_eq!((before, after, after - before), (2, 3, 1));
    assert_eq!(price_metered(payg, 7).unwrap().exact.to_string(), "1.05");
    assert!(matches!(
        metered_amount(&c.product("basic").unwrap().prices[0], 1),
        Err(PricingError::InvalidPrice { .. })
    ));
}

#[test]
fn exact_amounts_round_half_away_from_zero_and_print_trimmed() {
    let d = |s: rust_decimal::Decimal| ExactAmount::from_decimal(s).unwrap();
    assert_eq!(d(dec!(1.5)).round().unwrap(), 2);
    assert_eq!(d(dec!(2.5)).round().unwrap(), 3, "not banker's rounding");
    assert_eq!(d(dec!(2.499999999999)).round().unwrap(), 2);
    assert_eq!(d(dec!(-1.5)).round().unwrap(), -2);
    assert_eq!(d(dec!(0.000000000001)).to_string(), "0.000000000001");
    assert_eq!(d(dec!(15000.10)).to_string(), "15000.1");
    assert!(
        ExactAmount::from_decimal(dec!(0.0000000000001)).is_none(),
        "13 places"
    );
    assert!(
        ExactAmount::from_decimal(dec!(100000000)).is_none(),
        "above Stripe's limit"
    );
}

pub fn tier(up_to: Option<u64>, flat: Option<i64>, unit: Option<i64>) -> Tier {
    Tier {
        up_to,
        flat_amount: flat,
        unit: UnitPrice {
            unit_amount: unit,
            unit_amount_decimal: None,
        },
    }
}

pub fn tiered(mode: TierMode, tiers: Vec<Tier>) -> PriceComponent {
    PriceComponent::Tiered {
        key: PriceKey::parse("calls").unwrap(),
        meter: meter("api_calls"),
        mode,
        tiers,
    }
}

/// Licensed tiers on the seat count (Stripe: tiered licensed price, quantity = seats): the
/// same arithmetic as metered tiers, graduated or volume, with each tier's flat amount.
#[test]
fn tiered_seats_graduated_and_volume() {
    let seats = |product: &str, n: u32| {
        quote_product(
            &super::example(),
            product,
            &QuoteRequest {
                seats: Some(n),
                ..Default::default()
            },
        )
    };
    // team-tiers: 1–10 seats $100 flat, then $8 a seat, at most 50.
    for (n, want) in [
        (1, 10_000),
        (10, 10_000),
        (11, 10_800),
        (12, 11_600),
        (50, 42_000),
    ] {
        let q = seats("team-tiers", n).unwrap();
        assert_eq!(q.total, want, "{n} seats");
        assert_eq!(q.lines[0].billing, Billing::Licensed);
        assert_eq!(q.lines[0].quantity, u64::from(n));
    }
    assert_eq!(seats("team-tiers", 12).unwrap().lines[0].tiers.len(), 2);
    assert!(matches!(
        seats("team-tiers", 51),
        Err(PricingError::SeatsOutOfRange {
            seats: 51,
            max: 50,
            ..
        })
    ));
    assert_eq!(seats("team-tiers", 0).map(|q| q.total).ok(), None);
    // Volume: every seat at the rate of the tier the count falls in.
    let mut catalog = super::example();
    let product = catalog
        .products
        .iter_mut()
        .find(|p| p.id.as_str() == "team-tiers")
        .unwrap();
    product.prices[0] = PriceComponent::TieredPerSeat {
        key: PriceKey::parse("seats").unwrap(),
        mode: TierMode::Volume,
        tiers: vec![
            Tier {
                up_to: Some(10),
                flat_amount: None,
                unit: UnitPrice {
                    unit_amount: Some(1_000),
                    unit_amount_decimal: None,
                },
            },
            Tier {
                up_to: None,
                flat_amount: Some(500),
                unit: UnitPrice {
                    unit_amount: Some(800),
                    unit_amount_decimal: None,
                },
            },
        ],
        min_seats: 1,
        max_seats: None,
    };
    let volume = |n: u32| {
        quote_product(
            &catalog,
            "team-tiers",
            &QuoteRequest {
                seats: Some(n),
                ..Default::default()
            },
        )
        .unwrap()
        .total
    };
    assert_eq!(volume(10), 10_000);
    assert_eq!(volume(12), 500 + 12 * 800);
}
