//! The shared segment layout, version 1: every offset and constant in one place.
//!
//! `docs/LAYOUT.md` documents these byte by byte; the golden files in `testdata/golden/` pin
//! them, and the Go reader in `go-client/` mirrors them. Change all four together.

/// `"SHMCAST\0"` read as a little-endian word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMCAST\0");
/// The layout version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the ring data: the producer header page and the subscriber page.
pub const DATA_OFFSET: u64 = 8192;
/// Size of the producer header page (readers validate at least this much exists).
pub const HEADER_SIZE: u64 = 4096;
/// Smallest ring capacity, in bytes.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest ring capacity, in bytes (1 TiB).
pub const MAX_CAPACITY: u64 = 1 << 40;
/// `flags` bit 0: the segment is lossless (it has reader slots; docs/LAYOUT.md, "Lossless mode").
pub const FLAG_LOSSLESS: u64 = 1;
/// `flags` bit 1: the ring may hold gap records, which tell readers that messages were lost
/// before they reached this segment (docs/LAYOUT.md, "Gap records").
pub const FLAG_GAPS: u64 = 2;
/// Flags this version understands.
pub const KNOWN_FLAGS: u64 = FLAG_LOSSLESS | FLAG_GAPS;

/// Byte offsets of the producer header fields. Each is a whole 64-bit word.
pub mod offset {
    /// `magic` (identity block, written last at initialisation).
    pub const MAGIC: usize = 0x000;
    /// `version` (low 32 bits) and a reserved zero (high 32 bits).
    pub const VERSION: usize = 0x008;
    /// `data_offset`.
    pub const DATA_OFFSET: usize = 0x010;
    /// `capacity`.
    pub const CAPACITY: usize = 0x018;
    /// `flags`.
    pub const FLAGS: usize = 0x020;
    /// `epoch` (1 at creation).
    pub const EPOCH: usize = 0x028;
    /// `producer_pid`.
    pub const PRODUCER_PID: usize = 0x030;
    /// `created_unix_ns`.
    pub const CREATED_UNIX_NS: usize = 0x038;
    /// `wake_barrier`: how the producer orders a publish before its look at `parked`
    /// ([`super::WAKE_FENCE`] or [`super::WAKE_MEMBARRIER`]).
    pub const WAKE_BARRIER: usize = 0x040;
    /// `intent`: alone in its 128-byte block, written on every publish.
    pub const INTENT: usize = 0x080;
    /// `head`: position of the oldest retained record.
    pub const HEAD: usize = 0x100;
    /// `latest`: position of the newest committed message, or [`super::NO_LATEST`].
    pub const LATEST: usize = 0x108;
    /// `last_publish_ns`: wall-clock time of a recent publish or heartbeat (0: never).
    pub const LAST_PUBLISH_NS: usize = 0x110;
    /// `gate_limit` (lossless segments): the producer announces no `intent` above it without
    /// re-scanning the reader slots.
    pub const GATE_LIMIT: usize = 0x180;
    /// `reader_slots` (lossless segments): the number of reader slots.
    pub const READER_SLOTS: usize = 0x188;
    /// `max_block_ns` (lossless segments): how long a live reader may hold the producer back
    /// before it is evicted; 0 = never.
    pub const MAX_BLOCK_NS: usize = 0x190;
    /// `evictions` (lossless segments): registered readers evicted or reclaimed so far.
    pub const EVICTIONS: usize = 0x198;
}

/// `wake_barrier`: the producer issues a sequentially consistent fence after every publish.
pub const WAKE_FENCE: u64 = 0;
/// `wake_barrier`: the producer is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED` and publishes
/// without a fence; a reader must call `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` to park.
pub const WAKE_MEMBARRIER: u64 = 1;

/// Start of the subscriber area (the page between the producer header and the ring).
pub const SUBSCRIBER_AREA: u64 = 0x1000;
/// Size of the subscriber area.
pub const SUBSCRIBER_AREA_SIZE: u64 = 0x1000;
/// `wake_seq` (u32): the futex word parked subscribers wait on; the producer increments it when
/// it wakes them.
pub const WAKE_SEQ: usize = 0x1000;
/// `parked` (u32): non-zero when some subscriber may be parked on `wake_seq`.
pub const PARKED: usize = 0x1004;
/// `wake_throttle` (u32): non-zero while the producer makes no wake-up system calls (it saw
/// too many fruitless ones); a parked subscriber then waits at most 1 ms at a time.
pub const WAKE_THROTTLE: usize = 0x1010;

/// `gate_wake` (u32, lossless segments): the futex word a blocked producer sleeps on.
pub const GATE_WAKE: usize = 0x1008;
/// `producer_blocked` (u32, lossless segments): non-zero while the producer waits for a reader.
pub const PRODUCER_BLOCKED: usize = 0x100C;
/// `reg_gen` (lossless segments): incremented by every registration, unregistration, eviction
/// and reclaim.
pub const REG_GEN: usize = 0x1040;
/// Start of reader slot 0 (lossless segments); slot `i` starts at `SLOTS + SLOT_SIZE * i`.
pub const SLOTS: usize = 0x1080;
/// Bytes per reader slot.
pub const SLOT_SIZE: usize = 128;
/// 64-bit words per reader slot.
pub const SLOT_WORDS: usize = SLOT_SIZE / 8;
/// The most reader slots the subscriber area holds.
pub const MAX_READER_SLOTS: u64 =
    ((SUBSCRIBER_AREA + SUBSCRIBER_AREA_SIZE) as usize - SLOTS) as u64 / SLOT_SIZE as u64;

/// Byte offsets of the fields within a reader slot.
pub mod slot {
    /// `state`: bits 0–1 the state (free 0, active 1, evicted 2), bits 2–63 the generation.
    pub const STATE: usize = 0;
    /// `pos`: the owner has finished with every byte before this position.
    pub const POS: usize = 8;
    /// `seq`: the sequence number the owner expects next (informational).
    pub const SEQ: usize = 16;
    /// `pid`: the owner's process id (informational).
    pub const PID: usize = 24;
    /// `registered_unix_ns`: when the owner registered (informational).
    pub const REGISTERED_NS: usize = 32;
}

/// Number of 64-bit words in the producer header page.
pub const HEADER_WORDS: usize = (HEADER_SIZE / 8) as usize;

/// Word index of a header field given its byte offset.
#[inline]
pub(crate) const fn word(byte_offset: usize) -> usize {
    byte_offset / 8
}

/// Positions stay below this (2^63 bytes: 29 years at 10 GB/s), so a reader's position
/// arithmetic cannot overflow; a larger position in the header means the segment is corrupt.
pub const MAX_POSITION: u64 = 1 << 63;

/// `latest` before anything was published.
pub const NO_LATEST: u64 = u64::MAX;

/// Bit 63 of a commit word marks a padding record.
pub const PAD: u64 = 1 << 63;
/// The length word of a gap record: kind 1 in the reserved high half, and 8 payload bytes (the
/// count of messages lost) in the low half (docs/LAYOUT.md, "Gap records").
pub const GAP_LENGTH_WORD: u64 = (1 << 32) | 8;
/// Bytes of a record header (commit word + length word).
pub const RECORD_HEADER: u64 = 16;

/// Rounds `n` up to a multiple of 8.
#[inline]
pub const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Bytes a message record of `len` payload bytes occupies in the ring.
#[inline]
pub const fn record_span(len: u64) -> u64 {
    RECORD_HEADER + align8(len)
}

/// The largest payload a ring of `capacity` bytes accepts: a record spans at most a quarter of
/// the ring, so the ring always retains several messages and `head` stays behind `tail`.
#[inline]
pub const fn max_payload(capacity: u64) -> u64 {
    (capacity / 4).saturating_sub(RECORD_HEADER)
}

/// Why a capacity is not acceptable, or `None` if it is.
pub(crate) fn capacity_problem(capacity: u64) -> Option<&'static str> {
    if !capacity.is_power_of_two() {
        Some("capacity must be a power of two")
    } else if capacity < MIN_CAPACITY {
        Some("capacity must be at least 4096 bytes")
    } else if capacity > MAX_CAPACITY {
        Some("capacity must be at most 1 TiB")
    } else {
        None
    }
}

/// The identity block of a header (`0x000 .. 0x040`).
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub magic: u64,
    pub version: u32,
    pub data_offset: u64,
    pub capacity: u64,
    pub flags: u64,
    pub epoch: u64,
    pub producer_pid: u64,
    pub created_unix_ns: u64,
    pub wake_barrier: u64,
    /// `reader_slots` (meaningful on lossless segments only).
    pub reader_slots: u64,
    /// `max_block_ns` (meaningful on lossless segments only).
    pub max_block_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_words_sit_in_separate_128_byte_blocks() {
        assert_eq!(offset::INTENT / 128, 1);
        assert_eq!(offset::HEAD / 128, 2);
        assert_eq!(offset::LATEST / 128, 2);
        assert_ne!(offset::INTENT / 128, offset::MAGIC / 128);
        for off in [
            offset::MAGIC,
            offset::VERSION,
            offset::DATA_OFFSET,
            offset::CAPACITY,
            offset::FLAGS,
            offset::EPOCH,
            offset::PRODUCER_PID,
            offset::CREATED_UNIX_NS,
            offset::INTENT,
            offset::HEAD,
            offset::LATEST,
        ] {
            assert_eq!(off % 8, 0, "offset {off:#x} is not 8-byte aligned");
            assert!((off as u64) < HEADER_SIZE);
        }
    }

    #[test]
    fn reader_slots_fill_the_subscriber_area() {
        assert_eq!(MAX_READER_SLOTS, 31);
        assert_eq!(
            SLOTS as u64 + MAX_READER_SLOTS * SLOT_SIZE as u64,
            SUBSCRIBER_AREA + SUBSCRIBER_AREA_SIZE
        );
        assert_eq!(
            REG_GEN / 64,
            GATE_WAKE / 64 + 1,
            "reg_gen has a line of its own"
        );
        assert_eq!(offset::GATE_LIMIT / 128, 3);
    }

    #[test]
    fn magic_is_the_documented_bytes() {
        assert_eq!(MAGIC, 0x0054_5341_434D_4853);
        assert_eq!(&MAGIC.to_le_bytes(), b"SHMCAST\0");
    }

    #[test]
    fn spans_and_limits() {
        assert_eq!(record_span(0), 16);
        assert_eq!(record_span(1), 24);
        assert_eq!(record_span(8), 24);
        assert_eq!(record_span(9), 32);
        assert_eq!(max_payload(4096), 1008);
        assert_eq!(record_span(max_payload(4096)), 1024);
        assert_eq!(max_payload(1 << 20), 262_128);
        assert!(capacity_problem(4096).is_none());
        assert!(capacity_problem(4095).is_some());
        assert!(capacity_problem(2048).is_some());
        assert!(capacity_problem(1 << 41).is_some());
    }
}
