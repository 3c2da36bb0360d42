//! The entitlement check the gateway calls (authorizer and `GET /entitlements/{key}`): one
//! `GetItem` on the key item when its gates are set, the source items otherwise.

use crate::credit::{CreditStore, apply_gate_writes};
use tollgate_domain::Catalog;
use tollgate_domain::entitlement::{Entitlement, GateFact, KeyFacts};
use tollgate_domain::ids::ApiKeyHash;
use tollgate_domain::ports::{StoreResult, Write};
use tollgate_domain::subscription::SubscriptionStatus;
use tollgate_domain::time::Timestamp;

/// How the gateway names the key: the key itself (`tg_...`) or its SHA-256 hex, which keeps
/// live keys out of URL paths and access logs.
pub fn key_hash(key_or_hash: &str) -> Option<ApiKeyHash> {
    let k = key_or_hash.trim();
    if k.is_empty() {
        return None;
    }
    ApiKeyHash::from_hex(k)
        .ok()
        .or_else(|| Some(ApiKeyHash::of_key(k)))
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
    let status = match gate.status {
        Some(s) => s,
        None => store
            .get_subscription(&key.subscription_id)
            .await?
            .map_or(SubscriptionStatus::Canceled, |s| s.status),
    };
    // Slow path 2: a prepaid key that no account change has gated yet (new key, first use).
    let no_credit = match (product.is_some_and(|p| p.prepaid), gate.credit_version) {
        (false, _) => false,
        (true, Some(_)) => gate.no_credit,
        (true, None) => match store.get_credit_account(&key.consumer_id).await? {
            None => true,
            Some(account) => {
                // Copy the fact so the next check is one read. It carries the account's
                // version, so it cannot overwrite a newer copy written meanwhile.
                let fact = GateFact::Credit {
                    no_credit: account.is_blocked(),
                    version: account.version,
                };
                apply_gate_writes(
                    store,
                    vec![Write::SetKeyGate {
                        hash: key.hash.clone(),
                        fact,
                    }],
                )
                .await?;
                account.is_blocked()
            }
        },
    };
    Ok(Entitlement::from_facts(
        &KeyFacts {
            key: &key,
            status,
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
    fn key_or_hash() {
        let h = ApiKeyHash::of_key("tg_abc");
        assert_eq!(key_hash("tg_abc"), Some(h.clone()));
        assert_eq!(key_hash(h.as_str()), Some(h));
        assert_eq!(key_hash("  "), None);
    }
}
