//! The one place errors become HTTP answers: a status and a JSON body
//! `{"error": {"code", "message", "field"?, "details"?}}`.

use http::StatusCode;
use serde::Serialize;
use tollgate_domain::ports::StoreError;

/// One problem with one field of the input (`records[3].timestamp: in the future`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input is malformed or a field is invalid.
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    /// 422: the input parsed but some parts are invalid; every problem is listed.
    #[error("invalid input ({} problems)", errors.len())]
    Invalid { errors: Vec<FieldError> },
    /// 401: missing or wrong credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// 402: the consumer has no prepaid credit left.
    #[error("{0}")]
    PaymentRequired(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404
    #[error("{what} not found")]
    NotFound { what: String },
    /// 409: the state changed under us; the caller may retry.
    #[error("{0}")]
    Conflict(String),
    /// 413
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 429
    #[error("{0}")]
    TooManyRequests(String),
    /// 502: Stripe or another dependency answered with an error we cannot fix here.
    #[error("upstream error: {0}")]
    Upstream(String),
    /// 503: a dependency is unavailable; retrying later helps.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug or a broken invariant. The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound { what: what.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "invalid_request",
            ApiError::Invalid { .. } => "invalid_input",
            ApiError::Unauthorized => "unauthorized",
            ApiError::PaymentRequired(_) => "no_credit",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The field a 400 is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let message = match self {
            // Never leak internals; the log has them.
            ApiError::Internal(_) => "internal error".to_string(),
            ApiError::BadRequest { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut err = serde_json::json!({ "code": self.code(), "message": message });
        match self {
            ApiError::BadRequest { field, .. } => {
                err["field"] = serde_json::Value::String(field.clone());
            }
            ApiError::Invalid { errors } => {
                err["details"] = serde_json::to_value(errors).expect("serializable");
                if let Some(first) = errors.first() {
                    err["field"] = serde_json::Value::String(first.field.clone());
                }
            }
            _ => {}
        }
        serde_json::json!({ "error": err })
    }

    /// The HTTP answer. Server-side errors are logged here, once.
    pub fn into_response(self) -> http::Response<String> {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        json_response(self.status(), &self.body())
    }
}

/// A JSON answer with the given status.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> http::Response<String> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_string(body).expect("serializable"))
        .expect("valid response")
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            StoreError::TooLarge(_) | StoreError::Corrupt(_) | StoreError::Invalid(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

/// Every attempt of a read-decide-commit lost a version race: 409, the caller may retry.
impl From<crate::subscriptions::Contended> for ApiError {
    fn from(e: crate::subscriptions::Contended) -> Self {
        ApiError::Conflict(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_names_the_field_and_hides_internals() {
        let r = ApiError::bad_request("records[2].meter", "unknown meter \"foo\"").into_response();
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(v["error"]["field"], "records[2].meter");
        assert_eq!(v["error"]["code"], "invalid_request");

        let r = ApiError::Internal("dynamo said xyz".into()).into_response();
        assert_eq!(r.status(), 500);
        assert!(!r.body().contains("xyz"));

        let r = ApiError::Invalid {
            errors: vec![FieldError {
                field: "records[0].value".into(),
                message: "must be positive".into(),
            }],
        }
        .into_response();
        let v: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(v["error"]["details"][0]["field"], "records[0].value");
    }
}
