//! `POST /consumers/{consumer_id}/credit/adjustments`: an operator's goodwill grant or
//! deduction of prepaid credit (seed 004's "the provider gives a customer credit, then deducts
//! it to zero, and the next call gets 402"). The rule lives in the application layer
//! (`tollgate_app::credit::apply_credit_adjustment`); this module is decode → call → encode.

use crate::Checkout;
use http::StatusCode;
use serde::Deserialize;
use tollgate_app::credit::{
    CreditAdjustmentRequest, CreditError, MAX_REASON_LEN, apply_credit_adjustment,
};
use tollgate_app::{ApiError, json::parse_body};
use tollgate_domain::ids::{ConsumerId, check_id};
use tollgate_domain::money::MinorUnits;

/// Longest idempotency key (Stripe's limit for its own keys).
const MAX_KEY_LEN: usize = 255;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustmentBody {
    /// Minor units; positive grants, negative takes back.
    amount: MinorUnits,
    /// Why (kept with the movement).
    reason: String,
    /// The operator's key for this intent (1–255 chars of `[A-Za-z0-9_.:-]`).
    idempotency_key: String,
}

impl Checkout {
    pub(crate) async fn adjust_credit(
        &self,
        consumer: &str,
        body: &[u8],
    ) -> Result<http::Response<String>, ApiError> {
        let consumer_id = ConsumerId::parse(consumer)
            .map_err(|e| ApiError::bad_request("consumer_id", e.to_string()))?;
        let b: AdjustmentBody = parse_body(body)?;
        check_id(&b.idempotency_key, MAX_KEY_LEN)
            .map_err(|e| ApiError::bad_request("idempotency_key", e.to_string()))?;
        let reason = b.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON_LEN {
            return Err(ApiError::bad_request(
                "reason",
                format!("must say why, in 1 to {MAX_REASON_LEN} bytes"),
            ));
        }
        let request = CreditAdjustmentRequest {
            consumer_id: consumer_id.clone(),
            amount: b.amount,
            reason: reason.to_string(),
            idempotency_key: b.idempotency_key.clone(),
        };
        let outcome = apply_credit_adjustment(
            self.store.as_ref(),
            &self.catalog,
            &request,
            self.credit_policy,
            self.clock.now(),
        )
        .await
        .map_err(|e| match e {
            CreditError::ZeroAdjustment | CreditError::NotPositive(_) => {
                ApiError::bad_request("amount", e.to_string())
            }
            CreditError::KeyReused(_) => ApiError::Conflict(e.to_string()),
            CreditError::Contended(_) => ApiError::Unavailable(e.to_string()),
            CreditError::Store(e) => e.into(),
        })?;
        if !outcome.events.is_empty() {
            // The adjustment is committed; a lost alert is logged, not a failed request.
            if let Err(e) = self.publisher.publish(&outcome.events).await {
                tracing::error!(error = %e, count = outcome.events.len(), "domain events not published");
            }
        }
        let status = if outcome.newly_applied {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(tollgate_app::error::json_response(
            status,
            &serde_json::json!({
                "consumer_id": consumer_id,
                "idempotency_key": b.idempotency_key,
                "requested": b.amount,
                "applied": outcome.applied,
                "balance": outcome.balance,
                "replayed": !outcome.newly_applied,
            }),
        ))
    }
}
