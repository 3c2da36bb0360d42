//! Small conversions between Stripe's wire values and domain values.

use std::str::FromStr;
use tollgate_domain::ports::PaymentsError;
use tollgate_domain::time::Timestamp;
use tollgate_domain::{Currency, StripeId};

pub(crate) fn stripe_id(id: &str) -> Result<StripeId, PaymentsError> {
    StripeId::parse(id).map_err(|e| PaymentsError::Unexpected(format!("Stripe id {id:?}: {e}")))
}

pub(crate) fn timestamp(secs: i64) -> Result<Timestamp, PaymentsError> {
    Timestamp::from_timestamp(secs, 0)
        .ok_or_else(|| PaymentsError::Unexpected(format!("timestamp {secs} out of range")))
}

pub(crate) fn currency(c: &Currency) -> Result<stripe_types::Currency, PaymentsError> {
    match stripe_types::Currency::from_str(c.as_str()) {
        Ok(stripe_types::Currency::Unknown(_)) | Err(_) => Err(PaymentsError::Unsupported(
            format!("currency {c} is not one Stripe knows"),
        )),
        Ok(cur) => Ok(cur),
    }
}
