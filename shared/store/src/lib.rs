//! tollgate-store: the DynamoDB adapter of [`tollgate_domain::ports::Store`].
//!
//! One table (`TollgateTable` in `template.yaml`); its key layout is [`keys`], its access
//! patterns are listed in `docs/dynamodb.md`. Marshalling is serde_dynamo: the item is the
//! domain value's own serde form plus the key attributes.
//!
//! The endpoint comes from the standard AWS environment (`AWS_ENDPOINT_URL_DYNAMODB` in tests
//! and the local stack); nothing here knows whether it talks to AWS or DynamoDB Local.

mod entitlement;
mod error;
pub mod keys;
mod write;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_domain::ids::{ApiKeyHash, ConsumerId, MeterId, StripeId, SubscriptionId};
use tollgate_domain::ports::{
    ApiKey, ClaimScope, Consumer, CreditBalance, CreditMovement, LedgerEntry, Page, Store,
    StoreError, StoreResult, UsageBucket, UsageBucketKey, Write,
};
use tollgate_domain::subscription::Subscription;
use tollgate_domain::time::{Clock, SystemClock, Timestamp};
use write::{Action, Item, s};

pub use write::{MAX_TRANSACTION_BYTES, MAX_TRANSACTION_ITEMS};

/// The environment variable naming the table (the template passes `!Ref TollgateTable`).
pub const TABLE_NAME_ENV: &str = "TABLE_NAME";

/// The DynamoDB store. Cheap to clone; build it once per process (Lambda init) and share it.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// "Now" for claim expiry: a claim is live while its `expires_at` (set by the caller from
    /// the same clock the caller runs on) is not past. The system clock in AWS; the local
    /// stack, whose clock is the Stripe emulator's and may start in the past, passes that one,
    /// or every claim it writes would look expired at once and re-sends would count again.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// The item a Stripe id points at, through the Stripe-id index (gsi2).
    async fn find_by_stripe_id<T: DeserializeOwned>(
        &self,
        stripe_id: &StripeId,
        kind: &str,
    ) -> StoreResult<Option<T>> {
        let k = keys::by_stripe_id(stripe_id, kind);
        let items = self
            .query_all(Query::index(
                keys::GSI2,
                keys::GSI2PK,
                keys::GSI2SK,
                k.pk,
                SkCond::BeginsWith(k.sk),
            ))
            .await?;
        items.into_iter().next().map(decode).transpose()
    }

    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table: table_name.into(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same store judging claim expiry by `clock` (see the field's comment).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn from_conf(sdk_config: &aws_config::SdkConfig, table_name: impl Into<String>) -> Self {
        Self::new(Client::new(sdk_config), table_name)
    }

    /// Builds the client from the standard AWS environment (region, credentials,
    /// `AWS_ENDPOINT_URL_DYNAMODB`) and the table from [`TABLE_NAME_ENV`]. Makes no network
    /// call, so it is cheap at Lambda init.
    pub async fn from_env() -> Result<Self, StoreError> {
        let table = std::env::var(TABLE_NAME_ENV)
            .map_err(|_| StoreError::Invalid(format!("{TABLE_NAME_ENV} is not set")))?;
        // One HTTP stack (rustls + ring) instead of the SDK's default pair: half the build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .load()
            .await;
        Ok(Self::from_conf(&conf, table))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    async fn get_item(&self, key: keys::Key) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(key.pk))
            .key(keys::SK, s(key.sk))
            // Strongly consistent: a writer that read a version must see the latest one.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::classify(e, 0))?;
        Ok(out.item)
    }

    async fn get<T: DeserializeOwned>(&self, key: keys::Key) -> StoreResult<Option<T>> {
        self.get_item(key).await?.map(decode).transpose()
    }

    /// Runs a query to the end, following `LastEvaluatedKey`.
    async fn query_all(&self, q: Query<'_>) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self.query_page(&q, start.take(), None).await?;
            items.extend(page.0);
            match page.1 {
                Some(k) => start = Some(k),
                None => return Ok(items),
            }
        }
    }

    async fn query_page(
        &self,
        q: &Query<'_>,
        start: Option<Item>,
        limit: Option<i32>,
    ) -> StoreResult<(Vec<Item>, Option<Item>)> {
        let mut names = HashMap::from([("#pk".to_string(), q.pk_attr.to_string())]);
        let mut values = HashMap::from([(":pk".to_string(), s(&q.pk))]);
        let mut cond = "#pk = :pk".to_string();
        match &q.sk {
            SkCond::Any => {}
            SkCond::BeginsWith(p) => {
                names.insert("#sk".into(), q.sk_attr.into());
                values.insert(":p".into(), s(p));
                cond.push_str(" AND begins_with(#sk, :p)");
            }
            SkCond::Between(a, b) => {
                names.insert("#sk".into(), q.sk_attr.into());
                values.insert(":a".into(), s(a));
                values.insert(":b".into(), s(b));
                cond.push_str(" AND #sk BETWEEN :a AND :b");
            }
        }
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(q.index.map(str::to_string))
            .key_condition_expression(cond)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            // Indexes are eventually consistent only; the base table reads its latest.
            .consistent_read(q.index.is_none())
            .set_exclusive_start_key(start)
            .set_limit(limit)
            .send()
            .await
            .map_err(|e| error::classify(e, 0))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// `BatchGetItem` in chunks of 100 keys (its limit), retrying `UnprocessedKeys` (what
    /// DynamoDB left out under throttling or the 16 MB answer limit) with exponential backoff.
    async fn batch_get(&self, keys: Vec<Item>) -> StoreResult<Vec<Item>> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0u32;
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| error::classify(e, 0))?;
                if let Some(mut responses) = out.responses {
                    found.extend(responses.remove(&self.table).unwrap_or_default());
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt > BATCH_RETRIES {
                        return Err(StoreError::Unavailable(format!(
                            "{} keys still unprocessed after {BATCH_RETRIES} retries",
                            pending.len()
                        )));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Ok(found)
    }

    async fn single(&self, op: write::Op) -> StoreResult<()> {
        let key = op.key_item();
        let names = (!op.names.is_empty()).then_some(op.names);
        let values = (!op.values.is_empty()).then_some(op.values);
        match op.action {
            Action::Put(item) => self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .set_condition_expression(op.condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| error::classify(e, 0)),
            Action::Update(expr) => self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression(expr)
                .set_condition_expression(op.condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| error::classify(e, 0)),
        }
    }
}

/// `BatchGetItem` takes at most 100 keys per request.
const BATCH_GET_MAX: usize = 100;
const BATCH_RETRIES: u32 = 8;

/// Exponential backoff with full jitter (AWS's advice for unprocessed batch items), capped.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 50u64.saturating_mul(1 << attempt.min(6)).min(2_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(u64::from(nanos) % cap_ms + 1)
}

enum SkCond {
    Any,
    BeginsWith(String),
    Between(String, String),
}

struct Query<'a> {
    index: Option<&'a str>,
    pk_attr: &'a str,
    sk_attr: &'a str,
    pk: String,
    sk: SkCond,
}

impl<'a> Query<'a> {
    fn table(pk: String, sk: SkCond) -> Self {
        Query {
            index: None,
            pk_attr: keys::PK,
            sk_attr: keys::SK,
            pk,
            sk,
        }
    }
    fn index(index: &'a str, pk_attr: &'a str, sk_attr: &'a str, pk: String, sk: SkCond) -> Self {
        Query {
            index: Some(index),
            pk_attr,
            sk_attr,
            pk,
            sk,
        }
    }
}

fn decode<T: DeserializeOwned>(item: Item) -> StoreResult<T> {
    let what = item
        .get(keys::PK)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|e| StoreError::Corrupt(format!("item {what}: {e}")))
}

fn decode_all<T: DeserializeOwned>(items: Vec<Item>) -> StoreResult<Vec<T>> {
    items.into_iter().map(decode).collect()
}

/// The stored shape of a usage bucket (written attribute by attribute by `ADD`).
#[derive(Deserialize)]
struct BucketItem {
    subscription_id: SubscriptionId,
    meter: MeterId,
    hour: Timestamp,
    quantity: u64,
}

#[derive(Deserialize)]
struct ClaimItem {
    expires_at: i64,
    #[serde(default)]
    digest: Option<String>,
}

#[derive(Deserialize)]
struct SourceMarkItem {
    mark: u64,
}

/// Page cursors are the `LastEvaluatedKey` as JSON: all key attributes here are strings.
fn encode_cursor(key: Item) -> StoreResult<String> {
    let map: HashMap<String, String> = key
        .into_iter()
        .map(|(k, v)| match v {
            AttributeValue::S(s) => Ok((k, s)),
            other => Err(StoreError::Corrupt(format!(
                "non-string key attribute {k}: {other:?}"
            ))),
        })
        .collect::<Result<_, _>>()?;
    serde_json::to_string(&map).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_cursor(cursor: &str) -> StoreResult<Item> {
    let map: HashMap<String, String> = serde_json::from_str(cursor)
        .map_err(|e| StoreError::Invalid(format!("bad page cursor: {e}")))?;
    Ok(map.into_iter().map(|(k, v)| (k, s(v))).collect())
}

#[async_trait]
impl Store for DynamoStore {
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut ops = write::plan(writes, self.clock.now())?;
        if ops.len() == 1 {
            let op = ops.pop().expect("one op");
            return self.single(op).await;
        }
        let items = ops
            .into_iter()
            .map(|op| op.into_transact_item(&self.table))
            .collect::<Result<Vec<_>, _>>()?;
        // The SDK fills ClientRequestToken, so its own retry of a transaction that did commit
        // (response lost) is answered as a success instead of a failed condition.
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(error::classify_transaction)
    }

    async fn is_claimed(&self, scope: ClaimScope, id: &str) -> StoreResult<bool> {
        let claim: Option<ClaimItem> = self.get(keys::claim(scope, id)).await?;
        Ok(claim.is_some_and(|c| c.expires_at >= self.clock.now().timestamp()))
    }

    async fn claim_digest(
        &self,
        scope: ClaimScope,
        id: &str,
    ) -> StoreResult<Option<Option<String>>> {
        let claim: Option<ClaimItem> = self.get(keys::claim(scope, id)).await?;
        Ok(claim
            .filter(|c| c.expires_at >= self.clock.now().timestamp())
            .map(|c| c.digest))
    }

    async fn source_mark(&self, source: &str) -> StoreResult<Option<u64>> {
        let item: Option<SourceMarkItem> = self.get(keys::source_mark(source)).await?;
        Ok(item.map(|m| m.mark))
    }

    async fn get_consumer(&self, id: &ConsumerId) -> StoreResult<Option<Consumer>> {
        self.get(keys::consumer(id)).await
    }

    async fn find_consumer_by_stripe_customer(
        &self,
        stripe_customer_id: &StripeId,
    ) -> StoreResult<Option<Consumer>> {
        self.find_by_stripe_id(stripe_customer_id, keys::STRIPE_CONSUMER)
            .await
    }

    async fn get_subscription(&self, id: &SubscriptionId) -> StoreResult<Option<Subscription>> {
        self.get(keys::subscription(id)).await
    }

    async fn get_subscriptions(&self, ids: &[SubscriptionId]) -> StoreResult<Vec<Subscription>> {
        // BatchGetItem, 100 keys a call: the billing run reads thousands at a time.
        let keys = ids
            .iter()
            .map(|id| {
                let k = keys::subscription(id);
                HashMap::from([
                    (keys::PK.to_string(), s(k.pk)),
                    (keys::SK.to_string(), s(k.sk)),
                ])
            })
            .collect();
        decode_all(self.batch_get(keys).await?)
    }

    async fn find_subscription_by_stripe_id(
        &self,
        stripe_subscription_id: &StripeId,
    ) -> StoreResult<Option<Subscription>> {
        self.find_by_stripe_id(stripe_subscription_id, keys::STRIPE_SUBSCRIPTION)
            .await
    }

    async fn list_subscriptions(&self, consumer: &ConsumerId) -> StoreResult<Vec<Subscription>> {
        let items = self
            .query_all(Query::index(
                keys::GSI1,
                keys::GSI1PK,
                keys::GSI1SK,
                keys::consumer_pk(consumer),
                SkCond::BeginsWith(keys::SUB_BY_CONSUMER_PREFIX.into()),
            ))
            .await?;
        decode_all(items)
    }

    async fn list_all_subscriptions(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Subscription>> {
        let start = cursor.map(decode_cursor).transpose()?;
        let q = Query::index(
            keys::GSI3,
            keys::GSI3PK,
            keys::GSI3SK,
            keys::ALL_SUBSCRIPTIONS.into(),
            SkCond::Any,
        );
        let limit = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let (items, last) = self.query_page(&q, start, Some(limit)).await?;
        Ok(Page {
            items: decode_all(items)?,
            next: last.map(encode_cursor).transpose()?,
        })
    }

    async fn get_api_key(&self, hash: &ApiKeyHash) -> StoreResult<Option<ApiKey>> {
        self.get(keys::api_key(hash)).await
    }

    async fn list_api_keys(&self, subscription: &SubscriptionId) -> StoreResult<Vec<ApiKey>> {
        let items = self
            .query_all(Query::index(
                keys::GSI1,
                keys::GSI1PK,
                keys::GSI1SK,
                keys::subscription_pk(subscription),
                SkCond::BeginsWith(keys::KEY_BY_SUBSCRIPTION_PREFIX.into()),
            ))
            .await?;
        decode_all(items)
    }

    async fn usage_buckets(
        &self,
        subscription: &SubscriptionId,
        meter: &MeterId,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<UsageBucket>> {
        if from >= to {
            return Ok(Vec::new());
        }
        // BETWEEN is inclusive at both ends; the range is half-open, so `to` is dropped below.
        let items = self
            .query_all(Query::table(
                keys::subscription_pk(subscription),
                SkCond::Between(keys::usage_sk(meter, from), keys::usage_sk(meter, to)),
            ))
            .await?;
        let buckets: Vec<BucketItem> = decode_all(items)?;
        Ok(buckets
            .into_iter()
            .filter(|b| b.hour >= from && b.hour < to)
            .map(|b| UsageBucket {
                key: UsageBucketKey {
                    subscription_id: b.subscription_id,
                    meter: b.meter,
                    hour: b.hour,
                },
                quantity: b.quantity,
            })
            .collect())
    }

    async fn ledger_entries(
        &self,
        subscription: &SubscriptionId,
        meter: &MeterId,
        since: Timestamp,
    ) -> StoreResult<Vec<LedgerEntry>> {
        // `~` sorts after every character of a key part, so this is "all entries from `since`".
        let items = self
            .query_all(Query::table(
                keys::subscription_pk(subscription),
                SkCond::Between(
                    keys::ledger_sk(meter, since, 0),
                    format!("{}~", keys::ledger_prefix(meter)),
                ),
            ))
            .await?;
        decode_all(items)
    }

    async fn metered_on(
        &self,
        day: chrono::NaiveDate,
    ) -> StoreResult<Vec<(SubscriptionId, MeterId)>> {
        let shards = (0..keys::USAGE_DAY_SHARDS).map(|shard| {
            self.query_all(Query::index(
                keys::GSI4,
                keys::GSI4PK,
                keys::GSI4SK,
                keys::usage_day(day, shard),
                SkCond::Any,
            ))
        });
        let mut pairs = std::collections::BTreeSet::new();
        for items in futures::future::try_join_all(shards).await? {
            for item in items {
                let sk = item
                    .get(keys::GSI4SK)
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt("usage index entry without gsi4sk".into())
                    })?;
                let (sub, meter) = sk
                    .split_once('#')
                    .ok_or_else(|| StoreError::Corrupt(format!("usage index entry {sk}")))?;
                let sub = SubscriptionId::parse(sub)
                    .map_err(|e| StoreError::Corrupt(format!("usage index entry {sk}: {e}")))?;
                let meter = MeterId::parse(meter)
                    .map_err(|e| StoreError::Corrupt(format!("usage index entry {sk}: {e}")))?;
                pairs.insert((sub, meter));
            }
        }
        Ok(pairs.into_iter().collect())
    }

    async fn access_expiring_by(&self, at: Timestamp) -> StoreResult<Vec<Subscription>> {
        let entries = self
            .query_all(Query::index(
                keys::GSI4,
                keys::GSI4PK,
                keys::GSI4SK,
                keys::ACCESS_EXPIRY.into(),
                SkCond::Between("0".into(), format!("{}#~", keys::sort_time(at))),
            ))
            .await?;
        // The index holds keys only: read the subscriptions in batches, and re-check them,
        // because the index is eventually consistent and may lag the table.
        let keys: Vec<Item> = entries
            .into_iter()
            .filter_map(|mut item| {
                Some(HashMap::from([
                    (keys::PK.to_string(), item.remove(keys::PK)?),
                    (keys::SK.to_string(), item.remove(keys::SK)?),
                ]))
            })
            .collect();
        let subs: Vec<Subscription> = decode_all(self.batch_get(keys).await?)?;
        let mut due: Vec<Subscription> = subs
            .into_iter()
            .filter(|s| !s.status.is_final() && s.access_expires_at.is_some_and(|e| e <= at))
            .collect();
        due.sort_by(|a, b| {
            a.access_expires_at
                .cmp(&b.access_expires_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(due)
    }

    async fn get_credit_balance(
        &self,
        consumer: &ConsumerId,
    ) -> StoreResult<Option<CreditBalance>> {
        self.get(keys::credit_balance(consumer)).await
    }

    async fn list_credit_movements(
        &self,
        consumer: &ConsumerId,
    ) -> StoreResult<Vec<CreditMovement>> {
        let items = self
            .query_all(Query::table(
                keys::consumer_pk(consumer),
                SkCond::BeginsWith(keys::CREDIT_MOVEMENT_PREFIX.into()),
            ))
            .await?;
        let mut moves: Vec<CreditMovement> = decode_all(items)?;
        moves.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        Ok(moves)
    }
}
