//! Test data written straight into DynamoDB Local (not through the counting proxy) and the
//! Stripe emulator: subscriptions as the webhook stores them, usage buckets as the usage
//! function writes them.

use anyhow::Context;
use futures::StreamExt;
use tollgate_domain::ids::{ConsumerId, MeterId, ProductId, StripeId, SubscriptionId};
use tollgate_domain::ports::{Expect, Store, UsageBucketKey, Write};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::time::{Duration, Timestamp, hour_start};
use tollgate_store::DynamoStore;

pub fn subscription(
    i: usize,
    product: &str,
    customer: Option<StripeId>,
    period_start: Timestamp,
    now: Timestamp,
) -> anyhow::Result<Subscription> {
    Ok(Subscription {
        id: SubscriptionId::parse(format!("sub_tg_bench{i:06}"))?,
        consumer_id: ConsumerId::parse(format!("consumer-bench-{i:06}"))?,
        product_id: ProductId::parse(product)?,
        name: format!("bench-{i}"),
        status: SubscriptionStatus::Active,
        seats: None,
        stripe_customer_id: customer,
        stripe_subscription_id: None,
        stripe_checkout_session_id: None,
        current_period_start: Some(period_start),
        current_period_end: Some(period_start + Duration::days(30)),
        cancel_at_period_end: false,
        access_expires_at: None,
        last_stripe_event_at: Some(now),
        periods: Default::default(),
        created_at: period_start,
        updated_at: now,
        version: 0,
    })
}

/// Stores each subscription with, when `usage_at` is given, one usage bucket in that hour.
pub async fn store_subscriptions(
    store: &DynamoStore,
    subs: &[Subscription],
    usage_at: Option<&dyn Fn(usize) -> (Timestamp, u64)>,
) -> anyhow::Result<()> {
    let api_calls = MeterId::parse("api_calls")?;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(subs.iter().enumerate())
        .map(|(i, sub)| {
            let mut writes = vec![Write::PutSubscription {
                subscription: sub.clone(),
                expect: Expect::Absent,
            }];
            if let Some(f) = usage_at {
                let (at, quantity) = f(i);
                writes.push(Write::AddUsage {
                    key: UsageBucketKey {
                        subscription_id: sub.id.clone(),
                        meter: api_calls.clone(),
                        hour: hour_start(at),
                    },
                    quantity,
                });
            }
            async move {
                store
                    .commit(writes)
                    .await
                    .map_err(|e| anyhow::anyhow!("seed {}: {e}", sub.id))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()
}

/// Creates `n` customers in the emulator (form-encoded, as Stripe takes them).
pub async fn stripe_customers(base_url: &str, n: usize) -> anyhow::Result<Vec<StripeId>> {
    let http = reqwest::Client::new();
    let results: Vec<anyhow::Result<StripeId>> = futures::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            async move {
                let v: serde_json::Value = http
                    .post(format!("{base_url}/v1/customers"))
                    .bearer_auth("sk_test_tollgate_bench")
                    .form(&[("name", format!("Bench {i}"))])
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let id = v["id"].as_str().context("customer id")?;
                Ok(StripeId::parse(id)?)
            }
        })
        .buffered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The `api_calls` Billing Meter (what `tollgate catalog sync` creates).
pub async fn stripe_meter(base_url: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{base_url}/v1/billing/meters"))
        .bearer_auth("sk_test_tollgate_bench")
        .form(&[
            ("display_name", "API calls"),
            ("event_name", "api_calls"),
            ("default_aggregation[formula]", "sum"),
        ])
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
