//! Key material: loading, generating and masking.
//!
//! Three kinds of key meet in a handshake: the server's Ed25519 signing key (PKCS#8 PEM, the
//! form go-pantheon uses) and its public half for clients; the optional client certificate
//! (X.509 PEM holding an Ed25519 key) whose private half signs the client's X25519 public key;
//! and the 32-byte token key shared with the auth service. Secrets never print: their `Debug`
//! is masked.

use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer};
use x509_cert::Certificate;
use x509_cert::der::DecodePem;

use crate::error::{Error, Result};

/// The object identifier of Ed25519 keys (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

/// An Ed25519 private key: the server's handshake signing key, or a client's certificate key.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SigningKey")
            .field(&self.verifying_key())
            .finish()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| Error::key("Ed25519 private key (PKCS#8 PEM)", e))
    }

    /// Builds a key from its 32-byte seed (test vectors and fixtures).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// Generates a fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| Error::key("Ed25519 private key (PKCS#8 PEM)", e))
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs `msg`, returning the 64-byte signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// `HKDF-SHA256(ikm = seed, info = info, L = 32)`: a secret every holder of this key shares
    /// and nobody else can compute (the edges' resume-ticket key).
    pub fn derive(&self, info: &[u8]) -> [u8; 32] {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, self.0.as_bytes())
            .expand(info, &mut key)
            .expect("32 bytes is within HKDF-SHA256's output limit");
        key
    }
}

/// An Ed25519 public key: the server's (held by clients) or the client certificate's (held by
/// servers).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey(")?;
        for b in self.0.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl VerifyingKey {
    /// Loads a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) Ed25519 key.
    pub fn from_public_key_pem(pem: &str) -> Result<Self> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(Self)
            .map_err(|e| Error::key("Ed25519 public key (SPKI PEM)", e))
    }

    /// Takes the Ed25519 key out of an X.509 certificate in PEM form (the client certificate).
    pub fn from_certificate_pem(pem: &str) -> Result<Self> {
        const WHAT: &str = "client certificate (X.509 PEM)";
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| Error::key(WHAT, e))?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid.to_string() != ED25519_OID {
            return Err(Error::key(
                WHAT,
                format!("key algorithm {} is not Ed25519", spki.algorithm.oid),
            ));
        }
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::key(WHAT, "public key is not a whole number of bytes"))?;
        Self::from_bytes(raw).map_err(|_| Error::key(WHAT, "not a valid Ed25519 public key"))
    }

    /// Builds a key from its 32 raw bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        let raw: &[u8; 32] = raw
            .try_into()
            .map_err(|_| Error::key("Ed25519 public key", "must be 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map(Self)
            .map_err(|e| Error::key("Ed25519 public key", e))
    }

    /// The key as SubjectPublicKeyInfo PEM.
    pub fn to_public_key_pem(&self) -> Result<String> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::key("Ed25519 public key (SPKI PEM)", e))
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Whether `sig` is a valid signature of `msg` (strict verification: no malleable forms).
    pub fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig)
            .map(|sig| self.0.verify_strict(msg, &sig).is_ok())
            .unwrap_or(false)
    }
}

/// The 32-byte AES-256-GCM key shared with the auth service, which seals tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// Takes exactly 32 bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        raw.try_into()
            .map(Self)
            .map_err(|_| Error::key("token key", format!("must be 32 bytes, got {}", raw.len())))
    }

    /// Generates a fresh random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_keys_round_trip_through_pkcs8_pem() {
        let key = SigningKey::generate();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.verifying_key(), key.verifying_key());
        let public =
            VerifyingKey::from_public_key_pem(&key.verifying_key().to_public_key_pem().unwrap())
                .unwrap();
        assert!(public.verifies(b"m", &key.sign(b"m")));
        assert!(!public.verifies(b"n", &key.sign(b"m")));
        assert!(!public.verifies(b"m", &[0u8; 3]));
    }

    #[test]
    fn garbage_pem_names_what_was_being_loaded() {
        let err = SigningKey::from_pkcs8_pem("not a pem").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Ed25519 private key (PKCS#8 PEM): "),
            "{err}"
        );
        let err = VerifyingKey::from_certificate_pem("nope").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("client certificate (X.509 PEM): "),
            "{err}"
        );
    }

    #[test]
    fn certificate_key_is_extracted_and_other_algorithms_refused() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".into()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let key = VerifyingKey::from_certificate_pem(&cert.pem()).unwrap();
        let signer = SigningKey::from_pkcs8_pem(&pair.serialize_pem()).unwrap();
        assert_eq!(key, signer.verifying_key());

        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".into()])
            .unwrap()
            .self_signed(&ecdsa)
            .unwrap();
        let err = VerifyingKey::from_certificate_pem(&cert.pem()).unwrap_err();
        assert!(err.to_string().contains("is not Ed25519"), "{err}");
    }

    #[test]
    fn token_key_must_be_32_bytes_and_never_prints() {
        assert!(
            TokenKey::from_bytes(&[0u8; 31])
                .unwrap_err()
                .to_string()
                .contains("got 31")
        );
        let key = TokenKey::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "TokenKey(***)");
        assert!(!format!("{:?}", SigningKey::from_seed(&[1; 32])).contains("01010101"));
    }
}
