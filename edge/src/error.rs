//! The one error type of `janus-edge`, and why a session ended.

/// Errors of the edge outside a single session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration or the key material it names is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The protocol core refused something (a key, a token key).
    #[error(transparent)]
    Protocol(#[from] janus_protocol::Error),
    /// A transport could not be set up (TLS material, a KCP socket).
    #[error(transparent)]
    Transport(#[from] janus_transport::Error),
    /// Discovery or internal TLS failed.
    #[error(transparent)]
    Ops(#[from] janus_ops::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a session ended: logged, counted (`janus_edge_closes_total{reason}`) and, where the
/// protocol allows, told to the client as SCServerLogout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Close {
    /// The protocol core refused input (its [`janus_protocol::Error::kind`] is the label).
    Protocol(&'static str, String),
    /// No handshake within the handshake timeout.
    HandshakeTimeout,
    /// No frame within the idle timeout.
    Idle,
    /// The client sent packets or bytes faster than its token buckets allow.
    RateLimited(&'static str),
    /// The client did not read fast enough: its outbound queue filled or a write timed out.
    SlowConsumer,
    /// A WebSocket text message.
    TextMessage,
    /// The client's connection closed or failed.
    ClientClosed,
    /// The client said `CSBye`: it is leaving and will not resume.
    Bye,
    /// The session goes on over a connection at another edge (a resume took it).
    Moved,
    /// The broker kicked the session (another login, admin, broker-side limit).
    Kicked(i32, String),
    /// The broker refused the session.
    Rejected(String),
    /// No broker could take the session.
    NoBroker,
    /// The edge is shutting down.
    Shutdown,
}

impl Close {
    /// The metric label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Close::Protocol(kind, _) => kind,
            Close::HandshakeTimeout => "handshake_timeout",
            Close::Idle => "idle_timeout",
            Close::RateLimited(what) => what,
            Close::SlowConsumer => "slow_consumer",
            Close::TextMessage => "text_message",
            Close::ClientClosed | Close::Bye => "client_closed",
            Close::Moved => "resumed_elsewhere",
            Close::Kicked(..) => "kicked",
            Close::Rejected(_) => "rejected",
            Close::NoBroker => "no_broker",
            Close::Shutdown => "shutdown",
        }
    }
}

impl From<janus_protocol::Error> for Close {
    fn from(e: janus_protocol::Error) -> Self {
        match e {
            janus_protocol::Error::MessageFraming(janus_protocol::frame::TEXT_MESSAGE) => {
                Close::TextMessage
            }
            e => Close::Protocol(e.kind(), e.to_string()),
        }
    }
}

/// A connection that ends or fails is the client's going; what its frames broke is the
/// protocol core's refusal.
impl From<janus_transport::Error> for Close {
    fn from(e: janus_transport::Error) -> Self {
        match e {
            janus_transport::Error::Protocol(e) => Close::from(e),
            janus_transport::Error::Closed
            | janus_transport::Error::Io(_)
            | janus_transport::Error::WebSocket(_)
            | janus_transport::Error::Timeout(_) => Close::ClientClosed,
            e => Close::Protocol(e.kind(), e.to_string()),
        }
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Protocol(_, detail) => f.write_str(detail),
            Close::Kicked(code, reason) => write!(f, "kicked (logout code {code}): {reason}"),
            Close::Rejected(reason) => write!(f, "rejected by the broker: {reason}"),
            other => f.write_str(other.kind()),
        }
    }
}
