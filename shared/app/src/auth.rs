//! Bearer-secret authentication of the portal and the gateway.
//!
//! Comparison is constant-time over SHA-256 digests of both sides, so neither the content nor
//! the length of the secret leaks through timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// True when the `Authorization: Bearer <token>` header carries exactly `secret`.
pub fn bearer_matches(headers: &http::HeaderMap, secret: &str) -> bool {
    let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(token.trim().as_bytes(), secret.as_bytes())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(da.ct_eq(&db))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_checks() {
        assert!(bearer_matches(&headers("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(&headers("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(&headers("Bearer s3cret2"), "s3cret"));
        assert!(!bearer_matches(&headers("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(&http::HeaderMap::new(), "s3cret"));
    }
}
