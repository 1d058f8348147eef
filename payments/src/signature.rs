//! Stripe's webhook signatures: `Stripe-Signature: t={unix seconds},v1={hex}` where the hex
//! is HMAC-SHA256 under the endpoint's signing secret (the whole `whsec_…` string is the
//! key) over `{t}.{raw body}`. A receiver checks the signature over the raw bytes before
//! parsing anything, and refuses a timestamp further than its tolerance from its clock, so
//! a captured delivery cannot be replayed later. While a secret is being rolled a header
//! carries several `v1` entries; any one that verifies is enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a webhook's timestamp may be from the receiver's clock (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// The `v1` signature of `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The whole `Stripe-Signature` header value.
pub fn header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Why a webhook was refused; each names what was wrong, never the expected signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Stripe-Signature: missing")]
    Missing,
    #[error("Stripe-Signature: no timestamp (t=…)")]
    NoTimestamp,
    #[error("Stripe-Signature: no v1 signature")]
    NoSignature,
    #[error("Stripe-Signature: no v1 signature matches the body under the signing secret")]
    Mismatch,
    #[error("Stripe-Signature: timestamp {timestamp} is {age} s from now, outside the tolerance of {tolerance} s")]
    Stale { timestamp: i64, age: i64, tolerance: i64 },
}

/// Checks `header` against the raw `body` under any of `secrets`, at `now` (unix seconds).
pub fn verify(
    secrets: &[&str],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = vec![];
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let matches = secrets.iter().any(|secret| {
        signatures.iter().any(|sig| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(sig).is_ok()
        })
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let age = (now - timestamp).abs();
    if age > tolerance {
        return Err(SignatureError::Stale { timestamp, age, tolerance });
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn a_signed_body_verifies_and_any_change_is_refused() {
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let h = header(SECRET, 1_700_000_000, body);
        assert_eq!(verify(&[SECRET], Some(&h), body, 1_700_000_010, TOLERANCE_SECS), Ok(1_700_000_000));
        let altered = br#"{"id":"evt_1","type":"payment_intent.succeedeD"}"#;
        assert_eq!(verify(&[SECRET], Some(&h), altered, 1_700_000_010, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(&["whsec_other"], Some(&h), body, 1_700_000_010, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(&[SECRET], None, body, 0, 300), Err(SignatureError::Missing));
        assert_eq!(verify(&[SECRET], Some("v1=00"), body, 0, 300), Err(SignatureError::NoTimestamp));
        assert_eq!(verify(&[SECRET], Some("t=5"), body, 0, 300), Err(SignatureError::NoSignature));
    }

    #[test]
    fn an_old_timestamp_is_refused_even_with_a_good_signature() {
        let body = b"{}";
        let h = header(SECRET, 1_000, body);
        let err = verify(&[SECRET], Some(&h), body, 1_000 + 301, 300).unwrap_err();
        assert_eq!(err, SignatureError::Stale { timestamp: 1_000, age: 301, tolerance: 300 });
    }

    #[test]
    fn any_of_several_signatures_or_secrets_is_enough() {
        let body = b"{}";
        let h = format!("t=7,v1={},v1={}", sign("whsec_old", 7, body), "ab".repeat(32));
        assert!(verify(&["whsec_new", "whsec_old"], Some(&h), body, 7, 300).is_ok());
    }

    /// A value computed by an independent implementation (Python's hmac module):
    /// `hmac.new(b"whsec_test_secret", b"1700000000.{}", hashlib.sha256).hexdigest()`.
    #[test]
    fn matches_an_independent_hmac() {
        assert_eq!(sign(SECRET, 1_700_000_000, b"{}"), INDEPENDENT);
    }

    const INDEPENDENT: &str = "ceb8863f7208fa249a6cd8f951e993c7563412aca65866f6272283debe143ab3";
}
