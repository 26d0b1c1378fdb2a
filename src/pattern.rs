//! Generated payloads that any reader can verify: a deterministic function of the sequence
//! number and the length (`docs/LAYOUT.md`, "Generated test payloads").
//!
//! Used by `shmcast publish --count`, `shmcast tail --verify`, the tests and the benchmarks;
//! the Go package implements the same function.

/// One step of SplitMix64.
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with the payload for message `seq` of length `buf.len()`.
pub fn fill(seq: u64, buf: &mut [u8]) {
    let mut state = seq ^ ((buf.len() as u64) << 40);
    for chunk in buf.chunks_mut(8) {
        let bytes = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Whether `payload` is exactly the generated payload for `seq` of its length.
pub fn matches(seq: u64, payload: &[u8]) -> bool {
    let mut state = seq ^ ((payload.len() as u64) << 40);
    payload
        .chunks(8)
        .all(|chunk| splitmix64(&mut state).to_le_bytes()[..chunk.len()] == *chunk)
}

/// The checksum the benchmarks use (here, in `shmcast bench` and in the Go bench reader): the
/// wrapping sum of the payload's little-endian 64-bit words, plus each byte of a final partial
/// word. Cheap enough not to dominate a copy, and every byte counts.
#[inline]
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for chunk in &mut chunks {
        sum = sum.wrapping_add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    for &b in chunks.remainder() {
        sum = sum.wrapping_add(u64::from(b));
    }
    sum
}

/// The length of message `seq` when lengths are drawn from `min..=max`.
pub fn length(seq: u64, min: usize, max: usize) -> usize {
    debug_assert!(min <= max);
    let mut state = seq;
    let span = (max - min) as u64 + 1;
    min + (splitmix64(&mut state) % span) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (from the reference implementation).
        let mut state = 0;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut state), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn payload_depends_on_seq_and_length_and_verifies() {
        let mut a = vec![0u8; 37];
        fill(5, &mut a);
        assert!(matches(5, &a));
        assert!(!matches(6, &a));
        assert!(!matches(5, &a[..36]));
        let mut b = a.clone();
        b[36] ^= 1;
        assert!(!matches(5, &b));
        assert!(matches(9, &[]));
    }

    #[test]
    fn checksum_sums_words_and_tail_bytes() {
        assert_eq!(checksum(&[]), 0);
        assert_eq!(checksum(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 3]), 6);
        assert_eq!(checksum(&[0xFF; 16]), u64::MAX.wrapping_add(u64::MAX));
    }

    #[test]
    fn lengths_stay_in_range() {
        for seq in 1..1000 {
            let n = length(seq, 3, 17);
            assert!((3..=17).contains(&n));
        }
        assert_eq!(length(1, 4, 4), 4);
    }
}
