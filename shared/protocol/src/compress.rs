//! zlib (RFC 1950) for `Packet.data`.
//!
//! The sender compresses data at or above a threshold; the receiver inflates data flagged
//! `compress` with a hard cap on the inflated size, so a zip bomb is an error, never a
//! truncation or an unbounded allocation. Owns no state beyond its [`Compression`] settings.

use std::io::{Read, Write};

use flate2::{Compression as Level, read::ZlibDecoder, write::ZlibEncoder};

use crate::error::{Error, Result};

/// The go-pantheon threshold: data of this many bytes or more is compressed.
pub const DEFAULT_THRESHOLD: usize = 10240;
/// The default cap on the inflated size of received data: 1 MiB.
pub const DEFAULT_MAX_INFLATED: usize = 1 << 20;

/// Compression settings for one direction of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// Data at least this long is compressed on send (`usize::MAX` disables compression).
    pub threshold: usize,
    /// Received compressed data may inflate to at most this many bytes.
    pub max_inflated: usize,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            max_inflated: DEFAULT_MAX_INFLATED,
        }
    }
}

impl Compression {
    /// Whether data of this length should be compressed before sending.
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Compresses `data` with zlib at the fastest level (go-pantheon's `BestSpeed`).
    pub fn deflate(data: &[u8]) -> Vec<u8> {
        let mut enc = ZlibEncoder::new(Vec::with_capacity(data.len() / 2 + 16), Level::fast());
        enc.write_all(data)
            .and_then(|()| enc.finish())
            .expect("writing to a Vec cannot fail")
    }

    /// Inflates zlib `data`, failing once the output would exceed `max_inflated` bytes.
    pub fn inflate(&self, data: &[u8]) -> Result<Vec<u8>> {
        let limit = self.max_inflated;
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
        // Read one byte past the limit: getting it proves the data is over the cap.
        let read = ZlibDecoder::new(data)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::InflateCorrupt(e.to_string()))?;
        if read > limit {
            return Err(Error::InflateTooLarge { limit });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn threshold_is_inclusive() {
        let c = Compression {
            threshold: 10,
            max_inflated: 100,
        };
        assert!(!c.should_compress(9));
        assert!(c.should_compress(10));
    }

    #[test]
    fn a_zip_bomb_is_an_error_not_a_truncation() {
        let bomb = Compression::deflate(&vec![0u8; 4 << 20]);
        assert!(
            bomb.len() * 100 < 4 << 20,
            "4 MiB of zeros shrinks over a hundredfold"
        );
        let c = Compression::default();
        assert!(
            matches!(c.inflate(&bomb), Err(Error::InflateTooLarge { limit }) if limit == 1 << 20)
        );
    }

    #[test]
    fn exactly_the_cap_inflates() {
        let c = Compression {
            threshold: 0,
            max_inflated: 1000,
        };
        assert_eq!(
            c.inflate(&Compression::deflate(&[1u8; 1000]))
                .unwrap()
                .len(),
            1000
        );
        assert!(matches!(
            c.inflate(&Compression::deflate(&[1u8; 1001])),
            Err(Error::InflateTooLarge { limit: 1000 })
        ));
    }

    #[test]
    fn data_that_is_not_zlib_is_refused() {
        let c = Compression::default();
        assert!(matches!(
            c.inflate(b"definitely not zlib"),
            Err(Error::InflateCorrupt(_))
        ));
        let mut truncated = Compression::deflate(&[5u8; 5000]);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            c.inflate(&truncated),
            Err(Error::InflateCorrupt(_))
        ));
    }

    proptest! {
        #[test]
        fn deflate_then_inflate_round_trips(data in prop::collection::vec(any::<u8>(), 0..4096)) {
            let c = Compression::default();
            prop_assert_eq!(c.inflate(&Compression::deflate(&data)).unwrap(), data);
        }
    }
}
