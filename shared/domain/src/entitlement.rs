//! May this API key call? The gateway's question, answered from ONE DynamoDB read.
//!
//! The answer depends on facts kept on three different items (the subscription's status, the
//! consumer's credit account, the subscription's usage this period). Reading all three per call
//! would triple the hot path, so each fact is copied onto the key item as a *gate*, written by
//! whoever changes the fact:
//!
//! | gate attribute | written by | guarded by |
//! |---|---|---|
//! | `gate_status`, `gate_access_expires_at` | every commit of the subscription (`status_gate_write`, from `tollgate_app::subscriptions`) | `gate_status_version` < the subscription's new version |
//! | `gate_no_credit` | every commit of a credit account (usage, purchase) | `gate_credit_version` < the account's new version |
//! | `gate_quota_blocked_until` + `gate_quota_window` | the usage function when a quota is reached; the webhook clears it when a new period starts | a newer window replaces it; within one window the block only moves later |
//!
//! Each gate write carries the version of the fact it copies and is refused when the key
//! already holds a newer one, so writers racing each other (a top-up and a depleting batch)
//! leave the key with the newest fact, in any order. A key without `gate_status` (issued by code
//! that does not set it) or a prepaid key without `gate_credit_version` is answered from the
//! source items instead (two reads) — correct, just slower.

use crate::catalog::{Catalog, Product};
use crate::ids::{ApiKeyHash, ConsumerId, ProductId, SubscriptionId};
use crate::ports::{ApiKey, Write};
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The gate attributes of a key item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGate {
    #[serde(default, rename = "gate_status")]
    pub status: Option<SubscriptionStatus>,
    #[serde(default, rename = "gate_status_version")]
    pub status_version: Option<u64>,
    /// The subscription's `access_expires_at` at `status_version` (one-time access ends then,
    /// to the second, whether or not the nightly run has expired it yet).
    #[serde(default, rename = "gate_access_expires_at")]
    pub access_expires_at: Option<Timestamp>,
    #[serde(default, rename = "gate_no_credit")]
    pub no_credit: bool,
    #[serde(default, rename = "gate_credit_version")]
    pub credit_version: Option<u64>,
    #[serde(default, rename = "gate_quota_blocked_until")]
    pub quota_blocked_until: Option<Timestamp>,
    /// Start of the quota window the block belongs to (`usage::quota_window`).
    #[serde(default, rename = "gate_quota_window")]
    pub quota_window: Option<Timestamp>,
}

/// One fact copied onto a key item ([`Write::SetKeyGate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateFact {
    /// The subscription's status and end of access at its stored `version`.
    Status {
        status: SubscriptionStatus,
        access_expires_at: Option<Timestamp>,
        version: u64,
    },
    /// Whether the consumer's credit account at its stored `version` is blocked.
    Credit { no_credit: bool, version: u64 },
    /// The quota window starting at `window_start` is used up until `blocked_until` (its
    /// end), or (`None`) not blocked: a new window (a renewal, a re-anchor) clears the block
    /// of an older one. The check ignores a block once `blocked_until` has passed.
    Quota {
        window_start: Timestamp,
        blocked_until: Option<Timestamp>,
    },
}

impl KeyGate {
    /// Whether writing `fact` would change anything (so unchanged keys cost no write).
    pub fn needs(&self, fact: &GateFact) -> bool {
        match *fact {
            GateFact::Status {
                status,
                access_expires_at,
                version,
            } => {
                (self.status != Some(status) || self.access_expires_at != access_expires_at)
                    && self.status_version.is_none_or(|v| v < version)
            }
            GateFact::Credit { no_credit, version } => {
                (self.no_credit != no_credit || self.credit_version.is_none())
                    && self.credit_version.is_none_or(|v| v < version)
            }
            GateFact::Quota {
                window_start,
                blocked_until,
            } => match self.quota_window {
                Some(w) if w > window_start => false,
                Some(w) if w == window_start => {
                    blocked_until.is_some_and(|t| self.quota_blocked_until.is_none_or(|u| u < t))
                }
                // A newer window (or a key gated before windows were recorded): replace.
                _ => blocked_until.is_some() || self.quota_blocked_until.is_some(),
            },
        }
    }
}

/// The write a commit that stores `subscription` (as version `stored_version`: 0 for
/// `Expect::Absent`, v + 1 for `Expect::Version(v)`) adds for each of its keys, so the
/// entitlement check sees the new status with one read.
///
/// For the lifecycle / key-issuing code: put these in the SAME commit as the
/// `Write::PutSubscription` (or `PutApiKey`) — the subscription's version condition then
/// serialises them, and a status change can never leave a key with an older status.
pub fn status_gate_write(
    subscription: &Subscription,
    stored_version: u64,
    key: &ApiKeyHash,
) -> Write {
    Write::SetKeyGate {
        hash: key.clone(),
        fact: GateFact::Status {
            status: subscription.status,
            access_expires_at: subscription.access_expires_at,
            version: stored_version,
        },
    }
}

/// Why a key is refused. The gateway maps it to an HTTP status ([`DenyReason::http_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// No key with this hash.
    UnknownKey,
    /// The key was revoked.
    Revoked,
    /// Payment retries are exhausted: no access until an invoice is paid.
    Suspended,
    /// The subscription is not paid yet, canceled or expired.
    Inactive,
    /// The consumer's prepaid credit is used up.
    NoCredit,
    /// The period's quota is used up.
    QuotaExceeded,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UnknownKey => "unknown_key",
            DenyReason::Revoked => "revoked",
            DenyReason::Suspended => "suspended",
            DenyReason::Inactive => "inactive",
            DenyReason::NoCredit => "no_credit",
            DenyReason::QuotaExceeded => "quota_exceeded",
        }
    }
    /// 402 Payment Required for no credit (seed 004), 429 for a used-up quota, 403 otherwise.
    pub fn http_status(self) -> u16 {
        match self {
            DenyReason::NoCredit => 402,
            DenyReason::QuotaExceeded => 429,
            _ => 403,
        }
    }
}

/// The facts one decision needs, however they were read.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    pub key: &'a ApiKey,
    pub status: SubscriptionStatus,
    /// When one-time access ends (`Subscription::access_expires_at`); none for subscriptions.
    pub access_expires_at: Option<Timestamp>,
    pub product: Option<&'a Product>,
    pub no_credit: bool,
    pub quota_blocked_until: Option<Timestamp>,
}

/// The decision, first failing rule wins: revoked, status, end of access, credit, quota.
///
/// Access that ends at `access_expires_at` is refused from that second on, even while the
/// stored status still says `active` (the nightly run writes `expired` later).
pub fn decide(f: &KeyFacts<'_>, now: Timestamp) -> Result<(), DenyReason> {
    if f.key.revoked_at.is_some_and(|t| t <= now) {
        return Err(DenyReason::Revoked);
    }
    match f.status {
        SubscriptionStatus::Suspended => return Err(DenyReason::Suspended),
        s if !s.grants_access() => return Err(DenyReason::Inactive),
        _ => {}
    }
    if f.access_expires_at.is_some_and(|t| t <= now) {
        return Err(DenyReason::Inactive);
    }
    if f.no_credit && f.product.is_some_and(|p| p.prepaid) {
        return Err(DenyReason::NoCredit);
    }
    if f.quota_blocked_until.is_some_and(|t| now < t) {
        return Err(DenyReason::QuotaExceeded);
    }
    Ok(())
}

/// The answer of `GET /entitlements/{key}` and the authorizer's context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entitlement {
    pub allow: bool,
    /// `ok` or a [`DenyReason`].
    pub reason: &'static str,
    /// The HTTP status the gateway should answer the API call with (200 when allowed).
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<SubscriptionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<ConsumerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<ProductId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_limit: Option<u64>,
}

impl Entitlement {
    pub fn unknown_key() -> Self {
        Self::denied(DenyReason::UnknownKey, None, None)
    }

    fn denied(reason: DenyReason, key: Option<&ApiKey>, product: Option<&Product>) -> Self {
        let mut e = Self::of(key, product);
        e.allow = false;
        e.reason = reason.as_str();
        e.status = reason.http_status();
        e
    }

    fn of(key: Option<&ApiKey>, product: Option<&Product>) -> Self {
        Self {
            allow: true,
            reason: "ok",
            status: 200,
            subscription_id: key.map(|k| k.subscription_id.clone()),
            consumer_id: key.map(|k| k.consumer_id.clone()),
            product_id: key.map(|k| k.product_id.clone()),
            rate_limit_per_minute: product.and_then(|p| p.rate_limit_per_minute),
            quota_limit: product.and_then(|p| p.quota.as_ref().map(|q| q.limit)),
        }
    }

    /// Decides and describes.
    pub fn from_facts(f: &KeyFacts<'_>, now: Timestamp) -> Self {
        match decide(f, now) {
            Ok(()) => Self::of(Some(f.key), f.product),
            Err(r) => Self::denied(r, Some(f.key), f.product),
        }
    }
}

/// Seed 003's `has_paid`: whether the consumer holds `product` with nothing left to pay — a
/// subscription that gives access now (active, or past due while Stripe retries). Seed 003 uses
/// it to show paid-for content, so a free product the consumer subscribed to counts (its price,
/// zero, is paid), a pending checkout or a suspended subscription does not, and one-time access
/// counts until it expires. A product not in the catalog is never paid.
pub fn has_paid(
    subscriptions: &[Subscription],
    catalog: &Catalog,
    product: &ProductId,
    now: Timestamp,
) -> bool {
    paid_subscription(subscriptions, catalog, std::slice::from_ref(product), now).is_some()
}

/// Seed 003's `if-has-paid plan="bronze,silver,gold"`: the consumer's subscription that gives
/// live access to ANY of `products` (in the order asked, then the subscriptions' order), or
/// `None`. Live access: a status that grants access and, for one-time access, not expired at
/// `now`. A product not in the catalog never matches.
pub fn paid_subscription<'a>(
    subscriptions: &'a [Subscription],
    catalog: &Catalog,
    products: &[ProductId],
    now: Timestamp,
) -> Option<&'a Subscription> {
    products
        .iter()
        .filter(|p| catalog.product(p.as_str()).is_some())
        .find_map(|p| {
            subscriptions.iter().find(|s| {
                &s.product_id == p
                    && s.status.grants_access()
                    && s.access_expires_at.is_none_or(|t| now < t)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use serde_json::json;

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
    }

    fn catalog() -> Catalog {
        serde_json::from_value(json!({
            "version": 1, "currency": "usd",
            "meters": [{"id": "api_calls", "name": "API calls"}],
            "products": [
                {"id": "free", "name": "Free", "quota": {"meter": "api_calls", "limit": 100}, "rate_limit_per_minute": 10},
                {"id": "payg", "name": "PAYG", "prepaid": true, "credit": {"packs": [1000]},
                 "prices": [{"type": "per_unit", "key": "calls", "meter": "api_calls", "unit_amount": 1}]},
                {"id": "basic", "name": "Basic", "interval": "month",
                 "prices": [{"type": "flat", "key": "base", "amount": 1495}]}
            ]
        }))
        .unwrap()
    }

    fn key(product: &str) -> ApiKey {
        ApiKey {
            hash: ApiKeyHash::of_key("tg_x"),
            prefix: "tg_x".into(),
            subscription_id: SubscriptionId::parse("sub_1").unwrap(),
            consumer_id: ConsumerId::parse("c1").unwrap(),
            product_id: ProductId::parse(product).unwrap(),
            created_at: now(),
            revoked_at: None,
        }
    }

    fn sub(product: &str, status: SubscriptionStatus) -> Subscription {
        Subscription {
            id: SubscriptionId::parse("sub_1").unwrap(),
            consumer_id: ConsumerId::parse("c1").unwrap(),
            product_id: ProductId::parse(product).unwrap(),
            name: "x".into(),
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
            created_at: now(),
            updated_at: now(),
            version: 0,
        }
    }

    #[test]
    fn reasons_map_to_402_429_403() {
        let c = catalog();
        let k = key("payg");
        let facts = |status, no_credit, quota: Option<Timestamp>| KeyFacts {
            key: &k,
            status,
            access_expires_at: None,
            product: c.product("payg"),
            no_credit,
            quota_blocked_until: quota,
        };
        use SubscriptionStatus::*;
        let e = Entitlement::from_facts(&facts(Active, false, None), now());
        assert!(e.allow);
        assert_eq!((e.reason, e.status), ("ok", 200));
        let e = Entitlement::from_facts(&facts(Active, true, None), now());
        assert_eq!((e.allow, e.reason, e.status), (false, "no_credit", 402));
        let later = now() + Duration::days(3);
        let e = Entitlement::from_facts(&facts(PastDue, false, Some(later)), now());
        assert_eq!((e.reason, e.status), ("quota_exceeded", 429));
        // A quota block from an earlier period has lapsed by itself.
        assert!(Entitlement::from_facts(&facts(Active, false, Some(now())), now()).allow);
        let e = Entitlement::from_facts(&facts(Suspended, true, None), now());
        assert_eq!((e.reason, e.status), ("suspended", 403));
        let e = Entitlement::from_facts(&facts(Canceled, false, None), now());
        assert_eq!((e.reason, e.status), ("inactive", 403));
        assert_eq!(Entitlement::unknown_key().status, 403);
        // no_credit only matters for prepaid products.
        let f = KeyFacts {
            product: c.product("free"),
            ..facts(Active, true, None)
        };
        let e = Entitlement::from_facts(&f, now());
        assert!(e.allow);
        assert_eq!(
            (e.rate_limit_per_minute, e.quota_limit),
            (Some(10), Some(100))
        );
        // One-time access ends to the second, whatever the stored status still says.
        let until = |t| KeyFacts {
            access_expires_at: Some(t),
            ..facts(Active, false, None)
        };
        assert!(Entitlement::from_facts(&until(now() + Duration::seconds(1)), now()).allow);
        let e = Entitlement::from_facts(&until(now()), now());
        assert_eq!((e.allow, e.reason, e.status), (false, "inactive", 403));
    }

    #[test]
    fn gate_writes_only_when_newer_and_different() {
        let g = KeyGate {
            no_credit: true,
            credit_version: Some(4),
            ..KeyGate::default()
        };
        assert!(!g.needs(&GateFact::Credit {
            no_credit: true,
            version: 5
        }));
        assert!(g.needs(&GateFact::Credit {
            no_credit: false,
            version: 5
        }));
        assert!(!g.needs(&GateFact::Credit {
            no_credit: false,
            version: 3
        }));
        assert!(KeyGate::default().needs(&GateFact::Credit {
            no_credit: false,
            version: 0
        }));
        let block = |w: i64, until: Option<i64>| GateFact::Quota {
            window_start: now() + chrono::Duration::days(w),
            blocked_until: until.map(|d| now() + chrono::Duration::days(d)),
        };
        assert!(g.needs(&block(0, Some(30))));
        assert!(!g.needs(&block(0, None)), "nothing to clear");
        let blocked = KeyGate {
            quota_blocked_until: Some(now() + chrono::Duration::days(30)),
            quota_window: Some(now()),
            ..KeyGate::default()
        };
        // Within one window the block only moves later; a newer window replaces it (a renewal
        // clears it, even one that ends earlier than the old block); an older one never does.
        assert!(!blocked.needs(&block(0, Some(29))));
        assert!(blocked.needs(&block(0, Some(31))));
        assert!(!blocked.needs(&block(0, None)));
        assert!(blocked.needs(&block(1, None)));
        assert!(blocked.needs(&block(1, Some(2))));
        assert!(!blocked.needs(&block(-30, None)));
    }

    #[test]
    fn has_paid_rules() {
        let c = catalog();
        let basic = ProductId::parse("basic").unwrap();
        let free = ProductId::parse("free").unwrap();
        assert!(has_paid(
            &[sub("basic", SubscriptionStatus::Active)],
            &c,
            &basic,
            now()
        ));
        assert!(has_paid(
            &[sub("basic", SubscriptionStatus::PastDue)],
            &c,
            &basic,
            now()
        ));
        assert!(!has_paid(
            &[sub("basic", SubscriptionStatus::Suspended)],
            &c,
            &basic,
            now()
        ));
        assert!(!has_paid(
            &[sub("basic", SubscriptionStatus::Pending)],
            &c,
            &basic,
            now()
        ));
        assert!(has_paid(
            &[sub("free", SubscriptionStatus::Active)],
            &c,
            &free,
            now()
        ));
        assert!(!has_paid(
            &[sub("free", SubscriptionStatus::Canceled)],
            &c,
            &free,
            now()
        ));
        assert!(!has_paid(
            &[sub("basic", SubscriptionStatus::Active)],
            &c,
            &free,
            now()
        ));
        assert!(!has_paid(&[], &c, &basic, now()));
        let mut expired = sub("basic", SubscriptionStatus::Active);
        expired.access_expires_at = Some(now());
        assert!(!has_paid(&[expired], &c, &basic, now()));
    }
}
