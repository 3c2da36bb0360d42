//! HTTP front: Stripe's `/v1` API, the `/_emulator` control API, and the hosted checkout page.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::objects::API_VERSION;
use crate::params::Params;
use crate::state::{Card, Fault, IdempotentResult, RequestRecord, State, new_id};
use crate::webhooks::Dispatcher;

/// Stripe keeps idempotent results for at least 24 hours.
const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 3600;
/// Stripe's limit on an `Idempotency-Key` (https://docs.stripe.com/api/idempotent_requests).
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The API key of a request: `Authorization: Bearer KEY`, or HTTP Basic with the key as the
/// user name (`curl -u KEY:`), the two forms https://docs.stripe.com/api/authentication shows.
fn api_key(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers.get("authorization")?.to_str().ok()?;
    if let Some(k) = v.strip_prefix("Bearer ") {
        return Some(k.trim().to_string()).filter(|k| !k.is_empty());
    }
    let raw = v.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or_default().to_string();
    Some(user).filter(|k| !k.is_empty())
}

/// Stripe's secret (`sk_`) and restricted (`rk_`) keys, test or live mode:
/// `sk_test_…`, `sk_live_…`, `rk_test_…`, `rk_live_…` (https://docs.stripe.com/keys).
fn valid_key_format(key: &str) -> bool {
    ["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
        .iter()
        .any(|p| {
            key.strip_prefix(p).is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        })
}

pub struct Shared {
    pub state: Mutex<State>,
    pub dispatcher: Dispatcher,
    /// (object type, field) removed from responses: the conformance suite's self-test fault.
    pub drop_field: Option<(String, String)>,
}

fn drop_field(v: &mut Value, kind: &str, field: &str) {
    match v {
        Value::Object(m) => {
            if m.get("object").and_then(Value::as_str) == Some(kind) {
                m.remove(field);
            }
            for x in m.values_mut() {
                drop_field(x, kind, field);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| drop_field(x, kind, field)),
        _ => {}
    }
}

pub type App = Arc<Shared>;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/_emulator/state", get(control_state))
        .route("/_emulator/clock/advance", post(control_advance))
        .route("/_emulator/clock/set", post(control_set_time))
        .route(
            "/_emulator/webhook_endpoint",
            post(control_webhook_endpoint),
        )
        .route(
            "/_emulator/webhook_behavior",
            post(control_webhook_behavior),
        )
        .route("/_emulator/webhooks", get(control_deliveries))
        .route("/_emulator/meter_error_reports", get(control_meter_errors))
        .route("/_emulator/webhooks/wait_idle", post(control_wait_idle))
        .route(
            "/_emulator/checkout/{id}/complete",
            post(control_complete_checkout),
        )
        .route("/_emulator/customers/{id}/card", post(control_card))
        .route(
            "/_emulator/faults",
            get(control_faults)
                .post(control_add_fault)
                .delete(control_clear_faults),
        )
        .route(
            "/_emulator/requests",
            get(control_requests).delete(control_clear_requests),
        )
        .route("/checkout/{id}", get(checkout_page))
        .route("/checkout/{id}/pay", post(checkout_pay))
        .route("/checkout/{id}/cancel", get(checkout_cancel))
        .fallback(v1)
        .with_state(app)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

async fn v1(
    AxState(app): AxState<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let request_id = new_id("req");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut st = app.state.lock().expect("state");
    let mut record = RequestRecord {
        id: request_id.clone(),
        method: method.to_string(),
        path: path.clone(),
        idempotency_key: key.clone(),
        status: 200,
        replayed: false,
        fault_injected: false,
        at: st.now,
    };
    let (status, body, should_retry) = handle(
        &mut st,
        &method,
        &uri,
        &headers,
        &body,
        &request_id,
        key.as_deref(),
        &mut record,
    );
    record.status = status.as_u16();
    st.requests.push(record.clone());
    drop(st);
    let mut body = body;
    if let Some((kind, field)) = &app.drop_field {
        drop_field(&mut body, kind, field);
    }

    let mut resp = json_response(status, &body);
    let h = resp.headers_mut();
    h.insert(
        "request-id",
        HeaderValue::from_str(&request_id).expect("ascii id"),
    );
    h.insert("stripe-version", HeaderValue::from_static(API_VERSION));
    if let Some(k) = key.as_deref().and_then(|k| HeaderValue::from_str(k).ok()) {
        h.insert("idempotency-key", k);
    }
    if record.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(retry) = should_retry {
        h.insert(
            "stripe-should-retry",
            HeaderValue::from_static(if retry { "true" } else { "false" }),
        );
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn handle(
    st: &mut State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
    key: Option<&str>,
    record: &mut RequestRecord,
) -> (StatusCode, Value, Option<bool>) {
    let path = uri.path();
    let err = |e: ApiError| (e.status, e.body(), None);
    if !path.starts_with("/v1/") {
        return err(ApiError::unrecognized_url(method.as_str(), path));
    }
    // Stripe answers 401 with no key and with a key that is not one of its secret or restricted
    // keys (https://docs.stripe.com/keys, https://docs.stripe.com/api/authentication).
    match api_key(headers) {
        None => return err(ApiError::unauthenticated()),
        Some(k) if !valid_key_format(&k) => return err(ApiError::invalid_api_key(&k)),
        Some(_) => {}
    }
    // "Keys can be up to 255 characters long" (https://docs.stripe.com/api/idempotent_requests).
    if let Some(k) = key
        && k.len() > MAX_IDEMPOTENCY_KEY_LEN
    {
        return err(ApiError::invalid(
            "Idempotency-Key",
            format!(
                "Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters long, \
                 got {}.",
                k.len()
            ),
        ));
    }
    // Injected faults stand for failures before the endpoint runs (rate limiter, load
    // balancer), so, as at Stripe, no idempotent result is saved and a retry can succeed.
    if let Some(f) = st
        .faults
        .iter_mut()
        .find(|f| f.matches(method.as_str(), path))
    {
        f.times -= 1;
        record.fault_injected = true;
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::injected(status);
        return (e.status, e.body(), Some(true));
    }
    let mut params = match crate::form::parse(uri.query().unwrap_or("")) {
        Ok(p) => p,
        Err(m) => return err(ApiError::invalid("query", m)),
    };
    if method == Method::POST || method == Method::DELETE {
        let text = String::from_utf8_lossy(body);
        match crate::form::parse(&text) {
            Ok(Value::Object(b)) => {
                for (k, v) in b {
                    params[k] = v;
                }
            }
            Ok(_) => {}
            Err(m) => return err(ApiError::invalid("body", m)),
        }
    }
    let idempotent = method == Method::POST && key.is_some();
    let fingerprint = format!("{method} {path} {params}");
    if idempotent {
        let key = key.expect("checked");
        let now = st.now;
        st.idempotency
            .retain(|_, r| r.created > now - IDEMPOTENCY_WINDOW_SECS);
        if let Some(saved) = st.idempotency.get(key) {
            if saved.fingerprint != fingerprint {
                return err(ApiError::idempotency_mismatch(key));
            }
            record.replayed = true;
            return (
                StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK),
                saved.body.clone(),
                None,
            );
        }
    }
    st.current_request = Some((request_id.to_string(), key.map(str::to_string)));
    let result = st.dispatch(method.as_str(), path, &Params(params));
    st.current_request = None;
    let (status, body, save) = match result {
        Ok(v) => (StatusCode::OK, v, true),
        // Stripe saves no result when parameters fail validation before the endpoint runs.
        Err(e) => {
            let validation = matches!(
                e.code,
                Some("parameter_missing" | "parameter_invalid" | "parameter_unknown")
            );
            (e.status, e.body(), !validation)
        }
    };
    if idempotent && save {
        let created = st.now;
        st.idempotency.insert(
            key.expect("checked").to_string(),
            IdempotentResult {
                fingerprint,
                status: status.as_u16(),
                body: body.clone(),
                created,
            },
        );
    }
    (status, body, None)
}

async fn control_state(AxState(app): AxState<App>) -> Response {
    let st = app.state.lock().expect("state");
    json_response(
        StatusCode::OK,
        &json!({"now": st.now, "base_url": st.base_url, "api_version": API_VERSION}),
    )
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn control_advance(
    AxState(app): AxState<App>,
    axum::Json(a): axum::Json<Advance>,
) -> Response {
    if a.seconds < 0 {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "the clock only moves forward", "param": "seconds"}}),
        );
    }
    let mut st = app.state.lock().expect("state");
    let target = st.now + a.seconds;
    st.advance_to(target);
    json_response(StatusCode::OK, &json!({"now": st.now}))
}

#[derive(Deserialize)]
struct SetTime {
    time: i64,
}

async fn control_set_time(
    AxState(app): AxState<App>,
    axum::Json(t): axum::Json<SetTime>,
) -> Response {
    let mut st = app.state.lock().expect("state");
    if t.time < st.now {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "the clock only moves forward", "param": "time"}}),
        );
    }
    st.advance_to(t.time);
    json_response(StatusCode::OK, &json!({"now": st.now}))
}

#[derive(Deserialize)]
struct Endpoint {
    url: Option<String>,
    secret: Option<String>,
}

async fn control_webhook_endpoint(
    AxState(app): AxState<App>,
    axum::Json(e): axum::Json<Endpoint>,
) -> Response {
    let mut cfg = app.dispatcher.config.lock().expect("config");
    cfg.url = e.url;
    if let Some(s) = e.secret {
        cfg.secret = s;
    }
    json_response(StatusCode::OK, &json!({"url": cfg.url}))
}

#[derive(Deserialize)]
struct Behavior {
    duplicates: Option<bool>,
    reorder: Option<bool>,
}

async fn control_webhook_behavior(
    AxState(app): AxState<App>,
    axum::Json(b): axum::Json<Behavior>,
) -> Response {
    let mut cfg = app.dispatcher.config.lock().expect("config");
    if let Some(d) = b.duplicates {
        cfg.duplicates = d;
    }
    if let Some(r) = b.reorder {
        cfg.reorder = r;
    }
    json_response(
        StatusCode::OK,
        &json!({"duplicates": cfg.duplicates, "reorder": cfg.reorder}),
    )
}

async fn control_deliveries(AxState(app): AxState<App>) -> Response {
    let log = app.dispatcher.log.lock().expect("log").clone();
    json_response(StatusCode::OK, &json!({"deliveries": log}))
}

async fn control_meter_errors(AxState(app): AxState<App>) -> Response {
    let st = app.state.lock().expect("state");
    json_response(StatusCode::OK, &json!({"reports": st.meter_error_reports}))
}

async fn control_wait_idle(AxState(app): AxState<App>) -> Response {
    let idle = crate::wait_idle(&app, std::time::Duration::from_secs(30)).await;
    json_response(
        if idle {
            StatusCode::OK
        } else {
            StatusCode::GATEWAY_TIMEOUT
        },
        &json!({"idle": idle}),
    )
}

#[derive(Deserialize)]
struct CardChoice {
    card: Card,
}

async fn control_complete_checkout(
    AxState(app): AxState<App>,
    Path(id): Path<String>,
    axum::Json(c): axum::Json<CardChoice>,
) -> Response {
    let mut st = app.state.lock().expect("state");
    match st.complete_checkout(&id, c.card) {
        Ok(s) => json_response(StatusCode::OK, &s),
        Err(e) => json_response(e.status, &e.body()),
    }
}

async fn control_card(
    AxState(app): AxState<App>,
    Path(id): Path<String>,
    axum::Json(c): axum::Json<CardChoice>,
) -> Response {
    let mut st = app.state.lock().expect("state");
    if !st.customers.contains(&id) {
        let e = ApiError::no_such("customer", &id, "id");
        return json_response(e.status, &e.body());
    }
    st.cards.insert(id, c.card);
    json_response(StatusCode::OK, &json!({"card": c.card}))
}

async fn control_faults(AxState(app): AxState<App>) -> Response {
    let st = app.state.lock().expect("state");
    json_response(StatusCode::OK, &json!({"faults": st.faults}))
}

async fn control_add_fault(
    AxState(app): AxState<App>,
    axum::Json(f): axum::Json<Fault>,
) -> Response {
    if StatusCode::from_u16(f.status).is_err() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "invalid status", "param": "status"}}),
        );
    }
    let mut st = app.state.lock().expect("state");
    st.faults.push(f);
    json_response(StatusCode::OK, &json!({"faults": st.faults}))
}

async fn control_clear_faults(AxState(app): AxState<App>) -> Response {
    app.state.lock().expect("state").faults.clear();
    json_response(StatusCode::OK, &json!({"faults": []}))
}

async fn control_requests(AxState(app): AxState<App>) -> Response {
    let st = app.state.lock().expect("state");
    let writes = st.requests.iter().filter(|r| r.is_write()).count();
    json_response(
        StatusCode::OK,
        &json!({"writes": writes, "requests": st.requests}),
    )
}

async fn control_clear_requests(AxState(app): AxState<App>) -> Response {
    app.state.lock().expect("state").requests.clear();
    json_response(StatusCode::OK, &json!({"requests": []}))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn checkout_page(AxState(app): AxState<App>, Path(id): Path<String>) -> Response {
    let st = app.state.lock().expect("state");
    let Some(s) = st.sessions.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>".to_string()),
        )
            .into_response();
    };
    let items: String = st
        .session_items
        .get(&id)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let q = i["quantity"]
                        .as_u64()
                        .map(|q| format!("{q} × "))
                        .unwrap_or_else(|| "metered: ".into());
                    format!(
                        "<li>{}{} — {} {}</li>",
                        q,
                        escape(i["description"].as_str().unwrap_or("")),
                        i["amount_total"],
                        escape(i["currency"].as_str().unwrap_or(""))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let status = s["status"].as_str().unwrap_or("");
    let buttons = if status == "open" {
        format!(
            r#"<form method="post" action="/checkout/{id}/pay"><button name="card" value="good">Pay with good card (4242…)</button>
<button name="card" value="declined">Pay with declined card (…0002)</button></form>
<p><a href="/checkout/{id}/cancel">Cancel</a></p>"#
        )
    } else {
        format!("<p>This session is {status}.</p>")
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Checkout (Stripe emulator)</title></head><body>\
         <h1>Checkout — {mode}</h1><ul>{items}</ul><p>Total due now: {total} {cur}</p>{buttons}</body></html>",
        mode = escape(s["mode"].as_str().unwrap_or("")),
        total = s["amount_total"],
        cur = escape(s["currency"].as_str().unwrap_or(""))
    ))
    .into_response()
}

#[derive(Deserialize)]
struct PayForm {
    card: Card,
}

async fn checkout_pay(
    AxState(app): AxState<App>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<PayForm>,
) -> Response {
    let mut st = app.state.lock().expect("state");
    match st.complete_checkout(&id, f.card) {
        Ok(s) => {
            let url = s["success_url"]
                .as_str()
                .unwrap_or("/")
                .replace("{CHECKOUT_SESSION_ID}", &id);
            Redirect::to(&url).into_response()
        }
        Err(e) => (
            e.status,
            Html(format!(
                "<!doctype html><p>{}</p><p><a href=\"/checkout/{id}\">Try again</a></p>",
                escape(&e.message)
            )),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct NoQuery {}

async fn checkout_cancel(
    AxState(app): AxState<App>,
    Path(id): Path<String>,
    _q: Query<NoQuery>,
) -> Response {
    let st = app.state.lock().expect("state");
    let url = st
        .sessions
        .get(&id)
        .and_then(|s| s["cancel_url"].as_str())
        .unwrap_or("/")
        .to_string();
    Redirect::to(&url).into_response()
}
