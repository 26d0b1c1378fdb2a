//! Copying payload bytes to and from ring words. Every access is a whole-word relaxed atomic
//! (docs/LAYOUT.md, "Conventions"): the ring is memory another process writes, so it is never
//! viewed as a byte slice. Readers validate what they copied afterwards (the seqlock re-check in
//! `ring.rs`); the producer is the only writer, so its read-merge-store of partial words is safe.

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;

/// Copies the first `dst.len()` bytes held by `words` into `dst` (`dst.len() <= 8 * words.len()`).
#[inline]
pub(crate) fn copy_out(words: &[AtomicU64], dst: &mut [u8]) {
    let full = dst.len() / 8;
    let (whole, rest) = dst.split_at_mut(full * 8);
    // Four words per step: atomic loads are never merged into vector loads, so at least keep
    // the loop overhead small (criterion's read/copy; docs/PERFORMANCE-LOG.md).
    let mut blocks = whole.chunks_exact_mut(32);
    let mut fours = words[..full].chunks_exact(4);
    for (block, four) in (&mut blocks).zip(&mut fours) {
        let [a, b, c, d] = [0, 1, 2, 3].map(|i| four[i].load(Ordering::Relaxed).to_le_bytes());
        block[0..8].copy_from_slice(&a);
        block[8..16].copy_from_slice(&b);
        block[16..24].copy_from_slice(&c);
        block[24..32].copy_from_slice(&d);
    }
    for (chunk, word) in blocks
        .into_remainder()
        .chunks_exact_mut(8)
        .zip(fours.remainder())
    {
        chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    if !rest.is_empty() {
        let word = words[full].load(Ordering::Relaxed).to_le_bytes();
        rest.copy_from_slice(&word[..rest.len()]);
    }
}

/// Copies `dst.len()` bytes starting at byte `offset` of the payload held by `words`: the
/// partial word up to the next word boundary, then whole words.
pub(crate) fn copy_range(words: &[AtomicU64], offset: usize, dst: &mut [u8]) {
    let within = offset % 8;
    let head = if within == 0 {
        0
    } else {
        (8 - within).min(dst.len())
    };
    if head > 0 {
        let word = words[offset / 8].load(Ordering::Relaxed).to_le_bytes();
        dst[..head].copy_from_slice(&word[within..within + head]);
    }
    let rest = &mut dst[head..];
    if !rest.is_empty() {
        copy_out(&words[(offset + head) / 8..], rest);
    }
}

/// Writes `src` at byte `offset` of the payload held by `words` (producer only: partial words
/// are read, merged and stored back, which is safe because only the producer stores).
pub(crate) fn write_range(words: &[AtomicU64], offset: usize, src: &[u8]) {
    let mut i = 0;
    while i < src.len() {
        let at = offset + i;
        let word = &words[at / 8];
        let from = at % 8;
        let n = (8 - from).min(src.len() - i);
        let value = if n == 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&src[i..i + 8]);
            b
        } else {
            let mut b = word.load(Ordering::Relaxed).to_le_bytes();
            b[from..from + n].copy_from_slice(&src[i..i + n]);
            b
        };
        word.store(u64::from_le_bytes(value), Ordering::Relaxed);
        i += n;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn partial_word_copies_and_writes_cover_every_offset_and_length() {
        // copy_range backs MessageRef::read_at and write_range backs Claim::write_at: check every
        // (offset, length) pair of a 40-byte payload against plain slices.
        let bytes: Vec<u8> = (1..=40).collect();
        let words: Vec<AtomicU64> = bytes
            .chunks(8)
            .map(|c| AtomicU64::new(u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        for offset in 0..=bytes.len() {
            for len in 0..=bytes.len() - offset {
                let mut dst = vec![0u8; len];
                copy_range(&words, offset, &mut dst);
                assert_eq!(
                    dst,
                    &bytes[offset..offset + len],
                    "copy_range({offset}, {len})"
                );

                let target: Vec<AtomicU64> = (0..5).map(|_| AtomicU64::new(0)).collect();
                write_range(&target, offset, &bytes[offset..offset + len]);
                let mut back = vec![0u8; 40];
                copy_out(&target, &mut back);
                let mut expected = vec![0u8; 40];
                expected[offset..offset + len].copy_from_slice(&bytes[offset..offset + len]);
                assert_eq!(back, expected, "write_range({offset}, {len})");
            }
        }
    }
}
