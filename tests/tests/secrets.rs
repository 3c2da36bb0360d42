//! Secrets as operators store them: a value pasted with a trailing newline works (it is
//! trimmed when read), and a value of the wrong kind (a webhook secret without `whsec_`, a
//! Stripe key without `sk_`/`rk_`) is a configuration error on first use, not a stream of
//! "no v1 signature matches" 400s or Stripe 401s. Issue 17, fault 9.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_eventbridge::config::Credentials;
use lambda_http::Body;
use serde_json::{Value, json};
use std::sync::Arc;
use stripe_webhook::Webhook;
use tollgate_app::{Secret, Settings};
use tollgate_domain::Catalog;
use tollgate_domain::ports::Payments;
use tollgate_domain::time::SystemClock;
use tollgate_events::EventBridgePublisher;
use tollgate_stripe::LazyPayments;
use tollgate_stripe_emulator::{Emulator, EmulatorConfig};
use tollgate_testkit::eventbridge::EventBridgeCapture;

fn catalog() -> Arc<Catalog> {
    Arc::new(serde_json::from_str(tollgate_app::config::EMBEDDED_CATALOG).unwrap())
}

fn settings(stripe_api_base: &str, stripe_key: &str, webhook_secret: &str) -> Settings {
    Settings {
        table_name: "unused".into(),
        event_bus_name: "unused".into(),
        stripe_api_base: Some(stripe_api_base.into()),
        stripe_secret_key: Secret::from_value("STRIPE_SECRET_KEY", stripe_key),
        stripe_webhook_secret: Secret::from_value("STRIPE_WEBHOOK_SECRET", webhook_secret),
        portal_secret: Secret::from_value("PORTAL_SECRET", "p"),
        gateway_secret: Secret::from_value("GATEWAY_SECRET", "g"),
        return_url_allowlist: Vec::new(),
        credit_low_threshold: 200,
        credit_overdraft_floor: 0,
        catalog: catalog(),
    }
}

async fn webhook_with(secret: &str, stripe_api_base: &str) -> (Webhook, EventBridgeCapture) {
    let table = tollgate_testkit::dynamo::fresh_table().await;
    let capture = EventBridgeCapture::start().await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(tollgate_events::https_client())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(capture.endpoint_url())
        .load()
        .await;
    let s = settings(stripe_api_base, "sk_test_tollgate", secret);
    let webhook = Webhook {
        store: Arc::new(table.store.clone()),
        payments: Arc::new(LazyPayments::from_settings(&s)),
        publisher: Arc::new(EventBridgePublisher::new(&sdk, "tollgate-test-bus")),
        clock: Arc::new(SystemClock),
        catalog: catalog(),
        webhook_secret: s.stripe_webhook_secret.clone(),
        credit_policy: tollgate_domain::credit::CreditPolicy {
            floor: 0,
            low_threshold: 200,
        },
    };
    (webhook, capture)
}

/// A delivery signed with `signing_secret` (what Stripe holds), through the handler.
async fn deliver(webhook: &Webhook, signing_secret: &str) -> (u16, Value) {
    let now = chrono::Utc::now().timestamp();
    let body = json!({
        "id": "evt_secret_1", "object": "event", "type": "radar.early_fraud_warning.created",
        "api_version": "2019-02-19", "created": now, "livemode": false,
        "data": {"object": {"id": "issfr_1", "object": "radar.early_fraud_warning"}}
    })
    .to_string();
    let sig = stripe_webhook::signature::sign(body.as_bytes(), signing_secret.as_bytes(), now);
    let req = http::Request::builder()
        .method("POST")
        .uri("/stripe/webhook")
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(Body::Binary(body.into_bytes()))
        .unwrap();
    let resp = webhook.handle(req).await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_secret_pasted_with_a_newline_verifies() {
    let stripe_side = "whsec_pasted_secret";
    for stored in [
        "whsec_pasted_secret\n",
        "whsec_pasted_secret\r\n",
        "  whsec_pasted_secret ",
    ] {
        let (webhook, _capture) = webhook_with(stored, "http://127.0.0.1:9").await;
        let (status, body) = deliver(&webhook, stripe_side).await;
        assert_eq!(status, 200, "stored {stored:?}: {body}");
        assert_eq!(body["outcome"], "ignored", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_secret_of_the_wrong_kind_is_a_configuration_error() {
    // The Stripe key pasted into the webhook secret, and a bare value without its prefix:
    // every delivery fails as a server error (Stripe retries, the error alarm and the log say
    // "configuration"), never as a 400 that blames the sender's signature.
    for stored in ["sk_test_swapped", "pasted_secret"] {
        let (webhook, _capture) = webhook_with(stored, "http://127.0.0.1:9").await;
        let (status, body) = deliver(&webhook, stored).await;
        assert_eq!(status, 500, "stored {stored:?}: {body}");
        let err = webhook_secret_error(stored).await;
        assert!(
            err.contains("STRIPE_WEBHOOK_SECRET is malformed") && err.contains("whsec_"),
            "{err}"
        );
    }
}

async fn webhook_secret_error(stored: &str) -> String {
    Secret::from_value("STRIPE_WEBHOOK_SECRET", stored)
        .get()
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stripe_key_is_trimmed_and_its_kind_checked_on_first_use() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let consumer = tollgate_domain::ConsumerId::parse("dev-secret-1").unwrap();

    // Pasted with a newline: works (an untrimmed key would not even make a valid header).
    let ok = LazyPayments::from_settings(&settings(
        emulator.base_url(),
        "sk_test_tollgate\n",
        "whsec_x",
    ));
    let customer = ok.ensure_customer(&consumer, None).await;
    assert!(customer.is_ok(), "{customer:?}");

    // A publishable key or the webhook secret in its place: refused before any Stripe call.
    for wrong in ["pk_test_publishable", "whsec_swapped"] {
        let lazy = LazyPayments::from_settings(&settings(emulator.base_url(), wrong, "whsec_x"));
        let err = lazy
            .ensure_customer(&consumer, None)
            .await
            .expect_err("a malformed key fails");
        let msg = err.to_string();
        assert!(
            msg.contains("STRIPE_SECRET_KEY is malformed") && msg.contains("sk_ or rk_"),
            "{msg}"
        );
        assert!(!msg.contains(wrong), "the key leaked into the error: {msg}");
        assert!(!lazy.is_built());
    }
}
