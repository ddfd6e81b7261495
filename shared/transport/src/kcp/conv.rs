//! One KCP conversation as kcp-go runs it: datagrams checked, FEC-decoded and fed to the KCP
//! core; bytes written go out as KCP segments, FEC-encoded when the conversation uses FEC.
//! Sans-IO: datagrams, bytes and time in; datagrams, bytes and the next deadline out.
//!
//! The KCP core is the `kcp` crate (the sans-IO port of skywind3000's ikcp that tokio_kcp is
//! built on). Its segments are ikcp's: `conv: u32 LE`, `cmd: u8` (81 push, 82 ack, 83 window
//! probe, 84 window size), `frg: u8`, `wnd: u16 LE`, `ts`, `sn`, `una`, `len: u32 LE`, then
//! `len` bytes; a datagram carries one or more of them. With FEC a datagram's KCP packet is
//! shortened by the 8 bytes of the FEC data header, so a whole datagram stays within the MTU as
//! in kcp-go. Writes use KCP's stream mode (segments filled to the MSS, fragment 0), which a
//! kcp-go peer in message mode reads as one message per segment; reads accept either mode.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::Mutex;

use super::fec;
use crate::error::{Error, Result};
use crate::kcp::KcpSettings;

/// The size of a KCP segment header.
pub const SEGMENT_HEADER_LEN: usize = ::kcp::KCP_OVERHEAD;
const CMD_PUSH: u8 = 81;
const CMD_ACK: u8 = 82;
const CMD_WINS: u8 = 84;
/// The largest sequence number (and acknowledged time, which is this end's clock in ms) a
/// segment may carry: a conversation carries at most 2^31 segments each way and lasts at most
/// 2^31 ms (24 days).
const MAX_COUNTER: u32 = i32::MAX as u32;

/// Unacknowledged segments a writer may queue, in send windows: past this, writes wait.
const SEND_QUEUE_WINDOWS: usize = 2;

/// What a datagram is, judged from its bytes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// KCP segments of conversation `conv`, plain or in a FEC data packet.
    Segments {
        /// The conversation id every segment carries.
        conv: u32,
        /// Whether they came in a FEC data packet.
        fec: bool,
        /// Whether one of them is a push (data), the only kind that may open a conversation.
        push: bool,
        /// The lowest sequence number among the pushes (0 for a conversation's first).
        first_sn: u32,
    },
    /// A FEC parity packet, which names no conversation.
    Parity,
}

/// Checks that `datagram` is KCP segments (in a FEC data packet, or a FEC parity packet, when
/// `fec` is on): known commands, lengths within the datagram, one conversation id, nothing
/// trailing, fragment numbers below 255, and sequence numbers (and acknowledged times) below
/// 2^31, which the KCP core needs to compare them safely. A [`Conversation`] checks every
/// packet it is fed the same way.
pub fn classify(datagram: &[u8], fec: bool) -> Result<Datagram> {
    if fec && fec::is_fec(datagram) {
        let header = fec::parse(datagram)?;
        return match header.kind {
            fec::Kind::Parity => Ok(Datagram::Parity),
            fec::Kind::Data => segments(fec::data_payload(datagram), true),
        };
    }
    segments(datagram, false)
}

fn segments(mut packet: &[u8], fec: bool) -> Result<Datagram> {
    if packet.len() < SEGMENT_HEADER_LEN {
        return Err(Error::KcpInvalid("shorter than a KCP segment header"));
    }
    let conv = u32::from_le_bytes(packet[..4].try_into().expect("4 bytes"));
    let (mut push, mut first_sn) = (false, u32::MAX);
    while !packet.is_empty() {
        if packet.len() < SEGMENT_HEADER_LEN {
            return Err(Error::KcpInvalid("trailing bytes after the KCP segments"));
        }
        let field = |at: usize| u32::from_le_bytes(packet[at..at + 4].try_into().expect("4"));
        if field(0) != conv {
            return Err(Error::KcpInvalid("segments of different conversations"));
        }
        let cmd = packet[4];
        if !(CMD_PUSH..=CMD_WINS).contains(&cmd) {
            return Err(Error::KcpInvalid("unknown KCP command"));
        }
        // A message has at most 255 fragments, numbered 254 down to 0 (kcp-go refuses more);
        // the core's `frg + 1` overflows on 255.
        if packet[5] == u8::MAX {
            return Err(Error::KcpInvalid("KCP fragment number 255"));
        }
        let len = field(20) as usize;
        if len > packet.len() - SEGMENT_HEADER_LEN {
            return Err(Error::KcpInvalid("KCP segment longer than the datagram"));
        }
        // The core compares these with its own counters as `a as i32 - b as i32`, which
        // overflows (a panic with overflow checks) for values half the range away.
        let (ts, sn, una) = (field(8), field(12), field(16));
        if sn > MAX_COUNTER || una > MAX_COUNTER || (cmd == CMD_ACK && ts > MAX_COUNTER) {
            return Err(Error::KcpInvalid("KCP sequence number or time beyond 2^31"));
        }
        if cmd == CMD_PUSH {
            push = true;
            first_sn = first_sn.min(field(12));
        }
        packet = &packet[SEGMENT_HEADER_LEN + len..];
    }
    Ok(Datagram::Segments {
        conv,
        fec,
        push,
        first_sn,
    })
}

/// The KCP core's output: every write is one KCP packet.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One KCP conversation with its FEC codec.
pub struct Conversation {
    kcp: ::kcp::Kcp<Sink>,
    sink: Sink,
    encoder: Option<fec::Encoder>,
    decoder: Option<fec::Decoder>,
    start: Instant,
    queued: std::collections::VecDeque<Vec<u8>>,
    send_limit: usize,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("conv", &self.kcp.conv())
            .field("fec", &self.encoder.is_some())
            .finish()
    }
}

fn kcp_error(e: ::kcp::Error) -> Error {
    Error::Io(e.into())
}

impl Conversation {
    /// Conversation `conv` with `settings`, started at `now`. It sends FEC packets when `fec`
    /// (which needs shard counts in `settings`); it decodes them whenever `settings` has them.
    pub fn new(conv: u32, settings: &KcpSettings, fec: bool, now: Instant) -> Result<Self> {
        let sink = Sink::default();
        let mut kcp = ::kcp::Kcp::new_stream(conv, sink.clone());
        let (data, parity) = (settings.fec_data_shards, settings.fec_parity_shards);
        let has_fec = data > 0 && parity > 0;
        let encoder = match fec && has_fec {
            true => Some(fec::Encoder::new(data, parity)?),
            false => None,
        };
        let decoder = match has_fec {
            true => Some(fec::Decoder::new(data, parity)?),
            false => None,
        };
        let overhead = if encoder.is_some() {
            fec::DATA_HEADER_LEN
        } else {
            0
        };
        kcp.set_mtu(settings.mtu.saturating_sub(overhead))
            .map_err(kcp_error)?;
        kcp.set_nodelay(
            settings.nodelay,
            settings.interval,
            settings.resend,
            settings.nc,
        );
        kcp.set_wndsize(settings.send_window, settings.recv_window);
        kcp.update(0).map_err(kcp_error)?;
        Ok(Self {
            kcp,
            sink,
            encoder,
            decoder,
            start: now,
            queued: Default::default(),
            send_limit: SEND_QUEUE_WINDOWS * settings.send_window as usize,
        })
    }

    fn ms(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_millis() as u32
    }

    /// Feeds a datagram from the peer, received at `now`: FEC-decoded when it is a FEC packet,
    /// its segments (and any recovered from parity) handed to KCP, acknowledgements flushed at
    /// once (kcp-go's ACK-no-delay). Returns how many KCP packets parity recovered.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) -> Result<usize> {
        let now_ms = self.ms(now);
        self.kcp.update(now_ms).map_err(kcp_error)?;
        let mut recovered = 0;
        if fec::is_fec(datagram) {
            let decoder = self
                .decoder
                .as_mut()
                .ok_or(Error::KcpInvalid("FEC packet without FEC configured"))?;
            let header = fec::parse(datagram)?;
            // A data packet's shard counts for its group even when its segments are refused.
            let payload = fec::data_payload(datagram);
            let direct = header.kind == fec::Kind::Data && segments(payload, true).is_ok();
            if direct {
                self.kcp.input(payload).map_err(kcp_error)?;
            }
            for packet in decoder.decode(header, datagram, now_ms) {
                // A recovered packet that is no valid segment, or that KCP refuses, is
                // dropped, as in kcp-go.
                if segments(&packet, true).is_ok() && self.kcp.input(&packet).is_ok() {
                    recovered += 1;
                }
            }
        } else {
            segments(datagram, false)?;
            self.kcp.input(datagram).map_err(kcp_error)?;
        }
        // The core's `flush_ack` leaves the last acknowledgements buffered; a full flush
        // sends them (and anything else due).
        self.kcp.flush().map_err(kcp_error)?;
        Ok(recovered)
    }

    /// How many more bytes [`Conversation::send`] takes now.
    pub fn send_room(&self) -> usize {
        self.send_limit.saturating_sub(self.kcp.wait_snd()) * self.kcp.mss()
    }

    /// Queues as much of `data` as the send queue has room for and sends it; returns how much
    /// it took.
    pub fn send(&mut self, data: &[u8]) -> Result<usize> {
        let n = data.len().min(self.send_room());
        // The core refuses a single call of 128 segments or more.
        for chunk in data[..n].chunks(64 * self.kcp.mss()) {
            self.kcp.send(chunk).map_err(kcp_error)?;
        }
        if n > 0 {
            self.kcp.flush().map_err(kcp_error)?;
        }
        Ok(n)
    }

    /// Moves received bytes into `out` while it holds fewer than `limit`; returns how many.
    pub fn recv(&mut self, out: &mut BytesMut, limit: usize) -> usize {
        let mut moved = 0;
        while out.len() < limit {
            let Ok(size) = self.kcp.peeksize() else { break };
            let at = out.len();
            out.resize(at + size, 0);
            match self.kcp.recv(&mut out[at..]) {
                Ok(n) => {
                    out.truncate(at + n);
                    moved += n;
                }
                Err(_) => {
                    out.truncate(at);
                    break;
                }
            }
        }
        if moved > 0 {
            // A receive window that reopened is told at the next flush: now, as an idle
            // conversation has no timer that would flush.
            let _ = self.kcp.flush();
        }
        moved
    }

    /// Runs KCP's timers (retransmission, window probes, flushes) at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        self.kcp.update(self.ms(now)).map_err(kcp_error)
    }

    /// When [`Conversation::handle_timeout`] wants to run next: within an interval while
    /// anything is unacknowledged or the peer's window is shut (retransmissions, probes);
    /// never while idle, as only input or a write gives KCP something to do then.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.kcp.wait_snd() == 0 && self.kcp.rmt_wnd() > 0 {
            return None;
        }
        Some(now + std::time::Duration::from_millis(self.kcp.check(self.ms(now)) as u64))
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let packets = std::mem::take(&mut *self.sink.0.lock());
        for packet in packets {
            match &mut self.encoder {
                Some(encoder) => encoder.encode(&packet, |d| self.queued.push_back(d.to_vec())),
                None => self.queued.push_back(packet),
            }
        }
        self.queued.pop_front()
    }

    /// Segments sent and not yet acknowledged, or not yet sent.
    pub fn unacknowledged(&self) -> usize {
        self.kcp.wait_snd()
    }

    /// Whether KCP gave up on the peer (a segment retransmitted too often).
    pub fn is_dead(&self) -> bool {
        self.kcp.is_dead_link()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(fec: bool) -> KcpSettings {
        KcpSettings {
            fec_data_shards: if fec { 10 } else { 0 },
            fec_parity_shards: if fec { 3 } else { 0 },
            ..KcpSettings::default()
        }
    }

    fn drain(conv: &mut Conversation) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| conv.poll_transmit()).collect()
    }

    /// Moves every datagram from `from` to `to`, dropping those `lose` picks.
    fn deliver(
        from: &mut Conversation,
        to: &mut Conversation,
        now: Instant,
        mut lose: impl FnMut(usize) -> bool,
    ) -> usize {
        let datagrams = drain(from);
        for (i, d) in datagrams.iter().enumerate() {
            if !lose(i) {
                to.handle_datagram(d, now).unwrap();
            }
        }
        datagrams.len()
    }

    #[test]
    fn kcp_go_datagrams_are_classified() {
        let go = super::super::fec::tests::go_datagrams();
        let Datagram::Segments {
            conv,
            fec,
            push,
            first_sn,
        } = classify(&go[0], true).unwrap()
        else {
            panic!("segments")
        };
        assert_eq!(conv, u32::from_le_bytes(go[0][8..12].try_into().unwrap()));
        assert!(fec && push);
        assert_eq!(first_sn, 0);
        assert_eq!(classify(&go[10], true).unwrap(), Datagram::Parity);
        // The same packet without FEC, and a FEC packet to an edge without FEC.
        assert!(matches!(
            classify(fec::data_payload(&go[0]), false).unwrap(),
            Datagram::Segments {
                fec: false,
                push: true,
                ..
            }
        ));
        assert!(classify(&go[0], false).is_err(), "0xf1 is no KCP command");
    }

    #[test]
    fn garbage_is_not_a_segment() {
        let go = super::super::fec::tests::go_datagrams();
        let plain = fec::data_payload(&go[0]).to_vec();
        let refused = |d: &[u8]| classify(d, true).is_err();
        assert!(refused(&plain[..20]), "short");
        let mut cmd = plain.clone();
        cmd[4] = 80;
        assert!(refused(&cmd), "unknown command");
        let mut len = plain.clone();
        len[20] = 11;
        assert!(refused(&len), "longer than the datagram");
        let mut trailing = plain.clone();
        trailing.push(0);
        assert!(refused(&trailing));
        let mut two = plain.clone();
        two.extend_from_slice(&plain);
        two[SEGMENT_HEADER_LEN + 10] ^= 1;
        assert!(refused(&two), "two conversations");
        // Counters half the range away from the core's (found by fuzzing: the core's
        // comparisons overflow).
        let mut far = plain.clone();
        far[12..16].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        assert!(refused(&far), "sequence number");
        let mut far_ack = plain.clone();
        far_ack[4] = 82;
        far_ack[8..12].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        assert!(refused(&far_ack), "acknowledged time");
        let mut fragment = plain.clone();
        fragment[5] = 255;
        assert!(refused(&fragment), "fragment 255");
        // Without the check the core would panic here (tests run with overflow checks).
        let now = Instant::now();
        let conv_id = u32::from_le_bytes(far[..4].try_into().unwrap());
        let mut conv = Conversation::new(conv_id, &settings(false), false, now).unwrap();
        assert!(
            conv.handle_datagram(&far, now).is_err(),
            "a conversation refuses it too"
        );
        // A go-pantheon frame sent without KCP, and an smux header.
        assert!(refused(&[0, 0, 0, 5, 1, 2, 3, 4, 5]));
        assert!(refused(&[2, 0, 0, 0, 3, 0, 0, 0]));
    }

    #[test]
    fn bytes_cross_in_both_modes() {
        for with_fec in [false, true] {
            let now = Instant::now();
            let mut a = Conversation::new(7, &settings(with_fec), with_fec, now).unwrap();
            let mut b = Conversation::new(7, &settings(with_fec), with_fec, now).unwrap();
            let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
            assert_eq!(a.send(&data).unwrap(), data.len());
            let sent = drain(&mut a);
            if with_fec {
                assert!(sent.iter().all(|d| fec::is_fec(d)));
                assert!(sent.iter().all(|d| d.len() <= 1400), "within the MTU");
            }
            for d in &sent {
                b.handle_datagram(d, now).unwrap();
            }
            let mut got = BytesMut::new();
            b.recv(&mut got, usize::MAX);
            assert_eq!(&got[..], &data[..], "fec {with_fec}");
            assert!(
                a.poll_timeout(now).is_some(),
                "retransmission timer while unacknowledged"
            );
            deliver(&mut b, &mut a, now, |_| false);
            assert_eq!(a.unacknowledged(), 0, "acknowledged");
            assert_eq!(a.poll_timeout(now), None, "no timer while idle");
        }
    }

    #[test]
    fn a_lost_datagram_is_recovered_by_parity_without_a_retransmission() {
        let now = Instant::now();
        let mut a = Conversation::new(9, &settings(true), true, now).unwrap();
        let mut b = Conversation::new(9, &settings(true), true, now).unwrap();
        // Ten small writes make ten data packets and a group's parity.
        for i in 0..10u8 {
            a.send(&[i; 100]).unwrap();
        }
        let sent = deliver(&mut a, &mut b, now, |i| i == 4);
        assert_eq!(sent, 13);
        let mut got = BytesMut::new();
        b.recv(&mut got, usize::MAX);
        let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 100]).collect();
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn reads_stop_at_the_limit_and_writes_at_the_send_queue() {
        let now = Instant::now();
        let mut a = Conversation::new(1, &settings(false), false, now).unwrap();
        let mut b = Conversation::new(1, &settings(false), false, now).unwrap();
        let room = a.send_room();
        assert_eq!(room, 2 * 128 * (1400 - 24));
        let big = vec![1u8; room + 10_000];
        assert_eq!(a.send(&big).unwrap(), room);
        assert_eq!(a.send_room(), 0);
        deliver(&mut a, &mut b, now, |_| false);
        let mut got = BytesMut::new();
        b.recv(&mut got, 3000);
        assert!(
            got.len() >= 3000 && got.len() < 3000 + 1400,
            "{}",
            got.len()
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_are_classified_or_refused_and_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            for fec in [false, true] {
                if let Ok(Datagram::Segments { .. }) = classify(&bytes, fec) {
                    // Whatever passes the check, the KCP core takes without panicking.
                    let now = Instant::now();
                    let mut conv = Conversation::new(1, &settings(fec), fec, now).unwrap();
                    let _ = conv.handle_datagram(&bytes, now);
                }
            }
        }
    }
}
