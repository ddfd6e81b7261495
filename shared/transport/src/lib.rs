//! The I/O adapters both ends of a client connection share, written once: frames over a byte
//! stream or a WebSocket ([`frames`]), KCP with kcp-go's FEC and smux ([`kcp`]: sans-IO state
//! machines plus the tokio driver of a conversation), QUIC streams ([`quic`]) and TLS material
//! ([`tls`]). The sockets, listeners and sessions belong to the edge and the client library;
//! nothing here knows the handshake or the session.

pub mod error;
pub mod frames;
pub mod kcp;
pub mod quic;
pub mod tls;

pub use error::{Error, Result};

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream frames run over, at either end: TCP (plain or TLS), a KCP or smux stream, a
/// QUIC stream.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}
