//! Every kind of bad catalog is rejected, with the JSON path of the problem, and all problems
//! of a catalog are reported at once.
//!
//! Each test starts from the valid example catalog and breaks one thing. Product indices:
//! 0 free, 1 developer, 2 payg, 3 basic, 4 standard, 5 pro, 6 enterprise, 7 report,
//! 8 season-pass, 9 week-pass, 10 managed, 11 team, 12 basic-yearly, 13 data, 14 volume,
//! 15 credits, 16 prepaid.

use serde_json::{Value, json};
use tollgate_domain::Catalog;

/// The errors (as `path: message` lines) of the example catalog after `change`.
fn errors_after(change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v: Value = serde_json::from_str(super::EXAMPLE).unwrap();
    change(&mut v);
    match Catalog::from_json(&v.to_string()) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// Sets (or adds) the field at a JSON pointer.
fn set(v: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = value;
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{parent} not in example"))
        .insert(key.to_string(), value);
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|o| o.remove(key))
        .unwrap_or_else(|| panic!("{pointer} not in example"));
}

#[track_caller]
fn assert_has(errors: &[String], expected: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(expected) || e.contains(expected)),
        "expected an error like {expected:?}, got:\n{}",
        errors.join("\n")
    );
}

#[test]
fn example_catalog_is_valid() {
    let c = super::example();
    assert_eq!(c.products.len(), 18);
    assert!(c.validate().is_ok());
}

#[test]
fn wrong_version() {
    let e = errors_after(|v| set(v, "/version", json!(2)));
    assert_has(&e, "version: must be 1");
}

#[test]
fn duplicate_product_ids() {
    let e = errors_after(|v| set(v, "/products/3/id", json!("free")));
    assert_has(
        &e,
        "products[3].id: duplicate product id \"free\" (first at products[0])",
    );
}

#[test]
fn duplicate_price_keys() {
    let e = errors_after(|v| set(v, "/products/13/prices/1/key", json!("calls")));
    assert_has(
        &e,
        "products[13].prices[1].key: duplicate price key \"calls\"",
    );
}

#[test]
fn duplicate_meter_ids() {
    let e = errors_after(|v| set(v, "/meters/1/id", json!("api_calls")));
    assert_has(&e, "meters[1].id: duplicate meter id \"api_calls\"");
}

#[test]
fn unknown_meter_reference() {
    let e = errors_after(|v| set(v, "/products/2/prices/0/meter", json!("calls")));
    assert_has(&e, "products[2].prices[0].meter: unknown meter \"calls\"");
}

#[test]
fn quota_on_unknown_meter() {
    let e = errors_after(|v| set(v, "/products/0/quota/meter", json!("requests")));
    assert_has(&e, "products[0].quota.meter: unknown meter \"requests\"");
}

#[test]
fn one_meter_billed_twice_in_a_product() {
    let e = errors_after(|v| set(v, "/products/13/prices/1/meter", json!("api_calls")));
    assert_has(
        &e,
        "products[13].prices[1].meter: meter \"api_calls\" is already billed by prices[0]",
    );
}

#[test]
fn tiers_not_ascending() {
    let e = errors_after(|v| set(v, "/products/14/prices/0/tiers/1/up_to", json!(50000)));
    assert_has(
        &e,
        "products[14].prices[0].tiers[1].up_to: must be greater than the previous tier",
    );
}

#[test]
fn last_tier_not_unbounded() {
    let e = errors_after(|v| set(v, "/products/4/prices/0/tiers/1/up_to", json!(200000)));
    assert_has(
        &e,
        "products[4].prices[0].tiers[1].up_to: the last tier must be unbounded",
    );
}

#[test]
fn unbounded_tier_before_the_last() {
    let e = errors_after(|v| set(v, "/products/14/prices/0/tiers/0/up_to", Value::Null));
    assert_has(
        &e,
        "products[14].prices[0].tiers[0].up_to: only the last tier may be unbounded",
    );
}

#[test]
fn tiered_price_without_tiers() {
    let e = errors_after(|v| set(v, "/products/1/prices/0/tiers", json!([])));
    assert_has(
        &e,
        "products[1].prices[0].tiers: must have at least one tier",
    );
}

#[test]
fn both_unit_amount_and_unit_amount_decimal() {
    let e = errors_after(|v| set(v, "/products/2/prices/0/unit_amount", json!(1)));
    assert_has(
        &e,
        "products[2].prices[0].unit_amount_decimal: set only one of unit_amount and unit_amount_decimal",
    );
}

#[test]
fn neither_unit_amount_nor_unit_amount_decimal() {
    let e = errors_after(|v| remove(v, "/products/2/prices/0/unit_amount_decimal"));
    assert_has(
        &e,
        "products[2].prices[0]: must set unit_amount or unit_amount_decimal",
    );
}

#[test]
fn tier_without_any_amount() {
    let e = errors_after(|v| remove(v, "/products/14/prices/0/tiers/0/unit_amount_decimal"));
    assert_has(
        &e,
        "products[14].prices[0].tiers[0]: must set flat_amount, unit_amount or unit_amount_decimal",
    );
}

#[test]
fn more_than_twelve_decimal_places() {
    let e = errors_after(|v| {
        set(
            v,
            "/products/2/prices/0/unit_amount_decimal",
            json!("0.1500000000001"),
        )
    });
    assert_has(
        &e,
        "products[2].prices[0].unit_amount_decimal: must have at most 12 decimal places",
    );
    // Trailing zeros are not precision: 0.150000000000000 is 0.15.
    let e = errors_after(|v| {
        set(
            v,
            "/products/2/prices/0/unit_amount_decimal",
            json!("0.150000000000000"),
        )
    });
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn negative_amounts() {
    let e = errors_after(|v| {
        set(v, "/products/3/prices/0/amount", json!(-1495));
        set(
            v,
            "/products/2/prices/0/unit_amount_decimal",
            json!("-0.15"),
        );
        set(v, "/products/4/prices/0/tiers/0/flat_amount", json!(-1));
        set(v, "/products/11/prices/0/unit_amount", json!(-1500));
        set(v, "/products/10/prices/0/amount", json!(-19900));
    });
    assert_has(&e, "products[3].prices[0].amount: must not be negative");
    assert_has(
        &e,
        "products[2].prices[0].unit_amount_decimal: must not be negative",
    );
    assert_has(
        &e,
        "products[4].prices[0].tiers[0].flat_amount: must not be negative",
    );
    assert_has(
        &e,
        "products[11].prices[0].unit_amount: must not be negative",
    );
    assert_has(&e, "products[10].prices[0].amount: must not be negative");
    assert_eq!(e.len(), 5, "{e:?}");
}

#[test]
fn amount_above_stripe_limit() {
    let e = errors_after(|v| set(v, "/products/6/prices/0/unit_amount", json!(100_000_000)));
    assert_has(
        &e,
        "products[6].prices[0].unit_amount: must be at most 99999999 minor units",
    );
}

#[test]
fn package_size_zero() {
    let e = errors_after(|v| set(v, "/products/6/prices/0/package/size", json!(0)));
    assert_has(&e, "products[6].prices[0].package.size: must be at least 1");
}

#[test]
fn metered_price_on_product_without_interval() {
    let e = errors_after(|v| remove(v, "/products/2/interval"));
    assert_has(
        &e,
        "products[2].prices[0]: a metered price needs the product's interval",
    );
}

#[test]
fn recurring_licensed_price_on_product_without_interval() {
    let e = errors_after(|v| remove(v, "/products/3/interval"));
    assert_has(
        &e,
        "products[3].prices[0]: a recurring price needs the product's interval",
    );
}

#[test]
fn credit_pack_min_greater_than_max() {
    let e = errors_after(|v| set(v, "/products/15/credit/custom/min", json!(200000)));
    assert_has(
        &e,
        "products[15].credit.custom.min: must not be greater than max (200000 > 100000)",
    );
}

#[test]
fn credit_packs_must_be_positive_and_distinct() {
    let e = errors_after(|v| set(v, "/products/15/credit/packs", json!([0, 1000, 1000])));
    assert_has(&e, "products[15].credit.packs[0]: must be positive");
    assert_has(&e, "products[15].credit.packs[2]: duplicate pack 1000");
}

#[test]
fn mixed_intervals_one_time_access_on_a_subscription() {
    let e = errors_after(|v| set(v, "/products/9/interval", json!("month")));
    assert_has(
        &e,
        "products[9].access: time-limited access is bought by a one-time payment",
    );
    assert_has(
        &e,
        "products[9].interval: a product whose only prices are one_time has nothing to bill",
    );
}

#[test]
fn credit_sold_on_a_subscription() {
    let e = errors_after(|v| set(v, "/products/15/interval", json!("year")));
    assert_has(
        &e,
        "products[15].credit: credit packs are one-time purchases",
    );
}

#[test]
fn access_needs_a_one_time_price_and_a_duration() {
    let e = errors_after(|v| {
        set(v, "/products/9/access", json!({"days": 0}));
        set(v, "/products/8/prices", json!([]));
    });
    assert_has(&e, "products[9].access.days: must be at least 1");
    assert_has(&e, "products[8].access: needs a one_time price");
}

#[test]
fn prepaid_product_without_a_credit_seller() {
    let e = errors_after(|v| {
        v["products"].as_array_mut().unwrap().remove(15);
    });
    assert_has(
        &e,
        "products[15].prepaid: no product in the catalog sells credit",
    );
}

#[test]
fn prepaid_product_without_metered_price() {
    let e = errors_after(|v| set(v, "/products/16/prices", json!([])));
    assert_has(
        &e,
        "products[16].prepaid: a prepaid product needs a metered price",
    );
}

#[test]
fn trial_on_a_one_time_product() {
    let e = errors_after(|v| set(v, "/products/7/trial_days", json!(7)));
    assert_has(
        &e,
        "products[7].trial_days: only a subscription product (with an interval) can have a trial",
    );
}

#[test]
fn seat_bounds() {
    let e = errors_after(|v| {
        set(v, "/products/11/prices/0/min_seats", json!(10));
        set(v, "/products/11/prices/0/max_seats", json!(5));
    });
    assert_has(
        &e,
        "products[11].prices[0].max_seats: must be at least min_seats (5 < 10)",
    );
}

#[test]
fn zero_rate_limit_and_zero_quota() {
    let e = errors_after(|v| {
        set(v, "/products/1/rate_limit_per_minute", json!(0));
        set(v, "/products/0/quota/limit", json!(0));
    });
    assert_has(&e, "products[1].rate_limit_per_minute: must be at least 1");
    assert_has(&e, "products[0].quota.limit: must be at least 1");
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let e = errors_after(|v| set(v, "/products/3/rate_limit", json!(100)));
    assert_has(&e, "products[3].rate_limit: unknown field `rate_limit`");
    let e = errors_after(|v| set(v, "/products/0/quota/limt", json!(100)));
    assert_has(&e, "products[0].quota.limt: unknown field `limt`");
    let e = errors_after(|v| set(v, "/products/4/prices/0/tiers/0/unit_price", json!(3)));
    assert_has(
        &e,
        "products[4].prices[0].tiers[0]: unknown field `unit_price`",
    );
    let e = errors_after(|v| set(v, "/products/6/prices/0/package/round", json!("nearest")));
    assert_has(
        &e,
        "products[6].prices[0].package.round: unknown variant `nearest`",
    );
    let e = errors_after(|v| set(v, "/products/3/prices/0/amount", json!("1495")));
    assert_has(&e, "products[3].prices[0]: invalid type: string \"1495\"");
    let e = errors_after(|v| set(v, "/currencies", json!(["usd"])));
    assert_has(&e, "unknown field `currencies`");
}

#[test]
fn shape_errors_carry_paths() {
    let e = errors_after(|v| set(v, "/products/0/quota/limit", json!("100")));
    assert_has(&e, "products[0].quota.limit: invalid type: string \"100\"");
    let e = errors_after(|v| set(v, "/products/1/interval", json!("week")));
    assert_has(&e, "products[1].interval: unknown variant `week`");
    let e = errors_after(|v| set(v, "/products/2/id", json!("pay as you go")));
    assert_has(&e, "products[2].id: may contain only");
    let e = errors_after(|v| set(v, "/currency", json!("USD")));
    assert_has(&e, "currency: must be a lowercase ISO 4217 code");
}

#[test]
fn every_shape_error_is_reported_not_only_the_first() {
    let e = errors_after(|v| {
        set(v, "/products/1/interval", json!("week"));
        set(v, "/products/12/typo", json!(true));
        set(v, "/meters/0/unit", json!(5));
    });
    assert_has(&e, "products[1].interval");
    assert_has(&e, "products[12].typo: unknown field `typo`");
    assert_has(&e, "meters[0].unit: invalid type");
    assert_eq!(e.len(), 3, "{e:?}");
}

#[test]
fn every_rule_error_is_reported_not_only_the_first() {
    let e = errors_after(|v| {
        set(v, "/version", json!(3));
        set(v, "/products/3/id", json!("free"));
        set(v, "/products/14/prices/0/tiers/1/up_to", json!(50000));
        set(v, "/products/6/prices/0/package/size", json!(0));
        set(v, "/products/15/credit/custom/min", json!(200000));
    });
    assert_eq!(e.len(), 5, "{}", e.join("\n"));
}

#[test]
fn not_json_at_all() {
    let e = match Catalog::from_json("{\"version\": 1,") {
        Err(e) => e.0,
        Ok(_) => panic!("accepted broken JSON"),
    };
    assert_eq!(e.len(), 1);
    assert!(e[0].to_string().starts_with("not valid JSON"), "{}", e[0]);
}

#[test]
fn shape_and_rule_errors_are_reported_together() {
    // A missing field (shape) in one product and a tier out of order (rule) in another: both
    // in one run, at their own paths, and nothing reported for the broken product's insides.
    let e = errors_after(|v| {
        remove(v, "/products/1/name");
        set(v, "/products/14/prices/0/tiers/1/up_to", json!(50000));
    });
    assert_has(&e, "products[1]: missing field `name`");
    assert_has(&e, "products[14].prices[0].tiers[1].up_to");
    assert_eq!(e.len(), 2, "{}", e.join("\n"));
    // A meter that does not parse is not also "unknown" to the products that use it.
    let e = errors_after(|v| set(v, "/meters/0/unit", json!(5)));
    assert_eq!(e.len(), 1, "{}", e.join("\n"));
}

#[test]
fn a_successor_belongs_to_a_retired_product_and_must_be_able_to_take_its_subscribers() {
    // On a product still on sale.
    let e = errors_after(|v| set(v, "/products/4/successor", json!("pro")));
    assert_has(&e, "products[4].successor: only a retired product");
    // Unknown, itself, retired too, or billed on another interval.
    let retire = |v: &mut Value, i: usize, succ: &str| {
        set(v, &format!("/products/{i}/status"), json!("retired"));
        set(v, &format!("/products/{i}/successor"), json!(succ));
    };
    let e = errors_after(|v| retire(v, 4, "nope"));
    assert_has(&e, "products[4].successor: unknown product \"nope\"");
    let e = errors_after(|v| {
        let id = v["products"][4]["id"].clone();
        retire(v, 4, id.as_str().unwrap());
    });
    assert_has(&e, "cannot succeed itself");
    let e = errors_after(|v| {
        let other = v["products"][5]["id"].as_str().unwrap().to_string();
        retire(v, 4, &other);
        set(v, "/products/5/status", json!("retired"));
    });
    assert_has(&e, "is retired too");
    let e = errors_after(|v| retire(v, 4, "basic-yearly"));
    assert_has(&e, "bills differently");
    // A well-formed retirement is valid.
    assert_eq!(
        errors_after(|v| set(v, "/products/4/status", json!("retired"))),
        Vec::<String>::new()
    );
    assert_has(
        &errors_after(|v| set(v, "/products/4/status", json!("gone"))),
        "products[4].status: unknown variant `gone`",
    );
}

#[test]
fn tiered_seat_prices_follow_the_tier_and_seat_rules() {
    let last = |v: &Value| v["products"].as_array().unwrap().len() - 1;
    let e = errors_after(|v| {
        let i = last(v);
        set(
            v,
            &format!("/products/{i}/prices/0/tiers/1/up_to"),
            json!(5),
        );
    });
    assert!(
        e.iter().any(|e| e.contains(".prices[0].tiers[1].up_to")),
        "{e:?}"
    );
    let e = errors_after(|v| {
        let i = last(v);
        set(v, &format!("/products/{i}/prices/0/min_seats"), json!(0));
    });
    assert!(
        e.iter()
            .any(|e| e.contains(".prices[0].min_seats: must be at least 1")),
        "{e:?}"
    );
}
