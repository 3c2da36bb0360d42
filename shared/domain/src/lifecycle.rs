//! The subscription lifecycle: ONE table of (state × billing fact) → (state, effects).
//!
//! ```text
//!            Paid                 PaymentFailed            Unpaid
//!  pending ───────▶ active ◀──────────────────▶ past_due ─────────▶ suspended
//!                     │  ▲          Paid                                │
//!                     │  └──────────────────────────────────────────────┘ Paid (reactivated)
//!                     └── Ended (from any live state) ──▶ canceled (final)
//! ```
//!
//! # Why the final state does not depend on the order of webhooks
//!
//! Stripe delivers events late, twice, and in any order, and an event's `created` has only
//! one-second resolution (a `customer.subscription.updated` and its `invoice.payment_failed`
//! usually share the same second), so ordering by the events themselves is ambiguous. tollgate
//! follows Stripe's own advice instead: an event is only a *nudge*. The webhook re-reads the
//! Stripe subscription through the payments port and feeds its *current* status (a
//! [`BillingFact`]) to this table. Two properties of the table then make the final state
//! deterministic, and the tests below check both for every state:
//!
//! 1. **Convergence**: from any non-final state, a fact leads to the same state
//!    ([`BillingFact::target`]), whatever the state was. So the state after a delivery depends
//!    only on what Stripe says at that moment, not on which deliveries came before.
//! 2. **Idempotence**: applying the fact a state already reflects changes nothing and has no
//!    effect, so duplicates and late events publish nothing twice.
//!
//! The last delivery always happens after Stripe's last change (each change emits an event),
//! so its re-read sees Stripe's final status, and by (1) the subscription ends there. The
//! webhook guards the read-modify-write with the subscription's optimistic version and reads
//! DynamoDB *before* Stripe on every attempt, so a commit that lost a race is retried with a
//! fresher Stripe read and an older read can never overwrite a newer one.
//!
//! Effects are what the transition means to the outside world (domain events, key
//! announcements); they are emitted only on a real state change.

use crate::events::{DomainEvent, SubscriptionEvent};
use crate::ports::StripeSubscriptionStatus;
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

use SubscriptionStatus::{Active, Canceled, Expired, PastDue, Pending, Suspended};

/// What is true about a subscription's billing right now: the "event" column of the table.
///
/// Derived from the Stripe subscription's current status ([`BillingFact::from_stripe_status`]),
/// from a paid one-time Checkout Session, from tollgate itself (free products), or from the
/// billing run (end of one-time access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingFact {
    /// Checkout has not been paid yet (Stripe `incomplete`).
    Incomplete,
    /// Paid, trialing, or free (Stripe `active`, `trialing`).
    Paid,
    /// The latest invoice failed and Stripe is retrying (Stripe `past_due`).
    PaymentFailed,
    /// Retries are exhausted or collection is paused (Stripe `unpaid`, `paused`).
    Unpaid,
    /// The subscription ended (Stripe `canceled`, `incomplete_expired`; a free product cancelled).
    Ended,
    /// One-time access reached its end date (the billing run says so).
    AccessExpired,
}

impl BillingFact {
    pub const ALL: [BillingFact; 6] = [
        BillingFact::Incomplete,
        BillingFact::Paid,
        BillingFact::PaymentFailed,
        BillingFact::Unpaid,
        BillingFact::Ended,
        BillingFact::AccessExpired,
    ];

    /// Maps a Stripe subscription `status` to a fact. `None` for a status this build does not
    /// know (a newer API version): the caller logs it and leaves the subscription alone rather
    /// than guessing.
    ///
    /// `unpaid`: Stripe's retries are exhausted and the subscription is kept open but unpaid;
    /// `paused`: a trial ended without a payment method. Neither is paid.
    pub fn from_stripe_status(status: &str) -> Option<BillingFact> {
        Self::of_stripe(&StripeSubscriptionStatus::parse(status))
    }

    /// The fact a re-read Stripe subscription status states (the payments port's view of it).
    pub fn of_stripe(status: &StripeSubscriptionStatus) -> Option<BillingFact> {
        use StripeSubscriptionStatus as S;
        Some(match status {
            S::Incomplete => BillingFact::Incomplete,
            S::Active | S::Trialing => BillingFact::Paid,
            S::PastDue => BillingFact::PaymentFailed,
            S::Unpaid | S::Paused => BillingFact::Unpaid,
            S::Canceled | S::IncompleteExpired => BillingFact::Ended,
            S::Other(_) => return None,
        })
    }

    /// The state this fact leads to from any non-final state other than those listed as
    /// "stays" in the table (see [`TABLE`]). Used by the convergence test.
    pub fn target(self) -> SubscriptionStatus {
        match self {
            BillingFact::Incomplete => Pending,
            BillingFact::Paid => Active,
            BillingFact::PaymentFailed => PastDue,
            BillingFact::Unpaid => Suspended,
            BillingFact::Ended => Canceled,
            BillingFact::AccessExpired => Expired,
        }
    }
}

/// What a transition means outside the subscription item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// API access starts: publish `SubscriptionActivated` and announce the subscription's live
    /// key (`ApiKeyIssued`, without the key).
    Activated,
    /// API access stops until an invoice is paid: publish `SubscriptionSuspended`.
    Suspended,
    /// API access is back after a suspension: publish `SubscriptionReactivated`.
    Reactivated,
    /// The subscription ended: publish `SubscriptionCanceled`.
    Canceled,
    /// One-time access ended: publish `SubscriptionExpired`.
    Expired,
}

impl Effect {
    /// The domain event this effect publishes for `sub` (in its new state).
    pub fn event(self, sub: &Subscription, at: Timestamp) -> DomainEvent {
        let e = SubscriptionEvent {
            subscription_id: sub.id.clone(),
            consumer_id: sub.consumer_id.clone(),
            product_id: sub.product_id.clone(),
            status: sub.status,
            at,
        };
        match self {
            Effect::Activated => DomainEvent::SubscriptionActivated(e),
            Effect::Suspended => DomainEvent::SubscriptionSuspended(e),
            Effect::Reactivated => DomainEvent::SubscriptionReactivated(e),
            Effect::Canceled => DomainEvent::SubscriptionCanceled(e),
            Effect::Expired => DomainEvent::SubscriptionExpired(e),
        }
    }
}

/// One row of the lifecycle table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: SubscriptionStatus,
    pub fact: BillingFact,
    pub to: SubscriptionStatus,
    pub effects: &'static [Effect],
}

const fn row(
    from: SubscriptionStatus,
    fact: BillingFact,
    to: SubscriptionStatus,
    effects: &'static [Effect],
) -> Transition {
    Transition {
        from,
        fact,
        to,
        effects,
    }
}

use BillingFact as F;
use Effect as E;

/// THE lifecycle: every (state, fact) pair exactly once (a test checks it).
///
/// Design choices the table encodes:
/// - `past_due` keeps access (Stripe is still retrying; cutting a paying customer off on the
///   first declined card is harsher than Stripe's own dunning), so entering or leaving it
///   publishes nothing; `suspended` is where access stops.
/// - Access that comes back after `suspended` is a *reactivation*, never a second activation,
///   so a gateway adapter sees one `SubscriptionActivated` per subscription.
/// - `pending → suspended` (the first thing tollgate hears is that the subscription is already
///   unpaid, which in Stripe only follows a paid start) announces both the activation it
///   missed and the suspension, so every subscriber sees one activation before any
///   suspension or reactivation.
/// - `canceled` and `expired` are final: a late `invoice.paid` for a cancelled subscription
///   does not bring it back (Stripe never reopens a cancelled subscription either).
/// - A regression to `incomplete` after activation cannot happen in Stripe; if a re-read ever
///   says so, the state is kept rather than taking access away on a status that cannot be.
pub const TABLE: &[Transition] = &[
    // pending: checkout started, nothing paid yet
    row(Pending, F::Incomplete, Pending, &[]),
    row(Pending, F::Paid, Active, &[E::Activated]),
    row(Pending, F::PaymentFailed, PastDue, &[E::Activated]),
    row(Pending, F::Unpaid, Suspended, &[E::Activated, E::Suspended]),
    row(Pending, F::Ended, Canceled, &[E::Canceled]),
    row(Pending, F::AccessExpired, Expired, &[E::Expired]),
    // active
    row(Active, F::Incomplete, Active, &[]),
    row(Active, F::Paid, Active, &[]),
    row(Active, F::PaymentFailed, PastDue, &[]),
    row(Active, F::Unpaid, Suspended, &[E::Suspended]),
    row(Active, F::Ended, Canceled, &[E::Canceled]),
    row(Active, F::AccessExpired, Expired, &[E::Expired]),
    // past_due: a payment failed, Stripe retries, access continues
    row(PastDue, F::Incomplete, PastDue, &[]),
    row(PastDue, F::Paid, Active, &[]),
    row(PastDue, F::PaymentFailed, PastDue, &[]),
    row(PastDue, F::Unpaid, Suspended, &[E::Suspended]),
    row(PastDue, F::Ended, Canceled, &[E::Canceled]),
    row(PastDue, F::AccessExpired, Expired, &[E::Expired]),
    // suspended: no access until an invoice is paid
    row(Suspended, F::Incomplete, Suspended, &[]),
    row(Suspended, F::Paid, Active, &[E::Reactivated]),
    row(Suspended, F::PaymentFailed, PastDue, &[E::Reactivated]),
    row(Suspended, F::Unpaid, Suspended, &[]),
    row(Suspended, F::Ended, Canceled, &[E::Canceled]),
    row(Suspended, F::AccessExpired, Expired, &[E::Expired]),
    // canceled: final
    row(Canceled, F::Incomplete, Canceled, &[]),
    row(Canceled, F::Paid, Canceled, &[]),
    row(Canceled, F::PaymentFailed, Canceled, &[]),
    row(Canceled, F::Unpaid, Canceled, &[]),
    row(Canceled, F::Ended, Canceled, &[]),
    row(Canceled, F::AccessExpired, Canceled, &[]),
    // expired: final
    row(Expired, F::Incomplete, Expired, &[]),
    row(Expired, F::Paid, Expired, &[]),
    row(Expired, F::PaymentFailed, Expired, &[]),
    row(Expired, F::Unpaid, Expired, &[]),
    row(Expired, F::Ended, Expired, &[]),
    row(Expired, F::AccessExpired, Expired, &[]),
];

/// Looks up the row for `(from, fact)`.
pub fn transition(from: SubscriptionStatus, fact: BillingFact) -> Transition {
    *TABLE
        .iter()
        .find(|t| t.from == from && t.fact == fact)
        .expect("the lifecycle table covers every (state, fact) pair")
}

/// Applies `fact` to `sub` at `at`: sets the new status (and `updated_at` when it changes) and
/// returns the effects to carry out once the change is committed.
pub fn apply(sub: &mut Subscription, fact: BillingFact, at: Timestamp) -> &'static [Effect] {
    let t = transition(sub.status, fact);
    if t.to != sub.status {
        let had_access = sub.status.grants_access();
        sub.status = t.to;
        sub.updated_at = at;
        // Usage is judged at its own time (`usage::admit`): remember when access stopped.
        if t.to.grants_access() {
            sub.periods.access_lost_at = None;
        } else if had_access {
            sub.periods.access_lost_at = Some(at);
        }
        if t.to.is_final() && sub.periods.ended_at.is_none() {
            let end = match t.to {
                SubscriptionStatus::Expired => sub.access_expires_at.map_or(at, |e| e.min(at)),
                _ => at,
            };
            sub.periods.ended_at = Some(end);
        }
    }
    t.effects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConsumerId, ProductId, SubscriptionId};
    use chrono::TimeZone;

    const STATES: [SubscriptionStatus; 6] =
        [Pending, Active, PastDue, Suspended, Canceled, Expired];

    fn t0() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    }

    fn sub(status: SubscriptionStatus) -> Subscription {
        Subscription {
            id: SubscriptionId::parse("sub_tg_1").unwrap(),
            consumer_id: ConsumerId::parse("acme").unwrap(),
            product_id: ProductId::parse("standard").unwrap(),
            name: "prod-backend".into(),
            status,
            seats: None,
            stripe_customer_id: None,
            stripe_subscription_id: None,
            stripe_checkout_session_id: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            access_expires_at: None,
            last_stripe_event_at: None,
            periods: Default::default(),
            created_at: t0(),
            updated_at: t0(),
            version: 1,
        }
    }

    #[test]
    fn table_has_every_pair_exactly_once() {
        assert_eq!(TABLE.len(), STATES.len() * BillingFact::ALL.len());
        for s in STATES {
            for f in BillingFact::ALL {
                let n = TABLE.iter().filter(|t| t.from == s && t.fact == f).count();
                assert_eq!(n, 1, "({s:?}, {f:?}) appears {n} times");
            }
        }
    }

    #[test]
    fn the_happy_path_and_dunning() {
        let mut s = sub(Pending);
        assert_eq!(apply(&mut s, F::Incomplete, t0()), &[] as &[Effect]);
        assert_eq!(s.status, Pending);
        assert_eq!(apply(&mut s, F::Paid, t0()), &[E::Activated]);
        assert_eq!(s.status, Active);
        assert!(s.status.grants_access());
        assert_eq!(apply(&mut s, F::PaymentFailed, t0()), &[] as &[Effect]);
        assert_eq!(s.status, PastDue);
        assert!(s.status.grants_access(), "past_due is a grace period");
        assert_eq!(apply(&mut s, F::Unpaid, t0()), &[E::Suspended]);
        assert_eq!(s.status, Suspended);
        assert!(!s.status.grants_access());
        assert_eq!(apply(&mut s, F::Paid, t0()), &[E::Reactivated]);
        assert_eq!(s.status, Active);
        assert_eq!(apply(&mut s, F::Ended, t0()), &[E::Canceled]);
        assert_eq!(s.status, Canceled);
        assert_eq!(apply(&mut s, F::Paid, t0()), &[] as &[Effect]);
        assert_eq!(s.status, Canceled, "a late invoice.paid does not reopen it");
    }

    #[test]
    fn updated_at_moves_only_on_a_change() {
        let later = t0() + chrono::Duration::hours(1);
        let mut s = sub(Active);
        apply(&mut s, F::Paid, later);
        assert_eq!(s.updated_at, t0());
        apply(&mut s, F::Unpaid, later);
        assert_eq!(s.updated_at, later);
    }

    /// Property 1 of the module docs: the state after a fact does not depend on the state
    /// before it (for live states), except where the table deliberately keeps the state.
    #[test]
    fn every_live_state_converges_to_the_facts_target() {
        for f in BillingFact::ALL {
            for s in [Pending, Active, PastDue, Suspended] {
                let to = transition(s, f).to;
                let kept_on_impossible_regression = f == F::Incomplete && s != Pending;
                if kept_on_impossible_regression {
                    assert_eq!(to, s);
                } else {
                    assert_eq!(to, f.target(), "({s:?}, {f:?})");
                }
            }
            for s in [Canceled, Expired] {
                assert_eq!(transition(s, f).to, s, "{s:?} is final");
            }
        }
    }

    /// Property 2: the fact a state already reflects is a no-op without effects.
    #[test]
    fn applying_a_fact_twice_changes_nothing_the_second_time() {
        for s in STATES {
            for f in BillingFact::ALL {
                let first = transition(s, f);
                let second = transition(first.to, f);
                assert_eq!(second.to, first.to, "({s:?}, {f:?})");
                assert!(second.effects.is_empty(), "({s:?}, {f:?}) twice");
            }
        }
    }

    /// Effects match the access change they announce.
    #[test]
    fn effects_match_access_changes() {
        for t in TABLE {
            let gained = !t.from.grants_access() && t.to.grants_access();
            let lost = t.from.grants_access() && !t.to.grants_access();
            let has = |e: Effect| t.effects.contains(&e);
            if gained {
                assert!(has(E::Activated) ^ has(E::Reactivated), "{t:?}");
            }
            if has(E::Activated) {
                assert_eq!(t.from, Pending, "{t:?}");
            }
            if has(E::Reactivated) {
                assert!(t.from == Suspended && gained, "{t:?}");
            }
            if t.to == Suspended && t.from != Suspended {
                assert!(has(E::Suspended), "{t:?}");
            }
            if lost {
                assert!(
                    has(E::Suspended) || has(E::Canceled) || has(E::Expired),
                    "{t:?}"
                );
            }
            if t.from == t.to {
                assert!(t.effects.is_empty(), "{t:?}");
            }
        }
    }

    #[test]
    fn stripe_statuses_map_to_facts() {
        let cases = [
            ("incomplete", Some(F::Incomplete)),
            ("trialing", Some(F::Paid)),
            ("active", Some(F::Paid)),
            ("past_due", Some(F::PaymentFailed)),
            ("unpaid", Some(F::Unpaid)),
            ("paused", Some(F::Unpaid)),
            ("canceled", Some(F::Ended)),
            ("incomplete_expired", Some(F::Ended)),
            ("some_future_status", None),
        ];
        for (status, fact) in cases {
            assert_eq!(BillingFact::from_stripe_status(status), fact, "{status}");
            // The payments port's own status mapping agrees with the table's targets.
            assert_eq!(
                StripeSubscriptionStatus::parse(status).to_domain(),
                fact.map(BillingFact::target),
                "{status}"
            );
        }
    }

    /// The lifecycle of one subscription as Stripe lives it: each step changes Stripe's status
    /// and emits events. The webhook re-reads Stripe at each delivery, so a delivery applies
    /// whatever Stripe says *at that moment*.
    ///
    /// Deliveries happen in every order (each event twice, anywhere after it was emitted,
    /// interleaved with Stripe's later changes): the final state is always Stripe's final
    /// status, and each access change was announced exactly as often as the path needed.
    #[test]
    fn every_delivery_order_each_event_twice_ends_in_the_same_state() {
        // (event, Stripe's status right after it was emitted)
        let timeline = [
            ("customer.subscription.created", "incomplete"),
            ("checkout.session.completed", "active"),
            ("invoice.paid", "active"),
            ("invoice.payment_failed", "past_due"),
            ("customer.subscription.updated", "unpaid"),
            ("invoice.paid", "active"),
        ];
        let n = timeline.len();
        // All 12!/2^6 = 7,484,400 orders of the multiset {0,0,1,1,..} are too many for a unit
        // test; every permutation p of the events is delivered twice over in two shapes:
        // p then p again, and each event duplicated in place (p0, p0, p1, p1, ..).
        let mut perms = Vec::new();
        permutations(&mut (0..n).collect::<Vec<_>>(), 0, &mut perms);
        assert_eq!(perms.len(), 720);

        let mut orders = 0;
        for p in &perms {
            let back_to_back: Vec<usize> = p.iter().chain(p.iter()).copied().collect();
            let in_place: Vec<usize> = p.iter().flat_map(|&i| [i, i]).collect();
            for deliveries in [back_to_back, in_place] {
                // Stripe moves on as soon as the event is emitted; a delivery of event i can
                // only happen once Stripe has reached step i. Deliver in the given order; the
                // Stripe "clock" is the furthest step any delivered event has reached so far,
                // and everything is delivered after the last step (Stripe emits it).
                let mut stripe_step = 0usize;
                let mut s = sub(Pending);
                let mut effects = Vec::new();
                for &i in &deliveries {
                    stripe_step = stripe_step.max(i);
                    let status = timeline[stripe_step].1;
                    let fact = BillingFact::from_stripe_status(status).unwrap();
                    effects.extend_from_slice(apply(&mut s, fact, t0()));
                }
                assert_eq!(s.status, Active, "order {deliveries:?}");
                // Access was granted once, by exactly one activation; every suspension
                // was followed by a reactivation.
                let count = |e: Effect| effects.iter().filter(|x| **x == e).count();
                assert_eq!(count(E::Activated), 1, "order {deliveries:?}: {effects:?}");
                assert_eq!(
                    count(E::Suspended),
                    count(E::Reactivated),
                    "order {deliveries:?}: {effects:?}"
                );
                orders += 1;
            }
        }
        assert_eq!(orders, 1440);
    }

    /// The same, for a subscription that ends cancelled: whatever the order, it ends
    /// cancelled, announced once.
    #[test]
    fn every_order_of_a_cancelled_lifecycle_ends_cancelled() {
        let facts = [
            F::Incomplete,
            F::Paid,
            F::PaymentFailed,
            F::Unpaid,
            F::Ended,
        ];
        let mut perms = Vec::new();
        permutations(&mut (0..facts.len()).collect::<Vec<_>>(), 0, &mut perms);
        for p in perms {
            let mut stripe_step = 0;
            let mut s = sub(Pending);
            let mut effects = Vec::new();
            for &i in p.iter().chain(p.iter()) {
                stripe_step = stripe_step.max(i);
                effects.extend_from_slice(apply(&mut s, facts[stripe_step], t0()));
            }
            assert_eq!(s.status, Canceled, "{p:?}");
            assert_eq!(effects.iter().filter(|e| **e == E::Canceled).count(), 1);
        }
    }

    fn permutations(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if k == items.len() {
            out.push(items.clone());
            return;
        }
        for i in k..items.len() {
            items.swap(k, i);
            permutations(items, k + 1, out);
            items.swap(k, i);
        }
    }

    #[test]
    fn effects_become_domain_events_in_the_new_state() {
        let mut s = sub(Pending);
        let effects = apply(&mut s, F::Paid, t0());
        let ev = effects[0].event(&s, t0());
        assert_eq!(ev.detail_type(), "SubscriptionActivated");
        match ev {
            DomainEvent::SubscriptionActivated(e) => {
                assert_eq!(e.status, Active);
                assert_eq!(e.subscription_id.as_str(), "sub_tg_1");
            }
            other => panic!("{other:?}"),
        }
    }
}
