//! Janus protocol core, shared by the edge, the broker, the CLI and every test.
//!
//! Everything here except [`client`] is sans-IO: framing ([`frame`]), the handshake
//! ([`handshake`]) and the session state machines ([`session`]) that combine it with the frame
//! ciphers ([`cipher`]), the `index` rule and compression ([`compress`]). They take bytes and
//! time and return events and bytes, so they are tested without sockets and driven by thin tokio
//! loops. Keys and tokens live in [`keys`] and [`token`]; the System packets the gateway itself
//! answers or pushes in [`system`]. The [`client`] module is the tokio driver of the client end,
//! used by the CLI, the load generator and the tests; [`kcp`] holds KCP with kcp-go's FEC and smux
//! (sans-IO, plus the small driver the client and the edge share); [`transport`] the settings
//! and the byte-stream trait both ends' drivers share. Binaries load their typed configuration
//! through [`config`] and set up logging and signals through [`telemetry`]; their Prometheus
//! metrics live in a [`metrics::MetricsRegistry`], served with [`metrics::admin_routes`]. The
//! `test-support` feature (tests only) adds fixed handshake secrets and sending past the index
//! rule or outside framing.

pub mod cipher;
pub mod client;
pub mod compress;
pub mod config;
pub mod discovery;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod internal_tls;
pub mod kcp;
pub mod keys;
pub mod metrics;
pub mod session;
pub mod system;
pub mod telemetry;
pub mod token;
pub mod transport;

pub use error::{Error, Result};
