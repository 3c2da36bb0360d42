//! The emulator's in-memory Stripe account: objects, clock, idempotency cache, logs.

use std::collections::HashMap;

use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

/// Objects of one kind, in creation order (lists answer newest first, as Stripe does).
#[derive(Debug, Default)]
pub struct Table {
    order: Vec<String>,
    map: HashMap<String, Value>,
}

impl Table {
    pub fn insert(&mut self, id: &str, v: Value) {
        if self.map.insert(id.to_string(), v).is_none() {
            self.order.push(id.to_string());
        }
    }
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.map.get(id)
    }
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.map.get_mut(id)
    }
    pub fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }
    pub fn newest_first(&self) -> impl Iterator<Item = &Value> {
        self.order.iter().rev().filter_map(|id| self.map.get(id))
    }
    pub fn ids(&self) -> Vec<String> {
        self.order.clone()
    }
}

/// The customer's card, as chosen on the checkout page or switched by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Card {
    Good,
    Declined,
}

/// What happens to a subscription once every retry of a failed invoice has failed
/// (Stripe's "Manage failed payments" setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterRetries {
    Unpaid,
    Canceled,
    PastDue,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub id: String,
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub status: u16,
    pub replayed: bool,
    pub fault_injected: bool,
    /// Emulator clock.
    pub at: i64,
}

impl RequestRecord {
    pub fn is_write(&self) -> bool {
        self.method == "POST" || self.method == "DELETE"
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Fault {
    pub method: String,
    /// Exact path, or a prefix ending in `*` (`/v1/prices*`).
    pub path: String,
    pub status: u16,
    pub times: u32,
}

impl Fault {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self.method.eq_ignore_ascii_case(method)
            && match self.path.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => self.path == path,
            }
    }
}

#[derive(Debug, Clone)]
pub struct IdempotentResult {
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct StoredMeterEvent {
    pub event_name: String,
    pub customer: String,
    pub value: i64,
    pub timestamp: i64,
    pub created: i64,
}

/// A meter event Stripe accepted and then could not bill: what its
/// `v1.billing.meter.error_report_triggered` event reports (`code` is one of Stripe's
/// `error_types[].code` values, e.g. `meter_event_customer_not_found`, `archived_meter`).
#[derive(Debug, Clone, Serialize)]
pub struct MeterErrorReport {
    pub code: String,
    pub message: String,
    pub identifier: String,
    pub event_name: String,
    pub meter: Option<String>,
    /// Emulator clock.
    pub at: i64,
}

/// Billing bookkeeping Stripe keeps but does not expose on the object.
#[derive(Debug, Clone)]
pub struct SubClock {
    pub anchor: i64,
    pub index: u32,
    pub interval: String,
    pub interval_count: u32,
    /// A free trial before the first period; billing periods are anchored at its end.
    pub trial: Option<(i64, i64)>,
}

impl SubClock {
    pub fn period(&self, index: u32) -> (i64, i64) {
        (
            boundary(self.anchor, &self.interval, self.interval_count * index),
            boundary(
                self.anchor,
                &self.interval,
                self.interval_count * (index + 1),
            ),
        )
    }
    pub fn current(&self) -> (i64, i64) {
        self.trial.unwrap_or_else(|| self.period(self.index))
    }
}

/// Period boundaries are computed from the anchor each time, so a subscription started on
/// Jan 31 renews on Feb 28 and then on Mar 31, as Stripe's billing_cycle_anchor does.
fn boundary(anchor: i64, interval: &str, n: u32) -> i64 {
    use chrono::{DateTime, Days, Months};
    let start = DateTime::from_timestamp(anchor, 0).unwrap_or_default();
    let t = match interval {
        "day" => start.checked_add_days(Days::new(n.into())),
        "week" => start.checked_add_days(Days::new(7 * u64::from(n))),
        "year" => start.checked_add_months(Months::new(12 * n)),
        _ => start.checked_add_months(Months::new(n)),
    };
    t.map(|t| t.timestamp()).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Default)]
pub struct InvoiceTimers {
    pub finalize_at: Option<i64>,
    pub next_attempt: Option<i64>,
    pub retries_done: usize,
    /// The usage period metered lines are computed over.
    pub usage_period: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Stripe waits an hour after a period ends before finalising, for late meter events.
    pub finalize_grace_secs: i64,
    /// Delays after each failed attempt before the next one (Smart Retries stand-in).
    pub retry_delays_secs: Vec<i64>,
    pub after_retries: AfterRetries,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            finalize_grace_secs: 3600,
            retry_delays_secs: vec![3 * 86_400, 5 * 86_400, 7 * 86_400],
            after_retries: AfterRetries::Unpaid,
        }
    }
}

pub struct State {
    pub now: i64,
    pub base_url: String,
    pub billing: BillingConfig,
    pub customers: Table,
    pub products: Table,
    pub prices: Table,
    pub meters: Table,
    pub sessions: Table,
    pub subscriptions: Table,
    pub invoices: Table,
    pub balance_txns: Table,
    /// Charges of payment-mode Checkout payments (the ones refunds and disputes act on).
    pub charges: Table,
    pub refunds: Table,
    pub events: Table,
    pub session_items: HashMap<String, Vec<Value>>,
    pub session_subscription_metadata: HashMap<String, Value>,
    pub session_trial_days: HashMap<String, u64>,
    pub item_owner: HashMap<String, String>,
    pub meter_events: Vec<StoredMeterEvent>,
    pub meter_error_reports: Vec<MeterErrorReport>,
    pub identifiers: HashMap<String, i64>,
    pub cards: HashMap<String, Card>,
    pub sub_clocks: HashMap<String, SubClock>,
    pub invoice_timers: HashMap<String, InvoiceTimers>,
    pub idempotency: HashMap<String, IdempotentResult>,
    pub requests: Vec<RequestRecord>,
    pub faults: Vec<Fault>,
    pub invoice_sequence: u64,
    /// Request id and idempotency key of the API call being handled, for `event.request`.
    pub current_request: Option<(String, Option<String>)>,
    pub outbox: UnboundedSender<Value>,
    pub pending_webhooks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..24)
        .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
        .collect();
    format!("{prefix}_{tail}")
}

impl State {
    pub fn emit(&mut self, kind: &str, object: Value, previous: Option<Value>) {
        let id = new_id("evt");
        let (req, key) = match &self.current_request {
            Some((r, k)) => (Some(r.as_str()), k.as_deref()),
            None => (None, None),
        };
        let event = crate::objects::event(&id, self.now, kind, object, previous, req, key);
        self.events.insert(&id, event.clone());
        self.pending_webhooks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.outbox.send(event).is_err() {
            self.pending_webhooks
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Finds any object by its id, for `expand[]`: by id prefix first, then in every table,
    /// since products may carry a caller-chosen id (`tg_prod_…`), as Stripe allows
    /// (https://docs.stripe.com/api/products/create#create_product-id).
    pub fn lookup(&self, id: &str) -> Option<Value> {
        let by_prefix = match id.split('_').next()? {
            "cus" => Some(&self.customers),
            "prod" => Some(&self.products),
            "price" => Some(&self.prices),
            "sub" => Some(&self.subscriptions),
            "in" => Some(&self.invoices),
            "cs" => Some(&self.sessions),
            "mtr" => Some(&self.meters),
            "cbtxn" => Some(&self.balance_txns),
            "ch" => Some(&self.charges),
            "re" => Some(&self.refunds),
            "si" => return self.subscription_item(id),
            _ => None,
        };
        let v = match by_prefix.and_then(|t| t.get(id)) {
            Some(v) => v.clone(),
            None => [
                &self.products,
                &self.customers,
                &self.prices,
                &self.subscriptions,
                &self.invoices,
                &self.sessions,
                &self.meters,
                &self.balance_txns,
            ]
            .iter()
            .find_map(|t| t.get(id))?
            .clone(),
        };
        Some(if v["object"] == "price" {
            crate::objects::price_view(&v, false)
        } else {
            v
        })
    }

    pub fn subscription_item(&self, id: &str) -> Option<Value> {
        let sub = self.subscriptions.get(self.item_owner.get(id)?)?;
        sub["items"]["data"]
            .as_array()?
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
    }
}
