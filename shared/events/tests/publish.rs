//! The publisher through the real SDK client, against the EventBridge capture server.

mod common;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_eventbridge::config::Credentials;
use std::time::Duration;
use tollgate_domain::ports::EventPublisher;
use tollgate_events::{EventBridgePublisher, EventsError, RetryPolicy, SOURCE};
use tollgate_testkit::eventbridge::EventBridgeCapture;

const BUS: &str = "tollgate-test-bus";

async fn publisher_for(capture: &EventBridgeCapture) -> EventBridgePublisher {
    let config: SdkConfig = aws_config::defaults(BehaviorVersion::latest())
        .http_client(tollgate_events::https_client())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(capture.endpoint_url())
        .load()
        .await;
    EventBridgePublisher::new(&config, BUS).with_retry(RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(5),
    })
}

#[tokio::test]
async fn every_event_is_put_on_the_bus_with_its_detail_type_and_json() {
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;
    let events = common::one_of_each();

    publisher.publish(&events).await.unwrap();

    let entries = capture.entries();
    assert_eq!(entries.len(), events.len());
    for (event, entry) in events.iter().zip(&entries) {
        assert_eq!(entry.source, SOURCE);
        assert_eq!(entry.event_bus_name.as_deref(), Some(BUS));
        assert_eq!(entry.detail_type, event.detail_type());
        assert_eq!(entry.detail, serde_json::to_value(event).unwrap());
        assert_eq!(entry.detail["type"], event.detail_type());
    }
    // Subscribers round-trip the detail into the same event.
    let back: tollgate_domain::events::DomainEvent =
        serde_json::from_value(entries[5].detail.clone()).unwrap();
    assert_eq!(back, events[5]);
}

#[tokio::test]
async fn an_api_key_event_never_carries_the_key() {
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;
    let issued = common::one_of_each()
        .into_iter()
        .find(|e| e.detail_type() == "ApiKeyIssued")
        .unwrap();

    publisher.publish(&[issued]).await.unwrap();

    let detail = &capture.entries()[0].detail;
    let mut keys: Vec<&str> = detail
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["at", "consumer_id", "key_prefix", "subscription_id", "type"]
    );
}

#[tokio::test]
async fn batches_go_out_in_calls_of_at_most_ten_in_order() {
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;
    let events = common::activations(23);

    publisher.publish(&events).await.unwrap();

    assert_eq!(capture.calls(), [10, 10, 3]);
    let ids: Vec<_> = capture
        .entries()
        .iter()
        .map(|e| e.detail["subscription_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<_> = (100..123).map(|n| format!("sub_{n:04}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn nothing_to_publish_makes_no_call() {
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;

    publisher.publish(&[]).await.unwrap();

    assert!(capture.calls().is_empty());
}

#[tokio::test]
async fn refused_entries_alone_are_sent_again() {
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;
    // The first two entries of the first call fail; the second call must carry exactly them.
    capture.refuse_next(2, "InternalFailure");
    let events = common::activations(5);

    publisher.publish(&events).await.unwrap();

    assert_eq!(capture.calls(), [5, 2]);
    let mut ids: Vec<_> = capture
        .entries()
        .iter()
        .map(|e| e.detail["subscription_id"].as_str().unwrap().to_owned())
        .collect();
    // Accepted once each: no duplicate for the three accepted on the first call.
    ids.sort();
    let expected: Vec<_> = (100..105).map(|n| format!("sub_{n:04}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn each_retry_carries_only_what_is_still_refused() {
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;
    // Call 1: all 3 refused. Call 2: 2 refused, 1 accepted. Call 3: the last 2 accepted.
    capture.refuse_next(5, "ThrottlingException");

    publisher.publish(&common::activations(3)).await.unwrap();

    assert_eq!(capture.calls(), [3, 3, 2]);
    assert_eq!(capture.entries().len(), 3);
}

#[tokio::test]
async fn entries_refused_on_every_attempt_are_an_error_naming_them() {
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;
    capture.refuse_next(9, "ThrottlingException");

    let err = publisher
        .publish_events(&common::activations(3))
        .await
        .unwrap_err();

    assert_eq!(capture.calls(), [3, 3, 3]);
    assert!(capture.entries().is_empty());
    match err {
        EventsError::Refused {
            count,
            attempts,
            entries,
        } => {
            assert_eq!((count, attempts), (3, 3));
            assert!(
                entries.contains("SubscriptionActivated (ThrottlingException"),
                "{entries}"
            );
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_error_not_a_silent_loss() {
    // A wrong endpoint (nothing listening) must surface as an error the caller can retry on.
    let capture = EventBridgeCapture::start().await;
    let publisher = publisher_for(&capture).await;
    drop(capture);

    let err = publisher
        .publish_events(&common::activations(1))
        .await
        .unwrap_err();

    assert!(matches!(err, EventsError::Call(_)), "{err:?}");
}

/// The capture server refuses what AWS refuses, so a publisher bug cannot pass unnoticed.
mod capture_server {
    use super::*;
    use serde_json::{Value, json};

    async fn put(capture: &EventBridgeCapture, signed: bool, body: Value) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(capture.endpoint_url())
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "AWSEvents.PutEvents")
            .body(body.to_string());
        if signed {
            req = req.header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260301/us-east-1/events/aws4_request",
            );
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    fn entry(detail: &str) -> Value {
        json!({"Source": "tollgate", "DetailType": "X", "Detail": detail, "EventBusName": BUS})
    }

    #[tokio::test]
    async fn unsigned_requests_and_oversized_batches_are_rejected_whole() {
        let capture = EventBridgeCapture::start().await;

        let (status, body) = put(&capture, false, json!({"Entries": [entry("{}")]})).await;
        assert_eq!(status, 400);
        assert_eq!(body["__type"], "MissingAuthenticationTokenException");

        let eleven: Vec<Value> = (0..11).map(|_| entry("{}")).collect();
        let (status, body) = put(&capture, true, json!({"Entries": eleven})).await;
        assert_eq!(status, 400);
        assert_eq!(body["__type"], "ValidationException");

        assert!(capture.entries().is_empty());
    }

    #[tokio::test]
    async fn a_malformed_entry_is_refused_alone_inside_a_200() {
        let capture = EventBridgeCapture::start().await;

        let (status, body) = put(
            &capture,
            true,
            json!({"Entries": [entry("{\"ok\":1}"), entry("not json"), entry("[1]")]}),
        )
        .await;

        assert_eq!(status, 200);
        assert_eq!(body["FailedEntryCount"], 2);
        assert!(body["Entries"][0]["EventId"].is_string());
        assert_eq!(body["Entries"][1]["ErrorCode"], "MalformedDetail");
        assert_eq!(body["Entries"][2]["ErrorCode"], "MalformedDetail");
        assert_eq!(capture.entries().len(), 1);
        assert_eq!(capture.entries()[0].detail, json!({"ok": 1}));
    }
}
