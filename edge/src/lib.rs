//! Janus edge: the stateless proxy. Terminates client connections ([`listener`], [`kcp`] over the
//! [`transport`]s), runs the handshake and all crypto per [`session`], enforces [`limits`],
//! and carries packets to and from the brokers over the multiplexed [`link`]. Holds no routing
//! state; [`server::Edge`] starts and drains one; [`admin`] serves health, readiness, metrics
//! and stats. A resumable session outlives a lost connection at its broker, and its client
//! [`resume`]s it at any edge.

pub mod admin;
pub mod config;
pub mod drain;
pub mod error;
pub mod kcp;
pub mod limits;
pub mod link;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod resume;
pub mod server;
pub mod session;
pub mod tls;
pub mod transport;

pub use error::{Error, Result};
pub use server::Edge;
