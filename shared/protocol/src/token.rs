//! Lares-format session tokens: sealing (for tools and tests) and opening (for the handshake).
//!
//! Wire form: base64 (URL alphabet, with padding) of `nonce(12) || AES-GCM ciphertext ||
//! tag(16)` where the plaintext is a protobuf `gate.intra.v1.AuthToken` and there is no AAD;
//! AES-128, -192 or -256 by the token key's length (PROTOCOL.md §6). This module checks what a
//! token says (expiry, status); the handshake decides what it means.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use janus_proto::gate::intra::v1::AuthToken;
use prost::Message;

use crate::error::{Error, Result};
use crate::keys::{SizedKey, TokenKey};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// AES-GCM with the key size the token key has.
#[derive(Clone)]
enum Cipher {
    Aes128(Aes128Gcm),
    Aes192(AesGcm<Aes192, U12>),
    Aes256(Aes256Gcm),
}

impl Cipher {
    fn new(key: &TokenKey) -> Self {
        match key.sized() {
            SizedKey::Aes128(k) => Self::Aes128(Aes128Gcm::new(k.into())),
            SizedKey::Aes192(k) => Self::Aes192(AesGcm::new(k.into())),
            SizedKey::Aes256(k) => Self::Aes256(Aes256Gcm::new(k.into())),
        }
    }

    fn encrypt(&self, nonce: &[u8; NONCE_LEN], plain: &[u8]) -> aes_gcm::aead::Result<Vec<u8>> {
        let nonce = Nonce::from_slice(nonce);
        match self {
            Self::Aes128(c) => c.encrypt(nonce, plain),
            Self::Aes192(c) => c.encrypt(nonce, plain),
            Self::Aes256(c) => c.encrypt(nonce, plain),
        }
    }

    fn decrypt(&self, nonce: &[u8], sealed: &[u8]) -> aes_gcm::aead::Result<Vec<u8>> {
        let nonce = Nonce::from_slice(nonce);
        match self {
            Self::Aes128(c) => c.decrypt(nonce, sealed),
            Self::Aes192(c) => c.decrypt(nonce, sealed),
            Self::Aes256(c) => c.decrypt(nonce, sealed),
        }
    }
}

/// Seals and opens tokens under one token key, and, during a rollover (PROTOCOL.md §6), opens
/// them under the previous key too until a set time.
#[derive(Clone)]
pub struct TokenCodec {
    cipher: Cipher,
    /// The previous key, and until when (unix seconds, exclusive) it still opens tokens.
    previous: Option<(Cipher, i64)>,
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
            cipher: Cipher::new(key),
            previous: None,
        }
    }

    /// This codec, also opening tokens sealed under `previous` until `until` (unix seconds):
    /// the grace of a token-key rollover.
    pub fn with_previous(mut self, previous: &TokenKey, until: i64) -> Self {
        self.previous = Some((Cipher::new(previous), until));
        self
    }

    /// Seals `token` with a fresh random nonce, as the auth service does.
    pub fn seal(&self, token: &AuthToken) -> String {
        self.seal_with_nonce(token, rand::random())
    }

    /// Seals `token` with the given nonce (test vectors need a fixed one; never reuse a nonce
    /// for two different tokens in production).
    pub fn seal_with_nonce(&self, token: &AuthToken, nonce: [u8; NONCE_LEN]) -> String {
        let sealed = self
            .cipher
            .encrypt(&nonce, &token.encode_to_vec())
            .expect("AES-GCM sealing of a short message cannot fail");
        let mut wire = Vec::with_capacity(NONCE_LEN + sealed.len());
        wire.extend_from_slice(&nonce);
        wire.extend_from_slice(&sealed);
        URL_SAFE.encode(wire)
    }

    /// Opens a token string into its claims under the current key. Says nothing of expiry or
    /// status: see [`check`].
    pub fn open(&self, token: &str) -> Result<AuthToken> {
        self.open_at(token, i64::MAX)
    }

    /// [`TokenCodec::open`] at time `now` (unix seconds): under the current key, or the
    /// previous one while its grace lasts.
    pub fn open_at(&self, token: &str, now: i64) -> Result<AuthToken> {
        self.open_saying_under(token, now).map(|(claims, _)| claims)
    }

    /// [`TokenCodec::open_at`], also saying which key opened it.
    pub fn open_saying_under(&self, token: &str, now: i64) -> Result<(AuthToken, OpenedUnder)> {
        let wire = URL_SAFE
            .decode(token)
            .map_err(|_| Error::TokenInvalid("not base64 (URL alphabet, padded)"))?;
        if wire.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::TokenInvalid("too short"));
        }
        let (nonce, sealed) = wire.split_at(NONCE_LEN);
        let previous = self
            .previous
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(cipher, _)| cipher);
        let opened = match self.cipher.decrypt(nonce, sealed) {
            Ok(plain) => Some((plain, OpenedUnder::Current)),
            Err(_) => previous
                .and_then(|cipher| cipher.decrypt(nonce, sealed).ok())
                .map(|plain| (plain, OpenedUnder::Previous)),
        };
        let (plain, under) =
            opened.ok_or(Error::TokenInvalid("does not decrypt under the token key"))?;
        let claims = AuthToken::decode(plain.as_slice())
            .map_err(|_| Error::TokenInvalid("claims are not an AuthToken"))?;
        Ok((claims, under))
    }
}

/// Which token key opened a token (PROTOCOL.md §6): during a rollover, whether clients still
/// bring tokens of the previous key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedUnder {
    /// `keys.token_key_file`.
    Current,
    /// `keys.previous_token_key_file`, within its grace.
    Previous,
}

impl OpenedUnder {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
        }
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
    fn keys_of_16_24_and_32_bytes_seal_with_aes_128_192_and_256_gcm() {
        for len in [16, 24, 32] {
            let key = TokenKey::from_bytes(&vec![5; len]).unwrap();
            let codec = TokenCodec::new(&key);
            let token = codec.seal_with_nonce(&claims(), [3; 12]);
            assert_eq!(codec.open(&token).unwrap(), claims(), "{len}-byte key");
            // The same nonce and claims under the same key bytes in another AES size would
            // be another cipher: the plain AES-GCM of that size must agree byte for byte.
            let raw = URL_SAFE.decode(&token).unwrap();
            let nonce = Nonce::from_slice(&[3; 12]);
            let plain = claims().encode_to_vec();
            let want = match len {
                16 => Aes128Gcm::new(key.as_bytes().into()).encrypt(nonce, plain.as_slice()),
                24 => AesGcm::<Aes192, U12>::new(key.as_bytes().into())
                    .encrypt(nonce, plain.as_slice()),
                _ => Aes256Gcm::new(key.as_bytes().into()).encrypt(nonce, plain.as_slice()),
            }
            .unwrap();
            assert_eq!(&raw[12..], want.as_slice(), "{len}-byte key");
            let other_len = if len == 32 { 16 } else { 32 };
            let other = TokenCodec::new(&TokenKey::from_bytes(&vec![5; other_len]).unwrap());
            assert!(
                other.open(&token).is_err(),
                "{len}-byte key's token opened by another size"
            );
        }
    }

    #[test]
    fn during_a_rollover_the_previous_key_opens_tokens_until_its_grace_ends() {
        let (old, new) = (
            TokenKey::from_bytes(&[1; 32]).unwrap(),
            TokenKey::from_bytes(&[2; 32]).unwrap(),
        );
        let old_token = TokenCodec::new(&old).seal(&claims());
        let new_token = TokenCodec::new(&new).seal(&claims());
        let codec = TokenCodec::new(&new).with_previous(&old, 1_000);
        assert_eq!(
            codec.open_saying_under(&new_token, 999).unwrap(),
            (claims(), OpenedUnder::Current)
        );
        assert_eq!(
            codec.open_saying_under(&old_token, 999).unwrap(),
            (claims(), OpenedUnder::Previous)
        );
        assert!(
            codec.open_at(&old_token, 1_000).is_err(),
            "the grace is over at `until`"
        );
        assert_eq!(codec.open_at(&new_token, 5_000).unwrap(), claims());
        assert!(
            codec.open(&old_token).is_err(),
            "`open` is the current key's"
        );
        let other = TokenCodec::new(&TokenKey::from_bytes(&[3; 32]).unwrap()).seal(&claims());
        assert!(codec.open_at(&other, 999).is_err());
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
