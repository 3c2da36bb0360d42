//! Hostile inputs through the real routes of the local stack (API Gateway events, the
//! functions' handlers, DynamoDB Local): a JSON body with a repeated key is refused with a 400
//! naming the key, a webhook timestamp at the ends of i64 is refused, not a panic, and nothing
//! is written either way.

mod sam;

use serde_json::{Value, json};
use tollgate_local::{LocalStack, StackOptions};

async fn post(
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the stack answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn item_count(stack: &LocalStack) -> usize {
    let client = tollgate_testkit::dynamo::client_for(&stack.info.dynamodb_endpoint);
    let out = client
        .scan()
        .table_name(&stack.info.table_name)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("scan");
    out.count() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_keys_and_extreme_timestamps_are_refused_without_a_write() {
    let mut opts = StackOptions::new(sam::repo_root());
    opts.port = 0;
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let base = stack.info.base_url.clone();
    let before = item_count(&stack).await;

    // Usage: the same key twice in the batch and in a record.
    let now = stack.now().to_rfc3339();
    for (body, field) in [
        (
            r#"{"batch_id":"b1","batch_id":"b2","records":[]}"#.to_string(),
            "batch_id",
        ),
        (
            format!(
                r#"{{"batch_id":"b3","records":[{{"id":"r1","subscription_id":"sub_x","timestamp":"{now}","meter":"api_calls","value":1,"value":1000000}}]}}"#
            ),
            "records[0].value",
        ),
    ] {
        let (status, answer) = post(
            &format!("{base}/usage"),
            Some(&stack.info.gateway_secret),
            &[],
            &body,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }

    // Checkout: a second consumer_id would decide whose subscription this is.
    let body = r#"{"consumer_id":"dev-a","consumer_id":"dev-b","product_id":"free",
        "subscription_name":"x","success_url":"https://a.example/s","cancel_url":"https://a.example/c"}"#;
    let (status, answer) = post(
        &format!("{base}/checkout/sessions"),
        Some(&stack.info.portal_secret),
        &[],
        body,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "consumer_id", "{answer}");

    // Webhook: t= at both ends of i64 (and beyond it), correctly signed otherwise.
    let event = json!({"id": "evt_hostile", "object": "event", "type": "customer.created",
        "api_version": "2019-02-19", "created": 1, "livemode": false,
        "data": {"object": {"id": "cus_1", "object": "customer"}}})
    .to_string();
    for t in [i64::MIN, i64::MAX, 0] {
        let sig = stripe_webhook::signature::sign(
            event.as_bytes(),
            stack.info.webhook_secret.as_bytes(),
            t,
        );
        let (status, answer) = post(
            &format!("{base}/stripe/webhook"),
            None,
            &[("stripe-signature", &sig)],
            &event,
        )
        .await;
        assert_eq!(status, 400, "t={t}: {answer}");
    }
    let huge = format!("t=99999999999999999999999,v1={}", "ab".repeat(32));
    let (status, _) = post(
        &format!("{base}/stripe/webhook"),
        None,
        &[("stripe-signature", &huge)],
        &event,
    )
    .await;
    assert_eq!(status, 400);

    assert_eq!(
        item_count(&stack).await,
        before,
        "a refused request wrote something"
    );
}
