//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a secret is `whsec_`
//! and the base64 of its key; a message is signed as `v1,` and the base64 of
//! HMAC-SHA256(key, `{webhook-id}.{webhook-timestamp}.{body}`). While a rotated secret's
//! overlap lasts, a message carries one signature per secret, separated by spaces, and a
//! receiver accepts it when any one verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a new secret's key.
pub const SECRET_KEY_BYTES: usize = 32;

/// A new random secret, `whsec_…`.
pub fn new_secret() -> String {
    let key: [u8; SECRET_KEY_BYTES] = rand::random();
    format!("whsec_{}", STANDARD.encode(key))
}

/// The key of a `whsec_` secret; `None` when it is not one.
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix("whsec_")?).ok().filter(|k| !k.is_empty())
}

/// The `v1,…` signature of a message under one secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)?).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &str) -> String {
    secrets.iter().filter_map(|s| sign(s, id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Whether any signature in `header` is the message's under `secret` (what a receiver
/// checks; compared in constant time).
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let Some(key) = key_of(secret) else { return false };
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).filter_map(|s| STANDARD.decode(s).ok()).any(|sig| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        mac.verify_slice(&sig).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_the_reference_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        let signature = sign(secret, id, 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(secret, id, 1614265330, body, &format!("v1,bogus {signature}")));
        assert!(!verify(secret, id, 1614265331, body, &signature));
        assert!(!verify("whsec_b3RoZXI=", id, 1614265330, body, &signature));
    }

    #[test]
    fn rotated_secrets_both_sign() {
        let (old, new) = (new_secret(), new_secret());
        let header = signature_header(&[&new, &old], "msg_1", 1, "{}");
        assert!(verify(&old, "msg_1", 1, "{}", &header) && verify(&new, "msg_1", 1, "{}", &header));
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(key_of("whsec_"), None);
        assert_eq!(key_of("nope"), None);
    }
}
