//! Janus edge: the stateless proxy. Terminates client connections (the listeners and KCP over
//! the transports), runs the handshake and all crypto per session (a sans-IO machine and its
//! driver), enforces limits, and carries packets to and from the brokers over the multiplexed
//! broker links. Holds no routing state; [`Edge`] starts and drains one, its admin endpoint
//! serves health, readiness, metrics and stats. A resumable session outlives a lost connection
//! at its broker, and its client resumes it at any edge. Only what the `janus` binary and the
//! integration suites use is public: [`Edge`], [`config`], [`metrics::Metrics`] (the series the
//! dashboards read) and [`rendezvous_score`] (which broker a player's session lands on).

mod admin;
pub mod config;
mod context;
mod drain;
mod error;
mod kcp;
mod limits;
mod link;
mod listener;
pub mod metrics;
mod outbox;
mod quic;
mod resume;
mod server;
mod session;
mod tls;

pub use error::{Error, Result};
pub use link::rendezvous_score;
pub use server::Edge;
