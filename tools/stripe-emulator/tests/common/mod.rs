//! A plain form-encoding HTTP client for the emulator, plus a webhook receiver.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tollgate_stripe_emulator::{Emulator, EmulatorConfig, RunningEmulator};

/// 2026-01-31T00:00:00Z: a month-end anchor exercises Stripe's renewal-date clamping.
pub const START: i64 = 1_769_817_600;

pub struct Stripe {
    pub emu: RunningEmulator,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: http::HeaderMap,
}

pub async fn start() -> Stripe {
    let emu = Emulator::start(EmulatorConfig {
        start_time: Some(START),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    Stripe {
        emu,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

impl Stripe {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Resp {
        self.send_authorized(
            "Bearer sk_test_emulator",
            method,
            path,
            body,
            idempotency_key,
        )
        .await
    }

    /// `send` with the given `Authorization` header value.
    pub async fn send_authorized(
        &self,
        authorization: &str,
        method: &str,
        path: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Resp {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.emu.base_url()))
            .header("authorization", authorization)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            headers,
        }
    }

    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Value {
        let r = self.send("POST", path, &form(pairs), None).await;
        assert_eq!(r.status, 200, "POST {path}: {}", r.text);
        r.body
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self.send("GET", path, "", None).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.body
    }

    pub async fn get_text(&self, path: &str) -> String {
        let r = self.send("GET", path, "", None).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.text
    }

    pub async fn customer(&self, email: &str) -> String {
        self.post(
            "/v1/customers",
            &[("email", email), ("metadata[consumer_id]", "c-1")],
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn meter(&self, event_name: &str) -> String {
        self.post(
            "/v1/billing/meters",
            &[
                ("display_name", "API calls"),
                ("event_name", event_name),
                ("default_aggregation[formula]", "sum"),
            ],
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The Standard plan: $89.95 for the first 100,000 calls, then $0.10 per 100 calls.
    pub async fn standard_price(&self, meter: &str) -> (String, String) {
        let product = self.post("/v1/products", &[("name", "Standard")]).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let price = self
            .post(
                "/v1/prices",
                &[
                    ("currency", "usd"),
                    ("product", &product),
                    ("billing_scheme", "tiered"),
                    ("tiers_mode", "graduated"),
                    ("tiers[0][up_to]", "100000"),
                    ("tiers[0][flat_amount]", "8995"),
                    ("tiers[0][unit_amount]", "0"),
                    ("tiers[1][up_to]", "inf"),
                    ("tiers[1][unit_amount_decimal]", "0.1"),
                    ("recurring[interval]", "month"),
                    ("recurring[usage_type]", "metered"),
                    ("recurring[meter]", meter),
                    ("lookup_key", "standard_monthly"),
                ],
            )
            .await;
        (product, price["id"].as_str().unwrap().to_string())
    }

    pub async fn subscription_checkout(
        &self,
        customer: &str,
        prices: &[(&str, Option<&str>)],
    ) -> Value {
        let mut pairs: Vec<(String, String)> = vec![
            ("mode".into(), "subscription".into()),
            ("customer".into(), customer.into()),
            (
                "success_url".into(),
                "https://portal.example/ok?session={CHECKOUT_SESSION_ID}".into(),
            ),
            ("cancel_url".into(), "https://portal.example/cancel".into()),
            ("metadata[consumer_id]".into(), "c-1".into()),
            (
                "subscription_data[metadata][tollgate_subscription]".into(),
                "sub-1".into(),
            ),
        ];
        for (i, (price, qty)) in prices.iter().enumerate() {
            pairs.push((format!("line_items[{i}][price]"), price.to_string()));
            if let Some(q) = qty {
                pairs.push((format!("line_items[{i}][quantity]"), q.to_string()));
            }
        }
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        self.post("/v1/checkout/sessions", &refs).await
    }

    pub async fn meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: &str,
        identifier: &str,
        timestamp: i64,
    ) -> Resp {
        let ts = timestamp.to_string();
        self.send(
            "POST",
            "/v1/billing/meter_events",
            &form(&[
                ("event_name", event_name),
                ("payload[stripe_customer_id]", customer),
                ("payload[value]", value),
                ("identifier", identifier),
                ("timestamp", &ts),
            ]),
            None,
        )
        .await
    }
}

#[derive(Clone, Default)]
pub struct Received {
    pub hits: Arc<Mutex<Vec<(String, String)>>>,
    /// Answer 500 to this many requests first.
    pub fail_first: Arc<Mutex<u32>>,
}

/// A webhook endpoint on 127.0.0.1 that records `(Stripe-Signature, body)`.
pub async fn webhook_receiver() -> (String, Received) {
    use axum::{Router, extract::State, http::HeaderMap, routing::post};
    let received = Received::default();
    async fn hook(
        State(r): State<Received>,
        headers: HeaderMap,
        body: String,
    ) -> axum::http::StatusCode {
        let sig = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        r.hits.lock().unwrap().push((sig, body));
        let mut fail = r.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        }
        axum::http::StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stripe/webhook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/stripe/webhook", post(hook))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}
