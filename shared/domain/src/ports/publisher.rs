//! The event-publisher port (EventBridge).

use crate::events::DomainEvent;
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
#[error("event publishing failed: {0}")]
pub struct PublishError(pub String);

/// Where domain events go (EventBridge in AWS).
#[async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError>;
}
