//! The adapter and catalog sync against the stateful Stripe emulator: the real async-stripe
//! client, unchanged, over HTTP.

use secrecy::SecretString;
use std::collections::BTreeMap;
use std::time::Duration;
use tollgate_domain::catalog::Catalog;
use tollgate_domain::ports::{
    CatalogSync, CheckoutRequest, CustomerCredit, MeterEvent, Payments, PaymentsError, Purchase,
    StripeSubscriptionStatus, SyncAction, checkout_line_items, metadata,
};
use tollgate_domain::{ConsumerId, Currency, StripeId, SubscriptionId};
use tollgate_stripe::sync::{desired, sync_catalog};
use tollgate_stripe::{RetryPolicy, StripeAdapter, StripeConfig};
use tollgate_stripe_emulator::{Card, Emulator, EmulatorConfig, RunningEmulator};

async fn start() -> (RunningEmulator, StripeAdapter) {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    let mut config = StripeConfig::new(
        SecretString::from("sk_test_tollgate"),
        Some(emulator.base_url().to_string()),
    );
    config.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    let stripe = StripeAdapter::from_config(&config).expect("client");
    (emulator, stripe)
}

fn example() -> Catalog {
    Catalog::from_json(include_str!("../../../examples/catalog.json")).expect("example catalog")
}

fn writes(emulator: &RunningEmulator) -> Vec<tollgate_stripe_emulator::RequestRecord> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.is_write())
        .collect()
}

#[tokio::test]
async fn sync_twice_creates_everything_then_writes_nothing() {
    let (emulator, stripe) = start().await;
    let catalog = example();
    let want = desired(&catalog).unwrap();
    let expected = want.meters.len() + want.products.len() + want.prices.len();

    let first = sync_catalog(&stripe, &catalog, false)
        .await
        .expect("first sync");
    assert_eq!(first.actions.len(), expected);
    assert_eq!(first.written.len(), expected);
    let w = writes(&emulator);
    assert_eq!(w.len(), expected, "one POST per action, no retries needed");
    assert!(
        w.iter()
            .all(|r| r.status == 200 && r.idempotency_key.is_some()),
        "every POST carries an Idempotency-Key: {w:#?}"
    );

    // Stripe now holds what the catalog says, field by field.
    // Products have caller-chosen ids (`tg_{product}`); read them back through the adapter.
    let observed = stripe.observe(&catalog).await.unwrap();
    let standard = observed
        .products
        .iter()
        .find(|p| p.spec.id == "tg_standard")
        .expect("product tg_standard");
    assert_eq!(standard.spec.name, "Standard");
    assert_eq!(standard.spec.metadata[metadata::PRODUCT_ID], "standard");
    assert!(
        !observed.products.iter().any(|p| p.spec.id == "tg_free"),
        "free products need no Stripe"
    );
    let meters: Vec<_> = first
        .actions
        .iter()
        .zip(&first.written)
        .filter(|(a, _)| matches!(a, SyncAction::CreateMeter { .. }))
        .map(|(_, id)| emulator.object(id.as_str()).expect("meter"))
        .collect();
    assert_eq!(meters.len(), 2);
    for m in &meters {
        assert_eq!(m["default_aggregation"]["formula"], "sum");
        assert_eq!(
            m["customer_mapping"]["event_payload_key"],
            "stripe_customer_id"
        );
    }
    let price_of = |key: &str| {
        let i = first
            .actions
            .iter()
            .position(
                |a| matches!(a, SyncAction::CreatePrice { spec, .. } if spec.lookup_key == key),
            )
            .unwrap_or_else(|| panic!("no price action for {key}"));
        emulator
            .object(first.written[i].as_str())
            .expect("price exists")
    };
    let calls = price_of("standard.calls");
    assert_eq!(calls["lookup_key"], "standard.calls");
    assert_eq!(calls["billing_scheme"], "tiered");
    assert_eq!(calls["tiers_mode"], "graduated");
    assert_eq!(calls["recurring"]["usage_type"], "metered");
    let api_calls_meter = meters
        .iter()
        .find(|m| m["event_name"] == "api_calls")
        .unwrap();
    assert_eq!(calls["recurring"]["meter"], api_calls_meter["id"]);
    let blocks = price_of("enterprise.blocks");
    assert_eq!(blocks["transform_quantity"]["divide_by"], 1_500_000);
    assert_eq!(blocks["transform_quantity"]["round"], "up");
    let payg = price_of("payg.calls");
    assert_eq!(payg["unit_amount_decimal"], "0.15");
    assert_eq!(price_of("managed.setup")["type"], "one_time");
    assert_eq!(
        price_of("basic-yearly.base")["recurring"]["interval"],
        "year"
    );

    emulator.clear_request_log();
    let second = sync_catalog(&stripe, &catalog, false)
        .await
        .expect("second sync");
    assert_eq!(second.actions, vec![], "nothing to change");
    assert_eq!(
        emulator.write_request_count(),
        0,
        "the second sync writes nothing"
    );
    assert!(!emulator.requests().is_empty(), "it did read Stripe");
}

#[tokio::test]
async fn a_changed_price_moves_the_lookup_key_and_keeps_the_old_price() {
    let (emulator, stripe) = start().await;
    let mut catalog = example();
    let first = sync_catalog(&stripe, &catalog, false).await.unwrap();
    let old_id = first
        .actions
        .iter()
        .zip(&first.written)
        .find_map(|(a, id)| match a {
            SyncAction::CreatePrice { spec, .. } if spec.lookup_key == "basic.base" => {
                Some(id.clone())
            }
            _ => None,
        })
        .unwrap();

    let basic = catalog
        .products
        .iter_mut()
        .find(|p| p.id.as_str() == "basic")
        .unwrap();
    basic.prices[0] =
        serde_json::from_value(serde_json::json!({"type": "flat", "key": "base", "amount": 1995}))
            .unwrap();
    catalog.validate().expect("still valid");

    emulator.clear_request_log();
    let change = sync_catalog(&stripe, &catalog, false).await.unwrap();
    assert_eq!(change.actions.len(), 1, "{:#?}", change.actions);
    assert!(matches!(
        &change.actions[0],
        SyncAction::CreatePrice { replaces: Some(r), .. } if *r == old_id
    ));
    let w = writes(&emulator);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].path, "/v1/prices");

    let new_price = emulator.object(change.written[0].as_str()).unwrap();
    assert_eq!(new_price["lookup_key"], "basic.base");
    assert_eq!(new_price["unit_amount"], 1995);
    let old_price = emulator.object(old_id.as_str()).unwrap();
    assert!(
        old_price["lookup_key"].is_null(),
        "the key moved: {old_price}"
    );
    assert_eq!(
        old_price["active"], true,
        "the old price stays for existing subscriptions"
    );
    assert_eq!(old_price["unit_amount"], 1495);

    emulator.clear_request_log();
    let again = sync_catalog(&stripe, &catalog, false).await.unwrap();
    assert!(again.actions.is_empty());
    assert_eq!(emulator.write_request_count(), 0);
}

#[tokio::test]
async fn dry_run_plans_without_writing() {
    let (emulator, stripe) = start().await;
    let report = sync_catalog(&stripe, &example(), true).await.unwrap();
    assert!(report.dry_run);
    assert!(!report.actions.is_empty());
    assert!(report.written.is_empty());
    assert_eq!(emulator.write_request_count(), 0);
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_key() {
    let (emulator, stripe) = start().await;
    emulator.inject_fault("POST", "/v1/billing/meters", 429, 1);
    emulator.inject_fault("POST", "/v1/products", 500, 1);
    sync_catalog(&stripe, &example(), false)
        .await
        .expect("sync rides out a 429 and a 500");
    let meter_posts: Vec<_> = writes(&emulator)
        .into_iter()
        .filter(|r| r.path == "/v1/billing/meters")
        .collect();
    assert_eq!(meter_posts[0].status, 429);
    assert_eq!(meter_posts[1].status, 200);
    assert_eq!(
        meter_posts[0].idempotency_key, meter_posts[1].idempotency_key,
        "a retry reuses the key"
    );
    let product_posts: Vec<_> = writes(&emulator)
        .into_iter()
        .filter(|r| r.path == "/v1/products")
        .collect();
    assert_eq!(product_posts[0].status, 500);
    assert_eq!(
        product_posts[0].idempotency_key,
        product_posts[1].idempotency_key
    );

    // Bounded: a fault that outlasts the attempts surfaces as a transient domain error.
    let customer_faults = 10;
    emulator.inject_fault("POST", "/v1/customers", 503, customer_faults);
    let err = stripe
        .ensure_customer(&ConsumerId::parse("c-busy").unwrap(), None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let tries = writes(&emulator)
        .iter()
        .filter(|r| r.path == "/v1/customers")
        .count();
    assert_eq!(tries, 4, "max_attempts bounds the retries");
}

#[tokio::test]
async fn checkout_subscription_meter_events_and_credit() {
    let (emulator, stripe) = start().await;
    let catalog = example();
    sync_catalog(&stripe, &catalog, false).await.unwrap();

    // Concurrent callers for one consumer get one customer.
    let consumer = ConsumerId::parse("acme").unwrap();
    let (a, b) = tokio::join!(
        stripe.ensure_customer(&consumer, Some("billing@acme.test")),
        stripe.ensure_customer(&consumer, Some("billing@acme.test")),
    );
    let customer = a.unwrap();
    assert_eq!(customer, b.unwrap());
    let stored = emulator.object(customer.as_str()).unwrap();
    assert_eq!(stored["metadata"][metadata::CONSUMER_ID], "acme");
    // Later (other parameters, or past the 24-hour key window) the consumer's customer is
    // found by its metadata instead of created again.
    let later = stripe
        .ensure_customer(&consumer, Some("new-billing@acme.test"))
        .await
        .unwrap();
    assert_eq!(later, customer);
    let creates = writes(&emulator)
        .iter()
        .filter(|r| r.path == "/v1/customers" && !r.replayed)
        .count();
    assert_eq!(creates, 1, "one customer created");

    let product = catalog.product("standard").unwrap();
    let (mode, line_items) =
        checkout_line_items(product, Purchase::Product { seats: None }).unwrap();
    let request = CheckoutRequest {
        subscription_id: SubscriptionId::parse("sub_tg_1").unwrap(),
        consumer_id: consumer.clone(),
        customer: customer.clone(),
        product_id: product.id.clone(),
        subscription_name: "prod-backend".into(),
        mode,
        currency: Currency::usd(),
        line_items,
        trial_days: 0,
        extra_metadata: BTreeMap::new(),
        success_url: "https://portal.test/ok".into(),
        cancel_url: "https://portal.test/cancel".into(),
    };
    let session = stripe.create_checkout_session(&request).await.unwrap();
    assert!(session.url.starts_with("http"));
    let again = stripe.create_checkout_session(&request).await.unwrap();
    assert_eq!(again, session, "a retried checkout gets the same session");

    let completed = emulator
        .complete_checkout(session.id.as_str(), Card::Good)
        .expect("checkout completes");
    let sub_id =
        StripeId::parse(completed["subscription"].as_str().expect("subscription id")).unwrap();
    let snap = stripe.get_subscription(&sub_id).await.unwrap();
    assert_eq!(snap.status, StripeSubscriptionStatus::Active);
    assert_eq!(snap.customer, customer);
    assert_eq!(snap.metadata[metadata::SUBSCRIPTION_ID], "sub_tg_1");
    assert_eq!(snap.metadata[metadata::SUBSCRIPTION_NAME], "prod-backend");
    assert!(snap.current_period_start < snap.current_period_end);
    assert_eq!(snap.items.len(), 1);
    assert_eq!(snap.items[0].lookup_key.as_deref(), Some("standard.calls"));
    assert!(!snap.cancel_at_period_end);

    let now = chrono::DateTime::from_timestamp(emulator.now(), 0).unwrap();
    let event = MeterEvent {
        event_name: "api_calls".into(),
        customer: customer.clone(),
        value: 1234,
        identifier: "sub_tg_1:api_calls:2026-11-22T00".into(),
        timestamp: now,
    };
    stripe.report_meter_event(&event).await.unwrap();
    stripe
        .report_meter_event(&event)
        .await
        .expect("a retried report replays");
    let too_old = MeterEvent {
        identifier: "old".into(),
        timestamp: now - chrono::Duration::days(40),
        ..event.clone()
    };
    match stripe.report_meter_event(&too_old).await.unwrap_err() {
        PaymentsError::InvalidRequest { param, .. } => {
            assert_eq!(param.as_deref(), Some("timestamp"))
        }
        other => panic!("{other:?}"),
    }

    let canceled = stripe
        .set_cancel_at_period_end(&sub_id, true, "v1")
        .await
        .unwrap();
    assert!(canceled.cancel_at_period_end);
    assert_eq!(canceled.status, StripeSubscriptionStatus::Active);
    // Each request names its intent: resume and cancel again within 24 hours are not replays.
    let resumed = stripe
        .set_cancel_at_period_end(&sub_id, false, "v2")
        .await
        .unwrap();
    assert!(!resumed.cancel_at_period_end);
    let again = stripe
        .set_cancel_at_period_end(&sub_id, true, "v3")
        .await
        .unwrap();
    assert!(again.cancel_at_period_end);

    let credit = CustomerCredit {
        customer: customer.clone(),
        amount: 5000,
        currency: Currency::usd(),
        purchase_id: "cs_credit_1".into(),
        description: "Prepaid credit".into(),
    };
    let txn = stripe.add_customer_credit(&credit).await.unwrap();
    assert_eq!(stripe.add_customer_credit(&credit).await.unwrap(), txn);
    let stored = emulator.object(txn.as_str()).expect("balance transaction");
    assert_eq!(stored["amount"], -5000, "negative = credit");
    assert_eq!(
        emulator.object(customer.as_str()).unwrap()["balance"],
        -5000
    );
}

#[tokio::test]
async fn checkout_refuses_an_unsynced_price_naming_the_field() {
    let (_emulator, stripe) = start().await;
    let catalog = example();
    let product = catalog.product("basic").unwrap();
    let (mode, line_items) =
        checkout_line_items(product, Purchase::Product { seats: None }).unwrap();
    let err = stripe
        .create_checkout_session(&CheckoutRequest {
            subscription_id: SubscriptionId::parse("sub_x").unwrap(),
            consumer_id: ConsumerId::parse("c").unwrap(),
            customer: StripeId::parse("cus_missing").unwrap(),
            product_id: product.id.clone(),
            subscription_name: "x".into(),
            mode,
            currency: Currency::usd(),
            line_items,
            trial_days: 0,
            extra_metadata: BTreeMap::new(),
            success_url: "https://p/ok".into(),
            cancel_url: "https://p/no".into(),
        })
        .await
        .unwrap_err();
    match err {
        PaymentsError::InvalidRequest { param, message, .. } => {
            assert_eq!(param.as_deref(), Some("line_items[0][price]"));
            assert!(message.contains("basic.base"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn catalog_sync_trait_observes_what_it_wrote() {
    let (_emulator, stripe) = start().await;
    let catalog = example();
    sync_catalog(&stripe, &catalog, false).await.unwrap();
    let observed = stripe.observe(&catalog).await.unwrap();
    let want = desired(&catalog).unwrap();
    assert_eq!(observed.prices.len(), want.prices.len());
    assert!(observed.prices.iter().all(|p| p.spec.is_some() && p.active));
}

#[tokio::test]
async fn a_sync_that_failed_midway_completes_on_the_next_run_without_duplicates() {
    let (emulator, stripe) = start().await;
    let catalog = example();
    let want = desired(&catalog).unwrap();
    // Stripe keeps failing price creation longer than the retries last.
    emulator.inject_fault("POST", "/v1/prices", 500, 100);
    let err = sync_catalog(&stripe, &catalog, false).await.unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    emulator.clear_faults();

    let resumed = sync_catalog(&stripe, &catalog, false).await.unwrap();
    assert_eq!(
        resumed.actions.len(),
        want.prices.len(),
        "only the prices were left to do: {:#?}",
        resumed.actions
    );
    let created_prices = writes(&emulator)
        .iter()
        .filter(|r| r.path == "/v1/prices" && r.status == 200 && !r.replayed)
        .count();
    assert_eq!(created_prices, want.prices.len(), "no duplicate prices");
    emulator.clear_request_log();
    assert!(
        sync_catalog(&stripe, &catalog, false)
            .await
            .unwrap()
            .actions
            .is_empty()
    );
    assert_eq!(emulator.write_request_count(), 0);
}
