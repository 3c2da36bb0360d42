//! The production path: `EventBridgePublisher::from_env` with nothing but the standard AWS
//! environment, redirected by `AWS_ENDPOINT_URL_EVENTBRIDGE` as a Lambda's would be.
//!
//! Its own test binary (one process, one test, one thread) because it sets environment
//! variables, which is only sound while no other thread reads them.

mod common;

use tollgate_domain::ports::EventPublisher;
use tollgate_testkit::eventbridge::EventBridgeCapture;

#[test]
fn from_env_publishes_to_the_endpoint_the_environment_names() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let capture = EventBridgeCapture::start().await;
        // SAFETY: single-threaded runtime, and this is the only test in this binary.
        unsafe {
            std::env::set_var("AWS_ENDPOINT_URL_EVENTBRIDGE", capture.endpoint_url());
            std::env::set_var("AWS_REGION", "eu-west-1");
            std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDTEST");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "secret");
            std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/tollgate-test-config");
            std::env::set_var(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/tollgate-test-creds",
            );
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
        let publisher = tollgate_events::EventBridgePublisher::from_env("prod-bus").await;

        publisher
            .publish(&common::one_of_each()[..2])
            .await
            .unwrap();

        assert_eq!(
            capture.detail_types(),
            ["SubscriptionActivated", "SubscriptionSuspended"]
        );
        assert!(
            capture
                .entries()
                .iter()
                .all(|e| e.event_bus_name.as_deref() == Some("prod-bus"))
        );
    });
}
