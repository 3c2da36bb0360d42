//! Stripe's webhook signature: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`,
//! where each `v1` is HMAC-SHA256(endpoint secret, "{t}.{raw body}").
//!
//! - The HMAC is computed over the raw body bytes exactly as received (lambda_http has already
//!   undone API Gateway's base64); re-serialised JSON would not match.
//! - Several `v1` values appear while an endpoint secret is being rolled: any one may match.
//! - Timestamps more than [`TOLERANCE_SECS`] away from now are refused, so a captured request
//!   cannot be replayed later (Stripe's libraries use the same 300 s).
//! - Comparison is constant-time (`Mac::verify_slice`), so a forger learns nothing from timing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's default tolerance.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    #[error("timestamp {timestamp} is more than {TOLERANCE_SECS} s away from now ({now})")]
    OutsideTolerance { timestamp: i64, now: i64 },
    #[error("no v1 signature matches")]
    Mismatch,
}

/// Verifies `header` for `body` with `secret` at time `now` (unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let mut timestamp: Option<&str> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("expected key=value pairs"));
        };
        match k {
            "t" => timestamp = Some(v),
            // A v1 that is not hex cannot match; skip it rather than fail, as Stripe's
            // libraries do, so a future encoding next to a valid one does not break us.
            "v1" => candidates.extend(hex::decode(v).ok()),
            // v0 (test-mode legacy) and unknown schemes are ignored.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t= timestamp"))?;
    let t: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::Malformed("t= is not a whole number"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    // abs_diff cannot overflow: a hostile t= (i64::MIN, i64::MAX) is simply far from now.
    if now.abs_diff(t) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance { timestamp: t, now });
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Check every candidate, even after a match, so timing does not reveal which matched.
    let matched = candidates
        .iter()
        .fold(false, |ok, sig| mac.clone().verify_slice(sig).is_ok() | ok);
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A valid header for `body` (tests, the local stack).
pub fn sign(body: &[u8], secret: &[u8], timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_valid_signature_passes() {
        let h = sign(BODY, SECRET, NOW);
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()));
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW + 300), Ok(()));
    }

    #[test]
    fn any_of_several_v1_values_may_match() {
        let good = sign(BODY, SECRET, NOW);
        let good_sig = good.split_once(",v1=").unwrap().1;
        let other = sign(BODY, b"whsec_old", NOW);
        let other_sig = other.split_once(",v1=").unwrap().1;
        let h = format!("t={NOW},v1={other_sig},v1={good_sig},v0=abc");
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()));
        let h = format!("t={NOW},v1=zz-not-hex,v1={good_sig}");
        assert_eq!(verify(Some(&h), BODY, SECRET, NOW), Ok(()));
    }

    #[test]
    fn forged_stale_wrong_secret_and_missing_are_refused() {
        let h = sign(BODY, SECRET, NOW);
        let tampered = br#"{"id":"evt_1","type":"invoice.paid "}"#;
        assert_eq!(
            verify(Some(&h), tampered, SECRET, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&h), BODY, b"whsec_other", NOW),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(Some(&h), BODY, SECRET, NOW + 301),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        assert!(matches!(
            verify(Some(&h), BODY, SECRET, NOW - 301),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        assert_eq!(
            verify(None, BODY, SECRET, NOW),
            Err(SignatureError::MissingHeader)
        );
        // The timestamp is signed: moving it breaks the signature.
        let sig = h.split_once(",v1=").unwrap().1;
        let moved = format!("t={},v1={sig}", NOW + 1);
        assert_eq!(
            verify(Some(&moved), BODY, SECRET, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn extreme_timestamps_are_outside_the_tolerance_not_a_panic() {
        let now = 1_700_000_000;
        for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            let header = sign(b"{}", SECRET, t);
            assert_eq!(
                verify(Some(&header), b"{}", SECRET, now),
                Err(SignatureError::OutsideTolerance { timestamp: t, now }),
                "t={t}"
            );
        }
        // Both ends of the window still pass, one second beyond does not.
        for t in [now - TOLERANCE_SECS, now + TOLERANCE_SECS] {
            assert!(verify(Some(&sign(b"{}", SECRET, t)), b"{}", SECRET, now).is_ok());
        }
        for t in [now - TOLERANCE_SECS - 1, now + TOLERANCE_SECS + 1] {
            assert!(verify(Some(&sign(b"{}", SECRET, t)), b"{}", SECRET, now).is_err());
        }
        // Beyond i64: not a whole number we can hold.
        let header = format!("t=99999999999999999999,v1={}", "ab".repeat(32));
        assert_eq!(
            verify(Some(&header), b"{}", SECRET, now),
            Err(SignatureError::Malformed("t= is not a whole number"))
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for h in ["", "garbage", "t=abc,v1=00", "v1=00", &format!("t={NOW}")] {
            assert!(
                matches!(
                    verify(Some(h), BODY, SECRET, NOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{h:?}"
            );
        }
    }
}
