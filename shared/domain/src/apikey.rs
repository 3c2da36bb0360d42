//! API keys: `tg_` + 64 lowercase hex characters (32 random bytes from the OS-seeded CSPRNG).
//!
//! A key is shown to its owner exactly once, when it is issued; tollgate keeps only its
//! SHA-256 ([`ApiKeyHash`]) and a short display prefix. SHA-256 without a salt is enough here
//! (unlike passwords): a key has 256 bits of entropy, so the hash cannot be brute-forced, and an
//! unsalted hash lets the authorizer find the key with one `GetItem` on the hash.

use crate::ids::ApiKeyHash;
use std::fmt;

/// Every key starts with this, so a leaked key is recognisable (secret scanners) and a
/// gateway can reject anything else without a lookup.
pub const KEY_PREFIX: &str = "tg_";
/// Random bytes per key.
const KEY_BYTES: usize = 32;
/// Length of a key: prefix + hex of the random bytes.
pub const KEY_LEN: usize = KEY_PREFIX.len() + 2 * KEY_BYTES;
/// Characters of the key kept for display ("tg_3f9a1c…"): 6 hex chars identify a key among a
/// consumer's few without weakening it.
const DISPLAY_LEN: usize = KEY_PREFIX.len() + 6;

/// A freshly issued key. Its `Debug` and `Display` never print the secret part.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    secret: String,
}

impl NewApiKey {
    /// Generates a new random key.
    pub fn generate() -> Self {
        let bytes: [u8; KEY_BYTES] = rand::random();
        Self {
            secret: format!("{KEY_PREFIX}{}", hex::encode(bytes)),
        }
    }

    /// The key itself: hand it to the consumer once, never store or log it.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// What is stored.
    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash::of_key(&self.secret)
    }

    /// What may be shown later ("tg_3f9a1c").
    pub fn display_prefix(&self) -> String {
        self.secret[..DISPLAY_LEN].to_string()
    }
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewApiKey({}…)", self.display_prefix())
    }
}

impl fmt::Display for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.display_prefix())
    }
}

/// Whether `s` has the shape of a tollgate key. A cheap check before any lookup, so junk from
/// the internet never reaches DynamoDB.
pub fn looks_like_key(s: &str) -> bool {
    s.len() == KEY_LEN
        && s.starts_with(KEY_PREFIX)
        && s[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_have_the_documented_shape() {
        let k = NewApiKey::generate();
        let s = k.expose_secret();
        assert_eq!(s.len(), KEY_LEN);
        assert_eq!(KEY_LEN, 67);
        assert!(s.starts_with("tg_"));
        assert!(looks_like_key(s));
        assert_eq!(k.display_prefix(), &s[..9]);
    }

    #[test]
    fn keys_are_random() {
        let keys: HashSet<String> = (0..1000)
            .map(|_| NewApiKey::generate().expose_secret().to_string())
            .collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn only_the_hash_is_derived_and_it_matches_the_key() {
        let k = NewApiKey::generate();
        assert_eq!(k.hash(), ApiKeyHash::of_key(k.expose_secret()));
        assert!(!k.hash().as_str().contains(&k.expose_secret()[3..]));
    }

    #[test]
    fn debug_and_display_do_not_leak_the_key() {
        let k = NewApiKey::generate();
        let secret_part = &k.expose_secret()[DISPLAY_LEN..];
        assert!(!format!("{k:?}").contains(secret_part));
        assert!(!format!("{k}").contains(secret_part));
    }

    #[test]
    fn junk_does_not_look_like_a_key() {
        let good = NewApiKey::generate().expose_secret().to_string();
        assert!(looks_like_key(&good));
        assert!(!looks_like_key(""));
        assert!(!looks_like_key(&good[..KEY_LEN - 1]));
        assert!(!looks_like_key(&good.replace("tg_", "sk_")));
        assert!(!looks_like_key(&format!("tg_{}", "G".repeat(64))));
        assert!(!looks_like_key(&good.to_uppercase()));
    }
}
