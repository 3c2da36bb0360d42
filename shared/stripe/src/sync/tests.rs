//! The planner, tested on the example catalog without any Stripe.

use super::*;
use tollgate_domain::catalog::{Interval, Rounding, TierMode};
use tollgate_domain::ports::{ObservedMeter, ObservedPrice, ObservedProduct};

fn example() -> Catalog {
    Catalog::from_json(include_str!("../../../../examples/catalog.json")).expect("example catalog")
}

fn id(s: &str) -> StripeId {
    StripeId::parse(s).unwrap()
}

/// What Stripe would hold right after a successful sync of `d`.
fn synced(d: &Desired) -> ObservedCatalog {
    ObservedCatalog {
        meters: d
            .meters
            .iter()
            .enumerate()
            .map(|(i, m)| ObservedMeter {
                id: id(&format!("mtr_{i}")),
                event_name: m.event_name.clone(),
                display_name: m.display_name.clone(),
                aggregation: "sum".into(),
                customer_payload_key: METER_CUSTOMER_KEY.into(),
                value_payload_key: METER_VALUE_KEY.into(),
                active: true,
            })
            .collect(),
        products: d
            .products
            .iter()
            .map(|p| ObservedProduct {
                spec: p.clone(),
                active: true,
            })
            .collect(),
        prices: d
            .prices
            .iter()
            .enumerate()
            .map(|(i, p)| ObservedPrice {
                id: id(&format!("price_{i}")),
                lookup_key: p.lookup_key.clone(),
                active: true,
                spec: Some(p.clone()),
            })
            .collect(),
    }
}

fn price<'a>(d: &'a Desired, key: &str) -> &'a PriceSpec {
    d.prices
        .iter()
        .find(|p| p.lookup_key == key)
        .unwrap_or_else(|| panic!("no price {key}"))
}

#[test]
fn the_example_catalog_needs_meters_products_and_prices() {
    let d = desired(&example()).unwrap();
    let events: Vec<_> = d.meters.iter().map(|m| m.event_name.as_str()).collect();
    assert_eq!(events, ["api_calls", "data_bytes"]);
    // Free needs no Stripe at all; credit-only and prepaid products still need a Product
    // (credit packs are sold against it with price_data).
    assert!(!d.products.iter().any(|p| p.id == "tg_free"));
    assert!(d.products.iter().any(|p| p.id == "tg_credits"));
    assert!(d.products.iter().any(|p| p.id == "tg_prepaid"));
    assert!(
        !d.prices
            .iter()
            .any(|p| p.lookup_key.starts_with("prepaid."))
    );

    let standard = price(&d, "standard.calls");
    assert_eq!(standard.product, "tg_standard");
    assert_eq!(
        standard.recurring,
        Some(RecurringSpec {
            interval: Interval::Month,
            usage: UsageType::Metered {
                meter_event_name: "api_calls".into()
            }
        })
    );
    assert_eq!(
        standard.scheme,
        PriceScheme::Tiered {
            mode: TierMode::Graduated,
            tiers: vec![
                TierSpec {
                    up_to: Some(100_000),
                    flat_amount: Decimal::from(8995),
                    unit_amount: Decimal::ZERO
                },
                TierSpec {
                    up_to: None,
                    flat_amount: Decimal::ZERO,
                    unit_amount: Decimal::new(1, 1)
                },
            ]
        }
    );
    assert_eq!(
        price(&d, "enterprise.blocks").scheme,
        PriceScheme::PerUnit {
            unit_amount: Decimal::from(74995),
            transform: Some((1_500_000, Rounding::Up))
        }
    );
    let setup = price(&d, "managed.setup");
    assert_eq!(setup.recurring, None, "a setup fee is a one-time price");
    let seats = price(&d, "team.seats");
    assert_eq!(
        seats.recurring.as_ref().map(|r| &r.usage),
        Some(&UsageType::Licensed)
    );
    assert_eq!(
        price(&d, "basic-yearly.base")
            .recurring
            .as_ref()
            .map(|r| r.interval),
        Some(Interval::Year)
    );
}

#[test]
fn an_empty_stripe_gets_everything_in_dependency_order() {
    let d = desired(&example()).unwrap();
    let actions = plan(&d, &ObservedCatalog::default()).unwrap();
    assert_eq!(
        actions.len(),
        d.meters.len() + d.products.len() + d.prices.len()
    );
    let rank = |a: &SyncAction| match a {
        SyncAction::CreateMeter { .. } => 0,
        SyncAction::CreateProduct { .. } => 1,
        SyncAction::CreatePrice { replaces: None, .. } => 2,
        other => panic!("unexpected {other:?}"),
    };
    let ranks: Vec<_> = actions.iter().map(rank).collect();
    let mut sorted = ranks.clone();
    sorted.sort();
    assert_eq!(ranks, sorted, "meters, then products, then prices");
}

#[test]
fn a_synced_stripe_needs_nothing() {
    let d = desired(&example()).unwrap();
    assert_eq!(plan(&d, &synced(&d)).unwrap(), vec![]);
}

#[test]
fn amounts_compare_by_value_not_by_spelling() {
    let d = desired(&example()).unwrap();
    let mut observed = synced(&d);
    // Stripe echoes "0.10" for 0.1 and may spell a zero flat amount as 0 or leave it out.
    for p in &mut observed.prices {
        if let Some(PriceSpec {
            scheme: PriceScheme::Tiered { tiers, .. },
            ..
        }) = &mut p.spec
        {
            for t in tiers {
                t.unit_amount = Decimal::from_str_exact(&format!("{:.4}", t.unit_amount)).unwrap();
            }
        }
    }
    assert_eq!(plan(&d, &observed).unwrap(), vec![]);
}

#[test]
fn a_changed_price_is_a_new_price_that_takes_the_lookup_key() {
    let mut catalog = example();
    let d0 = desired(&catalog).unwrap();
    let observed = synced(&d0);
    let basic = catalog
        .products
        .iter_mut()
        .find(|p| p.id.as_str() == "basic")
        .unwrap();
    basic.prices[0] =
        serde_json::from_value(serde_json::json!({"type": "flat", "key": "base", "amount": 1995}))
            .unwrap();
    let d1 = desired(&catalog).unwrap();
    let actions = plan(&d1, &observed).unwrap();
    let old = observed
        .prices
        .iter()
        .find(|p| p.lookup_key == "basic.base")
        .unwrap();
    assert_eq!(
        actions,
        vec![SyncAction::CreatePrice {
            spec: price(&d1, "basic.base").clone(),
            replaces: Some(old.id.clone()),
        }]
    );
}

#[test]
fn inactive_or_unreadable_prices_are_replaced() {
    let d = desired(&example()).unwrap();
    let mut observed = synced(&d);
    observed.prices[0].active = false;
    observed.prices[1].spec = None;
    let actions = plan(&d, &observed).unwrap();
    let replaced: Vec<_> = actions
        .iter()
        .map(|a| match a {
            SyncAction::CreatePrice {
                replaces: Some(r), ..
            } => r.to_string(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(replaced, ["price_0", "price_1"]);
}

#[test]
fn products_are_updated_in_place_and_reactivated() {
    let mut catalog = example();
    let d0 = desired(&catalog).unwrap();
    let mut observed = synced(&d0);
    // An operator's own metadata key is left alone.
    observed.products[0]
        .spec
        .metadata
        .insert("owner".into(), "ops".into());
    observed.products[1].active = false;
    let renamed = catalog.products.iter_mut().find(|p| !p.is_free()).unwrap();
    renamed.name = "Developer (new)".into();
    let d1 = desired(&catalog).unwrap();
    let actions = plan(&d1, &observed).unwrap();
    assert_eq!(actions.len(), 2, "{actions:#?}");
    assert!(matches!(
        &actions[0],
        SyncAction::UpdateProduct { spec, reactivate: false, .. } if spec.name == "Developer (new)"
    ));
    assert!(matches!(
        &actions[1],
        SyncAction::UpdateProduct {
            reactivate: true,
            ..
        }
    ));
}

#[test]
fn meters_are_renamed_reactivated_or_refused() {
    let d = desired(&example()).unwrap();

    let mut observed = synced(&d);
    observed.meters[0].display_name = "Old name".into();
    observed.meters[1].active = false;
    let actions = plan(&d, &observed).unwrap();
    assert!(matches!(&actions[0], SyncAction::UpdateMeter { id, .. } if id.as_str() == "mtr_0"));
    assert!(
        matches!(&actions[1], SyncAction::ReactivateMeter { id, .. } if id.as_str() == "mtr_1")
    );
    assert_eq!(actions.len(), 2);

    let mut observed = synced(&d);
    observed.meters[0].aggregation = "count".into();
    let err = plan(&d, &observed).unwrap_err();
    assert!(
        matches!(&err, PlanError::MeterConflict { field, .. } if *field == "default_aggregation.formula"),
        "{err}"
    );
}
