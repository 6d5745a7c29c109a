//! Enrollment tokens, the controller's half: making them. Their form and parsing are shared
//! with the sensor (`sensor_common::protocol::EnrollToken`). The store keeps the id, the
//! secret's SHA-256 and the expiry; the secret itself is shown once.

use ring::rand::{SecureRandom as _, SystemRandom};
pub use sensor_common::protocol::EnrollToken as Token;
use sha2::{Digest as _, Sha256};

use crate::ca::hex;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot draw random bytes")]
pub struct RandomError;

/// Random bytes, hex-encoded.
pub fn random_hex<const N: usize>() -> Result<String, RandomError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| RandomError)?;
    Ok(hex(&b))
}

/// A fresh token for the CA with fingerprint `ca_fingerprint`.
pub fn generate(ca_fingerprint: &str) -> Result<Token, RandomError> {
    Ok(Token {
        id: random_hex::<8>()?,
        secret: random_hex::<24>()?,
        ca_fingerprint: ca_fingerprint.to_owned(),
    })
}

/// What the store keeps instead of the secret.
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let t = generate(&"ab".repeat(32)).expect("token");
        assert_eq!(Token::parse(&t.to_string()), Ok(t.clone()));
        assert_ne!(generate(&t.ca_fingerprint).expect("token").id, t.id);
    }
}
