//! Prepaid credit as the functions apply it: purchases (from the Stripe webhook), and keeping
//! the keys' credit gates in step with the account (see `tollgate_domain::entitlement`).

use tollgate_domain::Catalog;
use tollgate_domain::credit::{CreditAccount, CreditPolicy};
use tollgate_domain::entitlement::{GateFact, KeyGate};
use tollgate_domain::events::DomainEvent;
use tollgate_domain::ids::{ConsumerId, SubscriptionId};
use tollgate_domain::money::MinorUnits;
use tollgate_domain::ports::{
    ApiKey, CreditMovement, CreditReason, EntitlementReads, Expect, Store, StoreError, StoreResult,
    Write,
};
use tollgate_domain::time::Timestamp;

/// What the credit and entitlement code needs from a store (DynamoDB in production and tests).
pub trait CreditStore: Store + EntitlementReads {}
impl<T: Store + EntitlementReads + ?Sized> CreditStore for T {}

/// A DynamoDB transaction holds at most 100 items.
pub const MAX_COMMIT_ITEMS: usize = 100;
/// Optimistic-concurrency attempts before giving up with 503 (each loser re-reads; a handful of
/// concurrent writers on one consumer settle well within this).
pub const MAX_ATTEMPTS: usize = 8;

/// The operator's credit settings from [`crate::Settings`].
pub fn policy(settings: &crate::Settings) -> CreditPolicy {
    CreditPolicy {
        floor: settings.credit_overdraft_floor.min(0),
        low_threshold: settings.credit_low_threshold,
    }
}

/// The version the store gives an account written with `expect`.
pub fn stored_version(expect: Expect) -> u64 {
    match expect {
        Expect::Absent => 0,
        Expect::Version(v) => v + 1,
    }
}

/// The consumer's account for a change: the stored one (with the expectation to write it
/// back under), or a new empty one.
pub async fn load_account(
    store: &(impl CreditStore + ?Sized),
    consumer: &ConsumerId,
    now: Timestamp,
) -> StoreResult<(CreditAccount, Expect)> {
    Ok(match store.get_credit_account(consumer).await? {
        Some(a) => {
            let v = a.version;
            (a, Expect::Version(v))
        }
        None => (CreditAccount::open(consumer.clone(), now), Expect::Absent),
    })
}

/// The live keys whose credit gate follows this consumer's account: keys of its subscriptions
/// to prepaid products.
pub async fn prepaid_keys(
    store: &(impl CreditStore + ?Sized),
    catalog: &Catalog,
    consumer: &ConsumerId,
) -> StoreResult<Vec<(ApiKey, KeyGate)>> {
    let mut out = Vec::new();
    for sub in store.list_subscriptions(consumer).await? {
        let prepaid = catalog
            .product(sub.product_id.as_str())
            .is_some_and(|p| p.prepaid);
        if !prepaid || sub.status.is_final() {
            continue;
        }
        for (key, gate) in store.list_key_entitlements(&sub.id).await? {
            if key.revoked_at.is_none() {
                out.push((key, gate));
            }
        }
    }
    Ok(out)
}

/// Gate writes that copy an account's blocked state (at `version`) onto the keys that do not
/// show it yet.
pub fn credit_gate_writes(keys: &[(ApiKey, KeyGate)], blocked: bool, version: u64) -> Vec<Write> {
    let fact = GateFact::Credit {
        no_credit: blocked,
        version,
    };
    keys.iter()
        .filter(|(_, gate)| gate.needs(&fact))
        .map(|(key, _)| Write::SetKeyGate {
            hash: key.hash.clone(),
            fact,
        })
        .collect()
}

/// Copies `fact` onto the live keys of `subscription` that do not show it yet (the quota gate
/// the usage function sets, the one a renewal clears), with [`apply_gate_writes`]. Returns how
/// many keys were written.
pub async fn gate_subscription_keys(
    store: &(impl CreditStore + ?Sized),
    subscription: &SubscriptionId,
    fact: GateFact,
) -> StoreResult<usize> {
    let writes: Vec<Write> = store
        .list_key_entitlements(subscription)
        .await?
        .into_iter()
        .filter(|(k, g)| k.revoked_at.is_none() && g.needs(&fact))
        .map(|(k, _)| Write::SetKeyGate { hash: k.hash, fact })
        .collect();
    let n = writes.len();
    apply_gate_writes(store, writes).await?;
    Ok(n)
}

/// Applies gate writes one by one, outside any transaction. A conflict means the key already
/// holds a newer copy of the fact (or is gone), which is fine: newest wins.
pub async fn apply_gate_writes(
    store: &(impl CreditStore + ?Sized),
    writes: Vec<Write>,
) -> StoreResult<()> {
    for w in writes {
        match store.commit(vec![w]).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A paid credit purchase: a Checkout Session in `payment` mode whose metadata carries
/// `tollgate_credit_amount` (`ports::metadata::CREDIT_AMOUNT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPurchase {
    pub consumer_id: ConsumerId,
    /// The Checkout Session id (`cs_...`): a purchase is applied once per session.
    pub checkout_session_id: String,
    /// Credit bought, minor units (> 0).
    pub amount: MinorUnits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// The balance grew by the purchase.
    Applied { balance: MinorUnits },
    /// This session was applied before (a re-delivered webhook): nothing changed.
    AlreadyApplied { balance: MinorUnits },
}

#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error("amount: a credit purchase must be positive (got {0})")]
    NotPositive(MinorUnits),
    #[error("amount: an adjustment must not be zero")]
    ZeroAdjustment,
    #[error("idempotency_key: {0:?} was used for another adjustment (another amount)")]
    KeyReused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the credit account of {0} kept changing; retry")]
    Contended(ConsumerId),
}

/// **For the Stripe webhook**: call on `checkout.session.completed` of a `payment`-mode session
/// for credit (metadata `tollgate_credit_amount`), once the session is paid
/// (`payment_status = paid`). Grows the consumer's balance by the amount exactly once per
/// Checkout Session — the session id is recorded as a `CreditMovement` in the same transaction
/// as the balance, so a re-delivered event answers [`PurchaseOutcome::AlreadyApplied`] — and
/// lifts the 402 from the consumer's keys in that same transaction, so the next entitlement
/// check already allows the call (no propagation delay).
///
/// An error is worth a non-2xx answer: Stripe re-delivers and this function re-checks the
/// keys' gates even when the purchase was applied already.
///
/// In Stripe the purchase is the Checkout payment itself; tollgate does not also put it on the
/// customer balance, which Stripe would spend on the consumer's next invoice of *any*
/// subscription while tollgate's balance pays for the usage too (see `docs/usage.md`, "Prepaid
/// credit").
pub async fn apply_credit_purchase(
    store: &(impl CreditStore + ?Sized),
    catalog: &Catalog,
    purchase: &CreditPurchase,
    policy: CreditPolicy,
    now: Timestamp,
) -> Result<PurchaseOutcome, CreditError> {
    if purchase.amount <= 0 {
        return Err(CreditError::NotPositive(purchase.amount));
    }
    let change = CreditChange {
        consumer_id: &purchase.consumer_id,
        reason: CreditReason::Purchase,
        id: &purchase.checkout_session_id,
        requested: None,
        note: None,
    };
    let outcome = commit_credit_change(store, catalog, &change, now, |account| {
        let top_up = account.top_up(purchase.amount, policy, now);
        (purchase.amount, top_up.is_blocked, Vec::new())
    })
    .await?;
    Ok(match outcome {
        Committed::Applied { balance, .. } => PurchaseOutcome::Applied { balance },
        Committed::AlreadyApplied { balance, .. } => PurchaseOutcome::AlreadyApplied { balance },
    })
}

/// An operator's credit adjustment: `tollgate credit adjust` and
/// `POST /consumers/{consumer_id}/credit/adjustments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditAdjustmentRequest {
    pub consumer_id: ConsumerId,
    /// Minor units: positive grants credit, negative takes it back (never below the floor).
    pub amount: MinorUnits,
    /// Why, in the operator's words (kept on the movement for the audit trail).
    pub reason: String,
    /// The operator's key for this intent: the adjustment is applied once per key, and the
    /// same key with another amount is refused.
    pub idempotency_key: String,
}

/// What an adjustment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentOutcome {
    /// Minor units actually added (negative: taken back; the floor may limit a deduction).
    pub applied: MinorUnits,
    pub balance: MinorUnits,
    /// False when this key was applied before (a retry): nothing changed.
    pub newly_applied: bool,
    /// The domain events to publish (`CreditsLow` / `CreditsDepleted` a deduction crosses).
    pub events: Vec<DomainEvent>,
}

/// Longest operator reason kept.
pub const MAX_REASON_LEN: usize = 500;

/// Applies an operator's adjustment exactly once per idempotency key, in ONE transaction with
/// the balance and the credit gates of the consumer's prepaid keys (the 402 moves at once).
/// A retry with the same key and amount answers the first result; the same key with another
/// amount is [`CreditError::KeyReused`].
pub async fn apply_credit_adjustment(
    store: &(impl CreditStore + ?Sized),
    catalog: &Catalog,
    request: &CreditAdjustmentRequest,
    policy: CreditPolicy,
    now: Timestamp,
) -> Result<AdjustmentOutcome, CreditError> {
    if request.amount == 0 {
        return Err(CreditError::ZeroAdjustment);
    }
    let change = CreditChange {
        consumer_id: &request.consumer_id,
        reason: CreditReason::Adjustment,
        id: &request.idempotency_key,
        requested: Some(request.amount),
        note: Some(request.reason.clone()),
    };
    let outcome = commit_credit_change(store, catalog, &change, now, |account| {
        let a = account.adjust(request.amount, policy, now);
        (a.applied, a.is_blocked, a.events)
    })
    .await?;
    match outcome {
        Committed::Applied {
            applied,
            balance,
            events,
        } => Ok(AdjustmentOutcome {
            applied,
            balance,
            newly_applied: true,
            events,
        }),
        Committed::AlreadyApplied { movement, balance } => match movement {
            Some(m) if m.requested == Some(request.amount) => Ok(AdjustmentOutcome {
                applied: m.amount,
                balance,
                newly_applied: false,
                events: Vec::new(),
            }),
            _ => Err(CreditError::KeyReused(request.idempotency_key.clone())),
        },
    }
}

/// Takes back the unused part of a credit purchase whose payment Stripe reversed: `charge`
/// (`ch_...`) has now been reversed by `reversed_total` minor units in all (its
/// `amount_refunded`, or a lost dispute's amount). Applied once per (charge, total): a
/// re-delivered event changes nothing, and the account item remembers each charge's total so
/// reversals arriving in any order take back exactly the new part, never below the floor.
/// The movement `(consumer, reversal, "{charge}:{total}")`, the account and the prepaid keys'
/// 402 gates are one transaction. Returns what was taken (≤ 0), the balance, and the events
/// to publish (`CreditRevoked`, and the alerts it crosses).
pub async fn apply_credit_reversal(
    store: &(impl CreditStore + ?Sized),
    catalog: &Catalog,
    consumer: &ConsumerId,
    charge: &str,
    reversed_total: MinorUnits,
    policy: CreditPolicy,
    now: Timestamp,
) -> Result<AdjustmentOutcome, CreditError> {
    if reversed_total <= 0 {
        return Err(CreditError::NotPositive(reversed_total));
    }
    let id = format!("{charge}:{reversed_total}");
    let change = CreditChange {
        consumer_id: consumer,
        reason: CreditReason::Reversal,
        id: &id,
        requested: Some(-reversed_total),
        note: None,
    };
    let outcome = commit_credit_change(store, catalog, &change, now, |account| {
        let r = account.reverse(charge, reversed_total, policy, now);
        let mut events = r.events;
        events.insert(
            0,
            DomainEvent::CreditRevoked {
                consumer_id: consumer.clone(),
                amount: -r.applied,
                balance: account.balance,
                charge: charge.to_string(),
                at: now,
            },
        );
        (r.applied, r.is_blocked, events)
    })
    .await?;
    Ok(match outcome {
        Committed::Applied {
            applied,
            balance,
            events,
        } => AdjustmentOutcome {
            applied,
            balance,
            newly_applied: true,
            events,
        },
        Committed::AlreadyApplied { movement, balance } => AdjustmentOutcome {
            applied: movement.map_or(0, |m| m.amount),
            balance,
            newly_applied: false,
            events: Vec::new(),
        },
    })
}

/// One change of a consumer's credit, recorded as the movement `(consumer, reason, id)`.
struct CreditChange<'a> {
    consumer_id: &'a ConsumerId,
    reason: CreditReason,
    id: &'a str,
    requested: Option<MinorUnits>,
    note: Option<String>,
}

enum Committed {
    Applied {
        applied: MinorUnits,
        balance: MinorUnits,
        events: Vec<DomainEvent>,
    },
    /// The movement existed: this change was applied before.
    AlreadyApplied {
        movement: Option<CreditMovement>,
        balance: MinorUnits,
    },
}

/// The one recipe of every credit change (purchase, adjustment, refund): the movement, the
/// account and the prepaid keys' credit gates in ONE transaction under the account's version,
/// retried on a concurrent change; a movement that exists already means "applied before" (its
/// gates are copied again, in case a crash cut the overflow writes short).
/// `change` mutates the account and returns (minor units applied, blocked after, events).
async fn commit_credit_change(
    store: &(impl CreditStore + ?Sized),
    catalog: &Catalog,
    c: &CreditChange<'_>,
    now: Timestamp,
    change: impl Fn(&mut CreditAccount) -> (MinorUnits, bool, Vec<DomainEvent>),
) -> Result<Committed, CreditError> {
    for _ in 0..MAX_ATTEMPTS {
        let (mut account, expect) = load_account(store, c.consumer_id, now).await?;
        let (applied, blocked, events) = change(&mut account);
        let version = stored_version(expect);
        let keys = prepaid_keys(store, catalog, c.consumer_id).await?;
        let gates = credit_gate_writes(&keys, blocked, version);
        let mut writes = vec![
            Write::PutCreditMovement(CreditMovement {
                consumer_id: c.consumer_id.clone(),
                reason: c.reason,
                id: c.id.to_string(),
                amount: applied,
                at: now,
                requested: c.requested,
                note: c.note.clone(),
            }),
            Write::PutCreditAccount {
                account: account.clone(),
                expect,
            },
        ];
        // A consumer with more prepaid keys than one transaction holds gets the rest right
        // after: those writes carry the account version, so they cannot undo a newer change.
        let room = MAX_COMMIT_ITEMS - writes.len();
        let (now_gates, later_gates) = if gates.len() > room {
            let mut g = gates;
            let later = g.split_off(room);
            (g, later)
        } else {
            (gates, Vec::new())
        };
        writes.extend(now_gates);
        match store.commit(writes).await {
            Ok(()) => {
                apply_gate_writes(store, later_gates).await?;
                return Ok(Committed::Applied {
                    applied,
                    balance: account.balance,
                    events,
                });
            }
            Err(StoreError::Conflict { index: 0, .. }) => {
                // Applied before. Its gate writes may not all have landed (a crash between
                // the transaction and the overflow writes): copy the current state again.
                let (current, expect) = load_account(store, c.consumer_id, now).await?;
                if expect != Expect::Absent {
                    let keys = prepaid_keys(store, catalog, c.consumer_id).await?;
                    let writes = credit_gate_writes(&keys, current.is_blocked(), current.version);
                    apply_gate_writes(store, writes).await?;
                }
                let movement = store
                    .list_credit_movements(c.consumer_id)
                    .await?
                    .into_iter()
                    .find(|m| m.reason == c.reason && m.id == c.id);
                return Ok(Committed::AlreadyApplied {
                    movement,
                    balance: current.balance,
                });
            }
            // The account moved under us (a batch drew it down): read again.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CreditError::Contended(c.consumer_id.clone()))
}
