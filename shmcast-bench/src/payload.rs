//! The messages every transport carries, and the checksum every receiver computes.
//!
//! A message of `size` bytes is a fixed pseudo-random pattern (`shmcast::pattern::fill`) whose
//! first 8 bytes are replaced by a little-endian counter (or a timestamp) before each send. The
//! checksum is the wrapping sum of the payload's little-endian 64-bit words, plus each byte of
//! a short tail as a `u64` (the Go bench reader computes the same). So the checksum of message `k` is `base + k`, where `base` is the checksum of
//! the pattern with a zero counter: a receiver verifies every byte it received with one
//! addition and one comparison, and a sender only rewrites one word per message.

/// A message buffer: the pattern with a counter in its first word.
pub struct Payload {
    bytes: Vec<u8>,
    base: u64,
}

impl Payload {
    /// The pattern for `size` bytes (`size >= 8`).
    pub fn new(size: usize) -> Payload {
        let mut bytes = vec![0u8; size];
        shmcast::pattern::fill(0x5EED, &mut bytes);
        bytes[..8].fill(0);
        let base = checksum(&bytes);
        Payload { bytes, base }
    }

    /// Writes `counter` into the first word.
    #[inline(always)]
    pub fn stamp(&mut self, counter: u64) {
        self.bytes[..8].copy_from_slice(&counter.to_le_bytes());
    }

    /// The message as it stands.
    #[inline(always)]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The checksum of the message stamped with `counter`.
    #[inline(always)]
    pub fn expected(&self, counter: u64) -> u64 {
        self.base.wrapping_add(counter)
    }

    /// The checksum of the pattern with a zero counter.
    pub fn base(&self) -> u64 {
        self.base
    }
}

/// The checksum every receiver computes (one definition, in the library).
pub use shmcast::pattern::checksum;

/// The counter (or timestamp) in a received message's first word.
#[inline(always)]
pub fn counter(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_stamped_message_is_base_plus_counter() {
        assert_eq!(checksum(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 3]), 6);
        for size in [8, 13, 64, 1000] {
            let mut p = Payload::new(size);
            for k in [0, 1, 77, u64::MAX] {
                p.stamp(k);
                assert_eq!(checksum(p.bytes()), p.expected(k));
                assert_eq!(counter(p.bytes()), k);
            }
        }
    }
}
