//! Length-prefixed framing shared by every transport.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload. This module only
//! splits and builds frames; it knows nothing of what a payload means (see `session`). Like
//! mini-redis's `Frame::check`, the header is validated against the configured maximum before
//! any payload byte is awaited or buffered, so a hostile length cannot make us reserve memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// Size of the length header in bytes.
pub const HEADER_LEN: usize = 4;

/// The go-pantheon default for the largest payload a frame may carry.
pub const DEFAULT_MAX_FRAME: usize = 16384;

/// Checks a frame's payload length against the limit (and that it is not empty).
pub fn check_len(len: usize, max: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::EmptyFrame);
    }
    if len > max {
        return Err(Error::FrameTooLarge { len, max });
    }
    Ok(())
}

/// Splits the next whole frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, after reserving room for the announced (and
/// already validated) payload so the reader fills it without regrowing. The returned payload
/// excludes the header and is split off without copying.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    check_len(len, max)?;
    let total = HEADER_LEN + len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    Ok(Some(buf.split_to(len)))
}

/// What [`Error::MessageFraming`] says of a text message on a message-based transport: every
/// message must be a binary one holding a frame.
pub const TEXT_MESSAGE: &str = "text message";

/// Takes a message of a message-based transport (one WebSocket binary message), which must hold
/// exactly one whole frame, and returns its payload.
pub fn decode_message(mut msg: Bytes, max: usize) -> Result<Bytes> {
    if msg.len() < HEADER_LEN {
        return Err(Error::MessageFraming("shorter than a frame header"));
    }
    let len = msg.get_u32() as usize;
    check_len(len, max)?;
    match msg.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(Error::MessageFraming("truncated frame")),
        std::cmp::Ordering::Greater => Err(Error::MessageFraming("bytes after the frame")),
        std::cmp::Ordering::Equal => Ok(msg),
    }
}

/// Takes the next frame, length prefix included, off the front of `out`: what one binary
/// WebSocket message carries (PROTOCOL.md §1), for writers that queue several frames at once.
/// `None` once `out` is empty; a trailing partial frame (which no sealer writes) goes whole.
pub fn take_message(out: &mut BytesMut) -> Option<Bytes> {
    if out.is_empty() {
        return None;
    }
    let len = match out.get(..HEADER_LEN) {
        Some(mut header) => HEADER_LEN + header.get_u32() as usize,
        None => out.len(),
    };
    Some(out.split_to(len.min(out.len())).freeze())
}

/// Appends a frame carrying `payload` to `out`.
pub fn encode(payload: &[u8], max: usize, out: &mut BytesMut) -> Result<()> {
    check_len(payload.len(), max)?;
    out.reserve(HEADER_LEN + payload.len());
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    Ok(())
}

/// The header for a payload of `len` bytes, checked against `max`; used by sealers that write
/// the payload in place after the header.
pub(crate) fn header(len: usize, max: usize) -> Result<[u8; HEADER_LEN]> {
    check_len(len, max)?;
    Ok((len as u32).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn queued_frames_are_taken_one_message_each() {
        let mut out = BytesMut::new();
        encode(b"one", 64, &mut out).unwrap();
        encode(b"two", 64, &mut out).unwrap();
        encode(b"three", 64, &mut out).unwrap();
        let messages: Vec<Bytes> = std::iter::from_fn(|| take_message(&mut out)).collect();
        let payloads: Vec<Bytes> = messages
            .into_iter()
            .map(|m| decode_message(m, 64).unwrap())
            .collect();
        assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
        assert!(out.is_empty());
        out.extend_from_slice(&[0, 0]);
        assert_eq!(take_message(&mut out).as_deref(), Some(&[0u8, 0][..]));
        assert_eq!(take_message(&mut out), None);
    }

    #[test]
    fn needs_a_whole_header_then_a_whole_payload() {
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert!(decode(&mut buf, 16).unwrap().is_none());
        buf.put_u8(3);
        buf.put_slice(b"ab");
        assert!(decode(&mut buf, 16).unwrap().is_none());
        assert!(
            buf.capacity() >= 7,
            "room for the announced payload is reserved"
        );
        buf.put_slice(b"c");
        assert_eq!(&decode(&mut buf, 16).unwrap().unwrap()[..], b"abc");
        assert!(buf.is_empty());
    }

    #[test]
    fn zero_length_is_refused() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(decode(&mut buf, 16), Err(Error::EmptyFrame)));
    }

    #[test]
    fn oversize_is_refused_before_any_payload_arrives() {
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        let err = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap_err();
        assert!(matches!(
            err,
            Error::FrameTooLarge {
                len: 0xffff_ffff,
                max: DEFAULT_MAX_FRAME
            }
        ));
        assert!(
            buf.capacity() < 1024,
            "nothing reserved for a refused length"
        );
    }

    #[test]
    fn the_maximum_itself_is_allowed() {
        let mut out = BytesMut::new();
        encode(&[7u8; 16], 16, &mut out).unwrap();
        assert_eq!(decode(&mut out, 16).unwrap().unwrap().len(), 16);
        assert!(matches!(
            encode(&[7u8; 17], 16, &mut out),
            Err(Error::FrameTooLarge { len: 17, max: 16 })
        ));
        assert!(matches!(encode(&[], 16, &mut out), Err(Error::EmptyFrame)));
    }

    #[test]
    fn a_message_must_hold_exactly_one_frame() {
        let mut one = BytesMut::new();
        encode(b"hello", 16, &mut one).unwrap();
        let one = one.freeze();
        assert_eq!(&decode_message(one.clone(), 16).unwrap()[..], b"hello");
        assert!(matches!(
            decode_message(one.slice(..6), 16),
            Err(Error::MessageFraming("truncated frame"))
        ));
        let mut two = BytesMut::from(&one[..]);
        two.put_u8(0);
        assert!(matches!(
            decode_message(two.freeze(), 16),
            Err(Error::MessageFraming("bytes after the frame"))
        ));
        assert!(matches!(
            decode_message(Bytes::from_static(&[0, 0]), 16),
            Err(Error::MessageFraming(_))
        ));
        assert!(matches!(
            decode_message(Bytes::from_static(&[0, 0, 0, 0]), 16),
            Err(Error::EmptyFrame)
        ));
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..8), split in 0usize..600) {
            let mut wire = BytesMut::new();
            for p in &payloads {
                encode(p, 64, &mut wire).unwrap();
            }
            // Deliver the stream in two arbitrary pieces, as a socket would.
            let split = split.min(wire.len());
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            while let Some(f) = decode(&mut buf, 64).unwrap() { got.push(f.to_vec()); }
            buf.extend_from_slice(&wire[split..]);
            while let Some(f) = decode(&mut buf, 64).unwrap() { got.push(f.to_vec()); }
            prop_assert_eq!(got, payloads);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_input_yields_bounded_frames_or_errors(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut consumed = 0;
            loop {
                match decode(&mut buf, 64) {
                    Ok(Some(f)) => {
                        prop_assert!((1..=64).contains(&f.len()));
                        consumed += HEADER_LEN + f.len();
                        prop_assert_eq!(consumed + buf.len(), bytes.len());
                    }
                    Ok(None) => { prop_assert_eq!(consumed + buf.len(), bytes.len()); break; }
                    Err(e) => {
                        let refused = matches!(e, Error::EmptyFrame | Error::FrameTooLarge { .. });
                        prop_assert!(refused, "unexpected error {}", e);
                        break;
                    }
                }
            }
            if let Ok(payload) = decode_message(Bytes::from(bytes.clone()), 64) {
                prop_assert_eq!(payload.len() + HEADER_LEN, bytes.len());
            }
        }
    }
}
