//! `openapi.yaml` is kept in step with the code:
//!
//! - its operations are exactly the HTTP API routes of `template.yaml` (which the local stack
//!   serves), with the path parameters each route names;
//! - its request schemas match the Rust types the handlers parse (`CheckoutRequestBody`,
//!   `UsageBatchDoc`): the same fields, the same required ones;
//! - every answer the real handlers give, through the local stack, matches the documented
//!   schema of its route and status, with no undocumented field; and every operation is
//!   exercised.

mod sam;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tollgate_local::{LocalStack, StackOptions};
use tollgate_stripe_emulator::Card;

fn openapi() -> Value {
    let text =
        std::fs::read_to_string(sam::repo_root().join("openapi.yaml")).expect("openapi.yaml");
    serde_yaml::from_str(&text).expect("openapi.yaml is YAML")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `"METHOD /path"` of every operation.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    ops
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// Checks `value` against an OpenAPI 3.1 schema: types (with `null`), enums, required and
/// declared properties (`additionalProperties: false` refuses others), items.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Value::Object(obj) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(name) {
                errors.push(format!("{at}: required field {name} missing"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{k}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}: field {k} is not documented"))
                    }
                    Some(s @ Value::Object(_)) => validate(doc, s, v, &format!("{at}.{k}"), errors),
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(doc, s, item, &format!("{at}[{i}]"), errors);
        }
    }
}

#[test]
fn operations_are_exactly_the_templates_routes() {
    let doc = openapi();
    let template: BTreeSet<String> = sam::functions(&sam::load())
        .into_iter()
        .flat_map(|f| f.routes)
        .collect();
    assert_eq!(
        operations(&doc),
        template,
        "openapi.yaml's operations vs template.yaml's HttpApi routes"
    );
    // And the local stack serves the same ones.
    let text = std::fs::read_to_string(sam::repo_root().join("template.yaml")).unwrap();
    let local: BTreeSet<String> = tollgate_local::routes::from_template(&text)
        .unwrap()
        .iter()
        .map(|r| r.key())
        .collect();
    assert_eq!(local, template);

    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(&doc, p))
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(declared, in_path, "{m} {path}: path parameters");
            assert!(op["operationId"].is_string(), "{m} {path}: operationId");
        }
    }
}

fn schema_fields(doc: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let s = &doc["components"]["schemas"][name];
    let props = s["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let required = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (props, required)
}

#[test]
fn usage_batch_schema_is_the_rust_types() {
    let doc = openapi();
    let generated =
        serde_json::to_value(schemars::schema_for!(tollgate_domain::usage::UsageBatchDoc)).unwrap();
    let fields = |s: &Value| -> (BTreeSet<String>, BTreeSet<String>) {
        (
            s["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect(),
            s["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
        )
    };
    assert_eq!(schema_fields(&doc, "UsageBatch"), fields(&generated));
    let record = generated["$defs"]
        .as_object()
        .unwrap()
        .values()
        .find(|d| d["properties"].get("subscription_id").is_some())
        .expect("the record's schema");
    assert_eq!(schema_fields(&doc, "UsageRecord"), fields(record));
}

#[test]
fn checkout_request_schema_is_the_rust_type() {
    let doc = openapi();
    let full = json!({
        "consumer_id": "acme", "product_id": "team", "subscription_name": "x",
        "success_url": "https://p.example/ok", "cancel_url": "https://p.example/no",
        "seats": 3, "credit_amount": 1000, "email": "a@b.example"
    });
    // Every documented field is one the type reads (it refuses unknown fields) and writes back.
    let parsed: checkout::CheckoutRequestBody = serde_json::from_value(full.clone()).unwrap();
    let written = serde_json::to_value(&parsed).unwrap();
    let written: BTreeSet<String> = written.as_object().unwrap().keys().cloned().collect();
    let (props, required) = schema_fields(&doc, "CheckoutRequest");
    assert_eq!(props, written);
    // A field is required exactly when the type refuses the body without it.
    for field in &props {
        let mut body = full.clone();
        body.as_object_mut().unwrap().remove(field);
        let refused = serde_json::from_value::<checkout::CheckoutRequestBody>(body).is_err();
        assert_eq!(refused, required.contains(field), "{field}");
    }
}

struct Probe {
    doc: Value,
    http: reqwest::Client,
    base: String,
    seen: BTreeMap<String, BTreeSet<u16>>,
}

impl Probe {
    /// Calls `method path` and checks the answer against the documented response.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        route: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_with(method, path, route, bearer, &[], body).await
    }

    /// [`Self::call`] with request headers.
    async fn call_with(
        &mut self,
        method: &str,
        path: &str,
        route: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let op = &self.doc["paths"][route][method.to_lowercase()];
        assert!(op.is_object(), "{method} {route} is documented");
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        // What the handler accepted matches the documented request schema.
        if status < 300
            && let Some(b) = &body
            && let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema")
        {
            let mut errors = Vec::new();
            validate(&self.doc, schema, b, "request", &mut errors);
            assert!(errors.is_empty(), "{method} {route} request: {errors:#?}");
        }
        let value: Value = resp.json().await.unwrap();
        let documented = resolve(&self.doc, &op["responses"][status.to_string()]);
        assert!(
            documented.is_object(),
            "{method} {route} answered {status}, which is not documented: {value}"
        );
        let schema = &documented["content"]["application/json"]["schema"];
        let mut errors = Vec::new();
        validate(&self.doc, schema, &value, "response", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {route} {status}: {errors:#?}\n{value:#}"
        );
        self.seen
            .entry(format!("{method} {route}"))
            .or_default()
            .insert(status);
        (status, value)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_documented_schema() {
    let mut opts = StackOptions::new(sam::repo_root());
    opts.port = 0;
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let portal = stack.info.portal_secret.clone();
    let gateway = stack.info.gateway_secret.clone();
    let back = format!("{}/portal/", stack.info.base_url);
    let mut p = Probe {
        doc: openapi(),
        http: reqwest::Client::new(),
        base: stack.info.base_url.clone(),
        seen: BTreeMap::new(),
    };
    let portal = Some(portal.as_str());
    let gateway = Some(gateway.as_str());

    p.call("GET", "/catalog", "/catalog", portal, None).await;
    let (s, _) = p.call("GET", "/catalog", "/catalog", None, None).await;
    assert_eq!(s, 401);

    let checkout = |product: &str| {
        json!({"consumer_id": "spec-co", "product_id": product, "subscription_name": product,
               "success_url": format!("{back}?ok"), "cancel_url": back.clone(),
               "email": "dev@spec-co.example"})
    };
    let (s, free) = p
        .call(
            "POST",
            "/checkout/sessions",
            "/checkout/sessions",
            portal,
            Some(checkout("free")),
        )
        .await;
    assert_eq!(s, 201);
    let (s, paid) = p
        .call(
            "POST",
            "/checkout/sessions",
            "/checkout/sessions",
            portal,
            Some(checkout("standard")),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = p
        .call(
            "POST",
            "/checkout/sessions",
            "/checkout/sessions",
            portal,
            Some(checkout("nope")),
        )
        .await;
    assert_eq!(s, 400);
    stack
        .emulator()
        .complete_checkout(paid["id"].as_str().unwrap(), Card::Good)
        .unwrap();
    stack.emulator().wait_for_webhooks_idle().await;
    let free_sub = free["subscription_id"].as_str().unwrap().to_string();
    let paid_sub = paid["subscription_id"].as_str().unwrap().to_string();

    let now = stack.now();
    let batch = json!({"batch_id": "spec-1", "records": [
        {"id": "a", "subscription_id": paid_sub, "timestamp": now.to_rfc3339(), "meter": "api_calls", "value": 150000},
        {"id": "b", "subscription_id": free_sub, "timestamp": now.to_rfc3339(), "meter": "api_calls", "value": 120},
        {"id": "c", "subscription_id": "tgsub_unknown", "timestamp": now.to_rfc3339(), "meter": "api_calls"},
    ]});
    let (s, answer) = p
        .call("POST", "/usage", "/usage", gateway, Some(batch.clone()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(answer["rejected"], 1);
    let (s, again) = p
        .call("POST", "/usage", "/usage", gateway, Some(batch))
        .await;
    assert_eq!((s, &again["duplicate"]), (200, &json!(true)));
    let bad = json!({"batch_id": "spec-2", "records": [
        {"id": "a", "subscription_id": paid_sub, "timestamp": now.to_rfc3339(), "meter": "no_such_meter"}
    ]});
    let (s, _) = p.call("POST", "/usage", "/usage", gateway, Some(bad)).await;
    assert!(s == 400 || s == 422, "{s}");
    let (s, _) = p
        .call("POST", "/usage", "/usage", portal, Some(json!({})))
        .await;
    assert_eq!(
        s, 401,
        "the portal secret does not open the gateway's routes"
    );

    // The subscriptions view carries the bill so far (tiers of a graduated price) and quota.
    let (s, list) = p
        .call(
            "GET",
            "/consumers/spec-co/subscriptions",
            "/consumers/{consumer_id}/subscriptions",
            portal,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 2);
    let (s, paid_view) = p
        .call(
            "GET",
            "/consumers/spec-co/has-paid?product=standard",
            "/consumers/{consumer_id}/has-paid",
            portal,
            None,
        )
        .await;
    assert_eq!((s, &paid_view["paid"]), (200, &json!(true)));

    let key = free["api_key"].as_str().unwrap();
    let (s, ent) = p
        .call(
            "GET",
            &format!("/entitlements/{key}"),
            "/entitlements/{key}",
            gateway,
            None,
        )
        .await;
    assert_eq!((s, ent["status"].as_u64()), (200, Some(429)), "{ent}");
    let unknown = format!("tg_{}", "0".repeat(64));
    let (s, ent) = p
        .call(
            "GET",
            &format!("/entitlements/{unknown}"),
            "/entitlements/{key}",
            gateway,
            None,
        )
        .await;
    assert_eq!((s, &ent["reason"]), (200, &json!("unknown_key")));
    // Not a key (a bare SHA-256 is what the table stores, never a credential): 400.
    let (s, ent) = p
        .call(
            "GET",
            &format!("/entitlements/{}", "a".repeat(64)),
            "/entitlements/{key}",
            gateway,
            None,
        )
        .await;
    assert_eq!((s, &ent["error"]["field"]), (400, &json!("key")), "{ent}");
    let (s, by_header) = p
        .call_with(
            "GET",
            "/entitlements",
            "/entitlements",
            gateway,
            &[("x-api-key", key)],
            None,
        )
        .await;
    assert_eq!((s, by_header["status"].as_u64()), (200, Some(429)));

    let (s, _) = p
        .call(
            "POST",
            &format!("/subscriptions/{free_sub}/keys"),
            "/subscriptions/{subscription_id}/keys",
            portal,
            None,
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = p
        .call(
            "POST",
            &format!("/subscriptions/{paid_sub}/cancel"),
            "/subscriptions/{subscription_id}/cancel",
            portal,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = p
        .call(
            "POST",
            "/subscriptions/tgsub_missing/cancel",
            "/subscriptions/{subscription_id}/cancel",
            portal,
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, resumed) = p
        .call(
            "POST",
            &format!("/subscriptions/{paid_sub}/resume"),
            "/subscriptions/{subscription_id}/resume",
            portal,
            None,
        )
        .await;
    assert_eq!((s, &resumed["cancel_at_period_end"]), (200, &json!(false)));

    for (status, amount) in [(201, 500), (200, 500), (409, 700)] {
        let (s, adj) = p
            .call(
                "POST",
                "/consumers/spec-co/credit/adjustments",
                "/consumers/{consumer_id}/credit/adjustments",
                portal,
                Some(json!({"amount": amount, "reason": "goodwill", "idempotency_key": "spec-1"})),
            )
            .await;
        assert_eq!(s, status, "{adj}");
    }

    let (s, _) = p
        .call(
            "POST",
            "/stripe/webhook",
            "/stripe/webhook",
            None,
            Some(json!({"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": {}}})),
        )
        .await;
    assert_eq!(s, 400, "an unsigned event is refused");

    let exercised: BTreeSet<String> = p.seen.keys().cloned().collect();
    assert_eq!(exercised, operations(&p.doc), "every operation exercised");
}

/// The portal proxy is the only way the page reaches tollgate: it adds the portal secret and
/// refuses every route that is not the portal's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_proxy_serves_only_the_portal_routes() {
    let mut opts = StackOptions::new(sam::repo_root());
    opts.port = 0;
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let http = reqwest::Client::new();
    let base = &stack.info.base_url;
    let catalog: Value = http
        .get(format!("{base}/portal/api/catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(catalog["products"].as_array().unwrap().len() > 3);
    for (method, path) in [
        ("POST", "/portal/api/usage"),
        ("GET", "/portal/api/entitlements/tg_x"),
        ("POST", "/portal/api/stripe/webhook"),
        ("GET", "/portal/api/_local/state"),
    ] {
        let resp = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let page = http
        .get(format!("{base}/portal/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("portal.js"));
    assert!(
        !page.contains(&stack.info.portal_secret),
        "the page never holds the portal secret"
    );
}
