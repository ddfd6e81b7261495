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
//! bytes the real Go libraries wrote (`testdata/kcp/`). Settings: [`KcpSettings`].

pub mod conv;
pub mod driver;
pub mod fec;
pub mod smux;

use std::time::Duration;

use serde::Deserialize;
use serde_with::{DurationSeconds, serde_as};

/// KCP parameters; defaults are go-pantheon's (fabrica-net's `conf.KCP`): nodelay 1,
/// interval 10 ms, resend 2, nc 1, windows 128/128, MTU 1400, FEC with 10 data and 3 parity
/// shards, and smux version 2 streams on top (frames of at most 4096 bytes, a keepalive every
/// 10 s, dead after 30 s of silence). An edge with these defaults serves every kind of client:
/// it reads FEC and plain datagrams alike and answers a conversation the way it opened, and it
/// tells smux from frames by a conversation's first byte. With FEC or smux off it serves only
/// clients without them.
#[serde_as]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KcpSettings {
    /// Nodelay mode.
    pub nodelay: bool,
    /// Internal update interval, milliseconds.
    pub interval: i32,
    /// Fast resend after this many duplicate ACKs (0 = off).
    pub resend: i32,
    /// Turn congestion control off.
    pub nc: bool,
    /// Send window, segments.
    pub send_window: u16,
    /// Receive window, segments.
    pub recv_window: u16,
    /// MTU, bytes: the largest datagram, FEC header included.
    pub mtu: usize,
    /// FEC data shards per group (kcp-go's `dataShards`); 0 with `fec_parity_shards` 0 turns
    /// FEC off.
    pub fec_data_shards: usize,
    /// FEC parity shards per group (kcp-go's `parityShards`).
    pub fec_parity_shards: usize,
    /// Run smux streams on the conversation, each its own session; off, the conversation's
    /// bytes are one session's frames. An edge with smux on serves both: a conversation whose
    /// first byte is a frame's (0) rather than the smux version is one session's frames.
    pub smux: bool,
    /// smux protocol version, 1 or 2.
    pub smux_version: u8,
    /// Largest smux data frame this end sends, bytes.
    pub smux_max_frame: usize,
    /// How often smux sends a keepalive (the file gives seconds).
    #[serde_as(as = "DurationSeconds<u64>")]
    pub smux_keepalive_secs: Duration,
    /// smux silence after which the conversation is dead (the file gives seconds).
    #[serde_as(as = "DurationSeconds<u64>")]
    pub smux_keepalive_timeout_secs: Duration,
    /// The receive window this end advertises per smux stream (version 2), bytes.
    pub smux_max_stream_buffer: u32,
}

impl Default for KcpSettings {
    fn default() -> Self {
        Self {
            nodelay: true,
            interval: 10,
            resend: 2,
            nc: true,
            send_window: 128,
            recv_window: 128,
            mtu: 1400,
            fec_data_shards: 10,
            fec_parity_shards: 3,
            smux: true,
            smux_version: 2,
            smux_max_frame: 4096,
            smux_keepalive_secs: Duration::from_secs(10),
            smux_keepalive_timeout_secs: Duration::from_secs(30),
            smux_max_stream_buffer: 65536,
        }
    }
}

impl KcpSettings {
    /// Plain KCP: no FEC, no smux (what Janus spoke before FEC and smux).
    pub fn plain() -> Self {
        Self {
            fec_data_shards: 0,
            fec_parity_shards: 0,
            smux: false,
            ..Self::default()
        }
    }

    /// Whether datagrams carry FEC.
    pub fn fec(&self) -> bool {
        self.fec_data_shards > 0 && self.fec_parity_shards > 0
    }

    /// The smux settings.
    pub fn smux_config(&self) -> smux::Config {
        smux::Config {
            version: self.smux_version,
            max_frame: self.smux_max_frame,
            keepalive: self.smux_keepalive_secs,
            keepalive_timeout: self.smux_keepalive_timeout_secs,
            max_stream_buffer: self.smux_max_stream_buffer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KcpSettings;

    #[test]
    fn kcp_defaults_are_go_pantheons() {
        let s = KcpSettings::default();
        assert!(s.nodelay && s.nc);
        assert_eq!((s.interval, s.resend), (10, 2));
        assert_eq!((s.send_window, s.recv_window, s.mtu), (128, 128, 1400));
        assert_eq!((s.fec_data_shards, s.fec_parity_shards), (10, 3));
        assert!(s.fec() && s.smux);
        let smux = s.smux_config();
        assert_eq!((smux.version, smux.max_frame), (2, 4096));
        assert_eq!(smux.keepalive, std::time::Duration::from_secs(10));
        assert_eq!(smux.keepalive_timeout, std::time::Duration::from_secs(30));
        assert!(!KcpSettings::plain().fec() && !KcpSettings::plain().smux);
    }
}
