//! The broadcast ring protocol: `docs/LAYOUT.md`, "Publish algorithm" and "Read algorithm".
//!
//! [`Ring`] is a view over two arrays of 64-bit atomic words, the producer header and the ring
//! data. In production they live in the shared mapping (see [`crate::segment`]); under loom and
//! in unit tests they live on the heap. The protocol code is the same in both cases.
//!
//! Every access is a whole-word atomic load or store. The payload is copied word by word with
//! relaxed loads and validated afterwards against `intent` (a seqlock at ring level), so a reader
//! never performs a plain read of memory the producer may be writing: there is no data race, and
//! a copy that raced with an overwrite is detected and discarded.
//!
//! Readers only ever *load*, and only with `Relaxed`; acquire ordering is obtained with explicit
//! `fence(Acquire)`. Rust documents relaxed loads as valid on read-only memory, which is how
//! subscribers map the segment.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use crate::copy::copy_out;
use crate::error::RecvError;
use crate::layout::{self, offset, record_span, NO_LATEST, PAD};
use crate::sync::{fence, spin_hint, AtomicU64, Ordering, WritePrefetch};

/// How many times a reader retries finding an intact record before it gives up and reports
/// the segment as overrun; only a producer rewriting the whole ring on every attempt gets there.
const MAX_ATTEMPTS: u32 = 10_000;

/// Mask for the payload length in a record's length word (the high half is reserved).
const LEN_MASK: u64 = 0xFFFF_FFFF;

/// The cache line size the producer prefetches by (64 bytes on every x86-64 CPU).
const CACHE_LINE: u64 = 64;

/// How far ahead of its tail the producer prefetches lines for writing, at least: about a
/// dozen small messages, several hundred nanoseconds at full speed, which is more than a line
/// takes to come back from another core. For messages over 512 bytes the distance is two
/// messages' span instead ([`prefetch_window`]).
const PREFETCH_DISTANCE: u64 = 1024;

/// The most lines one publish prefetches: all of a 1 KiB message's 17, a third of a 4 KiB one.
const PREFETCH_LINES: u64 = 24;

/// Where a new subscriber starts reading.
///
/// Its [`Display`](fmt::Display) and [`FromStr`] forms are the names the `shmcast tail --from`
/// flag and the Go reader accept: `beginning`, `oldest`, `newest` and `next`.
///
/// ```
/// use shmcast::StartAt;
///
/// assert_eq!("newest".parse::<StartAt>(), Ok(StartAt::Newest));
/// assert_eq!(StartAt::Beginning.to_string(), "beginning");
/// let err = "latest".parse::<StartAt>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "unknown start position \"latest\": expected beginning, oldest, newest or next"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StartAt {
    /// The first message ever published (sequence number 1). Messages already overwritten are
    /// reported as [`RecvError::Lagged`] on the first read, so every message published since the
    /// segment was created is accounted for.
    Beginning,
    /// The oldest message still retained in the ring.
    #[default]
    Oldest,
    /// The newest message already published (it is delivered), then everything after it.
    Newest,
    /// Only messages published after joining.
    Next,
}

impl StartAt {
    /// Every start position, in the order of their documentation.
    pub const ALL: &'static [StartAt] = &[
        StartAt::Beginning,
        StartAt::Oldest,
        StartAt::Newest,
        StartAt::Next,
    ];

    /// The name used by [`FromStr`], [`Display`](fmt::Display) and the `--from` flags.
    pub fn name(self) -> &'static str {
        match self {
            StartAt::Beginning => "beginning",
            StartAt::Oldest => "oldest",
            StartAt::Newest => "newest",
            StartAt::Next => "next",
        }
    }
}

impl fmt::Display for StartAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`StartAt`] from an unknown name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown start position {0:?}: expected beginning, oldest, newest or next")]
pub struct ParseStartAtError(String);

impl FromStr for StartAt {
    type Err = ParseStartAtError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StartAt::ALL
            .iter()
            .copied()
            .find(|start| start.name() == s)
            .ok_or_else(|| ParseStartAtError(s.to_owned()))
    }
}

/// A view of a ring: header words and data words.
#[derive(Clone, Copy)]
pub(crate) struct Ring<'a> {
    header: &'a [AtomicU64; layout::HEADER_WORDS],
    data: &'a [AtomicU64],
    /// `capacity - 1`. The capacity and the largest payload are derived from it when needed
    /// rather than stored: a `Ring` is built on every publish and read, and a smaller one
    /// leaves more registers to the hot path (docs/PERFORMANCE-LOG.md, "The publish and read
    /// paths themselves").
    mask: u64,
}

/// The producer's private state (`tail`, `next_seq` and its copy of `head`).
#[derive(Debug, Clone)]
pub(crate) struct WriterState {
    tail: u64,
    next_seq: u64,
    head: u64,
    /// The last value stored to `intent`.
    announced: u64,
    /// Positions of records this producer started, about [`Ring::mark_spacing`] apart, oldest
    /// first: where a later announcement can evict up to with no walk ([`Ring::announce`]).
    marks: VecDeque<u64>,
    /// The record starting at or after this position becomes the next mark.
    next_mark: u64,
    /// Set where the CPU can prefetch the lines ahead for writing ([`Ring::prefetch_ahead`]).
    prefetch: Option<WritePrefetch>,
    /// Lossless segments: no `intent` above this until the reader slots were looked at again
    /// (docs/LAYOUT.md, "Lossless mode"). `u64::MAX` on a lossy segment.
    gate: u64,
}

impl WriterState {
    /// State for a freshly created (all-zero) ring.
    pub(crate) fn new() -> Self {
        WriterState {
            tail: 0,
            next_seq: 1,
            head: 0,
            announced: 0,
            marks: VecDeque::new(),
            next_mark: 0,
            prefetch: WritePrefetch::detect(),
            gate: u64::MAX,
        }
    }

    /// The last value stored to `intent`.
    pub(crate) fn announced(&self) -> u64 {
        self.announced
    }

    /// The next free position.
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    /// Sets the gate: from now on no `intent` above `gate` is announced.
    pub(crate) fn set_gate(&mut self, gate: u64) {
        self.gate = gate;
    }

    /// The same without the write prefetch, whatever the CPU offers
    /// (`PublisherOptions::write_prefetch`).
    pub(crate) fn without_prefetch(mut self) -> Self {
        self.prefetch = None;
        self
    }

    /// The sequence number the next message will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// Space reserved for one message whose intent is announced but which is not yet committed.
#[derive(Debug)]
pub(crate) struct Reservation {
    seq: u64,
    pos: u64,
    len: u64,
    pad: Option<u64>,
}

/// A reader's position: the record it expects next and that record's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReaderState {
    pos: u64,
    seq: u64,
}

impl ReaderState {
    /// The sequence number of the next message this reader expects.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The position of the next record: this reader has finished with every byte before it.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }
}

/// A committed record the reader is looking at; it becomes a delivered message only if
/// [`Ring::confirm`] says it was not overwritten meanwhile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pos: u64,
    seq: u64,
    len: u64,
}

impl Candidate {
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
    pub(crate) fn len(&self) -> usize {
        // `len <= max_payload < 2^40` was checked by `peek`.
        self.len as usize
    }
}

impl<'a> Ring<'a> {
    /// A view over `header` and `data` (a power of two of at least 8 words).
    ///
    /// Built on every publish and read, so the shape is checked in debug builds only: both
    /// callers guarantee it (`segment` validated the header; `HeapRing` allocates a power of
    /// two), and every index is still bounds-checked, so a violation could panic but never
    /// read outside the arrays.
    pub(crate) fn new(
        header: &'a [AtomicU64; layout::HEADER_WORDS],
        data: &'a [AtomicU64],
    ) -> Self {
        let capacity = data.len() as u64 * 8;
        debug_assert!(
            capacity.is_power_of_two() && capacity >= 64,
            "ring capacity must be a power of two >= 64"
        );
        Ring {
            header,
            data,
            mask: capacity.wrapping_sub(1),
        }
    }

    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.mask.wrapping_add(1)
    }

    #[inline]
    pub(crate) fn max_payload(&self) -> u64 {
        layout::max_payload(self.capacity())
    }

    #[inline]
    fn field(&self, byte_offset: usize) -> &'a AtomicU64 {
        &self.header[layout::word(byte_offset)]
    }

    /// The data word holding stream position `pos` (positions are multiples of 8).
    #[inline]
    fn at(&self, pos: u64) -> &'a AtomicU64 {
        &self.data[((pos & self.mask) >> 3) as usize]
    }

    /// Whether the producer's `intent` shows it has started overwriting position `pos`.
    #[inline]
    fn lapped(&self, intent: u64, pos: u64) -> bool {
        intent > pos.saturating_add(self.capacity())
    }

    /// Acquire fence, then `intent`: the reader half of the seqlock.
    #[inline]
    fn intent_after_fence(&self) -> u64 {
        fence(Ordering::Acquire);
        self.field(offset::INTENT).load(Ordering::Relaxed)
    }

    // ---------------------------------------------------------------- producer side

    /// Stores the producer's index words for an empty ring. The identity block is the segment's
    /// business; this is the part the protocol needs.
    pub(crate) fn init_indices(&self) {
        self.field(offset::INTENT).store(0, Ordering::Relaxed);
        self.field(offset::HEAD).store(0, Ordering::Relaxed);
        self.field(offset::LATEST)
            .store(NO_LATEST, Ordering::Relaxed);
    }

    /// Steps 1–4 of the publish algorithm and the length word of step 5: choose the position,
    /// announce `intent` (evicting what it covers) if the last announcement does not cover this
    /// record, and store the length word. `len` must be `<= max_payload`.
    #[cfg(test)]
    pub(crate) fn reserve(&self, w: &mut WriterState, len: usize) -> Reservation {
        match self.try_reserve(w, len) {
            Ok(reservation) => reservation,
            Err(limit) => panic!("reserve on a gated ring needs intent {limit}: use try_reserve"),
        }
    }

    /// [`Self::reserve`] on a ring that may be gated (lossless): `Err(limit)` if the record needs
    /// `intent` raised to `limit`, past the gate. Nothing is reserved then; raise the gate
    /// ([`WriterState::set_gate`]) and try again.
    #[inline]
    pub(crate) fn try_reserve(&self, w: &mut WriterState, len: usize) -> Result<Reservation, u64> {
        let len = len as u64;
        debug_assert!(len <= self.max_payload());
        let span = record_span(len);
        let off = w.tail & self.mask;
        let (pad, pos) = if off + span > self.capacity() {
            (Some(w.tail), w.tail + (self.capacity() - off))
        } else {
            (None, w.tail)
        };
        let limit = pos + span + 8;
        if limit > w.announced {
            if limit > w.gate {
                return Err(limit);
            }
            if pos >= w.next_mark {
                self.add_mark(w, pos);
            }
            self.announce(w, limit);
        } else if pos >= w.next_mark {
            self.add_mark(w, pos);
        }
        // Every data store below comes after the release fence of the announcement that covers
        // it (this publish's or an earlier one), which is what the readers' re-check relies on.
        self.at(pos + 8).store(len, Ordering::Relaxed);
        Ok(Reservation {
            seq: w.next_seq,
            pos,
            len,
            pad,
        })
    }

    /// How far past the bytes it is about to write the producer announces `intent`. Readers
    /// poll and re-check `intent` on every read; announcing in strides means most publishes do
    /// not store to that line at all, so readers keep it cached instead of fetching it from the
    /// producer's core each message. The price: messages within one stride of being overwritten
    /// are evicted (and reported as missed) a little early, so the ring retains up to a
    /// sixteenth less.
    fn intent_stride(&self) -> u64 {
        (self.capacity() / 16).min(64 * 1024)
    }

    /// Announces an `intent` between `limit` and `limit + stride`: evicts everything a write
    /// up to it would overwrite, then stores `intent` and fences, so no data store that follows
    /// can be seen before it (the seqlock writer half).
    ///
    /// Evicting means moving `head` to the first record at or after `intent - capacity`. Found
    /// by walking the old records one by one, that is a chain of dependent loads through lines
    /// written a lap ago, which was a large share of a small publish (docs/PERFORMANCE-LOG.md).
    /// So the producer keeps marks, positions where it started records a lap ago, and
    /// announces `intent = mark + capacity` for the furthest mark that fits: that mark is then
    /// exactly the new `head`, with no walk. In rings up to 64 MiB marks are a
    /// quarter stride apart, plus at most one record, so one fits every window unless records
    /// are longer than about three quarters of a stride. Otherwise (long records, larger rings,
    /// the first lap, where nothing is evicted) it announces `limit + stride` and walks from
    /// `head`.
    #[cold]
    #[inline(never)]
    fn announce(self, w: &mut WriterState, limit: u64) {
        let capacity = self.capacity();
        // Never past the gate (lossless segments); the caller checked `limit <= w.gate`.
        let ceiling = (limit + self.intent_stride()).min(w.gate);
        let mut chosen = None;
        while let Some(&mark) = w.marks.front() {
            if mark + capacity > ceiling {
                break;
            }
            w.marks.pop_front();
            if mark >= w.head && mark + capacity >= limit {
                chosen = Some(mark);
            }
        }
        let old_head = w.head;
        let intent = match chosen {
            Some(mark) => {
                w.head = mark;
                mark + capacity
            }
            None => {
                let intent = ceiling;
                let floor = intent.saturating_sub(capacity);
                while w.head < floor {
                    w.head = self.record_after(w.head);
                }
                intent
            }
        };
        if w.head != old_head {
            // Before `intent`: a reader that sees the new `intent` sees this `head` too.
            self.field(offset::HEAD).store(w.head, Ordering::Release);
        }
        self.field(offset::INTENT).store(intent, Ordering::Release);
        fence(Ordering::Release);
        w.announced = intent;
    }

    /// How far apart the producer keeps marks: a quarter stride, or 1/4096 of the ring if
    /// that is more, so a lap holds at most 4096 of them.
    fn mark_spacing(&self) -> u64 {
        (self.intent_stride() / 4).max(self.capacity() / 4096)
    }

    /// Remembers that a record starts at `pos`, for the announcement a lap later.
    #[cold]
    #[inline(never)]
    fn add_mark(self, w: &mut WriterState, pos: u64) {
        let spacing = self.mark_spacing();
        // A lap's worth; any more are marks no announcement took, oldest first.
        if w.marks.len() as u64 > self.capacity() / spacing + 2 {
            w.marks.pop_front();
        }
        w.marks.push_back(pos);
        w.next_mark = pos + spacing;
    }

    /// The position of the record after the (old, about to be evicted) record at `pos`.
    fn record_after(&self, pos: u64) -> u64 {
        let commit = self.at(pos).load(Ordering::Relaxed);
        if commit & PAD != 0 {
            (pos | self.mask) + 1
        } else {
            // The producer wrote this word itself; the clamp only keeps a corrupted ring from
            // sending `head` anywhere unbounded.
            let len = (self.at(pos + 8).load(Ordering::Relaxed) & LEN_MASK).min(self.max_payload());
            pos + record_span(len)
        }
    }

    /// The payload words of a reservation (`align8(len) / 8` of them).
    #[inline]
    pub(crate) fn reserved_words(&self, r: &Reservation) -> &'a [AtomicU64] {
        self.words(r.pos, r.len)
    }

    /// Copies `src` (exactly the reserved length) into the reservation, zero-padding the last
    /// word.
    #[inline]
    pub(crate) fn write_payload(&self, r: &Reservation, src: &[u8]) {
        debug_assert_eq!(src.len() as u64, r.len);
        let words = self.reserved_words(r);
        let chunks = src.chunks_exact(8);
        let rest = chunks.remainder();
        for (target, chunk) in words.iter().zip(chunks) {
            let chunk = chunk.try_into().expect("8 bytes");
            target.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            words[src.len() / 8].store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// Steps 5–8: clear the next commit word, commit, commit the padding, update `latest`.
    /// Returns the message's sequence number.
    #[inline(always)]
    pub(crate) fn commit(&self, w: &mut WriterState, r: Reservation) -> u64 {
        let end = r.pos + record_span(r.len);
        self.at(end).store(0, Ordering::Relaxed);
        self.at(r.pos).store(r.seq, Ordering::Release);
        if let Some(pad) = r.pad {
            self.at(pad).store(r.seq | PAD, Ordering::Release);
        }
        self.field(offset::LATEST).store(r.pos, Ordering::Release);
        if let Some(prefetch) = &w.prefetch {
            self.prefetch_ahead(prefetch, w.tail, end, end - r.pos, w.announced);
        }
        w.tail = end;
        w.next_seq += 1;
        r.seq
    }

    /// After a publish of `span` bytes that moved the tail from `from` to `to`: prefetches for
    /// writing the cache lines that came within the prefetch distance of the tail
    /// ([`prefetch_window`]), at most [`PREFETCH_LINES`] of them and none past `announced`
    /// (lines no reader may still rely on).
    ///
    /// Why: a line the producer is about to overwrite is often still cached by a subscriber
    /// (it read it a lap ago, or is just behind). Without the hint the store that overwrites
    /// it waits for that core to give the line up, and stores drain in order, so each such
    /// wait stalls the producer; a subscriber made the producer up to four times slower this
    /// way (docs/PERFORMANCE-LOG.md). Fetched a kilobyte ahead, the line has arrived by the time
    /// it is written. The per-publish limit keeps a large message from paying for dozens of
    /// prefetches: prefetching all 65 lines of a 4 KiB message made a lone producer slower.
    #[inline]
    fn prefetch_ahead(
        &self,
        prefetch: &WritePrefetch,
        from: u64,
        to: u64,
        span: u64,
        announced: u64,
    ) {
        let (mut line, stop) = prefetch_window(from, to, span, announced);
        while line < stop {
            prefetch.line(self.at(line));
            line += CACHE_LINE;
        }
    }

    /// Publishes `payload` (`len <= max_payload`): reserve, copy, commit.
    #[inline]
    #[cfg(test)]
    pub(crate) fn publish(&self, w: &mut WriterState, payload: &[u8]) -> u64 {
        let reservation = self.reserve(w, payload.len());
        self.write_payload(&reservation, payload);
        self.commit(w, reservation)
    }

    /// [`Self::publish`] on a ring that may be gated: `Err(limit)` as [`Self::try_reserve`].
    pub(crate) fn try_publish(&self, w: &mut WriterState, payload: &[u8]) -> Result<u64, u64> {
        let reservation = self.try_reserve(w, payload.len())?;
        self.write_payload(&reservation, payload);
        Ok(self.commit(w, reservation))
    }

    /// Publishes a gap record ("Gap records" in `docs/LAYOUT.md`): a record shaped like an
    /// 8-byte message whose length word is [`layout::GAP_LENGTH_WORD`] and whose payload is
    /// `missed`; the sequence numbers it stands for are skipped. `Err(limit)` as
    /// [`Self::try_reserve`]. The caller checks `1 <= missed` and that sequence numbers stay
    /// below 2^63.
    pub(crate) fn try_publish_gap(&self, w: &mut WriterState, missed: u64) -> Result<u64, u64> {
        let reservation = self.try_reserve(w, 8)?;
        // Both stores come before the commit, like any payload's.
        self.at(reservation.pos + 8)
            .store(layout::GAP_LENGTH_WORD, Ordering::Relaxed);
        self.at(reservation.pos + layout::RECORD_HEADER)
            .store(missed, Ordering::Relaxed);
        let seq = self.commit(w, reservation);
        w.next_seq = seq + missed;
        Ok(seq)
    }

    // ---------------------------------------------------------------- reader side

    /// Copies the next message into `buf`; returns its sequence number and length. A message
    /// longer than `buf` stays unread ([`RecvError::BufferTooSmall`]).
    #[inline]
    pub(crate) fn read_into(
        &self,
        st: &mut ReaderState,
        buf: &mut [u8],
    ) -> Result<(u64, usize), RecvError> {
        let candidate = self.peek(st)?;
        let len = candidate.len();
        if len > buf.len() {
            self.check_intact(st, &candidate)?;
            return Err(RecvError::BufferTooSmall {
                needed: len,
                available: buf.len(),
            });
        }
        copy_out(self.payload(&candidate), &mut buf[..len]);
        self.confirm(st, &candidate)?;
        Ok((candidate.seq(), len))
    }

    /// Copies up to `max` consecutive messages into `buf`, back to back, and records each one's
    /// sequence number and length in `out` (cleared first); returns how many. The copies are
    /// validated together: one fence and one load of `intent` at the end prove every record at
    /// or after the first one intact (a later record has a later position, so it is lapped
    /// only if the first is). Stops early at the first message that does not fit in the rest of
    /// `buf`, at the end of what is published, and at anything unusual (a lap, a bad length, a
    /// second padding record), which the single read handles when nothing was copied yet: then
    /// this returns what [`Self::read_into`] returns, as a batch of one or an error.
    pub(crate) fn read_batch<T>(
        &self,
        st: &mut ReaderState,
        buf: &mut [u8],
        out: &mut Vec<T>,
        max: usize,
        entry: impl Fn(u64, usize) -> T,
    ) -> Result<usize, RecvError> {
        out.clear();
        if max == 0 {
            return Ok(0);
        }
        let first = st.pos;
        let mut local = *st;
        let mut at = 0;
        let mut skipped_padding = false;
        let mut copied_end = first;
        while out.len() < max {
            let commit = self.at(local.pos).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if commit == local.seq && commit < PAD {
                // The whole word, as in `peek`: anything unusual ends the batch.
                let len = self.at(local.pos + 8).load(Ordering::Relaxed);
                if len > self.max_payload()
                    || (local.pos & self.mask) + record_span(len) > self.capacity()
                    || at + len as usize > buf.len()
                {
                    break;
                }
                let span = record_span(len);
                copy_out(self.words(local.pos, len), &mut buf[at..at + len as usize]);
                out.push(entry(local.seq, len as usize));
                at += len as usize;
                local.pos += span;
                local.seq += 1;
                copied_end = local.pos;
                skipped_padding = false;
            } else if commit == local.seq | PAD && !skipped_padding && local.pos & self.mask != 0 {
                local.pos += self.capacity() - (local.pos & self.mask);
                skipped_padding = true;
            } else {
                break;
            }
        }
        // As in `check_intact`: `intent` must cover the last copied record (and the word
        // after it) and not have lapped the first.
        let intent = self.intent_after_fence();
        if !out.is_empty() && copied_end + 8 <= intent && !self.lapped(intent, first) {
            *st = local;
            return Ok(out.len());
        }
        out.clear();
        let (seq, len) = self.read_into(st, buf)?;
        out.push(entry(seq, len));
        Ok(1)
    }

    /// Copies the next message into `buf`, resized to its length; returns its sequence number.
    #[inline]
    pub(crate) fn read_to_vec(
        &self,
        st: &mut ReaderState,
        buf: &mut Vec<u8>,
    ) -> Result<u64, RecvError> {
        let candidate = self.peek(st)?;
        let len = candidate.len();
        if buf.len() < len {
            buf.resize(len, 0);
        } else {
            buf.truncate(len);
        }
        copy_out(self.payload(&candidate), buf);
        self.confirm(st, &candidate)?;
        Ok(candidate.seq())
    }

    /// The payload words of the record at `pos` with `len` bytes. The caller has checked that
    /// the record fits before the end of the ring.
    #[inline]
    fn words(&self, pos: u64, len: u64) -> &'a [AtomicU64] {
        let start = ((pos + layout::RECORD_HEADER) & self.mask) >> 3;
        let start = start as usize;
        &self.data[start..start + (layout::align8(len) / 8) as usize]
    }

    /// The payload words of a candidate.
    #[inline]
    pub(crate) fn payload(&self, c: &Candidate) -> &'a [AtomicU64] {
        self.words(c.pos, c.len)
    }

    /// Where a new reader starts (`docs/LAYOUT.md`, "Joining").
    ///
    /// The index words are loaded `intent` first, then `head`, then `latest`, each after the
    /// previous one with acquire ordering, and checked against each other: in a valid segment
    /// `head ≤ latest`, neither is more than a ring behind the first `intent`, and both are
    /// below the `intent` loaded after them. So a retry (a record overrun while it was looked
    /// at) happens only when `intent` moved between the two loads: the producer is writing.
    pub(crate) fn join(&self, start: StartAt) -> Result<ReaderState, RecvError> {
        let beginning = ReaderState { pos: 0, seq: 1 };
        if start == StartAt::Beginning {
            return Ok(beginning);
        }
        for _ in 0..MAX_ATTEMPTS {
            let first_intent = self.field(offset::INTENT).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let head = self.field(offset::HEAD).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let latest = self.field(offset::LATEST).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if latest == NO_LATEST {
                return Ok(beginning);
            }
            check_position(
                first_intent,
                "`intent` is not a multiple of 8 or is beyond 2^63",
            )?;
            check_position(head, "`head` is not a multiple of 8 or is beyond 2^63")?;
            check_position(latest, "`latest` is not a multiple of 8 or is beyond 2^63")?;
            if head > latest {
                return Err(RecvError::corrupt("`head` is after `latest`"));
            }
            if self.lapped(first_intent, head) {
                return Err(RecvError::corrupt(
                    "`head` is more than a ring behind `intent`",
                ));
            }
            let pos = if start == StartAt::Oldest {
                head
            } else {
                latest
            };
            let commit = self.at(pos).load(Ordering::Relaxed);
            let len_word = self.at(pos.wrapping_add(8)).load(Ordering::Relaxed);
            // A gap record's count, loaded before the re-check like the length.
            let count = self
                .at(pos.wrapping_add(layout::RECORD_HEADER))
                .load(Ordering::Relaxed);
            let intent = self.intent_after_fence();
            if self.lapped(intent, pos) {
                spin_hint();
                continue;
            }
            // A committed record at `latest` (and so at `head`, before it) was announced
            // before it was indexed: `intent` covers its commit word, its length word and the
            // cleared word after it.
            if latest.saturating_add(layout::RECORD_HEADER + 8) > intent {
                return Err(RecvError::corrupt(
                    "`latest` is not below `intent`: the index words disagree",
                ));
            }
            let seq = commit & !PAD;
            if seq == 0 {
                return Err(RecvError::corrupt(
                    "the record a header position points at is empty",
                ));
            }
            // At a gap record there is no newest message to deliver: `newest` starts after it,
            // as `next` does.
            let gap = self.is_gap(pos, len_word);
            return match start {
                StartAt::Oldest => Ok(ReaderState { pos, seq }),
                StartAt::Newest if commit & PAD == 0 && !gap => Ok(ReaderState { pos, seq }),
                StartAt::Newest | StartAt::Next if commit & PAD == 0 => {
                    let len = len_word & LEN_MASK;
                    if len > self.max_payload()
                        || (pos & self.mask) + record_span(len) > self.capacity()
                    {
                        return Err(RecvError::corrupt(
                            "a record's length points outside the ring",
                        ));
                    }
                    let after = if gap {
                        seq.checked_add(count)
                    } else {
                        Some(seq + 1)
                    };
                    match after {
                        Some(after) if after < PAD && after > seq => Ok(ReaderState {
                            pos: pos.wrapping_add(record_span(len)),
                            seq: after,
                        }),
                        _ => Err(RecvError::corrupt(
                            "a gap record's count is 0 or runs past sequence number 2^63",
                        )),
                    }
                }
                _ => Err(RecvError::corrupt("`latest` points at a padding record")),
            };
        }
        Err(RecvError::overrun())
    }

    /// Steps 1–4 of the read algorithm: find the next committed record and check its length.
    /// Returns [`RecvError::Empty`] when there is none yet and [`RecvError::Lagged`] (after
    /// moving `st` to the oldest retained record) when the reader was lapped.
    #[inline]
    pub(crate) fn peek(&self, st: &mut ReaderState) -> Result<Candidate, RecvError> {
        // Inlined into every read; what is rare (a lap, a bad length, padding) is out of line.
        let mut skipped_padding = false;
        for _ in 0..MAX_ATTEMPTS {
            let commit = self.at(st.pos).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            // `seq < 2^63` keeps a reader that has delivered message 2^63 - 1 from taking a
            // padding record of sequence number 0 for message 2^63.
            if commit == st.seq && commit < PAD {
                // The whole length word is compared, so a set high half (a gap record, or the
                // reserved bits) costs nothing here: it takes the cold path.
                let len = self.at(st.pos + 8).load(Ordering::Relaxed);
                if len > self.max_payload()
                    || (st.pos & self.mask) + record_span(len) > self.capacity()
                {
                    match self.unusual_length(st, len)? {
                        Some(candidate) => return Ok(candidate),
                        None => continue,
                    }
                }
                return Ok(Candidate {
                    pos: st.pos,
                    seq: st.seq,
                    len,
                });
            }
            // The fence above already orders this load after the commit word's.
            let intent = self.field(offset::INTENT).load(Ordering::Relaxed);
            if self.lapped(intent, st.pos) {
                self.lagged(st)?;
                continue;
            }
            if commit == 0 && !skipped_padding && st.seq < PAD {
                self.touch_next_line(st.pos);
                return Err(RecvError::Empty);
            }
            self.unexpected_commit(st, commit, &mut skipped_padding)?;
        }
        Err(RecvError::overrun())
    }

    /// Step 2 and 4 of the read algorithm for a commit word, not overwritten, that is neither
    /// the expected message nor an empty word where one may be: the padding record of the
    /// expected message (the reader moves past it), else a corrupt segment.
    ///
    /// Why anything else is corruption: a reader only ever stands where the producer has
    /// cleared the commit word (the word after the record it read, or the first record of a
    /// lap it joined or recovered to), and until the producer overwrites it in a later lap,
    /// which `intent` shows, that word holds `0`, the expected sequence number or its padding
    /// form. Right after a padding record it is the message itself (the producer commits the
    /// message before the padding), so `0` there is corrupt too. Treating an impossible word
    /// as "nothing yet" would end the reader's stream there without a word of warning.
    #[cold]
    #[inline(never)]
    fn unexpected_commit(
        &self,
        st: &mut ReaderState,
        commit: u64,
        skipped_padding: &mut bool,
    ) -> Result<(), RecvError> {
        if st.seq >= PAD {
            return Err(RecvError::corrupt(
                "sequence numbers reached 2^63, which no producer can publish",
            ));
        }
        if commit == 0 {
            return Err(RecvError::corrupt(
                "no message after the padding record that announced it",
            ));
        }
        if commit == st.seq | PAD {
            return self.skip_padding(st, skipped_padding);
        }
        Err(RecvError::corrupt(
            "a commit word holds neither the expected sequence number, nor its padding, nor 0",
        ))
    }

    /// Loads (and ignores) a word of the cache line after the one holding the commit word at
    /// `pos`, while there is no message there yet.
    ///
    /// Why: a reader that has caught up spins on the next commit word, so that line arrives
    /// the moment the producer commits, but a 64-byte message spans two lines and the second
    /// was then fetched only after the commit was seen: two cache misses one after the other.
    /// Loading the second line on every empty poll has the reader fetch it while it waits,
    /// alongside the first. That shortened the 64-byte ping-pong and cost no throughput
    /// (docs/PERFORMANCE-LOG.md). A `PREFETCHT0` did the same; a load needs no `unsafe`.
    ///
    /// Skipped in loom models: a load whose value is ignored changes no outcome, and would
    /// only multiply the interleavings to explore.
    #[inline(always)]
    fn touch_next_line(&self, pos: u64) {
        if cfg!(loom) {
            return;
        }
        let next_line = (pos | (CACHE_LINE - 1)) + 1;
        std::hint::black_box(self.at(next_line).load(Ordering::Relaxed));
    }

    /// A committed record whose length word is not a length that fits: a gap record (on a
    /// segment that may hold them), a length with the reserved high half set (which readers
    /// ignore), a lap in progress, or corruption. `Some` is a message to deliver; `None` means
    /// look again where `st` now stands.
    #[cold]
    #[inline(never)]
    fn unusual_length(
        &self,
        st: &mut ReaderState,
        word: u64,
    ) -> Result<Option<Candidate>, RecvError> {
        if self.is_gap(st.pos, word) {
            return self.pass_gap(st).map(|()| None);
        }
        let len = word & LEN_MASK;
        if len <= self.max_payload() && (st.pos & self.mask) + record_span(len) <= self.capacity() {
            return Ok(Some(Candidate {
                pos: st.pos,
                seq: st.seq,
                len,
            }));
        }
        self.bad_length(st).map(|()| None)
    }

    /// Whether the record at `pos` with length word `word` is a gap record: the segment's
    /// `flags` allow them (loaded only on the cold paths that meet one; the identity block does
    /// not change after `magic`), the word says so and the 24-byte record fits in the lap.
    fn is_gap(&self, pos: u64, word: u64) -> bool {
        word == layout::GAP_LENGTH_WORD
            && (pos & self.mask) + record_span(8) <= self.capacity()
            && self.has_gap_records()
    }

    fn has_gap_records(&self) -> bool {
        self.field(offset::FLAGS).load(Ordering::Relaxed) & layout::FLAG_GAPS != 0
    }

    /// *Gap record* (`docs/LAYOUT.md`, "Gap records"): the record at `st.pos` says its count of
    /// messages, from `st.seq` on, never reached this segment. Checked like a message (the same
    /// `intent` re-check proves the count was not torn), then reported as `Lagged` with the
    /// reader moved past it; a lap over it is reported as the lap. Never `Ok`.
    fn pass_gap(&self, st: &mut ReaderState) -> Result<(), RecvError> {
        let missed = self
            .at(st.pos + layout::RECORD_HEADER)
            .load(Ordering::Relaxed);
        let gap = Candidate {
            pos: st.pos,
            seq: st.seq,
            len: 8,
        };
        self.check_intact(st, &gap)?;
        match st.seq.checked_add(missed) {
            Some(next) if missed > 0 && next < PAD => {
                st.pos += record_span(8);
                st.seq = next;
                Err(RecvError::Lagged { missed })
            }
            _ => Err(RecvError::corrupt(
                "a gap record's count is 0 or runs past sequence number 2^63",
            )),
        }
    }

    /// A committed record whose length does not fit: a lap in progress (`Ok` after recovering
    /// to look again, or `Lagged`), else a corrupt segment.
    #[cold]
    #[inline(never)]
    fn bad_length(&self, st: &mut ReaderState) -> Result<(), RecvError> {
        if self.lapped(self.intent_after_fence(), st.pos) {
            return self.lagged(st);
        }
        Err(RecvError::corrupt(
            "a record's length points outside the ring",
        ))
    }

    /// Moves past the padding record at `st.pos` to the start of the next lap.
    #[cold]
    #[inline(never)]
    fn skip_padding(&self, st: &mut ReaderState, skipped: &mut bool) -> Result<(), RecvError> {
        if st.pos & self.mask == 0 || *skipped {
            return Err(RecvError::corrupt("a padding record at the start of a lap"));
        }
        st.pos = (st.pos | self.mask) + 1;
        *skipped = true;
        Ok(())
    }

    /// Recovers from a lap: `Err(Lagged)` if messages were lost, `Ok(())` if the reader only
    /// lost a padding record and should look again where it now stands.
    #[cold]
    #[inline(never)]
    fn lagged(&self, st: &mut ReaderState) -> Result<(), RecvError> {
        match self.recover(st)? {
            0 => Ok(()),
            missed => Err(RecvError::Lagged { missed }),
        }
    }

    /// Whether the candidate's bytes were intact when the caller finished reading them; if so,
    /// advances `st` past it. The caller must have finished every load of the payload before
    /// calling this (the acquire fence inside orders them before the `intent` re-check).
    #[inline]
    pub(crate) fn confirm(&self, st: &mut ReaderState, c: &Candidate) -> Result<(), RecvError> {
        self.check_intact(st, c)?;
        st.pos = c.pos.wrapping_add(record_span(c.len));
        st.seq = c.seq + 1;
        Ok(())
    }

    /// Moves a reader forward, without delivering anything, to the first record at or after
    /// `floor` (a registering reader's step 6, docs/LAYOUT.md "Registering"); returns how many
    /// messages it passed over, read or lost. Stops early at the end of what is published.
    pub(crate) fn skip_to(&self, st: &mut ReaderState, floor: u64) -> Result<u64, RecvError> {
        let first = st.seq;
        while st.pos < floor {
            match self.peek(st) {
                // Past a padding record `peek` may land at or after `floor`: that message is
                // protected, so it stays unread.
                Ok(candidate) if candidate.pos >= floor => break,
                Ok(candidate) => match self.confirm(st, &candidate) {
                    Ok(()) | Err(RecvError::Lagged { .. }) => {}
                    Err(e) => return Err(e),
                },
                Err(RecvError::Lagged { .. }) => {}
                Err(RecvError::Empty) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(st.seq - first)
    }

    /// Like [`Ring::confirm`] but leaves the reader on the candidate (used when the caller
    /// declines the message, e.g. because its buffer is too small).
    #[inline]
    pub(crate) fn check_intact(
        &self,
        st: &mut ReaderState,
        c: &Candidate,
    ) -> Result<(), RecvError> {
        // One range check: `intent` is at least the end of the record's announcement (its
        // span plus the cleared word after it) and at most a ring past its start. Above, the
        // record was overwritten; below, `intent` cannot be the producer's (it announces every
        // record before committing it), so it could not prove anything about the copy.
        let announced = record_span(c.len) + 8;
        let intent = self.intent_after_fence();
        if intent.wrapping_sub(c.pos.wrapping_add(announced)) > self.capacity() - announced {
            return self.candidate_not_covered(st, c.pos, intent);
        }
        Ok(())
    }

    /// `intent` does not lie in the candidate's range: the candidate was overwritten while it
    /// was read (a lap), or `intent` is behind it (corrupt).
    #[cold]
    #[inline(never)]
    fn candidate_not_covered(
        &self,
        st: &mut ReaderState,
        pos: u64,
        intent: u64,
    ) -> Result<(), RecvError> {
        if !self.lapped(intent, pos) {
            return Err(RecvError::corrupt(
                "`intent` is behind a committed record, so torn reads could not be detected",
            ));
        }
        // A candidate is a message record, so a lap over it always loses that message.
        self.lagged(st)?;
        Err(RecvError::corrupt(
            "a lapped message is still the oldest retained",
        ))
    }

    /// *Lapped*: move `st` to the oldest retained record. Returns the number of messages lost,
    /// which is zero only when the reader stood on an evicted padding record whose message is
    /// still retained.
    fn recover(&self, st: &mut ReaderState) -> Result<u64, RecvError> {
        for _ in 0..MAX_ATTEMPTS {
            let first_intent = self.field(offset::INTENT).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let head = self.field(offset::HEAD).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            check_position(
                first_intent,
                "`intent` is not a multiple of 8 or is beyond 2^63",
            )?;
            check_position(head, "`head` is not a multiple of 8 or is beyond 2^63")?;
            if self.lapped(first_intent, head) {
                return Err(RecvError::corrupt(
                    "`head` is more than a ring behind `intent`",
                ));
            }
            let commit = self.at(head).load(Ordering::Relaxed);
            let intent = self.intent_after_fence();
            if self.lapped(intent, head) {
                // `intent` moved since the first load: the producer is overrunning us.
                spin_hint();
                continue;
            }
            if head.saturating_add(layout::RECORD_HEADER + 8) > intent {
                return Err(RecvError::corrupt(
                    "`head` is not below `intent`: the index words disagree",
                ));
            }
            let seq = commit & !PAD;
            if seq < st.seq || (seq == st.seq && head <= st.pos) {
                return Err(RecvError::corrupt(
                    "the oldest retained record is not newer than the reader",
                ));
            }
            // The missed messages lie between the reader and `head`, 16 bytes each at least,
            // so a garbage commit word at `head` cannot make up an arbitrary count. (Unless gap
            // records lie between: one stands for any number of messages.)
            let missed = seq - st.seq;
            if missed > head.saturating_sub(st.pos) / layout::RECORD_HEADER
                && !self.has_gap_records()
            {
                return Err(RecvError::corrupt(
                    "the oldest retained sequence number is more than the ring could have held",
                ));
            }
            *st = ReaderState { pos: head, seq };
            return Ok(missed);
        }
        Err(RecvError::overrun())
    }

    /// *End of stream* (`docs/LAYOUT.md`): whether a reader that found nothing more to read
    /// after its producer died stands where the producer's last record ends. The segment no
    /// longer changes, so `latest` says what was published: the reader must have reached the
    /// record after it, or (the one record a producer killed between its commit and its
    /// `latest` store leaves) the record after that one. Anything else means the reader's
    /// stream stopped early or went past what was published: the segment is corrupt, and
    /// saying so is what keeps "received + missed = published" from failing silently.
    pub(crate) fn check_end(&self, st: &ReaderState) -> Result<(), RecvError> {
        let latest = self.field(offset::LATEST).load(Ordering::Relaxed);
        let intent = self.field(offset::INTENT).load(Ordering::Relaxed);
        if latest == NO_LATEST {
            return if st.seq == 1 {
                Ok(())
            } else {
                Err(RecvError::corrupt(
                    "the producer is gone and `latest` says it published nothing, but messages were read",
                ))
            };
        }
        check_position(latest, "`latest` is not a multiple of 8 or is beyond 2^63")?;
        let last_seq = self.at(latest).load(Ordering::Relaxed);
        let Some((next, next_seq)) = self.end_of_record(latest, last_seq, intent) else {
            return Err(RecvError::corrupt(
                "the producer is gone and `latest` does not point at a complete message",
            ));
        };
        if st.seq == next_seq && st.pos == next {
            return Ok(());
        }
        if st.seq > next_seq {
            let mut at = next;
            if self.at(at).load(Ordering::Relaxed) == next_seq | PAD && at & self.mask != 0 {
                at = (at | self.mask) + 1;
            }
            let unindexed = self.at(at).load(Ordering::Relaxed);
            if unindexed == next_seq
                && self.end_of_record(at, unindexed, intent) == Some((st.pos, st.seq))
            {
                return Ok(());
            }
        }
        if st.seq <= last_seq {
            return Err(RecvError::corrupt(
                "the producer is gone, but the reader cannot reach the messages it published last",
            ));
        }
        Err(RecvError::corrupt(
            "the producer is gone, and the reader received records past the last one it published",
        ))
    }

    /// Where the record at `pos`, with commit word `seq`, ends and the sequence number after it,
    /// if it is a complete record the producer announced: a sequence number, a length that
    /// fits (or a gap record's count), and `intent` covering it and the word after it without
    /// having lapped it.
    fn end_of_record(&self, pos: u64, seq: u64, intent: u64) -> Option<(u64, u64)> {
        if seq == 0 || seq >= PAD {
            return None;
        }
        let word = self.at(pos.wrapping_add(8)).load(Ordering::Relaxed);
        let after = if self.is_gap(pos, word) {
            let missed = self
                .at(pos.wrapping_add(layout::RECORD_HEADER))
                .load(Ordering::Relaxed);
            seq.checked_add(missed)
                .filter(|&after| missed > 0 && after < PAD)?
        } else {
            seq + 1
        };
        let len = word & LEN_MASK;
        if len > self.max_payload() || (pos & self.mask) + record_span(len) > self.capacity() {
            return None;
        }
        let end = pos + record_span(len);
        (end + 8 <= intent && !self.lapped(intent, pos)).then_some((end, after))
    }

    // ---------------------------------------------------------------- inspection

    /// Where the producer will write next, as far as the header and the newest record tell
    /// (for display: the newest record's end).
    pub(crate) fn approx_tail(&self) -> u64 {
        let latest = self.field(offset::LATEST).load(Ordering::Relaxed);
        if latest == NO_LATEST || latest >= layout::MAX_POSITION {
            return 0;
        }
        let len = self.at(latest.wrapping_add(8)).load(Ordering::Relaxed) & LEN_MASK;
        latest + record_span(len.min(self.max_payload()))
    }

    /// A snapshot of the index words and the sequence numbers they point at, for `inspect`.
    /// The commit words are validated against `intent` like any read, so a live producer
    /// cannot make it report torn values; it retries, and after many overruns reports what it
    /// saw last.
    pub(crate) fn snapshot(&self) -> IndexSnapshot {
        let mut snap = IndexSnapshot {
            intent: 0,
            head: 0,
            latest: None,
            oldest_seq: None,
            next_seq: 1,
        };
        for _ in 0..MAX_ATTEMPTS {
            let latest = self.field(offset::LATEST).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let head = self.field(offset::HEAD).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            snap.head = head;
            if latest == NO_LATEST {
                snap.intent = self.field(offset::INTENT).load(Ordering::Relaxed);
                return snap;
            }
            let oldest = self.at(head).load(Ordering::Relaxed) & !PAD;
            let newest = self.at(latest).load(Ordering::Relaxed) & !PAD;
            // After a gap record at `latest`, the next sequence number is past its count.
            let count = if self.is_gap(
                latest,
                self.at(latest.wrapping_add(8)).load(Ordering::Relaxed),
            ) {
                self.at(latest.wrapping_add(layout::RECORD_HEADER))
                    .load(Ordering::Relaxed)
            } else {
                1
            };
            snap.intent = self.intent_after_fence();
            snap.latest = Some(latest);
            snap.oldest_seq = Some(oldest);
            snap.next_seq = newest.saturating_add(count);
            if !self.lapped(snap.intent, head) {
                return snap;
            }
            spin_hint();
        }
        snap
    }
}

/// What [`Ring::snapshot`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexSnapshot {
    pub intent: u64,
    pub head: u64,
    pub latest: Option<u64>,
    pub oldest_seq: Option<u64>,
    pub next_seq: u64,
}

/// A position loaded from the header must be a multiple of 8 below 2^63 (`docs/LAYOUT.md`,
/// "Conventions"); `problem` says which word was not.
fn check_position(value: u64, problem: &'static str) -> Result<(), RecvError> {
    if value % 8 != 0 || value >= layout::MAX_POSITION {
        return Err(RecvError::corrupt(problem));
    }
    Ok(())
}

/// The positions of the cache lines [`Ring::prefetch_ahead`] prefetches after a publish of a
/// `span`-byte record moved the tail from `from` to `to` (further than `span` when padding
/// came first): the lines that start in `[from, to)` shifted by the distance, at most
/// [`PREFETCH_LINES`] of them, none at or past `announced`. As `(first, end)`; empty when
/// `first >= end`.
///
/// The distance is [`PREFETCH_DISTANCE`] or two spans, whichever is larger, so the window
/// starts at least one span past the new tail (except after the one publish a lap that pads
/// the end of the ring): never on the next record, whose first line a
/// reader that has caught up is polling (prefetching it only takes the line from that reader,
/// which fetches it straight back), and never behind the tail on lines this publish has just
/// written. It pays off when consumers on other cores hold the lines the producer is about to
/// write, and costs a lone producer a little; docs/PERFORMANCE-LOG.md has both. Below 512
/// bytes it changes nothing.
#[inline]
fn prefetch_window(from: u64, to: u64, span: u64, announced: u64) -> (u64, u64) {
    let distance = PREFETCH_DISTANCE.max(2 * span);
    let first = (from + distance).next_multiple_of(CACHE_LINE);
    let end = (to + distance)
        .min(announced)
        .min(first + PREFETCH_LINES * CACHE_LINE);
    (first, end)
}

/// A ring on the heap, for unit tests and loom models (Miri and loom cannot map shared files).
#[cfg(test)]
pub(crate) struct HeapRing {
    header: Vec<AtomicU64>,
    data: Vec<AtomicU64>,
    wake_seq: crate::sync::AtomicU32,
    parked: crate::sync::AtomicU32,
    wake_throttle: crate::sync::AtomicU32,
}

#[cfg(test)]
impl HeapRing {
    pub(crate) fn new(capacity: u64) -> Self {
        let heap = HeapRing {
            header: (0..layout::HEADER_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            data: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            wake_seq: crate::sync::AtomicU32::new(0),
            parked: crate::sync::AtomicU32::new(0),
            wake_throttle: crate::sync::AtomicU32::new(0),
        };
        heap.ring().init_indices();
        heap
    }

    pub(crate) fn ring(&self) -> Ring<'_> {
        Ring::new(
            self.header
                .as_slice()
                .try_into()
                .expect("HEADER_WORDS words"),
            &self.data,
        )
    }

    /// The wake-up words, as a subscriber with write access (or the producer) sees them.
    pub(crate) fn wake_words(&self) -> crate::wait::WakeWords<'_> {
        crate::wait::WakeWords::new(
            &self.wake_seq,
            Some(&self.parked),
            &self.wake_throttle,
            crate::wait::Barrier::Fence,
        )
    }

    /// Direct access for tests that corrupt the ring on purpose.
    pub(crate) fn data(&self) -> &[AtomicU64] {
        &self.data
    }

    pub(crate) fn header(&self) -> &[AtomicU64] {
        &self.header
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, not(loom)))]
mod corruption_tests;

#[cfg(all(test, not(loom)))]
mod gap_tests;

#[cfg(all(test, loom))]
mod loom_models;
