//! The billing plan: which closed usage of which subscription, meter and billing period the
//! billing run reports to Stripe Billing Meters, under which identifier and timestamp.
//!
//! Pure code: the billing-run function reads buckets and ledger entries from the store, asks
//! [`plan_meter`] what to do, and carries it out (claim in DynamoDB → send → mark sent).
//! `docs/billing-run.md` explains the design; the rules in short:
//!
//! * **Which period usage belongs to: the one its timestamp is in, to the second.** Usage is
//!   counted in buckets of at most one UTC hour, and ingestion cuts a bucket at every period
//!   boundary inside its hour (`usage::bucket_start`): with a period anchored at 13:37, the
//!   hour 13:00–14:00 is two buckets, 13:00–13:37 and 13:37–14:00. So no bucket straddles a
//!   boundary, and a period's buckets are exactly those starting in `[start, end)`.
//! * **Slices.** The unit of reporting is a *slice*: the buckets of one UTC day inside one
//!   billing period, cut at midnights and at the exact period boundaries. A slice never
//!   crosses a period, so its meter event's timestamp (the last second of the slice) always
//!   lies inside the period the usage happened in.
//! * **Closed.** A slice is closed once it has ended and [`BillingConfig::settle`] has passed
//!   (records in flight from the gateway arrive meanwhile). Only closed slices are reported; a
//!   day is therefore reported after midnight UTC, and a period's last slice minutes after the
//!   period (or the subscription, at a cancel) ended, while Stripe waits an hour before
//!   finalising the invoice.
//! * **Deltas.** Each report is the difference between a slice's closed buckets now and what the
//!   ledger says was claimed for it. Records that arrive after a slice was reported ("late")
//!   raise a bucket, and the next run reports the difference as a further entry of the slice.
//! * **Late window.** A slice can receive reports until the earlier of
//!   [`BillingConfig::late_window`] after it closed and Stripe finalising its period's invoice
//!   (period end + [`BillingConfig::finalize_grace`] − [`BillingConfig::finalize_margin`]).
//!   Usage arriving later is not sent (it would land in a finalised invoice's period, where
//!   Stripe no longer bills it); the run lists it as `late_unbilled`.
//! * **Exactly once.** An entry is claimed (created with `Expect::Absent`, key
//!   (subscription, meter, slice start, seq)) *before* it is sent, with its identifier, value
//!   and timestamp fixed; it is marked reported after Stripe accepted it. A claimed entry that
//!   was never marked is sent again, unchanged, while Stripe still dedupes its identifier
//!   ([`BillingConfig::dedupe_window`], below Stripe's ~24 h); past that it is left to the
//!   operator (`unconfirmed`), because a blind resend could count it twice.

use crate::ids::{MeterId, SubscriptionId};
use crate::ports::{LedgerEntry, UsageBucket};
use crate::time::{Duration, NaiveDate, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Timing rules of the billing run. [`BillingConfig::default`] holds the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingConfig {
    /// How long after an hour ends its bucket is still expected to grow (gateway batches in
    /// flight). A slice is closed `settle` after its last hour.
    pub settle: Duration,
    /// How long after a slice closed late records for it are still reported.
    pub late_window: Duration,
    /// Stripe's wait between a period's end (`invoice.created`) and finalising the invoice.
    pub finalize_grace: Duration,
    /// Safety margin before that finalisation: a report later than this may miss the invoice.
    pub finalize_margin: Duration,
    /// How long a claimed-but-unconfirmed report may be re-sent with the same identifier.
    /// Stripe dedupes identifiers over a rolling ~24 h; we stay an hour inside it.
    pub dedupe_window: Duration,
    /// A claimed report younger than this belongs to an invocation that is still sending it.
    pub in_flight_grace: Duration,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            settle: Duration::minutes(5),
            late_window: Duration::hours(72),
            finalize_grace: Duration::hours(1),
            finalize_margin: Duration::minutes(10),
            dedupe_window: Duration::hours(23),
            in_flight_grace: Duration::minutes(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingConfigError {
    #[error("late_window: must be positive and below Stripe's 35-day timestamp limit")]
    LateWindow,
    #[error("dedupe_window: must be positive and below Stripe's 24 h identifier window")]
    DedupeWindow,
    #[error("finalize_margin: must be below finalize_grace")]
    FinalizeMargin,
}

impl BillingConfig {
    /// Stripe rejects meter events older than 35 days; keep a day's margin.
    pub const MAX_LATE_WINDOW: Duration = Duration::days(34);

    pub fn validate(&self) -> Result<(), BillingConfigError> {
        if self.late_window <= Duration::zero() || self.late_window > Self::MAX_LATE_WINDOW {
            return Err(BillingConfigError::LateWindow);
        }
        if self.dedupe_window <= Duration::zero() || self.dedupe_window >= Duration::hours(24) {
            return Err(BillingConfigError::DedupeWindow);
        }
        if self.finalize_margin >= self.finalize_grace {
            return Err(BillingConfigError::FinalizeMargin);
        }
        Ok(())
    }

    /// The earliest hour whose usage a run at `cutoff` can still report: slices that closed
    /// within the late window.
    pub fn window_start(&self, cutoff: Timestamp) -> Timestamp {
        day_start(cutoff - self.late_window - Duration::days(1))
    }
}

pub fn day_start(t: Timestamp) -> Timestamp {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

pub fn date_start(d: NaiveDate) -> Timestamp {
    d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// The end of the usage a run may report: slices ending by `until` (for a nightly run of date
/// D, midnight after D) that have also settled by `now` (whole seconds).
pub fn cutoff(until: Timestamp, now: Timestamp, cfg: &BillingConfig) -> Timestamp {
    let settled = now - cfg.settle;
    let settled = Timestamp::from_timestamp(settled.timestamp(), 0).expect("in range");
    until.min(settled)
}

/// The buckets of one UTC day inside one billing period: the unit a meter event reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// Start (inclusive): a midnight or a period boundary.
    pub from: Timestamp,
    /// End (exclusive): a midnight or a period boundary.
    pub to: Timestamp,
    /// The billing period the slice lies in, as far as known (`None`: not known to tollgate,
    /// e.g. the start of the period before the stored one).
    pub period_start: Option<Timestamp>,
    pub period_end: Option<Timestamp>,
}

impl Slice {
    /// The meter event timestamp for this slice: its last second. It lies inside the period,
    /// because `period_start <= from < to <= period_end`.
    pub fn event_timestamp(&self) -> Timestamp {
        let t = self.to - Duration::seconds(1);
        match self.period_start {
            Some(s) if t < s => s,
            _ => t,
        }
    }

    /// Until when reports for this slice still reach Stripe in the right period.
    pub fn report_deadline(&self, cfg: &BillingConfig) -> Timestamp {
        let late = self.to + cfg.late_window;
        match self.period_end {
            Some(end) => late.min(end + cfg.finalize_grace - cfg.finalize_margin),
            None => late,
        }
    }
}

/// Splits `[from, to)` into slices: cut at every UTC midnight and at each period boundary.
/// `boundaries` are the known period starts/ends (any order).
pub fn slices(boundaries: &[Timestamp], from: Timestamp, to: Timestamp) -> Vec<Slice> {
    let mut bounds: Vec<Timestamp> = boundaries.to_vec();
    bounds.sort();
    bounds.dedup();
    let mut cuts: Vec<Timestamp> = bounds
        .iter()
        .copied()
        .filter(|c| *c > from && *c < to)
        .collect();
    let mut day = day_start(from) + Duration::days(1);
    while day < to {
        cuts.push(day);
        day += Duration::days(1);
    }
    cuts.push(to);
    cuts.sort();
    cuts.dedup();

    let mut out = Vec::with_capacity(cuts.len());
    let mut start = from;
    for cut in cuts {
        if cut <= start {
            continue;
        }
        // The period containing the slice: the last boundary at or before its start, and the
        // first one at or after its end.
        let period_start = bounds.iter().rev().find(|b| **b <= start).copied();
        let period_end = bounds.iter().find(|b| **b >= cut).copied();
        out.push(Slice {
            from: start,
            to: cut,
            period_start,
            period_end,
        });
        start = cut;
    }
    out
}

/// The deterministic meter event identifier of ledger entry `seq` of a slice. The same claim
/// always sends the same identifier, so Stripe drops a resend within its dedupe window. A
/// hash keeps it short whatever the id lengths (Stripe also uses it as our Idempotency-Key).
pub fn meter_event_identifier(
    subscription: &SubscriptionId,
    meter: &MeterId,
    slice_from: Timestamp,
    seq: u32,
) -> String {
    let mut h = Sha256::new();
    h.update(subscription.as_str().as_bytes());
    h.update(b"\0");
    h.update(meter.as_str().as_bytes());
    h.update(b"\0");
    h.update(slice_from.timestamp().to_be_bytes());
    h.update(seq.to_be_bytes());
    format!("tg_{}", &hex::encode(h.finalize())[..40])
}

/// What the run does about one slice (or one ledger entry of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceAction {
    /// Claim this new entry (create, `Expect::Absent`), send it, then mark it reported.
    Report(LedgerEntry),
    /// An entry claimed by an earlier invocation that never recorded Stripe's answer: send it
    /// again unchanged (same identifier, value and timestamp) and mark it reported.
    Resend(LedgerEntry),
    /// An entry claimed moments ago: another invocation is sending it. Leave it.
    InFlight(LedgerEntry),
    /// An entry claimed longer ago than Stripe dedupes identifiers: re-sending could count it
    /// twice, not sending could lose it. Left for the operator.
    Unconfirmed(LedgerEntry),
    /// Usage past the slice's report deadline: not sent.
    LateUnbilled { slice: Slice, quantity: u64 },
    /// The ledger does not fit the slices (a period boundary moved after a report): the meter
    /// is left alone rather than risk reporting the same hours twice.
    Inconsistent { slice: Slice, reason: String },
}

/// Everything [`plan_meter`] needs about one subscription's meter.
#[derive(Debug, Clone)]
pub struct MeterPlanInput<'a> {
    pub subscription_id: &'a SubscriptionId,
    pub meter: &'a MeterId,
    /// Known period boundaries (the stored period's start and end).
    pub boundaries: &'a [Timestamp],
    /// Buckets with `window_start <= hour < cutoff`.
    pub buckets: &'a [UsageBucket],
    /// Ledger entries with `from >= window_start`.
    pub ledger: &'a [LedgerEntry],
    pub window_start: Timestamp,
    pub cutoff: Timestamp,
    pub now: Timestamp,
}

/// Plans one (subscription, meter): for every closed slice of the window, what is left to send.
pub fn plan_meter(input: &MeterPlanInput<'_>, cfg: &BillingConfig) -> Vec<SliceAction> {
    let mut actions = Vec::new();
    if input.cutoff <= input.window_start {
        return actions;
    }
    // Slices end at midnights and period boundaries only; one still open at the cutoff (today,
    // or an hour not settled yet) waits for a later run rather than be reported in parts.
    let horizon = day_start(input.cutoff) + Duration::days(1);
    for slice in slices(input.boundaries, input.window_start, horizon)
        .into_iter()
        .filter(|s| s.to <= input.cutoff)
    {
        let total: u64 = input
            .buckets
            .iter()
            .filter(|b| b.key.hour >= slice.from && b.key.hour < slice.to)
            .map(|b| b.quantity)
            .sum();
        let entries: Vec<&LedgerEntry> = input
            .ledger
            .iter()
            .filter(|e| e.from < slice.to && e.to > slice.from)
            .collect();
        if let Some(bad) = entries
            .iter()
            .find(|e| e.from != slice.from || e.to != slice.to)
        {
            // Reporting any slice of this meter now could count hours twice: stop the meter.
            return vec![SliceAction::Inconsistent {
                slice: slice.clone(),
                reason: format!(
                    "ledger entry {} covers {}..{}, the slice is {}..{}",
                    bad.identifier, bad.from, bad.to, slice.from, slice.to
                ),
            }];
        }
        let claimed = crate::usage::total_quantity(entries.iter().map(|e| e.quantity));
        let mut blocked = false;
        for e in entries.iter().filter(|e| e.reported_at.is_none()) {
            let age = input.now - e.created_at;
            if age < cfg.in_flight_grace {
                actions.push(SliceAction::InFlight((*e).clone()));
                blocked = true;
            } else if age < cfg.dedupe_window {
                actions.push(SliceAction::Resend((*e).clone()));
            } else {
                actions.push(SliceAction::Unconfirmed((*e).clone()));
            }
        }
        if blocked || total <= claimed {
            // `total < claimed` cannot happen (buckets only grow); nothing to send either way.
            continue;
        }
        let delta = total - claimed;
        if input.now >= slice.report_deadline(cfg) {
            actions.push(SliceAction::LateUnbilled {
                slice: slice.clone(),
                quantity: delta,
            });
            continue;
        }
        let seq = entries.iter().map(|e| e.seq + 1).max().unwrap_or(0);
        actions.push(SliceAction::Report(LedgerEntry {
            subscription_id: input.subscription_id.clone(),
            meter: input.meter.clone(),
            period_start: slice.period_start,
            period_end: slice.period_end,
            from: slice.from,
            to: slice.to,
            seq,
            quantity: delta,
            identifier: meter_event_identifier(input.subscription_id, input.meter, slice.from, seq),
            event_timestamp: slice.event_timestamp(),
            created_at: input.now,
            reported_at: None,
            version: 0,
        }));
    }
    actions
}

/// How a run was asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// The nightly sweep of one UTC date (and the late window before it).
    Nightly,
    /// The frequent pass (every 15 minutes): finish an interrupted nightly run, and flush the
    /// periods that just ended while Stripe waits before finalising their invoices.
    PeriodClose,
}

/// Whether a subscription has a period boundary (a period end, a re-anchor, the moment it
/// ended) that a period-close flush should act on now: one that passed less than the finalize
/// grace (plus an hour of slack) ago.
pub fn period_just_ended(boundaries: &[Timestamp], now: Timestamp, cfg: &BillingConfig) -> bool {
    boundaries
        .iter()
        .any(|b| *b <= now && now - *b < cfg.finalize_grace + Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::UsageBucketKey;
    use chrono::TimeZone;

    fn t(d: u32, h: u32, m: u32) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }
    fn sub() -> SubscriptionId {
        SubscriptionId::parse("sub_a").unwrap()
    }
    fn meter() -> MeterId {
        MeterId::parse("api_calls").unwrap()
    }
    fn bucket(hour: Timestamp, q: u64) -> UsageBucket {
        UsageBucket {
            key: UsageBucketKey {
                subscription_id: sub(),
                meter: meter(),
                hour,
            },
            quantity: q,
        }
    }
    fn plan(
        boundaries: &[Timestamp],
        buckets: &[UsageBucket],
        ledger: &[LedgerEntry],
        window_start: Timestamp,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Vec<SliceAction> {
        let (s, m) = (sub(), meter());
        plan_meter(
            &MeterPlanInput {
                subscription_id: &s,
                meter: &m,
                boundaries,
                buckets,
                ledger,
                window_start,
                cutoff,
                now,
            },
            &BillingConfig::default(),
        )
    }
    fn reports(actions: &[SliceAction]) -> Vec<LedgerEntry> {
        actions
            .iter()
            .filter_map(|a| match a {
                SliceAction::Report(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }
    fn sent(mut e: LedgerEntry, at: Timestamp) -> LedgerEntry {
        e.reported_at = Some(at);
        e
    }

    #[test]
    fn default_config_is_valid_and_bounds_are_checked() {
        assert_eq!(BillingConfig::default().validate(), Ok(()));
        let c = BillingConfig {
            late_window: Duration::days(40),
            ..BillingConfig::default()
        };
        assert_eq!(c.validate(), Err(BillingConfigError::LateWindow));
        let c = BillingConfig {
            dedupe_window: Duration::hours(24),
            ..BillingConfig::default()
        };
        assert_eq!(c.validate(), Err(BillingConfigError::DedupeWindow));
    }

    #[test]
    fn slices_cut_at_midnight_and_at_the_exact_period_boundary() {
        // Period boundary at 13:37 on the 15th: the slice ends there, to the second.
        let s = slices(&[t(15, 13, 37), t(1, 13, 37)], t(14, 0, 0), t(17, 0, 0));
        let spans: Vec<(Timestamp, Timestamp)> = s.iter().map(|x| (x.from, x.to)).collect();
        assert_eq!(
            spans,
            vec![
                (t(14, 0, 0), t(15, 0, 0)),
                (t(15, 0, 0), t(15, 13, 37)),
                (t(15, 13, 37), t(16, 0, 0)),
                (t(16, 0, 0), t(17, 0, 0)),
            ]
        );
        assert_eq!(s[1].period_start, Some(t(1, 13, 37)));
        assert_eq!(s[1].period_end, Some(t(15, 13, 37)));
        assert_eq!(s[2].period_start, Some(t(15, 13, 37)));
        assert_eq!(s[2].period_end, None);
        // Every event timestamp lies inside its period, also for the slice whose first hour
        // starts before the period does.
        for x in &s {
            let ts = x.event_timestamp();
            assert!(ts >= x.from && ts < x.to, "{x:?}");
            if let Some(ps) = x.period_start {
                assert!(ts >= ps, "{x:?}");
            }
            if let Some(pe) = x.period_end {
                assert!(ts < pe, "{x:?}");
            }
        }
        assert_eq!(
            s[1].event_timestamp(),
            t(15, 13, 36) + Duration::seconds(59)
        );
    }

    #[test]
    fn a_closed_day_is_reported_once_with_a_deterministic_identifier() {
        let buckets = [
            bucket(t(20, 3, 0), 10),
            bucket(t(20, 23, 0), 5),
            bucket(t(21, 0, 0), 7),
        ];
        let now = t(21, 0, 5);
        let cut = cutoff(t(21, 0, 0), now, &BillingConfig::default());
        assert_eq!(cut, t(21, 0, 0));
        let a = plan(
            &[t(1, 0, 0), t(30, 0, 0)],
            &buckets,
            &[],
            t(18, 0, 0),
            cut,
            now,
        );
        let r = reports(&a);
        assert_eq!(r.len(), 1, "{a:?}");
        assert_eq!(
            (r[0].quantity, r[0].from, r[0].to, r[0].seq),
            (15, t(20, 0, 0), t(21, 0, 0), 0)
        );
        assert_eq!(
            r[0].identifier,
            meter_event_identifier(&sub(), &meter(), t(20, 0, 0), 0)
        );
        assert_eq!(r[0].event_timestamp, t(20, 23, 59) + Duration::seconds(59));

        // The same run again (second invocation of the night): nothing left.
        let ledger = [sent(r[0].clone(), now)];
        let again = plan(
            &[t(1, 0, 0), t(30, 0, 0)],
            &buckets,
            &ledger,
            t(18, 0, 0),
            cut,
            now,
        );
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn an_unsettled_hour_is_not_closed() {
        // 00:03: the day ended, but records may still be in flight.
        let cut = cutoff(t(21, 0, 0), t(21, 0, 3), &BillingConfig::default());
        assert_eq!(cut, t(20, 23, 58));
        let a = plan(
            &[],
            &[bucket(t(20, 5, 0), 1)],
            &[],
            t(18, 0, 0),
            cut,
            t(21, 0, 3),
        );
        assert!(reports(&a).is_empty());
    }

    #[test]
    fn late_records_are_reported_as_a_further_entry_of_their_slice() {
        let b = [t(1, 0, 0)];
        let first = reports(&plan(
            &b,
            &[bucket(t(20, 4, 0), 10)],
            &[],
            t(18, 0, 0),
            t(21, 0, 0),
            t(21, 0, 5),
        ));
        let ledger = [sent(first[0].clone(), t(21, 0, 6))];
        // A record for 04:00 on the 20th arrives on the 21st; the next night reports the rest.
        let buckets = [bucket(t(20, 4, 0), 13), bucket(t(21, 9, 0), 2)];
        let a = plan(&b, &buckets, &ledger, t(19, 0, 0), t(22, 0, 0), t(22, 0, 5));
        let r = reports(&a);
        assert_eq!(r.len(), 2, "{a:?}");
        assert_eq!((r[0].from, r[0].seq, r[0].quantity), (t(20, 0, 0), 1, 3));
        assert_ne!(r[0].identifier, first[0].identifier);
        assert_eq!((r[1].from, r[1].seq, r[1].quantity), (t(21, 0, 0), 0, 2));
    }

    #[test]
    fn late_usage_after_the_invoice_is_final_is_not_sent() {
        // Period ends 15th 13:37; Stripe finalises at 14:37; our deadline is 14:27.
        let b = [t(15, 13, 37)];
        let buckets = [bucket(t(15, 10, 0), 4)];
        let at_14 = plan(&b, &buckets, &[], t(13, 0, 0), t(15, 14, 0), t(15, 14, 5));
        let r = reports(&at_14);
        assert_eq!(r.len(), 1, "{at_14:?}");
        assert_eq!((r[0].from, r[0].to), (t(15, 0, 0), t(15, 13, 37)));
        assert_eq!(r[0].event_timestamp, t(15, 13, 36) + Duration::seconds(59));

        let too_late = plan(&b, &buckets, &[], t(13, 0, 0), t(15, 15, 0), t(15, 14, 30));
        assert_eq!(
            too_late,
            vec![SliceAction::LateUnbilled {
                slice: Slice {
                    from: t(15, 0, 0),
                    to: t(15, 13, 37),
                    period_start: None,
                    period_end: Some(t(15, 13, 37)),
                },
                quantity: 4
            }]
        );
    }

    #[test]
    fn an_unconfirmed_claim_is_resent_unchanged_within_the_dedupe_window_only() {
        let b = [t(1, 0, 0)];
        let buckets = [bucket(t(20, 4, 0), 10)];
        let claim = reports(&plan(
            &b,
            &buckets,
            &[],
            t(18, 0, 0),
            t(21, 0, 0),
            t(21, 0, 5),
        ))
        .remove(0);
        // Crashed after sending, before marking. A run two minutes later leaves it to the
        // invocation that may still be sending it.
        let a = plan(
            &b,
            &buckets,
            std::slice::from_ref(&claim),
            t(18, 0, 0),
            t(21, 0, 0),
            t(21, 0, 7),
        );
        assert_eq!(a, vec![SliceAction::InFlight(claim.clone())]);
        // An hour later (more usage arrived meanwhile): resend the claim as it was, and report
        // only the difference as a new entry.
        let more = [bucket(t(20, 4, 0), 12)];
        let a = plan(
            &b,
            &more,
            std::slice::from_ref(&claim),
            t(18, 0, 0),
            t(21, 0, 0),
            t(21, 1, 5),
        );
        assert_eq!(a[0], SliceAction::Resend(claim.clone()));
        let r = reports(&a);
        assert_eq!((r[0].seq, r[0].quantity), (1, 2));
        // A day later Stripe may have forgotten the identifier: do not resend.
        let a = plan(
            &b,
            &buckets,
            std::slice::from_ref(&claim),
            t(18, 0, 0),
            t(22, 0, 0),
            t(22, 0, 5),
        );
        assert_eq!(a, vec![SliceAction::Unconfirmed(claim)]);
    }

    #[test]
    fn a_ledger_that_does_not_fit_the_slices_stops_the_meter_slice() {
        let b = [t(1, 0, 0)];
        let buckets = [bucket(t(20, 4, 0), 10), bucket(t(20, 15, 0), 1)];
        let whole_day = reports(&plan(
            &b,
            &buckets,
            &[],
            t(18, 0, 0),
            t(21, 0, 0),
            t(21, 0, 5),
        ));
        // Later a boundary appears at 12:10 on the 20th (e.g. a plan change re-anchored).
        let a = plan(
            &[t(1, 0, 0), t(20, 12, 10)],
            &buckets,
            &[sent(whole_day[0].clone(), t(21, 0, 6))],
            t(18, 0, 0),
            t(21, 0, 0),
            t(21, 1, 0),
        );
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(matches!(a[0], SliceAction::Inconsistent { .. }));
    }

    #[test]
    fn identifiers_differ_per_slice_and_seq_and_are_short() {
        let a = meter_event_identifier(&sub(), &meter(), t(20, 0, 0), 0);
        assert_eq!(a, meter_event_identifier(&sub(), &meter(), t(20, 0, 0), 0));
        assert_ne!(a, meter_event_identifier(&sub(), &meter(), t(20, 0, 0), 1));
        assert_ne!(a, meter_event_identifier(&sub(), &meter(), t(21, 0, 0), 0));
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn period_close_detection() {
        let c = BillingConfig::default();
        assert!(period_just_ended(&[t(15, 13, 37)], t(15, 14, 5), &c));
        assert!(!period_just_ended(
            &[t(15, 13, 37), t(16, 0, 0)],
            t(15, 17, 0),
            &c
        ));
        assert!(period_just_ended(
            &[t(1, 0, 0), t(15, 13, 37)],
            t(15, 13, 40),
            &c
        ));
    }
}
