//! The clock-driven part of Stripe Billing: renewals, invoices, payment attempts, dunning,
//! and checkout completion.

use serde_json::{Value, json};

use crate::arithmetic::Scheme;
use crate::error::{ApiError, ApiResult};
use crate::objects::{self, InvoiceInit, LineInit, SubscriptionInit};
use crate::state::{AfterRetries, Card, InvoiceTimers, State, SubClock, new_id};

impl State {
    /// Moves the clock to `target`, running every renewal, finalisation and retry due on the way
    /// in time order, so that advancing a year bills twelve periods in sequence.
    pub fn advance_to(&mut self, target: i64) {
        while let Some((at, timer)) = self.next_timer(target) {
            self.now = self.now.max(at);
            match timer {
                Timer::PeriodEnd(sub) => self.end_period(&sub),
                Timer::Finalize(inv) => self.finalize_invoice(&inv),
                Timer::Retry(inv) => self.attempt_payment(&inv),
                Timer::ExpireSession(cs) => self.expire_session(&cs),
            }
        }
        self.now = self.now.max(target);
    }

    fn next_timer(&self, target: i64) -> Option<(i64, Timer)> {
        let mut best: Option<(i64, Timer)> = None;
        let mut consider = |at: i64, t: Timer| {
            if at <= target && best.as_ref().is_none_or(|(b, _)| at < *b) {
                best = Some((at, t));
            }
        };
        for id in self.subscriptions.ids() {
            let sub = &self.subscriptions.get(&id).expect("listed");
            if matches!(
                sub["status"].as_str(),
                Some("active" | "past_due" | "unpaid" | "trialing")
            ) && let Some(clock) = self.sub_clocks.get(&id)
            {
                consider(clock.current().1, Timer::PeriodEnd(id));
            }
        }
        for (id, t) in &self.invoice_timers {
            if let Some(at) = t.finalize_at {
                consider(at, Timer::Finalize(id.clone()));
            }
            if let Some(at) = t.next_attempt {
                consider(at, Timer::Retry(id.clone()));
            }
        }
        for s in self.sessions.newest_first() {
            if s["status"] == "open"
                && let Some(at) = s["expires_at"].as_i64()
            {
                consider(
                    at,
                    Timer::ExpireSession(s["id"].as_str().unwrap_or_default().to_string()),
                );
            }
        }
        best
    }

    fn expire_session(&mut self, id: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            s["status"] = json!("expired");
            let s = s.clone();
            self.emit("checkout.session.expired", s, None);
        }
    }

    fn end_period(&mut self, sub_id: &str) {
        let Some(clock) = self.sub_clocks.get(sub_id).cloned() else {
            return;
        };
        let ended = clock.current();
        let sub = self
            .subscriptions
            .get(sub_id)
            .cloned()
            .expect("timer for a known subscription");
        let items: Vec<Value> = sub["items"]["data"].as_array().cloned().unwrap_or_default();
        let has_metered = items
            .iter()
            .any(|i| i["price"]["recurring"]["usage_type"] == "metered");

        if sub["cancel_at_period_end"] == true
            || sub["cancel_at"].as_i64().is_some_and(|c| c <= self.now)
        {
            if has_metered {
                // The final invoice charges the usage of the period that just ended.
                self.create_cycle_invoice(sub_id, &items, None, Some(ended), "subscription_cycle");
            }
            self.cancel_subscription_now(sub_id, "cancellation_requested");
            return;
        }

        // The end of a trial starts period 0 (usage during the trial is not billed).
        let ended_trial = clock.trial.is_some();
        let usage_period = if ended_trial { None } else { Some(ended) };
        let clock = match clock.trial {
            Some(_) => SubClock {
                trial: None,
                ..clock
            },
            None => SubClock {
                index: clock.index + 1,
                ..clock
            },
        };
        let next = clock.current();
        self.sub_clocks.insert(sub_id.to_string(), clock);
        let previous_items = sub["items"].clone();
        {
            let s = self.subscriptions.get_mut(sub_id).expect("known");
            if let Some(data) = s["items"]["data"].as_array_mut() {
                for i in data {
                    i["current_period_start"] = json!(next.0);
                    i["current_period_end"] = json!(next.1);
                }
            }
        }
        let items: Vec<Value> = self.subscriptions.get(sub_id).expect("known")["items"]["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if ended_trial && let Some(x) = self.subscriptions.get_mut(sub_id) {
            x["status"] = json!("active");
        }
        self.create_cycle_invoice(
            sub_id,
            &items,
            Some(next),
            usage_period,
            "subscription_cycle",
        );
        let s = self.subscriptions.get(sub_id).cloned().expect("known");
        self.emit(
            "customer.subscription.updated",
            s,
            Some(if ended_trial {
                json!({"items": previous_items, "status": "trialing"})
            } else {
                json!({"items": previous_items})
            }),
        );
    }

    /// A renewal invoice: licensed prices in advance for `advance_period`, metered prices in
    /// arrears for `usage_period` (filled in at finalisation, after the grace period).
    fn create_cycle_invoice(
        &mut self,
        sub_id: &str,
        items: &[Value],
        advance_period: Option<(i64, i64)>,
        usage_period: Option<(i64, i64)>,
        reason: &str,
    ) {
        let sub = self.subscriptions.get(sub_id).cloned().expect("known");
        let inv_id = new_id("in");
        let mut lines = vec![];
        if let Some(period) = advance_period {
            for item in items
                .iter()
                .filter(|i| i["price"]["recurring"]["usage_type"] != "metered")
            {
                lines.push(self.licensed_line(&inv_id, item, Some(sub_id), period));
            }
        }
        let period = usage_period
            .or(advance_period)
            .unwrap_or((self.now, self.now));
        self.store_invoice(&inv_id, &sub, lines, reason, period);
        self.invoice_timers.insert(
            inv_id.clone(),
            InvoiceTimers {
                finalize_at: Some(self.now + self.billing.finalize_grace_secs),
                usage_period,
                ..Default::default()
            },
        );
        if let Some(s) = self.subscriptions.get_mut(sub_id) {
            s["latest_invoice"] = json!(inv_id);
        }
        let inv = self.invoices.get(&inv_id).cloned().expect("just stored");
        self.emit("invoice.created", inv, None);
    }

    fn store_invoice(
        &mut self,
        inv_id: &str,
        sub: &Value,
        lines: Vec<Value>,
        reason: &str,
        period: (i64, i64),
    ) {
        let customer = self
            .customers
            .get(sub["customer"].as_str().unwrap_or_default())
            .cloned()
            .unwrap_or(Value::Null);
        let inv = objects::invoice(InvoiceInit {
            id: inv_id,
            created: self.now,
            customer: &customer,
            currency: sub["currency"].as_str().unwrap_or("usd"),
            billing_reason: reason,
            subscription: sub["id"].as_str(),
            subscription_metadata: sub["metadata"].clone(),
            period,
            lines,
        });
        self.invoices.insert(inv_id, inv);
    }

    fn licensed_line(
        &self,
        inv_id: &str,
        item: &Value,
        sub_id: Option<&str>,
        period: (i64, i64),
    ) -> Value {
        let price = self
            .prices
            .get(item["price"]["id"].as_str().unwrap_or_default())
            .cloned()
            .unwrap_or_else(|| item["price"].clone());
        let quantity = item["quantity"].as_u64().unwrap_or(1);
        let amount = Scheme::from_price(&price).amount(quantity);
        objects::invoice_line(LineInit {
            id: &new_id("il"),
            invoice_id: inv_id,
            amount,
            currency: price["currency"].as_str().unwrap_or("usd"),
            description: format!(
                "{quantity} × {} (at {})",
                self.product_name(&price),
                describe_price(&price)
            ),
            period,
            quantity,
            price: &price,
            subscription: sub_id,
            subscription_item: item["id"].as_str(),
        })
    }

    fn product_name(&self, price: &Value) -> String {
        self.products
            .get(price["product"].as_str().unwrap_or_default())
            .and_then(|p| p["name"].as_str())
            .unwrap_or("Product")
            .to_string()
    }

    /// The usage a metered price bills for: the sum of the customer's meter events whose
    /// timestamp lies in the period (events that arrived late but within the grace count).
    pub fn metered_quantity(&self, customer: &str, meter_id: &str, period: (i64, i64)) -> u64 {
        let Some(meter) = self.meters.get(meter_id) else {
            return 0;
        };
        let event_name = meter["event_name"].as_str().unwrap_or_default();
        let events = self.meter_events.iter().filter(|e| {
            e.customer == customer
                && e.event_name == event_name
                && e.timestamp >= period.0
                && e.timestamp < period.1
        });
        let total: i64 = match meter["default_aggregation"]["formula"].as_str() {
            Some("count") => events.count() as i64,
            Some("last") => events
                .max_by_key(|e| (e.timestamp, e.created))
                .map(|e| e.value)
                .unwrap_or(0),
            _ => events.map(|e| e.value).sum(),
        };
        total.max(0) as u64
    }

    fn finalize_invoice(&mut self, inv_id: &str) {
        let timers = self.invoice_timers.get(inv_id).cloned().unwrap_or_default();
        let mut inv = self
            .invoices
            .get(inv_id)
            .cloned()
            .expect("timer for a known invoice");
        let customer = inv["customer"].as_str().unwrap_or_default().to_string();
        let sub_id = inv["parent"]["subscription_details"]["subscription"]
            .as_str()
            .map(str::to_string);

        if let (Some(period), Some(sub_id)) = (timers.usage_period, sub_id.as_deref()) {
            let sub = self
                .subscriptions
                .get(sub_id)
                .cloned()
                .unwrap_or(Value::Null);
            for item in sub["items"]["data"].as_array().cloned().unwrap_or_default() {
                if item["price"]["recurring"]["usage_type"] != "metered" {
                    continue;
                }
                let price = self
                    .prices
                    .get(item["price"]["id"].as_str().unwrap_or_default())
                    .cloned()
                    .unwrap_or(Value::Null);
                let quantity = self.metered_quantity(
                    &customer,
                    price["recurring"]["meter"].as_str().unwrap_or_default(),
                    period,
                );
                let amount = Scheme::from_price(&price).amount(quantity);
                let line = objects::invoice_line(LineInit {
                    id: &new_id("il"),
                    invoice_id: inv_id,
                    amount,
                    currency: price["currency"].as_str().unwrap_or("usd"),
                    description: format!("{} (usage: {quantity})", self.product_name(&price)),
                    period,
                    quantity,
                    price: &price,
                    subscription: Some(sub_id),
                    subscription_item: item["id"].as_str(),
                });
                if let Some(data) = inv["lines"]["data"].as_array_mut() {
                    data.push(line);
                }
            }
        }
        let total: i64 = inv["lines"]["data"]
            .as_array()
            .map(|ls| ls.iter().filter_map(|l| l["amount"].as_i64()).sum())
            .unwrap_or(0);

        // Customer balance: negative is credit owed to the customer and reduces what is due.
        let balance = self
            .customers
            .get(&customer)
            .and_then(|c| c["balance"].as_i64())
            .unwrap_or(0);
        let applied = if balance < 0 {
            (-balance).min(total)
        } else {
            -balance
        };
        let amount_due = (total - applied).max(0);
        let ending = balance + applied;
        if applied != 0 {
            let currency = inv["currency"].as_str().unwrap_or("usd").to_string();
            let tx_id = new_id("cbtxn");
            let tx = objects::balance_transaction(objects::BalanceTxnInit {
                id: &tx_id,
                created: self.now,
                customer: &customer,
                amount: applied,
                currency: &currency,
                ending_balance: ending,
                kind: "applied_to_invoice",
                description: Value::Null,
                invoice: json!(inv_id),
                metadata: Value::Null,
            });
            self.balance_txns.insert(&tx_id, tx);
            if let Some(c) = self.customers.get_mut(&customer) {
                c["balance"] = json!(ending);
            }
        }

        self.invoice_sequence += 1;
        let prefix = self
            .customers
            .get(&customer)
            .and_then(|c| c["invoice_prefix"].as_str())
            .unwrap_or("EMU")
            .to_string();
        inv["number"] = json!(format!("{prefix}-{:04}", self.invoice_sequence));
        inv["subtotal"] = json!(total);
        inv["subtotal_excluding_tax"] = json!(total);
        inv["total"] = json!(total);
        inv["total_excluding_tax"] = json!(total);
        inv["starting_balance"] = json!(balance);
        inv["ending_balance"] = json!(ending);
        inv["amount_due"] = json!(amount_due);
        inv["amount_remaining"] = json!(amount_due);
        inv["status"] = json!("open");
        inv["effective_at"] = json!(self.now);
        inv["automatically_finalizes_at"] = Value::Null;
        inv["status_transitions"]["finalized_at"] = json!(self.now);
        inv["hosted_invoice_url"] = json!(format!("{}/invoices/{inv_id}", self.base_url));
        self.invoices.insert(inv_id, inv.clone());
        self.invoice_timers.insert(
            inv_id.to_string(),
            InvoiceTimers {
                finalize_at: None,
                ..timers
            },
        );
        self.emit("invoice.finalized", inv, None);
        self.attempt_payment(inv_id);
    }

    /// Charges the customer's card; a failure schedules the next retry or, after the last,
    /// moves the subscription as `billing.after_retries` says.
    pub fn attempt_payment(&mut self, inv_id: &str) {
        let mut inv = self.invoices.get(inv_id).cloned().expect("known invoice");
        if inv["status"] != "open" {
            // Paid or voided meanwhile: drop any scheduled retry, or the clock would spin on it.
            if let Some(t) = self.invoice_timers.get_mut(inv_id) {
                t.next_attempt = None;
            }
            return;
        }
        let customer = inv["customer"].as_str().unwrap_or_default().to_string();
        let sub_id = inv["parent"]["subscription_details"]["subscription"]
            .as_str()
            .map(str::to_string);
        let amount_due = inv["amount_due"].as_i64().unwrap_or(0);
        let card = self.cards.get(&customer).copied();
        let mut timers = self.invoice_timers.get(inv_id).cloned().unwrap_or_default();
        timers.next_attempt = None;

        if amount_due > 0 {
            inv["attempted"] = json!(true);
            inv["attempt_count"] = json!(inv["attempt_count"].as_i64().unwrap_or(0) + 1);
        }
        if amount_due == 0 || card == Some(Card::Good) {
            inv["status"] = json!("paid");
            inv["amount_paid"] = json!(amount_due);
            inv["amount_remaining"] = json!(0);
            inv["next_payment_attempt"] = Value::Null;
            inv["status_transitions"]["paid_at"] = json!(self.now);
            self.invoices.insert(inv_id, inv.clone());
            self.invoice_timers.insert(inv_id.to_string(), timers);
            self.emit("invoice.paid", inv.clone(), None);
            self.emit("invoice.payment_succeeded", inv, None);
            let status = sub_id
                .as_deref()
                .and_then(|id| self.subscriptions.get(id))
                .and_then(|x| x["status"].as_str())
                .unwrap_or_default()
                .to_string();
            if let Some(sub_id) = sub_id
                && matches!(status.as_str(), "incomplete" | "past_due" | "unpaid")
            {
                self.set_subscription_status(&sub_id, "active");
            }
            return;
        }

        let delay = self
            .billing
            .retry_delays_secs
            .get(timers.retries_done)
            .copied();
        timers.retries_done += 1;
        timers.next_attempt = delay.map(|d| self.now + d);
        inv["next_payment_attempt"] = json!(timers.next_attempt);
        self.invoices.insert(inv_id, inv.clone());
        self.invoice_timers.insert(inv_id.to_string(), timers);
        self.emit("invoice.payment_failed", inv, None);
        let Some(sub_id) = sub_id else { return };
        let status = self
            .subscriptions
            .get(&sub_id)
            .and_then(|s| s["status"].as_str())
            .unwrap_or_default()
            .to_string();
        if status == "incomplete" {
            return;
        }
        if delay.is_some() {
            self.set_subscription_status(&sub_id, "past_due");
        } else {
            match self.billing.after_retries {
                AfterRetries::Unpaid => self.set_subscription_status(&sub_id, "unpaid"),
                AfterRetries::PastDue => self.set_subscription_status(&sub_id, "past_due"),
                AfterRetries::Canceled => self.cancel_subscription_now(&sub_id, "payment_failed"),
            }
        }
    }

    fn set_subscription_status(&mut self, sub_id: &str, status: &str) {
        let Some(sub) = self.subscriptions.get_mut(sub_id) else {
            return;
        };
        let old = sub["status"].clone();
        if old == status || old == "canceled" {
            return;
        }
        sub["status"] = json!(status);
        let sub = sub.clone();
        self.emit(
            "customer.subscription.updated",
            sub,
            Some(json!({"status": old})),
        );
    }

    pub fn cancel_subscription_now(&mut self, sub_id: &str, reason: &str) {
        let now = self.now;
        let Some(sub) = self.subscriptions.get_mut(sub_id) else {
            return;
        };
        sub["status"] = json!("canceled");
        sub["ended_at"] = json!(now);
        if sub["canceled_at"].is_null() {
            sub["canceled_at"] = json!(now);
        }
        sub["cancellation_details"]["reason"] = json!(reason);
        let sub = sub.clone();
        self.emit("customer.subscription.deleted", sub, None);
    }

    /// Immediate cancellation (`DELETE /v1/subscriptions/{id}`); with `invoice_now` the usage of
    /// the partial period is invoiced at once.
    pub fn cancel_subscription_request(
        &mut self,
        sub_id: &str,
        invoice_now: bool,
    ) -> ApiResult<Value> {
        let sub = self
            .subscriptions
            .get(sub_id)
            .cloned()
            .ok_or_else(|| ApiError::no_such("subscription", sub_id, "id"))?;
        if sub["status"] == "canceled" {
            return Err(ApiError::invalid("id", format!("A canceled subscription can only update its cancellation_details and metadata. ({sub_id})")).with_code("resource_missing"));
        }
        // Without `invoice_now`, Stripe discards the un-invoiced metered usage ("Otherwise, all
        // metered usage is discarded": docs.stripe.com/billing/subscriptions/cancel). With it,
        // the final invoice bills the usage of the partial period up to now, and like every
        // invoice it stays a draft for the finalization grace period, during which usage for
        // its period can still be reported
        // (docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period: "All
        // invoices have a default finalization grace period of 1 hour").
        if invoice_now && let Some(clock) = self.sub_clocks.get(sub_id).cloned() {
            let items: Vec<Value> = sub["items"]["data"].as_array().cloned().unwrap_or_default();
            // Usage of a trial is not billed (the trial is free), so nothing before its end.
            let usage_period = match clock.trial {
                Some(_) => None,
                None => Some((clock.current().0, self.now)),
            };
            self.create_cycle_invoice(sub_id, &items, None, usage_period, "subscription_update");
        }
        self.cancel_subscription_now(sub_id, "cancellation_requested");
        Ok(self.subscriptions.get(sub_id).cloned().expect("known"))
    }

    /// The customer pays on the hosted page. A declined card leaves the session open (the page
    /// shows the decline) unless nothing is due now, in which case the card is only saved and
    /// fails later, like Stripe's test card 4000 0000 0000 0341.
    pub fn complete_checkout(&mut self, session_id: &str, card: Card) -> ApiResult<Value> {
        let session = self
            .sessions
            .get(session_id)
            .cloned()
            .ok_or_else(|| ApiError::no_such("checkout.session", session_id, "session"))?;
        if session["status"] != "open" {
            return Err(ApiError::invalid(
                "session",
                format!(
                    "This Checkout Session is no longer active (status {}).",
                    session["status"]
                ),
            )
            .with_code("checkout_session_inactive"));
        }
        let amount = session["amount_total"].as_i64().unwrap_or(0);
        if card == Card::Declined && amount > 0 {
            return Err(ApiError::card_declined());
        }
        let customer_id = match session["customer"].as_str() {
            Some(c) => c.to_string(),
            None => {
                let id = new_id("cus");
                let email = session["customer_email"].clone();
                let email = if email.is_null() {
                    json!(format!("{}@checkout.emulator.invalid", id.to_lowercase()))
                } else {
                    email
                };
                let c = objects::customer(
                    &id,
                    self.now,
                    &objects::CustomerFields {
                        email,
                        metadata: json!({}),
                        ..Default::default()
                    },
                );
                self.customers.insert(&id, c.clone());
                self.emit("customer.created", c, None);
                id
            }
        };
        self.cards.insert(customer_id.clone(), card);
        let items = self
            .session_items
            .get(session_id)
            .cloned()
            .unwrap_or_default();
        let currency = session["currency"].as_str().unwrap_or("usd").to_string();
        let mut s = session.clone();
        s["customer"] = json!(customer_id);
        s["status"] = json!("complete");
        s["customer_details"] = json!({
            "address": objects::empty_address(), "business_name": null, "email": self.customers.get(&customer_id).map(|c| c["email"].clone()),
            "individual_name": null, "name": null, "phone": null, "tax_exempt": "none", "tax_ids": []
        });

        if session["mode"] == "subscription" {
            let sub_id = new_id("sub");
            let recurring: Vec<&Value> = items
                .iter()
                .filter(|i| !i["price"]["recurring"].is_null())
                .collect();
            let first = recurring
                .first()
                .map(|i| i["price"]["recurring"].clone())
                .unwrap_or(Value::Null);
            let trial_end = self
                .session_trial_days
                .remove(session_id)
                .map(|days| self.now + days as i64 * 86_400);
            let clock = SubClock {
                anchor: trial_end.unwrap_or(self.now),
                index: 0,
                interval: first["interval"].as_str().unwrap_or("month").to_string(),
                interval_count: first["interval_count"].as_u64().unwrap_or(1) as u32,
                trial: trial_end.map(|end| (self.now, end)),
            };
            let period = clock.current();
            let mut sub_items = vec![];
            for i in &recurring {
                let si = new_id("si");
                let price = self
                    .prices
                    .get(i["price"]["id"].as_str().unwrap_or_default())
                    .cloned()
                    .unwrap_or(Value::Null);
                let quantity = if price["recurring"]["usage_type"] == "metered" {
                    None
                } else {
                    i["quantity"].as_u64()
                };
                sub_items.push(objects::subscription_item(
                    &si,
                    self.now,
                    &sub_id,
                    &price,
                    quantity,
                    period,
                    json!({}),
                ));
                self.item_owner.insert(si, sub_id.clone());
            }
            let status = match (trial_end, amount > 0) {
                (Some(_), _) => "trialing",
                (None, true) => "incomplete",
                (None, false) => "active",
            };
            let metadata = self
                .session_subscription_metadata
                .remove(session_id)
                .unwrap_or_else(|| json!({}));
            let sub = objects::subscription(SubscriptionInit {
                id: &sub_id,
                created: self.now,
                customer: &customer_id,
                currency: &currency,
                metadata,
                items: sub_items.clone(),
                status,
            });
            let mut sub = sub;
            if let Some(end) = trial_end {
                sub["trial_start"] = json!(self.now);
                sub["trial_end"] = json!(end);
                sub["billing_cycle_anchor"] = json!(end);
            }
            self.subscriptions.insert(&sub_id, sub.clone());
            self.sub_clocks.insert(sub_id.clone(), clock);
            self.emit("customer.subscription.created", sub.clone(), None);

            let inv_id = new_id("in");
            let mut lines: Vec<Value> = sub_items
                .iter()
                .filter(|i| {
                    trial_end.is_none() && i["price"]["recurring"]["usage_type"] != "metered"
                })
                .map(|i| self.licensed_line(&inv_id, i, Some(&sub_id), period))
                .collect();
            // One-time prices in a subscription-mode session (a setup fee) go on the first invoice.
            for i in items.iter().filter(|i| i["price"]["recurring"].is_null()) {
                let pseudo = json!({"price": i["price"], "quantity": i["quantity"], "id": null});
                lines.push(self.licensed_line(
                    &inv_id,
                    &pseudo,
                    Some(&sub_id),
                    (self.now, self.now),
                ));
            }
            self.store_invoice(&inv_id, &sub, lines, "subscription_create", period);
            self.invoice_timers
                .insert(inv_id.clone(), InvoiceTimers::default());
            if let Some(x) = self.subscriptions.get_mut(&sub_id) {
                x["latest_invoice"] = json!(inv_id);
            }
            let inv = self.invoices.get(&inv_id).cloned().expect("stored");
            self.emit("invoice.created", inv, None);
            self.finalize_invoice(&inv_id);
            s["subscription"] = json!(sub_id);
            s["invoice"] = json!(inv_id);
            s["payment_status"] = json!(if amount > 0 {
                "paid"
            } else {
                "no_payment_required"
            });
        } else {
            let payment_intent = new_id("pi");
            s["payment_intent"] = json!(payment_intent);
            s["payment_status"] = json!("paid");
            self.record_charge(&payment_intent, &customer_id, amount, &s["currency"]);
            if session["invoice_creation"]["enabled"] == true {
                let inv_id = new_id("in");
                let lines: Vec<Value> = items
                    .iter()
                    .map(|i| {
                        let pseudo =
                            json!({"price": i["price"], "quantity": i["quantity"], "id": null});
                        self.licensed_line(&inv_id, &pseudo, None, (self.now, self.now))
                    })
                    .collect();
                let owner = json!({"customer": customer_id, "currency": currency, "metadata": {}, "id": null});
                self.store_invoice(&inv_id, &owner, lines, "manual", (self.now, self.now));
                if let Some(inv) = self.invoices.get_mut(&inv_id) {
                    inv["parent"] = Value::Null;
                }
                self.invoice_timers
                    .insert(inv_id.clone(), InvoiceTimers::default());
                let inv = self.invoices.get(&inv_id).cloned().expect("stored");
                self.emit("invoice.created", inv, None);
                self.finalize_invoice(&inv_id);
                s["invoice"] = json!(inv_id);
            }
        }
        self.sessions.insert(session_id, s.clone());
        self.emit("checkout.session.completed", s.clone(), None);
        Ok(s)
    }
}

impl State {
    /// The charge a payment-mode Checkout payment made (the object refunds and disputes act
    /// on; https://docs.stripe.com/api/charges/object).
    fn record_charge(
        &mut self,
        payment_intent: &str,
        customer: &str,
        amount: i64,
        currency: &Value,
    ) {
        let id = new_id("ch");
        let charge = json!({
            "id": id, "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": 0, "balance_transaction": null, "captured": true,
            "created": self.now, "currency": currency, "customer": customer,
            "description": null, "disputed": false, "failure_code": null,
            "failure_message": null, "invoice": null, "livemode": false, "metadata": {},
            "paid": true, "payment_intent": payment_intent, "receipt_url": null,
            "refunded": false, "status": "succeeded"
        });
        self.charges.insert(&id, charge);
    }

    fn charge_of(&self, charge: Option<&str>, payment_intent: Option<&str>) -> ApiResult<Value> {
        match (charge, payment_intent) {
            (Some(id), _) => self
                .charges
                .get(id)
                .cloned()
                .ok_or_else(|| ApiError::no_such("charge", id, "charge")),
            (None, Some(pi)) => self
                .charges
                .newest_first()
                .find(|c| c["payment_intent"] == pi)
                .cloned()
                .ok_or_else(|| ApiError::no_such("payment_intent", pi, "payment_intent")),
            (None, None) => Err(ApiError::invalid(
                "charge",
                "One of `charge` or `payment_intent` is required.",
            )),
        }
    }

    /// `POST /v1/refunds`: all or part of what is left of a charge goes back to the customer;
    /// the charge's `amount_refunded` grows and `charge.refunded` is sent with it
    /// (https://docs.stripe.com/api/refunds/create, https://docs.stripe.com/refunds).
    pub fn create_refund(
        &mut self,
        charge: Option<&str>,
        payment_intent: Option<&str>,
        amount: Option<i64>,
    ) -> ApiResult<Value> {
        let mut c = self.charge_of(charge, payment_intent)?;
        let left = c["amount"].as_i64().unwrap_or(0) - c["amount_refunded"].as_i64().unwrap_or(0);
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(ApiError::invalid(
                "amount",
                format!(
                    "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
                ),
            )
            .with_code("amount_too_large"));
        }
        let charge_id = c["id"].as_str().unwrap_or_default().to_string();
        let refunded = c["amount_refunded"].as_i64().unwrap_or(0) + amount;
        c["amount_refunded"] = json!(refunded);
        c["refunded"] = json!(refunded == c["amount"].as_i64().unwrap_or(0));
        self.charges.insert(&charge_id, c.clone());
        let id = new_id("re");
        let refund = json!({
            "id": id, "object": "refund", "amount": amount, "balance_transaction": null,
            "charge": charge_id, "created": self.now, "currency": c["currency"],
            "metadata": {}, "payment_intent": c["payment_intent"], "reason": null,
            "receipt_number": null, "status": "succeeded"
        });
        self.refunds.insert(&id, refund.clone());
        self.emit("charge.refunded", c, None);
        Ok(refund)
    }

    /// See [`crate::RunningEmulator::dispute`].
    pub fn dispute(&mut self, charge: &str, lost: bool) -> ApiResult<Value> {
        let mut c = self.charge_of(Some(charge), None)?;
        c["disputed"] = json!(true);
        self.charges.insert(charge, c.clone());
        let mut dispute = json!({
            "id": new_id("dp"), "object": "dispute", "amount": c["amount"], "charge": charge,
            "created": self.now, "currency": c["currency"], "livemode": false, "metadata": {},
            "payment_intent": c["payment_intent"], "reason": "fraudulent",
            "status": "needs_response"
        });
        self.emit("charge.dispute.created", dispute.clone(), None);
        dispute["status"] = json!(if lost { "lost" } else { "won" });
        self.emit("charge.dispute.closed", dispute.clone(), None);
        Ok(dispute)
    }
}

enum Timer {
    PeriodEnd(String),
    Finalize(String),
    Retry(String),
    ExpireSession(String),
}

fn describe_price(price: &Value) -> String {
    match price["unit_amount_decimal"].as_str() {
        Some(u) => format!("{u} {} / unit", price["currency"].as_str().unwrap_or("usd")),
        None => "tiered pricing".to_string(),
    }
}
