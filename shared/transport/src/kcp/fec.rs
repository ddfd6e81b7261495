//! kcp-go's forward error correction, byte for byte: the packet layout, the encoder's shard
//! groups and the decoder's ordered receive queue with Reed–Solomon recovery. Sans-IO: bytes
//! and a millisecond clock in, datagrams and recovered KCP packets out.
//!
//! Every datagram of a FEC conversation starts with `seqid: u32 LE` and `flag: u16 LE`
//! (`0xf1` data, `0xf2` parity). A data packet goes on with `size: u16 LE` (the bytes from the
//! size field to the end, itself included) and the KCP packet. Each group is `data_shards`
//! data packets followed by `parity_shards` parity packets with consecutive seqids; the parity
//! is Reed–Solomon over the group's shards (everything after the 6-byte header), each padded
//! with zeros to the longest. Sequence ids wrap at the largest multiple of the group size, so a
//! group never straddles the wrap.
//!
//! The codec is `reed-solomon-erasure`, a port of klauspost/reedsolomon (what kcp-go uses) with
//! the same field (GF(2^8), polynomial 0x11d) and the same systematic matrix (a Vandermonde
//! matrix times the inverse of its top square); the unit tests check its parity against
//! datagrams captured from real kcp-go. kcp-go's decoder also re-tunes itself to a peer whose
//! shard counts differ ("autotune"); this one does not: a packet whose flag disagrees with its
//! position in a group of the configured size takes no part in recovery (a data packet's KCP
//! segments are still delivered).

use std::collections::VecDeque;

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::error::{Error, Result};

/// seqid + flag.
pub const HEADER_LEN: usize = 6;
/// seqid + flag + size: what FEC adds in front of every KCP packet it carries.
pub const DATA_HEADER_LEN: usize = 8;
/// The flag of a data packet.
pub const FLAG_DATA: u16 = 0xf1;
/// The flag of a parity packet.
pub const FLAG_PARITY: u16 = 0xf2;
/// A packet waiting for its group longer than this is dropped (kcp-go's `fecExpire`).
const EXPIRE_MS: u32 = 60_000;
/// The receive queue holds at most this many groups' worth of packets (kcp-go's `rxFECMulti`).
const RX_GROUPS: usize = 3;

/// What a FEC packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A data shard: size and a KCP packet.
    Data,
    /// A parity shard.
    Parity,
}

/// A FEC packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The packet's sequence id.
    pub seqid: u32,
    /// Data or parity.
    pub kind: Kind,
}

/// Whether `datagram` is marked as a FEC packet. A plain KCP segment never is: its bytes 4..6
/// are a command (81–84) and a fragment count, never `0xf1 0x00` or `0xf2 0x00`.
pub fn is_fec(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && matches!(flag(datagram), FLAG_DATA | FLAG_PARITY)
}

fn flag(datagram: &[u8]) -> u16 {
    u16::from_le_bytes([datagram[4], datagram[5]])
}

/// Reads and checks the header of a FEC packet: at least 8 bytes (kcp-go's minimum for both
/// kinds), a known flag, and for data a size field that matches the datagram.
pub fn parse(datagram: &[u8]) -> Result<Header> {
    if datagram.len() < DATA_HEADER_LEN {
        return Err(Error::KcpInvalid("FEC packet shorter than its header"));
    }
    let seqid = u32::from_le_bytes(datagram[..4].try_into().expect("4 bytes"));
    let kind = match flag(datagram) {
        FLAG_DATA => Kind::Data,
        FLAG_PARITY => Kind::Parity,
        _ => return Err(Error::KcpInvalid("unknown FEC flag")),
    };
    if kind == Kind::Data {
        let size = u16::from_le_bytes([datagram[6], datagram[7]]) as usize;
        if size != datagram.len() - HEADER_LEN {
            return Err(Error::KcpInvalid(
                "FEC data size disagrees with the datagram",
            ));
        }
    }
    Ok(Header { seqid, kind })
}

/// The KCP packet inside a FEC data packet (checked by [`parse`]).
pub fn data_payload(datagram: &[u8]) -> &[u8] {
    &datagram[DATA_HEADER_LEN..]
}

fn write_header(out: &mut Vec<u8>, seqid: u32, flag: u16) {
    out.extend_from_slice(&seqid.to_le_bytes());
    out.extend_from_slice(&flag.to_le_bytes());
}

fn codec(data_shards: usize, parity_shards: usize) -> Result<ReedSolomon> {
    ReedSolomon::new(data_shards, parity_shards)
        .map_err(|_| Error::KcpInvalid("unusable FEC shard counts"))
}

/// Wraps outgoing KCP packets as data shards and emits each group's parity.
pub struct Encoder {
    rs: ReedSolomon,
    data_shards: usize,
    /// Sequence ids wrap here (a multiple of the group size).
    paws: u32,
    next: u32,
    /// The group being filled: data shards (size + packet), then room for the parity.
    shards: Vec<Vec<u8>>,
    filled: usize,
    longest: usize,
    out: Vec<u8>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("shards", &self.shards.len())
            .field("next", &self.next)
            .finish()
    }
}

impl Encoder {
    /// An encoder for groups of `data_shards` + `parity_shards` (both at least 1, at most 256
    /// together).
    pub fn new(data_shards: usize, parity_shards: usize) -> Result<Self> {
        let rs = codec(data_shards, parity_shards)?;
        let group = (data_shards + parity_shards) as u32;
        Ok(Self {
            rs,
            data_shards,
            paws: u32::MAX / group * group,
            next: 0,
            shards: vec![Vec::new(); data_shards + parity_shards],
            filled: 0,
            longest: 0,
            out: Vec::new(),
        })
    }

    /// Sends `packet` (KCP segments) as the next data shard: hands `emit` the data datagram
    /// and, when it completes a group, the group's parity datagrams.
    pub fn encode(&mut self, packet: &[u8], mut emit: impl FnMut(&[u8])) {
        let size = (packet.len() + 2) as u16;
        self.out.clear();
        write_header(&mut self.out, self.next, FLAG_DATA);
        self.next = self.next.wrapping_add(1);
        self.out.extend_from_slice(&size.to_le_bytes());
        self.out.extend_from_slice(packet);
        emit(&self.out);

        let shard = &mut self.shards[self.filled];
        shard.clear();
        shard.extend_from_slice(&self.out[HEADER_LEN..]);
        self.longest = self.longest.max(shard.len());
        self.filled += 1;
        if self.filled < self.data_shards {
            return;
        }
        for shard in &mut self.shards {
            shard.resize(self.longest, 0);
        }
        self.rs
            .encode(&mut self.shards)
            .expect("shards of equal length and the right count");
        for parity in &self.shards[self.data_shards..] {
            self.out.clear();
            write_header(&mut self.out, self.next, FLAG_PARITY);
            self.out.extend_from_slice(parity);
            emit(&self.out);
            self.next = (self.next.wrapping_add(1)) % self.paws;
        }
        self.filled = 0;
        self.longest = 0;
    }
}

/// A packet waiting in the receive queue.
struct Waiting {
    seqid: u32,
    kind: Kind,
    /// Everything after the 6-byte header.
    shard: Vec<u8>,
    arrived_ms: u32,
}

/// Collects incoming FEC packets per group and recovers lost data shards from parity.
pub struct Decoder {
    rs: ReedSolomon,
    data_shards: usize,
    group: usize,
    /// Ordered by seqid (wrapping), at most `RX_GROUPS` groups' worth.
    rx: VecDeque<Waiting>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("group", &self.group)
            .field("waiting", &self.rx.len())
            .finish()
    }
}

/// `later - earlier` on wrapping 32-bit counters.
fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

impl Decoder {
    /// A decoder for groups of `data_shards` + `parity_shards`.
    pub fn new(data_shards: usize, parity_shards: usize) -> Result<Self> {
        Ok(Self {
            rs: codec(data_shards, parity_shards)?,
            data_shards,
            group: data_shards + parity_shards,
            rx: VecDeque::new(),
        })
    }

    /// Packets waiting for their group.
    pub fn waiting(&self) -> usize {
        self.rx.len()
    }

    /// Takes one FEC packet (`header` from [`parse`]) received at `now_ms` and returns the KCP
    /// packets of the data shards its group let us recover (the received data packet itself
    /// is not among them: the caller delivers it directly).
    pub fn decode(&mut self, header: Header, datagram: &[u8], now_ms: u32) -> Vec<Vec<u8>> {
        let position = (header.seqid % self.group as u32) as usize;
        if (position < self.data_shards) != (header.kind == Kind::Data) {
            return Vec::new();
        }
        let mut at = 0;
        for (i, waiting) in self.rx.iter().enumerate().rev() {
            if waiting.seqid == header.seqid {
                return Vec::new();
            }
            if diff(header.seqid, waiting.seqid) > 0 {
                at = i + 1;
                break;
            }
        }
        self.rx.insert(
            at,
            Waiting {
                seqid: header.seqid,
                kind: header.kind,
                shard: datagram[HEADER_LEN..].to_vec(),
                arrived_ms: now_ms,
            },
        );
        let recovered = self.try_group(header.seqid, position, at);
        if self.rx.len() > RX_GROUPS * self.group {
            self.rx.pop_front();
        }
        while self
            .rx
            .front()
            .is_some_and(|w| diff(now_ms, w.arrived_ms) > EXPIRE_MS as i32)
        {
            self.rx.pop_front();
        }
        recovered
    }

    /// Looks at the group of the packet just inserted at `at`: frees it when all its data is
    /// in, or recovers the missing data shards when enough shards are.
    fn try_group(&mut self, seqid: u32, position: usize, at: usize) -> Vec<Vec<u8>> {
        let begin = seqid.wrapping_sub(position as u32);
        let end = begin.wrapping_add(self.group as u32 - 1);
        let search_begin = at.saturating_sub(position);
        let search_end = (search_begin + self.group - 1).min(self.rx.len() - 1);
        if search_end + 1 - search_begin < self.data_shards {
            return Vec::new();
        }
        let mut present: Vec<Option<usize>> = vec![None; self.group];
        let (mut count, mut data, mut first, mut longest) = (0, 0, 0, 0);
        for i in search_begin..=search_end {
            let waiting = &self.rx[i];
            if diff(waiting.seqid, end) > 0 {
                break;
            }
            if diff(waiting.seqid, begin) >= 0 {
                present[(waiting.seqid % self.group as u32) as usize] = Some(i);
                if count == 0 {
                    first = i;
                }
                count += 1;
                if waiting.kind == Kind::Data {
                    data += 1;
                }
                longest = longest.max(waiting.shard.len());
            }
        }
        if data == self.data_shards {
            self.rx.drain(first..first + count);
            return Vec::new();
        }
        if count < self.data_shards {
            return Vec::new();
        }
        let mut shards: Vec<Option<Vec<u8>>> = present
            .iter()
            .map(|slot| {
                slot.map(|i| {
                    let mut shard = self.rx[i].shard.clone();
                    shard.resize(longest, 0);
                    shard
                })
            })
            .collect();
        let mut recovered = Vec::new();
        if self.rs.reconstruct_data(&mut shards).is_ok() {
            for (k, shard) in shards.into_iter().take(self.data_shards).enumerate() {
                if present[k].is_some() {
                    continue;
                }
                let Some(shard) = shard else { continue };
                // A data shard is `size` (itself included) and the packet, then padding.
                if shard.len() < 2 {
                    continue;
                }
                let size = u16::from_le_bytes([shard[0], shard[1]]) as usize;
                if (2..=shard.len()).contains(&size) {
                    recovered.push(shard[2..size].to_vec());
                }
            }
        }
        self.rx.drain(first..first + count);
        recovered
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Datagrams real kcp-go sent with FEC 10+3 (ten writes of different lengths, then the
    /// group's parity); see `testdata/kcp/gen_vectors.go`.
    pub(crate) fn go_datagrams() -> Vec<Vec<u8>> {
        include_str!("../../testdata/kcp/fec_10_3.hex")
            .lines()
            .map(|line| hex::decode(line).expect("hex"))
            .collect()
    }

    #[test]
    fn headers_are_read_as_kcp_go_writes_them() {
        let go = go_datagrams();
        for (i, datagram) in go.iter().enumerate() {
            assert!(is_fec(datagram));
            let header = parse(datagram).unwrap();
            assert_eq!(header.seqid, i as u32);
            let kind = if i < 10 { Kind::Data } else { Kind::Parity };
            assert_eq!(header.kind, kind);
        }
        // The first data packet carries one KCP PUSH of ten bytes.
        let kcp = data_payload(&go[0]);
        assert_eq!(kcp.len(), 24 + 10);
        assert_eq!(kcp[4], 81);
    }

    #[test]
    fn the_encoder_writes_the_same_datagrams_as_kcp_go() {
        let go = go_datagrams();
        let mut encoder = Encoder::new(10, 3).unwrap();
        let mut ours = Vec::new();
        for datagram in &go[..10] {
            encoder.encode(data_payload(datagram), |d| ours.push(d.to_vec()));
        }
        assert_eq!(ours.len(), 13);
        assert_eq!(ours, go, "data and parity byte for byte");
    }

    #[test]
    fn a_lost_data_shard_is_recovered_from_parity() {
        let go = go_datagrams();
        for lost in [0, 4, 9] {
            let mut decoder = Decoder::new(10, 3).unwrap();
            let mut recovered = Vec::new();
            for (i, datagram) in go.iter().enumerate() {
                if i == lost {
                    continue;
                }
                recovered.extend(decoder.decode(parse(datagram).unwrap(), datagram, 0));
            }
            assert_eq!(
                recovered,
                vec![data_payload(&go[lost]).to_vec()],
                "lost {lost}"
            );
            // The group was freed at its tenth shard; the two later parity packets wait (until
            // they expire or are pushed out), as in kcp-go.
            assert_eq!(decoder.waiting(), 2);
        }
    }

    #[test]
    fn three_lost_shards_are_recovered_and_four_are_not() {
        let go = go_datagrams();
        let run = |lost: &[usize]| {
            let mut decoder = Decoder::new(10, 3).unwrap();
            let mut recovered = Vec::new();
            for (i, datagram) in go.iter().enumerate() {
                if !lost.contains(&i) {
                    recovered.extend(decoder.decode(parse(datagram).unwrap(), datagram, 0));
                }
            }
            recovered
        };
        let want: Vec<_> = [1, 5, 8]
            .iter()
            .map(|&i| data_payload(&go[i]).to_vec())
            .collect();
        assert_eq!(run(&[1, 5, 8]), want);
        assert!(run(&[1, 5, 8, 11]).is_empty());
    }

    #[test]
    fn a_complete_group_recovers_nothing_and_is_freed() {
        let go = go_datagrams();
        let mut decoder = Decoder::new(10, 3).unwrap();
        for datagram in &go[..10] {
            assert!(
                decoder
                    .decode(parse(datagram).unwrap(), datagram, 0)
                    .is_empty()
            );
        }
        assert_eq!(decoder.waiting(), 0);
        // Late parity of a freed group waits alone, then expires.
        assert!(
            decoder
                .decode(parse(&go[10]).unwrap(), &go[10], 0)
                .is_empty()
        );
        assert_eq!(decoder.waiting(), 1);
        assert!(
            decoder
                .decode(parse(&go[11]).unwrap(), &go[11], 70_000)
                .is_empty()
        );
        assert_eq!(decoder.waiting(), 1, "the first expired");
    }

    #[test]
    fn duplicates_and_out_of_order_packets_still_recover() {
        let go = go_datagrams();
        let mut decoder = Decoder::new(10, 3).unwrap();
        // Data 3 lost; the tenth shard (data 7) arrives with parity 12 and a duplicate before
        // it; the late parity finds its group already freed.
        let order = [9, 8, 0, 1, 12, 5, 5, 2, 4, 6, 7, 10, 11];
        let mut recovered = Vec::new();
        for i in order {
            recovered.extend(decoder.decode(parse(&go[i]).unwrap(), &go[i], 0));
        }
        assert_eq!(recovered, vec![data_payload(&go[3]).to_vec()]);
    }

    #[test]
    fn packets_that_disagree_with_the_group_size_take_no_part() {
        let go = go_datagrams();
        // Parity at a data position (the peer uses other shard counts).
        let mut decoder = Decoder::new(8, 2).unwrap();
        assert!(
            decoder
                .decode(parse(&go[10]).unwrap(), &go[10], 0)
                .is_empty()
        );
        assert_eq!(decoder.waiting(), 0);
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(!is_fec(&[0; 5]));
        assert!(parse(&[0, 0, 0, 0, 0xf1, 0]).is_err(), "too short");
        let mut bad_size = go_datagrams()[0].clone();
        bad_size[6] ^= 1;
        assert!(parse(&bad_size).is_err());
        assert!(parse(&[0, 0, 0, 0, 0xf3, 0, 2, 0]).is_err());
        // A plain KCP segment is not a FEC packet.
        assert!(!is_fec(data_payload(&go_datagrams()[0])));
    }

    #[test]
    fn sequence_ids_wrap_at_a_multiple_of_the_group() {
        let mut encoder = Encoder::new(2, 1).unwrap();
        encoder.next = encoder.paws - 3;
        let mut seqids = Vec::new();
        for _ in 0..4 {
            encoder.encode(b"x", |d| seqids.push(parse(d).unwrap().seqid));
        }
        let p = encoder.paws;
        assert_eq!(seqids, vec![p - 3, p - 2, p - 1, 0, 1, 2]);
    }

    proptest::proptest! {
        #[test]
        fn any_three_losses_in_a_group_are_recovered(
            packets in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300), 10),
            lost in proptest::sample::subsequence((0..13usize).collect::<Vec<_>>(), 0..=3),
        ) {
            let mut encoder = Encoder::new(10, 3).unwrap();
            let mut wire = Vec::new();
            for packet in &packets {
                encoder.encode(packet, |d| wire.push(d.to_vec()));
            }
            let mut decoder = Decoder::new(10, 3).unwrap();
            let mut got: Vec<Option<Vec<u8>>> = vec![None; 10];
            let mut recovered = Vec::new();
            for (i, datagram) in wire.iter().enumerate() {
                if lost.contains(&i) {
                    continue;
                }
                let header = parse(datagram).unwrap();
                if header.kind == Kind::Data {
                    got[i] = Some(data_payload(datagram).to_vec());
                }
                recovered.extend(decoder.decode(header, datagram, 0));
            }
            for packet in recovered {
                let slot = got.iter().position(Option::is_none).unwrap();
                got[slot] = Some(packet);
            }
            let mut got: Vec<Vec<u8>> = got.into_iter().map(|p| p.expect("every packet")).collect();
            let mut want = packets.clone();
            got.sort();
            want.sort();
            proptest::prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_datagrams_never_panic_the_decoder(
            datagrams in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..40),
        ) {
            let mut decoder = Decoder::new(3, 2).unwrap();
            for datagram in &datagrams {
                if let Ok(header) = parse(datagram) {
                    for packet in decoder.decode(header, datagram, 0) {
                        proptest::prop_assert!(packet.len() < 64);
                    }
                }
                proptest::prop_assert!(decoder.waiting() <= RX_GROUPS * 5);
            }
        }
    }
}
