//! One typed configuration, read from the environment once at init. Secrets are never in the
//! environment in AWS: the template passes Secrets Manager ARNs (`*_ARN`), resolved on first
//! use and cached, so init makes no network call. Locally and in tests the plain variable
//! (`STRIPE_SECRET_KEY`, ...) may carry the value instead.

use crate::aws::load_sdk_config;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::OnceCell;
use tollgate_domain::Catalog;

/// The catalog compiled into every function: catalog as code, no file to ship, no I/O at init.
/// It is the provider's `catalog.json` at the repository root (or `TOLLGATE_CATALOG_FILE` at
/// build time, see `build.rs`); `examples/catalog.json` is the demo's. `TOLLGATE_CATALOG` (a
/// path) overrides it at run time, for the local stack and tests.
pub const EMBEDDED_CATALOG: &str = include_str!(concat!(env!("OUT_DIR"), "/catalog.json"));

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("secret {name}: {message}")]
    Secret { name: &'static str, message: String },
}

/// A secret given directly (`NAME`) or by Secrets Manager ARN (`NAME_ARN`, fetched lazily).
#[derive(Clone)]
pub struct Secret {
    name: &'static str,
    source: SecretSource,
    cached: Arc<OnceCell<SecretString>>,
}

#[derive(Clone)]
enum SecretSource {
    Value(SecretString),
    SecretsManager { arn: String },
    Unset,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.source {
            SecretSource::Value(_) => "value",
            SecretSource::SecretsManager { .. } => "secrets-manager",
            SecretSource::Unset => "unset",
        };
        write!(f, "Secret({}, {how})", self.name)
    }
}

impl Secret {
    pub fn from_value(name: &'static str, value: impl Into<String>) -> Self {
        Self {
            name,
            source: SecretSource::Value(SecretString::from(value.into())),
            cached: Arc::default(),
        }
    }

    fn from_env(name: &'static str, arn_name: &'static str) -> Self {
        let source = match (std::env::var(name), std::env::var(arn_name)) {
            (Ok(v), _) if !v.is_empty() => SecretSource::Value(SecretString::from(v)),
            (_, Ok(arn)) if !arn.is_empty() => SecretSource::SecretsManager { arn },
            _ => SecretSource::Unset,
        };
        Self {
            name,
            source,
            cached: Arc::default(),
        }
    }

    pub fn is_set(&self) -> bool {
        !matches!(self.source, SecretSource::Unset)
    }

    /// The secret's value, fetched from Secrets Manager on first use and then cached for the
    /// life of the Lambda container.
    pub async fn get(&self) -> Result<SecretString, ConfigError> {
        match &self.source {
            SecretSource::Value(v) => Ok(v.clone()),
            SecretSource::Unset => Err(ConfigError::Missing(self.name)),
            SecretSource::SecretsManager { arn } => {
                let v = self
                    .cached
                    .get_or_try_init(|| async {
                        let sdk = load_sdk_config().await;
                        let client = aws_sdk_secretsmanager::Client::new(&sdk);
                        let out = client
                            .get_secret_value()
                            .secret_id(arn)
                            .send()
                            .await
                            .map_err(|e| ConfigError::Secret {
                                name: self.name,
                                message: aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                                    .to_string(),
                            })?;
                        out.secret_string()
                            .map(|s| SecretString::from(s.to_string()))
                            .ok_or(ConfigError::Secret {
                                name: self.name,
                                message: "secret has no string value".into(),
                            })
                    })
                    .await?;
                Ok(v.clone())
            }
        }
    }

    /// For code that needs the value as `&str` briefly.
    pub async fn with<R>(&self, f: impl FnOnce(&str) -> R) -> Result<R, ConfigError> {
        let s = self.get().await?;
        Ok(f(s.expose_secret()))
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// DynamoDB table (`TABLE_NAME`).
    pub table_name: String,
    /// EventBridge bus for domain events (`EVENT_BUS_NAME`, default `default`).
    pub event_bus_name: String,
    /// Stripe API base URL (`STRIPE_API_BASE`, default Stripe's); the emulator's URL locally.
    pub stripe_api_base: Option<String>,
    pub stripe_secret_key: Secret,
    pub stripe_webhook_secret: Secret,
    pub portal_secret: Secret,
    pub gateway_secret: Secret,
    /// Allowed prefixes of checkout success/cancel URLs (`RETURN_URL_ALLOWLIST`, comma-separated).
    pub return_url_allowlist: Vec<String>,
    /// Prepaid balance below which CreditsLow is published, minor units (`CREDIT_LOW_THRESHOLD`, default 200).
    pub credit_low_threshold: i64,
    /// How far below zero a prepaid balance may go, minor units (`CREDIT_OVERDRAFT_FLOOR`, default 0).
    pub credit_overdraft_floor: i64,
    pub catalog: Arc<Catalog>,
}

impl Settings {
    /// Reads every setting. Cheap (no network), so functions call it at init.
    pub fn from_env() -> Result<Self, ConfigError> {
        let table_name =
            std::env::var("TABLE_NAME").map_err(|_| ConfigError::Missing("TABLE_NAME"))?;
        let catalog = match std::env::var("TOLLGATE_CATALOG") {
            Ok(path) if !path.is_empty() => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                    name: "TOLLGATE_CATALOG",
                    message: format!("{path}: {e}"),
                })?;
                parse_catalog(&text, "TOLLGATE_CATALOG")?
            }
            _ => parse_catalog(EMBEDDED_CATALOG, "embedded catalog")?,
        };
        Ok(Self {
            table_name,
            event_bus_name: env_or("EVENT_BUS_NAME", "default"),
            stripe_api_base: std::env::var("STRIPE_API_BASE")
                .ok()
                .filter(|s| !s.is_empty()),
            stripe_secret_key: Secret::from_env("STRIPE_SECRET_KEY", "STRIPE_SECRET_ARN"),
            stripe_webhook_secret: Secret::from_env(
                "STRIPE_WEBHOOK_SECRET",
                "STRIPE_WEBHOOK_SECRET_ARN",
            ),
            portal_secret: Secret::from_env("PORTAL_SECRET", "PORTAL_SECRET_ARN"),
            gateway_secret: Secret::from_env("GATEWAY_SECRET", "GATEWAY_SECRET_ARN"),
            return_url_allowlist: env_or("RETURN_URL_ALLOWLIST", "")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            credit_low_threshold: env_i64("CREDIT_LOW_THRESHOLD", 200)?,
            credit_overdraft_floor: env_i64("CREDIT_OVERDRAFT_FLOOR", 0)?,
            catalog: Arc::new(catalog),
        })
    }
}

fn parse_catalog(text: &str, name: &'static str) -> Result<Catalog, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::Invalid {
        name,
        message: e.to_string(),
    })
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_i64(name: &'static str, default: i64) -> Result<i64, ConfigError> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            message: format!("{v:?} is not a whole number"),
        }),
        Err(_) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses() {
        let c = parse_catalog(EMBEDDED_CATALOG, "embedded").unwrap();
        assert!(c.product("free").is_some());
    }

    #[test]
    fn the_deployed_catalog_is_the_providers_file_not_the_example() {
        // Built without TOLLGATE_CATALOG_FILE (as CI builds): the repository's catalog.json.
        if std::env::var_os("TOLLGATE_CATALOG_FILE").is_none() {
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalog.json");
            assert_eq!(EMBEDDED_CATALOG, std::fs::read_to_string(root).unwrap());
        }
    }

    #[tokio::test]
    async fn secret_by_value_and_unset() {
        let s = Secret::from_value("PORTAL_SECRET", "abc");
        assert_eq!(s.with(|v| v.len()).await.unwrap(), 3);
        let unset = Secret {
            name: "X",
            source: SecretSource::Unset,
            cached: Arc::default(),
        };
        assert!(!unset.is_set());
        assert!(matches!(unset.get().await, Err(ConfigError::Missing("X"))));
    }
}
