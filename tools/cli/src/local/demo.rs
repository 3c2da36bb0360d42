//! `tollgate local --demo`: a scripted month on the local stack, through its HTTP routes.
//!
//! Six consumers subscribe at the start of the month: `ada-labs` on Free, `bolt-apps` on
//! Developer (freemium), `cyd-corp` on Standard (tier + overage), `dan-data` on PAYG, `eve-ai`
//! buys a $10 credit pack for Prepaid PAYG, and `fay-co` takes Basic ($14.95 up front; its
//! first card is declined at checkout, the second works).
//! On six days of the month their gateway posts usage batches; the billing run runs every night
//! at 00:05. `ada-labs` passes its free quota (429), `eve-ai` runs out of credit (402), and
//! `dan-data`'s card is declined from day 20, so the renewal payment fails: past due, then
//! suspended after the retry. The clock then passes the period end; Stripe (the emulator)
//! invoices the month, and each invoice is printed next to the pricing engine's quote for the
//! usage tollgate counted.

use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;
use tollgate_domain::ids::{ConsumerId, MeterId, SubscriptionId};
use tollgate_domain::ports::{EntitlementReads, Store};
use tollgate_domain::pricing::{QuoteRequest, quote};
use tollgate_domain::time::{Duration as Span, Timestamp};
use tollgate_stripe_emulator::Card;

use crate::LocalStack;

/// The usage days of the month (days after the subscription started) and the calls posted.
const USAGE_DAYS: [i64; 6] = [1, 4, 8, 13, 19, 26];
/// The day `dan-data`'s card starts being declined.
const CARD_DECLINED_DAY: i64 = 20;

struct Plan {
    consumer: &'static str,
    product: &'static str,
    /// Calls per usage day.
    daily_calls: u64,
    /// Cards tried at checkout, in order (the first that pays completes it).
    cards: &'static [Card],
    /// Buys this much prepaid credit (minor units) before subscribing.
    credit: Option<i64>,
    /// Renewal payments fail from [`CARD_DECLINED_DAY`].
    renewal_fails: bool,
}

const PLANS: [Plan; 6] = [
    Plan {
        consumer: "ada-labs",
        product: "free",
        daily_calls: 45,
        cards: &[],
        credit: None,
        renewal_fails: false,
    },
    Plan {
        consumer: "bolt-apps",
        product: "developer",
        daily_calls: 300,
        cards: &[Card::Good],
        credit: None,
        renewal_fails: false,
    },
    Plan {
        consumer: "cyd-corp",
        product: "standard",
        daily_calls: 21_000,
        cards: &[Card::Good],
        credit: None,
        renewal_fails: false,
    },
    Plan {
        consumer: "dan-data",
        product: "payg",
        daily_calls: 5_000,
        cards: &[Card::Good],
        credit: None,
        renewal_fails: true,
    },
    Plan {
        consumer: "eve-ai",
        product: "prepaid",
        daily_calls: 3_000,
        cards: &[],
        credit: Some(1000),
        renewal_fails: false,
    },
    Plan {
        consumer: "fay-co",
        product: "basic",
        daily_calls: 5_000,
        cards: &[Card::Declined, Card::Good],
        credit: None,
        renewal_fails: false,
    },
];

/// What the demo saw, for the printout and the tests.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub consumers: Vec<ConsumerReport>,
    /// Domain events published, by detail-type.
    pub events: BTreeMap<String, usize>,
    /// Nightly and period-close billing runs, and meter events they sent.
    pub billing_runs: u32,
    pub meter_events_reported: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerReport {
    pub consumer_id: String,
    pub product_id: String,
    pub subscription_id: Option<String>,
    /// tollgate's state at the end (`active`, `suspended`, ...).
    pub status: Option<String>,
    /// Calls the gateway posted, and those tollgate counted in the billed period.
    pub calls_sent: u64,
    pub calls_counted: u64,
    /// Calls counted over the whole demo, whatever the period (prepaid credit is not periodic).
    pub calls_accepted: u64,
    /// The last usage answer's state (`ok`, `quota_exceeded`, `no_credit`, ...).
    pub usage_state: Option<String>,
    /// `GET /entitlements/{key}` after the month closed.
    pub entitlement: Option<Value>,
    /// `GET /entitlements/{key}` after the last usage day, inside the month (a quota's 429
    /// lasts until its window ends: the subscription's own month, so it has reset by the time
    /// the month closed).
    pub entitlement_in_month: Option<Value>,
    /// Stripe's invoice for the month (metered products).
    pub invoice: Option<InvoiceSummary>,
    /// The pricing engine's quote for `calls_counted`.
    pub quote_total: Option<i64>,
    /// Prepaid: credit bought and left.
    pub credit_purchased: Option<i64>,
    pub credit_balance: Option<i64>,
    /// Prepaid: usage paid from the credit, and usage beyond it (the floor stopped the draw).
    pub credit_drawn: Option<i64>,
    pub credit_uncovered: Option<i64>,
    /// One call of the provider's API (`/_local/api`, through the authorizer) with the
    /// consumer's key after the month closed, as the consumer's app sees it: the wire status
    /// and body. Made after everything above was measured, so it changes none of it.
    pub api_call: Option<ApiCall>,
    pub notes: Vec<String>,
    /// The consumer's API key as issued (never printed or serialized): for tests that call
    /// other entry points with it (the authorizer).
    #[serde(skip)]
    pub api_key: Option<String>,
}

/// A call of the provider's API as the consumer saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ApiCall {
    pub status: u16,
    pub body: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvoiceSummary {
    pub id: String,
    pub status: String,
    pub total: i64,
    pub amount_paid: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub lines: Vec<(String, i64)>,
}

impl DemoReport {
    /// Every Stripe invoice equals its quote (and there is at least one).
    pub fn invoices_match_quotes(&self) -> bool {
        let billed: Vec<&ConsumerReport> = self
            .consumers
            .iter()
            .filter(|c| c.invoice.is_some())
            .collect();
        !billed.is_empty()
            && billed
                .iter()
                .all(|c| Some(c.invoice.as_ref().map_or(-1, |i| i.total)) == c.quote_total)
    }

    pub fn consumer(&self, id: &str) -> Option<&ConsumerReport> {
        self.consumers.iter().find(|c| c.consumer_id == id)
    }
}

/// One consumer as the demo goes.
struct Consumer {
    plan: &'static Plan,
    subscription: Option<String>,
    key: Option<String>,
    report: ConsumerReport,
}

struct Http {
    client: reqwest::Client,
    base: String,
    portal: String,
    gateway: String,
}

impl Http {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn portal(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(method, path, &self.portal, body).await
    }

    async fn gateway(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(method, path, &self.gateway, body).await
    }
}

fn day_start(t: Timestamp) -> Timestamp {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
}

fn fmt_time(t: Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn dollars(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}${}.{:02}", minor.abs() / 100, minor.abs() % 100)
}

async fn advance_to(stack: &LocalStack, target: Timestamp) -> Timestamp {
    let now = stack.now();
    if target > now {
        stack
            .advance_clock(Duration::from_secs((target - now).num_seconds() as u64))
            .await
    } else {
        now
    }
}

/// Plays the month and prints it to `out`.
pub async fn run(stack: &LocalStack, out: &mut dyn Write) -> anyhow::Result<DemoReport> {
    let http = Http {
        client: reqwest::Client::new(),
        base: stack.info.base_url.clone(),
        portal: stack.info.portal_secret.clone(),
        gateway: stack.info.gateway_secret.clone(),
    };
    let return_url = format!("{}/portal/", stack.info.base_url);
    let started_at = stack.now();
    let day0 = day_start(started_at);
    writeln!(
        out,
        "\n== demo: one month on the local stack (clock starts {} UTC) ==",
        fmt_time(started_at)
    )?;

    let mut consumers: Vec<Consumer> = PLANS
        .iter()
        .map(|plan| Consumer {
            plan,
            subscription: None,
            key: None,
            report: ConsumerReport {
                consumer_id: plan.consumer.into(),
                product_id: plan.product.into(),
                subscription_id: None,
                status: None,
                calls_sent: 0,
                calls_counted: 0,
                calls_accepted: 0,
                usage_state: None,
                entitlement: None,
                entitlement_in_month: None,
                invoice: None,
                quote_total: None,
                credit_purchased: plan.credit,
                credit_balance: None,
                credit_drawn: None,
                credit_uncovered: None,
                api_call: None,
                notes: Vec::new(),
                api_key: None,
            },
        })
        .collect();

    // 1. Subscribe, through the portal routes and the emulator's checkout.
    for c in &mut consumers {
        let plan = c.plan;
        if let Some(amount) = plan.credit {
            match checkout(
                stack,
                &http,
                plan.consumer,
                "credits",
                Some(amount),
                &[Card::Good],
                &return_url,
                out,
            )
            .await
            {
                Ok(_) => writeln!(
                    out,
                    "  {} bought {} of prepaid credit",
                    plan.consumer,
                    dollars(amount)
                )?,
                Err(e) => {
                    writeln!(out, "  {} could not buy credit: {e}", plan.consumer)?;
                    c.report.notes.push(format!("credit purchase failed: {e}"));
                }
            }
        }
        match checkout(
            stack,
            &http,
            plan.consumer,
            plan.product,
            None,
            plan.cards,
            &return_url,
            out,
        )
        .await
        {
            Ok((sub, key)) => {
                c.subscription = sub.clone();
                c.report.api_key = key.clone();
                c.key = key;
                c.report.subscription_id = sub;
            }
            Err(e) => {
                writeln!(
                    out,
                    "  {} could not subscribe to {}: {e}",
                    plan.consumer, plan.product
                )?;
                c.report.notes.push(format!("subscription failed: {e}"));
            }
        }
    }
    for c in &mut consumers {
        if let Some(sub) = &c.subscription {
            let status = subscription_status(&http, c.plan.consumer, sub).await?;
            writeln!(
                out,
                "  {:<10} {:<10} {} {}",
                c.plan.consumer,
                c.plan.product,
                sub,
                status.as_deref().unwrap_or("?")
            )?;
        }
    }

    // The period every subscription bills (all started at the same instant).
    let mut period_end = started_at + Span::days(30);
    for c in &consumers {
        if let Some(sub) = &c.subscription
            && let Some(s) = stack
                .store
                .get_subscription(&SubscriptionId::parse(sub.as_str())?)
                .await?
            && let Some(end) = s.current_period_end
        {
            period_end = end;
        }
    }
    writeln!(
        out,
        "  the month's billing period ends {} UTC",
        fmt_time(period_end)
    )?;

    // 2. The month: nightly runs, usage on some days, a card that starts failing.
    let mut billing_runs = 0u32;
    let mut meter_events = 0u64;
    // Run the nights until the failed renewal's retry is over: Stripe finalises an hour after
    // the period end and the local stack retries a failed payment a day later, so the last
    // night is the first one a full day after the finalisation (a period ending at 23:30 is
    // finalised after midnight, one night later than one ending at 00:00).
    let last_day = (day_start(period_end + Span::hours(1) + Span::days(1)) - day0).num_days() + 1;
    for day in 1..=last_day {
        let midnight = day0 + Span::days(day);
        if midnight > period_end && midnight - Span::days(1) <= period_end {
            // The period ends during the previous day: Stripe waits an hour before finalising
            // its invoice; the period-close pass reports the last hours within that hour.
            period_close(stack, period_end, out, &mut billing_runs, &mut meter_events).await?;
        }
        advance_to(stack, midnight + Span::minutes(5)).await;
        let date = (midnight - Span::days(1)).date_naive();
        let summary = stack
            .billing_run(&json!({"date": date.to_string()}))
            .await
            .map_err(|e| anyhow::anyhow!("billing run for {date}: {e}"))?;
        billing_runs += 1;
        meter_events += u64::from(summary.reported);
        if summary.reported > 0 || !summary.failed.is_empty() {
            writeln!(
                out,
                "[{}] nightly billing run for {date}: {} meter event(s), {} unit(s), {} failure(s)",
                fmt_time(stack.now()),
                summary.reported,
                summary.quantity,
                summary.failed.len()
            )?;
        }
        if day == CARD_DECLINED_DAY {
            for c in consumers.iter().filter(|c| c.plan.renewal_fails) {
                // The subscription's own Stripe customer (one per Stripe subscription) is the
                // one whose card pays its renewal.
                let sub = match &c.subscription {
                    Some(s) => {
                        stack
                            .store
                            .get_subscription(&SubscriptionId::parse(s.as_str())?)
                            .await?
                    }
                    None => None,
                };
                if let Some(customer) = sub.and_then(|x| x.stripe_customer_id) {
                    stack
                        .emulator()
                        .set_customer_card(customer.as_str(), Card::Declined);
                    writeln!(
                        out,
                        "[{}] {}'s card on file starts being declined",
                        fmt_time(stack.now()),
                        c.plan.consumer
                    )?;
                }
            }
        }
        if USAGE_DAYS.contains(&day) {
            advance_to(stack, midnight + Span::hours(17)).await;
            // Each usage day's answer records the gateway's check (`entitlement_in_month`).
            post_usage(&http, &mut consumers, midnight, day, out).await?;
        }
    }
    let ended_at = stack.now();
    // What the gateway hears now, after the month closed.
    for c in &mut consumers {
        if let Some(key) = &c.key {
            let (_, ent) = http
                .gateway(reqwest::Method::GET, &format!("/entitlements/{key}"), None)
                .await?;
            c.report.entitlement = Some(ent);
        }
    }

    // 3. The bill: Stripe's invoice of the month against the pricing engine's quote.
    writeln!(
        out,
        "\n== invoices (Stripe emulator) and quotes (pricing engine) =="
    )?;
    writeln!(
        out,
        "consumer   product        calls       invoice      quote invoice status             match"
    )?;
    let api_calls = MeterId::parse("api_calls")?;
    for c in &mut consumers {
        let product = stack.catalog.product(c.plan.product);
        if let Some(p) = product {
            let q = quote(
                &stack.catalog,
                p,
                &QuoteRequest {
                    usage: BTreeMap::from([(
                        api_calls.clone(),
                        if p.prepaid {
                            c.report.calls_accepted
                        } else {
                            c.report.calls_counted
                        },
                    )]),
                    ..QuoteRequest::default()
                },
            )?;
            c.report.quote_total = Some(q.total);
        }
        if let Some(sub) = &c.subscription
            && let Some(s) = stack
                .store
                .get_subscription(&SubscriptionId::parse(sub.as_str())?)
                .await?
        {
            c.report.status = Some(s.status.as_str().to_string());
            if let Some(stripe_sub) = s.stripe_subscription_id {
                c.report.invoice = month_invoice(stack, stripe_sub.as_str(), period_end);
            }
        }
        if c.plan.credit.is_some()
            && let Some(a) = stack
                .store
                .get_credit_account(&ConsumerId::parse(c.plan.consumer)?)
                .await?
        {
            c.report.credit_balance = Some(a.balance);
            c.report.credit_purchased = Some(a.purchased);
            c.report.credit_drawn = Some(a.drawn);
            c.report.credit_uncovered = Some(a.uncovered);
        }
        let r = &c.report;
        let (invoice, status, matches) = match &r.invoice {
            Some(i) => (
                dollars(i.total),
                i.status.clone(),
                if Some(i.total) == r.quote_total {
                    "yes"
                } else {
                    "NO"
                },
            ),
            None if r.credit_purchased.is_some() => {
                let used = r.credit_drawn.unwrap_or(0) + r.credit_uncovered.unwrap_or(0);
                (
                    format!("{} drawn", dollars(r.credit_drawn.unwrap_or(0))),
                    format!(
                        "bought {}, {} over",
                        dollars(r.credit_purchased.unwrap_or(0)),
                        dollars(r.credit_uncovered.unwrap_or(0))
                    ),
                    if Some(used) == r.quote_total {
                        "yes"
                    } else {
                        "NO"
                    },
                )
            }
            None => ("—".into(), "no invoice".into(), ""),
        };
        writeln!(
            out,
            "{:<10} {:<10} {:>9} {:>13} {:>10} {:<26} {}",
            r.consumer_id,
            r.product_id,
            if r.credit_purchased.is_some() {
                r.calls_accepted
            } else {
                r.calls_counted
            },
            invoice,
            r.quote_total.map_or("—".into(), dollars),
            status,
            matches
        )?;
        for (description, amount) in r.invoice.iter().flat_map(|i| &i.lines) {
            writeln!(out, "{:>25} {description}: {}", "", dollars(*amount))?;
        }
    }

    writeln!(out, "\n== states ==")?;
    for c in &consumers {
        let r = &c.report;
        let ent = r
            .entitlement
            .as_ref()
            .map(|e| format!("{} ({})", e["status"], e["reason"].as_str().unwrap_or("")))
            .unwrap_or_else(|| "—".into());
        writeln!(
            out,
            "{:<10} subscription {:<10} last usage answer {:<15} entitlement {}{}",
            r.consumer_id,
            r.status.as_deref().unwrap_or("none"),
            r.usage_state.as_deref().unwrap_or("—"),
            ent,
            if r.notes.is_empty() {
                String::new()
            } else {
                format!("  [{}]", r.notes.join("; "))
            }
        )?;
    }

    writeln!(out, "\n== domain events published (EventBridge) ==")?;
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for e in stack.events() {
        *events.entry(e.detail_type.clone()).or_default() += 1;
        let who = e.detail["consumer_id"].as_str().unwrap_or("");
        let what = e.detail["subscription_id"].as_str().unwrap_or("");
        writeln!(out, "  {:<24} {:<10} {}", e.detail_type, who, what)?;
    }
    writeln!(
        out,
        "  {} event(s): {}",
        events.values().sum::<usize>(),
        events
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "  billing runs: {billing_runs}, meter events reported to Stripe: {meter_events}"
    )?;

    // Last, so that nothing above counts these calls: each consumer's app calls the API.
    writeln!(
        out,
        "\n== the consumers call the API ({}/_local/api/v1/forecast, x-api-key) ==",
        stack.info.base_url
    )?;
    for c in &mut consumers {
        let Some(key) = &c.key else { continue };
        let resp = http
            .client
            .get(format!(
                "{}/_local/api/v1/forecast?city=lisbon",
                stack.info.base_url
            ))
            .header("x-api-key", key)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let meaning = match (status, body["error"].as_str()) {
            (200, _) => "served".to_string(),
            (403, Some(reason)) => format!("refused: {reason}, meant as HTTP {}", body["status"]),
            (s, Some(reason)) => format!("{s}: {reason}"),
            (s, None) => format!("{s}"),
        };
        writeln!(
            out,
            "  {:<10} {:<12} HTTP {status}  {meaning}",
            c.plan.consumer, c.plan.product
        )?;
        c.report.api_call = Some(ApiCall { status, body });
    }

    Ok(DemoReport {
        started_at,
        ended_at,
        consumers: consumers.into_iter().map(|c| c.report).collect(),
        events,
        billing_runs,
        meter_events_reported: meter_events,
    })
}

/// The period-close passes between the period's end and Stripe's finalisation an hour later.
async fn period_close(
    stack: &LocalStack,
    period_end: Timestamp,
    out: &mut dyn Write,
    runs: &mut u32,
    reported: &mut u64,
) -> anyhow::Result<()> {
    for minutes in [10, 40] {
        advance_to(stack, period_end + Span::minutes(minutes)).await;
        // `period_close` is the schedule's frequent pass; older builds call it `hourly`.
        let summary = match stack.billing_run(&json!({"mode": "period_close"})).await {
            Ok(s) => s,
            Err(e) if e.contains("mode") => stack
                .billing_run(&json!({"mode": "hourly"}))
                .await
                .map_err(|e| anyhow::anyhow!("period-close run: {e}"))?,
            Err(e) => anyhow::bail!("period-close run: {e}"),
        };
        *runs += 1;
        *reported += u64::from(summary.reported);
        writeln!(
            out,
            "[{}] period-close billing run: {} meter event(s), {} unit(s)",
            fmt_time(stack.now()),
            summary.reported,
            summary.quantity
        )?;
    }
    // Stripe finalises and charges an hour after the period ended.
    advance_to(stack, period_end + Span::minutes(70)).await;
    writeln!(
        out,
        "[{}] the period closed: Stripe finalised the month's invoices and charged the cards",
        fmt_time(stack.now())
    )?;
    Ok(())
}

/// Starts a checkout on the portal route and completes it on the emulator with `cards` in turn.
/// Returns the subscription and its key (none for a credit purchase).
#[allow(clippy::too_many_arguments)]
async fn checkout(
    stack: &LocalStack,
    http: &Http,
    consumer: &str,
    product: &str,
    credit: Option<i64>,
    cards: &[Card],
    return_url: &str,
    out: &mut dyn Write,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let mut body = json!({
        "consumer_id": consumer,
        "product_id": product,
        "subscription_name": format!("{consumer} {product}"),
        "success_url": format!("{return_url}?checkout=success"),
        "cancel_url": format!("{return_url}?checkout=cancel"),
        "email": format!("billing@{consumer}.example"),
    });
    if let Some(amount) = credit {
        body["credit_amount"] = amount.into();
    }
    let (status, answer) = http
        .portal(reqwest::Method::POST, "/checkout/sessions", Some(body))
        .await?;
    if status != 201 {
        anyhow::bail!("POST /checkout/sessions answered {status}: {answer}");
    }
    let sub = answer["subscription_id"].as_str().map(String::from);
    let key = answer["api_key"].as_str().map(String::from);
    let session = answer["id"].as_str().unwrap_or_default().to_string();
    if session.starts_with("cs_") {
        let mut paid = false;
        for card in cards {
            match stack.emulator().complete_checkout(&session, *card) {
                Ok(_) => {
                    paid = true;
                    break;
                }
                Err(e) => writeln!(
                    out,
                    "  {consumer}: checkout for {product} with a {card:?} card refused by Stripe: {}",
                    e.message
                )?,
            }
        }
        if !paid {
            anyhow::bail!("no card paid checkout session {session}");
        }
        stack.emulator().wait_for_webhooks_idle().await;
    }
    Ok((sub, key))
}

async fn subscription_status(
    http: &Http,
    consumer: &str,
    sub: &str,
) -> anyhow::Result<Option<String>> {
    let (_, body) = http
        .portal(
            reqwest::Method::GET,
            &format!("/consumers/{consumer}/subscriptions"),
            None,
        )
        .await?;
    Ok(body["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"] == sub)
        .and_then(|s| s["status"].as_str().map(String::from)))
}

/// One usage day: each consumer's gateway posts a batch (four records over the day), then asks
/// whether the key may still call.
async fn post_usage(
    http: &Http,
    consumers: &mut [Consumer],
    midnight: Timestamp,
    day: i64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut line = Vec::new();
    for c in consumers.iter_mut() {
        let Some(sub) = c.subscription.clone() else {
            continue;
        };
        let per = c.plan.daily_calls / 4;
        let records: Vec<Value> = [9, 11, 14, 16]
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let value = if i == 3 {
                    c.plan.daily_calls - 3 * per
                } else {
                    per
                };
                json!({
                    "id": format!("r{i}"),
                    "subscription_id": sub,
                    "timestamp": (midnight + Span::hours(*h) + Span::minutes(10)).to_rfc3339(),
                    "meter": "api_calls",
                    "value": value,
                })
            })
            .collect();
        let batch =
            json!({"batch_id": format!("demo-d{day}-{}", c.plan.consumer), "records": records});
        let (status, answer) = http
            .gateway(reqwest::Method::POST, "/usage", Some(batch))
            .await?;
        c.report.calls_sent += c.plan.daily_calls;
        if status == 200 {
            let rejected: Vec<u64> = answer["rejections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["index"].as_u64())
                .collect();
            c.report.calls_accepted += records
                .iter()
                .enumerate()
                .filter(|(i, _)| !rejected.contains(&(*i as u64)))
                .map(|(_, r)| r["value"].as_u64().unwrap_or(0))
                .sum::<u64>();
        }
        if status != 200 {
            c.report
                .notes
                .push(format!("day {day}: POST /usage answered {status}"));
            line.push(format!("{} HTTP {status}", c.plan.consumer));
            continue;
        }
        if let Some(s) = answer["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["subscription_id"] == sub.as_str())
        {
            c.report.calls_counted = s["usage"]["api_calls"].as_u64().unwrap_or(0);
            c.report.usage_state = s["state"].as_str().map(String::from);
            if let Some(b) = s["credit_balance"].as_i64() {
                c.report.credit_balance = Some(b);
            }
        }
        if let Some(key) = &c.key {
            let (_, ent) = http
                .gateway(reqwest::Method::GET, &format!("/entitlements/{key}"), None)
                .await?;
            c.report.entitlement_in_month = Some(ent.clone());
            c.report.entitlement = Some(ent);
        }
        let ent_status = c
            .report
            .entitlement
            .as_ref()
            .and_then(|e| e["status"].as_u64())
            .unwrap_or(0);
        line.push(format!(
            "{} +{} → {} ({}{})",
            c.plan.consumer,
            c.plan.daily_calls,
            c.report.calls_counted,
            c.report.usage_state.as_deref().unwrap_or("?"),
            if ent_status != 0 && ent_status != 200 {
                format!(", gateway answers {ent_status}")
            } else {
                String::new()
            }
        ));
    }
    writeln!(
        out,
        "[{}] usage day {day}: {}",
        fmt_time(midnight + Span::hours(17)),
        line.join(" · ")
    )?;
    Ok(())
}

/// The invoice Stripe finalised when the month `[start, end]` of `stripe_sub` closed: the
/// renewal (`subscription_cycle`) invoice, which bills the month's metered usage in arrears and
/// the next month's licensed fees in advance.
/// The emulator's `subscription_cycle` invoice of `stripe_sub` whose period ends at `end`
/// (finalised or later), if Stripe made it.
pub fn month_invoice(
    stack: &LocalStack,
    stripe_sub: &str,
    end: Timestamp,
) -> Option<InvoiceSummary> {
    let emulator = stack.emulator();
    let mut seen = std::collections::BTreeSet::new();
    for event in emulator.events() {
        let Some(id) = event["data"]["object"]["id"].as_str() else {
            continue;
        };
        if !id.starts_with("in_") || !seen.insert(id.to_string()) {
            continue;
        }
        let Some(inv) = emulator.object(id) else {
            continue;
        };
        let sub = inv["parent"]["subscription_details"]["subscription"]
            .as_str()
            .or(inv["subscription"].as_str());
        if sub != Some(stripe_sub)
            || inv["billing_reason"] != "subscription_cycle"
            || inv["status"] == "draft"
            || inv["period_end"].as_i64() != Some(end.timestamp())
        {
            continue;
        }
        return Some(InvoiceSummary {
            id: id.to_string(),
            status: inv["status"].as_str().unwrap_or("").to_string(),
            total: inv["total"].as_i64().unwrap_or(0),
            amount_paid: inv["amount_paid"].as_i64().unwrap_or(0),
            period_start: inv["period_start"].as_i64().unwrap_or(0),
            period_end: inv["period_end"].as_i64().unwrap_or(0),
            lines: inv["lines"]["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    (
                        l["description"].as_str().unwrap_or("").to_string(),
                        l["amount"].as_i64().unwrap_or(0),
                    )
                })
                .collect(),
        });
    }
    None
}
