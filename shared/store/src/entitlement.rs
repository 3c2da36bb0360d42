//! Items of prepaid credit accounts and API-key gates (`tollgate_domain::credit`,
//! `tollgate_domain::entitlement`).
//!
//! - The credit account is the item `credit_balance` names (`CONSUMER#id` / `CREDIT`), written
//!   whole under its `version`, so `Store::get_credit_balance` reads the same balance.
//! - A gate fact is a few `gate_*` attributes on the key item, each set only when the key does
//!   not hold a newer copy of that fact already.

use crate::keys;
use crate::write::{Action, Item, Op, n, s};
use crate::{DynamoStore, Query, SkCond, decode};
use async_trait::async_trait;
use std::collections::HashMap;
use tollgate_domain::credit::CreditAccount;
use tollgate_domain::entitlement::{GateFact, KeyGate};
use tollgate_domain::ids::{ApiKeyHash, ConsumerId, SubscriptionId};
use tollgate_domain::ports::{ApiKey, EntitlementReads, Expect, StoreError, StoreResult, Write};

/// Maps the two writes this module owns.
pub(crate) fn op_of(write: Write) -> Result<Op, StoreError> {
    match write {
        Write::PutCreditAccount { account, expect } => {
            let key = keys::credit_balance(&account.consumer_id);
            let mut item: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(&account)
                .map_err(|e| StoreError::Invalid(format!("cannot marshal credit account: {e}")))?;
            item.insert(keys::PK.into(), s(&key.pk));
            item.insert(keys::SK.into(), s(&key.sk));
            item.insert(keys::KIND.into(), s("credit_balance"));
            let stored = match expect {
                Expect::Absent => 0,
                Expect::Version(v) => v + 1,
            };
            item.insert(keys::VERSION.into(), n(stored));
            let mut names = HashMap::from([("#pk".to_string(), keys::PK.to_string())]);
            let mut values = HashMap::new();
            let condition = match expect {
                Expect::Absent => "attribute_not_exists(#pk)".to_string(),
                Expect::Version(v) => {
                    names.insert("#ver".into(), keys::VERSION.into());
                    values.insert(":expected".into(), n(v));
                    "attribute_exists(#pk) AND #ver = :expected".to_string()
                }
            };
            Ok(Op {
                key,
                action: Action::Put(item),
                condition: Some(condition),
                names,
                values,
            })
        }
        Write::SetKeyGate { hash, fact } => {
            let mut names = HashMap::from([("#pk".to_string(), keys::PK.to_string())]);
            let mut values = HashMap::new();
            let (expr, condition) = match fact {
                GateFact::Status {
                    status,
                    access_expires_at,
                    version,
                } => {
                    names.insert("#st".into(), "gate_status".into());
                    names.insert("#sv".into(), "gate_status_version".into());
                    names.insert("#ae".into(), "gate_access_expires_at".into());
                    values.insert(":st".into(), s(status.as_str()));
                    values.insert(":v".into(), n(version));
                    let expr = match access_expires_at {
                        Some(t) => {
                            values.insert(":ae".into(), s(keys::sort_time(t)));
                            "SET #st = :st, #sv = :v, #ae = :ae"
                        }
                        None => "SET #st = :st, #sv = :v REMOVE #ae",
                    };
                    (
                        expr,
                        "attribute_exists(#pk) AND (attribute_not_exists(#sv) OR #sv < :v)",
                    )
                }
                GateFact::Credit { no_credit, version } => {
                    names.insert("#nc".into(), "gate_no_credit".into());
                    names.insert("#cv".into(), "gate_credit_version".into());
                    values.insert(
                        ":nc".into(),
                        aws_sdk_dynamodb::types::AttributeValue::Bool(no_credit),
                    );
                    values.insert(":v".into(), n(version));
                    (
                        "SET #nc = :nc, #cv = :v",
                        "attribute_exists(#pk) AND (attribute_not_exists(#cv) OR #cv < :v)",
                    )
                }
                GateFact::Quota {
                    window_start,
                    blocked_until,
                } => {
                    names.insert("#qb".into(), "gate_quota_blocked_until".into());
                    names.insert("#qw".into(), "gate_quota_window".into());
                    values.insert(":w".into(), s(keys::sort_time(window_start)));
                    // Fixed-width RFC 3339 strings compare like the instants they name. A
                    // newer window replaces the gate; within one window a block only moves
                    // later (`KeyGate::needs`).
                    match blocked_until {
                        Some(until) => {
                            values.insert(":t".into(), s(keys::sort_time(until)));
                            (
                                "SET #qb = :t, #qw = :w",
                                "attribute_exists(#pk) AND (attribute_not_exists(#qw) OR #qw < :w \
                                 OR (#qw = :w AND (attribute_not_exists(#qb) OR #qb < :t)))",
                            )
                        }
                        None => (
                            "SET #qw = :w REMOVE #qb",
                            "attribute_exists(#pk) AND (attribute_not_exists(#qw) OR #qw < :w)",
                        ),
                    }
                }
            };
            Ok(Op {
                key: keys::api_key(&hash),
                action: Action::Update(expr.into()),
                condition: Some(condition.into()),
                names,
                values,
            })
        }
        other => Err(StoreError::Invalid(format!(
            "not a credit or gate write: {other:?}"
        ))),
    }
}

fn key_and_gate(item: Item) -> StoreResult<(ApiKey, KeyGate)> {
    let gate: KeyGate = decode(item.clone())?;
    let key: ApiKey = decode(item)?;
    Ok((key, gate))
}

#[async_trait]
impl EntitlementReads for DynamoStore {
    async fn get_credit_account(
        &self,
        consumer: &ConsumerId,
    ) -> StoreResult<Option<CreditAccount>> {
        self.get(keys::credit_balance(consumer)).await
    }

    async fn get_key_entitlement(
        &self,
        hash: &ApiKeyHash,
    ) -> StoreResult<Option<(ApiKey, KeyGate)>> {
        self.get_item(keys::api_key(hash))
            .await?
            .map(key_and_gate)
            .transpose()
    }

    async fn list_key_entitlements(
        &self,
        subscription: &SubscriptionId,
    ) -> StoreResult<Vec<(ApiKey, KeyGate)>> {
        let items = self
            .query_all(Query::index(
                keys::GSI1,
                keys::GSI1PK,
                keys::GSI1SK,
                keys::subscription_pk(subscription),
                SkCond::BeginsWith(keys::KEY_BY_SUBSCRIPTION_PREFIX.into()),
            ))
            .await?;
        items.into_iter().map(key_and_gate).collect()
    }
}
