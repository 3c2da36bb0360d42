//! Identifiers: typed values that cannot hold bad data (zero2prod's `parse` constructors).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("may contain only letters, digits and `_ - . :` (found {found:?})")]
    BadChar { found: char },
}

/// Checks the shared identifier rule: 1..=max chars of `[A-Za-z0-9_.:-]`.
///
/// The character set keeps ids safe inside DynamoDB keys (`#` is our key separator), Stripe
/// metadata and lookup keys, and URLs without escaping.
pub fn check_id(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.chars().count() > max {
        return Err(IdError::TooLong { max });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(IdError::BadChar { found });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $max:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id(&s, $max)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": "^[A-Za-z0-9_.:-]+$"
                })
            }
        }
    };
}

id_type!(
    /// The provider's own id for an API consumer (developer or organisation).
    ConsumerId, 128
);
id_type!(
    /// A product of the catalog (`standard`, `payg`, ...).
    ProductId, 64
);
id_type!(
    /// A meter of the catalog (`api_calls`, `data_bytes`).
    MeterId, 64
);
id_type!(
    /// A price component's key inside a product (`base`, `calls`, `setup`).
    PriceKey, 64
);
id_type!(
    /// tollgate's own subscription id (`sub_` + random); Stripe's id is kept beside it.
    SubscriptionId, 128
);
id_type!(
    /// An id in Stripe (`cus_...`, `sub_...`, `cs_...`, `evt_...`): opaque to the domain.
    StripeId, 255
);

/// SHA-256 of an API key, hex. Only the hash is ever stored; the key is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    pub fn of_key(key: &str) -> Self {
        use sha2::Digest;
        Self(hex::encode(sha2::Sha256::digest(key.as_bytes())))
    }
    /// Wraps a stored hash (64 lowercase hex chars).
    pub fn from_hex(h: impl Into<String>) -> Result<Self, IdError> {
        let h = h.into();
        if h.len() != 64 {
            return Err(IdError::TooLong { max: 64 });
        }
        if let Some(found) = h.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(IdError::BadChar { found });
        }
        Ok(Self(h))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_bad_input() {
        assert_eq!(ProductId::parse(""), Err(IdError::Empty));
        assert_eq!(
            ProductId::parse("a#b"),
            Err(IdError::BadChar { found: '#' })
        );
        assert!(matches!(
            ProductId::parse("x".repeat(65)),
            Err(IdError::TooLong { max: 64 })
        ));
        assert_eq!(ProductId::parse("pro-2").unwrap().as_str(), "pro-2");
        let err = serde_json::from_str::<ProductId>("\"a b\"").unwrap_err();
        assert!(err.to_string().contains("may contain only"));
    }

    #[test]
    fn api_key_hash_is_sha256_hex() {
        let h = ApiKeyHash::of_key("tg_live_abc");
        assert_eq!(h.as_str().len(), 64);
        assert_eq!(ApiKeyHash::from_hex(h.as_str()).unwrap(), h);
        assert_ne!(h, ApiKeyHash::of_key("tg_live_abd"));
    }
}
