//! The handshake, both sides, as pure functions of packets, keys and time.
//!
//! The client's first frame is a plaintext `Packet{mod=1, seq=1, data=CSHandshake}`; the server
//! answers with a plaintext `Packet{mod=1, seq=1, data=SCHandshake}`; every later frame is
//! protected as the negotiated [`Mode`] says. This module decides and derives; `session` feeds
//! it frames and owns the resulting ciphers. Randomness (the ephemeral X25519 secret) is an
//! argument, so the test vectors can pin it.

use janus_proto::gate::intra::v1::AuthToken;
use janus_proto::message::{CsHandshake, ScHandshake};
use janus_proto::packet::Packet;
use prost::Message;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::cipher::{DirectionKeys, Opener, Sealer};
use crate::error::{Error, Result};
use crate::keys::{SigningKey, VerifyingKey};
use crate::system;
use crate::token::{self, TokenCodec};

/// `CSHandshake.version` of the Janus v2 handshake.
pub const VERSION_V2: i32 = 2;
/// `CSHandshake.version` of go-pantheon clients (the field is absent).
pub const VERSION_LEGACY: i32 = 0;
/// The first client packet index of every session.
pub const START_INDEX: i32 = 1;
/// The go-pantheon default for allowed clock skew, in seconds.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 5;

const TRANSCRIPT_LABEL: &[u8] = b"janus-v2";
const HKDF_INFO: &[u8] = b"janus-v2 session keys";

/// How a session's frames are protected after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Janus v2: HKDF-derived per-direction keys, counter nonces, header as AAD.
    V2,
    /// go-pantheon v1: raw shared secret as key, random nonces.
    Legacy,
    /// No encryption at all; dev only, and only when the token asks for it.
    Unencrypted,
}

impl Mode {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::V2 => "v2",
            Mode::Legacy => "legacy",
            Mode::Unencrypted => "unencrypted",
        }
    }
}

/// What the server needs to accept handshakes.
#[derive(Debug, Clone)]
pub struct ServerHandshakeConfig {
    /// Signs the handshake transcript (v2) or the server's public key (legacy).
    pub signing_key: SigningKey,
    /// Opens client tokens.
    pub tokens: TokenCodec,
    /// When set, clients must sign their X25519 public key with this certificate's key.
    pub client_cert: Option<VerifyingKey>,
    /// `OnlineStatus` values a token may carry (go-pantheon: GATE only).
    pub allowed_statuses: Vec<i32>,
    /// Largest accepted |client timestamp − server time|, in seconds.
    pub max_skew_secs: i64,
    /// Accept go-pantheon v1 clients.
    pub allow_legacy: bool,
    /// Accept tokens that ask for an unencrypted session (never in production).
    pub allow_unencrypted: bool,
    /// Echoed to clients as `SCHandshake.cert_version`.
    pub cert_version: i32,
}

/// Who a session belongs to, as established by its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    /// The player: the token's account id.
    pub uid: i64,
    /// The game server (zone): `CSHandshake.server_id` if non-zero, else the token's.
    pub sid: i64,
    /// The deployment colour from the token.
    pub color: String,
    /// The token's `OnlineStatus`.
    pub status: i32,
    /// When the token expires (unix seconds).
    pub token_expiry: i64,
    /// How the session is protected.
    pub mode: Mode,
}

/// The v2 key material of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Client-to-server direction.
    pub c2s: DirectionKeys,
    /// Server-to-client direction.
    pub s2c: DirectionKeys,
}

/// `th = SHA-256("janus-v2" || client_pub || server_pub || be64(server_timestamp) || token)`.
pub fn transcript_hash(
    client_pub: &[u8; 32],
    server_pub: &[u8; 32],
    server_timestamp: i64,
    token: &str,
) -> [u8; 32] {
    Sha256::new()
        .chain_update(TRANSCRIPT_LABEL)
        .chain_update(client_pub)
        .chain_update(server_pub)
        .chain_update(server_timestamp.to_be_bytes())
        .chain_update(token.as_bytes())
        .finalize()
        .into()
}

/// `HKDF-SHA256(salt = th, ikm = shared, info = "janus-v2 session keys", L = 88)`, split into
/// keys and IVs.
pub fn derive_keys(shared: &[u8; 32], transcript: &[u8; 32]) -> SessionKeys {
    let mut okm = [0u8; 88];
    hkdf::Hkdf::<Sha256>::new(Some(transcript), shared)
        .expand(HKDF_INFO, &mut okm)
        .expect("88 bytes is within HKDF-SHA256's output limit");
    let take = |from: usize| -> [u8; 32] { okm[from..from + 32].try_into().expect("32 bytes") };
    let iv = |from: usize| -> [u8; 12] { okm[from..from + 12].try_into().expect("12 bytes") };
    SessionKeys {
        c2s: DirectionKeys {
            key: take(0),
            iv: iv(64),
        },
        s2c: DirectionKeys {
            key: take(32),
            iv: iv(76),
        },
    }
}

/// X25519 with the all-zero (non-contributory) result refused.
fn exchange(secret: &StaticSecret, peer: &[u8]) -> Result<[u8; 32]> {
    let peer: [u8; 32] = peer
        .try_into()
        .map_err(|_| Error::BadPublicKeyLength(peer.len()))?;
    let shared = secret.diffie_hellman(&PublicKey::from(peer));
    if !shared.was_contributory() {
        return Err(Error::ZeroSharedSecret);
    }
    Ok(shared.to_bytes())
}

fn check_skew(timestamp: i64, now: i64, max: i64) -> Result<()> {
    let skew = timestamp.abs_diff(now);
    if skew > max.unsigned_abs() {
        return Err(Error::TimestampSkew {
            timestamp,
            skew: i64::try_from(skew).unwrap_or(i64::MAX),
            max,
        });
    }
    Ok(())
}

fn handshake_data(packet: &Packet) -> Result<&[u8]> {
    if packet.r#mod != system::MODULE || packet.seq != system::SEQ_HANDSHAKE {
        return Err(Error::NotHandshake {
            module: packet.r#mod,
            seq: packet.seq,
        });
    }
    Ok(&packet.data)
}

/// What the server learns and produces by accepting a handshake.
pub(crate) struct Accepted {
    pub(crate) identity: SessionIdentity,
    pub(crate) reply: Packet,
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
}

impl ServerHandshakeConfig {
    /// Checks the client's handshake packet and builds the reply, with `ephemeral` as this
    /// session's X25519 secret and `now` the server time in unix seconds.
    pub(crate) fn accept(
        &self,
        request: &Packet,
        now: i64,
        ephemeral: [u8; 32],
    ) -> Result<Accepted> {
        let hello = CsHandshake::decode(handshake_data(request)?)
            .map_err(|e| Error::decode("CSHandshake", e))?;
        let claims: AuthToken = self.tokens.open(&hello.token)?;
        token::check(&claims, now, &self.allowed_statuses)?;
        let mode = match (claims.unencrypted, hello.version) {
            (true, _) if self.allow_unencrypted => Mode::Unencrypted,
            (true, _) => return Err(Error::ModeNotAllowed("unencrypted")),
            (false, VERSION_V2) => Mode::V2,
            (false, VERSION_LEGACY) if self.allow_legacy => Mode::Legacy,
            (false, VERSION_LEGACY) => return Err(Error::ModeNotAllowed("legacy")),
            (false, other) => return Err(Error::UnknownVersion(other)),
        };
        check_skew(hello.timestamp, now, self.max_skew_secs)?;
        let identity = SessionIdentity {
            uid: claims.account_id,
            sid: if hello.server_id != 0 {
                hello.server_id
            } else {
                claims.server_id
            },
            color: claims.color,
            status: claims.status,
            token_expiry: claims.timeout,
            mode,
        };
        let mut reply = ScHandshake {
            timestamp: now,
            cert_version: self.cert_version,
            start_index: START_INDEX,
            ..Default::default()
        };
        let (sealer, opener) = if mode == Mode::Unencrypted {
            (Sealer::plain(), Opener::plain())
        } else {
            if hello.r#pub.len() != 32 {
                return Err(Error::BadPublicKeyLength(hello.r#pub.len()));
            }
            if let Some(cert) = &self.client_cert
                && !cert.verifies(&hello.r#pub, &hello.sign)
            {
                return Err(Error::BadClientSignature);
            }
            let secret = StaticSecret::from(ephemeral);
            let shared = exchange(&secret, &hello.r#pub)?;
            let server_pub = PublicKey::from(&secret).to_bytes();
            reply.r#pub = server_pub.to_vec();
            if mode == Mode::V2 {
                let client_pub: [u8; 32] =
                    hello.r#pub.as_slice().try_into().expect("length checked");
                let th = transcript_hash(&client_pub, &server_pub, now, &hello.token);
                reply.sign = self.signing_key.sign(&th).to_vec();
                let keys = derive_keys(&shared, &th);
                (Sealer::v2(&keys.s2c), Opener::v2(&keys.c2s))
            } else {
                reply.sign = self.signing_key.sign(&server_pub).to_vec();
                (Sealer::legacy(&shared), Opener::legacy(&shared))
            }
        };
        Ok(Accepted {
            identity,
            reply: system::packet(system::SEQ_HANDSHAKE, 0, reply.encode_to_vec()),
            sealer,
            opener,
        })
    }
}

/// What a client needs to handshake.
#[derive(Debug, Clone)]
pub struct ClientHandshakeConfig {
    /// The server's public key: every encrypted handshake's signature is checked against it.
    pub server_key: VerifyingKey,
    /// The client certificate's private key, when the server requires client signatures.
    pub client_key: Option<SigningKey>,
    /// The protection to ask for. `Unencrypted` needs a token that asks for it too.
    pub mode: Mode,
    /// `CSHandshake.server_id`: 0 lets the token's server id stand.
    pub server_id: i64,
    /// `CSHandshake.cert_version`.
    pub cert_version: i32,
}

/// A client handshake in flight: the hello has been sent, the reply is awaited.
pub(crate) struct ClientHello {
    secret: StaticSecret,
    client_pub: [u8; 32],
    token: String,
    mode: Mode,
}

/// What the client learns from the server's reply.
pub(crate) struct Established {
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
    pub(crate) start_index: i32,
    pub(crate) server_time: i64,
}

impl ClientHandshakeConfig {
    /// Builds the hello packet for `token` at time `now`, with `ephemeral` as the X25519 secret.
    pub(crate) fn hello(
        &self,
        token: &str,
        now: i64,
        ephemeral: [u8; 32],
    ) -> (ClientHello, Packet) {
        let secret = StaticSecret::from(ephemeral);
        let client_pub = PublicKey::from(&secret).to_bytes();
        let encrypted = self.mode != Mode::Unencrypted;
        let hello = CsHandshake {
            r#pub: if encrypted {
                client_pub.to_vec()
            } else {
                Vec::new()
            },
            sign: match (&self.client_key, encrypted) {
                (Some(key), true) => key.sign(&client_pub).to_vec(),
                _ => Vec::new(),
            },
            token: token.to_owned(),
            server_id: self.server_id,
            timestamp: now,
            cert_version: self.cert_version,
            version: if self.mode == Mode::V2 {
                VERSION_V2
            } else {
                VERSION_LEGACY
            },
        };
        let state = ClientHello {
            secret,
            client_pub,
            token: token.to_owned(),
            mode: self.mode,
        };
        (
            state,
            system::packet(system::SEQ_HANDSHAKE, 0, hello.encode_to_vec()),
        )
    }

    /// Checks the server's reply and derives the session's ciphers.
    pub(crate) fn finish(&self, hello: ClientHello, reply: &Packet) -> Result<Established> {
        let reply = ScHandshake::decode(handshake_data(reply)?)
            .map_err(|e| Error::decode("SCHandshake", e))?;
        let (sealer, opener) = match hello.mode {
            Mode::Unencrypted => (Sealer::plain(), Opener::plain()),
            Mode::V2 | Mode::Legacy => {
                let shared = exchange(&hello.secret, &reply.r#pub)?;
                let server_pub: [u8; 32] =
                    reply.r#pub.as_slice().try_into().expect("length checked");
                if hello.mode == Mode::V2 {
                    let th = transcript_hash(
                        &hello.client_pub,
                        &server_pub,
                        reply.timestamp,
                        &hello.token,
                    );
                    if !self.server_key.verifies(&th, &reply.sign) {
                        return Err(Error::BadServerSignature);
                    }
                    let keys = derive_keys(&shared, &th);
                    (Sealer::v2(&keys.c2s), Opener::v2(&keys.s2c))
                } else {
                    if !self.server_key.verifies(&server_pub, &reply.sign) {
                        return Err(Error::BadServerSignature);
                    }
                    (Sealer::legacy(&shared), Opener::legacy(&shared))
                }
            }
        };
        Ok(Established {
            sealer,
            opener,
            start_index: reply.start_index,
            server_time: reply.timestamp,
        })
    }
}
