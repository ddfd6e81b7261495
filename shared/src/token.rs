//! Lares-format session tokens: sealing (for tools and tests) and opening (for the handshake).
//!
//! Wire form: base64 (URL alphabet, with padding) of `nonce(12) || AES-256-GCM ciphertext ||
//! tag(16)` where the plaintext is a protobuf `gate.intra.v1.AuthToken` and there is no AAD.
//! This module checks what a token says (expiry, status); the handshake decides what it means.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use janus_proto::gate::intra::v1::AuthToken;
use prost::Message;

use crate::error::{Error, Result};
use crate::keys::TokenKey;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Seals and opens tokens under one token key.
#[derive(Clone)]
pub struct TokenCodec {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCodec(***)")
    }
}

impl TokenCodec {
    /// A codec for tokens sealed under `key`.
    pub fn new(key: &TokenKey) -> Self {
        Self {
            aead: Aes256Gcm::new(key.as_bytes().into()),
        }
    }

    /// Seals `token` with a fresh random nonce, as the auth service does.
    pub fn seal(&self, token: &AuthToken) -> String {
        self.seal_with_nonce(token, rand::random())
    }

    /// Seals `token` with the given nonce (test vectors need a fixed one; never reuse a nonce
    /// for two different tokens in production).
    pub fn seal_with_nonce(&self, token: &AuthToken, nonce: [u8; NONCE_LEN]) -> String {
        let sealed = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), token.encode_to_vec().as_slice())
            .expect("AES-GCM sealing of a short message cannot fail");
        let mut wire = Vec::with_capacity(NONCE_LEN + sealed.len());
        wire.extend_from_slice(&nonce);
        wire.extend_from_slice(&sealed);
        URL_SAFE.encode(wire)
    }

    /// Opens a token string into its claims. Says nothing of expiry or status: see [`check`].
    pub fn open(&self, token: &str) -> Result<AuthToken> {
        let wire = URL_SAFE
            .decode(token)
            .map_err(|_| Error::TokenInvalid("not base64 (URL alphabet, padded)"))?;
        if wire.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::TokenInvalid("too short"));
        }
        let (nonce, sealed) = wire.split_at(NONCE_LEN);
        let plain = self
            .aead
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| Error::TokenInvalid("does not decrypt under the token key"))?;
        AuthToken::decode(plain.as_slice())
            .map_err(|_| Error::TokenInvalid("claims are not an AuthToken"))
    }
}

/// Checks the claims of an opened token at time `now` (unix seconds): it must not have expired
/// and its status must be one of `allowed` (`gate.intra.v1.OnlineStatus` values).
pub fn check(token: &AuthToken, now: i64, allowed: &[i32]) -> Result<()> {
    if token.timeout < now {
        return Err(Error::TokenExpired {
            expired_at: token.timeout,
            now,
        });
    }
    if !allowed.contains(&token.status) {
        return Err(Error::StatusNotAllowed(token.status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_proto::gate::intra::v1::OnlineStatus;

    fn claims() -> AuthToken {
        AuthToken {
            rand: "r".into(),
            color: "blue".into(),
            account_id: 42,
            server_id: 7,
            timeout: 1_000,
            location: 1,
            status: OnlineStatus::Gate as i32,
            unencrypted: false,
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let codec = TokenCodec::new(&TokenKey::from_bytes(&[9; 32]).unwrap());
        let token = codec.seal(&claims());
        assert_eq!(codec.open(&token).unwrap(), claims());
        assert_ne!(token, codec.seal(&claims()), "fresh nonce per token");
    }

    #[test]
    fn wire_form_is_padded_url_base64_of_nonce_ciphertext_tag() {
        let codec = TokenCodec::new(&TokenKey::from_bytes(&[9; 32]).unwrap());
        let token = codec.seal_with_nonce(&claims(), [3; 12]);
        let raw = URL_SAFE.decode(&token).unwrap();
        assert_eq!(&raw[..12], &[3; 12]);
        assert_eq!(raw.len(), 12 + claims().encoded_len() + 16);
    }

    #[test]
    fn every_kind_of_bad_token_is_told_apart() {
        let codec = TokenCodec::new(&TokenKey::from_bytes(&[9; 32]).unwrap());
        let other = TokenCodec::new(&TokenKey::from_bytes(&[8; 32]).unwrap());
        let token = codec.seal(&claims());
        assert!(matches!(
            other.open(&token),
            Err(Error::TokenInvalid("does not decrypt under the token key"))
        ));
        assert!(matches!(
            codec.open("!!!"),
            Err(Error::TokenInvalid("not base64 (URL alphabet, padded)"))
        ));
        assert!(matches!(
            codec.open(&URL_SAFE.encode([0u8; 20])),
            Err(Error::TokenInvalid("too short"))
        ));
        let mut raw = URL_SAFE.decode(&token).unwrap();
        raw[14] ^= 1;
        assert!(matches!(
            codec.open(&URL_SAFE.encode(raw)),
            Err(Error::TokenInvalid(_))
        ));
    }

    #[test]
    fn expiry_and_status_are_checked() {
        let gate = [OnlineStatus::Gate as i32];
        assert!(check(&claims(), 1_000, &gate).is_ok());
        assert!(matches!(
            check(&claims(), 1_001, &gate),
            Err(Error::TokenExpired {
                expired_at: 1_000,
                now: 1_001
            })
        ));
        let admin = AuthToken {
            status: OnlineStatus::Admin as i32,
            ..claims()
        };
        assert!(matches!(
            check(&admin, 0, &gate),
            Err(Error::StatusNotAllowed(3))
        ));
    }
}
