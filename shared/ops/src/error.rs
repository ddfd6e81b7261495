//! The one error type of `janus-ops`.

use std::io;

/// Errors of configuration loading, discovery and internal TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file could not be read or parsed, or failed validation; every problem
    /// is listed and each names its field.
    #[error("invalid configuration {origin}:\n  {}", .problems.join("\n  "))]
    Config {
        /// Where the configuration came from (a path, or "defaults").
        origin: String,
        /// One line per problem, each starting with the field's dotted path.
        problems: Vec<String>,
    },
    /// Service discovery (etcd) failed.
    #[error("discovery: {0}")]
    Discovery(String),
    /// Internal TLS material could not be read or used (names the config field).
    #[error("{0}")]
    InternalTls(String),
    /// An I/O failure (a listener, a file).
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::Discovery(_) => "discovery",
            Error::InternalTls(_) => "internal_tls",
            Error::Io(_) => "io",
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
