//! The billing run's own settings, from the environment (the template sets them).

use tollgate_domain::billing::{BillingConfig, BillingConfigError};
use tollgate_domain::time::Duration;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub billing: BillingConfig,
    /// Subscriptions billed at once (`BILLING_CONCURRENCY`, default 256). Each one waits on
    /// a few DynamoDB round trips and a Stripe call (100–300 ms), so reaching the meter-event
    /// rate takes a few hundred in flight (Little's law); the rate limiter and the
    /// per-(customer, meter) locks keep Stripe's limits whatever this is.
    pub concurrency: usize,
    /// Meter events per second, client side (`BILLING_METER_EVENTS_PER_SECOND`, default 900:
    /// below Stripe's live meter-event limit of 1,000/s, which is separate from the 100 writes/s
    /// the other functions use, and enough for 100,000 subscriptions in under two minutes;
    /// set 20 against a test-mode account, whose limit is 25 writes/s).
    pub meter_events_per_second: u32,
    /// Stripe reads per second for reconciliation (`BILLING_STRIPE_READS_PER_SECOND`, default
    /// 50: half of the live read limit).
    pub stripe_reads_per_second: u32,
    /// Stop starting new subscriptions this long before the Lambda deadline
    /// (`BILLING_DEADLINE_MARGIN_SECONDS`, default 30).
    pub deadline_margin: std::time::Duration,
    /// Re-read a subscription from Stripe when its last webhook is older than this (24 h).
    pub reconcile_after: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            billing: BillingConfig::default(),
            concurrency: 256,
            meter_events_per_second: 900,
            stripe_reads_per_second: 50,
            deadline_margin: std::time::Duration::from_secs(30),
            reconcile_after: Duration::hours(24),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunConfigError {
    #[error("{name}: expected a positive whole number, found {value:?}")]
    NotANumber { name: &'static str, value: String },
    #[error("{0}")]
    Billing(#[from] BillingConfigError),
}

impl RunConfig {
    pub fn from_env() -> Result<Self, RunConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, RunConfigError> {
        let num = |name: &'static str, default: u64| -> Result<u64, RunConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(RunConfigError::NotANumber { name, value: v }),
            }
        };
        let d = Self::default();
        let mut billing = BillingConfig::default();
        billing.late_window = Duration::hours(num(
            "BILLING_LATE_WINDOW_HOURS",
            d.billing.late_window.num_hours() as u64,
        )? as i64);
        billing.settle = Duration::minutes(num(
            "BILLING_SETTLE_MINUTES",
            d.billing.settle.num_minutes() as u64,
        )? as i64);
        billing.validate()?;
        Ok(Self {
            billing,
            concurrency: num("BILLING_CONCURRENCY", d.concurrency as u64)? as usize,
            meter_events_per_second: num(
                "BILLING_METER_EVENTS_PER_SECOND",
                u64::from(d.meter_events_per_second),
            )? as u32,
            stripe_reads_per_second: num(
                "BILLING_STRIPE_READS_PER_SECOND",
                u64::from(d.stripe_reads_per_second),
            )? as u32,
            deadline_margin: std::time::Duration::from_secs(num(
                "BILLING_DEADLINE_MARGIN_SECONDS",
                d.deadline_margin.as_secs(),
            )?),
            reconcile_after: d.reconcile_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_overrides_and_rejects_bad_values() {
        let env = HashMap::from([
            ("BILLING_CONCURRENCY", "8"),
            ("BILLING_LATE_WINDOW_HOURS", "48"),
        ]);
        let c = RunConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.billing.late_window, Duration::hours(48));
        assert_eq!(c.meter_events_per_second, 900);

        let bad = RunConfig::from_lookup(|k| (k == "BILLING_CONCURRENCY").then(|| "0".into()));
        assert!(matches!(
            bad,
            Err(RunConfigError::NotANumber {
                name: "BILLING_CONCURRENCY",
                ..
            })
        ));
        // Stripe rejects meter events older than 35 days.
        let too_late =
            RunConfig::from_lookup(|k| (k == "BILLING_LATE_WINDOW_HOURS").then(|| "1000".into()));
        assert!(matches!(too_late, Err(RunConfigError::Billing(_))));
    }
}
