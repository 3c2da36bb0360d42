//! The usage-from-logs function: meters a provider's API Gateway API from its access log.
//!
//! A CloudWatch Logs subscription filter on the API's access log group invokes this function
//! with batches of log events (`{"awslogs": {"data": base64(gzip(json))}}`, decoded by
//! `aws_lambda_events`). Each line is one call in [`ACCESS_LOG_FORMAT`]; the calls the catalog
//! says are billable ([`tollgate_domain::catalog::BillableCalls`], by default HTTP 2xx/3xx)
//! become usage records (`api_calls`: 1 per call; `data_bytes`: the response length, where
//! the product meters it) and are counted by the SAME usage service as `POST /usage`
//! ([`usage::Usage::ingest`]): one DynamoDB transaction per batch, prepaid draw-down, quota
//! gates and thresholds included.
//!
//! Exactly once without the provider's help: a usage batch's id is a digest of the log group
//! and the ids of the log events it holds (CloudWatch gives every event a unique id), and the
//! events are cut into batches in event-id order by rules that read only the log lines. A
//! subscription batch delivered twice (Lambda's async retries, or a replay) therefore makes
//! the same usage batches, which the usage service counts once.
//!
//! A malformed line (not JSON, a field missing or unreadable) is logged and counted in the
//! `Malformed` metric (an EMF line in namespace `tollgate`, like the billing run's) and never
//! blocks the other lines. `CONTROL_MESSAGE` deliveries (CloudWatch's reachability checks)
//! are ignored. A store failure fails the invocation, so Lambda retries it (the batches
//! already counted are then duplicates and count nothing).
//!
//! Format, wiring and limits: `docs/metering-api-gateway.md`.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use tollgate_domain::ports::StoreError;
use tollgate_domain::time::Timestamp;

#[cfg(feature = "service")]
pub use service::UsageFromLogs;

/// The access-log format to give the provider's API Gateway stage (`AccessLogSetting.Format`
/// of a REST API; the same variables exist on HTTP APIs except `resourcePath`, use
/// `routeKey` there). One JSON object per call, every value quoted because API Gateway
/// writes `-` for a value it does not have:
///
/// - `id`: `$context.requestId`, for people (the record ids are CloudWatch's event ids);
/// - `time`: `$context.requestTimeEpoch`, milliseconds since the epoch — the usage's time;
/// - `status`: `$context.status`, the HTTP status the consumer received;
/// - `sub`: `$context.authorizer.subscription_id`, set by tollgate's authorizer;
/// - `allow`: `$context.authorizer.allow`, `false` when the authorizer refused the call;
/// - `bytes`: `$context.responseLength`, bytes of the response body (`data_bytes`);
/// - `method`, `route`: `$context.httpMethod`, `$context.resourcePath` (for people).
///
/// About 190 bytes a line: CloudWatch Logs bills ingestion per GB, so keep it this small.
pub const ACCESS_LOG_FORMAT: &str = r#"{"id":"$context.requestId","time":"$context.requestTimeEpoch","status":"$context.status","sub":"$context.authorizer.subscription_id","allow":"$context.authorizer.allow","bytes":"$context.responseLength","method":"$context.httpMethod","route":"$context.resourcePath"}"#;

/// The meter a billable call adds 1 to.
pub const CALLS_METER: &str = "api_calls";
/// The meter a billable call adds its response length to (where the product meters it).
pub const BYTES_METER: &str = "data_bytes";
/// Most log lines in one usage batch. A line makes at most two records (calls and bytes):
/// 4,000 records of ~180 bytes stay under the usage service's 5,000 records and 1 MiB.
pub const MAX_LINES_PER_BATCH: usize = 2_000;
/// Most distinct (subscription, hour) pairs in one usage batch. The usage service writes a
/// batch in one DynamoDB transaction (100 items): its claim, one item per (subscription,
/// meter, hour) — at most 2 × 30 here — and one credit account per prepaid consumer (at
/// most 30), 91 in all.
pub const MAX_PAIRS_PER_BATCH: usize = 30;

/// One CloudWatch Logs event: its unique id and the access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub id: String,
    pub message: String,
}

/// One call, read from its access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogLine {
    /// API Gateway's request id.
    pub request_id: String,
    /// When API Gateway received the call.
    pub time: Timestamp,
    /// HTTP status the consumer received.
    pub status: u16,
    /// The subscription the authorizer attributed the call to (`None`: no key, or no
    /// tollgate authorizer on this route).
    pub subscription_id: Option<String>,
    /// The authorizer's decision (`None` when the line does not say).
    pub allow: Option<bool>,
    /// Response body bytes (0 when API Gateway logged `-`).
    pub response_length: u64,
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("{0}: is required")]
    Missing(&'static str),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A value API Gateway logged: a string (`"-"` = none) or, in a format without quotes, a
/// number.
fn field(obj: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match obj.get(name)? {
        Value::String(s) if s.is_empty() || s == "-" => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads one access-log line in [`ACCESS_LOG_FORMAT`].
pub fn parse_line(message: &str) -> Result<AccessLogLine, LineError> {
    let value: Value =
        serde_json::from_str(message.trim()).map_err(|e| LineError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(LineError::NotJson("not an object".into()));
    };
    let request_id = field(&obj, "id").ok_or(LineError::Missing("id"))?;
    let time_ms: i64 = field(&obj, "time")
        .ok_or(LineError::Missing("time"))?
        .parse()
        .map_err(|_| LineError::Invalid {
            field: "time",
            reason: "not milliseconds since the epoch".into(),
        })?;
    let time = chrono::DateTime::from_timestamp_millis(time_ms).ok_or(LineError::Invalid {
        field: "time",
        reason: "out of range".into(),
    })?;
    let status: u16 = field(&obj, "status")
        .ok_or(LineError::Missing("status"))?
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
        .ok_or(LineError::Invalid {
            field: "status",
            reason: "not an HTTP status".into(),
        })?;
    let allow = match field(&obj, "allow").as_deref() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let response_length = match field(&obj, "bytes") {
        None => 0,
        Some(s) => s.parse().map_err(|_| LineError::Invalid {
            field: "bytes",
            reason: "not a byte count".into(),
        })?,
    };
    Ok(AccessLogLine {
        request_id,
        time,
        status,
        subscription_id: field(&obj, "sub"),
        allow,
        response_length,
    })
}

/// One usage batch to send: its id and its lines (event id, call), in event-id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub batch_id: String,
    pub lines: Vec<(String, AccessLogLine)>,
}

/// What [`plan`] made of a delivery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Planned {
    pub chunks: Vec<Chunk>,
    /// Events whose line could not be read: (event id, reason).
    pub malformed: Vec<(String, LineError)>,
    /// Calls no subscription was attributed to (no key, or the authorizer refused it).
    pub unattributed: usize,
    /// Calls the authorizer refused (never usage).
    pub refused: usize,
}

/// Reads a delivery's events and cuts the attributed calls into usage batches.
///
/// Only the log lines decide: events are sorted by id, and a batch closes before a line
/// that would make it hold more than [`MAX_LINES_PER_BATCH`] lines or
/// [`MAX_PAIRS_PER_BATCH`] (subscription, hour) pairs. The batch id is
/// `cwl:` + the first 40 hex digits of SHA-256 over the log group and the batch's event ids,
/// so the same events always make the same batches with the same ids.
pub fn plan(log_group: &str, events: &[LogEvent]) -> Planned {
    let mut out = Planned::default();
    let mut sorted: Vec<&LogEvent> = events.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    sorted.dedup_by(|a, b| a.id == b.id);
    let mut current: Vec<(String, AccessLogLine)> = Vec::new();
    let mut pairs: BTreeSet<(String, i64)> = BTreeSet::new();
    for ev in sorted {
        let line = match parse_line(&ev.message) {
            Ok(l) => l,
            Err(e) => {
                out.malformed.push((ev.id.clone(), e));
                continue;
            }
        };
        if line.allow == Some(false) {
            out.refused += 1;
            continue;
        }
        let Some(sub) = line.subscription_id.clone() else {
            out.unattributed += 1;
            continue;
        };
        let pair = (sub, line.time.timestamp().div_euclid(3600));
        let new_pair = !pairs.contains(&pair);
        if current.len() >= MAX_LINES_PER_BATCH || (new_pair && pairs.len() >= MAX_PAIRS_PER_BATCH)
        {
            out.chunks
                .push(close(log_group, std::mem::take(&mut current)));
            pairs.clear();
        }
        pairs.insert(pair);
        current.push((ev.id.clone(), line));
    }
    if !current.is_empty() {
        out.chunks.push(close(log_group, current));
    }
    out
}

fn close(log_group: &str, lines: Vec<(String, AccessLogLine)>) -> Chunk {
    let mut h = Sha256::new();
    h.update(log_group.as_bytes());
    for (id, _) in &lines {
        h.update(b"\n");
        h.update(id.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    Chunk {
        batch_id: format!("cwl:{}", &digest[..40]),
        lines,
    }
}

/// What one delivery did; also the EMF metrics line.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Log events in the delivery.
    pub log_events: usize,
    /// Lines that could not be read (logged one by one).
    pub malformed: usize,
    /// Calls without a subscription (no key).
    pub unattributed: usize,
    /// Calls the authorizer refused.
    pub refused: usize,
    /// Calls of a subscription tollgate does not know (logged).
    pub unknown_subscription: usize,
    /// Calls the product's `billable_calls` does not count (e.g. 4xx, 5xx by default).
    pub not_billable: usize,
    /// Billable calls sent to the usage service.
    pub billable_calls: usize,
    /// Usage batches sent, and those the usage service had counted before (redeliveries).
    pub batches: usize,
    pub duplicate_batches: usize,
    /// Records counted, and refused by the usage service for the subscription's state.
    pub records_accepted: usize,
    pub records_rejected: usize,
    /// Records the usage service found invalid (e.g. older than its late window): logged
    /// and left out, the rest of their batch counted.
    pub records_dropped: usize,
    /// Batches refused whole for a reason a retry cannot fix (logged).
    pub failed_batches: usize,
}

impl Summary {
    /// The EMF document: CloudWatch turns its numbers into metrics in namespace `tollgate`.
    pub fn metrics(&self) -> Value {
        let names = [
            ("LogEvents", self.log_events),
            ("Malformed", self.malformed),
            ("Unattributed", self.unattributed),
            ("Refused", self.refused),
            ("UnknownSubscription", self.unknown_subscription),
            ("NotBillable", self.not_billable),
            ("BillableCalls", self.billable_calls),
            ("Batches", self.batches),
            ("DuplicateBatches", self.duplicate_batches),
            ("RecordsAccepted", self.records_accepted),
            ("RecordsRejected", self.records_rejected),
            ("RecordsDropped", self.records_dropped),
            ("FailedBatches", self.failed_batches),
        ];
        let mut doc = json!({
            "_aws": {
                "Timestamp": chrono::Utc::now().timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": "tollgate",
                    "Dimensions": [["Function"]],
                    "Metrics": names.iter().map(|(n, _)| json!({"Name": n, "Unit": "Count"})).collect::<Vec<_>>(),
                }],
            },
            "Function": "usage-from-logs",
        });
        for (n, v) in names {
            doc[n] = json!(v);
        }
        doc
    }
}

/// Why a delivery must be retried (nothing is lost: counted batches are duplicates then).
#[derive(Debug, thiserror::Error)]
pub enum FromLogsError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("usage batch {batch_id}: {message}")]
    Ingest { batch_id: String, message: String },
}

/// The Lambda: the pure adapter above, plus the usage service and the store.
#[cfg(feature = "service")]
mod service {
    use super::*;
    use aws_lambda_events::cloudwatch_logs::LogsEvent;
    use lambda_runtime::LambdaEvent;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tollgate_app::credit::CreditStore;
    use tollgate_domain::Catalog;
    use tollgate_domain::ids::{MeterId, SubscriptionId};
    use tollgate_domain::subscription::Subscription;
    use tollgate_domain::usage::BatchError;
    use usage::{IngestError, Usage};

    impl From<FromLogsError> for lambda_runtime::Diagnostic {
        fn from(e: FromLogsError) -> Self {
            let error_type = match e {
                FromLogsError::Store(_) => "StoreUnavailable",
                FromLogsError::Ingest { .. } => "IngestUnavailable",
            };
            lambda_runtime::Diagnostic {
                error_type: error_type.into(),
                error_message: e.to_string(),
            }
        }
    }

    /// The function's dependencies, built once per Lambda instance.
    pub struct UsageFromLogs {
        usage: Arc<Usage>,
        store: Arc<dyn CreditStore>,
        catalog: Arc<Catalog>,
    }

    impl UsageFromLogs {
        /// `usage` is the usage service `POST /usage` runs on; `store` and `catalog` are the same
        /// ones it was built with (read here to decide which calls are billable).
        pub fn new(usage: Arc<Usage>, store: Arc<dyn CreditStore>, catalog: Arc<Catalog>) -> Self {
            Self {
                usage,
                store,
                catalog,
            }
        }

        /// The Lambda entry point.
        pub async fn handle(
            &self,
            event: LambdaEvent<LogsEvent>,
        ) -> Result<Summary, FromLogsError> {
            let data = event.payload.aws_logs.data;
            let events: Vec<LogEvent> = data
                .log_events
                .into_iter()
                .map(|e| LogEvent {
                    id: e.id,
                    message: e.message,
                })
                .collect();
            self.process(&data.message_type, &data.log_group, &events)
                .await
        }

        /// Meters one delivery: `message_type` `DATA_MESSAGE` (anything else, i.e.
        /// `CONTROL_MESSAGE`, is ignored), the log group's name and its events.
        pub async fn process(
            &self,
            message_type: &str,
            log_group: &str,
            events: &[LogEvent],
        ) -> Result<Summary, FromLogsError> {
            let mut summary = Summary::default();
            if message_type != "DATA_MESSAGE" {
                tracing::info!(message_type, "not a data message: ignored");
                return Ok(summary);
            }
            summary.log_events = events.len();
            let planned = plan(log_group, events);
            summary.malformed = planned.malformed.len();
            summary.unattributed = planned.unattributed;
            summary.refused = planned.refused;
            for (id, e) in &planned.malformed {
                tracing::warn!(log_group, event_id = %id, error = %e, "malformed access-log line: not counted");
            }
            let mut failure = None;
            for chunk in &planned.chunks {
                if let Err(e) = self.send(chunk, &mut summary).await {
                    tracing::error!(batch_id = %chunk.batch_id, error = %e, "usage batch not counted; the delivery will be retried");
                    failure.get_or_insert(e);
                }
            }
            // EMF must be a bare JSON line on stdout, not wrapped by the tracing formatter.
            println!("{}", summary.metrics());
            match failure {
                Some(e) => Err(e),
                None => Ok(summary),
            }
        }

        async fn subscriptions(
            &self,
            chunk: &Chunk,
        ) -> Result<BTreeMap<String, Option<Subscription>>, StoreError> {
            let ids: BTreeSet<SubscriptionId> = chunk
                .lines
                .iter()
                .filter_map(|(_, l)| l.subscription_id.as_deref())
                .filter_map(|id| SubscriptionId::parse(id).ok())
                .collect();
            // One batch read (BatchGetItem in DynamoDB), not a GetItem per subscription.
            let ids: Vec<SubscriptionId> = ids.into_iter().collect();
            let mut found: BTreeMap<String, Option<Subscription>> =
                ids.iter().map(|id| (id.to_string(), None)).collect();
            for sub in self.store.get_subscriptions(&ids).await? {
                found.insert(sub.id.to_string(), Some(sub));
            }
            Ok(found)
        }

        async fn send(&self, chunk: &Chunk, summary: &mut Summary) -> Result<(), FromLogsError> {
            let subs = self.subscriptions(chunk).await?;
            let calls = MeterId::parse(CALLS_METER).expect("a valid meter id");
            let bytes = MeterId::parse(BYTES_METER).expect("a valid meter id");
            let mut records = Vec::new();
            for (event_id, line) in &chunk.lines {
                let sub_id = line.subscription_id.as_deref().unwrap_or_default();
                let Some(sub) = subs.get(sub_id).and_then(Option::as_ref) else {
                    summary.unknown_subscription += 1;
                    tracing::warn!(event_id = %event_id, subscription_id = sub_id, "call of an unknown subscription: not counted");
                    continue;
                };
                let Some(product) = self.catalog.product(sub.product_id.as_str()) else {
                    summary.unknown_subscription += 1;
                    continue;
                };
                if !product.billable_calls.counts(line.status) {
                    summary.not_billable += 1;
                    continue;
                }
                summary.billable_calls += 1;
                let timestamp = line
                    .time
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                if product.uses_meter(&calls) {
                    records.push(json!({"id": event_id, "subscription_id": sub_id,
                    "timestamp": timestamp, "meter": CALLS_METER, "value": 1}));
                }
                if product.uses_meter(&bytes) && line.response_length > 0 {
                    records.push(
                        json!({"id": format!("{event_id}.b"), "subscription_id": sub_id,
                    "timestamp": timestamp, "meter": BYTES_METER, "value": line.response_length}),
                    );
                }
            }
            // Invalid records (e.g. older than the late window) are left out and the rest sent
            // again under the same id: the refused attempt wrote nothing.
            for _ in 0..3 {
                if records.is_empty() {
                    return Ok(());
                }
                let body =
                    serde_json::to_vec(&json!({"batch_id": chunk.batch_id, "records": records}))
                        .expect("a batch serializes");
                match self.usage.ingest(&body).await {
                    Ok(answer) => {
                        summary.batches += 1;
                        if answer.duplicate {
                            summary.duplicate_batches += 1;
                        }
                        summary.records_accepted += answer.accepted;
                        summary.records_rejected += answer.rejected;
                        for r in &answer.rejections {
                            tracing::warn!(batch_id = %chunk.batch_id, event_id = %r.id, subscription_id = %r.subscription_id, reason = r.message, "call not counted");
                        }
                        return Ok(());
                    }
                    Err(IngestError::Batch(BatchError::InvalidRecords(errs))) => {
                        let bad: BTreeSet<usize> = errs.iter().map(|e| e.index).collect();
                        for e in &errs {
                            tracing::warn!(batch_id = %chunk.batch_id, field = %e.path(), event_id = ?e.id, reason = %e.reason, "usage record refused: left out");
                        }
                        summary.records_dropped += bad.len();
                        records = records
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| !bad.contains(i))
                            .map(|(_, r)| r)
                            .collect();
                    }
                    Err(IngestError::Batch(e)) => {
                        summary.failed_batches += 1;
                        tracing::error!(batch_id = %chunk.batch_id, error = %e, "usage batch refused whole: not counted");
                        return Ok(());
                    }
                    Err(IngestError::Api(e)) => {
                        return Err(FromLogsError::Ingest {
                            batch_id: chunk.batch_id.clone(),
                            message: e.to_string(),
                        });
                    }
                }
            }
            summary.failed_batches += 1;
            tracing::error!(batch_id = %chunk.batch_id, "usage batch still invalid after leaving out its invalid records");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, sub: &str, time_ms: i64, status: u16) -> LogEvent {
        LogEvent {
            id: id.into(),
            message: format!(
                r#"{{"id":"r{id}","time":"{time_ms}","status":"{status}","sub":"{sub}","allow":"true","bytes":"120","method":"GET","route":"/v1/x"}}"#
            ),
        }
    }

    #[test]
    fn reads_the_documented_format() {
        let l = parse_line(
            r#"{"id":"abc","time":"1772020800000","status":"200","sub":"sub_1","allow":"true","bytes":"-","method":"GET","route":"/x"}"#,
        )
        .unwrap();
        assert_eq!(l.status, 200);
        assert_eq!(l.subscription_id.as_deref(), Some("sub_1"));
        assert_eq!(l.response_length, 0);
        assert_eq!(l.time.timestamp(), 1_772_020_800);
        // Unquoted numbers (a provider's own format) read too; "-" means absent.
        let l = parse_line(
            r#"{"id":"a","time":1772020800000,"status":403,"sub":"-","allow":"false","bytes":12}"#,
        )
        .unwrap();
        assert_eq!(
            (l.status, l.allow, l.subscription_id),
            (403, Some(false), None)
        );
        assert!(matches!(
            parse_line("GET /x 200"),
            Err(LineError::NotJson(_))
        ));
        assert_eq!(
            parse_line(r#"{"id":"a","time":"1","sub":"s"}"#),
            Err(LineError::Missing("status"))
        );
        assert!(matches!(
            parse_line(r#"{"id":"a","time":"1","status":"ok"}"#),
            Err(LineError::Invalid {
                field: "status",
                ..
            })
        ));
    }

    #[test]
    fn the_same_events_make_the_same_batches_in_any_order() {
        let t = 1_772_020_800_000;
        let mut events: Vec<LogEvent> = (0..5_000)
            .map(|i| {
                line(
                    &format!("{i:08}"),
                    &format!("sub_{}", i % 3),
                    t + i * 1000,
                    200,
                )
            })
            .collect();
        let a = plan("/g", &events);
        events.reverse();
        events.push(events[7].clone()); // an event twice in one delivery counts once
        let b = plan("/g", &events);
        assert_eq!(a, b);
        assert_eq!(a.chunks.iter().map(|c| c.lines.len()).sum::<usize>(), 5_000);
        assert!(
            a.chunks
                .iter()
                .all(|c| c.lines.len() <= MAX_LINES_PER_BATCH)
        );
        // Another log group's events are other calls.
        assert_ne!(
            plan("/other", &events).chunks[0].batch_id,
            a.chunks[0].batch_id
        );
    }

    #[test]
    fn a_batch_holds_at_most_30_subscription_hours() {
        let t = 1_772_020_800_000;
        let events: Vec<LogEvent> = (0..100)
            .map(|i| line(&format!("{i:04}"), &format!("sub_{i}"), t, 200))
            .collect();
        let p = plan("/g", &events);
        assert_eq!(
            p.chunks.iter().map(|c| c.lines.len()).collect::<Vec<_>>(),
            vec![30, 30, 30, 10]
        );
    }

    #[test]
    fn malformed_refused_and_keyless_lines_are_set_aside() {
        let t = 1_772_020_800_000;
        let mut events = vec![line("1", "sub_1", t, 200)];
        events.push(LogEvent {
            id: "2".into(),
            message: "not json".into(),
        });
        events.push(LogEvent {
            id: "3".into(),
            message: format!(
                r#"{{"id":"x","time":"{t}","status":"401","sub":"-","allow":"-","bytes":"0"}}"#
            ),
        });
        events.push(LogEvent {
            id: "4".into(),
            message: format!(r#"{{"id":"y","time":"{t}","status":"403","sub":"sub_1","allow":"false","bytes":"0"}}"#),
        });
        let p = plan("/g", &events);
        assert_eq!(p.malformed.len(), 1);
        assert_eq!((p.unattributed, p.refused), (1, 1));
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.chunks[0].lines.len(), 1);
    }
}
