//! The one error type of `janus-broker`.

/// Errors of the broker: its stores, bus, discovery, tunnels and edge link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The route store (Redis) failed or timed out.
    #[error("route store: {0}")]
    RouteStore(String),
    /// The push bus (NATS) failed.
    #[error("push bus: {0}")]
    Bus(String),
    /// Service discovery (etcd) failed.
    #[error("discovery: {0}")]
    Discovery(String),
    /// No live instance of a game service matches the session.
    #[error("no instance of {service} for color {color:?}")]
    NoInstance {
        /// The discovery name of the service.
        service: String,
        /// The session's colour.
        color: String,
    },
    /// A tunnel to a game service could not be opened or broke.
    #[error("tunnel to {service} at {endpoint}: {reason}")]
    Tunnel {
        /// The discovery name of the service.
        service: String,
        /// The instance's endpoint.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A message on the bus or the link could not be decoded.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen: {0}")]
    Bind(String),
    /// The `[internal_tls]` material cannot be used (names the field).
    #[error("{0}")]
    InternalTls(String),
    /// A configuration field that cannot be used (a `Broker` started without validating it).
    #[error("{field}: {reason}")]
    Config {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `admin_token_file` cannot be used.
    #[error("admin_token_file {path}: {reason}")]
    AdminToken {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::RouteStore(_) => "route_store",
            Error::Bus(_) => "bus",
            Error::Discovery(_) => "discovery",
            Error::NoInstance { .. } => "no_instance",
            Error::Tunnel { .. } => "tunnel",
            Error::Malformed { .. } => "malformed",
            Error::Bind(_) => "bind",
            Error::AdminToken { .. } => "admin_token",
            Error::InternalTls(_) => "internal_tls",
            Error::Config { .. } => "config",
        }
    }

    /// What a client may be told of this error (in `SCServerUnexpectedErr`): the service, never
    /// an internal address or a backend's own message.
    pub fn client_reason(&self) -> String {
        match self {
            Error::NoInstance { service, color } => {
                format!("no instance of {service} for color {color:?}")
            }
            Error::Tunnel { service, .. } => unavailable(service),
            Error::RouteStore(_) => "route store unavailable".into(),
            Error::Discovery(_) => "service discovery unavailable".into(),
            Error::Bus(_) => "push bus unavailable".into(),
            other => format!("gateway error ({})", other.kind()),
        }
    }
}

/// The client's reason when a game service cannot be reached.
pub(crate) fn unavailable(service: &str) -> String {
    format!("{service} is unavailable")
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
