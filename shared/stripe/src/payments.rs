//! [`Payments`] on async-stripe: customers, checkout sessions, subscriptions, meter events and
//! customer balance credit.

use crate::client::{StripeClient, StripeConfig};
use crate::convert::{currency, stripe_id, timestamp};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::subscription::{CancelSubscription, RetrieveSubscription, UpdateSubscription};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionInvoiceCreation,
    CreateCheckoutSessionInvoiceCreationInvoiceData, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionLineItemsPriceData, CreateCheckoutSessionPaymentIntentData,
    CreateCheckoutSessionSubscriptionData, ExpireCheckoutSession, ListCheckoutSession,
    RetrieveCheckoutSession,
};
use stripe_core::customer::{CreateCustomer, SearchCustomer, UpdateCustomer};
use stripe_core::customer_balance_transaction::CreateCustomerCustomerBalanceTransaction;
use stripe_product::price::ListPrice;
use tokio::sync::Mutex;
use tollgate_domain::ports::{
    CheckoutMode, CheckoutPrice, CheckoutRequest, CheckoutSession, CustomerCredit,
    METER_CUSTOMER_KEY, METER_VALUE_KEY, MeterEvent, Payments, PaymentsError, PaymentsResult,
    StripeSubscriptionStatus, SubscriptionItemSnapshot, SubscriptionSnapshot, metadata,
    stripe_product_id,
};
use tollgate_domain::{ConsumerId, StripeId, SubscriptionId};

/// The Stripe adapter. Cheap to clone; build it once per process.
#[derive(Debug, Clone)]
pub struct StripeAdapter {
    pub(crate) client: StripeClient,
    /// Billing Meter id by event name, filled by catalog sync (metered prices name the meter).
    pub(crate) meter_ids: Arc<Mutex<HashMap<String, String>>>,
}

impl StripeAdapter {
    pub fn new(client: StripeClient) -> Self {
        Self {
            client,
            meter_ids: Arc::default(),
        }
    }

    /// Builds the client from configuration (secret key, base URL, retry policy).
    pub fn from_config(config: &StripeConfig) -> PaymentsResult<Self> {
        Ok(Self::new(StripeClient::new(config)?))
    }

    /// The current Price id of each lookup key (Stripe allows 10 lookup keys per list call).
    async fn prices_by_lookup_key(
        &self,
        keys: &[String],
    ) -> PaymentsResult<HashMap<String, String>> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(10) {
            let list = self
                .client
                .get(&ListPrice::new().lookup_keys(chunk.to_vec()).limit(100))
                .await?;
            for p in list.data {
                if let Some(k) = p.lookup_key {
                    found.insert(k, p.id.to_string());
                }
            }
        }
        Ok(found)
    }
}

fn to_hashmap(m: BTreeMap<String, String>) -> HashMap<String, String> {
    m.into_iter().collect()
}

#[async_trait]
impl Payments for StripeAdapter {
    async fn ensure_customer(
        &self,
        consumer: &ConsumerId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        // A customer made earlier (beyond Stripe's 24-hour idempotency window) is found by
        // its metadata; Stripe's search lags writes by up to a minute, which the key covers.
        // The consumer's per-subscription customers carry the consumer id too; the
        // consumer-level one is the one without a subscription id.
        let query = format!("metadata['{}']:'{consumer}'", metadata::CONSUMER_ID);
        let found = self
            .client
            .get(&SearchCustomer::new(query).limit(100))
            .await?;
        let existing = found.data.into_iter().find(|c| {
            !c.metadata
                .as_ref()
                .is_some_and(|m| m.contains_key(metadata::SUBSCRIPTION_ID))
        });
        let customer = match existing {
            Some(c) => c,
            None => {
                // The request carries only what the intent fixes (the consumer id), never
                // request data such as the email: two first checkouts racing with different
                // emails send the same parameters under the same key, and Stripe replays the
                // one customer to both instead of answering `idempotency_error`.
                // https://docs.stripe.com/api/idempotent_requests
                let req = CreateCustomer::new().metadata(HashMap::from([(
                    metadata::CONSUMER_ID.to_string(),
                    consumer.to_string(),
                )]));
                self.client
                    .post(&req, &format!("tollgate:customer-for-consumer:{consumer}"))
                    .await?
            }
        };
        if let Some(email) = email
            && customer.email.as_deref().is_none_or(str::is_empty)
        {
            // The first email given wins; the key names the intent (this email on this
            // customer), so a retry replays and another email is a different intent.
            let digest = hex::encode(&Sha256::digest(email.as_bytes())[..10]);
            self.client
                .post(
                    &UpdateCustomer::new(customer.id.as_str()).email(email),
                    &format!("tollgate:customer-email:{}:{digest}", customer.id),
                )
                .await?;
        }
        stripe_id(customer.id.as_str())
    }

    async fn create_subscription_customer(
        &self,
        consumer: &ConsumerId,
        subscription: &SubscriptionId,
        email: Option<&str>,
    ) -> PaymentsResult<StripeId> {
        // Billing Meters aggregate meter events per customer and meter
        // (`customer_mapping`, https://docs.stripe.com/billing/subscriptions/usage-based/meters/configure):
        // a customer per subscription keeps each subscription's usage on its own invoice.
        let mut req = CreateCustomer::new().metadata(HashMap::from([
            (metadata::CONSUMER_ID.to_string(), consumer.to_string()),
            (
                metadata::SUBSCRIPTION_ID.to_string(),
                subscription.to_string(),
            ),
        ]));
        if let Some(email) = email {
            req = req.email(email);
        }
        // The subscription id is new for every checkout request, so the parameters under one
        // key never differ.
        let customer = self
            .client
            .post(
                &req,
                &format!("tollgate:customer-for-subscription:{subscription}"),
            )
            .await?;
        stripe_id(customer.id.as_str())
    }

    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> PaymentsResult<CheckoutSession> {
        let wanted: Vec<String> = request
            .line_items
            .iter()
            .filter_map(|i| match &i.price {
                CheckoutPrice::Synced { lookup_key } => Some(lookup_key.clone()),
                CheckoutPrice::Amount { .. } => None,
            })
            .collect();
        let prices = self.prices_by_lookup_key(&wanted).await?;

        let mut items = Vec::with_capacity(request.line_items.len());
        for (n, item) in request.line_items.iter().enumerate() {
            let mut li = CreateCheckoutSessionLineItems::new();
            match &item.price {
                CheckoutPrice::Synced { lookup_key } => {
                    let id = prices.get(lookup_key).ok_or_else(|| {
                        PaymentsError::InvalidRequest {
                            param: Some(format!("line_items[{n}][price]")),
                            code: Some("resource_missing".into()),
                            message: format!(
                                "no Stripe price has lookup key {lookup_key:?}: run `tollgate catalog sync`"
                            ),
                        }
                    })?;
                    li.price = Some(id.clone());
                }
                CheckoutPrice::Amount {
                    product,
                    unit_amount,
                } => {
                    let mut pd =
                        CreateCheckoutSessionLineItemsPriceData::new(currency(&request.currency)?);
                    pd.product = Some(stripe_product_id(product));
                    pd.unit_amount = Some(*unit_amount);
                    li.price_data = Some(pd);
                }
            }
            li.quantity = item.quantity;
            items.push(li);
        }

        let meta = to_hashmap(request.metadata());
        let mut req = CreateCheckoutSession::new()
            .customer(request.customer.as_str())
            .client_reference_id(request.subscription_id.as_str())
            .line_items(items)
            .metadata(meta.clone())
            .success_url(request.success_url.clone())
            .cancel_url(request.cancel_url.clone());
        match request.mode {
            CheckoutMode::Subscription => {
                // Metadata on the Subscription too: its own webhooks (updated, deleted,
                // invoice.*) then name the tollgate subscription without a lookup.
                let mut sd = CreateCheckoutSessionSubscriptionData::new();
                sd.metadata = Some(meta);
                if request.trial_days > 0 {
                    sd.trial_period_days = Some(request.trial_days);
                }
                req = req
                    .mode(stripe_shared::CheckoutSessionMode::Subscription)
                    .subscription_data(sd);
            }
            CheckoutMode::Payment => {
                // The purchase's record in Stripe is a paid invoice (receipt, tax, accounting),
                // carrying tollgate's metadata. Not a customer balance (Stripe would spend it
                // again on the consumer's next invoice of any subscription) and not a credit
                // grant (it applies only to metered usage Stripe bills, and prepaid usage is
                // drawn from tollgate's own balance, never reported to Stripe).
                let mut invoice_data = CreateCheckoutSessionInvoiceCreationInvoiceData::new();
                invoice_data.metadata = Some(meta.clone());
                let mut invoice = CreateCheckoutSessionInvoiceCreation::new(true);
                invoice.invoice_data = Some(invoice_data);
                let mut pi = CreateCheckoutSessionPaymentIntentData::new();
                pi.metadata = Some(meta);
                req = req
                    .mode(stripe_shared::CheckoutSessionMode::Payment)
                    .payment_intent_data(pi)
                    .invoice_creation(invoice);
            }
        }
        // One session per tollgate subscription: a retried request gets the same session.
        let key = format!("tollgate:checkout:{}", request.subscription_id);
        let session = self.client.post(&req, &key).await?;
        let url = session
            .url
            .ok_or_else(|| PaymentsError::Unexpected("checkout session without url".into()))?;
        Ok(CheckoutSession {
            id: stripe_id(session.id.as_str())?,
            url,
        })
    }

    async fn get_subscription(&self, id: &StripeId) -> PaymentsResult<SubscriptionSnapshot> {
        let sub = self
            .client
            .get(&RetrieveSubscription::new(id.as_str()))
            .await?;
        snapshot(sub)
    }

    async fn set_cancel_at_period_end(
        &self,
        id: &StripeId,
        cancel: bool,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        // The key names the request (`intent`), not just the object: Stripe replays a reused
        // key's first answer for 24 hours, so a key of the object alone would turn a second
        // cancel after a resume into a replay that cancels nothing.
        // https://docs.stripe.com/api/idempotent_requests
        let verb = if cancel { "cancel" } else { "resume" };
        let sub = self
            .client
            .post(
                &UpdateSubscription::new(id.as_str()).cancel_at_period_end(cancel),
                &format!("tollgate:{verb}-at-period-end:{id}:{intent}"),
            )
            .await?;
        snapshot(sub)
    }

    async fn cancel_subscription_now(
        &self,
        id: &StripeId,
        intent: &str,
    ) -> PaymentsResult<SubscriptionSnapshot> {
        let sub = self
            .client
            .post(
                &CancelSubscription::new(id.as_str()),
                &format!("tollgate:cancel-now:{id}:{intent}"),
            )
            .await?;
        snapshot(sub)
    }

    async fn checkout_session_of_payment(
        &self,
        payment_intent: &str,
    ) -> PaymentsResult<Option<BTreeMap<String, String>>> {
        let list = self
            .client
            .get(
                &ListCheckoutSession::new()
                    .payment_intent(payment_intent)
                    .limit(1),
            )
            .await?;
        Ok(list
            .data
            .into_iter()
            .next()
            .map(|s| s.metadata.unwrap_or_default().into_iter().collect()))
    }

    async fn expire_checkout_session(&self, id: &StripeId) -> PaymentsResult<bool> {
        // Only an `open` session can be expired; Stripe answers 400 for any other.
        // https://docs.stripe.com/api/checkout/sessions/expire
        match self
            .client
            .post(
                &ExpireCheckoutSession::new(id.as_str()),
                &format!("tollgate:expire-session:{id}"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(PaymentsError::InvalidRequest { .. }) => {
                let session = self
                    .client
                    .get(&RetrieveCheckoutSession::new(id.as_str()))
                    .await?;
                match session.status {
                    Some(stripe_shared::CheckoutSessionStatus::Open) => Err(
                        PaymentsError::Unexpected(format!("checkout session {id} stays open")),
                    ),
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn report_meter_event(&self, event: &MeterEvent) -> PaymentsResult<()> {
        let payload = HashMap::from([
            (METER_CUSTOMER_KEY.to_string(), event.customer.to_string()),
            (METER_VALUE_KEY.to_string(), event.value.to_string()),
        ]);
        let req = CreateBillingMeterEvent::new(event.event_name.clone(), payload)
            .identifier(event.identifier.clone())
            .timestamp(event.timestamp.timestamp());
        self.client
            .post(&req, &format!("tollgate:meter-event:{}", event.identifier))
            .await?;
        Ok(())
    }

    async fn add_customer_credit(&self, credit: &CustomerCredit) -> PaymentsResult<StripeId> {
        if credit.amount <= 0 {
            return Err(PaymentsError::Unsupported(format!(
                "credit amount must be positive (got {})",
                credit.amount
            )));
        }
        // Stripe's customer balance: a negative amount is credit applied to the next invoice.
        let req = CreateCustomerCustomerBalanceTransaction::new(
            credit.customer.as_str(),
            -credit.amount,
            currency(&credit.currency)?,
        )
        .description(credit.description.clone())
        .metadata(HashMap::from([(
            "tollgate_purchase_id".to_string(),
            credit.purchase_id.clone(),
        )]));
        let txn = self
            .client
            .post(&req, &format!("tollgate:credit:{}", credit.purchase_id))
            .await?;
        stripe_id(txn.id.as_str())
    }
}

fn snapshot(sub: stripe_shared::Subscription) -> PaymentsResult<SubscriptionSnapshot> {
    let first = sub.items.data.first();
    let items = sub
        .items
        .data
        .iter()
        .map(|i| {
            Ok(SubscriptionItemSnapshot {
                id: stripe_id(i.id.as_str())?,
                price_id: stripe_id(i.price.id.as_str())?,
                lookup_key: i.price.lookup_key.clone(),
                quantity: i.quantity,
            })
        })
        .collect::<PaymentsResult<Vec<_>>>()?;
    Ok(SubscriptionSnapshot {
        id: stripe_id(sub.id.as_str())?,
        customer: stripe_id(sub.customer.id().as_str())?,
        status: StripeSubscriptionStatus::parse(sub.status.as_str()),
        current_period_start: first
            .map(|i| timestamp(i.current_period_start))
            .transpose()?,
        current_period_end: first.map(|i| timestamp(i.current_period_end)).transpose()?,
        cancel_at_period_end: sub.cancel_at_period_end,
        start_date: Some(timestamp(sub.start_date)?),
        billing_cycle_anchor: Some(timestamp(sub.billing_cycle_anchor)?),
        trial_end: sub.trial_end.map(timestamp).transpose()?,
        ended_at: sub.ended_at.map(timestamp).transpose()?,
        metadata: sub.metadata.into_iter().collect(),
        items,
    })
}
