//! Money is integer minor units (cents for USD). Decimals appear only for sub-cent unit
//! prices (Stripe's `unit_amount_decimal`) and are rounded to minor units exactly once, where
//! Stripe rounds (see `pricing`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in the currency's minor unit (cents). Signed: credits and refunds are negative.
pub type MinorUnits = i64;

/// ISO 4217 currency code, lowercase as Stripe writes it (`usd`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if s.len() == 3 && s.chars().all(|c| c.is_ascii_lowercase()) {
            Ok(Self(s))
        } else {
            Err(format!(
                "must be a lowercase ISO 4217 code such as \"usd\" (found {s:?})"
            ))
        }
    }
    pub fn usd() -> Self {
        Self("usd".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(s)
    }
}
impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl schemars::JsonSchema for Currency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[a-z]{3}$"})
    }
}
