//! The API Gateway Lambda authorizer (REQUEST type) on the provider's API: reads the API key
//! header, asks the one-read entitlement check, and allows or denies with the subscription,
//! product, rate limit and reason in the context.
//!
//! Both API Gateway flavours are answered:
//! - REST APIs (payload v1, `methodArn`): an IAM policy. A missing key fails with the message
//!   `Unauthorized`, which API Gateway turns into 401; a refused key is a Deny, which API
//!   Gateway answers with its `ACCESS_DENIED` gateway response (403). Its status is fixed per
//!   response type, so the template maps the body to carry `$context.authorizer.reason` and
//!   `$context.authorizer.status` (402 / 429 / 403) for clients; see `docs/usage.md`.
//! - HTTP APIs (payload 2.0 with simple responses): `{"isAuthorized", "context"}`.
//!
//! Cache the authorizer's result for 0 s (or a few): a cached Allow would outlive a 402 and a
//! cached Deny a top-up, which is the propagation delay this design exists to avoid.

use lambda_runtime::LambdaEvent;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tollgate_app::credit::CreditStore;
use tollgate_domain::Catalog;
use tollgate_domain::entitlement::Entitlement;
use tollgate_domain::ports::StoreError;
use tollgate_domain::time::Clock;

pub struct Authorizer {
    store: Arc<dyn CreditStore>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    /// The header carrying the API key (`API_KEY_HEADER`, default `x-api-key`).
    header: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    /// API Gateway answers 401 for exactly this message.
    #[error("Unauthorized")]
    Unauthorized,
    /// Fail closed: API Gateway answers 500 (`AUTHORIZER_FAILURE`), never lets the call in.
    #[error("entitlement store unavailable: {0}")]
    Store(#[from] StoreError),
}

/// `errorMessage` is what API Gateway reads: exactly `Unauthorized` means 401.
impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(e: AuthorizerError) -> Self {
        let error_type = match e {
            AuthorizerError::Unauthorized => "Unauthorized",
            AuthorizerError::Store(_) => "StoreUnavailable",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

impl Authorizer {
    pub fn new(
        store: Arc<dyn CreditStore>,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        header: impl Into<String>,
    ) -> Self {
        Self {
            store,
            catalog,
            clock,
            header: header.into().to_ascii_lowercase(),
        }
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, AuthorizerError> {
        self.authorize(&event.payload).await
    }

    /// The authorizer's answer to one API Gateway request event.
    pub async fn authorize(&self, request: &Value) -> Result<Value, AuthorizerError> {
        let v2 = request.get("version").and_then(Value::as_str) == Some("2.0");
        let Some(key) = header(request, &self.header) else {
            if v2 {
                return Ok(
                    json!({"isAuthorized": false, "context": {"reason": "missing_key", "status": 401}}),
                );
            }
            return Err(AuthorizerError::Unauthorized);
        };
        // Only a well-formed key is a credential: anything else (a bare SHA-256 of a key, which
        // the table stores, included) is denied without a read.
        let e = match tollgate_app::entitlement::key_hash(&key) {
            Some(hash) => {
                tollgate_app::entitlement::check(
                    self.store.as_ref(),
                    &self.catalog,
                    &hash,
                    self.clock.now(),
                )
                .await?
            }
            None => Entitlement::unknown_key(),
        };
        let context = context(&e);
        if v2 {
            return Ok(json!({"isAuthorized": e.allow, "context": context}));
        }
        let method_arn = request
            .get("methodArn")
            .and_then(Value::as_str)
            .unwrap_or("*");
        Ok(json!({
            "principalId": e.subscription_id.as_ref().map_or("anonymous", |s| s.as_str()),
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Action": "execute-api:Invoke",
                    "Effect": if e.allow { "Allow" } else { "Deny" },
                    "Resource": api_wide(method_arn),
                }]
            },
            "context": context,
        }))
    }
}

/// `arn:...:api/stage/GET/x` → `arn:...:api/stage/*/*`: one decision covers the whole API, so
/// a cached Allow for one route does not become a Deny for the next.
fn api_wide(method_arn: &str) -> String {
    let mut parts = method_arn.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(api), Some(stage)) => format!("{api}/{stage}/*/*"),
        _ => method_arn.to_string(),
    }
}

/// Authorizer context values must be strings, numbers or booleans.
fn context(e: &Entitlement) -> Value {
    let mut m = Map::new();
    m.insert("allow".into(), json!(e.allow));
    m.insert("reason".into(), json!(e.reason));
    m.insert("status".into(), json!(e.status));
    if let Some(s) = &e.subscription_id {
        m.insert("subscription_id".into(), json!(s.as_str()));
    }
    if let Some(c) = &e.consumer_id {
        m.insert("consumer_id".into(), json!(c.as_str()));
    }
    if let Some(p) = &e.product_id {
        m.insert("product_id".into(), json!(p.as_str()));
    }
    if let Some(r) = e.rate_limit_per_minute {
        m.insert("rate_limit_per_minute".into(), json!(r));
    }
    if let Some(q) = e.quota_limit {
        m.insert("quota_limit".into(), json!(q));
    }
    Value::Object(m)
}

/// A header's value, names compared case-insensitively (v1 keeps the client's case, v2
/// lowercases).
fn header(request: &Value, name: &str) -> Option<String> {
    let find = |map: Option<&Value>| -> Option<Value> {
        map?.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match find(request.get("headers")) {
        Some(Value::String(s)) => Some(s),
        _ => match find(request.get("multiValueHeaders")) {
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(String::from),
            _ => None,
        },
    }
    .filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_arns() {
        let r = json!({"headers": {"X-Api-Key": "tg_1"}});
        assert_eq!(header(&r, "x-api-key").as_deref(), Some("tg_1"));
        let r = json!({"multiValueHeaders": {"x-api-key": ["tg_2"]}});
        assert_eq!(header(&r, "x-api-key").as_deref(), Some("tg_2"));
        assert_eq!(
            header(&json!({"headers": {"x-api-key": " "}}), "x-api-key"),
            None
        );
        assert_eq!(
            api_wide("arn:aws:execute-api:us-east-1:123:abc/prod/GET/forecast/today"),
            "arn:aws:execute-api:us-east-1:123:abc/prod/*/*"
        );
    }
}
