//! The routes of the checkout function. Each one: parse and check the input (bad input writes
//! nothing), do the work through the ports, answer JSON.

use crate::Checkout;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tollgate_app::ApiError;
use tollgate_app::error::json_response;
use tollgate_app::json::parse_body;
use tollgate_app::subscriptions::{
    Attempt, Committed, Transition, commit_transition, retry_on_conflict,
};
use tollgate_domain::apikey::NewApiKey;
use tollgate_domain::catalog::Product;
use tollgate_domain::ids::{ConsumerId, MeterId, ProductId, StripeId, SubscriptionId};
use tollgate_domain::lifecycle::{self, BillingFact};
use tollgate_domain::money::MinorUnits;
use tollgate_domain::ports::{
    ApiKey, CheckoutError, CheckoutMode, CheckoutRequest, Consumer, Expect, PaymentsError,
    Purchase, SubscriptionSnapshot, Write, checkout_line_items, metadata,
};
use tollgate_domain::pricing::{self, Quote, QuoteRequest};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::time::Timestamp;
use tollgate_domain::usage;

/// Longest subscription name accepted (it goes into Stripe metadata, whose values hold 500).
const MAX_NAME_LEN: usize = 100;

/// `POST /checkout/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequestBody {
    pub consumer_id: ConsumerId,
    pub product_id: ProductId,
    pub subscription_name: String,
    pub success_url: String,
    pub cancel_url: String,
    /// Seats of a per-seat product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
    /// Buys this much prepaid credit (minor units) instead of the product itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_amount: Option<MinorUnits>,
    /// Put on the Stripe customer when it is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A key shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedKey {
    pub subscription_id: SubscriptionId,
    /// The key itself: shown now, never again.
    pub api_key: String,
    pub prefix: String,
    /// Prefixes of the keys this one replaced (revoked in the same commit).
    pub revoked: Vec<String>,
}

/// A subscription as the portal shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub id: SubscriptionId,
    pub product_id: ProductId,
    pub name: String,
    pub status: SubscriptionStatus,
    pub grants_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
    pub cancel_at_period_end: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<Timestamp>,
    /// The period usage and the quote cover (`usage::billing_period`, the window ingestion and
    /// the billing run use): Stripe's billing period, or the subscription's own month for
    /// subscriptions Stripe does not bill.
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    /// End of the Stripe trial in progress: the quote is what Stripe bills for it (nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<Timestamp>,
    /// Usage so far this period, per meter the product counts.
    pub usage: BTreeMap<MeterId, u64>,
    /// The bill so far (metered usage priced with Stripe's arithmetic; licensed fees in full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<pricing::QuotaStatus>,
    pub keys: Vec<KeyView>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub prefix: String,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

impl Checkout {
    pub(crate) async fn create_session(
        &self,
        body: &[u8],
    ) -> Result<http::Response<String>, ApiError> {
        let input: CheckoutRequestBody = parse_body(body)?;
        let name = input.subscription_name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(ApiError::bad_request(
                "subscription_name",
                format!("must be 1 to {MAX_NAME_LEN} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "subscription_name",
                "must not contain control characters",
            ));
        }
        let product = self
            .catalog
            .product(input.product_id.as_str())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "product_id",
                    format!("unknown product {}", input.product_id),
                )
            })?
            .clone();
        if !product.on_sale() {
            return Err(ApiError::Conflict(format!(
                "product_id: {} is retired and takes no new subscriptions{}",
                product.id,
                product
                    .successor
                    .as_ref()
                    .map(|s| format!("; its successor is {s}"))
                    .unwrap_or_default()
            )));
        }
        // No open redirect: Stripe sends the consumer's browser to these URLs after payment.
        for (field, url) in [
            ("success_url", &input.success_url),
            ("cancel_url", &input.cancel_url),
        ] {
            if !return_url_allowed(url, &self.return_url_allowlist) {
                return Err(ApiError::bad_request(
                    field,
                    "must start with one of the configured return URL prefixes",
                ));
            }
        }
        let purchase = match input.credit_amount {
            Some(amount) => Purchase::Credit { amount },
            None => Purchase::Product { seats: input.seats },
        };
        let now = self.clock.now();
        if product.is_free() && input.credit_amount.is_none() {
            if input.seats.is_some() {
                return Err(ApiError::bad_request("seats", "the product has no seats"));
            }
            return self.activate_free(&input, name, &product, now).await;
        }
        let (mode, line_items) = checkout_line_items(&product, purchase).map_err(|e| {
            let field = match e {
                CheckoutError::SeatsOutOfRange { .. } | CheckoutError::SeatsRequired => "seats",
                CheckoutError::NoCredit | CheckoutError::NotAPack { .. } => "credit_amount",
                CheckoutError::FreeProduct => "product_id",
            };
            ApiError::bad_request(field, e.to_string())
        })?;
        // A prepaid product has nothing to pay at checkout: its usage is paid from credit bought
        // separately (`credit_amount`), so, like a free product, it is active at once.
        if line_items.is_empty() && input.credit_amount.is_none() {
            if input.seats.is_some() {
                return Err(ApiError::bad_request("seats", "the product has no seats"));
            }
            return self.activate_free(&input, name, &product, now).await;
        }

        let is_credit = input.credit_amount.is_some();
        let id = if is_credit {
            new_id("tgcp")
        } else {
            new_id("tgsub")
        };
        // A Stripe subscription bills its meters by customer (Billing Meters aggregate per
        // customer and meter), so each gets a customer of its own and its invoice charges only
        // its own usage; one-time payments and credit packs use the consumer's customer.
        // docs/billing-run.md, "Attribution".
        let customer = match mode {
            CheckoutMode::Subscription => self
                .payments
                .create_subscription_customer(&input.consumer_id, &id, input.email.as_deref())
                .await
                .map_err(payments_error)?,
            CheckoutMode::Payment => {
                self.customer_for(&input.consumer_id, input.email.as_deref(), now)
                    .await?
            }
        };
        let mut extra_metadata = BTreeMap::new();
        if let Some(amount) = input.credit_amount {
            extra_metadata.insert(metadata::CREDIT_AMOUNT.to_string(), amount.to_string());
        }
        let request = CheckoutRequest {
            subscription_id: id.clone(),
            consumer_id: input.consumer_id.clone(),
            customer: customer.clone(),
            product_id: product.id.clone(),
            subscription_name: name.to_string(),
            mode,
            currency: self.catalog.currency.clone(),
            line_items,
            trial_days: product.trial_days,
            extra_metadata,
            success_url: input.success_url.clone(),
            cancel_url: input.cancel_url.clone(),
        };

        // The pending subscription (and its key) is stored before Stripe sees the session, so
        // any webhook about it finds it. A session that fails to be created leaves a pending
        // subscription without access, which the portal may show or ignore.
        let key = (!is_credit).then(NewApiKey::generate);
        if let Some(key) = &key {
            let sub = Subscription {
                id: id.clone(),
                consumer_id: input.consumer_id.clone(),
                product_id: product.id.clone(),
                name: name.to_string(),
                status: SubscriptionStatus::Pending,
                seats: input.seats,
                stripe_customer_id: Some(customer.clone()),
                stripe_subscription_id: None,
                stripe_checkout_session_id: None,
                current_period_start: None,
                current_period_end: None,
                cancel_at_period_end: false,
                access_expires_at: None,
                last_stripe_event_at: None,
                periods: Default::default(),
                created_at: now,
                updated_at: now,
                version: 0,
            };
            let mut t = Transition::of(sub, 0, &[], now);
            t.expect = Expect::Absent;
            t.new_keys = vec![api_key_record(key, &t.subscription, now)];
            self.transition(t).await?;
        }
        let session = self
            .payments
            .create_checkout_session(&request)
            .await
            .map_err(payments_error)?;
        tracing::info!(
            consumer = %input.consumer_id,
            product = %product.id,
            subscription = %id,
            session = %session.id,
            "checkout session created"
        );
        if key.is_some() {
            // Remembered so that a cancel before payment can expire the session in Stripe.
            let (sub_id, session_id) = (&id, &session.id);
            retry_on_conflict(move || self.remember_session(sub_id, session_id)).await?;
        }
        let mut answer = serde_json::json!({
            "id": session.id,
            "url": session.url,
        });
        if let Some(key) = key {
            answer["subscription_id"] = id.to_string().into();
            answer["status"] = "pending".into();
            answer["api_key"] = key.expose_secret().into();
            answer["api_key_prefix"] = key.display_prefix().into();
        }
        Ok(json_response(StatusCode::CREATED, &answer))
    }

    /// A free product needs no Stripe: the subscription is active at once, with its key.
    async fn activate_free(
        &self,
        input: &CheckoutRequestBody,
        name: &str,
        product: &Product,
        now: Timestamp,
    ) -> Result<http::Response<String>, ApiError> {
        let id = new_id("tgsub");
        let key = NewApiKey::generate();
        let mut sub = Subscription {
            id: id.clone(),
            consumer_id: input.consumer_id.clone(),
            product_id: product.id.clone(),
            name: name.to_string(),
            status: SubscriptionStatus::Pending,
            seats: None,
            stripe_customer_id: None,
            stripe_subscription_id: None,
            stripe_checkout_session_id: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            access_expires_at: None,
            last_stripe_event_at: None,
            periods: Default::default(),
            created_at: now,
            updated_at: now,
            version: 0,
        };
        let effects = lifecycle::apply(&mut sub, BillingFact::Paid, now);
        let mut t = Transition::of(sub, 0, effects, now);
        t.expect = Expect::Absent;
        t.new_keys = vec![api_key_record(&key, &t.subscription, now)];
        let sub = self.transition(t).await?;
        tracing::info!(consumer = %sub.consumer_id, product = %sub.product_id, subscription = %id, "free subscription activated");
        Ok(json_response(
            StatusCode::CREATED,
            &serde_json::json!({
                "id": id,
                "url": input.success_url,
                "subscription_id": id,
                "status": sub.status,
                "api_key": key.expose_secret(),
                "api_key_prefix": key.display_prefix(),
            }),
        ))
    }

    /// The consumer's own Stripe customer (one-time payments, credit packs), created exactly
    /// once.
    ///
    /// Concurrent first checkouts of one consumer both miss the stored customer and both ask
    /// Stripe; the adapter's Idempotency-Key names the intent (the consumer's customer) and the
    /// create request carries nothing else (not the email), so Stripe creates one customer and
    /// replays it to the second caller whatever email each passed. The consumer item is then written
    /// conditionally: the loser of that race reads back what the winner stored.
    async fn customer_for(
        &self,
        consumer: &ConsumerId,
        email: Option<&str>,
        now: Timestamp,
    ) -> Result<StripeId, ApiError> {
        let existing = self.store.get_consumer(consumer).await?;
        if let Some(id) = existing.as_ref().and_then(|c| c.stripe_customer_id.clone()) {
            return Ok(id);
        }
        let customer = self
            .payments
            .ensure_customer(consumer, email)
            .await
            .map_err(payments_error)?;
        let expect = existing
            .as_ref()
            .map_or(Expect::Absent, |c| Expect::Version(c.version));
        let record = Consumer {
            id: consumer.clone(),
            stripe_customer_id: Some(customer.clone()),
            email: existing
                .as_ref()
                .and_then(|c| c.email.clone())
                .or(email.map(String::from)),
            created_at: existing.as_ref().map_or(now, |c| c.created_at),
            version: 0,
        };
        match self
            .store
            .commit(vec![Write::PutConsumer {
                consumer: record,
                expect,
            }])
            .await
        {
            Ok(()) => Ok(customer),
            Err(e) if e.is_conflict() => {
                let stored = self
                    .store
                    .get_consumer(consumer)
                    .await?
                    .and_then(|c| c.stripe_customer_id);
                match stored {
                    Some(id) => {
                        if id != customer {
                            // Only possible if the idempotency key expired between the two
                            // calls (24 h): keep the stored one, log the stray.
                            tracing::warn!(%consumer, kept = %id, stray = %customer, "two Stripe customers for one consumer");
                        }
                        Ok(id)
                    }
                    None => Err(ApiError::Conflict(
                        "consumer changed concurrently; retry".into(),
                    )),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn catalog_view(&self) -> http::Response<String> {
        // Retired products are not on sale; their subscribers see them in their subscriptions.
        json_response(StatusCode::OK, &self.catalog.on_sale())
    }

    pub(crate) async fn subscriptions(
        &self,
        consumer: &str,
    ) -> Result<http::Response<String>, ApiError> {
        let consumer = ConsumerId::parse(consumer)
            .map_err(|e| ApiError::bad_request("consumer_id", e.to_string()))?;
        let now = self.clock.now();
        let mut views = Vec::new();
        for sub in self.store.list_subscriptions(&consumer).await? {
            views.push(self.view(sub, now).await?);
        }
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "consumer_id": consumer, "subscriptions": views }),
        ))
    }

    async fn view(&self, sub: Subscription, now: Timestamp) -> Result<SubscriptionView, ApiError> {
        let product = self.catalog.product(sub.product_id.as_str());
        // The windows ingestion, the quota and the billing run read, to the second.
        let (period_start, period_end) = usage::billing_period(&sub, now);
        let (quota_start, quota_end) = usage::quota_window(&sub, product, now);
        let mut meters: BTreeSet<MeterId> = BTreeSet::new();
        if let Some(p) = product {
            meters.extend(p.metered().filter_map(|c| c.meter().cloned()));
            meters.extend(p.quota.as_ref().map(|q| q.meter.clone()));
        }
        let mut usage = BTreeMap::new();
        for meter in meters {
            let buckets = self
                .store
                .usage_buckets(&sub.id, &meter, period_start, period_end)
                .await?;
            usage.insert(
                meter,
                tollgate_domain::usage::total_quantity(buckets.iter().map(|b| b.quantity)),
            );
        }
        let quota_used = match product.and_then(|p| p.quota.as_ref()) {
            Some(q) if (quota_start, quota_end) != (period_start, period_end) => Some(
                self.store
                    .usage_buckets(&sub.id, &q.meter, quota_start, quota_end)
                    .await?
                    .iter()
                    .map(|b| b.quantity)
                    .sum::<u64>(),
            ),
            Some(q) => Some(usage.get(&q.meter).copied().unwrap_or(0)),
            None => None,
        };
        // Stripe bills nothing for a trial (usage in it included): the quote says so.
        let trial_ends_at = sub
            .periods
            .trial_end
            .filter(|_| usage::in_trial(&sub, now) && sub.stripe_subscription_id.is_some());
        let (quote, quota) = match product {
            Some(p) => {
                let req = QuoteRequest {
                    usage: usage.clone(),
                    seats: sub.seats,
                    include_one_time: false,
                };
                match pricing::quote(&self.catalog, p, &req) {
                    Ok(mut q) => {
                        if let (Some(status), Some(used)) = (q.quota.as_mut(), quota_used) {
                            status.used = used;
                            status.exceeded = usage::quota_exceeded(used, status.limit);
                        }
                        if trial_ends_at.is_some() {
                            q.lines.clear();
                            q.total = 0;
                        }
                        let quota = q.quota.clone();
                        (Some(q), quota)
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %sub.id, error = %e, "cannot quote");
                        (None, None)
                    }
                }
            }
            None => (None, None),
        };
        let keys = self
            .store
            .list_api_keys(&sub.id)
            .await?
            .into_iter()
            .map(|k| KeyView {
                prefix: k.prefix,
                created_at: k.created_at,
                revoked_at: k.revoked_at,
            })
            .collect();
        Ok(SubscriptionView {
            grants_access: sub.status.grants_access(),
            id: sub.id,
            product_id: sub.product_id,
            name: sub.name,
            status: sub.status,
            seats: sub.seats,
            cancel_at_period_end: sub.cancel_at_period_end,
            access_expires_at: sub.access_expires_at,
            period_start,
            period_end,
            trial_ends_at,
            usage,
            quote,
            quota,
            keys,
            created_at: sub.created_at,
        })
    }

    pub(crate) async fn has_paid(
        &self,
        consumer: &str,
        query: &str,
    ) -> Result<http::Response<String>, ApiError> {
        let consumer = ConsumerId::parse(consumer)
            .map_err(|e| ApiError::bad_request("consumer_id", e.to_string()))?;
        #[derive(Deserialize)]
        struct Q {
            product: String,
        }
        let q: Q = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request("product", e.to_string()))?;
        // `product=a,b,c`: any of them (seed 003's `if-has-paid plan="bronze,silver,gold"`).
        let products = q
            .product
            .split(',')
            .map(|p| ProductId::parse(p.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::bad_request("product", e.to_string()))?;
        if products.len() > MAX_HAS_PAID_PRODUCTS {
            return Err(ApiError::bad_request(
                "product",
                format!("at most {MAX_HAS_PAID_PRODUCTS} products"),
            ));
        }
        let subs = self.store.list_subscriptions(&consumer).await?;
        // Seed 003's rule lives in the domain: live access, one-time access until it expires.
        let live = tollgate_domain::entitlement::paid_subscription(
            &subs,
            &self.catalog,
            &products,
            self.clock.now(),
        );
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "consumer_id": consumer,
                // The product the live subscription is on; the one asked if nothing matched.
                "product_id": live.map_or(&products[0], |s| &s.product_id),
                "products": products,
                "paid": live.is_some(),
                "subscription_id": live.map(|s| &s.id),
            }),
        ))
    }

    /// Cancels at the end of the paid period: Stripe keeps billing the period already paid for
    /// and sends `customer.subscription.deleted` at its end, which the webhook turns into
    /// `canceled`. A subscription Stripe does not bill (free, one-time, checkout never
    /// completed) ends at once; a pending checkout's session is expired in Stripe first, so the
    /// tab the consumer left open can no longer pay. (If it was paid meanwhile, the webhook
    /// cancels the Stripe subscription it started: tollgate's is canceled.)
    pub(crate) async fn cancel(&self, id: &str) -> Result<http::Response<String>, ApiError> {
        let id = SubscriptionId::parse(id)
            .map_err(|e| ApiError::bad_request("subscription_id", e.to_string()))?;
        let id = &id;
        let sub = retry_on_conflict(move || self.cancel_step(id)).await?;
        Ok(json_response(
            StatusCode::OK,
            &self.view(sub, self.clock.now()).await?,
        ))
    }

    async fn cancel_step(&self, id: &SubscriptionId) -> Result<Attempt<Subscription>, ApiError> {
        let mut sub = self.load(id).await?;
        let now = self.clock.now();
        let version = sub.version;
        if sub.status.is_final() {
            return Ok(Attempt::Done(sub));
        }
        let effects = match sub.stripe_subscription_id.clone() {
            Some(stripe_id) => {
                let snap = self
                    .payments
                    .set_cancel_at_period_end(&stripe_id, true, &intent(&sub))
                    .await
                    .map_err(payments_error)?;
                apply_period_snapshot(&mut sub, &snap, now);
                &[][..]
            }
            None => {
                if let Some(session) = &sub.stripe_checkout_session_id {
                    let expired = self
                        .payments
                        .expire_checkout_session(session)
                        .await
                        .map_err(payments_error)?;
                    if !expired {
                        tracing::info!(subscription = %sub.id, %session, "checkout session no longer open; a payment is canceled in Stripe when its webhook arrives");
                    }
                }
                lifecycle::apply(&mut sub, BillingFact::Ended, now)
            }
        };
        self.commit_step(Transition::of(sub, version, effects, now))
            .await
    }

    /// Undoes a cancel at period end: Stripe keeps renewing the subscription. A subscription
    /// that already ended cannot be resumed (409); one not set to cancel is answered as is.
    pub(crate) async fn resume(&self, id: &str) -> Result<http::Response<String>, ApiError> {
        let id = SubscriptionId::parse(id)
            .map_err(|e| ApiError::bad_request("subscription_id", e.to_string()))?;
        let id = &id;
        let sub = retry_on_conflict(move || self.resume_step(id)).await?;
        Ok(json_response(
            StatusCode::OK,
            &self.view(sub, self.clock.now()).await?,
        ))
    }

    async fn resume_step(&self, id: &SubscriptionId) -> Result<Attempt<Subscription>, ApiError> {
        let mut sub = self.load(id).await?;
        let now = self.clock.now();
        let version = sub.version;
        if sub.status.is_final() {
            return Err(ApiError::Conflict(format!(
                "subscription is {}: it cannot be resumed",
                sub.status.as_str()
            )));
        }
        let Some(stripe_id) = sub.stripe_subscription_id.clone() else {
            return Ok(Attempt::Done(sub));
        };
        if !sub.cancel_at_period_end {
            return Ok(Attempt::Done(sub));
        }
        let snap = self
            .payments
            .set_cancel_at_period_end(&stripe_id, false, &intent(&sub))
            .await
            .map_err(payments_error)?;
        apply_period_snapshot(&mut sub, &snap, now);
        self.commit_step(Transition::of(sub, version, &[], now))
            .await
    }

    /// Issues a new key and revokes every live one in the same commit, which also bumps the
    /// subscription's version: two concurrent rotations cannot both win and leave two keys.
    pub(crate) async fn rotate_key(&self, id: &str) -> Result<http::Response<String>, ApiError> {
        let id = SubscriptionId::parse(id)
            .map_err(|e| ApiError::bad_request("subscription_id", e.to_string()))?;
        let mut sub = self.load(&id).await?;
        if sub.status.is_final() {
            return Err(ApiError::Conflict(format!(
                "subscription is {}: no keys can be issued",
                sub.status.as_str()
            )));
        }
        let now = self.clock.now();
        let version = sub.version;
        sub.updated_at = now;
        let live: Vec<ApiKey> = self
            .store
            .list_api_keys(&id)
            .await?
            .into_iter()
            .filter(|k| k.revoked_at.is_none())
            .collect();
        let key = NewApiKey::generate();
        let record = api_key_record(&key, &sub, now);
        let mut t = Transition::of(sub, version, &[], now);
        t.revoke = live.clone();
        t.new_keys = vec![record.clone()];
        if let Attempt::Retry = self.commit_step(t).await? {
            return Err(ApiError::Conflict(
                "the subscription changed concurrently; retry".into(),
            ));
        }
        Ok(json_response(
            StatusCode::CREATED,
            &IssuedKey {
                subscription_id: id,
                api_key: key.expose_secret().to_string(),
                prefix: record.prefix,
                revoked: live.into_iter().map(|k| k.prefix).collect(),
            },
        ))
    }

    /// Stores the Checkout Session id on a pending subscription (once).
    async fn remember_session(
        &self,
        id: &SubscriptionId,
        session: &StripeId,
    ) -> Result<Attempt<()>, ApiError> {
        let mut sub = self.load(id).await?;
        if sub.stripe_checkout_session_id.is_some() {
            return Ok(Attempt::Done(()));
        }
        let version = sub.version;
        sub.stripe_checkout_session_id = Some(session.clone());
        let now = self.clock.now();
        Ok(self
            .commit_step(Transition::of(sub, version, &[], now))
            .await?
            .map(|_| ()))
    }

    /// The one transition step (`tollgate_app::subscriptions`); `Retry` when the subscription
    /// changed since it was read.
    async fn commit_step(&self, t: Transition<'_>) -> Result<Attempt<Subscription>, ApiError> {
        match commit_transition(&*self.store, &*self.publisher, &self.catalog, t).await? {
            Committed::Applied { subscription, .. } => Ok(Attempt::Done(*subscription)),
            Committed::AlreadyClaimed | Committed::Stale => Ok(Attempt::Retry),
        }
    }

    /// A transition that must not race (a new subscription): a conflict is a 409.
    async fn transition(&self, t: Transition<'_>) -> Result<Subscription, ApiError> {
        match self.commit_step(t).await? {
            Attempt::Done(sub) => Ok(sub),
            Attempt::Retry => Err(ApiError::Conflict(
                "the subscription changed concurrently; retry".into(),
            )),
        }
    }

    async fn load(&self, id: &SubscriptionId) -> Result<Subscription, ApiError> {
        self.store
            .get_subscription(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("subscription {id}")))
    }
}

pub(crate) fn api_key_record(key: &NewApiKey, sub: &Subscription, now: Timestamp) -> ApiKey {
    ApiKey {
        hash: key.hash(),
        prefix: key.display_prefix(),
        subscription_id: sub.id.clone(),
        consumer_id: sub.consumer_id.clone(),
        product_id: sub.product_id.clone(),
        created_at: now,
        revoked_at: None,
    }
}

/// The intent of a Stripe write made from `sub` as read: its id and version, so a later
/// request (after the version moved) is a new request to Stripe, and a retry of this one
/// (same version) is replayed.
fn intent(sub: &Subscription) -> String {
    format!("{}:v{}", sub.id, sub.version)
}

/// Copies what a Stripe write answered about the period and cancellation.
fn apply_period_snapshot(sub: &mut Subscription, snap: &SubscriptionSnapshot, now: Timestamp) {
    sub.observe_stripe_periods(snap);
    sub.updated_at = now;
}

/// A fresh tollgate id: `{prefix}_` + 20 random hex characters (80 bits).
fn new_id(prefix: &str) -> SubscriptionId {
    let bytes: [u8; 10] = rand::random();
    SubscriptionId::parse(format!("{prefix}_{}", hex::encode(bytes))).expect("valid id")
}

/// Whether `url` starts with an allowed prefix at a boundary: `https://portal.example.com`
/// allows `https://portal.example.com/ok?x=1` but not `https://portal.example.com.evil.io` or
/// `https://portal.example.com@evil.io`. An empty allow-list allows nothing.
pub fn return_url_allowed(url: &str, allowlist: &[String]) -> bool {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return false;
    }
    allowlist.iter().any(|prefix| {
        !prefix.is_empty()
            && url.starts_with(prefix.as_str())
            && (prefix.ends_with('/')
                || matches!(
                    url[prefix.len()..].chars().next(),
                    None | Some('/' | '?' | '#')
                ))
    })
}

/// Most products one `has-paid` question may name.
const MAX_HAS_PAID_PRODUCTS: usize = 20;

pub(crate) fn payments_error(e: PaymentsError) -> ApiError {
    if e.is_transient() {
        ApiError::Unavailable(e.to_string())
    } else {
        ApiError::Upstream(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_must_match_a_prefix_at_a_boundary() {
        let allow = vec![
            "https://portal.example.com".to_string(),
            "http://127.0.0.1:3000/".to_string(),
        ];
        for ok in [
            "https://portal.example.com",
            "https://portal.example.com/",
            "https://portal.example.com/billing/ok?session={CHECKOUT_SESSION_ID}",
            "https://portal.example.com#done",
            "http://127.0.0.1:3000/x",
        ] {
            assert!(return_url_allowed(ok, &allow), "{ok}");
        }
        for bad in [
            "https://portal.example.com.evil.io/",
            "https://portal.example.com@evil.io/",
            "https://portal.example.comx",
            "http://portal.example.com/",
            "https://evil.io/?https://portal.example.com",
            "https://portal.example.com/ok\n",
            "https://portal.example.com\\@evil.io",
            "javascript:alert(1)",
            "",
        ] {
            assert!(!return_url_allowed(bad, &allow), "{bad:?}");
        }
        assert!(!return_url_allowed("https://portal.example.com/", &[]));
    }

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = new_id("tgsub");
        assert!(a.as_str().starts_with("tgsub_"));
        assert_eq!(a.as_str().len(), 26);
        assert_ne!(a, new_id("tgsub"));
    }
}
