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
    /// The secret is set but cannot be what it names (no `whsec_` prefix on a webhook signing
    /// secret, no `sk_`/`rk_` on a Stripe key, empty after trimming). The message names the
    /// expected form, never the value.
    #[error("secret {name} is malformed: {message}")]
    Malformed { name: &'static str, message: String },
}

/// The prefixes a secret's value must start with, by the secret's name: Stripe's secret and
/// restricted keys are `sk_...` / `rk_...` (<https://docs.stripe.com/keys>), a webhook
/// endpoint's signing secret is `whsec_...` (<https://docs.stripe.com/webhooks#verify-events>).
/// Other secrets (the portal and gateway bearer secrets) have no required form.
pub fn expected_prefixes(name: &str) -> &'static [&'static str] {
    match name {
        "STRIPE_SECRET_KEY" => &["sk_", "rk_"],
        "STRIPE_WEBHOOK_SECRET" => &["whsec_"],
        _ => &[],
    }
}

/// A secret's value as it must be used: surrounding whitespace removed (a value pasted with a
/// trailing newline is the common case), then checked against [`expected_prefixes`].
///
/// Errors: [`ConfigError::Malformed`] when nothing is left after trimming or the value lacks
/// the expected prefix.
pub fn clean_secret(name: &'static str, raw: &str) -> Result<SecretString, ConfigError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(ConfigError::Malformed {
            name,
            message: "the value is empty (or only whitespace)".into(),
        });
    }
    let prefixes = expected_prefixes(name);
    if !prefixes.is_empty() && !prefixes.iter().any(|p| value.starts_with(p)) {
        return Err(ConfigError::Malformed {
            name,
            message: format!(
                "the value must start with {} ({} characters given)",
                prefixes.join(" or "),
                value.chars().count()
            ),
        });
    }
    Ok(SecretString::from(value.to_string()))
}

/// A secret given directly (`NAME`) or by Secrets Manager ARN (`NAME_ARN`, fetched lazily).
#[derive(Clone)]
pub struct Secret {
    name: &'static str,
    source: SecretSource,
    cached: Arc<OnceCell<SecretString>>,
    /// Set once a malformed value was logged, so a broken configuration is one log line per
    /// container, not one per request.
    reported: Arc<std::sync::atomic::AtomicBool>,
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
            reported: Arc::default(),
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
            reported: Arc::default(),
        }
    }

    pub fn is_set(&self) -> bool {
        !matches!(self.source, SecretSource::Unset)
    }

    /// The secret's value, trimmed and checked ([`clean_secret`]), fetched from Secrets Manager
    /// on first use and then cached for the life of the Lambda container.
    ///
    /// Errors: [`ConfigError::Missing`] when unset, [`ConfigError::Secret`] when Secrets Manager
    /// cannot be read, [`ConfigError::Malformed`] when the value is not of the form its name
    /// requires (logged at error level the first time only).
    pub async fn get(&self) -> Result<SecretString, ConfigError> {
        let result = match &self.source {
            SecretSource::Value(v) => clean_secret(self.name, v.expose_secret()),
            SecretSource::Unset => Err(ConfigError::Missing(self.name)),
            SecretSource::SecretsManager { arn } => self
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
                    let raw = out.secret_string().ok_or(ConfigError::Secret {
                        name: self.name,
                        message: "secret has no string value".into(),
                    })?;
                    clean_secret(self.name, raw)
                })
                .await
                .cloned(),
        };
        if let Err(e @ ConfigError::Malformed { .. }) = &result
            && !self
                .reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(secret = self.name, error = %e, "configuration error");
        }
        result
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
            reported: Arc::default(),
        };
        assert!(!unset.is_set());
        assert!(matches!(unset.get().await, Err(ConfigError::Missing("X"))));
    }

    #[tokio::test]
    async fn secrets_are_trimmed_when_read() {
        for (name, raw, want) in [
            ("STRIPE_WEBHOOK_SECRET", "whsec_abc\n", "whsec_abc"),
            ("STRIPE_WEBHOOK_SECRET", "  whsec_abc\r\n", "whsec_abc"),
            ("STRIPE_SECRET_KEY", "sk_live_x\n", "sk_live_x"),
            ("STRIPE_SECRET_KEY", "\trk_test_y ", "rk_test_y"),
            ("PORTAL_SECRET", "anything goes\n", "anything goes"),
        ] {
            let got = Secret::from_value(name, raw).get().await.unwrap();
            assert_eq!(got.expose_secret(), want, "{name} {raw:?}");
        }
    }

    #[tokio::test]
    async fn a_malformed_secret_is_a_configuration_error_naming_the_form() {
        for (name, raw, expect) in [
            ("STRIPE_WEBHOOK_SECRET", "abc123", "whsec_"),
            ("STRIPE_WEBHOOK_SECRET", "sk_test_wrong_secret", "whsec_"),
            ("STRIPE_SECRET_KEY", "whsec_swapped", "sk_ or rk_"),
            ("STRIPE_SECRET_KEY", "pk_live_publishable", "sk_ or rk_"),
            ("GATEWAY_SECRET", " \n", "empty"),
        ] {
            let s = Secret::from_value(name, raw);
            let err = s.get().await.unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Malformed { .. }), "{msg}");
            assert!(msg.contains(name) && msg.contains(expect), "{msg}");
            assert!(
                !msg.contains(raw.trim()) || raw.trim().is_empty(),
                "value leaked: {msg}"
            );
            // Every use fails the same way; the log line is written once.
            assert!(s.get().await.is_err());
            assert!(s.reported.load(std::sync::atomic::Ordering::Relaxed));
        }
    }

    #[tokio::test]
    async fn a_malformed_secret_is_logged_once() {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let s = Secret::from_value("STRIPE_WEBHOOK_SECRET", "not-a-signing-secret\n");
        for _ in 0..3 {
            assert!(s.get().await.is_err());
        }
        let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.matches("configuration error").count(), 1, "{logged}");
        assert!(logged.contains("STRIPE_WEBHOOK_SECRET") && logged.contains("whsec_"));
        assert!(
            !logged.contains("not-a-signing-secret"),
            "value leaked: {logged}"
        );
    }
}
