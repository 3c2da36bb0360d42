//! Prepaid credit (seed 004): a consumer's balance, its draw-down by usage, top-ups, and the
//! CreditsLow / CreditsDepleted alerts.
//!
//! Rules:
//! - The balance is integer minor units. Usage is priced with the catalog's metered rate via
//!   [`pricing::metered_amount`] *cumulatively*: the cost of `n` more units after `u` already
//!   priced is `amount(u + n) - amount(u)`. Rounding therefore happens once over the account's
//!   life, not once per batch — a $0.0015 call priced alone would round to 0 (free usage) or
//!   to 1 cent (6.7× overcharge).
//! - A consumer is blocked (HTTP 402) while the balance is at or below zero.
//! - The balance never goes below the overdraft floor (≤ 0). Usage already happened when the
//!   gateway reports it, so it is counted anyway; what the balance down to the floor cannot
//!   cover is recorded as `uncovered` (the provider's loss, visible to the operator). The floor
//!   is the allowance for calls in flight between the balance reaching zero and the gateway
//!   blocking the key.
//! - CreditsLow fires when the balance falls below the low threshold, CreditsDepleted when it
//!   reaches zero; each once per crossing. A top-up that lifts the balance back above a line
//!   re-arms that line's alert. The flags live in the account item, which every change writes
//!   under optimistic concurrency (its `version`), so two concurrent batches cannot both
//!   announce the same crossing.
//! - A purchase (a paid credit-pack Checkout Session) adds to the balance once per session.

use crate::catalog::{PriceComponent, Product};
use crate::events::DomainEvent;
use crate::ids::{ConsumerId, SubscriptionId};
use crate::money::MinorUnits;
use crate::pricing::{self, PricingError};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Operator settings of prepaid credit (`CREDIT_LOW_THRESHOLD`, `CREDIT_OVERDRAFT_FLOOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditPolicy {
    /// Lowest balance allowed (≤ 0), minor units.
    pub floor: MinorUnits,
    /// CreditsLow fires when the balance falls below this, minor units.
    pub low_threshold: MinorUnits,
}

/// A consumer's prepaid credit account: one DynamoDB item, written whole under its `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditAccount {
    pub consumer_id: ConsumerId,
    /// Minor units available; ≤ 0 means blocked.
    pub balance: MinorUnits,
    /// Everything bought.
    #[serde(default)]
    pub purchased: MinorUnits,
    /// Everything usage drew down.
    #[serde(default)]
    pub drawn: MinorUnits,
    /// Usage priced but not covered because the balance was at the floor.
    #[serde(default)]
    pub uncovered: MinorUnits,
    /// Net of the operator's adjustments (grants minus deductions).
    #[serde(default)]
    pub adjusted: MinorUnits,
    /// Per Stripe charge of a credit purchase: how much of it Stripe has reversed so far
    /// (refunds, lost disputes), so each reversal is taken back once, in any order.
    #[serde(default)]
    pub reversed: BTreeMap<String, MinorUnits>,
    /// Units already priced, per `{subscription}:{price key}` (the cumulative `u` above).
    #[serde(default)]
    pub priced_units: BTreeMap<String, u64>,
    #[serde(default)]
    pub low_alerted: bool,
    #[serde(default)]
    pub depleted_alerted: bool,
    pub updated_at: Timestamp,
    /// Set by the store (see `ports::Expect`).
    #[serde(default)]
    pub version: u64,
}

/// Usage of one metered price component of one subscription in one batch.
#[derive(Debug, Clone, Copy)]
pub struct MeteredUsage<'a> {
    pub subscription_id: &'a SubscriptionId,
    pub component: &'a PriceComponent,
    pub units: u64,
}

/// What a draw-down did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawDown {
    /// Price of the usage.
    pub cost: MinorUnits,
    /// Taken from the balance (cost, limited by the floor).
    pub drawn: MinorUnits,
    /// cost − drawn.
    pub uncovered: MinorUnits,
    /// Alerts to publish once the account is committed.
    pub events: Vec<DomainEvent>,
}

/// What a top-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    pub was_blocked: bool,
    pub is_blocked: bool,
}

impl CreditAccount {
    /// An empty account (first purchase or first draw).
    pub fn open(consumer_id: ConsumerId, now: Timestamp) -> Self {
        Self {
            consumer_id,
            balance: 0,
            purchased: 0,
            drawn: 0,
            uncovered: 0,
            adjusted: 0,
            reversed: BTreeMap::new(),
            priced_units: BTreeMap::new(),
            low_alerted: false,
            depleted_alerted: false,
            updated_at: now,
            version: 0,
        }
    }

    /// Whether the consumer's prepaid usage is refused (HTTP 402).
    pub fn is_blocked(&self) -> bool {
        self.balance <= 0
    }

    fn priced_key(u: &MeteredUsage<'_>) -> String {
        format!("{}:{}", u.subscription_id, u.component.key())
    }

    /// The price of `usage` given what this account has priced before (cumulative rounding).
    pub fn cost_of(&self, usage: &[MeteredUsage<'_>]) -> Result<MinorUnits, PricingError> {
        let mut cost: MinorUnits = 0;
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for u in usage {
            let key = Self::priced_key(u);
            let before = *seen
                .get(&key)
                .or_else(|| self.priced_units.get(&key))
                .unwrap_or(&0);
            let after = before.checked_add(u.units).ok_or(PricingError::TooLarge)?;
            cost = cost
                .checked_add(
                    pricing::metered_amount(u.component, after)?
                        - pricing::metered_amount(u.component, before)?,
                )
                .ok_or(PricingError::TooLarge)?;
            seen.insert(key, after);
        }
        Ok(cost)
    }

    /// Draws the price of `usage` from the balance, never below `policy.floor`, and decides
    /// the alerts this crossing publishes.
    pub fn draw(
        &mut self,
        usage: &[MeteredUsage<'_>],
        policy: CreditPolicy,
        now: Timestamp,
    ) -> Result<DrawDown, PricingError> {
        let cost = self.cost_of(usage)?;
        for u in usage {
            let units = self.priced_units.entry(Self::priced_key(u)).or_insert(0);
            *units = units.saturating_add(u.units);
        }
        let available = (self.balance - policy.floor).max(0);
        let drawn = cost.min(available);
        let uncovered = cost - drawn;
        self.balance -= drawn;
        self.drawn += drawn;
        self.uncovered += uncovered;
        self.updated_at = now;
        let events = self.alerts(policy, now);
        Ok(DrawDown {
            cost,
            drawn,
            uncovered,
            events,
        })
    }

    /// Adds a purchase to the balance and re-arms the alerts it lifts the balance above.
    pub fn top_up(&mut self, amount: MinorUnits, policy: CreditPolicy, now: Timestamp) -> TopUp {
        let was_blocked = self.is_blocked();
        self.balance += amount;
        self.purchased += amount;
        self.updated_at = now;
        self.rearm(policy);
        TopUp {
            was_blocked,
            is_blocked: self.is_blocked(),
        }
    }

    /// An operator's correction (seed 004's "the provider gives a customer credit, then
    /// deducts it"): `amount > 0` grants credit, `amount < 0` takes it back, never below
    /// `policy.floor` (what the floor stops is not taken: [`Adjustment::applied`] says how
    /// much was). A grant re-arms the alerts it lifts the balance above; a deduction fires the
    /// ones it crosses, once, like usage does.
    pub fn adjust(
        &mut self,
        amount: MinorUnits,
        policy: CreditPolicy,
        now: Timestamp,
    ) -> Adjustment {
        let was_blocked = self.is_blocked();
        let applied = if amount >= 0 {
            amount
        } else {
            -(-amount).min((self.balance - policy.floor).max(0))
        };
        self.balance += applied;
        self.adjusted += applied;
        self.updated_at = now;
        let events = if applied >= 0 {
            self.rearm(policy);
            Vec::new()
        } else {
            self.alerts(policy, now)
        };
        Adjustment {
            applied,
            was_blocked,
            is_blocked: self.is_blocked(),
            events,
        }
    }

    /// Stripe has now reversed `reversed_total` (minor units, cumulative: a charge's
    /// `amount_refunded`, or a lost dispute's amount) of the credit purchase paid by `charge`.
    /// What is new since the last reversal recorded for that charge is taken back from the
    /// balance as far as it is unused: never below `policy.floor` (credit already spent on
    /// usage cannot be taken back). A reversal seen again, or an older one arriving late,
    /// takes nothing. Fires the alerts it crosses, like usage.
    pub fn reverse(
        &mut self,
        charge: &str,
        reversed_total: MinorUnits,
        policy: CreditPolicy,
        now: Timestamp,
    ) -> Adjustment {
        let was_blocked = self.is_blocked();
        let before = self.reversed.get(charge).copied().unwrap_or(0);
        let new = (reversed_total - before).max(0);
        self.reversed
            .insert(charge.to_string(), before.max(reversed_total));
        let applied = -new.min((self.balance - policy.floor).max(0));
        self.balance += applied;
        self.purchased += applied;
        self.updated_at = now;
        let events = self.alerts(policy, now);
        Adjustment {
            applied,
            was_blocked,
            is_blocked: self.is_blocked(),
            events,
        }
    }

    /// The alerts a fall of the balance crosses, each once until re-armed.
    fn alerts(&mut self, policy: CreditPolicy, now: Timestamp) -> Vec<DomainEvent> {
        let mut events = Vec::new();
        if self.balance < policy.low_threshold && !self.low_alerted {
            self.low_alerted = true;
            events.push(DomainEvent::CreditsLow {
                consumer_id: self.consumer_id.clone(),
                balance: self.balance,
                threshold: policy.low_threshold,
                at: now,
            });
        }
        if self.is_blocked() && !self.depleted_alerted {
            self.depleted_alerted = true;
            events.push(DomainEvent::CreditsDepleted {
                consumer_id: self.consumer_id.clone(),
                balance: self.balance,
                at: now,
            });
        }
        events
    }

    /// Re-arms the alerts whose line the balance is back above.
    fn rearm(&mut self, policy: CreditPolicy) {
        if self.balance >= policy.low_threshold {
            self.low_alerted = false;
        }
        if !self.is_blocked() {
            self.depleted_alerted = false;
        }
    }
}

/// What an operator's adjustment did ([`CreditAccount::adjust`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    /// Minor units added (negative: taken back); a deduction is limited by the floor.
    pub applied: MinorUnits,
    pub was_blocked: bool,
    pub is_blocked: bool,
    /// Alerts to publish once the account is committed.
    pub events: Vec<DomainEvent>,
}

/// The metered components a prepaid product draws credit for, with the batch's units on their
/// meter. Products that are not `prepaid` draw nothing (they are invoiced in arrears).
pub fn prepaid_usage<'a>(
    product: &'a Product,
    subscription_id: &'a SubscriptionId,
    units_on: impl Fn(&crate::ids::MeterId) -> u64,
) -> Vec<MeteredUsage<'a>> {
    if !product.prepaid {
        return Vec::new();
    }
    product
        .metered()
        .filter_map(|c| {
            let units = units_on(c.meter()?);
            (units > 0).then_some(MeteredUsage {
                subscription_id,
                component: c,
                units,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn catalog() -> Catalog {
        serde_json::from_value(json!({
            "version": 1, "currency": "usd",
            "meters": [{"id": "api_calls", "name": "API calls"}],
            "products": [
                {"id": "payg", "name": "PAYG", "prepaid": true, "credit": {"packs": [1000]},
                 "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount_decimal": "0.15"}]},
                {"id": "cent", "name": "Cent", "prepaid": true, "credit": {"packs": [1000]},
                 "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount": 1}]}
            ]
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
    }

    const POLICY: CreditPolicy = CreditPolicy {
        floor: 0,
        low_threshold: 200,
    };

    #[test]
    fn sub_cent_prices_round_once_over_the_account() {
        let c = catalog();
        let p = c.product("payg").unwrap();
        let sub = SubscriptionId::parse("sub_1").unwrap();
        let mut acct = CreditAccount::open(ConsumerId::parse("c1").unwrap(), now());
        acct.top_up(1000, POLICY, now());
        // 100 batches of one call at 0.15 cents: 15 cents in all, not 0 and not 100.
        let mut cost = 0;
        for _ in 0..100 {
            let usage = prepaid_usage(p, &sub, |_| 1);
            cost += acct.draw(&usage, POLICY, now()).unwrap().cost;
        }
        assert_eq!(cost, 15);
        assert_eq!(acct.balance, 985);
    }

    #[test]
    fn alerts_once_per_crossing_and_floor_holds() {
        let c = catalog();
        let p = c.product("cent").unwrap();
        let sub = SubscriptionId::parse("sub_1").unwrap();
        let mut acct = CreditAccount::open(ConsumerId::parse("c1").unwrap(), now());
        acct.top_up(1000, POLICY, now());
        let d = acct
            .draw(&prepaid_usage(p, &sub, |_| 999), POLICY, now())
            .unwrap();
        assert_eq!((d.cost, d.drawn, acct.balance), (999, 999, 1));
        assert_eq!(d.events.len(), 1);
        assert!(matches!(
            d.events[0],
            DomainEvent::CreditsLow { balance: 1, .. }
        ));
        let d = acct
            .draw(&prepaid_usage(p, &sub, |_| 2), POLICY, now())
            .unwrap();
        assert_eq!((d.cost, d.drawn, d.uncovered, acct.balance), (2, 1, 1, 0));
        assert!(matches!(
            d.events[..],
            [DomainEvent::CreditsDepleted { balance: 0, .. }]
        ));
        assert!(acct.is_blocked());
        // Further usage at the floor: no new alert, nothing drawn.
        let d = acct
            .draw(&prepaid_usage(p, &sub, |_| 5), POLICY, now())
            .unwrap();
        assert_eq!((d.drawn, d.uncovered, acct.balance), (0, 5, 0));
        assert!(d.events.is_empty());
        // A top-up unblocks and re-arms both alerts.
        let t = acct.top_up(1000, POLICY, now());
        assert_eq!(
            t,
            TopUp {
                was_blocked: true,
                is_blocked: false
            }
        );
        let d = acct
            .draw(&prepaid_usage(p, &sub, |_| 900), POLICY, now())
            .unwrap();
        assert!(matches!(
            d.events[..],
            [DomainEvent::CreditsLow { balance: 100, .. }]
        ));
    }

    #[test]
    fn overdraft_floor_allows_negative_but_not_below() {
        let c = catalog();
        let p = c.product("cent").unwrap();
        let sub = SubscriptionId::parse("sub_1").unwrap();
        let policy = CreditPolicy {
            floor: -50,
            low_threshold: 200,
        };
        let mut acct = CreditAccount::open(ConsumerId::parse("c1").unwrap(), now());
        acct.top_up(100, policy, now());
        let d = acct
            .draw(&prepaid_usage(p, &sub, |_| 130), policy, now())
            .unwrap();
        assert_eq!((d.drawn, d.uncovered, acct.balance), (130, 0, -30));
        let d = acct
            .draw(&prepaid_usage(p, &sub, |_| 100), policy, now())
            .unwrap();
        assert_eq!((d.drawn, d.uncovered, acct.balance), (20, 80, -50));
        // Low and depleted were both crossed by the first draw: one event each.
        assert!(acct.low_alerted && acct.depleted_alerted);
    }

    proptest::proptest! {
        /// Whatever the batches: the balance never passes the floor, every unit is priced
        /// exactly once (the sum of draws is the price of the total), and each alert fires at
        /// most once between top-ups.
        #[test]
        fn floor_holds_and_pricing_telescopes(
            batches in proptest::collection::vec(0u64..5_000, 1..40),
            pack in 0i64..2_000,
            floor in -500i64..=0,
        ) {
            let c = catalog();
            let p = c.product("payg").unwrap();
            let sub = SubscriptionId::parse("sub_1").unwrap();
            let policy = CreditPolicy { floor, low_threshold: 200 };
            let mut acct = CreditAccount::open(ConsumerId::parse("c1").unwrap(), now());
            acct.top_up(pack, policy, now());
            let (mut cost, mut lows, mut depleted) = (0, 0, 0);
            for units in &batches {
                let d = acct.draw(&prepaid_usage(p, &sub, |_| *units), policy, now()).unwrap();
                proptest::prop_assert!(acct.balance >= floor.min(pack));
                proptest::prop_assert_eq!(d.drawn + d.uncovered, d.cost);
                cost += d.cost;
                for e in &d.events {
                    match e {
                        DomainEvent::CreditsLow { .. } => lows += 1,
                        DomainEvent::CreditsDepleted { .. } => depleted += 1,
                        _ => {}
                    }
                }
            }
            let total: u64 = batches.iter().sum();
            let whole = pricing::metered_amount(&p.prices[0], total).unwrap();
            proptest::prop_assert_eq!(cost, whole);
            proptest::prop_assert_eq!(acct.drawn + acct.uncovered, whole);
            proptest::prop_assert_eq!(acct.balance, pack - acct.drawn);
            proptest::prop_assert!(lows <= 1 && depleted <= 1);
        }
    }

    #[test]
    fn arrears_products_draw_nothing() {
        let mut c = catalog();
        c.products[0].prepaid = false;
        let sub = SubscriptionId::parse("sub_1").unwrap();
        assert!(prepaid_usage(&c.products[0], &sub, |_| 10).is_empty());
    }

    #[test]
    fn adjustments_grant_and_take_back_never_below_the_floor_and_alert_once() {
        let consumer = ConsumerId::parse("c1").unwrap();
        let mut acct = CreditAccount::open(consumer, now());
        // A grant to an account at zero lifts the 402.
        let a = acct.adjust(500, POLICY, now());
        assert_eq!((a.applied, a.was_blocked, a.is_blocked), (500, true, false));
        assert!(a.events.is_empty());
        // Taking it all back crosses both lines: CreditsLow then CreditsDepleted, once.
        let a = acct.adjust(-500, POLICY, now());
        assert_eq!((a.applied, acct.balance, a.is_blocked), (-500, 0, true));
        let kinds: Vec<&str> = a.events.iter().map(|e| e.detail_type()).collect();
        assert_eq!(kinds, ["CreditsLow", "CreditsDepleted"]);
        // Past the floor nothing more is taken, and no alert repeats.
        let a = acct.adjust(-300, POLICY, now());
        assert_eq!((a.applied, acct.balance), (0, 0));
        assert!(a.events.is_empty());
        let floor = CreditPolicy {
            floor: -100,
            ..POLICY
        };
        let a = acct.adjust(-300, floor, now());
        assert_eq!((a.applied, acct.balance), (-100, -100));
        assert_eq!(acct.adjusted, -100);
        // A grant above the low line re-arms both alerts.
        acct.adjust(1_000, POLICY, now());
        assert!(!acct.low_alerted && !acct.depleted_alerted);
    }

    #[test]
    fn a_reversal_takes_back_the_unused_part_once_in_any_order() {
        let consumer = ConsumerId::parse("c1").unwrap();
        let mut acct = CreditAccount::open(consumer, now());
        acct.top_up(1000, POLICY, now());
        let c = catalog();
        let sub = SubscriptionId::parse("sub_1").unwrap();
        let p = c.product("cent").unwrap();
        acct.draw(&prepaid_usage(p, &sub, |_| 500), POLICY, now())
            .unwrap();
        // Half used; the whole $10 is refunded: the unused $5 goes, once.
        let r = acct.reverse("ch_1", 1000, POLICY, now());
        assert_eq!((r.applied, acct.balance), (-500, 0));
        assert!(r.is_blocked);
        let again = acct.reverse("ch_1", 1000, POLICY, now());
        assert_eq!((again.applied, acct.balance), (0, 0));
        // Partial refunds arriving out of order: the larger total first, the smaller later.
        acct.top_up(1000, POLICY, now());
        assert_eq!(acct.reverse("ch_2", 600, POLICY, now()).applied, -600);
        assert_eq!(acct.reverse("ch_2", 300, POLICY, now()).applied, 0);
        assert_eq!(acct.reverse("ch_2", 1000, POLICY, now()).applied, -400);
        assert_eq!(acct.balance, 0);
    }
}
