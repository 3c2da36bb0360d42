//! Local stand-ins for the AWS services a function talks to at init or per request:
//! - Secrets Manager (`GetSecretValue` only), so the functions resolve their `*_ARN` secrets
//!   as deployed — three of them fetch the Stripe key during init, and that cost belongs in
//!   the init figure;
//! - a counting proxy in front of DynamoDB Local, so "write requests per batch" is what went
//!   over the wire, not what the code intends.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

async fn serve(app: Router) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// The secret values, keyed by ARN. The ARNs end in the variable's name.
pub fn secret_arn(name: &str) -> String {
    format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:tollgate/{name}-AbCdEf")
}

pub struct SecretsManager {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SecretsManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SecretsManager {
    pub async fn start(secrets: BTreeMap<String, String>) -> std::io::Result<Self> {
        let app = Router::new()
            .route("/", post(get_secret_value))
            .with_state(Arc::new(secrets));
        let (addr, task) = serve(app).await?;
        Ok(Self { addr, task })
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn get_secret_value(
    State(secrets): State<Arc<BTreeMap<String, String>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = req["SecretId"].as_str().unwrap_or("");
    let json = |status: StatusCode, v: serde_json::Value| {
        (
            status,
            [("content-type", "application/x-amz-json-1.1")],
            v.to_string(),
        )
            .into_response()
    };
    match (target, secrets.get(id)) {
        ("secretsmanager.GetSecretValue", Some(value)) => json(
            StatusCode::OK,
            serde_json::json!({
                "ARN": id, "Name": id.rsplit(':').next().unwrap_or(id),
                "SecretString": value, "VersionId": "00000000-0000-0000-0000-000000000001",
                "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9
            }),
        ),
        _ => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"__type": "ResourceNotFoundException",
                "message": format!("Secrets Manager can't find the specified secret: {id}")}),
        ),
    }
}

/// Counts DynamoDB requests by operation (`X-Amz-Target`) and forwards them to `upstream`.
/// DynamoDB Local does not check SigV4 signatures, so forwarding them unchanged is fine.
pub struct CountingProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// The DynamoDB operations that write (each is one billed write request, whatever it holds).
pub const WRITE_OPERATIONS: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

/// The counter of items written (a transaction or batch write counts each item it holds).
pub const ITEMS_KEY: &str = "(items written)";

fn written_items(op: &str, body: &[u8]) -> u64 {
    let v = || serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    match op {
        "PutItem" | "UpdateItem" | "DeleteItem" => 1,
        "TransactWriteItems" => v()["TransactItems"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|i| i.get("ConditionCheck").is_none())
                .count() as u64
        }),
        "BatchWriteItem" => v()["RequestItems"].as_object().map_or(0, |m| {
            m.values()
                .filter_map(|a| a.as_array())
                .map(|a| a.len() as u64)
                .sum()
        }),
        _ => 0,
    }
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .map_err(std::io::Error::other)?,
            counts: counts.clone(),
        };
        let app = Router::new()
            .route("/", any(forward))
            .route("/{*path}", any(forward))
            .with_state(state);
        let (addr, task) = serve(app).await?;
        Ok(Self { addr, counts, task })
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests per operation since the last `reset`.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("counts").clone()
    }

    /// Items written by those requests (condition checks excluded).
    pub fn items_written(&self) -> u64 {
        self.counts().get(ITEMS_KEY).copied().unwrap_or(0)
    }

    pub fn writes(&self) -> u64 {
        self.counts()
            .iter()
            .filter(|(op, _)| WRITE_OPERATIONS.contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset(&self) {
        self.counts.lock().expect("counts").clear();
    }
}

async fn forward(
    State(s): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("?")
        .to_string();
    let items = written_items(&op, &body);
    {
        let mut counts = s.counts.lock().expect("counts");
        *counts.entry(op).or_default() += 1;
        if items > 0 {
            *counts.entry(ITEMS_KEY.to_string()).or_default() += items;
        }
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = s
        .client
        .request(method, format!("{}{}", s.upstream, path))
        .body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let mut out = Response::builder().status(status.as_u16());
            for (k, v) in r.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    out = out.header(k, v);
                }
            }
            let bytes = r.bytes().await.unwrap_or_default();
            out.body(Body::from(bytes))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
