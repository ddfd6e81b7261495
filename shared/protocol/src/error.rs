//! The one error type of `janus-protocol`.
//!
//! Every failure of the protocol core is a variant a caller can act on: the edge maps each to a
//! session close reason (and a metric label through [`Error::kind`]), the client library maps
//! each into its own error. No input, however malformed, produces a panic instead.

/// Errors raised by framing, handshakes, session crypto, tokens, keys and compression.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame header announced an empty payload.
    #[error("frame length 0 is not allowed")]
    EmptyFrame,
    /// A frame header announced more than the configured maximum.
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A message-based transport carried something other than exactly one whole frame.
    #[error("a message must carry exactly one frame: {0}")]
    MessageFraming(&'static str),
    /// Bytes that should have been a protobuf message could not be decoded.
    #[error("malformed {what}: {source}")]
    Decode {
        /// Which message was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// The first frame was not a System handshake packet (or the reply was not one).
    #[error("expected a handshake packet (mod 1, seq 1), got mod {module} seq {seq}")]
    NotHandshake {
        /// The packet's module id.
        module: i32,
        /// The packet's sequence id.
        seq: i32,
    },
    /// The token is not valid base64, too short, or does not decrypt under the token key.
    #[error("token is invalid: {0}")]
    TokenInvalid(&'static str),
    /// The token's expiry has passed.
    #[error("token expired at {expired_at} (now {now})")]
    TokenExpired {
        /// The token's `timeout` (unix seconds).
        expired_at: i64,
        /// The time the check ran (unix seconds).
        now: i64,
    },
    /// The token's online status is not one this server accepts.
    #[error("token status {0} is not allowed")]
    StatusNotAllowed(i32),
    /// The client's clock differs from ours by more than the allowed skew.
    #[error("timestamp {timestamp} is {skew} s away from server time, over the limit of {max} s")]
    TimestampSkew {
        /// The timestamp the client sent (unix seconds).
        timestamp: i64,
        /// The absolute difference in seconds.
        skew: i64,
        /// The allowed difference in seconds.
        max: i64,
    },
    /// An X25519 public key was not 32 bytes long.
    #[error("public key must be 32 bytes, got {0}")]
    BadPublicKeyLength(usize),
    /// The X25519 exchange produced the all-zero secret (a low-order public key).
    #[error("key exchange produced an all-zero shared secret")]
    ZeroSharedSecret,
    /// The client's signature over its public key did not verify against the client certificate.
    #[error("client signature does not verify")]
    BadClientSignature,
    /// The server's handshake signature did not verify against its known public key.
    #[error("server signature does not verify")]
    BadServerSignature,
    /// The client asked for a protocol mode this server does not allow; the message names the
    /// edge setting that allows it.
    #[error("handshake mode {mode} is not enabled on this server{hint}", mode = .0, hint = enabled_by(.0))]
    ModeNotAllowed(&'static str),
    /// The client asked for a handshake version this implementation does not know.
    #[error("unknown handshake version {0}")]
    UnknownVersion(i32),
    /// An encrypted frame failed authentication: tampered, replayed, reordered or truncated.
    #[error("frame failed to decrypt")]
    Decrypt,
    /// A per-direction frame counter would wrap; the session must end.
    #[error("nonce counter exhausted")]
    NonceExhausted,
    /// A client packet's `index` did not equal the session counter.
    #[error("packet index {got} out of order, expected {expected}")]
    IndexMismatch {
        /// The index the session expected next.
        expected: i32,
        /// The index the packet carried.
        got: i32,
    },
    /// Compressed data would inflate past the configured cap.
    #[error("compressed data inflates past the limit of {limit} bytes")]
    InflateTooLarge {
        /// The cap on inflated size.
        limit: usize,
    },
    /// Data flagged as compressed is not valid zlib.
    #[error("compressed data is not valid zlib: {0}")]
    InflateCorrupt(String),
    /// A packet arrived in a state that cannot take it (for example before the handshake ended).
    #[error("unexpected packet in state {0}")]
    UnexpectedState(&'static str),
    /// A resume ticket names no session that can be resumed here (expired, used, or issued by
    /// another edge).
    #[error("no resumable session for this ticket")]
    ResumeUnknown,
    /// A resume's proof does not verify under the session's resume key.
    #[error("resume proof does not verify")]
    ResumeDenied,
    /// What one side must re-send on a resume is no longer retained.
    #[error("cannot resume: {0}")]
    ResumeGap(String),
    /// A key or certificate could not be loaded.
    #[error("{what}: {reason}")]
    Key {
        /// Which key or certificate.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

impl Error {
    /// A short, stable label for metrics and close reasons (`janus_edge_closes_total{reason}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::EmptyFrame => "empty_frame",
            Error::FrameTooLarge { .. } => "frame_too_large",
            Error::MessageFraming(_) => "message_framing",
            Error::Decode { .. } => "malformed_packet",
            Error::NotHandshake { .. } => "not_handshake",
            Error::TokenInvalid(_) => "token_invalid",
            Error::TokenExpired { .. } => "token_expired",
            Error::StatusNotAllowed(_) => "status_not_allowed",
            Error::TimestampSkew { .. } => "timestamp_skew",
            Error::BadPublicKeyLength(_) => "bad_public_key",
            Error::ZeroSharedSecret => "zero_shared_secret",
            Error::BadClientSignature => "bad_client_signature",
            Error::BadServerSignature => "bad_server_signature",
            Error::ModeNotAllowed(_) => "mode_not_allowed",
            Error::UnknownVersion(_) => "unknown_version",
            Error::Decrypt => "decrypt_failed",
            Error::NonceExhausted => "nonce_exhausted",
            Error::IndexMismatch { .. } => "index_mismatch",
            Error::InflateTooLarge { .. } => "inflate_too_large",
            Error::InflateCorrupt(_) => "inflate_corrupt",
            Error::UnexpectedState(_) => "unexpected_state",
            Error::ResumeUnknown => "resume_unknown",
            Error::ResumeDenied => "resume_denied",
            Error::ResumeGap(_) => "resume_gap",
            Error::Key { .. } => "key",
        }
    }

    pub(crate) fn decode(what: &'static str, source: prost::DecodeError) -> Self {
        Error::Decode { what, source }
    }

    pub(crate) fn key(what: &'static str, reason: impl ToString) -> Self {
        Error::Key {
            what,
            reason: reason.to_string(),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The edge setting that allows a refused handshake mode, as the end of its error message.
fn enabled_by(mode: &str) -> &'static str {
    match mode {
        "legacy" => " (set handshake.allow_legacy = true to accept go-pantheon v1 clients)",
        "unencrypted" => " (set handshake.allow_unencrypted = true; never in production)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_refused_mode_names_the_setting_that_allows_it() {
        assert_eq!(
            Error::ModeNotAllowed("legacy").to_string(),
            "handshake mode legacy is not enabled on this server \
             (set handshake.allow_legacy = true to accept go-pantheon v1 clients)"
        );
        assert!(
            Error::ModeNotAllowed("unencrypted")
                .to_string()
                .contains("handshake.allow_unencrypted")
        );
        assert_eq!(
            Error::ModeNotAllowed("resume without the v2 handshake").to_string(),
            "handshake mode resume without the v2 handshake is not enabled on this server"
        );
    }
}
