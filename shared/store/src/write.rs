//! [`Write`] → one DynamoDB item operation with its condition.
//!
//! A commit of several writes is one `TransactWriteItems`: an idempotency claim and its effect
//! succeed or fail together (OpenMeter #5118 cannot happen). A commit of one write is a plain
//! `PutItem` / `UpdateItem`, which costs half the write units of a transaction and has the
//! same all-or-nothing meaning for a single item.

use crate::keys::{self, IndexKey, Key};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use serde::Serialize;
use std::collections::HashMap;
use tollgate_domain::ports::{ClaimScope, Expect, StoreError, Write};
use tollgate_domain::time::Timestamp;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// DynamoDB's transaction limits.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub(crate) enum Action {
    Put(Item),
    Update(String),
}

/// One item operation, ready for either a transaction or a single call.
#[derive(Debug)]
pub(crate) struct Op {
    pub key: Key,
    pub action: Action,
    pub condition: Option<String>,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Op {
    fn new(key: Key, action: Action) -> Self {
        Op {
            key,
            action,
            condition: None,
            names: HashMap::new(),
            values: HashMap::new(),
        }
    }
    fn name(mut self, placeholder: &str, attr: &str) -> Self {
        self.names.insert(placeholder.into(), attr.into());
        self
    }
    fn value(mut self, placeholder: &str, v: AttributeValue) -> Self {
        self.values.insert(placeholder.into(), v);
        self
    }
    fn condition(mut self, c: impl Into<String>) -> Self {
        self.condition = Some(c.into());
        self
    }

    pub fn key_item(&self) -> Item {
        HashMap::from([
            (keys::PK.to_string(), s(&self.key.pk)),
            (keys::SK.to_string(), s(&self.key.sk)),
        ])
    }

    /// Rough size of what DynamoDB counts against the 4 MB transaction limit (attribute
    /// names plus values), so an oversized commit is refused before it is sent.
    pub fn approx_size(&self) -> usize {
        let item_size = match &self.action {
            Action::Put(item) => item.iter().map(|(k, v)| k.len() + av_size(v)).sum(),
            Action::Update(expr) => self.key.pk.len() + self.key.sk.len() + expr.len() + 4,
        };
        let values: usize = self.values.values().map(av_size).sum();
        item_size + values + self.condition.as_ref().map_or(0, String::len)
    }

    pub fn into_transact_item(self, table: &str) -> Result<TransactWriteItem, StoreError> {
        let key = self.key_item();
        let names = (!self.names.is_empty()).then_some(self.names);
        let values = (!self.values.is_empty()).then_some(self.values);
        let built = match self.action {
            Action::Put(item) => TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .set_condition_expression(self.condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
            ),
            Action::Update(expr) => TransactWriteItem::builder().update(
                Update::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .update_expression(expr)
                    .set_condition_expression(self.condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
            ),
        };
        Ok(built.build())
    }
}

fn av_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(x) | AttributeValue::N(x) => x.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + av_size(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + av_size(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(l) | AttributeValue::Ns(l) => l.iter().map(String::len).sum(),
        AttributeValue::Bs(l) => l.iter().map(|b| b.as_ref().len()).sum(),
        _ => 16,
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A domain value as item attributes, plus its keys and kind.
fn item_of<T: Serialize>(
    value: &T,
    key: &Key,
    kind: &str,
    indexes: &[(&str, &str, Option<IndexKey>)],
) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(value)
        .map_err(|e| StoreError::Invalid(format!("cannot marshal {kind}: {e}")))?;
    // `None` is stored as no attribute rather than NULL: update expressions such as
    // `if_not_exists(revoked_at, ...)` then see an unset field as absent, and items stay small.
    item.retain(|_, v| !matches!(v, AttributeValue::Null(true)));
    item.insert(keys::PK.into(), s(&key.pk));
    item.insert(keys::SK.into(), s(&key.sk));
    item.insert(keys::KIND.into(), s(kind));
    for (pk_attr, sk_attr, index_key) in indexes {
        if let Some(k) = index_key {
            item.insert((*pk_attr).into(), s(&k.pk));
            item.insert((*sk_attr).into(), s(&k.sk));
        }
    }
    Ok(item)
}

/// A whole-item put under an optimistic-concurrency expectation.
fn versioned_put(key: Key, mut item: Item, expect: Expect) -> Op {
    let stored = match expect {
        Expect::Absent => 0,
        Expect::Version(v) => v + 1,
    };
    item.insert(keys::VERSION.into(), n(stored));
    let op = Op::new(key, Action::Put(item)).name("#pk", keys::PK);
    match expect {
        Expect::Absent => op.condition("attribute_not_exists(#pk)"),
        Expect::Version(v) => op
            .name("#ver", keys::VERSION)
            .condition("attribute_exists(#pk) AND #ver = :expected")
            .value(":expected", n(v)),
    }
}

fn create_only(key: Key, item: Item) -> Op {
    Op::new(key, Action::Put(item))
        .name("#pk", keys::PK)
        .condition("attribute_not_exists(#pk)")
}

/// A claim: created, or taken over once the old one expired; `digest` (a batch's content)
/// lets a re-send with other content be told from a duplicate.
fn claim_op(
    scope: ClaimScope,
    id: &str,
    digest: Option<String>,
    expires_at: Timestamp,
    now: Timestamp,
) -> Op {
    let key = keys::claim(scope, id);
    let mut item = HashMap::from([
        (keys::PK.to_string(), s(&key.pk)),
        (keys::SK.to_string(), s(&key.sk)),
        (keys::KIND.to_string(), s("claim")),
        ("scope".to_string(), s(scope.as_str())),
        ("claim_id".to_string(), s(id)),
        ("claimed_at".to_string(), s(keys::sort_time(now))),
        (keys::EXPIRES_AT.to_string(), n(expires_at.timestamp())),
    ]);
    if let Some(d) = digest {
        item.insert("digest".to_string(), s(d));
    }
    Op::new(key, Action::Put(item))
        .name("#pk", keys::PK)
        .name("#exp", keys::EXPIRES_AT)
        .value(":now", n(now.timestamp()))
        .condition("attribute_not_exists(#pk) OR #exp < :now")
}

/// Maps one [`Write`]. `now` decides whether an existing claim has expired (TTL deletes
/// expired items lazily, up to days later, so an expired claim may still be there).
pub(crate) fn op_of(write: Write, now: Timestamp) -> Result<Op, StoreError> {
    Ok(match write {
        Write::Claim {
            scope,
            id,
            expires_at,
        } => claim_op(scope, &id, None, expires_at, now),
        Write::ClaimContent {
            scope,
            id,
            digest,
            expires_at,
        } => claim_op(scope, &id, Some(digest), expires_at, now),
        Write::AdvanceSourceMark {
            source,
            from,
            to,
            at,
        } => {
            let op = Op::new(
                keys::source_mark(&source),
                Action::Update("SET #kind = :kind, #mark = :to, #at = :at".into()),
            )
            .name("#kind", keys::KIND)
            .name("#mark", "mark")
            .name("#at", "updated_at")
            .value(":kind", s("usage_source"))
            .value(":to", n(to))
            .value(":at", s(keys::sort_time(at)));
            match from {
                None => op
                    .name("#pk", keys::PK)
                    .condition("attribute_not_exists(#pk)"),
                Some(f) => op.condition("#mark = :from").value(":from", n(f)),
            }
        }
        Write::PutConsumer { consumer, expect } => {
            let key = keys::consumer(&consumer.id);
            let by_stripe = consumer
                .stripe_customer_id
                .as_ref()
                .map(|c| keys::by_stripe_id(c, keys::STRIPE_CONSUMER));
            let item = item_of(
                &consumer,
                &key,
                "consumer",
                &[(keys::GSI2PK, keys::GSI2SK, by_stripe)],
            )?;
            versioned_put(key, item, expect)
        }
        Write::PutSubscription {
            subscription,
            expect,
        } => {
            let key = keys::subscription(&subscription.id);
            let indexes = [
                (
                    keys::GSI1PK,
                    keys::GSI1SK,
                    Some(keys::subscription_by_consumer(
                        &subscription.consumer_id,
                        subscription.created_at,
                        &subscription.id,
                    )),
                ),
                (
                    keys::GSI2PK,
                    keys::GSI2SK,
                    subscription
                        .stripe_subscription_id
                        .as_ref()
                        .map(|id| keys::by_stripe_id(id, keys::STRIPE_SUBSCRIPTION)),
                ),
                (
                    keys::GSI3PK,
                    keys::GSI3SK,
                    Some(keys::all_subscriptions(&subscription.id)),
                ),
                (
                    keys::GSI4PK,
                    keys::GSI4SK,
                    subscription
                        .access_expires_at
                        .filter(|_| !subscription.status.is_final())
                        .map(|at| keys::access_expiry(at, &subscription.id)),
                ),
            ];
            let item = item_of(&subscription, &key, "subscription", &indexes)?;
            versioned_put(key, item, expect)
        }
        Write::PutApiKey(api_key) => {
            let key = keys::api_key(&api_key.hash);
            let by_sub = keys::api_key_by_subscription(
                &api_key.subscription_id,
                api_key.created_at,
                &api_key.hash,
            );
            let item = item_of(
                &api_key,
                &key,
                "api_key",
                &[(keys::GSI1PK, keys::GSI1SK, Some(by_sub))],
            )?;
            create_only(key, item)
        }
        Write::RevokeApiKey { hash, at } => {
            // The first revocation time stays: a retried revoke changes nothing.
            Op::new(
                keys::api_key(&hash),
                Action::Update("SET #rev = if_not_exists(#rev, :at)".into()),
            )
            .name("#pk", keys::PK)
            .name("#rev", "revoked_at")
            .value(":at", s(keys::sort_time(at)))
            .condition("attribute_exists(#pk)")
        }
        Write::AddUsage { key, quantity } => {
            let by_day = keys::usage_day_key(&key);
            // ADD is atomic on the server: concurrent batches for one bucket both count.
            Op::new(
                keys::usage_bucket(&key),
                Action::Update(
                    "SET #kind = :kind, #sub = :sub, #meter = :meter, #hour = :hour, \
                     #g4pk = :g4pk, #g4sk = :g4sk ADD #q :q"
                        .into(),
                ),
            )
            // The billing run's listing (GSI4, keys only: a bucket's later ADDs do not
            // rewrite the index entry).
            .name("#g4pk", keys::GSI4PK)
            .name("#g4sk", keys::GSI4SK)
            .value(":g4pk", s(by_day.pk))
            .value(":g4sk", s(by_day.sk))
            .name("#kind", keys::KIND)
            .name("#sub", "subscription_id")
            .name("#meter", "meter")
            .name("#hour", "hour")
            .name("#q", "quantity")
            .value(":kind", s("usage_bucket"))
            .value(":sub", s(key.subscription_id.as_str()))
            .value(":meter", s(key.meter.as_str()))
            .value(":hour", s(keys::sort_time(key.hour)))
            .value(":q", n(quantity))
        }
        Write::PutLedgerEntry { entry, expect } => {
            let key =
                keys::ledger_entry(&entry.subscription_id, &entry.meter, entry.from, entry.seq);
            let item = item_of(&entry, &key, "ledger_entry", &[])?;
            versioned_put(key, item, expect)
        }
        Write::AdjustCredit {
            consumer_id,
            delta,
            floor,
            at,
        } => {
            let op = Op::new(
                keys::credit_balance(&consumer_id),
                // `version` moves too, so a writer of the whole account (`PutCreditAccount`,
                // under its version) re-reads instead of overwriting this change.
                Action::Update(
                    "SET #kind = :kind, #cid = :cid, #upd = :at ADD #bal :delta, #ver :one".into(),
                ),
            )
            .name("#ver", keys::VERSION)
            .value(":one", n(1))
            .name("#kind", keys::KIND)
            .name("#cid", "consumer_id")
            .name("#upd", "updated_at")
            .name("#bal", "balance")
            .value(":kind", s("credit_balance"))
            .value(":cid", s(consumer_id.as_str()))
            .value(":at", s(keys::sort_time(at)))
            .value(":delta", n(delta));
            match floor {
                // The check and the ADD are one server-side step, so two concurrent draw-downs
                // cannot both pass a check that only one of them fits.
                Some(floor) if delta < 0 => {
                    let min = floor.checked_sub(delta).ok_or_else(|| {
                        StoreError::Invalid(format!("credit floor {floor} - {delta} overflows"))
                    })?;
                    let op = op.value(":min", n(min));
                    if 0 >= min {
                        op.condition("attribute_not_exists(#bal) OR #bal >= :min")
                    } else {
                        op.condition("#bal >= :min")
                    }
                }
                _ => op,
            }
        }
        Write::PutCreditMovement(m) => {
            let key = keys::credit_movement(&m.consumer_id, m.reason, &m.id);
            let item = item_of(&m, &key, "credit_movement", &[])?;
            create_only(key, item)
        }
        w @ (Write::PutCreditAccount { .. } | Write::SetKeyGate { .. }) => {
            crate::entitlement::op_of(w)?
        }
    })
}

/// Maps and checks a whole commit against the transaction limits and the one-write-per-item
/// rule, before anything is sent.
pub(crate) fn plan(writes: Vec<Write>, now: Timestamp) -> Result<Vec<Op>, StoreError> {
    if writes.len() > MAX_TRANSACTION_ITEMS {
        return Err(StoreError::TooLarge(format!(
            "{} writes in one commit; a DynamoDB transaction holds at most {MAX_TRANSACTION_ITEMS}",
            writes.len()
        )));
    }
    let ops = writes
        .into_iter()
        .map(|w| op_of(w, now))
        .collect::<Result<Vec<_>, _>>()?;
    let size: usize = ops.iter().map(Op::approx_size).sum();
    if size > MAX_TRANSACTION_BYTES {
        return Err(StoreError::TooLarge(format!(
            "about {size} bytes in one commit; a DynamoDB transaction holds at most 4 MB"
        )));
    }
    let mut seen: HashMap<&Key, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(first) = seen.insert(&op.key, i) {
            return Err(StoreError::Invalid(format!(
                "writes {first} and {i} both touch item ({}, {}); a transaction may touch \
                 each item once, so merge them first",
                op.key.pk, op.key.sk
            )));
        }
    }
    Ok(ops)
}
