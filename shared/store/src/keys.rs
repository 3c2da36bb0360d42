//! The DynamoDB key layout, in one place. `docs/dynamodb.md` lists every access pattern with
//! the key or index it uses; the table itself is `TollgateTable` in `template.yaml`.
//!
//! Ids cannot contain `#` (see `tollgate_domain::ids::check_id`), so `#` separates key parts
//! unambiguously. Timestamps in sort keys are RFC 3339 with a fixed width (`Z`, whole seconds)
//! so that string order is time order.

use tollgate_domain::ids::{ApiKeyHash, ConsumerId, MeterId, StripeId, SubscriptionId};
use tollgate_domain::ports::{ClaimScope, CreditReason, UsageBucketKey};
use tollgate_domain::time::Timestamp;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const GSI1: &str = "gsi1";
pub const GSI1PK: &str = "gsi1pk";
pub const GSI1SK: &str = "gsi1sk";
pub const GSI2: &str = "gsi2";
pub const GSI2PK: &str = "gsi2pk";
pub const GSI2SK: &str = "gsi2sk";
pub const GSI3: &str = "gsi3";
pub const GSI3PK: &str = "gsi3pk";
pub const GSI3SK: &str = "gsi3sk";
pub const GSI4: &str = "gsi4";
pub const GSI4PK: &str = "gsi4pk";
pub const GSI4SK: &str = "gsi4sk";
/// The TTL attribute (epoch seconds), as `TimeToLiveSpecification` names it.
pub const EXPIRES_AT: &str = "expires_at";
pub const VERSION: &str = "version";
/// Which entity an item is; for people reading the table, not used in key conditions.
pub const KIND: &str = "kind";

/// A primary key (partition key, sort key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

/// A secondary-index key written on an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKey {
    pub pk: String,
    pub sk: String,
}

pub fn sort_time(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn consumer_pk(id: &ConsumerId) -> String {
    format!("CONSUMER#{id}")
}

pub fn consumer(id: &ConsumerId) -> Key {
    Key {
        pk: consumer_pk(id),
        sk: "CONSUMER".into(),
    }
}

pub fn subscription_pk(id: &SubscriptionId) -> String {
    format!("SUB#{id}")
}

pub fn subscription(id: &SubscriptionId) -> Key {
    Key {
        pk: subscription_pk(id),
        sk: "SUB".into(),
    }
}

/// GSI1: a consumer's subscriptions, oldest first.
pub fn subscription_by_consumer(
    consumer: &ConsumerId,
    created_at: Timestamp,
    id: &SubscriptionId,
) -> IndexKey {
    IndexKey {
        pk: consumer_pk(consumer),
        sk: format!("SUB#{}#{id}", sort_time(created_at)),
    }
}

pub const SUB_BY_CONSUMER_PREFIX: &str = "SUB#";

/// GSI2: look-up by a Stripe id (`cus_...`, `sub_...`); the sort key says which entity.
pub fn by_stripe_id(stripe_id: &StripeId, entity: &str) -> IndexKey {
    IndexKey {
        pk: format!("STRIPE#{stripe_id}"),
        sk: entity.into(),
    }
}

pub const STRIPE_CONSUMER: &str = "CONSUMER";
pub const STRIPE_SUBSCRIPTION: &str = "SUB";

/// GSI3: every subscription (sparse: only subscription items carry `gsi3pk`).
pub fn all_subscriptions(id: &SubscriptionId) -> IndexKey {
    IndexKey {
        pk: ALL_SUBSCRIPTIONS.into(),
        sk: id.to_string(),
    }
}

pub const ALL_SUBSCRIPTIONS: &str = "SUBSCRIPTIONS";

/// GSI4 (keys only): usage buckets by UTC day, so the billing run lists the (subscription,
/// meter) pairs that have usage without reading every subscription. Sharded by subscription:
/// every pair opens a bucket in the first minutes of each hour, and one index partition takes
/// ~1,000 writes/s.
pub const USAGE_DAY_SHARDS: u32 = 16;

pub fn usage_day(day: chrono::NaiveDate, shard: u32) -> String {
    format!("USAGEDAY#{}#{shard:02}", day.format("%Y-%m-%d"))
}

pub fn usage_day_key(key: &UsageBucketKey) -> IndexKey {
    IndexKey {
        pk: usage_day(key.hour.date_naive(), usage_day_shard(&key.subscription_id)),
        sk: format!("{}#{}", key.subscription_id, key.meter),
    }
}

/// A stable shard (FNV-1a of the id: the std hasher is not stable across releases).
pub fn usage_day_shard(subscription: &SubscriptionId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in subscription.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % USAGE_DAY_SHARDS
}

/// GSI4 (sparse): subscriptions whose one-time access ends, by end time; written only while
/// the subscription is not final, so expired ones drop out of the index.
pub const ACCESS_EXPIRY: &str = "ACCESSEXPIRY";

pub fn access_expiry(at: Timestamp, id: &SubscriptionId) -> IndexKey {
    IndexKey {
        pk: ACCESS_EXPIRY.into(),
        sk: format!("{}#{id}", sort_time(at)),
    }
}

pub fn api_key(hash: &ApiKeyHash) -> Key {
    Key {
        pk: format!("KEY#{hash}"),
        sk: "KEY".into(),
    }
}

/// GSI1: a subscription's keys, oldest first.
pub fn api_key_by_subscription(
    subscription: &SubscriptionId,
    created_at: Timestamp,
    hash: &ApiKeyHash,
) -> IndexKey {
    IndexKey {
        pk: subscription_pk(subscription),
        sk: format!("KEY#{}#{hash}", sort_time(created_at)),
    }
}

pub const KEY_BY_SUBSCRIPTION_PREFIX: &str = "KEY#";

/// Claim ids come from outside (Stripe event ids, the gateway's batch ids) and may contain
/// anything; they are the last key part, so a `#` inside them cannot be misread.
pub fn claim(scope: ClaimScope, id: &str) -> Key {
    Key {
        pk: format!("CLAIM#{}#{id}", scope.as_str()),
        sk: "CLAIM".into(),
    }
}

/// A usage source's high-water mark (per-record exactly-once, `docs/usage.md`). The source
/// comes from the gateway; it is the last key part, like a claim id.
pub fn source_mark(source: &str) -> Key {
    Key {
        pk: format!("USAGESOURCE#{source}"),
        sk: "MARK".into(),
    }
}

/// Usage buckets live in their subscription's item collection: one query reads a range.
pub fn usage_bucket(key: &UsageBucketKey) -> Key {
    Key {
        pk: subscription_pk(&key.subscription_id),
        sk: usage_sk(&key.meter, key.hour),
    }
}

pub fn usage_sk(meter: &MeterId, hour: Timestamp) -> String {
    format!("USAGE#{meter}#{}", sort_time(hour))
}

/// A billing-ledger entry: report `seq` of the slice starting at `from` (see
/// `tollgate_domain::billing`). Zero-padded `seq` keeps entries in (from, seq) order.
pub fn ledger_entry(
    subscription: &SubscriptionId,
    meter: &MeterId,
    from: Timestamp,
    seq: u32,
) -> Key {
    Key {
        pk: subscription_pk(subscription),
        sk: ledger_sk(meter, from, seq),
    }
}

pub fn ledger_sk(meter: &MeterId, from: Timestamp, seq: u32) -> String {
    format!("{}{}#{seq:06}", ledger_prefix(meter), sort_time(from))
}

pub fn ledger_prefix(meter: &MeterId) -> String {
    format!("LEDGER#{meter}#")
}

/// Above every sort-time suffix (`~` sorts after digits): the open end of a range.
pub const HIGH: &str = "~";

pub fn credit_balance(consumer: &ConsumerId) -> Key {
    Key {
        pk: consumer_pk(consumer),
        sk: "CREDIT".into(),
    }
}

pub fn credit_movement(consumer: &ConsumerId, reason: CreditReason, id: &str) -> Key {
    Key {
        pk: consumer_pk(consumer),
        sk: format!("{}{}#{id}", CREDIT_MOVEMENT_PREFIX, reason.as_str()),
    }
}

pub const CREDIT_MOVEMENT_PREFIX: &str = "CREDITMOVE#";

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sort_times_order_like_times() {
        let a = chrono::Utc.with_ymd_and_hms(2026, 9, 30, 23, 0, 0).unwrap();
        let b = chrono::Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
        assert_eq!(sort_time(a), "2026-09-30T23:00:00Z");
        assert!(sort_time(a) < sort_time(b));
    }

    #[test]
    fn claim_ids_with_separators_stay_distinct() {
        let a = claim(ClaimScope::UsageBatch, "x#y");
        let b = claim(ClaimScope::StripeEvent, "x#y");
        assert_ne!(a, b);
        assert_eq!(a.pk, "CLAIM#usage_batch#x#y");
    }
}
