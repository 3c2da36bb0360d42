//! The provider's API Gateway, played locally: `/_local/api/...` is the REST API of
//! `examples/provider-api/template.yaml`.
//!
//! Each call goes through the real authorizer handler (the REST API `REQUEST` authorizer event
//! API Gateway sends), then, when allowed, to a tiny sample upstream (a weather forecast); a
//! refusal is answered as the template's gateway responses answer it. Every call writes one
//! access-log line in [`usage_from_logs::ACCESS_LOG_FORMAT`], and the lines reach the real
//! `usage-from-logs` handler as CloudWatch Logs delivers them to a subscribed Lambda:
//! `{"awslogs": {"data": base64(gzip(JSON))}}`, in batches, sometimes twice.

use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use std::io::Write;
use tollgate_domain::time::Timestamp;

/// API Gateway's REST API id, stage and account, as the local stack names them.
pub const API_ID: &str = "localapi";
pub const STAGE: &str = "local";
pub const ACCOUNT: &str = "000000000000";
/// The access log group the lines are written to.
pub const LOG_GROUP: &str = "/provider-api/access";

/// A call as the gateway received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: http::Method,
    /// The path below `/_local/api` (`/v1/forecast`).
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub request_id: String,
    pub time: Timestamp,
}

/// The REST API `REQUEST` authorizer event for a call (as in `events/authorizer/request.json`).
pub fn authorizer_event(call: &Call) -> Value {
    let mut headers = serde_json::Map::new();
    let mut multi = serde_json::Map::new();
    for (name, value) in &call.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_string(), json!(v));
        multi
            .entry(name.as_str().to_string())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("array")
            .push(json!(v));
    }
    let mut query = serde_json::Map::new();
    for pair in call.query.as_deref().unwrap_or("").split('&') {
        if let Some((k, v)) = pair.split_once('=')
            && !k.is_empty()
        {
            query.insert(k.to_string(), json!(v));
        }
    }
    json!({
        "type": "REQUEST",
        "methodArn": format!("arn:aws:execute-api:us-east-1:{ACCOUNT}:{API_ID}/{STAGE}/{}{}", call.method, call.path),
        "resource": call.path,
        "path": call.path,
        "httpMethod": call.method.as_str(),
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": query,
        "pathParameters": {},
        "stageVariables": {},
        "requestContext": {
            "resourcePath": call.path,
            "httpMethod": call.method.as_str(),
            "path": format!("/{STAGE}{}", call.path),
            "accountId": ACCOUNT,
            "stage": STAGE,
            "requestId": call.request_id,
            "requestTimeEpoch": call.time.timestamp_millis(),
            "apiId": API_ID,
        },
    })
}

/// The sample upstream: `GET /v1/forecast?city=lisbon|oslo|austin` answers 200 with a small
/// forecast; an unknown city 404, another path 404, another method 405.
pub fn upstream(call: &Call, subscription_id: &str) -> (u16, String) {
    const CITIES: [(&str, i32); 3] = [("lisbon", 19), ("oslo", 4), ("austin", 27)];
    if call.path.trim_end_matches('/') != "/v1/forecast" {
        return (404, json!({"message": "Not Found"}).to_string());
    }
    if call.method != http::Method::GET {
        return (405, json!({"message": "Method Not Allowed"}).to_string());
    }
    let city = call
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("city="))
        .unwrap_or("")
        .to_ascii_lowercase();
    match CITIES.iter().find(|(c, _)| *c == city) {
        Some((c, t)) => (
            200,
            json!({"city": c, "celsius": t, "subscription": subscription_id}).to_string(),
        ),
        None => (
            404,
            json!({"error": "unknown_city", "city": city}).to_string(),
        ),
    }
}

/// One access-log line in [`usage_from_logs::ACCESS_LOG_FORMAT`]; `-` where API Gateway has
/// no value.
pub fn access_log_line(
    call: &Call,
    status: u16,
    context: Option<&Value>,
    response_length: usize,
) -> String {
    let ctx = |k: &str| -> String {
        match context.and_then(|c| c.get(k)) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "-".into(),
        }
    };
    json!({
        "id": call.request_id,
        "time": call.time.timestamp_millis().to_string(),
        "status": status.to_string(),
        "sub": ctx("subscription_id"),
        "allow": ctx("allow"),
        "bytes": response_length.to_string(),
        "method": call.method.as_str(),
        "route": call.path,
    })
    .to_string()
}

/// One log event as CloudWatch stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Unique, increasing (CloudWatch's ids are 56-digit numbers).
    pub id: String,
    pub timestamp_ms: i64,
    pub message: String,
}

/// The event CloudWatch Logs sends a subscribed Lambda for `records`:
/// `{"awslogs": {"data": base64(gzip(JSON))}}`.
pub fn subscription_event(records: &[LogRecord]) -> Value {
    let data = json!({
        "messageType": "DATA_MESSAGE",
        "owner": ACCOUNT,
        "logGroup": LOG_GROUP,
        "logStream": format!("{API_ID}_{STAGE}"),
        "subscriptionFilters": ["tollgate-usage"],
        "logEvents": records.iter().map(|r| json!({
            "id": r.id, "timestamp": r.timestamp_ms, "message": r.message,
        })).collect::<Vec<_>>(),
    });
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(data.to_string().as_bytes())
        .expect("gzip to memory");
    let bytes = gz.finish().expect("gzip to memory");
    json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(bytes)}})
}

/// How the buffered log lines are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Log events per subscription batch.
    pub batch_size: usize,
    /// Every `redeliver_every`-th batch is delivered a second time (0: never), as Lambda's
    /// async retries and CloudWatch redeliveries do.
    pub redeliver_every: usize,
    /// Deliver the batches last first (delivery order is not log order).
    pub reverse: bool,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            batch_size: 100,
            redeliver_every: 3,
            reverse: false,
        }
    }
}

/// The deliveries for `records`: batches of `batch_size`, some twice, maybe last first.
pub fn deliveries(records: &[LogRecord], how: Delivery) -> Vec<Vec<LogRecord>> {
    let mut batches: Vec<Vec<LogRecord>> = records
        .chunks(how.batch_size.max(1))
        .map(<[LogRecord]>::to_vec)
        .collect();
    if how.reverse {
        batches.reverse();
    }
    let mut out = Vec::with_capacity(batches.len() * 2);
    for (i, b) in batches.into_iter().enumerate() {
        let twice = how.redeliver_every > 0 && (i + 1) % how.redeliver_every == 0;
        if twice {
            out.push(b.clone());
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::cloudwatch_logs::LogsEvent;

    #[test]
    fn a_subscription_event_decodes_as_aws_lambda_events_reads_it() {
        let records: Vec<LogRecord> = (0..3)
            .map(|i| LogRecord {
                id: format!("{i:056}"),
                timestamp_ms: 1_772_020_800_000 + i,
                message: format!("line {i}"),
            })
            .collect();
        // As the Lambda runtime reads it: from the bytes (LogsEvent borrows its keys).
        let ev: LogsEvent =
            serde_json::from_str(&subscription_event(&records).to_string()).unwrap();
        let data = ev.aws_logs.data;
        assert_eq!(data.message_type, "DATA_MESSAGE");
        assert_eq!(data.log_group, LOG_GROUP);
        assert_eq!(data.log_events.len(), 3);
        assert_eq!(data.log_events[2].message, "line 2");
        assert_eq!(data.log_events[1].id, records[1].id);
    }

    #[test]
    fn deliveries_repeat_and_reorder_batches() {
        let records: Vec<LogRecord> = (0..10)
            .map(|i| LogRecord {
                id: format!("{i:056}"),
                timestamp_ms: i,
                message: String::new(),
            })
            .collect();
        let d = deliveries(
            &records,
            Delivery {
                batch_size: 3,
                redeliver_every: 2,
                reverse: true,
            },
        );
        // 4 batches (3,3,3,1), last first; the 2nd and 4th delivered twice.
        let sizes: Vec<usize> = d.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 3, 3, 3, 3, 3]);
        assert_eq!(d[1], d[2]);
        assert_eq!(d[4], d[5]);
    }
}
