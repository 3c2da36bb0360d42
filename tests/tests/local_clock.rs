//! The local stack runs on the Stripe emulator's clock, which may start months in the past
//! (`tollgate local --start-time`). Claims must be judged by that clock too: a batch re-sent
//! there is still a duplicate, and a batch id re-used with other content still a 409.

use serde_json::{Value, json};
use tollgate_local::{LocalStack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_started_in_the_past_still_counts_a_batch_once() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-31T13:37:00Z").unwrap();
    opts.start_time = Some(start.timestamp());
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let http = reqwest::Client::new();
    let post = |path: &str, bearer: &str, body: Value| {
        let req = http
            .post(format!("{}{path}", stack.info.base_url))
            .bearer_auth(bearer)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (s, sub) = post(
        "/checkout/sessions",
        &stack.info.portal_secret,
        json!({"consumer_id": "past", "product_id": "free", "subscription_name": "x",
               "success_url": format!("{}/portal/ok", stack.info.base_url),
               "cancel_url": format!("{}/portal/no", stack.info.base_url)}),
    )
    .await;
    assert_eq!(s, 201, "{sub}");
    let records = |n: usize| {
        (0..n)
            .map(|i| {
                json!({"id": format!("r{i}"), "subscription_id": sub["subscription_id"],
                       "timestamp": "2026-01-31T13:40:00Z", "meter": "api_calls"})
            })
            .collect::<Vec<_>>()
    };
    let gw = stack.info.gateway_secret.clone();
    let (s, first) = post(
        "/usage",
        &gw,
        json!({"batch_id": "b1", "records": records(3)}),
    )
    .await;
    assert_eq!((s, &first["duplicate"]), (200, &json!(false)), "{first}");
    let (s, again) = post(
        "/usage",
        &gw,
        json!({"batch_id": "b1", "records": records(3)}),
    )
    .await;
    assert_eq!((s, &again["duplicate"]), (200, &json!(true)), "{again}");
    let (s, other) = post(
        "/usage",
        &gw,
        json!({"batch_id": "b1", "records": records(1)}),
    )
    .await;
    assert_eq!(s, 409, "{other}");
    let used = again["subscriptions"][0]["usage"]["api_calls"].as_u64();
    assert!(used.is_none() || used == Some(3), "{again}");
}
