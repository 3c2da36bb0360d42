//! The one path by which a subscription's state changes.
//!
//! Checkout activation, the webhook's Stripe snapshot and one-time payment, cancel, resume, key
//! rotation, the billing run's expiry and reconcile: each decides the new state with the domain
//! (`tollgate_domain::lifecycle`) and hands it to [`commit_transition`], which writes, in ONE
//! commit under the version the caller read:
//!
//! 1. the idempotency claim, if any (first, so a conflict at index 0 means "done before"),
//! 2. the subscription,
//! 3. the status gate of every live key (`entitlement::status_gate_write`: status and end of
//!    access), so the one-read entitlement check follows the new state at once,
//! 4. revocations and new keys asked for,
//!
//! and publishes the transition's domain events only after the commit. No caller writes a
//! subscription itself, so no path can forget the keys. [`retry_on_conflict`] is the one
//! optimistic-concurrency loop, with one budget ([`MAX_ATTEMPTS`]).

use crate::credit::CreditStore;
use std::future::Future;
use tollgate_domain::Catalog;
use tollgate_domain::entitlement::{GateFact, status_gate_write};
use tollgate_domain::events::DomainEvent;
use tollgate_domain::lifecycle::Effect;
use tollgate_domain::ports::{ApiKey, EventPublisher, Expect, StoreError, StoreResult, Write};
use tollgate_domain::subscription::Subscription;
use tollgate_domain::time::Timestamp;

/// Attempts of a read-decide-commit before giving up: each loser of a version race re-reads,
/// and a handful of concurrent writers on one subscription settle well within this.
pub const MAX_ATTEMPTS: usize = 8;

/// What one attempt of a read-decide-commit came to.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Finished (committed, or nothing to do).
    Done(T),
    /// The subscription changed under us: read again.
    Retry,
}

impl<T> Attempt<T> {
    /// The finished value mapped; a retry stays a retry.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Attempt::Done(t) => Attempt::Done(f(t)),
            Attempt::Retry => Attempt::Retry,
        }
    }
}

/// Every attempt lost a version race ([`MAX_ATTEMPTS`] of them): the caller answers "retry
/// later" (409 to the portal, 500 to Stripe so it re-delivers, a retryable failure in the run).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the subscription kept changing concurrently; retry")]
pub struct Contended;

/// Runs `attempt` until it is [`Attempt::Done`], at most [`MAX_ATTEMPTS`] times.
///
/// `attempt` is usually `move || self.some_step(args)`: a step method that reads, decides and
/// commits once.
pub async fn retry_on_conflict<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: From<Contended>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    for _ in 0..MAX_ATTEMPTS {
        if let Attempt::Done(t) = attempt().await? {
            return Ok(t);
        }
    }
    Err(Contended.into())
}

/// One change of a subscription, as the domain decided it.
#[derive(Debug)]
pub struct Transition<'a> {
    /// The subscription in its new state.
    pub subscription: Subscription,
    /// `Expect::Version(v)` with the version it was read at, or `Expect::Absent` for a new one.
    pub expect: Expect,
    /// What the lifecycle table said the change means (each publishes its event).
    pub effects: &'a [Effect],
    /// An idempotency claim (`Write::Claim`) committed first, with the change.
    pub claim: Option<Write>,
    /// Keys revoked in the same commit (rotation).
    pub revoke: Vec<ApiKey>,
    /// Keys created in the same commit; their gates are set right after (DynamoDB refuses two
    /// operations on one item in a transaction) and their `ApiKeyIssued` is published once the
    /// subscription grants access.
    pub new_keys: Vec<ApiKey>,
    /// More events to publish after the commit.
    pub events: Vec<DomainEvent>,
    pub now: Timestamp,
}

impl<'a> Transition<'a> {
    /// A change of a stored subscription read at `read_version`.
    pub fn of(
        subscription: Subscription,
        read_version: u64,
        effects: &'a [Effect],
        now: Timestamp,
    ) -> Self {
        Self {
            subscription,
            expect: Expect::Version(read_version),
            effects,
            claim: None,
            revoke: Vec::new(),
            new_keys: Vec::new(),
            events: Vec::new(),
            now,
        }
    }
}

/// How a transition's commit ended.
#[derive(Debug)]
pub enum Committed {
    /// Written and published. `subscription` carries its stored version; `live_keys` are the
    /// keys that follow it now.
    Applied {
        subscription: Box<Subscription>,
        live_keys: Vec<ApiKey>,
    },
    /// The claim was taken before: this change was applied already, nothing written.
    AlreadyClaimed,
    /// The subscription changed since it was read: nothing written, read again.
    Stale,
}

/// Commits `t` (see the module docs) and publishes its events after the commit. A failure to
/// publish is logged, not returned: the state is committed, and a retry would only find the
/// claim taken.
pub async fn commit_transition(
    store: &(impl CreditStore + ?Sized),
    publisher: &(impl EventPublisher + ?Sized),
    catalog: &Catalog,
    t: Transition<'_>,
) -> StoreResult<Committed> {
    let Transition {
        mut subscription,
        expect,
        effects,
        claim,
        revoke,
        new_keys,
        mut events,
        now,
    } = t;
    let stored = match expect {
        Expect::Absent => 0,
        Expect::Version(v) => v + 1,
    };
    let live_keys: Vec<ApiKey> = match expect {
        Expect::Absent => Vec::new(),
        Expect::Version(_) => store
            .list_api_keys(&subscription.id)
            .await?
            .into_iter()
            .filter(|k| k.revoked_at.is_none() && !revoke.iter().any(|r| r.hash == k.hash))
            .collect(),
    };
    let has_claim = claim.is_some();
    let mut writes: Vec<Write> = claim.into_iter().collect();
    writes.push(Write::PutSubscription {
        subscription: subscription.clone(),
        expect,
    });
    writes.extend(
        live_keys
            .iter()
            .map(|k| status_gate_write(&subscription, stored, &k.hash)),
    );
    writes.extend(revoke.iter().map(|k| Write::RevokeApiKey {
        hash: k.hash.clone(),
        at: now,
    }));
    writes.extend(new_keys.iter().cloned().map(Write::PutApiKey));
    match store.commit(writes).await {
        Ok(()) => {}
        Err(StoreError::Conflict { index: 0, .. }) if has_claim => {
            return Ok(Committed::AlreadyClaimed);
        }
        Err(e) if e.is_conflict() => return Ok(Committed::Stale),
        Err(e) => return Err(e),
    }
    subscription.version = stored;
    for key in &new_keys {
        gate_new_key(store, catalog, &subscription, key).await;
    }
    if !effects.is_empty() {
        tracing::info!(subscription = %subscription.id, status = subscription.status.as_str(), effects = ?effects, "subscription changed");
    }
    let mut all: Vec<DomainEvent> = effects
        .iter()
        .map(|e| e.event(&subscription, now))
        .collect();
    if effects.contains(&Effect::Activated) {
        // The key minted at checkout works from now on: announce it (without the key).
        all.extend(live_keys.iter().map(key_issued));
    }
    if subscription.status.grants_access() {
        // A key is announced when it starts working (a pending one at activation, above).
        all.extend(new_keys.iter().map(key_issued));
    }
    all.append(&mut events);
    publish(publisher, &all).await;
    let mut live_keys = live_keys;
    live_keys.extend(new_keys);
    Ok(Committed::Applied {
        subscription: Box::new(subscription),
        live_keys,
    })
}

/// Gates a key just created (stored with `subscription` at its stored version): the status and
/// end of access, and for a prepaid product the consumer's credit, so the entitlement check
/// answers with one read and never writes. A lost write is harmless: the check then reads the
/// source items (correct, one read slower), and a newer copy is never overwritten.
async fn gate_new_key(
    store: &(impl CreditStore + ?Sized),
    catalog: &Catalog,
    subscription: &Subscription,
    key: &ApiKey,
) {
    let mut writes = vec![status_gate_write(
        subscription,
        subscription.version,
        &key.hash,
    )];
    let prepaid = catalog
        .product(subscription.product_id.as_str())
        .is_some_and(|p| p.prepaid);
    if prepaid {
        // No account yet: no gate (the first purchase writes one at the account's version 0).
        match store.get_credit_account(&subscription.consumer_id).await {
            Ok(Some(account)) => writes.push(Write::SetKeyGate {
                hash: key.hash.clone(),
                fact: GateFact::Credit {
                    no_credit: account.is_blocked(),
                    version: account.version,
                },
            }),
            Ok(None) => {}
            Err(e) => {
                tracing::info!(subscription = %subscription.id, error = %e, "credit gate not written")
            }
        }
    }
    for w in writes {
        if let Err(e) = store.commit(vec![w]).await {
            tracing::info!(subscription = %subscription.id, error = %e, "key gate not written");
        }
    }
}

/// `ApiKeyIssued` for a key (never the key itself).
pub fn key_issued(k: &ApiKey) -> DomainEvent {
    DomainEvent::ApiKeyIssued {
        subscription_id: k.subscription_id.clone(),
        consumer_id: k.consumer_id.clone(),
        key_prefix: k.prefix.clone(),
        at: k.created_at,
    }
}

/// Publishes after a commit; a failure is logged loudly for the operator (the events can be
/// re-derived from state), never turned into a failed request.
pub async fn publish(publisher: &(impl EventPublisher + ?Sized), events: &[DomainEvent]) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = publisher.publish(events).await {
        tracing::error!(error = %e, count = events.len(), "domain events not published");
    }
}
