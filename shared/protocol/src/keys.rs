//! Key material: loading, generating and masking.
//!
//! Three kinds of key meet in a handshake: the server's Ed25519 signing key (PKCS#8 PEM, the
//! form go-pantheon uses) and its public half for clients; the optional client certificate
//! (X.509 PEM holding an Ed25519 key) whose private half signs the client's X25519 public key;
//! and the 16-, 24- or 32-byte token key shared with the auth service (PROTOCOL.md §6). Secrets
//! never print: their `Debug` is masked.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
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
    /// Loads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key, v1 (RFC 5208: what
    /// OpenSSL and Go write) or v2 (RFC 5958, the public key attached).
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

    /// The key as PKCS#8 v1 PEM, RFC 8410's form, as `openssl genpkey -algorithm ed25519` and
    /// Go's `x509.MarshalPKCS8PrivateKey` write it: no public key attached (OpenSSL 3.0 and pyca
    /// `cryptography` refuse the v2 form that attaches it).
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        }
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
        write!(f, "VerifyingKey({})", hex::encode(self.0.as_bytes()))
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

/// How a token key file holds the key (PROTOCOL.md §6). Stated in config, never guessed: a
/// 32-character go-pantheon key made of hex digits would also read as 16 bytes of hex.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKeyFormat {
    /// Hex digits: 32, 48 or 64 of them (16, 24 or 32 bytes); surrounding whitespace is ignored.
    #[default]
    Hex,
    /// The key's bytes themselves, 16, 24 or 32 of them: go-pantheon's form (Lares and the Go
    /// gate use the bytes of the configured string). One trailing line end (LF or CRLF) is not
    /// part of the key; every other byte is.
    Raw,
}

impl fmt::Display for TokenKeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hex => "hex",
            Self::Raw => "raw",
        })
    }
}

impl FromStr for TokenKeyFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "hex" => Ok(Self::Hex),
            "raw" => Ok(Self::Raw),
            _ => Err(format!("{s:?} is not a token key format (hex or raw)")),
        }
    }
}

/// The AES-GCM key shared with the auth service, which seals tokens: 16, 24 or 32 bytes
/// (AES-128/192/256-GCM, chosen by the length as go-pantheon does).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey(SizedKey);

/// A token key's bytes by AES key size.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum SizedKey {
    Aes128([u8; 16]),
    Aes192([u8; 24]),
    Aes256([u8; 32]),
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// Takes 16, 24 or 32 bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        let sized = match raw.len() {
            16 => raw.try_into().map(SizedKey::Aes128).ok(),
            24 => raw.try_into().map(SizedKey::Aes192).ok(),
            32 => raw.try_into().map(SizedKey::Aes256).ok(),
            _ => None,
        };
        sized.map(Self).ok_or_else(|| {
            Error::key(
                "token key",
                format!(
                    "must be 16, 24 or 32 bytes (AES-128/192/256-GCM), got {} bytes",
                    raw.len()
                ),
            )
        })
    }

    /// Reads a key file's contents in `format`.
    pub fn parse(contents: &[u8], format: TokenKeyFormat) -> Result<Self> {
        match format {
            TokenKeyFormat::Hex => {
                let digits = contents.trim_ascii();
                if !matches!(digits.len(), 32 | 48 | 64) {
                    return Err(Error::key(
                        "token key (hex)",
                        format!(
                            "must be 32, 48 or 64 hex digits (16, 24 or 32 bytes), got {} characters",
                            digits.len()
                        ),
                    ));
                }
                let raw = hex::decode(digits)
                    .map_err(|e| Error::key("token key (hex)", format!("not hex: {e}")))?;
                Self::from_bytes(&raw)
            }
            TokenKeyFormat::Raw => {
                let raw = contents
                    .strip_suffix(b"\n")
                    .map_or(contents, |line| line.strip_suffix(b"\r").unwrap_or(line));
                Self::from_bytes(raw).map_err(|_| {
                    Error::key(
                        "token key (raw)",
                        format!(
                            "must be 16, 24 or 32 bytes (AES-128/192/256-GCM), got {} bytes",
                            raw.len()
                        ),
                    )
                })
            }
        }
    }

    /// Generates a fresh random 32-byte key.
    pub fn generate() -> Self {
        Self(SizedKey::Aes256(rand::random()))
    }

    /// The raw bytes (16, 24 or 32 of them).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            SizedKey::Aes128(k) => k,
            SizedKey::Aes192(k) => k,
            SizedKey::Aes256(k) => k,
        }
    }

    /// The bytes by key size.
    pub(crate) fn sized(&self) -> &SizedKey {
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
    fn pkcs8_is_written_as_v1_and_both_versions_are_read() {
        let key = SigningKey::from_seed(&[5; 32]);
        let pem = key.to_pkcs8_pem().unwrap();
        let der = pkcs8_der(&pem);
        // RFC 8410 §10.3's layout: version 0, the Ed25519 OID, the seed, nothing after it.
        let mut want = hex::decode("302e020100300506032b657004220420").unwrap();
        want.extend_from_slice(&[5; 32]);
        assert_eq!(der, want);
        let back = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.verifying_key(), key.verifying_key());

        // v2 (version 1, public key attached), as ring and older Janus releases write it.
        let v2 = KeypairBytes {
            secret_key: [5; 32],
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(
                *key.verifying_key().as_bytes(),
            )),
        }
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
        assert_eq!(pkcs8_der(&v2)[4], 1, "version 1 (v2)");
        assert_eq!(
            SigningKey::from_pkcs8_pem(&v2).unwrap().verifying_key(),
            key.verifying_key()
        );
    }

    fn pkcs8_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn token_keys_of_16_24_and_32_bytes_are_taken_raw_or_as_hex() {
        for len in [16, 24, 32] {
            let ascii: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let raw = TokenKey::parse(&ascii, TokenKeyFormat::Raw).unwrap();
            assert_eq!(
                raw.as_bytes(),
                ascii.as_slice(),
                "{len} raw bytes as they are"
            );
            let line = [ascii.as_slice(), b"\r\n"].concat();
            assert_eq!(
                TokenKey::parse(&line, TokenKeyFormat::Raw).unwrap(),
                raw,
                "one line end is not part of the key"
            );
            let hex = format!(" {}\n", hex::encode(&ascii));
            assert_eq!(
                TokenKey::parse(hex.as_bytes(), TokenKeyFormat::Hex).unwrap(),
                raw,
                "{len} bytes as hex"
            );
        }
    }

    #[test]
    fn a_raw_key_of_hex_digits_is_its_characters_not_their_value() {
        // `openssl rand -hex 16` makes a 32-character go-pantheon key: AES-256 of those ASCII
        // bytes in go-pantheon, so in raw form too.
        let text = b"00112233445566778899aabbccddeeff";
        assert_eq!(
            TokenKey::parse(text, TokenKeyFormat::Raw)
                .unwrap()
                .as_bytes()
                .len(),
            32
        );
        assert_eq!(
            TokenKey::parse(text, TokenKeyFormat::Hex)
                .unwrap()
                .as_bytes()
                .len(),
            16
        );
    }

    #[test]
    fn bad_token_keys_say_the_length_found() {
        let cases: [(&[u8], TokenKeyFormat, &str); 5] = [
            (b"short", TokenKeyFormat::Raw, "got 5 bytes"),
            (
                b"0123456789abcdef0123\n",
                TokenKeyFormat::Raw,
                "got 20 bytes",
            ),
            // Only one line end is dropped: 30 characters, a line end, and the dropped one.
            (
                b"0123456789abcdef0123456789abcd\n\n",
                TokenKeyFormat::Raw,
                "got 31 bytes",
            ),
            (&[b'a'; 63], TokenKeyFormat::Hex, "got 63 characters"),
            (&[b'z'; 64], TokenKeyFormat::Hex, "not hex"),
        ];
        for (contents, format, want) in cases {
            match TokenKey::parse(contents, format) {
                Err(e) => assert!(e.to_string().contains(want), "{e} lacks {want:?}"),
                Ok(_) => panic!("{contents:?} was taken as a {format:?} key"),
            }
        }
        assert!(
            TokenKey::from_bytes(&[0u8; 31])
                .unwrap_err()
                .to_string()
                .contains("got 31 bytes")
        );
    }

    #[test]
    fn token_key_formats_parse_and_token_keys_never_print() {
        assert_eq!("raw".parse::<TokenKeyFormat>(), Ok(TokenKeyFormat::Raw));
        assert_eq!("hex".parse::<TokenKeyFormat>(), Ok(TokenKeyFormat::Hex));
        assert!("base64".parse::<TokenKeyFormat>().is_err());
        assert_eq!(TokenKeyFormat::Raw.to_string(), "raw");
        let key = TokenKey::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "TokenKey(***)");
        assert!(!format!("{:?}", SigningKey::from_seed(&[1; 32])).contains("01010101"));
    }
}

/// Whether a secret file's permissions let its group or others read it: its mode, then.
pub fn exposed(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Logs a warning, naming the config `field`, when the secret file at `path` is readable by
/// its group or others.
pub fn warn_if_exposed(path: &std::path::Path, field: &str) {
    if let Some(mode) = exposed(path) {
        tracing::warn!(
            field,
            path = %path.display(),
            mode = format!("{mode:o}"),
            "a secret key file is readable by its group or others: chmod 600 it"
        );
    }
}

/// Writes a secret file readable and writable by its owner only (0600), replacing what was
/// there.
pub fn write_secret(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn secret_files_are_written_for_their_owner_only_and_exposed_ones_are_told() {
        let dir = std::env::temp_dir().join(format!("janus-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.hex");
        std::fs::write(&path, "open").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed(&path), Some(0o644));
        write_secret(&path, b"closed").unwrap();
        assert_eq!(exposed(&path), None);
        assert_eq!(std::fs::read(&path).unwrap(), b"closed");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
