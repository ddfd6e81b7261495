//! KCP as go-pantheon speaks it (kcp-go with FEC, xtaci/smux streams on top), and plain KCP.
//!
//! - [`conv`]: one conversation (the `kcp` crate's sans-IO KCP core plus FEC) and the check
//!   that a datagram is a KCP segment at all, which the edge runs before a datagram may open a
//!   conversation.
//! - [`fec`]: kcp-go's FEC packets and Reed–Solomon groups (`reed-solomon-erasure`).
//! - [`smux`]: an xtaci/smux session, versions 1 and 2.
//! - [`driver`]: the tokio task that runs a conversation and exposes its streams as byte
//!   streams, used by the client library and the edge's listener.
//!
//! Crates: `kcp` is the KCP core tokio_kcp is built on, a faithful port of ikcp (the C
//! original kcp-go also follows), sans-IO and small; `reed-solomon-erasure` is the Rust port
//! of klauspost/reedsolomon, the library kcp-go encodes with, and produces the same parity (the
//! tests compare with datagrams of real kcp-go). No maintained crate implements smux or
//! kcp-go's FEC framing, so those two are here, each a small state machine tested against
//! bytes the real Go libraries wrote (`testdata/kcp/`). Settings: [`crate::transport::KcpSettings`].

pub mod conv;
pub mod driver;
pub mod fec;
pub mod smux;
