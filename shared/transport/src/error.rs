//! The one error type of `janus-transport`.

use std::io;

/// Errors of a transport: the connection, the KCP and smux state machines, TLS material, and
/// the framing rules a message transport enforces.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The frames a connection carried broke the framing rules (an empty or oversized frame,
    /// a WebSocket message that is not exactly one frame, a text message).
    #[error(transparent)]
    Protocol(#[from] janus_protocol::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A transport-level I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A WebSocket-level failure.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// A datagram that is not a KCP segment (or FEC packet) of the configured kind.
    #[error("invalid KCP datagram: {0}")]
    KcpInvalid(&'static str),
    /// The peer broke the smux protocol (unknown version or command, an overrun window).
    #[error("smux protocol error: {0}")]
    Smux(&'static str),
    /// A call the transport cannot take in its state (a second stream of a conversation
    /// without smux).
    #[error("unexpected call in state {0}")]
    UnexpectedState(&'static str),
    /// A TLS certificate or key could not be loaded.
    #[error("{what}: {reason}")]
    Key {
        /// Which certificate or key.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

impl Error {
    /// A short, stable label for metrics and close reasons (the protocol core's for its own).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Protocol(e) => e.kind(),
            Error::Closed => "closed",
            Error::Timeout(_) => "timeout",
            Error::Io(_) => "io",
            Error::WebSocket(_) => "websocket",
            Error::KcpInvalid(_) => "kcp_invalid",
            Error::Smux(_) => "smux",
            Error::UnexpectedState(_) => "unexpected_state",
            Error::Key { .. } => "key",
        }
    }

    pub(crate) fn key(what: &'static str, reason: impl ToString) -> Self {
        Error::Key {
            what,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn websocket(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::WebSocket(e.to_string())
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
