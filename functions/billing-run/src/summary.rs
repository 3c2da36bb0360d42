//! What a run did: returned to the invoker, logged as one JSON line, and published as
//! CloudWatch metrics through the Embedded Metric Format (a log line, no API call).

use serde::Serialize;
use tollgate_domain::billing::RunMode;
use tollgate_domain::ids::{MeterId, SubscriptionId};
use tollgate_domain::time::{NaiveDate, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub subscription_id: SubscriptionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter: Option<MeterId>,
    pub error: String,
    /// Whether the next run can be expected to succeed (Stripe or DynamoDB was unavailable).
    pub retryable: bool,
}

impl Failure {
    pub fn new(
        sub: &SubscriptionId,
        meter: Option<&MeterId>,
        error: &str,
        retryable: bool,
    ) -> Self {
        Self {
            subscription_id: sub.clone(),
            meter: meter.cloned(),
            error: error.to_string(),
            retryable,
        }
    }
}

/// Usage that arrived after its slice could still be billed in its own period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LateUsage {
    pub subscription_id: SubscriptionId,
    pub meter: MeterId,
    /// Start of the slice (UTC hour) the usage belongs to.
    pub from: Timestamp,
    pub quantity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub mode: RunMode,
    /// The night a nightly run reports (for a period-close pass: the night it may have
    /// finished).
    pub date: NaiveDate,
    /// Usage in hours ending by this instant was eligible.
    pub cutoff: Option<Timestamp>,
    /// Everything listed was handled (nothing deferred, no retryable failure).
    pub complete: bool,
    /// Meter events Stripe accepted in this run (new reports and re-sends).
    pub reported: u32,
    /// Of those, re-sends of entries an earlier invocation claimed but never confirmed.
    pub resent: u32,
    /// Sum of the values reported.
    pub quantity: u64,
    /// (subscription, meter) pairs with nothing to send, or not billed through Stripe.
    pub skipped: u32,
    /// Entries another invocation is sending right now.
    pub in_flight: u32,
    /// Subscriptions not started because the Lambda deadline was near.
    pub deferred: u32,
    pub failed: Vec<Failure>,
    pub late_unbilled: Vec<LateUsage>,
    /// Identifiers of claimed meter events never confirmed and past Stripe's dedupe window.
    pub unconfirmed: Vec<String>,
    pub expired: Vec<SubscriptionId>,
    pub reconciled: Vec<SubscriptionId>,
    /// Requests sent to Stripe (meter events and subscription reads; the adapter's own retries
    /// not counted).
    pub stripe_calls: u32,
    pub duration_ms: u64,
}

impl RunSummary {
    pub fn new(mode: RunMode, date: NaiveDate) -> Self {
        Self {
            mode,
            date,
            cutoff: None,
            complete: false,
            reported: 0,
            resent: 0,
            quantity: 0,
            skipped: 0,
            in_flight: 0,
            deferred: 0,
            failed: Vec::new(),
            late_unbilled: Vec::new(),
            unconfirmed: Vec::new(),
            expired: Vec::new(),
            reconciled: Vec::new(),
            stripe_calls: 0,
            duration_ms: 0,
        }
    }

    /// The EMF document: CloudWatch turns its numbers into metrics in namespace `tollgate`.
    pub fn metrics(&self) -> serde_json::Value {
        let names = [
            "MeterEventsReported",
            "MeterEventsResent",
            "UsageReported",
            "Skipped",
            "InFlight",
            "Deferred",
            "Failed",
            "LateUnbilled",
            "Unconfirmed",
            "Expired",
            "Reconciled",
            "StripeCalls",
        ];
        serde_json::json!({
            "_aws": {
                "Timestamp": chrono::Utc::now().timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": "tollgate",
                    "Dimensions": [["Function", "Mode"]],
                    "Metrics": names.iter().map(|n| serde_json::json!({"Name": n, "Unit": "Count"})).collect::<Vec<_>>(),
                }],
            },
            "Function": "billing-run",
            "Mode": self.mode,
            "MeterEventsReported": self.reported,
            "MeterEventsResent": self.resent,
            "UsageReported": self.quantity,
            "Skipped": self.skipped,
            "InFlight": self.in_flight,
            "Deferred": self.deferred,
            "Failed": self.failed.len(),
            "LateUnbilled": self.late_unbilled.len(),
            "Unconfirmed": self.unconfirmed.len(),
            "Expired": self.expired.len(),
            "Reconciled": self.reconciled.len(),
            "StripeCalls": self.stripe_calls,
        })
    }

    pub fn log(&self) {
        // EMF must be a bare JSON line on stdout, not wrapped by the tracing formatter.
        println!("{}", self.metrics());
        let detail = serde_json::to_string(self).unwrap_or_default();
        if self.failed.is_empty() && self.unconfirmed.is_empty() {
            tracing::info!(summary = %detail, "billing run finished");
        } else {
            tracing::warn!(summary = %detail, "billing run finished with failures");
        }
    }
}
