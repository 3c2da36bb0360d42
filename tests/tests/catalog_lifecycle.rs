//! Issue 19 through the real routes of the local stack (DynamoDB Local, the Stripe emulator,
//! every function behind its HTTP route): an operator's credit grant and deduction move the
//! gateway's 402 at once, each applied once however often it is sent.

use serde_json::{Value, json};
use tollgate_local::{LocalStack, StackOptions};
use tollgate_stripe_emulator::Card;

struct Client {
    http: reqwest::Client,
    base: String,
    portal: String,
    gateway: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    async fn portal(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(method, path, &self.portal, body).await
    }
    /// The gateway's question for `key`: (HTTP status it should answer, reason).
    async fn entitlement(&self, key: &str) -> (u64, String) {
        let (s, e) = self
            .call(
                reqwest::Method::GET,
                &format!("/entitlements/{key}"),
                &self.gateway,
                None,
            )
            .await;
        assert_eq!(s, 200, "{e}");
        (
            e["status"].as_u64().unwrap(),
            e["reason"].as_str().unwrap_or("").to_string(),
        )
    }
    async fn adjust(&self, amount: i64, key: &str) -> (u16, Value) {
        self.portal(
            reqwest::Method::POST,
            "/consumers/gail/credit/adjustments",
            Some(json!({"amount": amount, "reason": "seed 004's test", "idempotency_key": key})),
        )
        .await
    }
}

async fn start() -> (LocalStack, Client) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    opts.start_time = Some(1_795_996_800); // 2026-11-30T00:00:00Z
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let c = Client {
        http: reqwest::Client::new(),
        base: stack.info.base_url.clone(),
        portal: stack.info.portal_secret.clone(),
        gateway: stack.info.gateway_secret.clone(),
    };
    (stack, c)
}

/// A licensed price tiered on the seat count: Stripe's invoice (the emulator's independent
/// arithmetic) equals tollgate's quote, graduated as Stripe documents it — 12 seats of
/// "first 10 for $100 flat, then $8 a seat" are $100 + 2 × $8 = $116.00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_seat_tiered_subscription_is_invoiced_as_the_tiers_say() {
    let (stack, c) = start().await;
    let checkout = |name: &str, seats: u32| {
        json!({
            "consumer_id": "hal", "product_id": "team-tiers", "subscription_name": name,
            "seats": seats,
            "success_url": format!("{}/portal/ok", stack.info.base_url),
            "cancel_url": format!("{}/portal/no", stack.info.base_url),
        })
    };
    let (s, session) = c
        .portal(
            reqwest::Method::POST,
            "/checkout/sessions",
            Some(checkout("team", 12)),
        )
        .await;
    assert_eq!(s, 201, "{session}");
    let paid = stack
        .emulator()
        .complete_checkout(session["id"].as_str().unwrap(), Card::Good)
        .expect("the card pays");
    let sub = stack
        .emulator()
        .object(paid["subscription"].as_str().expect("a subscription"))
        .unwrap();
    let invoice = stack
        .emulator()
        .object(sub["latest_invoice"].as_str().expect("its first invoice"))
        .unwrap();
    assert_eq!(invoice["total"], 11_600, "{invoice}");
    let quote = tollgate_domain::pricing::quote_product(
        &tollgate_domain::Catalog::from_json(tollgate_app::config::EMBEDDED_CATALOG).unwrap(),
        "team-tiers",
        &tollgate_domain::pricing::QuoteRequest {
            seats: Some(12),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(quote.total, 11_600);
    // Out of the price's seat range: refused before Stripe, naming the field.
    let (s, e) = c
        .portal(
            reqwest::Method::POST,
            "/checkout/sessions",
            Some(checkout("big", 51)),
        )
        .await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("seats")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_grant_lifts_the_402_and_a_deduction_restores_it_each_once() {
    let (stack, c) = start().await;

    // A prepaid subscription with no credit yet: active, but the gateway answers 402.
    let (s, sub) = c
        .portal(
            reqwest::Method::POST,
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "gail", "product_id": "prepaid", "subscription_name": "app",
                "success_url": format!("{}/portal/ok", stack.info.base_url),
                "cancel_url": format!("{}/portal/no", stack.info.base_url),
            })),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    let key = sub["api_key"].as_str().unwrap().to_string();
    assert_eq!(c.entitlement(&key).await, (402, "no_credit".into()));

    // $5 goodwill: 200 on the very next check; the same request again changes nothing.
    let (s, a) = c.adjust(500, "grant-1").await;
    assert_eq!(
        (s, &a["applied"], &a["balance"], &a["replayed"]),
        (201, &json!(500), &json!(500), &json!(false)),
        "{a}"
    );
    assert_eq!(c.entitlement(&key).await, (200, "ok".into()));
    let (s, a) = c.adjust(500, "grant-1").await;
    assert_eq!(
        (s, &a["balance"], &a["replayed"]),
        (200, &json!(500), &json!(true)),
        "{a}"
    );
    // The same key with another amount is another intent: refused, nothing changes.
    let (s, a) = c.adjust(900, "grant-1").await;
    assert_eq!(s, 409, "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idempotency_key"),
        "{a}"
    );

    // Deducted back to zero: 402 again at once; repeated, taken once; beyond zero, nothing
    // is taken (the floor is 0).
    let (s, a) = c.adjust(-500, "deduct-1").await;
    assert_eq!(
        (s, &a["applied"], &a["balance"]),
        (201, &json!(-500), &json!(0)),
        "{a}"
    );
    assert_eq!(c.entitlement(&key).await, (402, "no_credit".into()));
    let (s, a) = c.adjust(-500, "deduct-1").await;
    assert_eq!(
        (s, &a["balance"], &a["replayed"]),
        (200, &json!(0), &json!(true)),
        "{a}"
    );
    let (s, a) = c.adjust(-100, "deduct-2").await;
    assert_eq!(
        (s, &a["applied"], &a["balance"]),
        (201, &json!(0), &json!(0)),
        "{a}"
    );

    // Bad input names its field and writes nothing.
    for (body, field) in [
        (
            json!({"amount": 0, "reason": "x", "idempotency_key": "z"}),
            "amount",
        ),
        (
            json!({"amount": 1.5, "reason": "x", "idempotency_key": "z"}),
            "amount",
        ),
        (
            json!({"amount": 5, "reason": " ", "idempotency_key": "z"}),
            "reason",
        ),
        (
            json!({"amount": 5, "reason": "x", "idempotency_key": "a b"}),
            "idempotency_key",
        ),
        (json!({"amount": 5, "reason": "x"}), "body"),
    ] {
        let (s, e) = c
            .portal(
                reqwest::Method::POST,
                "/consumers/gail/credit/adjustments",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    assert_eq!(c.entitlement(&key).await, (402, "no_credit".into()));

    // The alerts of the deduction went out once each.
    let events = stack.events();
    let count = |t: &str| events.iter().filter(|e| e.detail_type == t).count();
    assert_eq!(count("CreditsDepleted"), 1);
    assert_eq!(count("CreditsLow"), 1);
}
