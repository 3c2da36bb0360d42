//! The stripe-webhook function: `POST /stripe/webhook`.
//!
//! 1. The `Stripe-Signature` is verified on the raw body bytes ([`signature`]); any failure is a
//!    400 and nothing is read or written. So is a body that is not a JSON event.
//! 2. Each event id is claimed once: the claim (`Write::Claim`, 30-day TTL) is in the SAME
//!    commit as the event's effect, so a failed effect leaves no claim and Stripe's retry is
//!    not lost, and a duplicate is answered 200 and does nothing.
//! 3. Events are only nudges: for anything about a subscription the handler re-reads the
//!    Stripe subscription through the payments port and applies its *current* status with
//!    the lifecycle table (`tollgate_domain::lifecycle`, which explains why the final state is
//!    the same whatever order events come in). Events are parsed leniently (only the few fields
//!    needed, from `serde_json::Value`), so an endpoint on another API version still works.
//! 4. Unknown event types are accepted (200) and logged, never refused: a 400 would make
//!    Stripe retry them for three days and then disable the endpoint.
//! 5. Domain events are published after the commit succeeds.
//!
//! Answers: 200 (applied, duplicate or ignored), 400 (not from Stripe), 500 (a dependency
//! failed; nothing was written and Stripe retries).

pub mod signature;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tollgate_app::Secret;
use tollgate_app::credit::{
    CreditPurchase, CreditStore, PurchaseOutcome, apply_credit_purchase, apply_credit_reversal,
    gate_subscription_keys,
};
use tollgate_app::error::json_response;
use tollgate_app::subscriptions::{
    Attempt, Committed, Contended, Transition, commit_transition, retry_on_conflict,
};
use tollgate_domain::Catalog;
use tollgate_domain::catalog::Access;
use tollgate_domain::credit::CreditPolicy;
use tollgate_domain::entitlement::GateFact;
use tollgate_domain::ids::{StripeId, SubscriptionId};
use tollgate_domain::lifecycle::{self, BillingFact, Effect};
use tollgate_domain::ports::{
    ClaimScope, EventPublisher, Payments, PaymentsError, StoreError, Write, metadata,
};
use tollgate_domain::subscription::Subscription;
use tollgate_domain::time::{Clock, DateTime, Duration, Timestamp};
use tollgate_domain::usage;

/// How long an event id stays claimed. Stripe retries a delivery for up to 3 days; 30 days
/// also covers a manual "resend" from the dashboard much later.
pub const CLAIM_TTL_DAYS: i64 = 30;

/// Everything the handler needs, built once per Lambda instance.
#[derive(Clone)]
pub struct Webhook {
    /// The store, with the entitlement reads the credit purchase needs.
    pub store: Arc<dyn CreditStore>,
    pub payments: Arc<dyn Payments>,
    pub publisher: Arc<dyn EventPublisher>,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<Catalog>,
    pub webhook_secret: Secret,
    /// The operator's prepaid-credit settings (floor, low threshold).
    pub credit_policy: CreditPolicy,
}

impl Webhook {
    /// The adapters plus what `settings` says (secret, catalog, credit policy).
    pub fn new(
        settings: &tollgate_app::Settings,
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
            webhook_secret: settings.stripe_webhook_secret.clone(),
            credit_policy: tollgate_app::credit::policy(settings),
        }
    }
}

/// The few envelope fields tollgate reads; everything else is ignored, whatever the API
/// version of the endpoint.
#[derive(Debug, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    #[serde(default)]
    pub api_version: Option<String>,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The effect was committed (possibly "nothing changed", but the event is now claimed).
    Applied,
    /// The event id was already claimed.
    Duplicate,
    /// Accepted without any write (unknown type, nothing of tollgate's).
    Ignored(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Payments(#[from] PaymentsError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Retry(String),
    #[error(transparent)]
    Contended(#[from] Contended),
}

impl Webhook {
    /// The Lambda handler: every outcome is an HTTP answer.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let resp = match self.receive(&req).await {
            Ok(outcome) => {
                let (status, detail) = match &outcome {
                    Outcome::Applied => ("applied", None),
                    Outcome::Duplicate => ("duplicate", None),
                    Outcome::Ignored(why) => ("ignored", Some(why.clone())),
                };
                json_response(
                    StatusCode::OK,
                    &serde_json::json!({"received": true, "outcome": status, "detail": detail}),
                )
            }
            Err(WebhookError::BadRequest(why)) => {
                tracing::warn!(reason = %why, "webhook refused");
                json_response(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": {"code": "invalid_request", "message": why}}),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook failed; Stripe will retry");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": {"code": "internal_error", "message": "internal error"}}),
                )
            }
        };
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::Text(body)))
    }

    /// Verifies, parses and processes one delivery.
    pub async fn receive(&self, req: &Request) -> Result<Outcome, WebhookError> {
        let secret = self
            .webhook_secret
            .get()
            .await
            .map_err(|e| WebhookError::Config(e.to_string()))?;
        let header = req
            .headers()
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok());
        let body = req.body().as_ref();
        signature::verify(
            header,
            body,
            secrecy::ExposeSecret::expose_secret(&secret).as_bytes(),
            self.clock.now().timestamp(),
        )
        .map_err(|e| WebhookError::BadRequest(e.to_string()))?;
        let event: StripeEvent = serde_json::from_slice(body)
            .map_err(|e| WebhookError::BadRequest(format!("body is not a Stripe event: {e}")))?;
        self.process(&event).await
    }

    /// Processes a verified event.
    pub async fn process(&self, ev: &StripeEvent) -> Result<Outcome, WebhookError> {
        if self
            .store
            .is_claimed(ClaimScope::StripeEvent, &ev.id)
            .await?
        {
            tracing::info!(event = %ev.id, kind = %ev.kind, "duplicate event");
            return Ok(Outcome::Duplicate);
        }
        let obj = &ev.data.object;
        let outcome = match ev.kind.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                self.checkout_completed(ev, obj).await?
            }
            "checkout.session.expired" => self.checkout_expired(ev, obj).await?,
            // The money of a payment went back: a refund (`amount_refunded` is cumulative), or
            // a dispute the provider lost (https://docs.stripe.com/disputes/how-disputes-work).
            "charge.refunded" => {
                let reversal = Reversal {
                    charge: str_at(obj, &["id"]),
                    payment_intent: str_at(obj, &["payment_intent"]),
                    total: obj["amount_refunded"].as_i64(),
                    whole: obj["refunded"].as_bool() == Some(true),
                };
                self.payment_reversed(ev, reversal).await?
            }
            "charge.dispute.closed" if str_at(obj, &["status"]).as_deref() == Some("lost") => {
                let reversal = Reversal {
                    charge: str_at(obj, &["charge"]),
                    payment_intent: str_at(obj, &["payment_intent"]),
                    total: obj["amount"].as_i64(),
                    whole: true,
                };
                self.payment_reversed(ev, reversal).await?
            }
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.paused"
            | "customer.subscription.resumed" => match str_at(obj, &["id"]) {
                Some(id) => {
                    self.sync_subscription(ev, &id, tollgate_id(obj), None)
                        .await?
                }
                None => Outcome::Ignored("subscription object without id".into()),
            },
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                match invoice_subscription(obj) {
                    Some((sub, hint)) => self.sync_subscription(ev, &sub, hint, None).await?,
                    None => Outcome::Ignored("invoice of no subscription".into()),
                }
            }
            other => Outcome::Ignored(format!("event type {other} is not handled")),
        };
        match &outcome {
            Outcome::Ignored(why) => tracing::info!(
                event = %ev.id, kind = %ev.kind, api_version = ?ev.api_version, reason = %why,
                "event accepted and ignored"
            ),
            o => tracing::info!(event = %ev.id, kind = %ev.kind, outcome = ?o, "event processed"),
        }
        Ok(outcome)
    }

    async fn checkout_completed(
        &self,
        ev: &StripeEvent,
        session: &Value,
    ) -> Result<Outcome, WebhookError> {
        if str_at(session, &["metadata", metadata::CREDIT_AMOUNT]).is_some() {
            return self.credit_purchase_completed(ev, session).await;
        }
        let Some(hint) = tollgate_id(session) else {
            return Ok(Outcome::Ignored(
                "checkout session not started by tollgate".into(),
            ));
        };
        let session_id = str_at(session, &["id"]);
        match str_at(session, &["mode"]).as_deref() {
            Some("subscription") => match id_at(session, "subscription") {
                Some(stripe_sub) => {
                    self.sync_subscription(ev, &stripe_sub, Some(hint), session_id)
                        .await
                }
                None => Ok(Outcome::Ignored(
                    "subscription session without subscription".into(),
                )),
            },
            Some("payment") => {
                // An asynchronous payment method (bank debit) completes the session unpaid;
                // `checkout.session.async_payment_succeeded` follows when the money arrives.
                if str_at(session, &["payment_status"]).as_deref() != Some("paid") {
                    return Ok(Outcome::Ignored("payment not received yet".into()));
                }
                self.one_time_paid(ev, &hint, session_id).await
            }
            other => Ok(Outcome::Ignored(format!("checkout mode {other:?}"))),
        }
    }

    /// A paid `mode=payment` session that buys prepaid credit (metadata
    /// `tollgate_credit_amount`): the consumer's balance grows once per Checkout Session (the
    /// session id is the credit movement's key, in the same transaction as the balance), and the
    /// 402 is lifted from the consumer's keys in that transaction too. A re-delivered event is
    /// answered as a duplicate without a write.
    pub async fn credit_purchase_completed(
        &self,
        ev: &StripeEvent,
        session: &Value,
    ) -> Result<Outcome, WebhookError> {
        // An asynchronous payment method completes the session unpaid; the credit is bought
        // when `checkout.session.async_payment_succeeded` says the money arrived.
        if str_at(session, &["payment_status"]).as_deref() != Some("paid") {
            return Ok(Outcome::Ignored("payment not received yet".into()));
        }
        let consumer = str_at(session, &["metadata", metadata::CONSUMER_ID])
            .and_then(|c| tollgate_domain::ids::ConsumerId::parse(c).ok());
        let amount = str_at(session, &["metadata", metadata::CREDIT_AMOUNT])
            .and_then(|a| a.parse::<i64>().ok());
        let (Some(consumer_id), Some(amount), Some(session_id)) =
            (consumer, amount, str_at(session, &["id"]))
        else {
            return Ok(Outcome::Ignored(
                "credit session without consumer, amount or id".into(),
            ));
        };
        let purchase = CreditPurchase {
            consumer_id,
            checkout_session_id: session_id,
            amount,
        };
        let outcome = apply_credit_purchase(
            &*self.store,
            &self.catalog,
            &purchase,
            self.credit_policy,
            self.clock.now(),
        )
        .await
        .map_err(|e| WebhookError::Retry(e.to_string()))?;
        tracing::info!(event = %ev.id, consumer = %purchase.consumer_id, amount, outcome = ?outcome, "credit purchase");
        Ok(match outcome {
            PurchaseOutcome::Applied { .. } => Outcome::Applied,
            PurchaseOutcome::AlreadyApplied { .. } => Outcome::Duplicate,
        })
    }

    /// Re-reads the Stripe subscription and applies its current status.
    ///
    /// Every attempt reads DynamoDB first and Stripe second, and commits under the version it
    /// read: if another delivery committed in between, this commit fails and the next attempt
    /// reads Stripe again, so an older Stripe read never overwrites a newer one.
    async fn sync_subscription(
        &self,
        ev: &StripeEvent,
        stripe_sub: &str,
        hint: Option<SubscriptionId>,
        session_id: Option<String>,
    ) -> Result<Outcome, WebhookError> {
        let stripe_id = StripeId::parse(stripe_sub)
            .map_err(|e| WebhookError::BadRequest(format!("subscription id: {e}")))?;
        let (stripe_id, hint, session_id) = (&stripe_id, hint.as_ref(), session_id.as_deref());
        retry_on_conflict(move || self.sync_step(ev, stripe_id, hint, session_id)).await
    }

    /// One attempt of [`Self::sync_subscription`].
    async fn sync_step(
        &self,
        ev: &StripeEvent,
        stripe_id: &StripeId,
        hint: Option<&SubscriptionId>,
        session_id: Option<&str>,
    ) -> Result<Attempt<Outcome>, WebhookError> {
        {
            let stripe_id = stripe_id.clone();
            let mut found = match hint {
                Some(id) => self.store.get_subscription(id).await?,
                None => {
                    self.store
                        .find_subscription_by_stripe_id(&stripe_id)
                        .await?
                }
            };
            let snap = match self.payments.get_subscription(&stripe_id).await {
                Ok(s) => s,
                Err(PaymentsError::NotFound(what)) => {
                    return Ok(Attempt::Done(Outcome::Ignored(format!(
                        "Stripe has no {what}"
                    ))));
                }
                Err(e) => return Err(e.into()),
            };
            if found.is_none() {
                // The first event about a subscription can arrive before the one naming it
                // (no hint, no stored Stripe id yet): its metadata names it.
                if let Some(id) = snap
                    .metadata
                    .get(metadata::SUBSCRIPTION_ID)
                    .and_then(|s| SubscriptionId::parse(s.as_str()).ok())
                {
                    found = self.store.get_subscription(&id).await?;
                }
            }
            let Some(mut sub) = found else {
                return Ok(Attempt::Done(Outcome::Ignored(format!(
                    "no tollgate subscription for {stripe_id}"
                ))));
            };
            if let Some(other) = &sub.stripe_subscription_id
                && *other != snap.id
            {
                tracing::warn!(subscription = %sub.id, stored = %other, event_for = %snap.id, "event about another Stripe subscription");
                return Ok(Attempt::Done(Outcome::Ignored(
                    "tollgate subscription is bound to another Stripe subscription".into(),
                )));
            }
            let version = sub.version;
            let now = self.clock.now();
            sub.stripe_subscription_id = Some(snap.id.clone());
            sub.stripe_customer_id = Some(snap.customer.clone());
            if let Some(s) = session_id.and_then(|s| StripeId::parse(s).ok()) {
                sub.stripe_checkout_session_id = Some(s);
            }
            if sub.status.is_final() && snap.status.is_live() {
                // Paid in a tab still open after the consumer canceled (or after the session
                // was expired): tollgate gives no access, so Stripe must not keep billing.
                // https://docs.stripe.com/api/subscriptions/cancel
                let intent = format!("{}:paid-after-cancel", sub.id);
                self.payments
                    .cancel_subscription_now(&snap.id, &intent)
                    .await?;
                tracing::warn!(subscription = %sub.id, stripe_subscription = %snap.id, "paid after tollgate's subscription ended: Stripe subscription canceled");
                let version = sub.version;
                sub.stripe_subscription_id = Some(snap.id.clone());
                return self
                    .commit_effects(ev, sub, version, &[], self.clock.now())
                    .await;
            }
            let period_before = sub.current_period_start;
            sub.observe_stripe_periods(&snap);
            let renewed = sub.current_period_start != period_before;
            let quota_window = self
                .catalog
                .product(sub.product_id.as_str())
                .filter(|p| p.quota.is_some())
                .map(|p| usage::quota_window(&sub, Some(p), now).0);
            let sub_id = sub.id.clone();
            let effects: &[Effect] = match BillingFact::of_stripe(&snap.status) {
                Some(fact) => lifecycle::apply(&mut sub, fact, now),
                None => {
                    tracing::warn!(subscription = %sub.id, status = ?snap.status, "unknown Stripe status; state kept");
                    &[]
                }
            };
            let attempt = self.commit_effects(ev, sub, version, effects, now).await?;
            if renewed
                && matches!(attempt, Attempt::Done(Outcome::Applied))
                && let Some(window_start) = quota_window
            {
                self.clear_quota_gates(&sub_id, window_start).await?;
            }
            Ok(attempt)
        }
    }

    /// A payment made in a tollgate Checkout Session was reversed (refunded, or lost in a
    /// dispute). Stripe's advice is to re-read: the session the payment was made in says what
    /// was sold. Credit: the unused part of it is taken back, once per reversal
    /// (`tollgate_app::credit::apply_credit_reversal`). One-time access: a whole reversal ends
    /// it through the transition step (`SubscriptionCanceled`); a partial refund (goodwill)
    /// keeps it. Subscription-mode payments (invoices) are Stripe Billing's to handle.
    async fn payment_reversed(
        &self,
        ev: &StripeEvent,
        r: Reversal,
    ) -> Result<Outcome, WebhookError> {
        let (Some(charge), Some(payment_intent), Some(total)) =
            (r.charge, r.payment_intent, r.total)
        else {
            return Ok(Outcome::Ignored(
                "reversal without charge, payment or amount".into(),
            ));
        };
        let Some(meta) = self
            .payments
            .checkout_session_of_payment(&payment_intent)
            .await?
        else {
            return Ok(Outcome::Ignored(
                "payment not made in a tollgate Checkout Session".into(),
            ));
        };
        if meta.contains_key(metadata::CREDIT_AMOUNT) {
            let Some(consumer) = meta
                .get(metadata::CONSUMER_ID)
                .and_then(|c| tollgate_domain::ids::ConsumerId::parse(c.as_str()).ok())
            else {
                return Ok(Outcome::Ignored("credit session without consumer".into()));
            };
            let out = apply_credit_reversal(
                &*self.store,
                &self.catalog,
                &consumer,
                &charge,
                total,
                self.credit_policy,
                self.clock.now(),
            )
            .await
            .map_err(|e| WebhookError::Retry(e.to_string()))?;
            tracing::info!(event = %ev.id, %consumer, %charge, total, taken = -out.applied, "credit reversal");
            if !out.events.is_empty()
                && let Err(e) = self.publisher.publish(&out.events).await
            {
                tracing::error!(error = %e, count = out.events.len(), "domain events not published");
            }
            return Ok(if out.newly_applied {
                Outcome::Applied
            } else {
                Outcome::Duplicate
            });
        }
        let Some(id) = meta
            .get(metadata::SUBSCRIPTION_ID)
            .and_then(|s| SubscriptionId::parse(s.as_str()).ok())
        else {
            return Ok(Outcome::Ignored(
                "session names no tollgate purchase".into(),
            ));
        };
        if !r.whole {
            return Ok(Outcome::Ignored(
                "partial refund of one-time access: access kept".into(),
            ));
        }
        let id = &id;
        let keep = |s: &Subscription| s.status.is_final().then(|| "has ended already".into());
        retry_on_conflict(move || self.end_step(ev, id, keep)).await
    }

    /// One attempt of ending subscription `id` (`canceled`, through the transition step with
    /// the event's claim), unless `keep` gives a reason to leave it as it is.
    async fn end_step(
        &self,
        ev: &StripeEvent,
        id: &SubscriptionId,
        keep: fn(&Subscription) -> Option<String>,
    ) -> Result<Attempt<Outcome>, WebhookError> {
        let Some(mut sub) = self.store.get_subscription(id).await? else {
            // A credit purchase's session names no stored subscription: nothing to end.
            return Ok(Attempt::Done(Outcome::Ignored(format!(
                "no tollgate subscription {id}"
            ))));
        };
        if let Some(why) = keep(&sub) {
            return Ok(Attempt::Done(Outcome::Ignored(format!(
                "subscription {id} {why}"
            ))));
        }
        let version = sub.version;
        let now = self.clock.now();
        let effects = lifecycle::apply(&mut sub, BillingFact::Ended, now);
        self.commit_effects(ev, sub, version, effects, now).await
    }

    /// An abandoned Checkout Session (Stripe expires an open one after 24 h, or tollgate's
    /// cancel expired it): its pending subscription ends through the one transition step, so
    /// the key minted with it can never work and the portal stops showing it as pending.
    /// A subscription that is no longer pending (paid meanwhile) is left alone.
    /// <https://docs.stripe.com/api/checkout/sessions/expire>
    async fn checkout_expired(
        &self,
        ev: &StripeEvent,
        session: &Value,
    ) -> Result<Outcome, WebhookError> {
        let Some(id) = str_at(session, &["metadata", metadata::SUBSCRIPTION_ID])
            .and_then(|s| SubscriptionId::parse(s).ok())
        else {
            return Ok(Outcome::Ignored(
                "checkout session not started by tollgate".into(),
            ));
        };
        let id = &id;
        let keep = |s: &Subscription| {
            (s.status != tollgate_domain::subscription::SubscriptionStatus::Pending)
                .then(|| format!("is {}, not pending", s.status.as_str()))
        };
        retry_on_conflict(move || self.end_step(ev, id, keep)).await
    }

    /// A paid one-time product: access from now, until the product's access end.
    async fn one_time_paid(
        &self,
        ev: &StripeEvent,
        id: &SubscriptionId,
        session_id: Option<String>,
    ) -> Result<Outcome, WebhookError> {
        let session_id = session_id.as_deref();
        retry_on_conflict(move || self.one_time_step(ev, id, session_id)).await
    }

    /// One attempt of [`Self::one_time_paid`].
    async fn one_time_step(
        &self,
        ev: &StripeEvent,
        id: &SubscriptionId,
        session_id: Option<&str>,
    ) -> Result<Attempt<Outcome>, WebhookError> {
        {
            let Some(mut sub) = self.store.get_subscription(id).await? else {
                return Ok(Attempt::Done(Outcome::Ignored(format!(
                    "no tollgate subscription {id}"
                ))));
            };
            let version = sub.version;
            let now = self.clock.now();
            let paid_at = DateTime::from_timestamp(ev.created, 0).unwrap_or(now);
            if let Some(s) = session_id.and_then(|s| StripeId::parse(s).ok()) {
                sub.stripe_checkout_session_id = Some(s);
            }
            let access = self
                .catalog
                .product(sub.product_id.as_str())
                .and_then(|p| p.access.clone());
            if sub.access_expires_at.is_none() {
                sub.access_expires_at = match access {
                    Some(Access::Until(date)) => {
                        Some(date.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
                    }
                    Some(Access::Days(days)) => Some(paid_at + Duration::days(i64::from(days))),
                    None => None,
                };
            }
            let expired = sub.access_expires_at.is_some_and(|end| end <= now);
            let fact = if expired {
                BillingFact::AccessExpired
            } else {
                BillingFact::Paid
            };
            let effects = lifecycle::apply(&mut sub, fact, now);
            self.commit_effects(ev, sub, version, effects, now).await
        }
    }

    /// A new period (a renewal, even a late one, or a re-anchor) clears the 429 gate of an
    /// older quota window from the keys: the write names the new window and DynamoDB applies
    /// it only to keys gated for an older one (`entitlement::KeyGate::needs`), so a block the
    /// usage function already set for the new window stays.
    async fn clear_quota_gates(
        &self,
        sub: &SubscriptionId,
        window_start: Timestamp,
    ) -> Result<(), WebhookError> {
        let fact = GateFact::Quota {
            window_start,
            blocked_until: None,
        };
        gate_subscription_keys(&*self.store, sub, fact)
            .await
            .map(drop)
            .map_err(|e| WebhookError::Retry(e.to_string()))
    }

    /// Commits the claim of `ev` with the subscription (under `version`) through the one
    /// transition step, which also moves the keys' gates and publishes what the transition
    /// means.
    async fn commit_effects(
        &self,
        ev: &StripeEvent,
        mut sub: Subscription,
        version: u64,
        effects: &[Effect],
        now: Timestamp,
    ) -> Result<Attempt<Outcome>, WebhookError> {
        if let Some(created) = DateTime::from_timestamp(ev.created, 0) {
            sub.last_stripe_event_at =
                Some(sub.last_stripe_event_at.map_or(created, |t| t.max(created)));
        }
        let mut t = Transition::of(sub, version, effects, now);
        t.claim = Some(self.claim(ev, now));
        Ok(
            match commit_transition(&*self.store, &*self.publisher, &self.catalog, t).await? {
                Committed::Applied { .. } => Attempt::Done(Outcome::Applied),
                Committed::AlreadyClaimed => Attempt::Done(Outcome::Duplicate),
                Committed::Stale => Attempt::Retry,
            },
        )
    }

    /// The claim of an event id, first in the commit of its effect.
    fn claim(&self, ev: &StripeEvent, now: Timestamp) -> Write {
        Write::Claim {
            scope: ClaimScope::StripeEvent,
            id: ev.id.clone(),
            expires_at: now + Duration::days(CLAIM_TTL_DAYS),
        }
    }
}

/// A string at a path of a JSON object.
fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().map(String::from)
}

/// An id field that may be a plain id or an expanded object.
fn id_at(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id")?.as_str().map(String::from),
        _ => None,
    }
}

/// The tollgate subscription named in an object's metadata.
/// What a reversal event says: the charge, its payment, the total reversed so far (minor
/// units) and whether that is the whole payment.
struct Reversal {
    charge: Option<String>,
    payment_intent: Option<String>,
    total: Option<i64>,
    whole: bool,
}

fn tollgate_id(obj: &Value) -> Option<SubscriptionId> {
    str_at(obj, &["metadata", metadata::SUBSCRIPTION_ID])
        .and_then(|s| SubscriptionId::parse(s).ok())
}

/// The subscription of an invoice and the tollgate id in its metadata. Since API version
/// 2025-03-31 it is under `parent.subscription_details`; before, `subscription` and
/// `subscription_details` were top-level. Both are read, so either version works.
fn invoice_subscription(invoice: &Value) -> Option<(String, Option<SubscriptionId>)> {
    let details = invoice
        .get("parent")
        .and_then(|p| p.get("subscription_details"))
        .filter(|d| !d.is_null());
    let sub = details
        .and_then(|d| id_at(d, "subscription"))
        .or_else(|| id_at(invoice, "subscription"))?;
    let hint = details
        .and_then(tollgate_id)
        .or_else(|| invoice.get("subscription_details").and_then(tollgate_id));
    Some((sub, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoices_of_either_api_version_name_their_subscription() {
        let new = serde_json::json!({
            "object": "invoice",
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": "sub_1", "metadata": {"tollgate_subscription_id": "tgsub_a"}}}
        });
        assert_eq!(
            invoice_subscription(&new),
            Some((
                "sub_1".into(),
                Some(SubscriptionId::parse("tgsub_a").unwrap())
            ))
        );
        let old = serde_json::json!({"object": "invoice", "subscription": {"id": "sub_2"}});
        assert_eq!(invoice_subscription(&old), Some(("sub_2".into(), None)));
        let none = serde_json::json!({"object": "invoice", "parent": null, "subscription": null});
        assert_eq!(invoice_subscription(&none), None);
    }

    #[test]
    fn envelopes_parse_leniently() {
        let ev: StripeEvent = serde_json::from_value(serde_json::json!({
            "id": "evt_1", "object": "event", "type": "x.y", "created": 1,
            "api_version": "2019-01-01", "something_new": {"a": 1},
            "data": {"object": {"whatever": true}}
        }))
        .unwrap();
        assert_eq!(ev.kind, "x.y");
        assert!(serde_json::from_value::<StripeEvent>(serde_json::json!({"id": "evt_1"})).is_err());
    }
}
