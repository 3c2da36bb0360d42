//! The checkout function: the developer portal's backend API.
//!
//! | route | what |
//! |---|---|
//! | `POST /checkout/sessions` | start a Stripe Checkout Session (or activate a free product at once) |
//! | `GET /catalog` | the products on sale |
//! | `GET /consumers/{id}/subscriptions` | status, quota, usage so far this period, quote of the bill so far |
//! | `GET /consumers/{id}/has-paid?product=ID[,ID…]` | whether the consumer has live access to a product (or any of several) |
//! | `POST /subscriptions/{id}/cancel` | cancel at the end of the period (at once for free products; a pending checkout's session is expired) |
//! | `POST /subscriptions/{id}/resume` | undo a cancel at the end of the period |
//! | `POST /subscriptions/{id}/keys` | issue a new API key, revoking the old one in the same commit |
//! | `POST /consumers/{id}/credit/adjustments` | an operator's grant (+) or deduction (−) of prepaid credit, once per idempotency key |
//!
//! Every route needs `Authorization: Bearer <portal secret>` (compared in constant time).
//!
//! # How the consumer gets an API key
//!
//! The key is minted with the subscription and returned ONCE, in the answer to
//! `POST /checkout/sessions` (`api_key`); tollgate keeps only its SHA-256. For a paid product
//! it works once the subscription is active (the authorizer checks the subscription's status),
//! and the webhook announces it with `ApiKeyIssued` (no key inside) when it activates the
//! subscription. A free product is active at once, so its key works at once. A portal that lost
//! the key calls `POST /subscriptions/{id}/keys`, which shows a new one once and revokes the old.

mod credit;
mod routes;

pub use routes::{CheckoutRequestBody, IssuedKey, SubscriptionView};

use http::Method;
use lambda_http::{Body, Request, Response};
use std::sync::Arc;
use tollgate_app::credit::CreditStore;
use tollgate_app::{ApiError, Secret, Settings};
use tollgate_domain::Catalog;
use tollgate_domain::credit::CreditPolicy;
use tollgate_domain::ports::{EventPublisher, Payments};
use tollgate_domain::time::Clock;

/// Everything the handler needs, built once per Lambda instance.
#[derive(Clone)]
pub struct Checkout {
    /// The store, with the credit reads that gate a new prepaid key and apply adjustments.
    pub store: Arc<dyn CreditStore>,
    pub payments: Arc<dyn Payments>,
    pub publisher: Arc<dyn EventPublisher>,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<Catalog>,
    pub portal_secret: Secret,
    /// Allowed prefixes of success / cancel URLs.
    pub return_url_allowlist: Vec<String>,
    /// The floor and the low-credit line an operator's adjustment follows (as usage does).
    pub credit_policy: CreditPolicy,
}

impl Checkout {
    /// The adapters plus what `settings` says.
    pub fn new(
        settings: &Settings,
        store: Arc<dyn CreditStore>,
        payments: Arc<dyn Payments>,
        publisher: Arc<dyn EventPublisher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            payments,
            publisher,
            clock,
            catalog: settings.catalog.clone(),
            portal_secret: settings.portal_secret.clone(),
            return_url_allowlist: settings.return_url_allowlist.clone(),
            credit_policy: tollgate_app::credit::policy(settings),
        }
    }

    /// The Lambda handler: never fails at the Lambda level; every error is an HTTP answer.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let resp = match self.route(&req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::Text(body)))
    }

    async fn route(&self, req: &Request) -> Result<http::Response<String>, ApiError> {
        let secret = self
            .portal_secret
            .get()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !tollgate_app::auth::bearer_matches(
            req.headers(),
            secrecy::ExposeSecret::expose_secret(&secret),
        ) {
            return Err(ApiError::Unauthorized);
        }
        let path = req.uri().path().trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let body = req.body().as_ref();
        match (req.method(), segments.as_slice()) {
            (&Method::POST, ["checkout", "sessions"]) => self.create_session(body).await,
            (&Method::GET, ["catalog"]) => Ok(self.catalog_view()),
            (&Method::GET, ["consumers", consumer, "subscriptions"]) => {
                self.subscriptions(consumer).await
            }
            (&Method::GET, ["consumers", consumer, "has-paid"]) => {
                self.has_paid(consumer, req.uri().query().unwrap_or(""))
                    .await
            }
            (&Method::POST, ["subscriptions", id, "cancel"]) => self.cancel(id).await,
            (&Method::POST, ["subscriptions", id, "resume"]) => self.resume(id).await,
            (&Method::POST, ["subscriptions", id, "keys"]) => self.rotate_key(id).await,
            (&Method::POST, ["consumers", consumer, "credit", "adjustments"]) => {
                self.adjust_credit(consumer, body).await
            }
            _ => Err(ApiError::not_found(format!(
                "route {} {}",
                req.method(),
                req.uri().path()
            ))),
        }
    }
}
