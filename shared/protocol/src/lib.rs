//! Janus protocol core, sans-IO: no sockets, no runtime, no clock of its own.
//!
//! Framing ([`frame`]), the handshake ([`handshake`]) and the session state machines
//! ([`session`]) that combine it with the frame ciphers ([`cipher`]), the `index` rule and
//! compression ([`compress`]). They take bytes and time and return events and bytes, so they are
//! tested without sockets and driven by thin tokio loops: the edge's, and the client library's
//! (`janus-client`). Keys and tokens live in [`keys`] and [`token`]; the System packets the
//! gateway itself answers or pushes in [`system`]. The `test-support` feature (tests only) adds
//! fixed handshake secrets and sending past the index rule.

pub mod cipher;
pub mod compress;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod session;
pub mod system;
pub mod token;

pub use error::{Error, Result};
