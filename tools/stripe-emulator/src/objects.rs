//! Builders for complete Stripe objects of API version 2026-09-30.endive.
//!
//! async-stripe 1.0.0-rc.10 parses strictly: a required field missing from a Subscription or an
//! Invoice makes the whole response (or webhook event) unparseable, so every builder here emits
//! every field the version has, with Stripe's defaults.

use serde_json::{Map, Value, json};

pub const API_VERSION: &str = "2026-09-30.endive";

pub fn empty_address() -> Value {
    json!({"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null})
}

pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

pub fn customer(id: &str, created: i64, p: &CustomerFields) -> Value {
    json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": created,
        "currency": null,
        "customer_account": null,
        "default_source": null,
        "delinquent": false,
        "description": p.description,
        "discount": null,
        "email": p.email,
        "invoice_prefix": id.trim_start_matches("cus_").chars().take(8).collect::<String>().to_uppercase(),
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null
        },
        "livemode": false,
        "metadata": p.metadata,
        "name": p.name,
        "next_invoice_sequence": 1,
        "phone": p.phone,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    })
}

#[derive(Debug, Default)]
pub struct CustomerFields {
    pub email: Value,
    pub name: Value,
    pub description: Value,
    pub phone: Value,
    pub metadata: Value,
}

pub fn product(id: &str, created: i64, name: &str) -> Value {
    json!({
        "id": id,
        "object": "product",
        "active": true,
        "created": created,
        "default_price": null,
        "description": null,
        "images": [],
        "livemode": false,
        "marketing_features": [],
        "metadata": {},
        "name": name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "type": "service",
        "unit_label": null,
        "updated": created,
        "url": null
    })
}

pub fn meter(
    id: &str,
    created: i64,
    display_name: &str,
    event_name: &str,
    formula: &str,
    customer_key: &str,
    value_key: &str,
) -> Value {
    json!({
        "id": id,
        "object": "billing.meter",
        "created": created,
        "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": null,
        "livemode": false,
        "status": "active",
        "status_transitions": {"deactivated_at": null},
        "updated": created,
        "value_settings": {"event_payload_key": value_key}
    })
}

pub fn meter_event(
    created: i64,
    event_name: &str,
    identifier: &str,
    payload: &Value,
    timestamp: i64,
) -> Value {
    json!({
        "object": "billing.meter_event",
        "created": created,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": false,
        "payload": payload,
        "timestamp": timestamp
    })
}

/// The legacy `plan` view of a recurring price, which subscription items still carry.
pub fn plan_of(price: &Value) -> Value {
    let recurring = &price["recurring"];
    json!({
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": price["transform_quantity"],
        "trial_period_days": null,
        "usage_type": recurring["usage_type"]
    })
}

/// A price as the API returns it: `tiers` only when expanded (Stripe omits it otherwise).
pub fn price_view(stored: &Value, expand_tiers: bool) -> Value {
    let mut p = stored.clone();
    if !expand_tiers && let Some(m) = p.as_object_mut() {
        m.remove("tiers");
    }
    p
}

pub fn subscription_item(
    id: &str,
    created: i64,
    sub_id: &str,
    price: &Value,
    quantity: Option<u64>,
    period: (i64, i64),
    metadata: Value,
) -> Value {
    json!({
        "id": id,
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": created,
        "current_period_end": period.1,
        "current_period_start": period.0,
        "discounts": [],
        "metadata": metadata,
        "plan": plan_of(price),
        "price": price_view(price, false),
        "quantity": quantity,
        "subscription": sub_id,
        "tax_rates": []
    })
}

pub struct SubscriptionInit<'a> {
    pub id: &'a str,
    pub created: i64,
    pub customer: &'a str,
    pub currency: &'a str,
    pub metadata: Value,
    pub items: Vec<Value>,
    pub status: &'a str,
}

pub fn subscription(s: SubscriptionInit<'_>) -> Value {
    json!({
        "id": s.id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": s.created,
        "billing_cycle_anchor_config": null,
        "billing_mode": {"type": "flexible", "flexible": {"proration_discounts": "included"}, "updated_at": s.created},
        "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "collection_method": "charge_automatically",
        "created": s.created,
        "currency": s.currency,
        "customer": s.customer,
        "customer_account": null,
        "days_until_due": null,
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "ended_at": null,
        "invoice_settings": {"account_tax_ids": null, "custom_fields": null, "description": null, "footer": null, "issuer": {"type": "self"}},
        "items": list(&format!("/v1/subscription_items?subscription={}", s.id), s.items, false),
        "latest_invoice": null,
        "livemode": false,
        "managed_payments": null,
        "metadata": s.metadata,
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": {
            "payment_method_options": null,
            "payment_method_types": null,
            "save_default_payment_method": "off"
        },
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "presentment_details": null,
        "schedule": null,
        "start_date": s.created,
        "status": s.status,
        "status_details": null,
        "test_clock": null,
        "transfer_data": null,
        "trial_end": null,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": null
    })
}

pub struct LineInit<'a> {
    pub id: &'a str,
    pub invoice_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub description: String,
    pub period: (i64, i64),
    pub quantity: u64,
    pub price: &'a Value,
    pub subscription: Option<&'a str>,
    pub subscription_item: Option<&'a str>,
}

pub fn invoice_line(l: LineInit<'_>) -> Value {
    let parent = match (l.subscription, l.subscription_item) {
        (Some(sub), Some(si)) => json!({
            "type": "subscription_item_details",
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": null,
                "proration": false,
                "proration_details": {"credited_items": null},
                "subscription": sub,
                "subscription_item": si
            }
        }),
        _ => json!({
            "type": "invoice_item_details",
            "invoice_item_details": {
                "invoice_item": format!("ii_{}", l.id.trim_start_matches("il_")),
                "proration": false,
                "proration_details": {"credited_items": null},
                "subscription": l.subscription
            },
            "subscription_item_details": null
        }),
    };
    json!({
        "id": l.id,
        "object": "line_item",
        "amount": l.amount,
        "currency": l.currency,
        "description": l.description,
        "discount_amounts": [],
        "discountable": true,
        "discounts": [],
        "invoice": l.invoice_id,
        "livemode": false,
        "metadata": {},
        "parent": parent,
        "period": {"start": l.period.0, "end": l.period.1},
        "pretax_credit_amounts": [],
        "pricing": {
            "type": "price_details",
            "price_details": {"price": l.price["id"], "product": l.price["product"]},
            "unit_amount_decimal": l.price["unit_amount_decimal"]
        },
        "quantity": l.quantity,
        "quantity_decimal": l.quantity.to_string(),
        "subtotal": l.amount,
        // the line's subscription, as in Stripe's invoice line item object
        // (https://docs.stripe.com/api/invoice-line-item/object#invoice_line_item_object-subscription)
        "subscription": l.subscription,
        "taxes": []
    })
}

pub struct InvoiceInit<'a> {
    pub id: &'a str,
    pub created: i64,
    pub customer: &'a Value,
    pub currency: &'a str,
    pub billing_reason: &'a str,
    pub subscription: Option<&'a str>,
    pub subscription_metadata: Value,
    pub period: (i64, i64),
    pub lines: Vec<Value>,
}

pub fn invoice(i: InvoiceInit<'_>) -> Value {
    let subtotal: i64 = i
        .lines
        .iter()
        .map(|l| l["amount"].as_i64().unwrap_or(0))
        .sum();
    let parent = match i.subscription {
        Some(sub) => json!({
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": {"metadata": i.subscription_metadata, "subscription": sub}
        }),
        None => Value::Null,
    };
    json!({
        "id": i.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "tollgate emulator",
        "account_tax_ids": null,
        "amount_due": subtotal,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": subtotal,
        "amount_shipping": 0,
        "application": null,
        "attempt_count": 0,
        "attempted": false,
        "auto_advance": true,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
        "automatically_finalizes_at": i.created + 3600,
        "billing_reason": i.billing_reason,
        "collection_method": "charge_automatically",
        "confirmation_secret": null,
        "created": i.created,
        "currency": i.currency,
        "custom_fields": null,
        "customer": i.customer["id"],
        "customer_account": null,
        "customer_address": null,
        "customer_email": i.customer["email"],
        "customer_name": i.customer["name"],
        "customer_phone": i.customer["phone"],
        "customer_shipping": null,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "due_date": null,
        "effective_at": null,
        "ending_balance": null,
        "footer": null,
        "from_invoice": null,
        "hosted_invoice_url": null,
        "invoice_pdf": null,
        "issuer": {"type": "self"},
        "last_finalization_error": null,
        "latest_revision": null,
        "lines": list(&format!("/v1/invoices/{}/lines", i.id), i.lines, false),
        "livemode": false,
        "metadata": {},
        "next_payment_attempt": null,
        "number": null,
        "on_behalf_of": null,
        "parent": parent,
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "period_end": i.period.1,
        "period_start": i.period.0,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": null,
        "rendering": null,
        "shipping_cost": null,
        "shipping_details": null,
        "starting_balance": 0,
        "statement_descriptor": null,
        "status": "draft",
        "status_transitions": {"finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null},
        "subscription": i.subscription,
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "test_clock": null,
        "total": subtotal,
        "total_discount_amounts": [],
        "total_excluding_tax": subtotal,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": null
    })
}

pub struct BalanceTxnInit<'a> {
    pub id: &'a str,
    pub created: i64,
    pub customer: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub ending_balance: i64,
    pub kind: &'a str,
    pub description: Value,
    pub invoice: Value,
    pub metadata: Value,
}

pub fn balance_transaction(t: BalanceTxnInit<'_>) -> Value {
    let BalanceTxnInit {
        id,
        created,
        customer,
        amount,
        currency,
        ending_balance,
        kind,
        description,
        invoice,
        metadata,
    } = t;
    json!({
        "id": id,
        "object": "customer_balance_transaction",
        "amount": amount,
        "checkout_session": null,
        "created": created,
        "credit_note": null,
        "currency": currency,
        "customer": customer,
        "customer_account": null,
        "description": description,
        "ending_balance": ending_balance,
        "invoice": invoice,
        "livemode": false,
        "metadata": metadata,
        "type": kind
    })
}

/// A checkout line item (`object: item`), as returned by `expand[]=line_items`.
pub fn checkout_item(
    id: &str,
    price: &Value,
    quantity: u64,
    amount: i64,
    description: &str,
) -> Value {
    json!({
        "id": id,
        "object": "item",
        "adjustable_quantity": null,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price["currency"],
        "description": description,
        "metadata": {},
        "price": price_view(price, false),
        "quantity": quantity
    })
}

pub struct SessionInit<'a> {
    pub id: &'a str,
    pub created: i64,
    pub expires_at: i64,
    pub mode: &'a str,
    pub url: String,
    pub customer: Value,
    pub customer_email: Value,
    pub currency: Value,
    pub amount: i64,
    pub metadata: Value,
    pub client_reference_id: Value,
    pub success_url: Value,
    pub cancel_url: Value,
    pub invoice_creation_enabled: bool,
}

pub fn checkout_session(s: SessionInit<'_>) -> Value {
    let invoice_creation = if s.mode == "payment" {
        json!({"enabled": s.invoice_creation_enabled, "invoice_data": {
            "account_tax_ids": null, "custom_fields": null, "description": null, "footer": null,
            "issuer": null, "metadata": null, "rendering_options": null}})
    } else {
        Value::Null
    };
    json!({
        "id": s.id,
        "object": "checkout.session",
        "adaptive_pricing": null,
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": s.amount,
        "amount_total": s.amount,
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "billing_address_collection": null,
        "cancel_url": s.cancel_url,
        "client_reference_id": s.client_reference_id,
        "client_secret": null,
        "collected_information": null,
        "consent": null,
        "consent_collection": null,
        "created": s.created,
        "currency": s.currency,
        "currency_conversion": null,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "customer": s.customer,
        "customer_account": null,
        "customer_creation": if s.mode == "payment" { json!("if_required") } else { Value::Null },
        "customer_details": null,
        "customer_email": s.customer_email,
        "discounts": [],
        "expires_at": s.expires_at,
        "integration_identifier": null,
        "invoice": null,
        "invoice_creation": invoice_creation,
        "livemode": false,
        "locale": null,
        "managed_payments": null,
        "metadata": s.metadata,
        "mode": s.mode,
        "origin_context": null,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": if s.mode == "subscription" { json!("always") } else { Value::Null },
        "payment_method_configuration_details": null,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "permissions": null,
        "phone_number_collection": {"enabled": false},
        "recovered_from": null,
        "saved_payment_method_options": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": s.success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": s.url,
        "wallet_options": null
    })
}

pub fn event(
    id: &str,
    created: i64,
    kind: &str,
    object: Value,
    previous: Option<Value>,
    request_id: Option<&str>,
    idempotency_key: Option<&str>,
) -> Value {
    let mut data = Map::new();
    data.insert("object".into(), object);
    if let Some(p) = previous {
        data.insert("previous_attributes".into(), p);
    }
    json!({
        "id": id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": kind
    })
}
