//! The one error type of `janus-client`.

use std::io;

/// Errors of a client connection: what the protocol core or the transport refused, and what
/// the connection itself ran into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The protocol core refused something the server sent (or a call in the wrong state).
    #[error(transparent)]
    Protocol(#[from] janus_protocol::Error),
    /// The transport failed below the frames (KCP, smux, TLS material).
    #[error(transparent)]
    Transport(janus_transport::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The server closed the connection instead of answering the handshake: it refused the
    /// login (its log names the reason).
    #[error(
        "the server closed the connection during the handshake: it refused the login. Likely \
         reasons: a token it cannot open (another token key) or that expired, a go-pantheon v1 \
         (legacy) handshake at an edge without handshake.allow_legacy = true, a clock skew \
         beyond its limit, or a client certificate it requires; the edge's log names the reason"
    )]
    HandshakeRefused,
    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A transport-level I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A WebSocket-level failure.
    #[error("websocket: {0}")]
    WebSocket(String),
}

impl Error {
    /// A short, stable label (the protocol core's and the transport's for theirs).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Protocol(e) => e.kind(),
            Error::Transport(e) => e.kind(),
            Error::Closed => "closed",
            Error::HandshakeRefused => "handshake_refused",
            Error::Timeout(_) => "timeout",
            Error::Io(_) => "io",
            Error::WebSocket(_) => "websocket",
        }
    }

    /// Whether the connection is what failed (a resumable client may come back), rather than
    /// the session.
    pub(crate) fn connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Closed | Error::Io(_) | Error::WebSocket(_) | Error::Timeout(_)
        )
    }
}

/// The transport's connection failures are the client's own; its framing errors are the
/// protocol core's.
impl From<janus_transport::Error> for Error {
    fn from(e: janus_transport::Error) -> Self {
        match e {
            janus_transport::Error::Protocol(e) => Error::Protocol(e),
            janus_transport::Error::Closed => Error::Closed,
            janus_transport::Error::Timeout(what) => Error::Timeout(what),
            janus_transport::Error::Io(e) => Error::Io(e),
            janus_transport::Error::WebSocket(e) => Error::WebSocket(e),
            other => Error::Transport(other),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
