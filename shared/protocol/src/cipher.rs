//! Per-direction frame protection after the handshake.
//!
//! A [`Sealer`] turns a packet into one frame on the wire; an [`Opener`] turns one frame's
//! payload back into packet bytes. Three modes:
//! - **v2**: AES-256-GCM with a per-direction key and IV, nonce = IV XOR be64(counter), the
//!   4-byte frame header as AAD. No nonce on the wire; a replayed, reordered, dropped or
//!   tampered frame fails to open.
//! - **legacy** (go-pantheon v1): AES-256-GCM under the raw shared secret, a random 12-byte
//!   nonce in front of the ciphertext, no AAD.
//! - **plain**: the packet bytes as they are (dev-only, and the handshake itself).
//!
//! Sealing writes the frame straight into the output buffer and encrypts it in place: one
//! packet encode, no intermediate allocation.
//!
//! The AEAD is `ring`'s: its AES-256-GCM context is 544 bytes against aes-gcm's 992 (which keeps
//! a software key schedule beside the AES-NI one), and it seals faster; each held session has
//! two (issue 18). Tokens stay on aes-gcm, which has the AES-192 that ring lacks.

use bytes::{BufMut, BytesMut};
use janus_proto::packet::Packet;
use prost::Message;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Tag, UnboundKey};

use crate::error::{Error, Result};
use crate::frame;

/// Bytes an AES-GCM tag adds to a frame.
pub const TAG_LEN: usize = 16;
/// Bytes a legacy random nonce adds to a frame.
pub const LEGACY_NONCE_LEN: usize = 12;

/// Key and IV of one direction of a v2 session.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKeys {
    /// AES-256-GCM key.
    pub key: [u8; 32],
    /// The IV that frame counters are XORed into.
    pub iv: [u8; 12],
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKeys(***)")
    }
}

/// One AES-256-GCM key.
struct Aead(LessSafeKey);

impl Aead {
    fn new(key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key).expect("an AES-256 key is 32 bytes");
        Self(LessSafeKey::new(key))
    }

    /// Encrypts `in_out` in place; returns the tag.
    fn seal(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
            .map_err(|_| Error::Decrypt)?;
        Ok(tag.as_ref().try_into().expect("a GCM tag is 16 bytes"))
    }

    /// Decrypts `payload` in place: ciphertext then tag; on success only the plaintext is left.
    fn open(&self, nonce: [u8; 12], aad: &[u8], payload: &mut BytesMut) -> Result<()> {
        let body_len = payload.len().checked_sub(TAG_LEN).ok_or(Error::Decrypt)?;
        let tag: [u8; TAG_LEN] = payload[body_len..].try_into().expect("TAG_LEN bytes");
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        self.0
            .open_in_place_separate_tag(
                nonce,
                Aad::from(aad),
                Tag::from(tag),
                &mut payload[..body_len],
                0..,
            )
            .map_err(|_| Error::Decrypt)?;
        payload.truncate(body_len);
        Ok(())
    }
}

/// Counter-nonce state of one v2 direction.
struct Counter {
    aead: Aead,
    iv: [u8; 12],
    next: u64,
}

impl Counter {
    fn new(keys: &DirectionKeys) -> Self {
        Self {
            aead: Aead::new(&keys.key),
            iv: keys.iv,
            next: 0,
        }
    }

    /// The nonce for the next frame: `iv XOR (0x00000000 || be64(n))`; then advances `n`.
    fn next_nonce(&mut self) -> Result<[u8; 12]> {
        let n = self.next;
        self.next = n.checked_add(1).ok_or(Error::NonceExhausted)?;
        let mut nonce = self.iv;
        for (b, c) in nonce[4..].iter_mut().zip(n.to_be_bytes()) {
            *b ^= c;
        }
        Ok(nonce)
    }
}

enum Mode {
    Plain,
    V2(Counter),
    Legacy(Aead),
}

/// Seals outgoing packets of one direction into frames.
pub struct Sealer(Mode);

/// Opens incoming frame payloads of one direction into packet bytes.
pub struct Opener(Mode);

impl Sealer {
    pub(crate) fn plain() -> Self {
        Self(Mode::Plain)
    }

    pub(crate) fn v2(keys: &DirectionKeys) -> Self {
        Self(Mode::V2(Counter::new(keys)))
    }

    pub(crate) fn legacy(key: &[u8; 32]) -> Self {
        Self(Mode::Legacy(Aead::new(key)))
    }

    /// Appends `packet` to `out` as one frame whose payload is at most `max` bytes.
    pub fn seal(&mut self, packet: &Packet, max: usize, out: &mut BytesMut) -> Result<()> {
        let plain_len = packet.encoded_len();
        let start = out.len();
        match &mut self.0 {
            Mode::Plain => {
                out.put_slice(&frame::header(plain_len, max)?);
                packet.encode(out).expect("BytesMut grows");
            }
            Mode::V2(counter) => {
                let header = frame::header(plain_len + TAG_LEN, max)?;
                let nonce = counter.next_nonce()?;
                out.reserve(frame::HEADER_LEN + plain_len + TAG_LEN);
                out.put_slice(&header);
                packet.encode(out).expect("BytesMut grows");
                let body = start + frame::HEADER_LEN;
                let tag = counter.aead.seal(nonce, &header, &mut out[body..])?;
                out.put_slice(&tag);
            }
            Mode::Legacy(aead) => {
                let header = frame::header(LEGACY_NONCE_LEN + plain_len + TAG_LEN, max)?;
                let nonce: [u8; LEGACY_NONCE_LEN] = rand::random();
                out.reserve(frame::HEADER_LEN + LEGACY_NONCE_LEN + plain_len + TAG_LEN);
                out.put_slice(&header);
                out.put_slice(&nonce);
                packet.encode(out).expect("BytesMut grows");
                let body = start + frame::HEADER_LEN + LEGACY_NONCE_LEN;
                let tag = aead.seal(nonce, &[], &mut out[body..])?;
                out.put_slice(&tag);
            }
        }
        Ok(())
    }
}

impl Opener {
    pub(crate) fn plain() -> Self {
        Self(Mode::Plain)
    }

    pub(crate) fn v2(keys: &DirectionKeys) -> Self {
        Self(Mode::V2(Counter::new(keys)))
    }

    pub(crate) fn legacy(key: &[u8; 32]) -> Self {
        Self(Mode::Legacy(Aead::new(key)))
    }

    /// Opens one frame payload (header already stripped) in place; returns the packet bytes.
    pub fn open(&mut self, mut payload: BytesMut) -> Result<BytesMut> {
        match &mut self.0 {
            Mode::Plain => Ok(payload),
            Mode::V2(counter) => {
                if payload.len() < TAG_LEN {
                    return Err(Error::Decrypt);
                }
                let header = (payload.len() as u32).to_be_bytes();
                let nonce = counter.next_nonce()?;
                counter.aead.open(nonce, &header, &mut payload)?;
                Ok(payload)
            }
            Mode::Legacy(aead) => {
                if payload.len() < LEGACY_NONCE_LEN + TAG_LEN {
                    return Err(Error::Decrypt);
                }
                let nonce = payload.split_to(LEGACY_NONCE_LEN);
                let nonce = nonce[..].try_into().expect("LEGACY_NONCE_LEN bytes");
                aead.open(nonce, &[], &mut payload)?;
                Ok(payload)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = frame::DEFAULT_MAX_FRAME;

    fn keys(seed: u8) -> DirectionKeys {
        DirectionKeys {
            key: [seed; 32],
            iv: [seed.wrapping_add(1); 12],
        }
    }

    fn packet(data: Vec<u8>) -> Packet {
        Packet {
            data,
            r#mod: 3,
            seq: 4,
            index: 5,
            ..Default::default()
        }
    }

    fn pairs() -> Vec<(Sealer, Opener)> {
        vec![
            (Sealer::plain(), Opener::plain()),
            (Sealer::v2(&keys(1)), Opener::v2(&keys(1))),
            (Sealer::legacy(&[2; 32]), Opener::legacy(&[2; 32])),
        ]
    }

    fn open_frame(opener: &mut Opener, wire: &mut BytesMut) -> Result<Packet> {
        let payload = frame::decode(wire, MAX)?.expect("a whole frame");
        let bytes = opener.open(payload)?;
        Packet::decode(&bytes[..]).map_err(|e| Error::decode("packet", e))
    }

    #[test]
    fn a_direction_holds_one_small_aead_context() {
        // Two per held session (issue 18): aes-gcm's context was 992 bytes, ring's is 544.
        assert!(std::mem::size_of::<Sealer>() <= 600);
        assert!(std::mem::size_of::<Opener>() <= 600);
    }

    #[test]
    fn v2_nonce_is_iv_xor_counter() {
        let mut c = Counter::new(&DirectionKeys {
            key: [0; 32],
            iv: [0xff; 12],
        });
        assert_eq!(c.next_nonce().unwrap(), [0xff; 12]);
        let second = c.next_nonce().unwrap();
        assert_eq!(&second[..11], &[0xff; 11]);
        assert_eq!(second[11], 0xfe);
        c.next = u64::MAX;
        assert!(c.next_nonce().is_err(), "the counter never wraps");
    }

    #[test]
    fn v2_frames_must_arrive_in_order_exactly_once() {
        let (mut s, mut o) = (Sealer::v2(&keys(1)), Opener::v2(&keys(1)));
        let mut first = BytesMut::new();
        let mut second = BytesMut::new();
        s.seal(&packet(b"one".to_vec()), MAX, &mut first).unwrap();
        s.seal(&packet(b"two".to_vec()), MAX, &mut second).unwrap();
        assert!(
            matches!(open_frame(&mut o, &mut second.clone()), Err(Error::Decrypt)),
            "reordered"
        );
        let mut o = Opener::v2(&keys(1));
        assert_eq!(open_frame(&mut o, &mut first.clone()).unwrap().data, b"one");
        assert!(
            matches!(open_frame(&mut o, &mut first), Err(Error::Decrypt)),
            "replayed"
        );
    }

    #[test]
    fn the_header_is_authenticated() {
        let (mut s, mut o) = (Sealer::v2(&keys(1)), Opener::v2(&keys(1)));
        let mut wire = BytesMut::new();
        s.seal(&packet(b"abc".to_vec()), MAX, &mut wire).unwrap();
        // Drop one payload byte and shrink the header to match: only the AAD catches it.
        let len = wire.len() - frame::HEADER_LEN - 1;
        let mut forged = BytesMut::new();
        forged.put_u32(len as u32);
        forged.put_slice(&wire[frame::HEADER_LEN..wire.len() - 1]);
        assert!(matches!(
            open_frame(&mut o, &mut forged),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn sealing_respects_the_frame_limit_including_overhead() {
        let data = vec![0u8; 100];
        let plain_len = packet(data.clone()).encoded_len();
        let mut out = BytesMut::new();
        assert!(
            Sealer::plain()
                .seal(&packet(data.clone()), plain_len, &mut out)
                .is_ok()
        );
        assert!(matches!(
            Sealer::v2(&keys(1)).seal(&packet(data.clone()), plain_len + TAG_LEN - 1, &mut out),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(matches!(
            Sealer::legacy(&[1; 32]).seal(&packet(data), plain_len + TAG_LEN + 11, &mut out),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn short_payloads_fail_cleanly() {
        for len in 1..28 {
            assert!(matches!(
                Opener::v2(&keys(1)).open(BytesMut::from(&vec![0u8; len][..])),
                Err(Error::Decrypt)
            ));
            assert!(matches!(
                Opener::legacy(&[1; 32]).open(BytesMut::from(&vec![0u8; len][..])),
                Err(Error::Decrypt)
            ));
        }
    }

    proptest! {
        #[test]
        fn seal_then_open_round_trips(data in prop::collection::vec(any::<u8>(), 0..2048), frames in 1usize..4) {
            for (mut sealer, mut opener) in pairs() {
                let mut wire = BytesMut::new();
                for _ in 0..frames {
                    sealer.seal(&packet(data.clone()), MAX, &mut wire).unwrap();
                }
                for _ in 0..frames {
                    prop_assert_eq!(open_frame(&mut opener, &mut wire).unwrap(), packet(data.clone()));
                }
            }
        }

        #[test]
        fn any_mutation_of_a_sealed_frame_fails(data in prop::collection::vec(any::<u8>(), 0..512), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let encrypted = vec![
                (Sealer::v2(&keys(1)), Opener::v2(&keys(1))),
                (Sealer::legacy(&[2; 32]), Opener::legacy(&[2; 32])),
            ];
            for (mut sealer, mut opener) in encrypted {
                let mut wire = BytesMut::new();
                sealer.seal(&packet(data.clone()), MAX, &mut wire).unwrap();
                let payload_len = wire.len() - frame::HEADER_LEN;
                let at = frame::HEADER_LEN + pos.index(payload_len);
                wire[at] ^= flip;
                let payload = frame::decode(&mut wire, MAX).unwrap().unwrap();
                prop_assert!(matches!(opener.open(payload), Err(Error::Decrypt)));
            }
        }
    }
}
