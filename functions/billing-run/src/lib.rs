//! The billing run: every night (and every hour, briefly) it reports each subscription's closed
//! usage to Stripe Billing Meters exactly once, expires one-time access that ended, and
//! re-reads subscriptions whose webhooks seem to have gone missing.
//!
//! The plan (what to send, with which identifier and timestamp) is pure code in
//! `tollgate_domain::billing`; this crate lists the work, carries the plan out — claim the
//! ledger entry in DynamoDB, send, mark it reported — and keeps Stripe's limits. The design
//! and its guarantees are in `docs/billing-run.md`.

pub mod config;
pub mod input;
pub mod limits;
pub mod summary;

use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tollgate_app::credit::CreditStore;
use tollgate_app::subscriptions::{
    Attempt, Committed, Contended, Transition, commit_transition, retry_on_conflict,
};
use tollgate_domain::billing::{self, MeterPlanInput, RunMode, SliceAction};
use tollgate_domain::catalog::Catalog;
use tollgate_domain::ids::{MeterId, StripeId, SubscriptionId};
use tollgate_domain::lifecycle::{self, BillingFact};
use tollgate_domain::ports::{
    ClaimScope, EventPublisher, Expect, LedgerEntry, MeterEvent, Payments, PaymentsError,
    StoreError, Write, bills_metered_in_stripe,
};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::time::{Clock, Duration, NaiveDate, Timestamp};
use tollgate_domain::usage;

pub use config::RunConfig;
pub use input::{InputError, RunRequest};
pub use summary::{Failure, LateUsage, RunSummary};

use limits::{KeyedLocks, RateLimiter};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("input: {0}")]
    Input(#[from] InputError),
    /// The work list could not be read: nothing was reported, the invocation may be retried.
    #[error("listing the work failed: {0}")]
    Store(#[from] StoreError),
}

/// `errorType` tells the invoker whether a retry can help: bad input never does.
impl From<RunError> for lambda_runtime::Diagnostic {
    fn from(e: RunError) -> Self {
        let error_type = match &e {
            RunError::Input(_) => "InvalidInput",
            RunError::Store(_) => "StoreUnavailable",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// How long a "this night is done" marker is kept (longer than the late window).
const RUN_MARKER_TTL: Duration = Duration::days(40);

pub struct BillingRun {
    store: Arc<dyn CreditStore>,
    payments: Arc<dyn Payments>,
    publisher: Arc<dyn EventPublisher>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    config: RunConfig,
    meter_events: RateLimiter,
    reads: RateLimiter,
    locks: KeyedLocks,
}

/// One unit of billing work: a subscription and the meters it had usage on.
type Work = BTreeMap<SubscriptionId, BTreeSet<MeterId>>;

/// Which subscriptions a billing pass acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// All listed subscriptions (the nightly sweep).
    All,
    /// Only those whose billing period just ended (the period-close pass).
    PeriodClosed,
}

impl BillingRun {
    pub fn new(
        store: Arc<dyn CreditStore>,
        payments: Arc<dyn Payments>,
        publisher: Arc<dyn EventPublisher>,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        config: RunConfig,
    ) -> Self {
        Self {
            meter_events: RateLimiter::new(config.meter_events_per_second),
            reads: RateLimiter::new(config.stripe_reads_per_second),
            locks: KeyedLocks::default(),
            store,
            payments,
            publisher,
            catalog,
            clock,
            config,
        }
    }

    /// The Lambda handler: the payload says which run, the context says until when.
    pub async fn handle(
        &self,
        event: lambda_runtime::LambdaEvent<Value>,
    ) -> Result<RunSummary, RunError> {
        let request = input::parse(&event.payload, self.clock.now())?;
        let deadline =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
        self.run(request, Some(deadline)).await
    }

    /// Runs once. `deadline`: stop starting new subscriptions `deadline_margin` before it; the
    /// next invocation (the period-close pass) continues, because every step is re-runnable.
    pub async fn run(
        &self,
        request: RunRequest,
        deadline: Option<SystemTime>,
    ) -> Result<RunSummary, RunError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let summary = Mutex::new(RunSummary::new(request.mode, request.date));
        let ctx = Ctx {
            summary: &summary,
            deadline,
        };
        match request.mode {
            RunMode::Nightly => self.nightly(request.date, now, &ctx).await?,
            RunMode::PeriodClose => {
                // Finish the night if its run was cut short (deadline, crash, Stripe outage).
                let night = (now - Duration::days(1)).date_naive();
                if !self.night_done(night).await? {
                    self.nightly(night, now, &ctx).await?;
                }
                self.period_close(now, &ctx).await?;
            }
        }
        let mut summary = summary.into_inner().expect("summary lock");
        summary.duration_ms = started.elapsed().as_millis() as u64;
        summary.log();
        Ok(summary)
    }

    async fn night_done(&self, night: NaiveDate) -> Result<bool, StoreError> {
        self.store
            .is_claimed(ClaimScope::BillingRun, &night_marker(night))
            .await
    }

    async fn nightly(
        &self,
        date: NaiveDate,
        now: Timestamp,
        ctx: &Ctx<'_>,
    ) -> Result<(), RunError> {
        let cfg = &self.config.billing;
        let until = billing::date_start(date) + Duration::days(1);
        let cutoff = billing::cutoff(until, now, cfg);
        let window_start = cfg.window_start(cutoff);
        ctx.summary.lock().expect("summary").cutoff = Some(cutoff);

        self.expire_access(now, ctx).await?;
        self.reconcile(now, ctx).await?;

        let work = self.metered_work(window_start, cutoff).await?;
        self.bill(work, window_start, cutoff, now, Pass::All, ctx)
            .await;

        let complete = {
            let s = ctx.summary.lock().expect("summary");
            s.deferred == 0 && !s.failed.iter().any(|f| f.retryable)
        };
        ctx.summary.lock().expect("summary").complete = complete;
        if complete && cutoff >= until {
            let marker = Write::Claim {
                scope: ClaimScope::BillingRun,
                id: night_marker(date),
                expires_at: now + RUN_MARKER_TTL,
            };
            match self.store.commit(vec![marker]).await {
                Ok(()) => {}
                // A concurrent run of the same night finished first: same outcome.
                Err(e) if e.is_conflict() => {}
                Err(e) => tracing::warn!(error = %e, "could not mark the night done"),
            }
        }
        Ok(())
    }

    /// The period-close pass (every 15 minutes): subscriptions with usage today or yesterday
    /// whose billing period ended within the last two hours get their final slice reported
    /// while Stripe still waits before finalising the invoice.
    async fn period_close(&self, now: Timestamp, ctx: &Ctx<'_>) -> Result<(), RunError> {
        let cfg = &self.config.billing;
        let cutoff = billing::cutoff(now, now, cfg);
        let window_start = cfg.window_start(cutoff);
        let from = billing::day_start(now) - Duration::days(1);
        let work = self.metered_work(from, now).await?;
        self.bill(work, window_start, cutoff, now, Pass::PeriodClosed, ctx)
            .await;
        let mut s = ctx.summary.lock().expect("summary");
        if s.cutoff.is_none() {
            s.cutoff = Some(cutoff);
        }
        s.complete = s.deferred == 0 && !s.failed.iter().any(|f| f.retryable);
        Ok(())
    }

    /// The (subscription, meters) with usage buckets in the days of `[from, to)`.
    async fn metered_work(&self, from: Timestamp, to: Timestamp) -> Result<Work, StoreError> {
        let mut work = Work::new();
        let mut day = from.date_naive();
        let last = (to - Duration::seconds(1)).date_naive();
        while day <= last {
            for (sub, meter) in self.store.metered_on(day).await? {
                work.entry(sub).or_default().insert(meter);
            }
            day = day.succ_opt().expect("date in range");
        }
        Ok(work)
    }

    async fn bill(
        &self,
        work: Work,
        window_start: Timestamp,
        cutoff: Timestamp,
        now: Timestamp,
        pass: Pass,
        ctx: &Ctx<'_>,
    ) {
        // One BatchGetItem per 100 subscriptions instead of a read each: the period-close pass
        // looks at every subscription with usage today, every 15 minutes.
        let ids: Vec<SubscriptionId> = work.keys().cloned().collect();
        let mut found: HashMap<SubscriptionId, Subscription> = HashMap::new();
        let mut unread: BTreeSet<SubscriptionId> = BTreeSet::new();
        for chunk in ids.chunks(1000) {
            match self.store.get_subscriptions(chunk).await {
                Ok(subs) => found.extend(subs.into_iter().map(|s| (s.id.clone(), s))),
                Err(e) => {
                    for id in chunk {
                        ctx.fail(id, None, &e.to_string(), e.is_retryable());
                    }
                    unread.extend(chunk.iter().cloned());
                }
            }
        }
        let mut due = Vec::with_capacity(found.len());
        for (id, meters) in work {
            match found.remove(&id) {
                Some(sub) => {
                    let wanted = match pass {
                        Pass::All => true,
                        Pass::PeriodClosed => billing::period_just_ended(
                            &usage::period_boundaries(&sub),
                            now,
                            &self.config.billing,
                        ),
                    };
                    if wanted {
                        due.push((sub, meters));
                    }
                }
                None if unread.contains(&id) => {}
                None => ctx.fail(&id, None, "subscription not found", false),
            }
        }
        futures::stream::iter(due)
            .for_each_concurrent(self.config.concurrency, |(sub, meters)| async move {
                if ctx.near_deadline(self.config.deadline_margin) {
                    ctx.summary.lock().expect("summary").deferred += 1;
                    return;
                }
                self.bill_subscription(&sub, &meters, window_start, cutoff, now, ctx)
                    .await;
            })
            .await;
    }

    async fn bill_subscription(
        &self,
        sub: &Subscription,
        meters: &BTreeSet<MeterId>,
        window_start: Timestamp,
        cutoff: Timestamp,
        now: Timestamp,
        ctx: &Ctx<'_>,
    ) {
        let id = &sub.id;
        let Some(product) = self.catalog.product(sub.product_id.as_str()) else {
            return ctx.fail(id, None, "product not in the catalog", false);
        };
        // Prepaid and one-time products pay usage from credit or not at all: nothing to meter.
        if !bills_metered_in_stripe(product) {
            ctx.summary.lock().expect("summary").skipped += meters.len() as u32;
            return;
        }
        // Every boundary Stripe told (renewals, re-anchors, the cancel moment): slices end
        // exactly there, so each meter event lands in the period its usage happened in.
        let (Some(customer), boundaries) = (
            sub.stripe_customer_id.clone(),
            usage::period_boundaries(sub),
        ) else {
            ctx.summary.lock().expect("summary").skipped += meters.len() as u32;
            return;
        };
        if boundaries.is_empty() {
            // No Stripe period yet (checkout not completed): nothing Stripe could bill.
            ctx.summary.lock().expect("summary").skipped += meters.len() as u32;
            return;
        }
        let billed: BTreeSet<&MeterId> = product.metered().filter_map(|p| p.meter()).collect();
        for meter in meters {
            if !billed.contains(meter) {
                ctx.summary.lock().expect("summary").skipped += 1;
                continue;
            }
            let event_name = self
                .catalog
                .meter(meter.as_str())
                .map(|m| m.event_name().to_string())
                .unwrap_or_else(|| meter.to_string());
            let lock = self.locks.get(format!("{customer}#{meter}"));
            let _one_at_a_time = lock.lock().await;
            let target = Target {
                sub,
                meter,
                customer: &customer,
                event_name: &event_name,
            };
            if let Err(f) = self
                .bill_meter(&target, &boundaries, window_start, cutoff, now, ctx)
                .await
            {
                ctx.summary.lock().expect("summary").failed.push(f);
            }
        }
    }

    async fn bill_meter(
        &self,
        t: &Target<'_>,
        boundaries: &[Timestamp],
        window_start: Timestamp,
        cutoff: Timestamp,
        now: Timestamp,
        ctx: &Ctx<'_>,
    ) -> Result<(), Failure> {
        let store_failure = |e: StoreError| {
            Failure::new(&t.sub.id, Some(t.meter), &e.to_string(), e.is_retryable())
        };
        let ledger = self
            .store
            .ledger_entries(&t.sub.id, t.meter, window_start)
            .await
            .map_err(store_failure)?;
        let buckets = self
            .store
            .usage_buckets(&t.sub.id, t.meter, window_start, cutoff)
            .await
            .map_err(store_failure)?;
        let actions = billing::plan_meter(
            &MeterPlanInput {
                subscription_id: &t.sub.id,
                meter: t.meter,
                boundaries,
                buckets: &buckets,
                ledger: &ledger,
                window_start,
                cutoff,
                now,
            },
            &self.config.billing,
        );
        if actions.is_empty() {
            ctx.summary.lock().expect("summary").skipped += 1;
        }
        for action in actions {
            match action {
                SliceAction::Report(entry) => {
                    // Claim first: the entry (identifier, value, timestamp) is fixed before
                    // anything reaches Stripe, and a concurrent run's claim of the same slice
                    // and seq fails here instead of sending twice.
                    let claim = Write::PutLedgerEntry {
                        entry: entry.clone(),
                        expect: Expect::Absent,
                    };
                    match self.store.commit(vec![claim]).await {
                        Ok(()) => {}
                        Err(e) if e.is_conflict() => {
                            ctx.summary.lock().expect("summary").in_flight += 1;
                            continue;
                        }
                        Err(e) => return Err(store_failure(e)),
                    }
                    self.send_and_mark(t, entry, 0, false, ctx).await?;
                }
                SliceAction::Resend(entry) => {
                    let version = entry.version;
                    self.send_and_mark(t, entry, version, true, ctx).await?;
                }
                SliceAction::InFlight(_) => {
                    ctx.summary.lock().expect("summary").in_flight += 1;
                }
                SliceAction::Unconfirmed(entry) => {
                    tracing::error!(
                        subscription = %t.sub.id, meter = %t.meter, identifier = %entry.identifier,
                        quantity = entry.quantity, claimed_at = %entry.created_at,
                        "claimed meter event never confirmed and past Stripe's dedupe window"
                    );
                    ctx.summary
                        .lock()
                        .expect("summary")
                        .unconfirmed
                        .push(entry.identifier);
                }
                SliceAction::LateUnbilled { slice, quantity } => {
                    ctx.summary
                        .lock()
                        .expect("summary")
                        .late_unbilled
                        .push(LateUsage {
                            subscription_id: t.sub.id.clone(),
                            meter: t.meter.clone(),
                            from: slice.from,
                            quantity,
                        });
                }
                SliceAction::Inconsistent { reason, .. } => {
                    return Err(Failure::new(&t.sub.id, Some(t.meter), &reason, false));
                }
            }
        }
        Ok(())
    }

    /// Sends a claimed entry and records that Stripe took it. A failure to send leaves the
    /// claim unmarked: the next run re-sends it with the same identifier.
    async fn send_and_mark(
        &self,
        t: &Target<'_>,
        mut entry: LedgerEntry,
        version: u64,
        resend: bool,
        ctx: &Ctx<'_>,
    ) -> Result<(), Failure> {
        let event = MeterEvent {
            event_name: t.event_name.to_string(),
            customer: t.customer.clone(),
            value: entry.quantity,
            identifier: entry.identifier.clone(),
            timestamp: entry.event_timestamp,
        };
        self.meter_events.acquire().await;
        ctx.summary.lock().expect("summary").stripe_calls += 1;
        match self.payments.report_meter_event(&event).await {
            Ok(()) => {}
            // Stripe already holds this identifier: an earlier send of this very claim got
            // through (identifiers are unique per claim), only its answer was lost.
            Err(PaymentsError::InvalidRequest {
                code: Some(code), ..
            }) if code == "resource_already_exists" => {}
            Err(e) => return Err(payments_failure(&t.sub.id, Some(t.meter), &e)),
        }
        {
            let mut s = ctx.summary.lock().expect("summary");
            s.reported += 1;
            s.quantity = s.quantity.saturating_add(entry.quantity);
            if resend {
                s.resent += 1;
            }
        }
        entry.reported_at = Some(self.clock.now());
        let mark = Write::PutLedgerEntry {
            entry,
            expect: Expect::Version(version),
        };
        match self.store.commit(vec![mark]).await {
            Ok(()) => Ok(()),
            // Another invocation re-sent and marked it meanwhile: the entry is settled.
            Err(e) if e.is_conflict() => Ok(()),
            // Stripe has it; the next run re-sends it within the dedupe window (no double count).
            Err(e) => Err(Failure::new(
                &t.sub.id,
                Some(t.meter),
                &format!("sent, but not marked reported: {e}"),
                true,
            )),
        }
    }

    /// One-time access whose end passed: status Expired and a `SubscriptionExpired` event.
    /// (The entitlement check already refuses such a key from the second its access ended;
    /// this writes the status.)
    async fn expire_access(&self, now: Timestamp, ctx: &Ctx<'_>) -> Result<(), StoreError> {
        for sub in self.store.access_expiring_by(now).await? {
            if sub.status.is_final() {
                continue;
            }
            let id = sub.id.clone();
            let id_ref = &id;
            let result = retry_on_conflict(move || self.expire_step(id_ref, now)).await;
            ctx.record(result, id, |s| &mut s.expired);
        }
        Ok(())
    }

    /// One attempt of expiring one subscription; `Done(true)` when it was expired now.
    async fn expire_step(
        &self,
        id: &SubscriptionId,
        now: Timestamp,
    ) -> Result<Attempt<bool>, StepError> {
        let Some(mut sub) = self.store.get_subscription(id).await? else {
            return Ok(Attempt::Done(false));
        };
        if sub.status.is_final() {
            return Ok(Attempt::Done(false));
        }
        let version = sub.version;
        let effects = lifecycle::apply(&mut sub, BillingFact::AccessExpired, now);
        Ok(self
            .commit(Transition::of(sub, version, effects, now))
            .await?
            .map(|()| true))
    }

    /// Re-reads, through the payments port, subscriptions whose last webhook is more than a
    /// day old while their stored state says Stripe should have spoken since: the period ended,
    /// or a payment problem is pending. Missed webhooks are the only way these go stale.
    async fn reconcile(&self, now: Timestamp, ctx: &Ctx<'_>) -> Result<(), StoreError> {
        let mut stale = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store
                .list_all_subscriptions(cursor.as_deref(), 500)
                .await?;
            stale.extend(
                page.items
                    .into_iter()
                    .filter(|s| needs_reconcile(s, now, self.config.reconcile_after)),
            );
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        for sub in stale {
            if ctx.near_deadline(self.config.deadline_margin) {
                ctx.summary.lock().expect("summary").deferred += 1;
                continue;
            }
            let result = self.reconcile_one(&sub.id, now, ctx).await;
            ctx.record(result, sub.id, |s| &mut s.reconciled);
        }
        Ok(())
    }

    /// Applies Stripe's current state of one subscription. Each attempt re-reads the stored
    /// subscription and Stripe, so an older Stripe read never overwrites a newer webhook.
    async fn reconcile_one(
        &self,
        id: &SubscriptionId,
        now: Timestamp,
        ctx: &Ctx<'_>,
    ) -> Result<bool, StepError> {
        retry_on_conflict(move || self.reconcile_step(id, now, ctx)).await
    }

    /// One attempt of [`Self::reconcile_one`]: reads the stored subscription, then Stripe.
    async fn reconcile_step(
        &self,
        id: &SubscriptionId,
        now: Timestamp,
        ctx: &Ctx<'_>,
    ) -> Result<Attempt<bool>, StepError> {
        let Some(mut sub) = self.store.get_subscription(id).await? else {
            return Ok(Attempt::Done(false));
        };
        let Some(stripe_id) = sub.stripe_subscription_id.clone() else {
            return Ok(Attempt::Done(false));
        };
        self.reads.acquire().await;
        ctx.summary.lock().expect("summary").stripe_calls += 1;
        let snap = self.payments.get_subscription(&stripe_id).await?;
        let before = sub.clone();
        let version = sub.version;
        sub.observe_stripe_periods(&snap);
        let effects = match BillingFact::of_stripe(&snap.status) {
            Some(fact) => lifecycle::apply(&mut sub, fact, now),
            None => &[],
        };
        if sub == before {
            return Ok(Attempt::Done(false));
        }
        sub.updated_at = now;
        let status = sub.status;
        let done = self
            .commit(Transition::of(sub, version, effects, now))
            .await?;
        if let Attempt::Done(()) = done {
            tracing::info!(subscription = %id, status = status.as_str(), "reconciled with Stripe");
        }
        Ok(done.map(|()| true))
    }

    /// The one transition step (`tollgate_app::subscriptions`): the subscription, its keys'
    /// gates, then the events.
    async fn commit(&self, t: Transition<'_>) -> Result<Attempt<()>, StepError> {
        match commit_transition(&*self.store, &*self.publisher, &self.catalog, t).await? {
            Committed::Applied { .. } | Committed::AlreadyClaimed => Ok(Attempt::Done(())),
            Committed::Stale => Ok(Attempt::Retry),
        }
    }
}

/// Why one subscription's expiry or reconcile failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Payments(#[from] PaymentsError),
    #[error(transparent)]
    Contended(#[from] Contended),
}

impl StepError {
    fn failure(&self, sub: &SubscriptionId) -> Failure {
        let retryable = match self {
            StepError::Store(e) => e.is_retryable(),
            StepError::Payments(e) => e.is_transient(),
            StepError::Contended(_) => true,
        };
        Failure::new(sub, None, &self.to_string(), retryable)
    }
}

/// Whether the stored subscription should be re-read from Stripe (see [`BillingRun::reconcile`]).
pub fn needs_reconcile(sub: &Subscription, now: Timestamp, after: Duration) -> bool {
    let last_heard = sub.last_stripe_event_at.unwrap_or(sub.created_at);
    sub.stripe_subscription_id.is_some()
        && !sub.status.is_final()
        && now - last_heard > after
        && (sub.current_period_end.is_some_and(|end| end <= now)
            || matches!(
                sub.status,
                SubscriptionStatus::PastDue | SubscriptionStatus::Suspended
            ))
}

fn night_marker(night: NaiveDate) -> String {
    format!("nightly:{night}")
}

fn payments_failure(sub: &SubscriptionId, meter: Option<&MeterId>, e: &PaymentsError) -> Failure {
    Failure::new(sub, meter, &e.to_string(), e.is_transient())
}

struct Target<'a> {
    sub: &'a Subscription,
    meter: &'a MeterId,
    customer: &'a StripeId,
    event_name: &'a str,
}

struct Ctx<'a> {
    summary: &'a Mutex<RunSummary>,
    deadline: Option<SystemTime>,
}

impl Ctx<'_> {
    fn near_deadline(&self, margin: std::time::Duration) -> bool {
        self.deadline
            .is_some_and(|d| SystemTime::now() + margin >= d)
    }
    /// The summary line of one subscription's step: listed in `done` when it changed
    /// something, in `failed` (with whether a retry can help) when it could not.
    fn record(
        &self,
        result: Result<bool, StepError>,
        sub: SubscriptionId,
        done: impl FnOnce(&mut RunSummary) -> &mut Vec<SubscriptionId>,
    ) {
        let mut summary = self.summary.lock().expect("summary");
        match result {
            Ok(true) => done(&mut summary).push(sub),
            Ok(false) => {}
            Err(e) => summary.failed.push(e.failure(&sub)),
        }
    }
    fn fail(&self, sub: &SubscriptionId, meter: Option<&MeterId>, error: &str, retryable: bool) {
        self.summary
            .lock()
            .expect("summary")
            .failed
            .push(Failure::new(sub, meter, error, retryable));
    }
}
