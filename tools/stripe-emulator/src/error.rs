//! Stripe-shaped API errors: `{"error": {"type", "code", "message", "param"}}`.

use axum::http::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("parameter_invalid"),
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn missing(param: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("parameter_missing"),
            message: format!("Missing required param: {param}."),
            param: Some(param.to_string()),
        }
    }

    pub fn unknown_param(param: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("parameter_unknown"),
            message: format!("Received unknown parameter: {param}"),
            param: Some(param.to_string()),
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// `resource_missing`. Stripe answers 404 when the object is named in the URL path
    /// (`param` = `id`) and 400 when it is referenced by a request parameter such as
    /// `line_items[0][price]` (https://docs.stripe.com/error-codes#resource-missing, "The ID
    /// provided is not valid… the resource doesn't exist").
    pub fn no_such(kind: &str, id: &str, param: &str) -> Self {
        Self {
            status: if param == "id" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            },
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {kind}: '{id}'"),
            param: Some(param.to_string()),
        }
    }

    pub fn unrecognized_url(method: &str, path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: None,
            message: format!("Unrecognized request URL ({method}: {path})."),
            param: None,
        }
    }

    pub fn idempotency_mismatch(key: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "idempotency_error",
            code: None,
            message: format!(
                "Keys for idempotent requests can only be used with the same parameters they were \
                 first used with. Try using a key other than '{key}' if you meant to execute a \
                 different request."
            ),
            param: None,
        }
    }

    pub fn card_declined() -> Self {
        Self {
            status: StatusCode::PAYMENT_REQUIRED,
            kind: "card_error",
            code: Some("card_declined"),
            message: "Your card was declined.".into(),
            param: None,
        }
    }

    pub fn unauthenticated() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: None,
            message: "You did not provide an API key.".into(),
            param: None,
        }
    }

    /// Stripe's 401 for a key it does not know: the key is shown masked, and there is no code
    /// (https://docs.stripe.com/error-codes, "Invalid API Key provided").
    pub fn invalid_api_key(key: &str) -> Self {
        let shown: String = key.chars().take(8).collect();
        let tail: String = key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: None,
            message: format!("Invalid API Key provided: {shown}********{tail}"),
            param: None,
        }
    }

    pub fn injected(status: StatusCode) -> Self {
        let (kind, code, message) = if status == StatusCode::TOO_MANY_REQUESTS {
            (
                "invalid_request_error",
                Some("rate_limit"),
                "Request rate limit exceeded.",
            )
        } else {
            (
                "api_error",
                None,
                "An unknown error occurred (injected by the emulator).",
            )
        };
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn body(&self) -> Value {
        let mut e = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            e["code"] = json!(code);
        }
        if let Some(param) = &self.param {
            e["param"] = json!(param);
        }
        if self.kind == "card_error" {
            e["decline_code"] = json!("generic_decline");
        }
        json!({ "error": e })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
