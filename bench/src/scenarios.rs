//! The two scenarios with data behind them: DynamoDB writes per usage batch, and the nightly
//! billing run over many subscriptions. Both run the release binaries through the Runtime API.

use crate::events;
use crate::functions::{Endpoints, Running};
use crate::seed;
use crate::standins::CountingProxy;
use anyhow::Context;
use chrono::{Duration, NaiveTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration as StdDuration, Instant};
use tollgate_store::DynamoStore;
use tollgate_stripe_emulator::{Emulator, EmulatorConfig};
use tollgate_testkit::dynamo;

/// A fresh `TollgateTable` on DynamoDB Local and a store that writes to it directly.
pub async fn fresh_table(dynamodb: &str) -> anyhow::Result<(String, DynamoStore)> {
    let client = dynamo::client_for(dynamodb);
    let name = format!("tollgate-bench-{}", uuid::Uuid::new_v4().simple());
    dynamo::create_table(&client, &name, dynamo::tollgate_table())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok((name.clone(), DynamoStore::new(client, name)))
}

/// Ten active PAYG subscriptions, for usage batches.
pub async fn usage_subscriptions(store: &DynamoStore) -> anyhow::Result<Vec<String>> {
    let now = Utc::now();
    let subs: Vec<_> = (0..10)
        .map(|i| seed::subscription(i, "payg", None, now - Duration::days(3), now))
        .collect::<anyhow::Result<_>>()?;
    seed::store_subscriptions(store, &subs, None).await?;
    Ok(subs.iter().map(|s| s.id.to_string()).collect())
}

#[derive(Debug, Clone)]
pub struct BatchWrites {
    pub records: usize,
    pub subscriptions: usize,
    /// Write requests over the wire (PutItem, UpdateItem, TransactWriteItems, ...).
    pub write_requests: u64,
    /// Items those requests wrote.
    pub items_written: u64,
    /// Every DynamoDB request of the batch, by operation.
    pub by_operation: BTreeMap<String, u64>,
    pub accepted: Option<u64>,
    pub status: Option<u16>,
}

/// One 1,000-record batch over 10 subscriptions in one hour, posted to the release usage
/// function; DynamoDB requests counted by the proxy between it and DynamoDB Local.
pub async fn usage_batch_writes(
    root: &Path,
    endpoints: &Endpoints,
    dynamodb_direct: &str,
) -> anyhow::Result<BatchWrites> {
    let (table, store) = fresh_table(dynamodb_direct).await?;
    let subs = usage_subscriptions(&store).await?;
    let proxy = CountingProxy::start(dynamodb_direct).await?;
    let ep = Endpoints {
        table_name: table,
        dynamodb: proxy.endpoint_url(),
        ..endpoints.clone()
    };
    let template = events::samples(root, "usage")?
        .into_iter()
        .find(|e| e["routeKey"] == "POST /usage")
        .context("events/usage: a POST /usage sample")?;
    let mut run = Running::start(root, "usage", &ep, &[], StdDuration::from_secs(30)).await?;
    run.init_time().await?;
    proxy.reset();
    let body = events::usage_batch_body("bench-writes-1", &subs, 1000, Utc::now());
    let outcome = run.api.invoke(events::usage_post(&template, body)).await?;
    run.stop().await;
    let answer: Value = serde_json::from_slice(&outcome.body).unwrap_or_default();
    let inner: Value = answer["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_default();
    Ok(BatchWrites {
        records: 1000,
        subscriptions: subs.len(),
        write_requests: proxy.writes(),
        items_written: proxy.items_written(),
        by_operation: proxy.counts(),
        accepted: inner["accepted"].as_u64(),
        status: outcome.status_code(),
    })
}

#[derive(Debug, Clone)]
pub struct BillingScale {
    pub subscriptions: usize,
    pub meter_events_per_second: u32,
    pub setup: StdDuration,
    /// Invocation handed out → answer received.
    pub wall: StdDuration,
    pub stripe_requests: usize,
    pub stripe_meter_events: usize,
    pub dynamodb_requests: u64,
    pub peak_rss_kib: u64,
    /// The run's own summary (its answer).
    pub summary: Value,
}

/// `n` PAYG subscriptions, each with one Stripe customer and usage yesterday; then the
/// release billing-run binary runs the night at `rate` meter events/s against the emulator.
pub async fn billing_scale(
    root: &Path,
    endpoints: &Endpoints,
    dynamodb_direct: &str,
    n: usize,
    rate: u32,
) -> anyhow::Result<BillingScale> {
    let setup = Instant::now();
    let stripe = Emulator::start(EmulatorConfig::default()).await?;
    let base = stripe.base_url().to_string();
    seed::stripe_meter(&base).await?;
    let customers = seed::stripe_customers(&base, n).await?;
    let (table, store) = fresh_table(dynamodb_direct).await?;
    let now = Utc::now();
    let yesterday = now.date_naive() - Duration::days(1);
    let day_start = yesterday.and_time(NaiveTime::MIN).and_utc();
    let subs: Vec<_> = customers
        .into_iter()
        .enumerate()
        .map(|(i, c)| seed::subscription(i, "payg", Some(c), day_start - Duration::days(10), now))
        .collect::<anyhow::Result<_>>()?;
    let usage = |i: usize| {
        (
            day_start + Duration::hours(10 + (i % 12) as i64),
            100 + i as u64,
        )
    };
    seed::store_subscriptions(&store, &subs, Some(&usage)).await?;
    let setup = setup.elapsed();

    let proxy = CountingProxy::start(dynamodb_direct).await?;
    let ep = Endpoints {
        table_name: table,
        dynamodb: proxy.endpoint_url(),
        stripe: base,
        ..endpoints.clone()
    };
    let extra = [(
        "BILLING_METER_EVENTS_PER_SECOND".to_string(),
        rate.to_string(),
    )];
    let mut run = Running::start(
        root,
        "billing-run",
        &ep,
        &extra,
        StdDuration::from_secs(900),
    )
    .await?;
    run.init_time().await?;
    proxy.reset();
    stripe.clear_request_log();
    let started = Instant::now();
    let outcome = run
        .api
        .invoke(events::bytes(&json!({"date": yesterday.to_string()})))
        .await?;
    let wall = started.elapsed();
    let peak_rss_kib = run.peak_rss_kib()?;
    run.stop().await;
    let requests = stripe.requests();
    let summary: Value = serde_json::from_slice(&outcome.body).unwrap_or_else(
        |_| json!({"unparsed answer": String::from_utf8_lossy(&outcome.body).into_owned()}),
    );
    if !outcome.ok {
        anyhow::bail!("billing run failed: {summary}");
    }
    let meter_events = requests
        .iter()
        .filter(|r| r.path.starts_with("/v1/billing/meter_events"))
        .count();
    Ok(BillingScale {
        subscriptions: n,
        meter_events_per_second: rate,
        setup,
        wall,
        stripe_requests: requests.len(),
        stripe_meter_events: meter_events,
        dynamodb_requests: proxy.counts().values().sum::<u64>() - proxy.items_written(),
        peak_rss_kib,
        summary,
    })
}
