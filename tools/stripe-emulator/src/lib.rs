//! A stateful local Stripe for tollgate's tests and local stack.
//!
//! Stripe's `stripe-mock` is stateless and sends no webhooks, and Stripe itself cannot be reached
//! from the build machines, so this emulator keeps a real in-memory account: the form-encoded
//! v1 API (customers, products, prices, billing meters and meter events, checkout sessions,
//! subscriptions, invoices, customer balance), an advanceable clock that renews subscriptions
//! and bills metered usage with its own implementation of Stripe's arithmetic, signed webhooks,
//! Stripe's idempotency semantics, and switches for faults, duplicates and reordering.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tollgate_stripe_emulator::{Emulator, EmulatorConfig};
//! let stripe = Emulator::start(EmulatorConfig::default()).await?;
//! // point async-stripe at stripe.base_url(), then drive time with stripe.advance_clock(..)
//! # Ok(()) }
//! ```

// The complete Stripe objects in `objects` are large `json!` literals.
#![recursion_limit = "256"]

mod api;
pub mod arithmetic;
mod billing;
pub mod error;
mod form;
pub mod objects;
mod params;
mod server;
mod state;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use error::ApiError;
pub use objects::API_VERSION;
pub use state::{AfterRetries, BillingConfig, Card, Fault, MeterErrorReport, RequestRecord};
pub use webhooks::{Delivery, WebhookConfig, signature_header};

use server::{App, Shared};
use state::{State, Table};

#[derive(Debug, Clone, Default)]
pub struct EmulatorConfig {
    /// 0 picks a free port.
    pub port: u16,
    /// Unix seconds the emulator clock starts at; the wall clock when `None`.
    pub start_time: Option<i64>,
    pub webhook: WebhookConfig,
    pub billing: BillingConfig,
    /// `TYPE.FIELD` (e.g. `invoice.account_country`): a deliberate fault that removes that
    /// field from every object of that type in API responses, so the conformance suite can show
    /// that it catches a missing field. Never set outside that test.
    pub drop_field: Option<String>,
}

pub struct Emulator;

impl Emulator {
    /// Serves on 127.0.0.1 until the returned handle is dropped.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<RunningEmulator> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], config.port))).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let pending = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let dispatcher = webhooks::Dispatcher::new(config.webhook, pending.clone());
        let state = State {
            now: config
                .start_time
                .unwrap_or_else(|| chrono::Utc::now().timestamp()),
            base_url: base_url.clone(),
            billing: config.billing,
            customers: Table::default(),
            products: Table::default(),
            prices: Table::default(),
            meters: Table::default(),
            sessions: Table::default(),
            subscriptions: Table::default(),
            invoices: Table::default(),
            balance_txns: Table::default(),
            charges: Table::default(),
            refunds: Table::default(),
            events: Table::default(),
            session_items: HashMap::new(),
            session_subscription_metadata: HashMap::new(),
            session_trial_days: HashMap::new(),
            item_owner: HashMap::new(),
            meter_events: vec![],
            meter_error_reports: vec![],
            identifiers: HashMap::new(),
            cards: HashMap::new(),
            sub_clocks: HashMap::new(),
            invoice_timers: HashMap::new(),
            idempotency: HashMap::new(),
            requests: vec![],
            faults: vec![],
            invoice_sequence: 0,
            current_request: None,
            outbox: tx,
            pending_webhooks: pending,
        };
        let app: App = Arc::new(Shared {
            state: Mutex::new(state),
            dispatcher: dispatcher.clone(),
            drop_field: config
                .drop_field
                .as_deref()
                .and_then(|f| f.rsplit_once('.'))
                .map(|(t, f)| (t.to_string(), f.to_string())),
        });
        let delivery = tokio::spawn(dispatcher.run(rx));
        let router = server::router(app.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "stripe emulator stopped");
            }
        });
        Ok(RunningEmulator {
            base_url,
            addr,
            app,
            tasks: vec![server, delivery],
        })
    }
}

/// A running emulator: its URL and the controls tests use (also served under `/_emulator`).
pub struct RunningEmulator {
    base_url: String,
    addr: SocketAddr,
    app: App,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(crate) async fn wait_idle(app: &App, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if app.dispatcher.pending.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl RunningEmulator {
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.app.state.lock().expect("emulator state")
    }

    /// Where events are POSTed, and the `whsec_…` secret they are signed with.
    pub fn set_webhook_endpoint(&self, url: impl Into<String>, secret: impl Into<String>) {
        let mut cfg = self.app.dispatcher.config.lock().expect("config");
        cfg.url = Some(url.into());
        cfg.secret = secret.into();
    }

    pub fn set_webhook_duplicates(&self, on: bool) {
        self.app
            .dispatcher
            .config
            .lock()
            .expect("config")
            .duplicates = on;
    }

    pub fn set_webhook_reorder(&self, on: bool) {
        self.app.dispatcher.config.lock().expect("config").reorder = on;
    }

    pub fn set_webhook_retry_backoff(&self, delays: Vec<Duration>) {
        self.app
            .dispatcher
            .config
            .lock()
            .expect("config")
            .retry_backoff = delays;
    }

    pub fn set_billing_config(&self, billing: BillingConfig) {
        self.state().billing = billing;
    }

    /// The emulator clock, in Unix seconds.
    pub fn now(&self) -> i64 {
        self.state().now
    }

    /// Moves the clock forward, running renewals, invoice finalisation (after the 1-hour
    /// grace) and payment retries due on the way, in time order.
    pub fn advance_clock(&self, by: Duration) {
        let mut st = self.state();
        let target = st.now + by.as_secs() as i64;
        st.advance_to(target);
    }

    /// Sets the clock to `unix_secs`; it never moves backwards.
    pub fn set_time(&self, unix_secs: i64) {
        let mut st = self.state();
        assert!(unix_secs >= st.now, "the emulator clock only moves forward");
        st.advance_to(unix_secs);
    }

    /// Acts as the customer on the hosted page. Returns the completed session.
    pub fn complete_checkout(&self, session_id: &str, card: Card) -> Result<Value, ApiError> {
        self.state().complete_checkout(session_id, card)
    }

    /// The charge a payment (`pi_...`, a Checkout Session's `payment_intent`) made.
    pub fn charge_of_payment(&self, payment_intent: &str) -> Option<Value> {
        self.state()
            .charges
            .newest_first()
            .find(|c| c["payment_intent"] == payment_intent)
            .cloned()
    }

    /// The customer disputes `charge` with their bank, and the bank decides: Stripe sends
    /// `charge.dispute.created`, then `charge.dispute.closed` with `status` `lost` (the money
    /// goes back to the customer) or `won` (https://docs.stripe.com/disputes/how-disputes-work).
    pub fn dispute(&self, charge: &str, lost: bool) -> Result<Value, ApiError> {
        self.state().dispute(charge, lost)
    }

    /// Switches the card future payments of `customer` are made with.
    pub fn set_customer_card(&self, customer: &str, card: Card) {
        self.state().cards.insert(customer.to_string(), card);
    }

    /// Answers the next `times` requests matching `method` and `path` (exact, or a prefix
    /// ending in `*`) with `status` (429 or 500 as Stripe sends them).
    pub fn inject_fault(&self, method: &str, path: &str, status: u16, times: u32) {
        self.state().faults.push(Fault {
            method: method.into(),
            path: path.into(),
            status,
            times,
        });
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// POST and DELETE requests to `/v1` received so far (replays and faults included).
    pub fn write_request_count(&self) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.is_write())
            .count()
    }

    pub fn clear_request_log(&self) {
        self.state().requests.clear();
    }

    /// Meter events accepted but not billable, as Stripe reports them asynchronously.
    pub fn meter_error_reports(&self) -> Vec<MeterErrorReport> {
        self.state().meter_error_reports.clone()
    }

    pub fn webhook_deliveries(&self) -> Vec<Delivery> {
        self.app.dispatcher.log.lock().expect("log").clone()
    }

    /// Every event created so far, oldest first.
    pub fn events(&self) -> Vec<Value> {
        let st = self.state();
        let mut all: Vec<Value> = st.events.newest_first().cloned().collect();
        all.reverse();
        all
    }

    /// Any stored object by id (customer, product, price, subscription, invoice, ...).
    pub fn object(&self, id: &str) -> Option<Value> {
        let st = self.state();
        if id.starts_with("price_") {
            return st.prices.get(id).cloned();
        }
        st.lookup(id).or_else(|| st.events.get(id).cloned())
    }

    /// Waits until every queued webhook has been delivered or has exhausted its retries.
    pub async fn wait_for_webhooks_idle(&self) {
        assert!(
            wait_idle(&self.app, Duration::from_secs(30)).await,
            "webhooks still pending after 30 s"
        );
    }
}
