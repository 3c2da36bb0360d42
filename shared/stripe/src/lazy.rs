//! The Stripe adapter built on first use.
//!
//! In AWS the Stripe key is a Secrets Manager ARN: fetching it at Lambda init would put a TLS
//! round trip into every cold start, and many invocations (a duplicate webhook, a free
//! checkout, a billing night with nothing to report) never call Stripe. So functions hand
//! [`LazyPayments`] a way to build the adapter, and the first call that needs Stripe builds it.
//! A failed build is not cached: the next call tries again.

use crate::client::StripeConfig;
use crate::payments::StripeAdapter;
use async_trait::async_trait;
use secrecy::SecretString;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tollgate_domain::ports::{
    CheckoutRequest, CheckoutSession, CustomerCredit, MeterEvent, Payments, PaymentsError,
    PaymentsResult, SubscriptionSnapshot,
};
use tollgate_domain::{ConsumerId, StripeId, SubscriptionId};

type BuildFuture = Pin<Box<dyn Future<Output = PaymentsResult<StripeAdapter>> + Send>>;

pub struct LazyPayments {
    build: Box<dyn Fn() -> BuildFuture + Send + Sync>,
    adapter: OnceCell<StripeAdapter>,
}

impl LazyPayments {
    pub fn new<F, Fut>(build: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PaymentsResult<StripeAdapter>> + Send + 'static,
    {
        Self {
            build: Box::new(move || Box::pin(build())),
            adapter: OnceCell::new(),
        }
    }

    /// The usual case: the adapter for `api_base`, with the secret key fetched by `key` (a
    /// Secrets Manager read in AWS) on first use.
    pub fn from_key<F, Fut>(api_base: Option<String>, key: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SecretString, String>> + Send + 'static,
    {
        let key = Arc::new(key);
        Self::new(move || {
            let (key, api_base) = (key.clone(), api_base.clone());
            async move {
                let secret = key().await.map_err(PaymentsError::Unavailable)?;
                StripeAdapter::from_config(&StripeConfig::new(secret, api_base))
            }
        })
    }

    /// The adapter a function uses: `STRIPE_API_BASE` and the Stripe secret key of its
    /// [`Settings`](tollgate_app::Settings), the key read (from Secrets Manager in AWS) on the
    /// first call that needs Stripe, not at init.
    pub fn from_settings(settings: &tollgate_app::Settings) -> Self {
        let key = settings.stripe_secret_key.clone();
        Self::from_key(settings.stripe_api_base.clone(), move || {
            let key = key.clone();
            async move { key.get().await.map_err(|e| e.to_string()) }
        })
    }

    async fn adapter(&self) -> PaymentsResult<&StripeAdapter> {
        self.adapter.get_or_try_init(|| (self.build)()).await
    }

    /// Whether the adapter was built (tests: init must not build it).
    pub fn is_built(&self) -> bool {
        self.adapter.initialized()
    }
}

#[async_trait]
impl Payments for LazyPayments {
    async fn ensure_customer(
        &self,
        consumer: &ConsumerId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        self.adapter().await?.ensure_customer(consumer, email).await
    }
    async fn create_subscription_customer(
        &self,
        consumer: &ConsumerId,
        subscription: &SubscriptionId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        self.adapter()
            .await?
            .create_subscription_customer(consumer, subscription, email)
            .await
    }
    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> PaymentsResult<CheckoutSession> {
        self.adapter().await?.create_checkout_session(request).await
    }
    async fn get_subscription(&self, id: &StripeId) -> PaymentsResult<SubscriptionSnapshot> {
        self.adapter().await?.get_subscription(id).await
    }
    async fn set_cancel_at_period_end(
        &self,
        id: &StripeId,
        cancel: bool,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        self.adapter()
            .await?
            .set_cancel_at_period_end(id, cancel, intent)
            .await
    }
    async fn cancel_subscription_now(
        &self,
        id: &StripeId,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        self.adapter()
            .await?
            .cancel_subscription_now(id, intent)
            .await
    }
    async fn expire_checkout_session(&self, id: &StripeId) -> PaymentsResult<bool> {
        self.adapter().await?.expire_checkout_session(id).await
    }
    async fn checkout_session_of_payment(
        &self,
        payment_intent: &str,
    ) -> PaymentsResult<Option<std::collections::BTreeMap<String, String>>> {
        self.adapter()
            .await?
            .checkout_session_of_payment(payment_intent)
            .await
    }
    async fn report_meter_event(&self, event: &MeterEvent) -> PaymentsResult<()> {
        self.adapter().await?.report_meter_event(event).await
    }
    async fn add_customer_credit(&self, credit: &CustomerCredit) -> PaymentsResult<StripeId> {
        self.adapter().await?.add_customer_credit(credit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn builds_on_first_use_once_and_retries_a_failed_build() {
        let builds = Arc::new(AtomicUsize::new(0));
        let b = builds.clone();
        // Nothing listens on port 9: calls fail, but only after the adapter was built.
        let lazy = LazyPayments::from_key(Some("http://127.0.0.1:9".into()), move || {
            let n = b.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("secret not reachable".to_string())
                } else {
                    Ok(SecretString::from("sk_test_x"))
                }
            }
        });
        assert!(!lazy.is_built());
        assert_eq!(builds.load(Ordering::SeqCst), 0, "nothing built at init");
        let id = StripeId::parse("sub_1").unwrap();
        let first = lazy.get_subscription(&id).await;
        assert!(matches!(first, Err(PaymentsError::Unavailable(m)) if m.contains("secret")));
        assert!(!lazy.is_built(), "a failed build is not cached");
        let _ = lazy.get_subscription(&id).await;
        assert!(lazy.is_built());
        let _ = lazy.get_subscription(&id).await;
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }
}
