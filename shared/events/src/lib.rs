//! tollgate-events: the EventBridge adapter of the [`EventPublisher`] port.
//!
//! Each [`DomainEvent`] becomes one PutEvents entry on the configured bus: source
//! [`SOURCE`], `detail-type` from [`DomainEvent::detail_type`], `detail` the event's JSON (the
//! schemas under `schemas/events/` describe it). Subscribers (a gateway adapter, an email
//! sender) match on source + detail-type with an EventBridge rule.
//!
//! The client comes from the standard AWS environment, built once per Lambda instance.
//! `AWS_ENDPOINT_URL_EVENTBRIDGE` (or `AWS_ENDPOINT_URL`) points it elsewhere, which is how tests
//! reach the capture server: there is no endpoint branch in this code.

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use std::time::Duration;
use tollgate_domain::events::DomainEvent;
use tollgate_domain::ports::{EventPublisher, PublishError};

/// The `source` of every tollgate event: what an EventBridge rule matches on.
pub const SOURCE: &str = "tollgate";

/// PutEvents accepts at most 10 entries per request.
pub const MAX_ENTRIES_PER_CALL: usize = 10;

/// Why events could not be published.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("could not serialize {detail_type}: {source}")]
    Serialize {
        detail_type: &'static str,
        source: serde_json::Error,
    },
    #[error("PutEvents call failed: {0}")]
    Call(String),
    /// EventBridge accepted the request but refused some entries, and kept refusing them after
    /// every retry. `entries` names each refused detail-type with EventBridge's error code.
    #[error("EventBridge refused {count} entries after {attempts} attempts: {entries}")]
    Refused {
        count: usize,
        attempts: u32,
        entries: String,
    },
}

impl From<EventsError> for PublishError {
    fn from(e: EventsError) -> Self {
        PublishError(e.to_string())
    }
}

/// How often and how patiently refused entries are sent again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries per chunk, the first included.
    pub attempts: u32,
    /// Pause before the first retry; doubled before each later one.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three tries, 100 ms then 200 ms apart: EventBridge's per-entry `InternalFailure` and
    /// `ThrottlingException` are transient, and a Lambda answering a webhook cannot wait long
    /// (Stripe gives up on a delivery after ~30 s and retries it anyway).
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
        }
    }
}

/// Publishes domain events to one EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: Client,
    bus_name: String,
    retry: RetryPolicy,
}

/// The HTTP client every tollgate AWS client uses: hyper with rustls on ring, the one HTTP
/// stack the workspace builds (the SDK's default would compile a second one).
pub fn https_client() -> aws_sdk_eventbridge::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Loads the AWS configuration from the environment (region, credentials, `AWS_ENDPOINT_URL_*`).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

impl EventBridgePublisher {
    /// A publisher on `bus_name` using an already loaded AWS configuration (share one
    /// `SdkConfig` between the store and the publisher in a function's `main`).
    pub fn new(config: &SdkConfig, bus_name: impl Into<String>) -> Self {
        Self {
            client: Client::new(config),
            bus_name: bus_name.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// A publisher whose configuration comes from the environment; call once per instance.
    pub async fn from_env(bus_name: impl Into<String>) -> Self {
        Self::new(&load_sdk_config().await, bus_name)
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    fn entry(&self, event: &DomainEvent) -> Result<PutEventsRequestEntry, EventsError> {
        let detail_type = event.detail_type();
        let detail = serde_json::to_string(event).map_err(|source| EventsError::Serialize {
            detail_type,
            source,
        })?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .build())
    }

    /// Sends one chunk (≤ 10 entries), re-sending only the refused entries. PutEvents is not
    /// all-or-nothing: a 200 answer can still carry `FailedEntryCount > 0`, and re-sending the
    /// whole chunk would duplicate the accepted events for every subscriber.
    async fn put_chunk(&self, mut pending: Vec<PutEventsRequestEntry>) -> Result<(), EventsError> {
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            let out = self
                .client
                .put_events()
                .set_entries(Some(pending.clone()))
                .send()
                .await
                // The SDK already retried transport errors and throttling of the whole call.
                .map_err(|e| {
                    EventsError::Call(
                        aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string(),
                    )
                })?;
            if out.failed_entry_count() == 0 {
                return Ok(());
            }
            // Result entries are in request order; a failed one carries an error code.
            let refused: Vec<(PutEventsRequestEntry, String)> = pending
                .into_iter()
                .zip(out.entries())
                .filter_map(|(req, res)| {
                    res.error_code().map(|code| {
                        let msg = res.error_message().unwrap_or_default();
                        (req, format!("{code} {msg}").trim_end().to_owned())
                    })
                })
                .collect();
            if refused.is_empty() {
                // FailedEntryCount said some failed but no entry says which: do not guess.
                return Err(EventsError::Call(format!(
                    "FailedEntryCount {} without failed entries in the answer",
                    out.failed_entry_count()
                )));
            }
            if attempt >= self.retry.attempts {
                let entries = refused
                    .iter()
                    .map(|(req, why)| format!("{} ({why})", req.detail_type().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(EventsError::Refused {
                    count: refused.len(),
                    attempts: attempt,
                    entries,
                });
            }
            tracing::warn!(
                refused = refused.len(),
                attempt,
                first_error = %refused[0].1,
                "EventBridge refused entries; retrying them"
            );
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
            pending = refused.into_iter().map(|(req, _)| req).collect();
        }
    }

    /// Publishes `events` in order, in PutEvents calls of at most ten entries.
    pub async fn publish_events(&self, events: &[DomainEvent]) -> Result<(), EventsError> {
        // Serialize everything first: a bad event must not leave half the batch published.
        let entries = events
            .iter()
            .map(|e| self.entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in entries.chunks(MAX_ENTRIES_PER_CALL) {
            self.put_chunk(chunk.to_vec()).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError> {
        Ok(self.publish_events(events).await?)
    }
}
