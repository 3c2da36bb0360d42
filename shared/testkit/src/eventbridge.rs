//! An EventBridge endpoint for tests: a small HTTP server on 127.0.0.1 that answers
//! `PutEvents` the way AWS does (JSON 1.1 protocol, `X-Amz-Target: AWSEvents.PutEvents`) and
//! records every accepted entry.
//!
//! Tests point the real SDK client at it (`AWS_ENDPOINT_URL_EVENTBRIDGE`, or `endpoint_url` on
//! the SDK config) and then assert on what was actually put on the wire, so the publisher's
//! serialization, chunking and retry of refused entries are all exercised — not a fake of the
//! publisher itself.
//!
//! It checks what AWS checks and a mistake in our publisher would trip: 1..=10 entries per
//! call, each with `Source`, `DetailType` and a `Detail` that is a JSON object, a signed request.
//! [`EventBridgeCapture::refuse_next`] makes it answer like an EventBridge having a bad moment
//! (`FailedEntryCount > 0` in a 200 answer), to test the retry path.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One entry EventBridge accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEntry {
    pub event_id: String,
    pub event_bus_name: Option<String>,
    pub source: String,
    pub detail_type: String,
    /// `Detail`, parsed.
    pub detail: Value,
    pub resources: Vec<String>,
}

#[derive(Debug, Default)]
struct Recorder {
    entries: Vec<CapturedEntry>,
    /// Entries per PutEvents call, in arrival order (rejected calls included).
    calls: Vec<usize>,
    /// Error codes to answer the next entries with, one per entry, oldest first.
    refusals: VecDeque<String>,
    next_id: u64,
}

type Shared = Arc<Mutex<Recorder>>;

/// A running capture server; it stops when dropped.
pub struct EventBridgeCapture {
    addr: SocketAddr,
    recorder: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl EventBridgeCapture {
    /// Starts the server on a free port of 127.0.0.1, on the current tokio runtime.
    pub async fn start() -> Self {
        let recorder = Shared::default();
        let app = Router::new()
            .route("/", post(put_events))
            .with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("capture server");
        });
        Self {
            addr,
            recorder,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `AWS_ENDPOINT_URL_EVENTBRIDGE`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every accepted entry, in the order EventBridge accepted them.
    pub fn entries(&self) -> Vec<CapturedEntry> {
        self.lock().entries.clone()
    }

    /// The accepted entries' detail-types, in order.
    pub fn detail_types(&self) -> Vec<String> {
        self.lock()
            .entries
            .iter()
            .map(|e| e.detail_type.clone())
            .collect()
    }

    /// How many entries each PutEvents call carried, in arrival order.
    pub fn calls(&self) -> Vec<usize> {
        self.lock().calls.clone()
    }

    /// Forgets what was captured (between phases of one test).
    pub fn clear(&self) {
        let mut r = self.lock();
        r.entries.clear();
        r.calls.clear();
    }

    /// Refuses the next `n` entries that arrive (over any number of calls) with `error_code`
    /// (`InternalFailure`, `ThrottlingException`, ...), inside a 200 answer, as EventBridge does.
    pub fn refuse_next(&self, n: usize, error_code: &str) {
        let mut r = self.lock();
        r.refusals
            .extend(std::iter::repeat_n(error_code.to_owned(), n));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().expect("capture recorder poisoned")
    }
}

impl Drop for EventBridgeCapture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn aws_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/x-amz-json-1.1"),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                "00000000-0000-4000-8000-000000000000",
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

fn client_error(kind: &str, message: &str) -> Response {
    aws_json(
        StatusCode::BAD_REQUEST,
        json!({"__type": kind, "message": message}),
    )
}

async fn put_events(State(recorder): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target != "AWSEvents.PutEvents" {
        return client_error(
            "UnknownOperationException",
            &format!("this capture server answers only AWSEvents.PutEvents, not {target:?}"),
        );
    }
    let signed = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "));
    if !signed {
        return client_error(
            "MissingAuthenticationTokenException",
            "request is not SigV4-signed",
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return client_error("SerializationException", &e.to_string()),
    };
    let Some(entries) = request.get("Entries").and_then(Value::as_array) else {
        return client_error("ValidationException", "Entries is required");
    };
    let mut r = recorder.lock().expect("capture recorder poisoned");
    r.calls.push(entries.len());
    if entries.is_empty() || entries.len() > 10 {
        return client_error(
            "ValidationException",
            &format!(
                "1 validation error detected: Value at 'entries' failed to satisfy constraint: \
                 Member must have length between 1 and 10 (got {})",
                entries.len()
            ),
        );
    }
    let mut results = Vec::with_capacity(entries.len());
    let mut failed = 0;
    for entry in entries {
        match accept(entry) {
            Err((code, message)) => {
                failed += 1;
                results.push(json!({"ErrorCode": code, "ErrorMessage": message}));
            }
            Ok(_) if !r.refusals.is_empty() => {
                let code = r.refusals.pop_front().expect("checked non-empty");
                failed += 1;
                results.push(json!({"ErrorCode": code, "ErrorMessage": "refused by the test"}));
            }
            Ok(mut captured) => {
                r.next_id += 1;
                captured.event_id = format!("00000000-0000-4000-8000-{:012x}", r.next_id);
                results.push(json!({"EventId": captured.event_id}));
                r.entries.push(captured);
            }
        }
    }
    aws_json(
        StatusCode::OK,
        json!({"FailedEntryCount": failed, "Entries": results}),
    )
}

/// Checks one entry as EventBridge does; refused entries get a per-entry error code.
fn accept(entry: &Value) -> Result<CapturedEntry, (&'static str, String)> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
    let source = text("Source").ok_or(("InvalidArgument", "Source is required".to_owned()))?;
    let detail_type =
        text("DetailType").ok_or(("InvalidArgument", "DetailType is required".to_owned()))?;
    let detail_raw = text("Detail").ok_or(("InvalidArgument", "Detail is required".to_owned()))?;
    let detail: Value = serde_json::from_str(&detail_raw)
        .map_err(|e| ("MalformedDetail", format!("Detail is not valid JSON: {e}")))?;
    if !detail.is_object() {
        return Err(("MalformedDetail", "Detail must be a JSON object".to_owned()));
    }
    let resources = entry
        .get("Resources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(CapturedEntry {
        event_id: String::new(),
        event_bus_name: text("EventBusName"),
        source,
        detail_type,
        detail,
        resources,
    })
}
