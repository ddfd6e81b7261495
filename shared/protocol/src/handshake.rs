//! The handshake, both sides, as pure functions of packets, keys and time.
//!
//! The client's first frame is a plaintext `Packet{mod=1, seq=1, data=CSHandshake}`; the server
//! answers with a plaintext `Packet{mod=1, seq=1, data=SCHandshake}`; every later frame is
//! protected as the negotiated [`Mode`] says. This module decides and derives; `session` feeds
//! it frames and owns the resulting ciphers. Randomness (the ephemeral X25519 secret) is an
//! argument, so the test vectors can pin it.

use std::collections::BTreeMap;

use janus_proto::message::{CsHandshake, ScHandshake};
use janus_proto::packet::Packet;
use prost::Message;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::cipher::{DirectionKeys, Opener, Sealer};
use crate::error::{Error, Result};
use crate::keys::{SigningKey, VerifyingKey};
use crate::system;
use crate::token::{self, OpenedUnder, TokenCodec};

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
const RESUME_KEY_INFO: &[u8] = b"janus-v2 resume key";
const RESUME_PROOF_LABEL: &[u8] = b"janus-v2 resume";
const REPLY_LABEL: &[u8] = b"janus-v2 reply";

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
    /// The version of `signing_key`, told to clients as `SCHandshake.cert_version`.
    pub cert_version: i32,
    /// More signing keys, by the `cert_version` a client asks for them with (§3.4): a
    /// rollover's old key, for clients that still pin it, or the next one before it is current.
    pub other_signing_keys: BTreeMap<i32, SigningKey>,
}

impl ServerHandshakeConfig {
    /// The version and key that answer a client asking for `requested`
    /// (`CSHandshake.cert_version`): the other key of that version when there is one, else the
    /// current key (§3.4).
    pub fn signer(&self, requested: i32) -> (i32, &SigningKey) {
        match self.other_signing_keys.get(&requested) {
            Some(key) if requested != self.cert_version => (requested, key),
            _ => (self.cert_version, &self.signing_key),
        }
    }
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

/// `th_reply = SHA-256(th || "janus-v2 reply" || be32(start_index) || be32(window) ||
/// be32(len(ticket)) || ticket || u8(resumed))`: what the server signs, and the salt of the
/// session keys, when its reply carries a ticket or resumes a session (PROTOCOL.md §13.1,
/// §13.3). It binds what the reply says about the session's continuation, so nobody on the
/// path can change the next client index, the next ticket, the window or the `resumed` flag.
/// `th` is the base transcript (the token's, or a resume's `th'`); a login without a ticket
/// signs `th` itself (§3.1).
pub fn reply_hash(
    transcript: &[u8; 32],
    start_index: i32,
    window_secs: i32,
    ticket: &[u8],
    resumed: bool,
) -> [u8; 32] {
    let len = u32::try_from(ticket.len()).expect("a ticket is far shorter than 4 GiB");
    Sha256::new()
        .chain_update(transcript)
        .chain_update(REPLY_LABEL)
        .chain_update(start_index.to_be_bytes())
        .chain_update(window_secs.to_be_bytes())
        .chain_update(len.to_be_bytes())
        .chain_update(ticket)
        .chain_update([u8::from(resumed)])
        .finalize()
        .into()
}

/// `HKDF-SHA256(salt = th, ikm = shared, info = "janus-v2 session keys", L = 88)`, split into
/// keys and IVs. `th` is the hash the server signed: the transcript hash, or the reply hash
/// ([`reply_hash`]) when the reply carries a ticket.
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

/// `HKDF-SHA256(salt = th, ikm = shared, info = "janus-v2 resume key", L = 32)`: the key that
/// proves, on a resume, that the client holds this session's keys (PROTOCOL.md §13).
pub fn derive_resume_key(shared: &[u8; 32], transcript: &[u8; 32]) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(transcript), shared)
        .expand(RESUME_KEY_INFO, &mut key)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    key
}

fn resume_mac(
    key: &[u8; 32],
    ticket: &[u8],
    client_pub: &[u8; 32],
    timestamp: i64,
    received: u64,
) -> hmac::Hmac<Sha256> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(RESUME_PROOF_LABEL);
    mac.update(ticket);
    mac.update(client_pub);
    mac.update(&timestamp.to_be_bytes());
    mac.update(&received.to_be_bytes());
    mac
}

/// `HMAC-SHA256(resume_key, "janus-v2 resume" || ticket || client_pub || be64(timestamp) ||
/// be64(received))`: `CSHandshake.resume_proof`.
pub fn resume_proof(
    key: &[u8; 32],
    ticket: &[u8],
    client_pub: &[u8; 32],
    timestamp: i64,
    received: u64,
) -> [u8; 32] {
    use hmac::Mac;
    resume_mac(key, ticket, client_pub, timestamp, received)
        .finalize()
        .into_bytes()
        .into()
}

/// The credential a resume's transcript hash binds in place of the token: the ticket in
/// lowercase hex.
fn resume_credential(ticket: &[u8]) -> String {
    hex::encode(ticket)
}

/// A resume ticket and what the server says about it, as a handshake reply carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeOffer {
    /// The opaque ticket (`SCHandshake.resume_ticket`).
    pub ticket: Vec<u8>,
    /// Seconds the session waits for a resume after losing its connection.
    pub window_secs: i32,
}

/// Issues the resume ticket of a v2 login that asks for one, once the login's identity is
/// known (an edge names the broker that will hold the session in it).
pub trait IssueTicket: Send + Sync {
    /// The ticket and window for the session of `identity`.
    fn issue(&self, identity: &SessionIdentity) -> ResumeOffer;
}

/// A fixed offer: every login that asks gets this ticket.
impl IssueTicket for ResumeOffer {
    fn issue(&self, _: &SessionIdentity) -> ResumeOffer {
        self.clone()
    }
}

/// What a resume hello claims: the ticket, and what its proof binds (§13.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeClaim {
    /// The ticket as presented.
    pub ticket: Vec<u8>,
    /// The new connection's X25519 public key.
    pub client_pub: [u8; 32],
    /// The client's clock.
    pub timestamp: i64,
    /// Server packets the client has processed.
    pub received: u64,
    /// `HMAC-SHA256(resume_key, ...)`.
    pub proof: Vec<u8>,
}

/// What the holder of a resumable session keeps to decide a resume of it: the client's current
/// ticket and the key its proof must verify under (§13.3). Deciding here, in one place per
/// session, is what orders two racing resumes: the first spends the ticket.
#[derive(Clone, PartialEq, Eq)]
pub struct Redeemable {
    /// The only ticket that redeems the session.
    pub ticket: Vec<u8>,
    /// The resume key of the handshake that issued it.
    pub key: [u8; 32],
}

impl std::fmt::Debug for Redeemable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redeemable").finish_non_exhaustive()
    }
}

impl Redeemable {
    /// Lets `claim` take the session if it presents the current ticket with a proof under its
    /// key; the session then waits for `next`. A wrong ticket is `ResumeUnknown` (spent, or
    /// never this session's), a wrong proof `ResumeDenied`; either leaves the session as it was.
    pub fn redeem(&mut self, claim: &ResumeClaim, next: Redeemable) -> Result<()> {
        use hmac::Mac;
        use subtle::ConstantTimeEq;
        if !bool::from(claim.ticket.ct_eq(&self.ticket)) {
            return Err(Error::ResumeUnknown);
        }
        resume_mac(
            &self.key,
            &claim.ticket,
            &claim.client_pub,
            claim.timestamp,
            claim.received,
        )
        .verify_slice(&claim.proof)
        .map_err(|_| Error::ResumeDenied)?;
        *self = next;
        Ok(())
    }
}

/// What a client keeps to resume its session: the ticket and the key bound to the keys of the
/// handshake that issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumeTicket {
    /// The ticket and its window.
    pub offer: ResumeOffer,
    /// The resume key of the issuing handshake.
    pub key: [u8; 32],
}

impl std::fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeTicket")
            .field("offer", &self.offer)
            .finish_non_exhaustive()
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
    pub(crate) keys: HandshakeKeys,
    pub(crate) reply: Packet,
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
    /// Set when the reply carries a resume ticket: its key and the ticket.
    pub(crate) resume: Option<([u8; 32], Vec<u8>)>,
}

/// Which keys a handshake was answered with: the signing key's `cert_version` (§3.4) and, for
/// a login, the token key that opened its token (§6). What tells an operator when a rollover's
/// old key may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeKeys {
    /// The `SCHandshake.cert_version` of the reply.
    pub cert_version: i32,
    /// The token key that opened the token; `None` for a resume, which presents none.
    pub token_key: Option<OpenedUnder>,
}

/// A client hello: a login, or a resume that only the session it names can finish.
pub(crate) enum Hello {
    Login(Box<Accepted>),
    Resume(Box<PendingResume>),
}

/// A resume hello that passed every check but the proof, which needs the session's key: the
/// broker holding the session checks it ([`resume_proof_valid`]).
pub struct PendingResume {
    /// The `cert_version` the client asked for.
    cert_version: i32,
    ticket: Vec<u8>,
    received: u64,
    proof: Vec<u8>,
    client_pub: [u8; 32],
    client_timestamp: i64,
    server_pub: [u8; 32],
    server_timestamp: i64,
    shared: [u8; 32],
}

/// A resume made as far as it can be before the session's broker has decided: the base
/// transcript `th'` and, from it, the next resume key. The reply, its signature and the session
/// keys bind the broker's `start_index` too, so [`Resumed::finish`] makes them once it is known.
pub(crate) struct Resumed {
    /// The `cert_version` the client asked for.
    cert_version: i32,
    transcript: [u8; 32],
    shared: [u8; 32],
    server_pub: [u8; 32],
    server_timestamp: i64,
    /// The next ticket and its window.
    offer: ResumeOffer,
    /// The key the next resume must prove (from `th'`, so known before the broker answers).
    pub(crate) resume_key: [u8; 32],
}

/// A finished resume: the reply to send and the new connection's ciphers.
pub(crate) struct ResumeReply {
    /// The version of the signing key that signed the reply (§3.4).
    pub(crate) cert_version: i32,
    pub(crate) reply: Packet,
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
    pub(crate) ticket: Vec<u8>,
}

impl Resumed {
    /// The reply naming `start_index`, signed over the reply hash, and the keys derived from it.
    pub(crate) fn finish(self, config: &ServerHandshakeConfig, start_index: i32) -> ResumeReply {
        let th_reply = reply_hash(
            &self.transcript,
            start_index,
            self.offer.window_secs,
            &self.offer.ticket,
            true,
        );
        let keys = derive_keys(&self.shared, &th_reply);
        let (cert_version, signing_key) = config.signer(self.cert_version);
        let reply = ScHandshake {
            r#pub: self.server_pub.to_vec(),
            sign: signing_key.sign(&th_reply).to_vec(),
            timestamp: self.server_timestamp,
            cert_version,
            start_index,
            resume_ticket: self.offer.ticket.clone(),
            resume_window: self.offer.window_secs,
            resumed: true,
        };
        ResumeReply {
            cert_version,
            reply: system::packet(system::SEQ_HANDSHAKE, 0, reply.encode_to_vec()),
            sealer: Sealer::v2(&keys.s2c),
            opener: Opener::v2(&keys.c2s),
            ticket: self.offer.ticket,
        }
    }
}

impl PendingResume {
    /// The ticket the client presented.
    pub fn ticket(&self) -> &[u8] {
        &self.ticket
    }

    /// Server-to-client packets the client says it received in the session.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// What the proof binds, for the holder of the session to decide on.
    pub fn claim(&self) -> ResumeClaim {
        ResumeClaim {
            ticket: self.ticket.clone(),
            client_pub: self.client_pub,
            timestamp: self.client_timestamp,
            received: self.received,
            proof: self.proof.clone(),
        }
    }

    /// Derives `th'` and the next resume key, `offer` being the next ticket; nothing here
    /// depends on the session's state, so an edge does it before asking the session's broker.
    pub(crate) fn prepare(&self, offer: ResumeOffer) -> Resumed {
        let th = transcript_hash(
            &self.client_pub,
            &self.server_pub,
            self.server_timestamp,
            &resume_credential(&self.ticket),
        );
        Resumed {
            cert_version: self.cert_version,
            transcript: th,
            shared: self.shared,
            server_pub: self.server_pub,
            server_timestamp: self.server_timestamp,
            offer,
            resume_key: derive_resume_key(&self.shared, &th),
        }
    }
}

impl ServerHandshakeConfig {
    /// Checks the client's handshake packet and builds the reply, with `ephemeral` as this
    /// session's X25519 secret and `now` the server time in unix seconds. A v2 login that asks
    /// for it gets a resume ticket from `tickets`; a resume is checked as far as it can be
    /// without the session it names.
    pub(crate) fn accept(
        &self,
        request: &Packet,
        now: i64,
        ephemeral: [u8; 32],
        tickets: Option<&dyn IssueTicket>,
    ) -> Result<Hello> {
        let hello = CsHandshake::decode(handshake_data(request)?)
            .map_err(|e| Error::decode("CSHandshake", e))?;
        if !hello.resume_ticket.is_empty() {
            return self
                .accept_resume(hello, now, ephemeral)
                .map(|pending| Hello::Resume(Box::new(pending)));
        }
        let (claims, token_key) = self.tokens.open_saying_under(&hello.token, now)?;
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
        let (cert_version, signing_key) = self.signer(hello.cert_version);
        let mut reply = ScHandshake {
            timestamp: now,
            cert_version,
            start_index: START_INDEX,
            ..Default::default()
        };
        let mut resume = None;
        let (sealer, opener) = if mode == Mode::Unencrypted {
            (Sealer::plain(), Opener::plain())
        } else {
            let (shared, server_pub) = self.exchange_with(&hello, ephemeral)?;
            reply.r#pub = server_pub.to_vec();
            if mode == Mode::V2 {
                let client_pub: [u8; 32] =
                    hello.r#pub.as_slice().try_into().expect("length checked");
                let th = transcript_hash(&client_pub, &server_pub, now, &hello.token);
                // A login with a ticket signs the reply hash, binding the ticket and window; one
                // without signs `th` as go-pantheon-era v2 clients expect (§3.1, §13.1).
                let mut signed = th;
                if let Some(tickets) = tickets.filter(|_| hello.resumable) {
                    let offer = tickets.issue(&identity);
                    if !offer.ticket.is_empty() {
                        signed =
                            reply_hash(&th, START_INDEX, offer.window_secs, &offer.ticket, false);
                        reply.resume_ticket = offer.ticket.clone();
                        reply.resume_window = offer.window_secs;
                        resume = Some((derive_resume_key(&shared, &th), offer.ticket));
                    }
                }
                reply.sign = signing_key.sign(&signed).to_vec();
                let keys = derive_keys(&shared, &signed);
                (Sealer::v2(&keys.s2c), Opener::v2(&keys.c2s))
            } else {
                reply.sign = signing_key.sign(&server_pub).to_vec();
                (Sealer::legacy(&shared), Opener::legacy(&shared))
            }
        };
        Ok(Hello::Login(Box::new(Accepted {
            identity,
            keys: HandshakeKeys {
                cert_version,
                token_key: Some(token_key),
            },
            reply: system::packet(system::SEQ_HANDSHAKE, 0, reply.encode_to_vec()),
            sealer,
            opener,
            resume,
        })))
    }

    /// §3 step 5 for an encrypted hello: the public key's length, the client signature when a
    /// client certificate is configured, and a contributory X25519 result. Returns the shared
    /// secret and the server's public key.
    fn exchange_with(
        &self,
        hello: &CsHandshake,
        ephemeral: [u8; 32],
    ) -> Result<([u8; 32], [u8; 32])> {
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
        Ok((shared, PublicKey::from(&secret).to_bytes()))
    }

    /// A resume hello: v2 only, the clock and the key exchange checked as for a login; the
    /// token is not looked at (the session already has its identity).
    fn accept_resume(
        &self,
        hello: CsHandshake,
        now: i64,
        ephemeral: [u8; 32],
    ) -> Result<PendingResume> {
        if hello.version != VERSION_V2 {
            return Err(Error::ModeNotAllowed("resume without the v2 handshake"));
        }
        check_skew(hello.timestamp, now, self.max_skew_secs)?;
        let (shared, server_pub) = self.exchange_with(&hello, ephemeral)?;
        Ok(PendingResume {
            cert_version: hello.cert_version,
            client_pub: hello.r#pub.as_slice().try_into().expect("length checked"),
            ticket: hello.resume_ticket,
            received: hello.resume_received,
            proof: hello.resume_proof,
            client_timestamp: hello.timestamp,
            server_pub,
            server_timestamp: now,
            shared,
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
    /// Ask for a resume ticket (v2 only; PROTOCOL.md §13).
    pub resumable: bool,
}

/// A client handshake in flight: the hello has been sent, the reply is awaited.
pub(crate) struct ClientHello {
    secret: StaticSecret,
    client_pub: [u8; 32],
    /// What the transcript binds: the token, or a resume's ticket in hex.
    credential: String,
    mode: Mode,
}

/// What the client learns from the server's reply.
pub(crate) struct Established {
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
    pub(crate) start_index: i32,
    pub(crate) server_time: i64,
    /// The ticket to resume this session with, when the server issued one.
    pub(crate) resume: Option<ResumeTicket>,
    /// The server resumed an existing session.
    pub(crate) resumed: bool,
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
            resumable: self.resumable && self.mode == Mode::V2,
            ..Default::default()
        };
        let state = ClientHello {
            secret,
            client_pub,
            credential: token.to_owned(),
            mode: self.mode,
        };
        (
            state,
            system::packet(system::SEQ_HANDSHAKE, 0, hello.encode_to_vec()),
        )
    }

    /// Builds the hello that resumes the session of `ticket`, having received `received`
    /// server-to-client packets in it, at time `now`.
    pub(crate) fn resume_hello(
        &self,
        ticket: &ResumeTicket,
        received: u64,
        now: i64,
        ephemeral: [u8; 32],
    ) -> (ClientHello, Packet) {
        let secret = StaticSecret::from(ephemeral);
        let client_pub = PublicKey::from(&secret).to_bytes();
        let ticket_bytes = &ticket.offer.ticket;
        let hello = CsHandshake {
            r#pub: client_pub.to_vec(),
            sign: self
                .client_key
                .as_ref()
                .map(|key| key.sign(&client_pub).to_vec())
                .unwrap_or_default(),
            server_id: self.server_id,
            timestamp: now,
            cert_version: self.cert_version,
            version: VERSION_V2,
            resumable: true,
            resume_ticket: ticket_bytes.clone(),
            resume_received: received,
            resume_proof: resume_proof(&ticket.key, ticket_bytes, &client_pub, now, received)
                .to_vec(),
            ..Default::default()
        };
        let state = ClientHello {
            secret,
            client_pub,
            credential: resume_credential(ticket_bytes),
            mode: Mode::V2,
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
        let mut resume = None;
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
                        &hello.credential,
                    );
                    // A reply that carries a ticket or resumes is signed over the reply hash,
                    // which binds what it says about the session's continuation (§13).
                    let continues = !reply.resume_ticket.is_empty() || reply.resumed;
                    let signed = if continues {
                        reply_hash(
                            &th,
                            reply.start_index,
                            reply.resume_window,
                            &reply.resume_ticket,
                            reply.resumed,
                        )
                    } else {
                        th
                    };
                    if !self.server_key.verifies(&signed, &reply.sign) {
                        return Err(Error::BadServerSignature);
                    }
                    if !reply.resume_ticket.is_empty() {
                        resume = Some(ResumeTicket {
                            offer: ResumeOffer {
                                ticket: reply.resume_ticket.clone(),
                                window_secs: reply.resume_window,
                            },
                            key: derive_resume_key(&shared, &th),
                        });
                    }
                    let keys = derive_keys(&shared, &signed);
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
            resume,
            resumed: reply.resumed,
        })
    }
}
