//! The entitlement check the gateway calls (authorizer and `GET /entitlements/{key}`): one
//! `GetItem` on the key item when its gates are set, the source items otherwise. It never
//! writes (the authorizer's role may only read).

use crate::credit::CreditStore;
use tollgate_domain::Catalog;
use tollgate_domain::apikey::looks_like_key;
use tollgate_domain::entitlement::{Entitlement, KeyFacts};
use tollgate_domain::ids::ApiKeyHash;
use tollgate_domain::ports::StoreResult;
use tollgate_domain::subscription::SubscriptionStatus;
use tollgate_domain::time::Timestamp;

/// The hash of a key the gateway presents, or `None` when `key` is not a well-formed tollgate
/// key (`tg_` + 64 lowercase hex, `tollgate_domain::apikey::looks_like_key`).
///
/// Only the key itself is a credential: a bare SHA-256 (what the table stores) is refused, so
/// reading the table, a backup or a log never yields a working credential.
pub fn key_hash(key: &str) -> Option<ApiKeyHash> {
    let k = key.trim();
    looks_like_key(k).then(|| ApiKeyHash::of_key(k))
}

/// May the key call now, and with what limits.
pub async fn check(
    store: &(impl CreditStore + ?Sized),
    catalog: &Catalog,
    hash: &ApiKeyHash,
    now: Timestamp,
) -> StoreResult<Entitlement> {
    let Some((key, gate)) = store.get_key_entitlement(hash).await? else {
        return Ok(Entitlement::unknown_key());
    };
    let product = catalog.product(key.product_id.as_str());
    // Slow path 1: the subscription's status was never copied onto this key.
    let (status, access_expires_at) = match gate.status {
        Some(s) => (s, gate.access_expires_at),
        None => store
            .get_subscription(&key.subscription_id)
            .await?
            .map_or((SubscriptionStatus::Canceled, None), |s| {
                (s.status, s.access_expires_at)
            }),
    };
    // Slow path 2: a prepaid key whose consumer had no credit account when it was issued (the
    // first purchase gates it). Read only: this path runs under the authorizer's read-only role.
    let no_credit = match (product.is_some_and(|p| p.prepaid), gate.credit_version) {
        (false, _) => false,
        (true, Some(_)) => gate.no_credit,
        (true, None) => store
            .get_credit_account(&key.consumer_id)
            .await?
            .is_none_or(|account| account.is_blocked()),
    };
    Ok(Entitlement::from_facts(
        &KeyFacts {
            key: &key,
            status,
            access_expires_at,
            product,
            no_credit,
            quota_blocked_until: gate.quota_blocked_until,
        },
        now,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_key_is_a_credential() {
        let key = tollgate_domain::apikey::NewApiKey::generate();
        let h = ApiKeyHash::of_key(key.expose_secret());
        assert_eq!(key_hash(key.expose_secret()), Some(h.clone()));
        // The stored hash is not a key.
        assert_eq!(key_hash(h.as_str()), None);
        assert_eq!(key_hash("tg_abc"), None);
        assert_eq!(key_hash("  "), None);
    }
}
