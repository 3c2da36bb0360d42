//! Usage batches from the gateway: the wire format, validation (every bad record reported with
//! its index and reason), aggregation into per-(subscription, meter, hour) buckets, and the
//! quota state of a subscription in its period.
//!
//! The batch format is documented by `schemas/usage-batch.schema.json` (generated from
//! [`UsageBatchDoc`]) and `docs/usage.md`.
//!
//! Policy (see `docs/usage.md`): a batch with any *invalid* record (malformed, unknown meter,
//! timestamp outside the accepted window, duplicate record id) is rejected whole and nothing is
//! written; the gateway fixes or drops the listed records and re-sends. Records that are valid
//! but belong to a subscription that is unknown or has no API access are *state* rejections:
//! the batch is accepted without them and they are counted and listed as rejected.

use crate::catalog::{Catalog, Product, QuotaPeriod};
use crate::ids::{MeterId, SubscriptionId, check_id};
use crate::ports::UsageBucketKey;
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::time::{Duration, Timestamp, hour_start};
use chrono::{Datelike, Months, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Most records one batch may hold. With the bucket limit below this keeps one batch inside
/// one DynamoDB transaction.
pub const MAX_RECORDS_PER_BATCH: usize = 5_000;
/// Largest request body accepted (1 MiB; ~200 bytes per record leaves room for 5,000).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest `value` of one record (a whole number, as Stripe meters take).
pub const MAX_RECORD_VALUE: u64 = 1_000_000_000_000;
/// Most distinct (subscription, meter, hour) buckets one batch may touch. A batch is written
/// in ONE DynamoDB transaction (at most 100 items): its claim, one ADD per bucket and one
/// credit-account write per prepaid consumer. 90 buckets leaves room for the rest; a batch
/// spanning more is refused whole (422 naming `records`) and the gateway splits it, because
/// writing it in several transactions could leave it half-written if the Lambda died between
/// them.
pub const MAX_BUCKETS_PER_BATCH: usize = 90;
/// Longest batch id / record id.
pub const MAX_ID_LEN: usize = 128;

/// The accepted time window of record timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestWindow {
    /// How old a record may be. The nightly billing run reports a day's buckets after this
    /// window has passed, so a record older than it could miss Stripe's invoice — it is
    /// rejected instead of being counted in tollgate but never billed.
    pub late: Duration,
    /// How far ahead of our clock a record may be: Stripe accepts meter events at most 5
    /// minutes in the future, and gateway clocks drift.
    pub future: Duration,
}

impl Default for IngestWindow {
    fn default() -> Self {
        Self {
            late: Duration::hours(DEFAULT_LATE_WINDOW_HOURS),
            future: Duration::minutes(5),
        }
    }
}

/// Default late window: 72 hours, the billing run's own
/// (`billing::BillingConfig::late_window`). A record that old still has its day's slice open
/// for a late report, so accepted usage is never usage the billing run refuses to send.
pub const DEFAULT_LATE_WINDOW_HOURS: i64 = 72;

/// The batch as the gateway posts it (documentation and JSON Schema only; parsing goes field
/// by field so that every bad record is reported, not just the first).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tollgate usage batch")]
pub struct UsageBatchDoc {
    /// The gateway's id for this batch (1–128 chars of `[A-Za-z0-9_.:-]`). Re-sending a batch
    /// with the same id and the same content is accepted and ignored (`duplicate: true`): it is
    /// counted once. The same id with other content is refused with 409 `batch_id_reused`,
    /// and nothing of it is counted.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub batch_id: String,
    /// Optional: the sending gateway instance, for per-record exactly-once (1–128 chars of
    /// `[A-Za-z0-9_.:-]`). With a `source`, every record carries a `seq`; a record whose `seq`
    /// is at or below the highest `seq` already counted for this source is a duplicate and
    /// is not counted again, whatever batch it comes in (a re-formed buffer under a new
    /// `batch_id`). Contract: a source numbers its records in increasing order and sends its
    /// batches one at a time, re-sending unanswered records before newer ones. Cost: one read
    /// and one more item in the batch's one transaction (see `docs/usage.md`).
    #[serde(default)]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub source: Option<String>,
    /// 1 to 5,000 usage records.
    #[schemars(length(min = 1, max = 5000))]
    pub records: Vec<UsageRecordDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRecordDoc {
    /// The record's id, unique within the batch (used in error reports).
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub id: String,
    /// tollgate's subscription id (the authorizer and `GET /entitlements/{key}` return it).
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub subscription_id: String,
    /// When the call happened, RFC 3339. At most 72 h old (late window) and 5 min ahead.
    pub timestamp: chrono::DateTime<Utc>,
    /// A meter of the catalog (`api_calls`).
    pub meter: String,
    /// Units used: a whole number, 0 to 10^12. Defaults to 1 (one call).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1_000_000_000_000u64))]
    pub value: Option<u64>,
    /// Free text for logs (`GET /forecast`); not stored.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub operation: Option<String>,
    /// The record's sequence number at its `source` (required with the batch's `source`,
    /// refused without it): a whole number 1 to 2^53, unique within the batch.
    #[serde(default)]
    #[schemars(range(min = 1, max = 9_007_199_254_740_992u64))]
    pub seq: Option<u64>,
}

/// Largest record `seq` (2^53: exact in every JSON implementation).
pub const MAX_SEQ: u64 = 1 << 53;

/// The batch's JSON Schema (`schemas/usage-batch.schema.json`), generated from
/// [`UsageBatchDoc`] so the published format cannot drift from these docs.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(UsageBatchDoc);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

/// One valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Position in the batch.
    pub index: usize,
    pub id: String,
    pub subscription_id: SubscriptionId,
    pub meter: MeterId,
    pub timestamp: Timestamp,
    pub value: u64,
    /// Sequence number at the batch's source (present exactly when the batch has a source).
    pub seq: Option<u64>,
}

/// A batch whose every record passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBatch {
    pub batch_id: String,
    /// The sending gateway instance, for per-record exactly-once (see [`UsageBatchDoc`]).
    pub source: Option<String>,
    pub records: Vec<UsageRecord>,
}

impl UsageBatch {
    /// SHA-256 (hex) of the batch's canonical content: the source and every record's id,
    /// subscription, meter, timestamp (to the nanosecond), value and seq, in order. Kept in
    /// the batch's claim, it tells a re-send of the same batch (same digest: duplicate) from
    /// other content under a reused `batch_id` (409). Formatting of the JSON (key order,
    /// whitespace, `+00:00` or `Z`, an omitted `value` of 1, `operation`) does not change it.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"tollgate-usage-batch-v1\n");
        h.update(self.source.as_deref().unwrap_or("").as_bytes());
        for r in &self.records {
            h.update(
                format!(
                    "\n{}\t{}\t{}\t{}.{:09}\t{}\t{}",
                    r.id,
                    r.subscription_id,
                    r.meter,
                    r.timestamp.timestamp(),
                    r.timestamp.timestamp_subsec_nanos(),
                    r.value,
                    r.seq.map_or_else(String::new, |s| s.to_string()),
                )
                .as_bytes(),
            );
        }
        hex::encode(h.finalize())
    }

    /// The highest record `seq` of the batch (`None` without a source).
    pub fn max_seq(&self) -> Option<u64> {
        self.records.iter().filter_map(|r| r.seq).max()
    }
}

/// Why one record is refused, at `records[index].field`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    pub index: usize,
    /// The record's id when it had a readable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Field name inside the record (`timestamp`), or empty for the record as a whole.
    pub field: String,
    pub reason: String,
}

impl RecordError {
    /// The JSON path of the offending field (`records[3].timestamp`).
    pub fn path(&self) -> String {
        if self.field.is_empty() {
            format!("records[{}]", self.index)
        } else {
            format!("records[{}].{}", self.index, self.field)
        }
    }
}

/// Why a batch is refused as a whole; nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("body: {size} bytes is more than the {max} allowed")]
    BodyTooLarge { size: usize, max: usize },
    /// The body is not the expected JSON shape; `field` is the JSON path.
    #[error("{field}: {reason}")]
    Malformed { field: String, reason: String },
    #[error("records: {count} records is more than the {max} allowed per batch")]
    TooManyRecords { count: usize, max: usize },
    #[error(
        "records: {count} distinct (subscription, meter, hour) buckets is more than the {max} one batch may touch; split the batch"
    )]
    TooManyBuckets { count: usize, max: usize },
    /// Some records are invalid; all of them are listed.
    #[error("{} invalid records", .0.len())]
    InvalidRecords(Vec<RecordError>),
    /// The `batch_id` was counted before with other content (409): a gateway whose counter
    /// restarted. Nothing of this batch is counted.
    #[error(
        "batch_id: {batch_id:?} was already used for a batch with other content; nothing of this batch was counted (use a new batch_id)"
    )]
    ReusedId { batch_id: String },
}

/// Parses and validates a batch body. Either every record is valid, or every invalid record
/// is reported (index, field, reason) and the batch is refused.
pub fn parse_batch(
    body: &[u8],
    catalog: &Catalog,
    now: Timestamp,
    window: IngestWindow,
) -> Result<UsageBatch, BatchError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BatchError::BodyTooLarge {
            size: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let malformed = |field: &str, reason: String| BatchError::Malformed {
        field: field.to_string(),
        reason,
    };
    // serde_json keeps the last of a repeated key: refuse the body instead of guessing.
    if let Some(path) = crate::json::first_repeated_key(body) {
        return Err(malformed(&path, "repeated key in a JSON object".into()));
    }
    let root: Value = serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let msg = msg
            .rfind(" at line ")
            .map_or(msg.clone(), |i| msg[..i].to_string());
        malformed("body", format!("not valid JSON: {msg}"))
    })?;
    let Value::Object(mut root) = root else {
        return Err(malformed("body", "must be a JSON object".into()));
    };
    let batch_id = match root.remove("batch_id") {
        Some(Value::String(s)) => {
            check_id(&s, MAX_ID_LEN).map_err(|e| malformed("batch_id", e.to_string()))?;
            s
        }
        Some(_) => return Err(malformed("batch_id", "must be a string".into())),
        None => return Err(malformed("batch_id", "is required".into())),
    };
    let source = match root.remove("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check_id(&s, MAX_ID_LEN).map_err(|e| malformed("source", e.to_string()))?;
            Some(s)
        }
        Some(_) => return Err(malformed("source", "must be a string".into())),
    };
    let records = match root.remove("records") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(malformed("records", "must be an array".into())),
        None => return Err(malformed("records", "is required".into())),
    };
    if let Some(unknown) = root.keys().next() {
        return Err(malformed(unknown, "unknown field".into()));
    }
    if records.is_empty() {
        return Err(malformed("records", "must hold at least one record".into()));
    }
    if records.len() > MAX_RECORDS_PER_BATCH {
        return Err(BatchError::TooManyRecords {
            count: records.len(),
            max: MAX_RECORDS_PER_BATCH,
        });
    }

    let mut valid = Vec::with_capacity(records.len());
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(records.len());
    let mut seqs: HashMap<u64, usize> = HashMap::new();
    for (index, raw) in records.into_iter().enumerate() {
        match parse_record(index, raw, catalog, now, window) {
            Ok(rec) => {
                let seq_error = |reason: String| RecordError {
                    index,
                    id: Some(rec.id.clone()),
                    field: "seq".into(),
                    reason,
                };
                if let Some(first) = seen.insert(rec.id.clone(), index) {
                    errors.push(RecordError {
                        index,
                        id: Some(rec.id),
                        field: "id".into(),
                        reason: format!("duplicate record id (first at index {first})"),
                    });
                } else if source.is_some() && rec.seq.is_none() {
                    errors.push(seq_error("is required when the batch has a source".into()));
                } else if source.is_none() && rec.seq.is_some() {
                    errors.push(seq_error(
                        "needs the batch's `source` (a seq counts per source)".into(),
                    ));
                } else if let Some(first) = rec.seq.and_then(|q| seqs.insert(q, index)) {
                    errors.push(seq_error(format!("duplicate seq (first at index {first})")));
                } else {
                    valid.push(rec);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(BatchError::InvalidRecords(errors));
    }
    let buckets = count_buckets(&valid);
    if buckets > MAX_BUCKETS_PER_BATCH {
        return Err(BatchError::TooManyBuckets {
            count: buckets,
            max: MAX_BUCKETS_PER_BATCH,
        });
    }
    Ok(UsageBatch {
        batch_id,
        source,
        records: valid,
    })
}

fn count_buckets(records: &[UsageRecord]) -> usize {
    let mut keys: Vec<(&str, &str, i64)> = records
        .iter()
        .map(|r| {
            (
                r.subscription_id.as_str(),
                r.meter.as_str(),
                hour_start(r.timestamp).timestamp(),
            )
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len()
}

fn parse_record(
    index: usize,
    raw: Value,
    catalog: &Catalog,
    now: Timestamp,
    window: IngestWindow,
) -> Result<UsageRecord, RecordError> {
    let err = |id: &Option<String>, field: &str, reason: String| RecordError {
        index,
        id: id.clone(),
        field: field.to_string(),
        reason,
    };
    let Value::Object(mut obj) = raw else {
        return Err(err(&None, "", "must be a JSON object".into()));
    };
    // The id first, so every later error can name the record.
    let id = match obj.remove("id") {
        Some(Value::String(s)) => match check_id(&s, MAX_ID_LEN) {
            Ok(()) => s,
            Err(e) => return Err(err(&None, "id", e.to_string())),
        },
        Some(_) => return Err(err(&None, "id", "must be a string".into())),
        None => return Err(err(&None, "id", "is required".into())),
    };
    let id_opt = Some(id.clone());
    let mut take_str = |field: &str| -> Result<String, RecordError> {
        match obj.remove(field) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(err(&id_opt, field, "must be a string".into())),
            None => Err(err(&id_opt, field, "is required".into())),
        }
    };
    let subscription_id = take_str("subscription_id")?;
    let subscription_id = SubscriptionId::parse(subscription_id)
        .map_err(|e| err(&id_opt, "subscription_id", e.to_string()))?;
    let meter = take_str("meter")?;
    if catalog.meter(&meter).is_none() {
        return Err(err(
            &id_opt,
            "meter",
            format!("unknown meter {meter:?} (not in the catalog)"),
        ));
    }
    let meter = MeterId::parse(meter).map_err(|e| err(&id_opt, "meter", e.to_string()))?;
    let ts = take_str("timestamp")?;
    let timestamp = chrono::DateTime::parse_from_rfc3339(&ts)
        .map_err(|e| {
            err(
                &id_opt,
                "timestamp",
                format!("not an RFC 3339 timestamp: {e}"),
            )
        })?
        .with_timezone(&Utc);
    if timestamp > now + window.future {
        return Err(err(
            &id_opt,
            "timestamp",
            format!(
                "in the future: more than {} s ahead of the server clock",
                window.future.num_seconds()
            ),
        ));
    }
    if timestamp < now - window.late {
        return Err(err(
            &id_opt,
            "timestamp",
            format!(
                "too old: beyond the late window of {} h (usage that old may already be billed)",
                window.late.num_hours()
            ),
        ));
    }
    // A whole number in `range`, or `None` when absent (or null).
    let mut take_whole = |field: &str, range: std::ops::RangeInclusive<u64>| match obj.remove(field)
    {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(err(
                &id_opt,
                field,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        },
        Some(_) => Err(err(&id_opt, field, "must be a number".into())),
    };
    let value = take_whole("value", 0..=MAX_RECORD_VALUE)?.unwrap_or(1);
    let seq = take_whole("seq", 1..=MAX_SEQ)?;
    match obj.remove("operation") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.len() <= 256 => {}
        Some(_) => {
            return Err(err(
                &id_opt,
                "operation",
                "must be a string of at most 256 bytes".into(),
            ));
        }
    }
    if let Some(unknown) = obj.keys().next() {
        return Err(err(&id_opt, unknown, "unknown field".into()));
    }
    Ok(UsageRecord {
        index,
        id,
        subscription_id,
        meter,
        timestamp,
        value,
        seq,
    })
}

/// Sums records into per-(subscription, meter, hour) buckets: what one batch ADDs.
pub fn aggregate<'a>(
    records: impl IntoIterator<Item = &'a UsageRecord>,
) -> BTreeMap<UsageBucketKey, u64> {
    let mut buckets = BTreeMap::new();
    for r in records {
        let key = UsageBucketKey {
            subscription_id: r.subscription_id.clone(),
            meter: r.meter.clone(),
            hour: hour_start(r.timestamp),
        };
        let sum = buckets.entry(key).or_insert(0u64);
        *sum = sum.saturating_add(r.value);
    }
    buckets
}

/// Sums records into buckets starting where `start_of` says (see [`bucket_start`]): what
/// one batch ADDs. Sums saturate (see [`total_quantity`]).
pub fn aggregate_by<'a>(
    records: impl IntoIterator<Item = &'a UsageRecord>,
    start_of: impl Fn(&UsageRecord) -> Timestamp,
) -> BTreeMap<UsageBucketKey, u64> {
    let mut buckets = BTreeMap::new();
    for r in records {
        let key = UsageBucketKey {
            subscription_id: r.subscription_id.clone(),
            meter: r.meter.clone(),
            hour: start_of(r),
        };
        let sum = buckets.entry(key).or_insert(0u64);
        *sum = sum.saturating_add(r.value);
    }
    buckets
}

/// The sum of usage quantities, saturating at `u64::MAX` instead of wrapping (release) or
/// panicking (debug): a total that large is beyond every quota and price tier, so the cap
/// changes no decision, while a wrapped total would read as almost nothing used.
pub fn total_quantity(quantities: impl IntoIterator<Item = u64>) -> u64 {
    quantities.into_iter().fold(0u64, u64::saturating_add)
}

/// Units per (subscription, meter) in a set of buckets.
pub fn totals_by_meter(
    buckets: &BTreeMap<UsageBucketKey, u64>,
) -> BTreeMap<(SubscriptionId, MeterId), u64> {
    let mut out = BTreeMap::new();
    for (k, q) in buckets {
        let sum = out
            .entry((k.subscription_id.clone(), k.meter.clone()))
            .or_insert(0u64);
        *sum = sum.saturating_add(*q);
    }
    out
}

/// Why a valid record is not counted (a state rejection: the batch is still accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// No such subscription.
    UnknownSubscription,
    /// The subscription has no API access (pending, suspended, canceled, expired): usage
    /// reported for it is not billed.
    InactiveSubscription,
    /// The subscription's product neither bills nor limits this meter.
    MeterNotInProduct,
    /// The record is timestamped before the subscription started or after it ended: no
    /// invoice of it can bill the record.
    OutsideSubscription,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::UnknownSubscription => "unknown subscription",
            Rejection::InactiveSubscription => "subscription has no API access",
            Rejection::MeterNotInProduct => "the subscription's product does not use this meter",
            Rejection::OutsideSubscription => {
                "the record's timestamp is before the subscription started or after it ended"
            }
        }
    }
}

/// Whether a record of `sub` on `meter`, timestamped `at`, is counted — judged at the record's
/// own time, not at its arrival:
/// * before the subscription started or from the moment it ended → `OutsideSubscription`;
/// * while it had access, even if it arrives after a cancel or a suspension → counted (the
///   billing run reports it to the final invoice while Stripe still waits to finalise it);
/// * after access was lost by a suspension (still not ended) → `InactiveSubscription`.
pub fn admit(
    sub: Option<&Subscription>,
    product: Option<&Product>,
    meter: &MeterId,
    at: Timestamp,
) -> Result<(), Rejection> {
    let sub = sub.ok_or(Rejection::UnknownSubscription)?;
    if at < live_from(sub) || sub.periods.ended_at.is_some_and(|end| at >= end) {
        return Err(Rejection::OutsideSubscription);
    }
    if !sub.status.grants_access() {
        // When access ended: the recorded moment, or (for a subscription that never had it or
        // whose moment was not recorded) right away.
        let lost = sub.periods.ended_at.or(sub.periods.access_lost_at);
        let had_access = matches!(
            sub.status,
            SubscriptionStatus::Canceled
                | SubscriptionStatus::Expired
                | SubscriptionStatus::Suspended
        );
        if !(had_access && lost.is_some_and(|t| at < t)) {
            return Err(Rejection::InactiveSubscription);
        }
    }
    let product = product.ok_or(Rejection::UnknownSubscription)?;
    if product.uses_meter(meter) {
        Ok(())
    } else {
        Err(Rejection::MeterNotInProduct)
    }
}

/// Since when a subscription's usage counts: its first Stripe period's start, or (a
/// subscription Stripe does not bill) its creation.
pub fn live_from(sub: &Subscription) -> Timestamp {
    sub.periods.started_at.unwrap_or(sub.created_at)
}

/// The anchor of a subscription's months: Stripe's billing cycle anchor, else the start of
/// its current period, else its creation.
pub fn anchor(sub: &Subscription) -> Timestamp {
    sub.periods
        .anchor
        .or(sub.current_period_start)
        .unwrap_or(sub.created_at)
}

/// The known billing period boundaries of a subscription, ascending: the history Stripe told
/// (period starts and ends, trial end, the moment it ended) and the stored current period.
pub fn period_boundaries(sub: &Subscription) -> Vec<Timestamp> {
    let mut b: Vec<Timestamp> = sub.periods.boundaries.clone();
    b.extend(
        [
            sub.current_period_start,
            sub.current_period_end,
            sub.periods.started_at,
            sub.periods.ended_at,
        ]
        .into_iter()
        .flatten(),
    );
    if let Some(end) = sub.periods.ended_at {
        b.retain(|x| *x <= end);
    }
    b.sort();
    b.dedup();
    b
}

/// THE billing period that contains `t` (start inclusive, end exclusive): between the known
/// boundaries around it; past the last known one (a renewal not told yet) or for a
/// subscription Stripe does not bill, the month of the subscription's own cadence
/// ([`anchored_month`] from [`anchor`]), cut at the known boundaries. Ingestion (bucket
/// splits), the quota, the portal's usage and quote and the billing run all use this.
pub fn billing_period(sub: &Subscription, t: Timestamp) -> (Timestamp, Timestamp) {
    let bounds = period_boundaries(sub);
    let before = bounds.iter().rev().find(|b| **b <= t).copied();
    let after = bounds.iter().find(|b| **b > t).copied();
    if let (Some(s), Some(e)) = (before, after) {
        return (s, e);
    }
    let (s, e) = anchored_month(anchor(sub), t);
    (
        before.map_or(s, |b| b.max(s)),
        after.map_or(e, |a| a.min(e)),
    )
}

/// The window a subscription's quota counts in at `t`, by the quota's cadence
/// ([`crate::catalog::Quota::cadence`]); the billing period when the product has no quota.
pub fn quota_window(
    sub: &Subscription,
    product: Option<&Product>,
    t: Timestamp,
) -> (Timestamp, Timestamp) {
    let cadence = product.and_then(|p| p.quota.as_ref().map(|q| q.cadence(p)));
    match cadence {
        Some(QuotaPeriod::Day) => {
            let start = crate::billing::day_start(t);
            (start, start + Duration::days(1))
        }
        Some(QuotaPeriod::Month) => anchored_month(anchor(sub), t),
        Some(QuotaPeriod::BillingPeriod) | None => billing_period(sub, t),
    }
}

/// The period a subscription's quota counts in at `now` ([`quota_window`]); kept under its
/// old name for the callers that read "the period" of a subscription.
pub fn quota_period(
    sub: &Subscription,
    product: Option<&Product>,
    now: Timestamp,
) -> (Timestamp, Timestamp) {
    quota_window(sub, product, now)
}

/// Whether `t` lies in a Stripe trial of `sub` (usage then is not billed by Stripe).
pub fn in_trial(sub: &Subscription, t: Timestamp) -> bool {
    sub.periods.trial_end.is_some_and(|end| t < end)
}

/// The start of the usage bucket a record at `t` is counted in: its UTC hour, cut at the
/// latest billing period or quota window boundary inside that hour at or before `t`. So no
/// bucket straddles a boundary and every window is a whole number of buckets.
pub fn bucket_start(sub: &Subscription, product: Option<&Product>, t: Timestamp) -> Timestamp {
    let hour = hour_start(t);
    [billing_period(sub, t).0, quota_window(sub, product, t).0]
        .into_iter()
        .filter(|b| *b >= hour && *b <= t)
        .fold(hour, Timestamp::max)
}

/// The month `[anchor + k months, anchor + (k+1) months)` that contains `now` (k may be
/// negative). Each bound is computed from the anchor itself, so an anchor on the 31st gives
/// Jan 31 → Feb 28 → Mar 31, as Stripe's billing cycle does.
pub fn anchored_month(anchor: Timestamp, now: Timestamp) -> (Timestamp, Timestamp) {
    let nth = |k: i64| -> Timestamp {
        if k >= 0 {
            anchor + Months::new(k as u32)
        } else {
            anchor - Months::new((-k) as u32)
        }
    };
    let months = (i64::from(now.year()) - i64::from(anchor.year())) * 12 + i64::from(now.month())
        - i64::from(anchor.month());
    let mut k = months - 1;
    while nth(k + 1) <= now {
        k += 1;
    }
    while nth(k) > now {
        k -= 1;
    }
    (nth(k), nth(k + 1))
}

/// `[first instant of the month, first instant of the next month)` in UTC.
pub fn calendar_month(now: Timestamp) -> (Timestamp, Timestamp) {
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("first of month exists");
    let end = start + Months::new(1);
    (start, end)
}

/// A subscription's state as the usage answer and the entitlement check report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageState {
    Ok,
    QuotaExceeded,
    Suspended,
    NoCredit,
}

/// Quota thresholds (percent) that publish `QuotaThreshold` once per period each.
pub const QUOTA_THRESHOLDS: [u8; 2] = [80, 100];

/// The thresholds `used` has reached of `limit` (a limit of 0 is reached at once).
pub fn thresholds_reached(used: u64, limit: u64) -> Vec<u8> {
    QUOTA_THRESHOLDS
        .iter()
        .copied()
        .filter(|p| u128::from(used) * 100 >= u128::from(limit) * u128::from(*p))
        .collect()
}

/// Usage at or past the limit: the gateway answers 429 until the period ends.
pub fn quota_exceeded(used: u64, limit: u64) -> bool {
    used >= limit
}

/// The id of the claim that makes one threshold's event happen once per period.
pub fn threshold_claim_id(
    sub: &SubscriptionId,
    meter: &MeterId,
    period_start: Timestamp,
    percent: u8,
) -> String {
    format!("{sub}:{meter}:{}:{percent}", period_start.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        serde_json::from_value(json!({
            "version": 1, "currency": "usd",
            "meters": [{"id": "api_calls", "name": "API calls"}, {"id": "bytes", "name": "Bytes"}],
            "products": [{"id": "free", "name": "Free", "quota": {"meter": "api_calls", "limit": 100}}]
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 30, 0).unwrap()
    }

    fn body(records: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"batch_id": "b1", "records": records})).unwrap()
    }

    #[test]
    fn the_digest_is_the_content_not_the_formatting() {
        let parse = |b: &[u8]| parse_batch(b, &catalog(), now(), IngestWindow::default()).unwrap();
        let a = parse(&body(json!([
            {"id": "r1", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls", "operation": "GET /x"},
            {"id": "r2", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:02:00Z", "meter": "api_calls", "value": 4}
        ])));
        // Same content: `+00:00` for `Z`, value 1 spelled out, no operation, keys reordered.
        let same = parse(&body(json!([
            {"meter": "api_calls", "id": "r1", "timestamp": "2026-11-22T10:01:00+00:00", "subscription_id": "sub_a", "value": 1},
            {"id": "r2", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:02:00Z", "meter": "api_calls", "value": 4}
        ])));
        assert_eq!(a.digest(), same.digest());
        assert_eq!(a.digest().len(), 64);
        for other in [
            json!([{"id": "r1", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls"},
                   {"id": "r2", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:02:00Z", "meter": "api_calls", "value": 5}]),
            json!([{"id": "r1", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls"},
                   {"id": "r2", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:02:01Z", "meter": "api_calls", "value": 4}]),
            json!([{"id": "r1", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls"}]),
        ] {
            assert_ne!(a.digest(), parse(&body(other)).digest());
        }
        let sourced = parse(
            &serde_json::to_vec(&json!({"batch_id": "b1", "source": "gw-1", "records": [
                {"id": "r1", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls", "seq": 7},
                {"id": "r2", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:02:00Z", "meter": "api_calls", "seq": 9}
            ]}))
            .unwrap(),
        );
        assert_eq!(sourced.source.as_deref(), Some("gw-1"));
        assert_eq!(sourced.max_seq(), Some(9));
        assert_ne!(sourced.digest(), a.digest());
    }

    #[test]
    fn parses_and_aggregates_by_hour() {
        let b = body(json!([
            {"id": "r1", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls"},
            {"id": "r2", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:29:59Z", "meter": "api_calls", "value": 4},
            {"id": "r3", "subscription_id": "sub_a", "timestamp": "2026-11-22T09:59:59+00:00", "meter": "api_calls", "operation": "GET /x"},
            {"id": "r4", "subscription_id": "sub_b", "timestamp": "2026-11-22T10:01:00Z", "meter": "bytes", "value": 0}
        ]));
        let batch = parse_batch(&b, &catalog(), now(), IngestWindow::default()).unwrap();
        assert_eq!(batch.batch_id, "b1");
        let buckets = aggregate(&batch.records);
        assert_eq!(buckets.len(), 3);
        let ten = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        let key = UsageBucketKey {
            subscription_id: SubscriptionId::parse("sub_a").unwrap(),
            meter: MeterId::parse("api_calls").unwrap(),
            hour: ten,
        };
        assert_eq!(buckets[&key], 5);
        let totals = totals_by_meter(&buckets);
        assert_eq!(
            totals[&(
                SubscriptionId::parse("sub_a").unwrap(),
                MeterId::parse("api_calls").unwrap()
            )],
            6
        );
    }

    #[test]
    fn every_bad_record_is_listed_with_index_and_reason() {
        let b = body(json!([
            {"id": "ok", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls"},
            {"id": "late", "subscription_id": "sub_a", "timestamp": "2026-11-18T10:01:00Z", "meter": "api_calls"},
            {"id": "future", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:40:00Z", "meter": "api_calls"},
            {"id": "m", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "nope"},
            {"id": "v", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls", "value": -1},
            {"id": "ok", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls"},
            {"subscription_id": "sub_a"},
            "x",
            {"id": "t", "subscription_id": "sub_a", "timestamp": "yesterday", "meter": "api_calls"},
            {"id": "u", "subscription_id": "sub_a", "timestamp": "2026-11-22T10:01:00Z", "meter": "api_calls", "extra": 1}
        ]));
        let Err(BatchError::InvalidRecords(errs)) =
            parse_batch(&b, &catalog(), now(), IngestWindow::default())
        else {
            panic!("expected invalid records")
        };
        let got: Vec<(usize, String)> = errs.iter().map(|e| (e.index, e.path())).collect();
        assert_eq!(
            got,
            vec![
                (1, "records[1].timestamp".into()),
                (2, "records[2].timestamp".into()),
                (3, "records[3].meter".into()),
                (4, "records[4].value".into()),
                (5, "records[5].id".into()),
                (6, "records[6].id".into()),
                (7, "records[7]".into()),
                (8, "records[8].timestamp".into()),
                (9, "records[9].extra".into()),
            ]
        );
        assert!(errs[0].reason.contains("too old"));
        assert!(errs[1].reason.contains("in the future"));
        assert!(errs[2].reason.contains("unknown meter"));
        assert!(
            errs[4]
                .reason
                .contains("duplicate record id (first at index 0)")
        );
        assert_eq!(errs[0].id.as_deref(), Some("late"));
    }

    #[test]
    fn batch_level_errors_name_the_field() {
        let c = catalog();
        let w = IngestWindow::default();
        let field = |r: Result<UsageBatch, BatchError>| match r {
            Err(BatchError::Malformed { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(parse_batch(b"{", &c, now(), w)), "body");
        assert_eq!(field(parse_batch(b"[]", &c, now(), w)), "body");
        assert_eq!(
            field(parse_batch(br#"{"records": []}"#, &c, now(), w)),
            "batch_id"
        );
        assert_eq!(
            field(parse_batch(
                br#"{"batch_id": "a#b", "records": []}"#,
                &c,
                now(),
                w
            )),
            "batch_id"
        );
        assert_eq!(
            field(parse_batch(
                br#"{"batch_id": "a", "records": {}}"#,
                &c,
                now(),
                w
            )),
            "records"
        );
        assert_eq!(
            field(parse_batch(
                br#"{"batch_id": "a", "records": []}"#,
                &c,
                now(),
                w
            )),
            "records"
        );
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(
            parse_batch(&big, &c, now(), w),
            Err(BatchError::BodyTooLarge { .. })
        ));
        let many: Vec<Value> = (0..=MAX_RECORDS_PER_BATCH)
            .map(|i| json!({"id": format!("r{i}"), "subscription_id": "s", "timestamp": "2026-11-22T10:00:00Z", "meter": "api_calls"}))
            .collect();
        assert!(matches!(
            parse_batch(&body(Value::Array(many)), &c, now(), w),
            Err(BatchError::TooManyRecords { .. })
        ));
    }

    #[test]
    fn too_many_buckets_is_refused_whole() {
        let recs: Vec<Value> = (0..=MAX_BUCKETS_PER_BATCH)
            .map(|i| json!({"id": format!("r{i}"), "subscription_id": format!("sub_{i}"), "timestamp": "2026-11-22T10:00:00Z", "meter": "api_calls"}))
            .collect();
        assert!(matches!(
            parse_batch(
                &body(Value::Array(recs)),
                &catalog(),
                now(),
                IngestWindow::default()
            ),
            Err(BatchError::TooManyBuckets { count: 91, max: 90 })
        ));
    }

    #[test]
    fn thresholds() {
        assert_eq!(thresholds_reached(79, 100), Vec::<u8>::new());
        assert_eq!(thresholds_reached(80, 100), vec![80]);
        assert_eq!(thresholds_reached(100, 100), vec![80, 100]);
        assert_eq!(thresholds_reached(0, 0), vec![80, 100]);
        assert!(quota_exceeded(100, 100));
        assert!(!quota_exceeded(99, 100));
    }

    #[test]
    fn anchored_months_follow_the_anchor_day_clamped_to_the_month() {
        let anchor = Utc.with_ymd_and_hms(2027, 1, 31, 13, 37, 5).unwrap();
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        let (s, e) = anchored_month(anchor, at(2027, 2, 15, 0));
        assert_eq!(s, anchor);
        assert_eq!(e, Utc.with_ymd_and_hms(2027, 2, 28, 13, 37, 5).unwrap());
        let (s, e) = anchored_month(anchor, at(2027, 3, 10, 0));
        assert_eq!(s, Utc.with_ymd_and_hms(2027, 2, 28, 13, 37, 5).unwrap());
        assert_eq!(e, Utc.with_ymd_and_hms(2027, 3, 31, 13, 37, 5).unwrap());
        // Before the anchor, and exactly on a bound (start inclusive, end exclusive).
        let (s, e) = anchored_month(anchor, at(2026, 12, 31, 14));
        assert_eq!(
            (s, e),
            (
                Utc.with_ymd_and_hms(2026, 12, 31, 13, 37, 5).unwrap(),
                anchor
            )
        );
        assert_eq!(anchored_month(anchor, anchor).0, anchor);
        // Every instant over two years lies in the month returned for it.
        let mut t = at(2026, 11, 1, 0);
        while t < at(2029, 1, 1, 0) {
            let (s, e) = anchored_month(anchor, t);
            assert!(s <= t && t < e, "{t}: {s}..{e}");
            t += Duration::hours(7);
        }
    }

    #[test]
    fn a_free_subscriptions_quota_month_starts_on_its_own_day() {
        let created = Utc.with_ymd_and_hms(2026, 11, 30, 0, 10, 0).unwrap();
        let sub: Subscription = serde_json::from_value(json!({
            "id": "s", "consumer_id": "c", "product_id": "free", "name": "n", "status": "active",
            "created_at": created, "updated_at": created, "version": 0
        }))
        .unwrap();
        // The subscription's month runs Nov 30 → Dec 30, across the calendar month's end.
        let (s, e) = quota_period(
            &sub,
            None,
            Utc.with_ymd_and_hms(2026, 12, 20, 0, 0, 0).unwrap(),
        );
        assert_eq!(s, created);
        assert_eq!(e, Utc.with_ymd_and_hms(2026, 12, 30, 0, 10, 0).unwrap());
    }

    #[test]
    fn calendar_month_bounds() {
        let (s, e) = calendar_month(Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap());
        assert_eq!(s, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(e, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn usage_sums_saturate_instead_of_wrapping() {
        assert_eq!(total_quantity([u64::MAX, 1, 5]), u64::MAX);
        assert_eq!(total_quantity([u64::MAX - 1, 1]), u64::MAX);
        assert_eq!(total_quantity([2, 3]), 5);
        assert_eq!(total_quantity(std::iter::empty()), 0);
    }

    #[test]
    fn a_repeated_key_refuses_the_batch_naming_it() {
        let catalog = catalog();
        for (body, field) in [
            (
                r#"{"batch_id":"b1","batch_id":"b2","records":[]}"#,
                "batch_id",
            ),
            (
                r#"{"batch_id":"b1","records":[{"id":"r1","subscription_id":"sub_a","timestamp":"2026-11-22T10:00:00Z","meter":"api_calls","value":1,"value":1000000}]}"#,
                "records[0].value",
            ),
        ] {
            match parse_batch(body.as_bytes(), &catalog, now(), IngestWindow::default()) {
                Err(BatchError::Malformed { field: f, reason }) => {
                    assert_eq!(f, field);
                    assert!(reason.contains("repeated key"), "{reason}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod period_tests {
    use super::*;
    use crate::ports::{StripeSubscriptionStatus, SubscriptionSnapshot};
    use proptest::prelude::*;
    use serde_json::json;

    fn sub(created: Timestamp) -> Subscription {
        serde_json::from_value(json!({
            "id": "s", "consumer_id": "c", "product_id": "payg", "name": "n", "status": "active",
            "created_at": created, "updated_at": created, "version": 0
        }))
        .unwrap()
    }

    fn snap(start: Timestamp, end: Timestamp) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            id: crate::ids::StripeId::parse("sub_1").unwrap(),
            customer: crate::ids::StripeId::parse("cus_1").unwrap(),
            status: StripeSubscriptionStatus::parse("active"),
            current_period_start: Some(start),
            current_period_end: Some(end),
            cancel_at_period_end: false,
            metadata: Default::default(),
            items: vec![],
            start_date: None,
            billing_cycle_anchor: None,
            trial_end: None,
            ended_at: None,
        }
    }

    fn product(quota: Value) -> Product {
        serde_json::from_value(json!({"id": "p", "name": "P", "interval": "year", "quota": quota}))
            .unwrap()
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn buckets_split_at_a_mid_hour_boundary() {
        let start = at(2026, 10, 15, 13, 37, 0);
        let end = at(2026, 11, 15, 13, 37, 0);
        let mut s = sub(start);
        s.observe_stripe_periods(&snap(start, end));
        // 25 and 5 minutes before the end: the 13:00 bucket, inside the period.
        for m in [12, 32] {
            let t = at(2026, 11, 15, 13, m, 0);
            assert_eq!(bucket_start(&s, None, t), at(2026, 11, 15, 13, 0, 0));
            assert_eq!(billing_period(&s, t), (start, end));
        }
        // Three minutes after: the bucket starts at the boundary, in the next period (known
        // only as Stripe's next month from the anchor until the renewal is told).
        let t = at(2026, 11, 15, 13, 40, 0);
        assert_eq!(bucket_start(&s, None, t), end);
        assert_eq!(billing_period(&s, t), (end, at(2026, 12, 15, 13, 37, 0)));
    }

    #[test]
    fn a_yearly_plans_monthly_quota_resets_on_its_anniversary_day() {
        let start = at(2027, 1, 31, 9, 15, 0);
        let mut s = sub(start);
        let mut sn = snap(start, at(2028, 1, 31, 9, 15, 0));
        sn.billing_cycle_anchor = Some(start);
        s.observe_stripe_periods(&sn);
        let p = product(json!({"meter": "api_calls", "limit": 50000}));
        let (ws, we) = quota_window(&s, Some(&p), at(2027, 3, 10, 0, 0, 0));
        assert_eq!(
            (ws, we),
            (at(2027, 2, 28, 9, 15, 0), at(2027, 3, 31, 9, 15, 0))
        );
        // The yearly billing period stays the year.
        assert_eq!(billing_period(&s, ws).1, at(2028, 1, 31, 9, 15, 0));
        // The quota window start splits its hour's bucket.
        assert_eq!(
            bucket_start(&s, Some(&p), at(2027, 3, 31, 9, 20, 0)),
            at(2027, 3, 31, 9, 15, 0)
        );
        let day = product(json!({"meter": "api_calls", "limit": 5, "period": "day"}));
        assert_eq!(
            quota_window(&s, Some(&day), at(2027, 3, 10, 17, 0, 0)),
            (at(2027, 3, 10, 0, 0, 0), at(2027, 3, 11, 0, 0, 0))
        );
    }

    #[test]
    fn records_are_judged_at_their_own_time() {
        let start = at(2026, 10, 15, 13, 37, 0);
        let mut s = sub(start - Duration::minutes(3));
        s.observe_stripe_periods(&snap(start, at(2026, 11, 15, 13, 37, 0)));
        let p: Product =
            serde_json::from_value(json!({"id": "payg", "name": "P", "interval": "month",
            "quota": {"meter": "api_calls", "limit": 10}}))
            .unwrap();
        let m = MeterId::parse("api_calls").unwrap();
        assert_eq!(
            admit(Some(&s), Some(&p), &m, start - Duration::minutes(20)),
            Err(Rejection::OutsideSubscription)
        );
        assert_eq!(admit(Some(&s), Some(&p), &m, start), Ok(()));
        // Canceled at 20:00 on Nov 1: a record from 19:59 arriving later counts, 20:00 not.
        let end = at(2026, 11, 1, 20, 0, 0);
        let mut cancel = snap(start, at(2026, 11, 15, 13, 37, 0));
        cancel.ended_at = Some(end);
        s.observe_stripe_periods(&cancel);
        crate::lifecycle::apply(
            &mut s,
            crate::lifecycle::BillingFact::Ended,
            end + Duration::minutes(1),
        );
        assert_eq!(s.status, SubscriptionStatus::Canceled);
        assert_eq!(
            admit(Some(&s), Some(&p), &m, end - Duration::seconds(1)),
            Ok(())
        );
        assert_eq!(
            admit(Some(&s), Some(&p), &m, end),
            Err(Rejection::OutsideSubscription)
        );
        // The cancel is the period's end.
        assert_eq!(billing_period(&s, end - Duration::seconds(1)), (start, end));

        // Suspended on Nov 2 at 08:00 (retries exhausted): usage from before still counts,
        // usage after is refused as inactive (the subscription has not ended); paid again,
        // it counts again.
        let mut s = sub(start);
        s.observe_stripe_periods(&snap(start, at(2026, 11, 15, 13, 37, 0)));
        let suspended = at(2026, 11, 2, 8, 0, 0);
        crate::lifecycle::apply(&mut s, crate::lifecycle::BillingFact::Unpaid, suspended);
        assert_eq!(s.status, SubscriptionStatus::Suspended);
        assert_eq!(
            admit(Some(&s), Some(&p), &m, suspended - Duration::seconds(1)),
            Ok(())
        );
        assert_eq!(
            admit(Some(&s), Some(&p), &m, suspended),
            Err(Rejection::InactiveSubscription)
        );
        crate::lifecycle::apply(
            &mut s,
            crate::lifecycle::BillingFact::Paid,
            suspended + Duration::hours(5),
        );
        assert_eq!(admit(Some(&s), Some(&p), &m, suspended), Ok(()));
        // Unknown subscription and a meter the product does not use keep their reasons.
        assert_eq!(
            admit(None, Some(&p), &m, start),
            Err(Rejection::UnknownSubscription)
        );
        assert_eq!(
            admit(Some(&s), Some(&p), &MeterId::parse("bytes").unwrap(), start),
            Err(Rejection::MeterNotInProduct)
        );
    }

    fn arb_anchor() -> impl Strategy<Value = Timestamp> {
        // Around month ends and Feb 29 of 2028 (leap) and 2027, at any second of the day.
        (
            prop::sample::select(vec![
                (2027, 1, 31),
                (2027, 2, 28),
                (2028, 2, 29),
                (2028, 1, 30),
                (2027, 12, 31),
                (2028, 3, 31),
                (2027, 4, 30),
                (2027, 6, 15),
            ]),
            0u32..86_400,
        )
            .prop_map(|((y, m, d), secs)| {
                Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap() + Duration::seconds(secs.into())
            })
    }

    proptest! {
        /// The period a record is billed in (the billing run's slice holding its bucket) is
        /// the period that contains its timestamp, whatever the anchor, for Stripe's periods
        /// (monthly renewals from the anchor, each told by the webhook) and for a free
        /// subscription's own months.
        #[test]
        fn a_record_is_billed_in_the_period_that_contains_it(
            anchor in arb_anchor(),
            offsets in prop::collection::vec(-3_600i64..200 * 86_400, 1..40),
            periods_told in 0usize..8,
        ) {
            let mut s = sub(anchor);
            // Stripe's periods: anchor + k months (clamped), told up to `periods_told`.
            let nth = |k: u32| anchor + Months::new(k);
            let mut sn = snap(nth(0), nth(1));
            sn.billing_cycle_anchor = Some(anchor);
            sn.start_date = Some(anchor);
            s.observe_stripe_periods(&sn);
            for k in 1..=periods_told as u32 {
                s.observe_stripe_periods(&snap(nth(k), nth(k + 1)));
            }
            let bounds = period_boundaries(&s);
            for off in offsets {
                let t = anchor + Duration::seconds(off);
                let (ps, pe) = billing_period(&s, t);
                prop_assert!(ps <= t && t < pe, "{t}: {ps}..{pe}");
                if t >= anchor {
                    // Stripe's period containing t.
                    let (ss, se) = anchored_month(anchor, t);
                    prop_assert_eq!((ps, pe), (ss, se));
                }
                // The bucket lies inside the period, and the billing run's slice holding the
                // bucket lies inside the same period.
                let b = bucket_start(&s, None, t);
                prop_assert!(ps <= b && b <= t && t - b < Duration::hours(1));
                let from = crate::billing::day_start(b);
                let slices = crate::billing::slices(&bounds, from, from + Duration::days(2));
                let slice = slices.iter().find(|x| x.from <= b && b < x.to).unwrap();
                if t >= anchor && bounds.iter().any(|x| *x > t) {
                    prop_assert!(ps <= slice.from && slice.to <= pe, "{slice:?} not in {ps}..{pe}");
                    let ev = slice.event_timestamp();
                    prop_assert!(ps <= ev && ev < pe);
                }
            }
        }
    }
}

#[cfg(test)]
mod window_tests {
    #[test]
    fn late_window_is_the_billing_runs() {
        assert_eq!(
            super::IngestWindow::default().late,
            crate::billing::BillingConfig::default().late_window
        );
    }
}

#[cfg(test)]
mod schema_tests {
    use std::path::PathBuf;

    /// Regenerate with `UPDATE_SCHEMA=1 cargo test -p tollgate-domain --lib usage`.
    #[test]
    fn checked_in_schema_matches_the_types() {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/usage-batch.schema.json");
        let generated = super::json_schema();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is stale: run `UPDATE_SCHEMA=1 cargo test -p tollgate-domain --lib usage`",
            path.display()
        );
    }

    #[test]
    fn schema_states_the_limits() {
        let s: serde_json::Value = serde_json::from_str(&super::json_schema()).unwrap();
        assert_eq!(
            s["properties"]["records"]["maxItems"],
            super::MAX_RECORDS_PER_BATCH
        );
        assert_eq!(s["properties"]["batch_id"]["maxLength"], super::MAX_ID_LEN);
        let rec = &s["$defs"]["UsageRecordDoc"];
        assert_eq!(rec["additionalProperties"], false);
        assert_eq!(rec["properties"]["timestamp"]["format"], "date-time");
    }
}
