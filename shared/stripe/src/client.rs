//! The async-stripe client with tollgate's request discipline: an `Idempotency-Key` on every
//! POST derived from the domain operation, bounded retries with jittered backoff, and Stripe
//! errors mapped to [`PaymentsError`].

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use tollgate_domain::ports::PaymentsError;

/// How to reach Stripe. Built once per process (in `main`), from configuration.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: SecretString,
    /// `None` = api.stripe.com; the emulator's `http://127.0.0.1:PORT` in tests and locally.
    pub api_base: Option<String>,
    pub retry: RetryPolicy,
}

impl StripeConfig {
    pub fn new(secret_key: SecretString, api_base: Option<String>) -> Self {
        Self {
            secret_key,
            api_base,
            retry: RetryPolicy::default(),
        }
    }

    /// Reads `STRIPE_SECRET_KEY` (required) and `STRIPE_API_BASE` (optional).
    pub fn from_env() -> Result<Self, PaymentsError> {
        let key = std::env::var("STRIPE_SECRET_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| PaymentsError::Unexpected("STRIPE_SECRET_KEY is not set".into()))?;
        let key = tollgate_app::config::clean_secret("STRIPE_SECRET_KEY", &key)
            .map_err(|e| PaymentsError::Unexpected(e.to_string()))?;
        let base = std::env::var("STRIPE_API_BASE")
            .ok()
            .filter(|b| !b.is_empty());
        Ok(Self::new(key, base))
    }
}

/// Bounded retries with jittered exponential backoff.
///
/// Stripe documents 409 (lock timeout, concurrent use of one idempotency key), 424 (external
/// dependency failed), 429 and 5xx as transient; with the same Idempotency-Key a retry cannot do the work twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // 4 attempts over at most ~3.5 s: well inside a Lambda's timeout, enough to ride out
        // Stripe's per-second rate limit.
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// "Equal jitter": half the exponential step fixed, half random, so concurrent callers
    /// that were throttled together do not come back together.
    pub fn delay(&self, retry: u32) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_delay);
        let half = step / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// The async-stripe client plus tollgate's request discipline.
#[derive(Debug, Clone)]
pub struct StripeClient {
    client: Client,
    retry: RetryPolicy,
}

impl StripeClient {
    pub fn new(config: &StripeConfig) -> Result<Self, PaymentsError> {
        let mut builder = ClientBuilder::new(config.secret_key.expose_secret());
        if let Some(base) = &config.api_base {
            builder = builder.url(base.clone());
        }
        let client = builder
            .build()
            .map_err(|e| PaymentsError::Unexpected(format!("Stripe client configuration: {e}")))?;
        Ok(Self {
            client,
            retry: config.retry,
        })
    }

    /// A POST: always sent with `Idempotency-Key: key`, the same key on every attempt.
    pub async fn post<R>(&self, request: &R, key: &str) -> Result<R::Output, PaymentsError>
    where
        R: StripeRequest + Sync,
        R::Output: miniserde::Deserialize,
    {
        let key = idempotency_key(key)?;
        self.send(request, Some(key)).await
    }

    /// A GET (reads need no key; retrying them is harmless).
    pub async fn get<R>(&self, request: &R) -> Result<R::Output, PaymentsError>
    where
        R: StripeRequest + Sync,
        R::Output: miniserde::Deserialize,
    {
        self.send(request, None).await
    }

    async fn send<R>(
        &self,
        request: &R,
        key: Option<IdempotencyKey>,
    ) -> Result<R::Output, PaymentsError>
    where
        R: StripeRequest + Sync,
        R::Output: miniserde::Deserialize,
    {
        let mut attempt = 0;
        loop {
            // One attempt per call into async-stripe: its own retry strategies either send no
            // key or a random one, and a random key defeats a retried Lambda.
            let strategy = match &key {
                Some(k) => RequestStrategy::Idempotent(k.clone()),
                None => RequestStrategy::Once,
            };
            let result = request
                .customize()
                .request_strategy(strategy)
                .send(&self.client)
                .await;
            match result {
                Ok(out) => return Ok(out),
                Err(err) => {
                    attempt += 1;
                    let retryable = is_retryable(&err);
                    if !retryable || attempt >= self.retry.max_attempts {
                        return Err(map_error(err));
                    }
                    let delay = self.retry.delay(attempt - 1);
                    tracing::warn!(attempt, ?delay, error = %short(&err), "Stripe call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

fn idempotency_key(key: &str) -> Result<IdempotencyKey, PaymentsError> {
    IdempotencyKey::new(key)
        .map_err(|e| PaymentsError::Unexpected(format!("idempotency key {key:?}: {e}")))
}

/// Transient failures: Stripe's documented retryable statuses, and transport errors.
///
/// async-stripe 1.0.0-rc.10 reads `Stripe-Should-Retry` inside its own retry loop but does not
/// surface it in [`StripeError`]; Stripe sets it to `true` exactly on these statuses (lock
/// timeouts, rate limits, server errors), so the status is the signal we can act on.
pub(crate) fn is_retryable(err: &StripeError) -> bool {
    match err {
        StripeError::Stripe(_, status) => retryable_status(*status),
        StripeError::ClientError(_) | StripeError::Timeout => true,
        StripeError::JSONDeserialize(_) | StripeError::ConfigError(_) => false,
    }
}

pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 409 | 424 | 429 | 500..=599)
}

fn short(err: &StripeError) -> String {
    match err {
        StripeError::Stripe(e, status) => format!(
            "{status} {}: {}",
            e.type_.as_str(),
            e.message.as_deref().unwrap_or("")
        ),
        other => other.to_string(),
    }
}

/// Stripe's error shape (`type`, `code`, `param`, `message`) → the domain's error.
pub(crate) fn map_error(err: StripeError) -> PaymentsError {
    use stripe::ApiErrorsType as T;
    match err {
        StripeError::Stripe(e, status) => {
            let message = e.message.clone().unwrap_or_default();
            let code = e.code.as_ref().map(|c| c.as_str().to_string());
            if status == 429 {
                return PaymentsError::RateLimited(message);
            }
            if status == 409 || status >= 500 {
                return PaymentsError::Unavailable(format!("HTTP {status}: {message}"));
            }
            match e.type_ {
                T::CardError => PaymentsError::CardDeclined {
                    decline_code: e.decline_code.clone(),
                    message,
                },
                T::IdempotencyError => PaymentsError::IdempotencyConflict(message),
                T::ApiError => PaymentsError::Unavailable(format!("HTTP {status}: {message}")),
                _ if status == 404 || code.as_deref() == Some("resource_missing") => {
                    PaymentsError::NotFound(message)
                }
                _ => PaymentsError::InvalidRequest {
                    param: e.param.clone(),
                    code,
                    message,
                },
            }
        }
        StripeError::ClientError(m) => PaymentsError::Unavailable(m),
        StripeError::Timeout => PaymentsError::Unavailable("timed out".into()),
        StripeError::JSONDeserialize(m) => PaymentsError::Unexpected(m),
        StripeError::ConfigError(m) => PaymentsError::Unexpected(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(status: u16, json: &str) -> StripeError {
        let e: stripe::ApiErrors = miniserde::json::from_str(json).expect("error json");
        StripeError::Stripe(Box::new(e), status)
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        };
        for retry in 0..6 {
            let step = (100u64 << retry).min(400);
            for _ in 0..50 {
                let d = p.delay(retry).as_millis() as u64;
                assert!(d >= step / 2 && d <= step, "retry {retry}: {d}");
            }
        }
        let many: std::collections::HashSet<_> = (0..50).map(|_| p.delay(3)).collect();
        assert!(many.len() > 1, "no jitter");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        for s in [409, 424, 429, 500, 502, 503] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 402, 403, 404] {
            assert!(!retryable_status(s), "{s}");
        }
        assert!(is_retryable(&StripeError::Timeout));
        assert!(!is_retryable(&StripeError::JSONDeserialize("x".into())));
    }

    #[test]
    fn stripe_errors_map_to_domain_errors() {
        let declined = api_error(
            402,
            r#"{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}"#,
        );
        assert_eq!(
            map_error(declined),
            PaymentsError::CardDeclined {
                decline_code: Some("insufficient_funds".into()),
                message: "Your card has insufficient funds.".into()
            }
        );
        let invalid = api_error(
            400,
            r#"{"type":"invalid_request_error","code":"parameter_missing","param":"line_items[0][price]","message":"Missing required param"}"#,
        );
        match map_error(invalid) {
            PaymentsError::InvalidRequest { param, code, .. } => {
                assert_eq!(param.as_deref(), Some("line_items[0][price]"));
                assert_eq!(code.as_deref(), Some("parameter_missing"));
            }
            other => panic!("{other:?}"),
        }
        let missing = api_error(
            404,
            r#"{"type":"invalid_request_error","code":"resource_missing","param":"id","message":"No such subscription"}"#,
        );
        assert!(matches!(map_error(missing), PaymentsError::NotFound(_)));
        let limited = api_error(
            429,
            r#"{"type":"invalid_request_error","code":"rate_limit","message":"slow down"}"#,
        );
        assert_eq!(
            map_error(limited),
            PaymentsError::RateLimited("slow down".into())
        );
        let down = api_error(500, r#"{"type":"api_error","message":"boom"}"#);
        assert!(map_error(down).is_transient());
        let reused = api_error(
            400,
            r#"{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}"#,
        );
        assert!(matches!(
            map_error(reused),
            PaymentsError::IdempotencyConflict(_)
        ));
    }
}
