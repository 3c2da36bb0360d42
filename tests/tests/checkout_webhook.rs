//! End to end: the checkout and stripe-webhook functions against DynamoDB Local, the Stripe
//! emulator (which signs and POSTs real webhooks over HTTP) and the EventBridge capture server
//! (which records what the real SDK client put on the bus).

use aws_config::{BehaviorVersion, Region};
use aws_sdk_eventbridge::config::Credentials;
use checkout::Checkout;
use lambda_http::Body;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use stripe_webhook::Webhook;
use tollgate_app::Secret;
use tollgate_domain::Catalog;
use tollgate_domain::ids::{ApiKeyHash, SubscriptionId};
use tollgate_domain::ports::{Expect, Store, Write};
use tollgate_domain::subscription::SubscriptionStatus;
use tollgate_domain::time::SystemClock;
use tollgate_events::EventBridgePublisher;
use tollgate_stripe::{StripeAdapter, StripeConfig};
use tollgate_stripe_emulator::{
    AfterRetries, BillingConfig, Card, Emulator, EmulatorConfig, RunningEmulator,
};
use tollgate_testkit::dynamo::{TestTable, fresh_table};
use tollgate_testkit::eventbridge::EventBridgeCapture;

const PORTAL_SECRET: &str = "portal-secret-for-tests";
const WEBHOOK_SECRET: &str = "whsec_tollgate_tests";
const STRIPE_KEY: &str = "sk_test_tollgate";
const PORTAL: &str = "https://portal.example.com";

struct Harness {
    table: TestTable,
    capture: EventBridgeCapture,
    stripe: RunningEmulator,
    checkout: Checkout,
    webhook_url: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        let table = fresh_table().await;
        let capture = EventBridgeCapture::start().await;
        let stripe = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let catalog: Arc<Catalog> =
            Arc::new(serde_json::from_str(tollgate_app::config::EMBEDDED_CATALOG).unwrap());

        let config = StripeConfig::new(
            STRIPE_KEY.to_string().into(),
            Some(stripe.base_url().into()),
        );
        let adapter = Arc::new(StripeAdapter::from_config(&config).unwrap());
        let report = tollgate_stripe::sync::sync_catalog(&*adapter, &catalog, false)
            .await
            .unwrap();
        assert!(!report.written.is_empty(), "catalog sync wrote the catalog");

        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(tollgate_events::https_client())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .endpoint_url(capture.endpoint_url())
            .load()
            .await;
        let publisher = Arc::new(EventBridgePublisher::new(&sdk, "tollgate-test-bus"));
        let store = Arc::new(table.store.clone());

        let checkout = Checkout {
            store: store.clone(),
            payments: adapter.clone(),
            publisher: publisher.clone(),
            clock: Arc::new(SystemClock),
            catalog: catalog.clone(),
            portal_secret: Secret::from_value("PORTAL_SECRET", PORTAL_SECRET),
            return_url_allowlist: vec![PORTAL.to_string()],
            credit_policy: tollgate_domain::credit::CreditPolicy {
                floor: 0,
                low_threshold: 200,
            },
        };
        let webhook = Webhook {
            store,
            payments: adapter,
            publisher,
            clock: Arc::new(SystemClock),
            catalog,
            webhook_secret: Secret::from_value("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            credit_policy: tollgate_domain::credit::CreditPolicy {
                floor: 0,
                low_threshold: 200,
            },
        };
        let (webhook_url, server) = serve(webhook).await;
        Harness {
            table,
            capture,
            stripe,
            checkout,
            webhook_url,
            _server: server,
        }
    }

    fn store(&self) -> &dyn Store {
        &self.table.store
    }

    /// Calls the checkout handler the way API Gateway would.
    async fn portal(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {PORTAL_SECRET}"))
            .body(match body {
                Some(b) => Body::Text(b.to_string()),
                None => Body::Empty,
            })
            .unwrap();
        let resp = self.checkout.handle(req).await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        (status, body)
    }

    async fn subscription(&self, id: &str) -> tollgate_domain::subscription::Subscription {
        self.store()
            .get_subscription(&SubscriptionId::parse(id).unwrap())
            .await
            .unwrap()
            .expect("subscription stored")
    }

    /// The subscription status copied onto the key for the one-read entitlement check.
    async fn key_gate(&self, api_key: &str) -> Option<SubscriptionStatus> {
        use tollgate_domain::ports::EntitlementReads;
        let (_, gate) = self
            .table
            .store
            .get_key_entitlement(&ApiKeyHash::of_key(api_key))
            .await
            .unwrap()
            .expect("key");
        gate.status
    }

    fn count(&self, detail_type: &str) -> usize {
        self.capture
            .detail_types()
            .iter()
            .filter(|t| *t == detail_type)
            .count()
    }

    /// The authorizer's answer (REST flavour) for `api_key` at `at`: `(allow, status)`.
    async fn gateway(&self, api_key: &str, at: tollgate_domain::time::Timestamp) -> (bool, u64) {
        let authorizer = authorizer::Authorizer::new(
            Arc::new(self.table.store.clone()),
            self.checkout.catalog.clone(),
            Arc::new(tollgate_domain::time::FixedClock(at)),
            "x-api-key",
        );
        let a = authorizer
            .authorize(&json!({"type": "REQUEST",
                "methodArn": "arn:aws:execute-api:us-east-1:1:api/prod/GET/x",
                "headers": {"x-api-key": api_key}}))
            .await
            .unwrap();
        let allow = a["policyDocument"]["Statement"][0]["Effect"] == "Allow";
        (allow, a["context"]["status"].as_u64().unwrap())
    }

    /// Every item of the test's table (to prove that nothing was written).
    async fn item_count(&self) -> usize {
        let out = self
            .table
            .client
            .scan()
            .table_name(&self.table.table_name)
            .send()
            .await
            .unwrap();
        out.items().len()
    }

    /// Starts a checkout for `standard` and lets the customer pay with a good card.
    async fn subscribe_to_standard(&self) -> (String, String, String) {
        let (status, body) = self
            .portal(
                "POST",
                "/checkout/sessions",
                Some(json!({
                    "consumer_id": "acme",
                    "product_id": "standard",
                    "subscription_name": "prod-backend",
                    "success_url": format!("{PORTAL}/ok?session={{CHECKOUT_SESSION_ID}}"),
                    "cancel_url": format!("{PORTAL}/cancel"),
                    "email": "dev@acme.test",
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let session = body["id"].as_str().unwrap().to_string();
        assert!(session.starts_with("cs_"), "{body}");
        assert!(body["url"].as_str().unwrap().starts_with("http"), "{body}");
        let sub_id = body["subscription_id"].as_str().unwrap().to_string();
        let api_key = body["api_key"].as_str().unwrap().to_string();
        assert_eq!(body["status"], "pending");
        self.stripe.complete_checkout(&session, Card::Good).unwrap();
        (sub_id, api_key, session)
    }
}

/// Serves `webhook` on a random local port: a tiny adapter that turns an HTTP request into the
/// `lambda_http::Request` API Gateway would give the function, body bytes untouched.
async fn serve(webhook: Webhook) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let webhook = webhook.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let req = lambda_http::Request::from_parts(parts, Body::Binary(bytes.to_vec()));
            let resp = webhook.handle(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            axum::response::Response::from_parts(parts, axum::body::Body::from(body.to_vec()))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stripe/webhook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

async fn post_webhook(url: &str, body: &[u8], signature: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("stripe-signature", sig);
    }
    req.send().await.unwrap().status().as_u16()
}

fn sign(body: &[u8], secret: &str, t: i64) -> String {
    stripe_webhook::signature::sign(body, secret.as_bytes(), t)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The issue's done-when: catalog sync → checkout for `standard` → the emulator completes the
/// session → signed webhooks reach the function over HTTP → active in DynamoDB Local with an
/// API key hash → SubscriptionActivated published; then a failed payment suspends it and a
/// paid invoice reactivates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_to_active_then_suspended_then_reactivated() {
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    // Duplicates and reordering are what Stripe does; the result must not change.
    h.stripe.set_webhook_duplicates(true);
    h.stripe.set_webhook_reorder(true);
    // The first failed payment exhausts the retries: the subscription becomes unpaid.
    h.stripe.set_billing_config(BillingConfig {
        retry_delays_secs: vec![],
        after_retries: AfterRetries::Unpaid,
        ..BillingConfig::default()
    });

    let (sub_id, api_key, _session) = h.subscribe_to_standard().await;
    h.stripe.wait_for_webhooks_idle().await;
    let deliveries = h.stripe.webhook_deliveries();
    assert!(!deliveries.is_empty());
    assert!(
        deliveries.iter().all(|d| d.succeeded()),
        "every delivery answered 2xx: {deliveries:?}"
    );

    let sub = h.subscription(&sub_id).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);
    let stripe_sub = sub
        .stripe_subscription_id
        .clone()
        .expect("Stripe id stored");
    assert!(stripe_sub.as_str().starts_with("sub_"));
    assert!(sub.current_period_end.is_some());
    let key = h
        .store()
        .get_api_key(&ApiKeyHash::of_key(&api_key))
        .await
        .unwrap()
        .expect("the key's hash is stored");
    assert_eq!(key.subscription_id.as_str(), sub_id);
    assert!(key.revoked_at.is_none());
    assert_eq!(h.key_gate(&api_key).await, Some(SubscriptionStatus::Active));
    assert_eq!(
        h.count("SubscriptionActivated"),
        1,
        "{:?}",
        h.capture.detail_types()
    );
    assert_eq!(h.count("ApiKeyIssued"), 1);
    let activated = h
        .capture
        .entries()
        .into_iter()
        .find(|e| e.detail_type == "SubscriptionActivated")
        .unwrap();
    assert_eq!(activated.detail["subscription_id"], sub_id.as_str());
    assert_eq!(activated.detail["status"], "active");
    let issued = h
        .capture
        .entries()
        .into_iter()
        .find(|e| e.detail_type == "ApiKeyIssued")
        .unwrap();
    assert!(
        !issued.detail.to_string().contains(&api_key[9..]),
        "no key in events"
    );

    // The portal sees it, with its usage and the bill so far.
    let (status, body) = h.portal("GET", "/consumers/acme/subscriptions", None).await;
    assert_eq!(status, 200, "{body}");
    let view = &body["subscriptions"][0];
    assert_eq!(view["status"], "active");
    assert_eq!(view["usage"]["api_calls"], 0);
    assert_eq!(view["quote"]["total"], 8995, "{view}");

    // A failed payment: the renewal invoice is declined and retries are exhausted.
    let customer = sub.stripe_customer_id.clone().unwrap();
    h.stripe
        .set_customer_card(customer.as_str(), Card::Declined);
    h.stripe.advance_clock(Duration::from_secs(32 * 86_400));
    h.stripe.wait_for_webhooks_idle().await;
    let sub = h.subscription(&sub_id).await;
    assert_eq!(sub.status, SubscriptionStatus::Suspended);
    assert!(!sub.status.grants_access());
    assert_eq!(
        h.key_gate(&api_key).await,
        Some(SubscriptionStatus::Suspended)
    );
    assert_eq!(
        h.count("SubscriptionSuspended"),
        1,
        "{:?}",
        h.capture.detail_types()
    );

    // The customer fixes the card and the open invoice is paid.
    let failed = h
        .stripe
        .events()
        .into_iter()
        .rev()
        .find(|e| e["type"] == "invoice.payment_failed")
        .expect("a failed payment");
    let invoice = failed["data"]["object"]["id"].as_str().unwrap().to_string();
    h.stripe.set_customer_card(customer.as_str(), Card::Good);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/invoices/{invoice}/pay", h.stripe.base_url()))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    h.stripe.wait_for_webhooks_idle().await;
    let sub = h.subscription(&sub_id).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(h.key_gate(&api_key).await, Some(SubscriptionStatus::Active));
    assert_eq!(
        h.count("SubscriptionReactivated"),
        1,
        "{:?}",
        h.capture.detail_types()
    );
    assert_eq!(h.count("SubscriptionActivated"), 1, "activated once only");
    assert!(
        h.stripe.webhook_deliveries().iter().all(|d| d.succeeded()),
        "no delivery was refused"
    );
}

/// Not from Stripe → 400 and nothing written: forged signature, stale timestamp, wrong
/// secret, missing header, non-JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_not_from_stripe_are_refused_and_write_nothing() {
    let h = Harness::start().await;
    let (sub_id, _, _) = h.subscribe_to_standard().await;
    // A real event about the real subscription, so that accepting it WOULD write.
    let event = h
        .stripe
        .events()
        .into_iter()
        .find(|e| e["type"] == "customer.subscription.created")
        .expect("event");
    let body = event.to_string().into_bytes();
    let before = h.item_count().await;
    let t = now();

    let mut forged = body.clone();
    let i = forged.len() - 2;
    forged[i] = b' ';
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("forged body", forged, Some(sign(&body, WEBHOOK_SECRET, t))),
        (
            "forged signature",
            body.clone(),
            Some(format!("t={t},v1={}", "ab".repeat(32))),
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(sign(&body, WEBHOOK_SECRET, t - 301)),
        ),
        (
            // A minute past the tolerance: the cases are signed before they are sent, and on
            // a loaded machine the earlier cases take seconds, which must not bring `t + 301`
            // back inside the 300 s window.
            "future timestamp",
            body.clone(),
            Some(sign(&body, WEBHOOK_SECRET, t + 360)),
        ),
        (
            "wrong secret",
            body.clone(),
            Some(sign(&body, "whsec_other", t)),
        ),
        ("missing header", body.clone(), None),
        (
            "non-JSON body",
            b"not json at all".to_vec(),
            Some(sign(b"not json at all", WEBHOOK_SECRET, t)),
        ),
        (
            "JSON that is not an event",
            br#"{"hello":"world"}"#.to_vec(),
            Some(sign(br#"{"hello":"world"}"#, WEBHOOK_SECRET, t)),
        ),
    ];
    for (what, payload, sig) in cases {
        let status = post_webhook(&h.webhook_url, &payload, sig.as_deref()).await;
        assert_eq!(status, 400, "{what}");
        assert_eq!(h.item_count().await, before, "{what} wrote nothing");
    }
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Pending
    );
    assert!(h.capture.entries().is_empty());

    // The same body, properly signed, is accepted and applied, once.
    let sig = sign(&body, WEBHOOK_SECRET, now());
    assert_eq!(post_webhook(&h.webhook_url, &body, Some(&sig)).await, 200);
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );
    assert_eq!(h.item_count().await, before + 1, "the claim");
    assert_eq!(post_webhook(&h.webhook_url, &body, Some(&sig)).await, 200);
    assert_eq!(h.count("SubscriptionActivated"), 1);
}

/// Unknown types and other API versions are accepted (200), never refused forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_other_api_versions_are_accepted() {
    let h = Harness::start().await;
    let before = h.item_count().await;
    let unknown = json!({
        "id": "evt_unknown_1", "object": "event", "type": "radar.early_fraud_warning.created",
        "api_version": "2019-02-19", "created": now(), "livemode": false,
        "data": {"object": {"id": "issfr_1", "object": "radar.early_fraud_warning"}}
    })
    .to_string();
    let sig = sign(unknown.as_bytes(), WEBHOOK_SECRET, now());
    assert_eq!(
        post_webhook(&h.webhook_url, unknown.as_bytes(), Some(&sig)).await,
        200
    );

    // An old-version invoice event (top-level `subscription`, no `parent`) about a subscription
    // tollgate does not know: accepted and ignored.
    let old = json!({
        "id": "evt_old_1", "object": "event", "type": "invoice.paid",
        "api_version": "2020-08-27", "created": now(),
        "data": {"object": {"id": "in_1", "object": "invoice", "subscription": "sub_unknown"}}
    })
    .to_string();
    let sig = sign(old.as_bytes(), WEBHOOK_SECRET, now());
    assert_eq!(
        post_webhook(&h.webhook_url, old.as_bytes(), Some(&sig)).await,
        200
    );
    assert_eq!(h.item_count().await, before);
}

/// The lifecycle events of one subscription delivered in every order, each twice, through
/// the function over HTTP: the final state is always the same, and activation is announced
/// once per run.
///
/// The subscription lives its whole life in the emulator first (paid, payment failed →
/// unpaid, invoice paid → active) with no endpoint, so its events are recorded, not sent. Then
/// one event of each handled kind is delivered in all 5! = 120 orders, each order twice over;
/// before each order the tollgate subscription is put back to `pending` and the event ids are
/// made unique to the order (so the claims of one order do not hide the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_order_each_event_twice_ends_active() {
    let h = Harness::start().await;
    h.stripe.set_billing_config(BillingConfig {
        retry_delays_secs: vec![],
        after_retries: AfterRetries::Unpaid,
        ..BillingConfig::default()
    });
    let (sub_id, _, _) = h.subscribe_to_standard().await;
    let stripe_sub = h
        .stripe
        .events()
        .into_iter()
        .find(|e| e["type"] == "customer.subscription.created")
        .unwrap()["data"]["object"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = h.stripe.object(&stripe_sub).unwrap()["customer"]
        .as_str()
        .unwrap()
        .to_string();
    h.stripe.set_customer_card(&customer, Card::Declined);
    h.stripe.advance_clock(Duration::from_secs(32 * 86_400));
    assert_eq!(h.stripe.object(&stripe_sub).unwrap()["status"], "unpaid");
    let failed = h
        .stripe
        .events()
        .into_iter()
        .rev()
        .find(|e| e["type"] == "invoice.payment_failed")
        .unwrap();
    h.stripe.set_customer_card(&customer, Card::Good);
    let invoice = failed["data"]["object"]["id"].as_str().unwrap().to_string();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/invoices/{invoice}/pay", h.stripe.base_url()))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(h.stripe.object(&stripe_sub).unwrap()["status"], "active");

    let all = h.stripe.events();
    let last_of = |kind: &str| -> Value {
        all.iter()
            .rev()
            .find(|e| e["type"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let events = [
        last_of("checkout.session.completed"),
        last_of("customer.subscription.created"),
        last_of("invoice.payment_failed"),
        last_of("customer.subscription.updated"),
        last_of("invoice.paid"),
    ];
    let mut orders = Vec::new();
    permutations(&mut (0..events.len()).collect(), 0, &mut orders);
    assert_eq!(orders.len(), 120);

    let sub_key = SubscriptionId::parse(&sub_id).unwrap();
    for (n, order) in orders.iter().enumerate() {
        let mut sub = h.subscription(&sub_id).await;
        let version = sub.version;
        sub.status = SubscriptionStatus::Pending;
        h.store()
            .commit(vec![Write::PutSubscription {
                subscription: sub,
                expect: Expect::Version(version),
            }])
            .await
            .unwrap();
        h.capture.clear();
        for &i in order.iter().chain(order.iter()) {
            let mut ev = events[i].clone();
            ev["id"] = json!(format!("{}_o{n}", ev["id"].as_str().unwrap()));
            let body = ev.to_string();
            let sig = sign(body.as_bytes(), WEBHOOK_SECRET, now());
            let status = post_webhook(&h.webhook_url, body.as_bytes(), Some(&sig)).await;
            assert_eq!(status, 200, "order {order:?}");
        }
        let sub = h.store().get_subscription(&sub_key).await.unwrap().unwrap();
        assert_eq!(sub.status, SubscriptionStatus::Active, "order {order:?}");
        assert_eq!(
            sub.stripe_subscription_id.as_ref().unwrap().as_str(),
            stripe_sub
        );
        assert_eq!(
            h.capture.detail_types(),
            vec!["SubscriptionActivated", "ApiKeyIssued"],
            "order {order:?}"
        );
    }
}

fn permutations(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
    if k == items.len() {
        out.push(items.clone());
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, out);
        items.swap(k, i);
    }
}

/// A free product is active at once, without Stripe, with a key shown once; rotating the key
/// revokes the old one in the same commit; cancelling ends it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_product_keys_and_cancel() {
    let h = Harness::start().await;
    let writes_before = h.stripe.write_request_count();
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "solo", "product_id": "free", "subscription_name": "hobby",
                "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["url"], format!("{PORTAL}/ok"));
    assert_eq!(
        h.stripe.write_request_count(),
        writes_before,
        "no Stripe call"
    );
    let sub_id = body["subscription_id"].as_str().unwrap().to_string();
    let first_key = body["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        h.capture.detail_types(),
        vec!["SubscriptionActivated", "ApiKeyIssued"]
    );

    let (status, rotated) = h
        .portal("POST", &format!("/subscriptions/{sub_id}/keys"), None)
        .await;
    assert_eq!(status, 201, "{rotated}");
    let second_key = rotated["api_key"].as_str().unwrap();
    assert_ne!(second_key, first_key);
    let old = h
        .store()
        .get_api_key(&ApiKeyHash::of_key(&first_key))
        .await
        .unwrap()
        .unwrap();
    assert!(old.revoked_at.is_some(), "old key revoked");
    let new = h
        .store()
        .get_api_key(&ApiKeyHash::of_key(second_key))
        .await
        .unwrap()
        .unwrap();
    assert!(new.revoked_at.is_none());

    // The consumer's subscriptions are listed from a GSI, which is eventually consistent (in
    // DynamoDB Local too, under load): poll briefly.
    let mut paid = json!(null);
    for _ in 0..40 {
        let (status, answer) = h
            .portal("GET", "/consumers/solo/has-paid?product=free", None)
            .await;
        assert_eq!(status, 200);
        paid = answer;
        if paid["paid"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(paid["paid"], true, "{paid}");
    assert_eq!(paid["subscription_id"], sub_id.as_str());

    let (status, view) = h
        .portal("POST", &format!("/subscriptions/{sub_id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "canceled");
    assert_eq!(h.count("SubscriptionCanceled"), 1);
    let (status, _) = h
        .portal("POST", &format!("/subscriptions/{sub_id}/keys"), None)
        .await;
    assert_eq!(status, 409, "no keys for a cancelled subscription");
}

/// Portal input is checked before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_input_is_checked() {
    let h = Harness::start().await;
    let before = h.item_count().await;
    let req = http::Request::builder()
        .method("GET")
        .uri("/catalog")
        .header("authorization", "Bearer wrong")
        .body(Body::Empty)
        .unwrap();
    assert_eq!(h.checkout.handle(req).await.unwrap().status(), 401);
    let req = http::Request::builder()
        .method("GET")
        .uri("/catalog")
        .body(Body::Empty)
        .unwrap();
    assert_eq!(h.checkout.handle(req).await.unwrap().status(), 401);

    let (status, catalog) = h.portal("GET", "/catalog", None).await;
    assert_eq!(status, 200);
    assert!(catalog["products"].as_array().unwrap().len() > 3);

    let base = json!({
        "consumer_id": "acme", "product_id": "standard", "subscription_name": "x",
        "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
    });
    let bad = |field: &str, value: Value| {
        let mut b = base.clone();
        b[field] = value;
        b
    };
    let cases = [
        (
            "success_url",
            bad("success_url", json!("https://evil.example/ok")),
        ),
        (
            "cancel_url",
            bad("cancel_url", json!("https://portal.example.com.evil.io/")),
        ),
        ("product_id", bad("product_id", json!("nope"))),
        ("consumer_id", bad("consumer_id", json!("a#b"))),
        ("subscription_name", bad("subscription_name", json!(""))),
        ("seats", bad("product_id", json!("team"))),
    ];
    for (field, body) in cases {
        let (status, answer) = h.portal("POST", "/checkout/sessions", Some(body)).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    assert_eq!(h.item_count().await, before, "bad input wrote nothing");
}

/// Concurrent first checkouts of one consumer: each subscription gets a Stripe customer of its
/// own (Billing Meters aggregate per customer: `docs/billing-run.md`, "Attribution"), and
/// concurrent credit-pack checkouts with different emails create exactly one consumer-level
/// customer (issue 17 item 6: no `idempotency_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_create_one_customer() {
    let h = Harness::start().await;
    let body = |n: usize| {
        json!({
            "consumer_id": "racer", "product_id": "basic", "subscription_name": "a",
            "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
            "email": format!("billing{n}@racer.example"),
        })
    };
    let calls = (0..6).map(|n| h.portal("POST", "/checkout/sessions", Some(body(n))));
    let answers = futures::future::join_all(calls).await;
    for (status, answer) in &answers {
        assert_eq!(*status, 201, "{answer}");
    }
    let session_customer = |a: &Value| {
        let session = h.stripe.object(a["id"].as_str().unwrap()).unwrap();
        session["customer"].as_str().unwrap().to_string()
    };
    let customers: std::collections::BTreeSet<String> =
        answers.iter().map(|(_, a)| session_customer(a)).collect();
    assert_eq!(
        customers.len(),
        6,
        "a customer per subscription: {customers:?}"
    );

    // Credit packs: one-time payments on the consumer's own customer, created once.
    let pack = |n: usize| {
        let mut b = body(n);
        b["product_id"] = "credits".into();
        b["credit_amount"] = 1000.into();
        b
    };
    let calls = (0..6).map(|n| h.portal("POST", "/checkout/sessions", Some(pack(n))));
    let answers = futures::future::join_all(calls).await;
    for (status, answer) in &answers {
        assert_eq!(*status, 201, "{answer}");
    }
    let own: std::collections::BTreeSet<String> =
        answers.iter().map(|(_, a)| session_customer(a)).collect();
    assert_eq!(own.len(), 1, "{own:?}");
    let created = h
        .stripe
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && r.path == "/v1/customers" && !r.replayed && r.status == 200
        })
        .count();
    assert_eq!(created, 6 + 1, "Stripe created 6 + 1 customers");
    let consumer = h
        .store()
        .get_consumer(&tollgate_domain::ids::ConsumerId::parse("racer").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        consumer.stripe_customer_id.unwrap().as_str(),
        own.iter().next().unwrap()
    );
}

/// The portal cancels a paid subscription: Stripe keeps it until the period ends, then sends
/// `customer.subscription.deleted`, and tollgate ends it and says so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_at_period_end_then_canceled_by_stripe() {
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    let (sub_id, _, _) = h.subscribe_to_standard().await;
    h.stripe.wait_for_webhooks_idle().await;
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );

    let (status, view) = h
        .portal("POST", &format!("/subscriptions/{sub_id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["status"], "active",
        "still active until the period ends"
    );
    assert_eq!(view["cancel_at_period_end"], true);
    let stripe_sub = h
        .subscription(&sub_id)
        .await
        .stripe_subscription_id
        .unwrap();
    assert_eq!(
        h.stripe.object(stripe_sub.as_str()).unwrap()["cancel_at_period_end"],
        true
    );
    h.stripe.wait_for_webhooks_idle().await;
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );

    h.stripe.advance_clock(Duration::from_secs(32 * 86_400));
    h.stripe.wait_for_webhooks_idle().await;
    let sub = h.subscription(&sub_id).await;
    assert_eq!(sub.status, SubscriptionStatus::Canceled);
    assert_eq!(
        h.count("SubscriptionCanceled"),
        1,
        "{:?}",
        h.capture.detail_types()
    );
}

/// A one-time product (`mode=payment`): paid at checkout, active until its access ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_access_is_active_until_it_ends() {
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    h.stripe.set_webhook_duplicates(true);
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "traveller", "product_id": "week-pass", "subscription_name": "trip",
                "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["id"].as_str().unwrap();
    assert_eq!(h.stripe.object(session).unwrap()["mode"], "payment");
    let sub_id = body["subscription_id"].as_str().unwrap().to_string();
    h.stripe.complete_checkout(session, Card::Good).unwrap();
    h.stripe.wait_for_webhooks_idle().await;
    let sub = h.subscription(&sub_id).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert!(sub.stripe_subscription_id.is_none());
    let ends = sub.access_expires_at.expect("access end set");
    let days = (ends - sub.created_at).num_days();
    assert!((6..=7).contains(&days), "7 days of access, got {days}");
    assert_eq!(h.count("SubscriptionActivated"), 1);

    // The gateway refuses the key from the second access ends, while the stored status still
    // says active (the nightly run writes `expired` later).
    let api_key = body["api_key"].as_str().unwrap();
    let second = chrono::Duration::seconds(1);
    assert_eq!(h.gateway(api_key, ends - second).await, (true, 200));
    assert_eq!(h.gateway(api_key, ends).await, (false, 403));
    assert_eq!(h.gateway(api_key, ends + second).await, (false, 403));
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );
}

/// Cancel a pending checkout, then try to pay in the tab still open: the session was expired in
/// Stripe, so the payment is refused and no Stripe subscription exists to bill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_then_pay_leaves_nothing_billing() {
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "fickle", "product_id": "standard", "subscription_name": "maybe",
                "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["id"].as_str().unwrap().to_string();
    let sub_id = body["subscription_id"].as_str().unwrap().to_string();
    let (status, view) = h
        .portal("POST", &format!("/subscriptions/{sub_id}/cancel"), None)
        .await;
    assert_eq!(
        (status, &view["status"]),
        (200, &json!("canceled")),
        "{view}"
    );
    assert_eq!(h.stripe.object(&session).unwrap()["status"], "expired");
    assert!(
        h.stripe.complete_checkout(&session, Card::Good).is_err(),
        "an expired session cannot be paid"
    );
    h.stripe.wait_for_webhooks_idle().await;
    assert!(h.stripe.object(&session).unwrap()["subscription"].is_null());
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Canceled
    );
}

/// The race: the consumer pays a moment before the cancel reaches Stripe (the session is no
/// longer open, the webhook not yet delivered). When `checkout.session.completed` arrives for
/// the canceled tollgate subscription, the Stripe subscription it started is canceled at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_completes_after_cancel_is_not_left_billing() {
    let h = Harness::start().await;
    // No endpoint yet: the payment's webhooks are held back.
    let (sub_id, api_key, session) = h.subscribe_to_standard().await;
    let (status, view) = h
        .portal("POST", &format!("/subscriptions/{sub_id}/cancel"), None)
        .await;
    assert_eq!(
        (status, &view["status"]),
        (200, &json!("canceled")),
        "{view}"
    );
    let stripe_sub = h.stripe.object(&session).unwrap()["subscription"]
        .as_str()
        .expect("the session started a Stripe subscription")
        .to_string();
    assert_eq!(h.stripe.object(&stripe_sub).unwrap()["status"], "active");

    // Now the held-back event arrives (signed as Stripe would).
    let event = h
        .stripe
        .events()
        .into_iter()
        .find(|e| e["type"] == "checkout.session.completed")
        .expect("the payment's event");
    let body = serde_json::to_vec(&event).unwrap();
    let sig = sign(&body, WEBHOOK_SECRET, now());
    assert_eq!(post_webhook(&h.webhook_url, &body, Some(&sig)).await, 200);
    assert_eq!(h.stripe.object(&stripe_sub).unwrap()["status"], "canceled");
    let sub = h.subscription(&sub_id).await;
    assert_eq!(sub.status, SubscriptionStatus::Canceled);
    assert_eq!(sub.stripe_subscription_id.unwrap().as_str(), stripe_sub);
    assert_eq!(h.gateway(&api_key, chrono::Utc::now()).await, (false, 403));
    // Re-delivered: a duplicate, nothing more.
    assert_eq!(post_webhook(&h.webhook_url, &body, Some(&sig)).await, 200);
}

/// cancel → resume → cancel within a day: every Stripe write names its intent, so the second
/// cancel is not a replay of the first (Stripe replays a reused key's answer for 24 hours).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_resume_cancel_within_a_day_ends_canceling() {
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    let (sub_id, _, _) = h.subscribe_to_standard().await;
    h.stripe.wait_for_webhooks_idle().await;
    let stripe_sub = h
        .subscription(&sub_id)
        .await
        .stripe_subscription_id
        .unwrap();
    for (route, expected) in [("cancel", true), ("resume", false), ("cancel", true)] {
        let (status, view) = h
            .portal("POST", &format!("/subscriptions/{sub_id}/{route}"), None)
            .await;
        assert_eq!(status, 200, "{route}: {view}");
        assert_eq!(view["cancel_at_period_end"], expected, "{route}: {view}");
        assert_eq!(
            h.stripe.object(stripe_sub.as_str()).unwrap()["cancel_at_period_end"],
            expected,
            "Stripe after {route}"
        );
        h.stripe.wait_for_webhooks_idle().await;
    }
    assert!(h.subscription(&sub_id).await.cancel_at_period_end);
}

/// A credit pack bought through checkout (`mode=payment`) tops the consumer's balance up once,
/// however often the event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_pack_purchase_tops_up_once() {
    use tollgate_domain::ports::EntitlementReads;
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    h.stripe.set_webhook_duplicates(true);
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "prepayer", "product_id": "credits", "subscription_name": "topup",
                "credit_amount": 5000,
                "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.get("api_key").is_none(),
        "a credit purchase issues no key"
    );
    let session = body["id"].as_str().unwrap();
    h.stripe.complete_checkout(session, Card::Good).unwrap();
    h.stripe.wait_for_webhooks_idle().await;
    assert!(h.stripe.webhook_deliveries().iter().all(|d| d.succeeded()));
    let consumer = tollgate_domain::ids::ConsumerId::parse("prepayer").unwrap();
    let account = h
        .table
        .store
        .get_credit_account(&consumer)
        .await
        .unwrap()
        .expect("credit account");
    assert_eq!(account.balance, 5000);

    // A pack the product does not sell is refused before Stripe is asked.
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "prepayer", "product_id": "credits", "subscription_name": "topup",
                "credit_amount": 200,
                "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
            })),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "credit_amount");
}

/// Deliveries racing each other: the same event eight times at once and every event of the
/// checkout at once. Every answer is 200, the subscription ends active, and activation is
/// announced once (the claim and the version check serialise the racers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_activate_once() {
    let h = Harness::start().await;
    let (sub_id, _, _) = h.subscribe_to_standard().await;
    let events = h.stripe.events();
    let completed = events
        .iter()
        .find(|e| e["type"] == "checkout.session.completed")
        .unwrap()
        .to_string();
    let same = (0..8).map(|_| {
        let sig = sign(completed.as_bytes(), WEBHOOK_SECRET, now());
        let url = h.webhook_url.clone();
        let body = completed.clone();
        async move { post_webhook(&url, body.as_bytes(), Some(&sig)).await }
    });
    let statuses = futures::future::join_all(same).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );

    let all = events.iter().map(|e| {
        let body = e.to_string();
        let sig = sign(body.as_bytes(), WEBHOOK_SECRET, now());
        let url = h.webhook_url.clone();
        async move { post_webhook(&url, body.as_bytes(), Some(&sig)).await }
    });
    let statuses = futures::future::join_all(all).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );
    assert_eq!(
        h.capture.detail_types(),
        vec!["SubscriptionActivated", "ApiKeyIssued"]
    );
}

/// Issue 19: a retired product takes no new subscriptions (409 naming it, hidden from the
/// catalog) while its subscribers keep access; `has-paid` answers for any of several products.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_product_keeps_its_subscribers_and_sells_no_more() {
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    let (sub_id, api_key, _) = h.subscribe_to_standard().await;
    h.stripe.wait_for_webhooks_idle().await;
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );

    // The provider retires `standard` (successor `pro`) and deploys the new catalog.
    let mut value: Value = serde_json::from_str(tollgate_app::config::EMBEDDED_CATALOG).unwrap();
    let standard = value["products"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["id"] == "standard")
        .unwrap();
    standard["status"] = json!("retired");
    standard["successor"] = json!("pro");
    let retired = Catalog::from_json(&value.to_string()).expect("a valid catalog");
    let retired_portal = Checkout {
        catalog: Arc::new(retired),
        ..h.checkout.clone()
    };
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {PORTAL_SECRET}"))
            .body(body.map_or(Body::Empty, |b| Body::Text(b.to_string())))
            .unwrap();
        let portal = &retired_portal;
        async move {
            let resp = portal.handle(req).await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
            (status, body)
        }
    };

    let (status, catalog) = call("GET", "/catalog".into(), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = catalog["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"standard") && ids.contains(&"pro"),
        "{ids:?}"
    );

    let writes_before = h.stripe.write_request_count();
    let (status, body) = call(
        "POST",
        "/checkout/sessions".into(),
        Some(json!({
            "consumer_id": "newco", "product_id": "standard", "subscription_name": "x",
            "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
        })),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("standard") && message.contains("retired") && message.contains("pro"),
        "{body}"
    );
    assert_eq!(
        h.stripe.write_request_count(),
        writes_before,
        "nothing sent to Stripe"
    );

    // The existing subscriber keeps its access and its product.
    assert_eq!(h.key_gate(&api_key).await, Some(SubscriptionStatus::Active));
    let mut paid = json!(null);
    for _ in 0..40 {
        let (status, answer) = call(
            "GET",
            "/consumers/acme/has-paid?product=basic,standard,pro".into(),
            None,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        paid = answer;
        if paid["paid"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(paid["paid"], true, "{paid}");
    assert_eq!(paid["product_id"], "standard");
    assert_eq!(paid["subscription_id"], sub_id.as_str());
    assert_eq!(paid["products"], json!(["basic", "standard", "pro"]));
    let (_, none) = call(
        "GET",
        "/consumers/acme/has-paid?product=basic,pro,free".into(),
        None,
    )
    .await;
    assert_eq!(none["paid"], false, "{none}");
    assert_eq!(none["subscription_id"], Value::Null);
    let (status, bad) = call(
        "GET",
        "/consumers/acme/has-paid?product=basic,,pro".into(),
        None,
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["field"], "product");
}

/// Issue 21: an abandoned Checkout Session expired by Stripe (not by tollgate's cancel) ends
/// its pending subscription, so the key minted with it can never work; a re-delivery of the
/// event changes nothing, and a session that was paid is not touched by a late expiry event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_checkout_session_ends_its_pending_subscription() {
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    h.stripe.set_webhook_duplicates(true);
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(json!({
                "consumer_id": "walkaway", "product_id": "standard", "subscription_name": "later",
                "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["id"].as_str().unwrap().to_string();
    let sub_id = body["subscription_id"].as_str().unwrap().to_string();
    let key = body["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Pending
    );

    // Stripe expires the abandoned session (as it does after 24 h).
    let expired = reqwest::Client::new()
        .post(format!(
            "{}/v1/checkout/sessions/{session}/expire",
            h.stripe.base_url()
        ))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status().as_u16(), 200);
    h.stripe.wait_for_webhooks_idle().await;
    assert!(
        h.stripe.webhook_deliveries().iter().all(|d| d.succeeded()),
        "every delivery answered 2xx"
    );
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Canceled
    );
    assert_eq!(h.key_gate(&key).await, Some(SubscriptionStatus::Canceled));
    assert_eq!(
        h.count("SubscriptionCanceled"),
        1,
        "once, though delivered twice"
    );
}

/// Issue 17, fault 7: a refund of a half-used $10 pack takes back the unused $5 once, however
/// often the webhook comes; a lost dispute of one-time access ends it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_and_lost_disputes_take_back_what_was_bought() {
    use tollgate_domain::ports::EntitlementReads;
    let h = Harness::start().await;
    h.stripe
        .set_webhook_endpoint(&h.webhook_url, WEBHOOK_SECRET);
    h.stripe.set_webhook_duplicates(true);
    let buy = |consumer: &str, product: &str, credit: Option<i64>| {
        let mut body = json!({
            "consumer_id": consumer, "product_id": product, "subscription_name": "x",
            "success_url": format!("{PORTAL}/ok"), "cancel_url": format!("{PORTAL}/no"),
        });
        if let Some(c) = credit {
            body["credit_amount"] = json!(c);
        }
        body
    };

    // $10 of credit, $5 of it spent (the operator's deduction stands in for usage here).
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(buy("refundee", "credits", Some(1000))),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["id"].as_str().unwrap().to_string();
    h.stripe.complete_checkout(&session, Card::Good).unwrap();
    h.stripe.wait_for_webhooks_idle().await;
    let (status, spent) = h
        .portal(
            "POST",
            "/consumers/refundee/credit/adjustments",
            Some(json!({"amount": -500, "reason": "used", "idempotency_key": "spend-1"})),
        )
        .await;
    assert_eq!((status, &spent["balance"]), (201, &json!(500)), "{spent}");

    // Stripe refunds the whole payment: the unused $5 is taken back, once.
    let payment_intent = h.stripe.object(&session).unwrap()["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    let refund = reqwest::Client::new()
        .post(format!("{}/v1/refunds", h.stripe.base_url()))
        .bearer_auth(STRIPE_KEY)
        .form(&[("payment_intent", payment_intent.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status().as_u16(), 200);
    h.stripe.wait_for_webhooks_idle().await;
    assert!(h.stripe.webhook_deliveries().iter().all(|d| d.succeeded()));
    let consumer = tollgate_domain::ids::ConsumerId::parse("refundee").unwrap();
    let account = h
        .table
        .store
        .get_credit_account(&consumer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.balance, 0, "the unused $5 went back, not $10");
    assert_eq!(h.count("CreditRevoked"), 1, "once, though delivered twice");

    // One-time access bought, then disputed and lost: access ends at once.
    let (status, body) = h
        .portal(
            "POST",
            "/checkout/sessions",
            Some(buy("disputer", "week-pass", None)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["id"].as_str().unwrap().to_string();
    let sub_id = body["subscription_id"].as_str().unwrap().to_string();
    let key = body["api_key"].as_str().unwrap().to_string();
    h.stripe.complete_checkout(&session, Card::Good).unwrap();
    h.stripe.wait_for_webhooks_idle().await;
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );
    let payment_intent = h.stripe.object(&session).unwrap()["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    let charge = h.stripe.charge_of_payment(&payment_intent).unwrap();
    // A dispute the provider wins changes nothing.
    h.stripe
        .dispute(charge["id"].as_str().unwrap(), false)
        .unwrap();
    h.stripe.wait_for_webhooks_idle().await;
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Active
    );
    h.stripe
        .dispute(charge["id"].as_str().unwrap(), true)
        .unwrap();
    h.stripe.wait_for_webhooks_idle().await;
    assert!(h.stripe.webhook_deliveries().iter().all(|d| d.succeeded()));
    assert_eq!(
        h.subscription(&sub_id).await.status,
        SubscriptionStatus::Canceled
    );
    assert_eq!(h.key_gate(&key).await, Some(SubscriptionStatus::Canceled));
}
