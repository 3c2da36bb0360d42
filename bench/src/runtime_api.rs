//! A local Lambda Runtime API (the `2018-06-01` HTTP interface a custom runtime polls): the
//! bench hands out events one at a time and records the answers, exactly as Lambda does for a
//! `provided.al2023` function, so the measured process is the deployed `bootstrap` unchanged.
//!
//! One server per function process: it also notes when the process first asks for work,
//! which is where Lambda's init phase ends.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What the function answered to one invocation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `false` when it posted to `/error` (an unhandled error, Lambda's "Unhandled").
    pub ok: bool,
    pub body: Bytes,
}

impl Outcome {
    /// For HTTP functions, the `statusCode` of the API Gateway response; `None` for others.
    pub fn status_code(&self) -> Option<u16> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .get("statusCode")?
            .as_u64()
            .map(|s| s as u16)
    }

    /// "2xx", "4xx", "5xx", "ok" (non-HTTP answer) or "error" (posted to `/error`).
    pub fn class(&self) -> String {
        if !self.ok {
            return "error".into();
        }
        match self.status_code() {
            Some(s) => format!("{}xx", s / 100),
            None => "ok".into(),
        }
    }
}

struct Invocation {
    id: String,
    payload: Bytes,
    reply: oneshot::Sender<Outcome>,
}

struct Inner {
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_next: Mutex<Option<oneshot::Sender<Instant>>>,
    init_error: Mutex<Option<String>>,
    /// Lambda's deadline for each invocation, relative to when it is handed out.
    timeout: Duration,
}

/// A running Runtime API; stops when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    tx: mpsc::Sender<Invocation>,
    inner: Arc<Inner>,
    first_next: Option<oneshot::Receiver<Instant>>,
    task: tokio::task::JoinHandle<()>,
    seq: u64,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RuntimeApi {
    /// Starts on a free port of 127.0.0.1. `timeout`: the deadline given with each event.
    pub async fn start(timeout: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(1);
        let (first_tx, first_rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            queue: tokio::sync::Mutex::new(rx),
            pending: Mutex::default(),
            first_next: Mutex::new(Some(first_tx)),
            init_error: Mutex::default(),
            timeout,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            tx,
            inner,
            first_next: Some(first_rx),
            task,
            seq: 0,
        })
    }

    /// `127.0.0.1:PORT`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// When the process first asked for work (the end of its init phase), or `None` if it did
    /// not within `wait`.
    pub async fn first_next(&mut self, wait: Duration) -> Option<Instant> {
        let rx = self.first_next.take()?;
        tokio::time::timeout(wait, rx).await.ok()?.ok()
    }

    /// What the function reported to `/init/error`, if anything.
    pub fn init_error(&self) -> Option<String> {
        self.inner.init_error.lock().expect("init error").clone()
    }

    /// Hands `payload` to the function and waits for its answer.
    pub async fn invoke(&mut self, payload: Bytes) -> anyhow::Result<Outcome> {
        self.seq += 1;
        let (reply, answer) = oneshot::channel();
        let inv = Invocation {
            id: format!("bench-{:08}-{}", self.seq, uuid::Uuid::new_v4().simple()),
            payload,
            reply,
        };
        self.tx
            .send(inv)
            .await
            .map_err(|_| anyhow::anyhow!("runtime API stopped"))?;
        tokio::time::timeout(self.inner.timeout + Duration::from_secs(5), answer)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within the invocation deadline"))?
            .map_err(|_| anyhow::anyhow!("runtime API dropped the invocation"))
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(tx) = inner.first_next.lock().expect("first next").take() {
        let _ = tx.send(Instant::now());
    }
    let inv = inner.queue.lock().await.recv().await;
    let Some(inv) = inv else {
        return StatusCode::GONE.into_response();
    };
    inner
        .pending
        .lock()
        .expect("pending")
        .insert(inv.id.clone(), inv.reply);
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        + inner.timeout;
    let mut headers = HeaderMap::new();
    let set = |h: &mut HeaderMap, k: &'static str, v: String| {
        h.insert(k, v.parse().expect("header value"));
    };
    set(&mut headers, "lambda-runtime-aws-request-id", inv.id);
    set(
        &mut headers,
        "lambda-runtime-deadline-ms",
        deadline.as_millis().to_string(),
    );
    set(
        &mut headers,
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:tollgate-bench".into(),
    );
    set(
        &mut headers,
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    set(&mut headers, "content-type", "application/json".into());
    (StatusCode::OK, headers, inv.payload).into_response()
}

fn answer(inner: &Inner, id: &str, outcome: Outcome) -> StatusCode {
    match inner.pending.lock().expect("pending").remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    answer(&inner, &id, Outcome { ok: true, body })
}

async fn error(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&inner, &id, Outcome { ok: false, body })
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    *inner.init_error.lock().expect("init error") =
        Some(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}
