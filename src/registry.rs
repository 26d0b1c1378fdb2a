//! The reader slots of a lossless segment (docs/LAYOUT.md, "Lossless mode"): the words both
//! sides share, and the protocol steps on them.
//!
//! Written against [`crate::sync`]'s atomics like the ring protocol, so the loom models in
//! `registry/loom_models.rs` check the code that runs over the shared mapping. The slot locks
//! (file locks) and the producer's waiting are not here: they are system calls, in
//! `registration` (reader) and `gate` (producer).

use crate::layout::{self, slot as field};
use std::time::Duration;

use crate::sync::{fence, futex_wait, futex_wake_all, AtomicU32, AtomicU64, Ordering};

/// Slot state (bits 0–1 of the `state` word): nobody is registered.
pub(crate) const FREE: u64 = 0;
/// Slot state: a registered reader holds the producer back.
pub(crate) const ACTIVE: u64 = 1;
/// Slot state: the producer gave up waiting for this reader; it is lossy now.
pub(crate) const EVICTED: u64 = 2;

/// The state bits of a `state` word.
#[inline]
pub(crate) fn state_of(word: u64) -> u64 {
    word & 3
}

/// The generation of a `state` word.
#[inline]
pub(crate) fn gen_of(word: u64) -> u64 {
    word >> 2
}

/// A `state` word.
#[inline]
pub(crate) fn state_word(gen: u64, state: u64) -> u64 {
    (gen << 2) | state
}

/// The gate words (producer header) and the slots (subscriber area) of one segment.
#[derive(Clone, Copy)]
pub(crate) struct Registry<'a> {
    /// `gate_limit` (header, written by the producer only).
    gate_limit: &'a AtomicU64,
    /// `evictions` (header, written by the producer only).
    evictions: &'a AtomicU64,
    /// `reg_gen` (subscriber area).
    reg_gen: &'a AtomicU64,
    /// The slots' words, [`layout::SLOT_WORDS`] per slot.
    slots: &'a [AtomicU64],
}

/// What the producer saw in one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotView {
    /// The slot's index.
    pub index: usize,
    /// Its `state` word (generation and state).
    pub state: u64,
    /// Its owner's read position.
    pub pos: u64,
    /// The sequence number its owner expects next.
    pub seq: u64,
    /// Its owner's process id (informational).
    pub pid: u64,
}

/// The producer's private memory of the slots: which were `ACTIVE` when it last scanned them,
/// and under which `reg_gen`, so a refresh with no registration change reads only their `pos`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScanCache {
    reg_gen: Option<u64>,
    /// `(index, state word)` of the slots found `ACTIVE`.
    active: Vec<(usize, u64)>,
}

impl ScanCache {
    /// The `ACTIVE` slots of the last scan.
    #[cfg(test)]
    pub(crate) fn active(&self) -> &[(usize, u64)] {
        &self.active
    }
}

/// The result of a refresh: the new gate and the slot that holds it, if a reader does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refreshed {
    /// The new `gate_limit`.
    pub gate: u64,
    /// The `(index, state word, clamped pos)` of the slowest `ACTIVE` reader, if it is what
    /// bounds the gate (rather than the half-ring cap).
    pub holder: Option<(usize, u64, u64)>,
}

/// The wake-up words of lossless mode (`gate_wake`, `producer_blocked`; docs/LAYOUT.md,
/// "Producer", "Blocked"): a blocked producer sleeps on `gate_wake`, and a reader that publishes
/// progress wakes it.
#[derive(Clone, Copy)]
pub(crate) struct GateWords<'a> {
    /// `gate_wake`: the futex word the producer sleeps on while blocked.
    pub wake: &'a AtomicU32,
    /// `producer_blocked`.
    pub blocked: &'a AtomicU32,
}

impl GateWords<'_> {
    /// Producer: from now on readers that publish progress wake it. Store, full fence, and then
    /// the caller's refresh loads the readers' positions: the producer half of a Dekker pair
    /// with [`Self::nudge`].
    pub(crate) fn announce_blocked(&self) {
        self.blocked.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Producer: the value to sleep on; load it before the refresh that found no room.
    pub(crate) fn seen(&self) -> u32 {
        self.wake.load(Ordering::Acquire)
    }

    /// Producer: sleeps until a reader's nudge, unless one came after `seen` was loaded, or until
    /// `timeout`.
    pub(crate) fn sleep(&self, seen: u32, timeout: Option<Duration>) {
        futex_wait(self.wake, seen, timeout);
    }

    /// Producer: no longer blocked.
    pub(crate) fn unblocked(&self) {
        self.blocked.store(0, Ordering::Relaxed);
    }

    /// Reader, after publishing progress: wakes a blocked producer. With `dekker` (the reader
    /// found nothing to read, so it may park next) a full fence first orders the progress store
    /// before the look at `producer_blocked`, so the producer cannot sleep through it; without,
    /// it is a hint the producer's bounded sleep makes up for.
    pub(crate) fn nudge(&self, dekker: bool) {
        if dekker {
            fence(Ordering::SeqCst);
        }
        if self.blocked.load(Ordering::Relaxed) != 0 {
            self.wake.fetch_add(1, Ordering::Release);
            futex_wake_all(self.wake);
        }
    }
}

/// A registered reader of a lossless segment, as [`Publisher::readers`] and
/// [`SegmentInfo::readers`] report it.
///
/// [`Publisher::readers`]: crate::Publisher::readers
/// [`SegmentInfo::readers`]: crate::SegmentInfo::readers
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisteredReader {
    /// Its slot.
    pub slot: usize,
    /// The process id it registered with (informational: liveness is decided by its slot lock).
    pub pid: u64,
    /// Whether the producer evicted it (it held the producer back longer than `max_block`); an
    /// evicted reader is lossy until it registers again.
    pub evicted: bool,
    /// The position of the next record it will read.
    pub position: u64,
    /// The sequence number of the next message it will read.
    pub next_seq: u64,
    /// Messages published that it has not yet read (as of its last progress report, which
    /// readers make in batches).
    pub lag_messages: u64,
    /// Bytes of the ring it has not yet read (likewise).
    pub lag_bytes: u64,
}

impl<'a> Registry<'a> {
    /// A view over the gate words and `slots` (a whole number of slots).
    pub(crate) fn new(
        gate_limit: &'a AtomicU64,
        evictions: &'a AtomicU64,
        reg_gen: &'a AtomicU64,
        slots: &'a [AtomicU64],
    ) -> Self {
        debug_assert_eq!(slots.len() % layout::SLOT_WORDS, 0);
        Registry {
            gate_limit,
            evictions,
            reg_gen,
            slots,
        }
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() / layout::SLOT_WORDS
    }

    fn word(&self, index: usize, field: usize) -> &'a AtomicU64 {
        &self.slots[index * layout::SLOT_WORDS + field / 8]
    }

    /// The current `gate_limit`.
    #[cfg(test)]
    pub(crate) fn gate_limit(&self) -> u64 {
        self.gate_limit.load(Ordering::Relaxed)
    }

    /// The current `evictions` count.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The current `reg_gen`.
    #[cfg(test)]
    pub(crate) fn reg_gen(&self) -> u64 {
        self.reg_gen.load(Ordering::Relaxed)
    }

    /// Slot `index` as it is now (for display and for the producer's blocked path).
    /// Only relaxed loads and a fence, so it works through a read-only mapping too.
    pub(crate) fn view(&self, index: usize) -> SlotView {
        let view = SlotView {
            index,
            state: self.word(index, field::STATE).load(Ordering::Relaxed),
            pos: self.word(index, field::POS).load(Ordering::Relaxed),
            seq: self.word(index, field::SEQ).load(Ordering::Relaxed),
            pid: self.word(index, field::PID).load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        view
    }

    /// The registered (active or evicted) readers, with their lag behind a producer whose next
    /// message is `next_seq` and next free position `tail`.
    pub(crate) fn readers(&self, next_seq: u64, tail: u64) -> Vec<RegisteredReader> {
        (0..self.len())
            .map(|index| self.view(index))
            .filter(|v| matches!(state_of(v.state), ACTIVE | EVICTED))
            .map(|v| RegisteredReader {
                slot: v.index,
                pid: v.pid,
                evicted: state_of(v.state) == EVICTED,
                position: v.pos,
                next_seq: v.seq,
                lag_messages: next_seq.saturating_sub(v.seq),
                lag_bytes: tail.saturating_sub(v.pos),
            })
            .collect()
    }

    /// How many readers are registered and active.
    pub(crate) fn active(&self) -> usize {
        (0..self.len())
            .filter(|&index| state_of(self.view(index).state) == ACTIVE)
            .count()
    }

    // ---------------------------------------------------------------- reader side

    /// Registering, steps 3–4: records the owner's position and marks the slot `ACTIVE` under a
    /// new generation, which it returns. The caller holds the slot lock, so only the producer can
    /// change `state` meanwhile (reclaiming or evicting the previous, dead owner).
    pub(crate) fn activate(&self, index: usize, pos: u64, seq: u64, pid: u64, now_ns: u64) -> u64 {
        self.word(index, field::SEQ).store(seq, Ordering::Relaxed);
        self.word(index, field::PID).store(pid, Ordering::Relaxed);
        self.word(index, field::REGISTERED_NS)
            .store(now_ns, Ordering::Relaxed);
        self.word(index, field::POS).store(pos, Ordering::Release);
        let state = self.word(index, field::STATE);
        let mut current = state.load(Ordering::Relaxed);
        loop {
            let gen = gen_of(current).wrapping_add(1) & (u64::MAX >> 2);
            match state.compare_exchange(
                current,
                state_word(gen, ACTIVE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return gen,
                Err(seen) => current = seen,
            }
        }
    }

    /// Registering, step 5: announces the registration and returns the gate in force. Every
    /// position at or after `gate - capacity` is protected from now on (docs/LAYOUT.md, "Why
    /// registration is safe").
    pub(crate) fn announce_registration(&self) -> u64 {
        self.reg_gen.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.gate_limit.load(Ordering::Relaxed)
    }

    /// Reader progress: the owner has finished with every byte before `pos`.
    #[inline]
    pub(crate) fn publish_progress(&self, index: usize, pos: u64, seq: u64) {
        self.word(index, field::SEQ).store(seq, Ordering::Relaxed);
        self.word(index, field::POS).store(pos, Ordering::Release);
    }

    /// The state of slot `index` as its owner of generation `gen` sees it: [`ACTIVE`],
    /// [`EVICTED`], or [`FREE`] if the slot is no longer its own (which only a hostile writer
    /// can cause while it holds the lock).
    pub(crate) fn owner_state(&self, index: usize, gen: u64) -> u64 {
        let word = self.word(index, field::STATE).load(Ordering::Acquire);
        if gen_of(word) == gen {
            match state_of(word) {
                s @ (ACTIVE | EVICTED) => s,
                _ => FREE,
            }
        } else {
            FREE
        }
    }

    /// Unregistering: frees the slot if it is still the owner's (`ACTIVE` or `EVICTED` under
    /// `gen`) and announces the change. The caller releases the slot lock afterwards.
    pub(crate) fn deactivate(&self, index: usize, gen: u64) {
        let state = self.word(index, field::STATE);
        for from in [ACTIVE, EVICTED] {
            if state
                .compare_exchange(
                    state_word(gen, from),
                    state_word(gen, FREE),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.reg_gen.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }

    // ---------------------------------------------------------------- producer side

    /// The producer's refresh (docs/LAYOUT.md, "Producer"): computes the gate from the slowest
    /// `ACTIVE` reader, publishes it, and checks that no registration slipped in meanwhile.
    /// `announced` and `tail` are the producer's; `capacity` the ring's.
    pub(crate) fn refresh(
        &self,
        cache: &mut ScanCache,
        announced: u64,
        tail: u64,
        capacity: u64,
    ) -> Refreshed {
        loop {
            let gen = self.reg_gen.load(Ordering::Acquire);
            if cache.reg_gen != Some(gen) {
                cache.active.clear();
                for index in 0..self.len() {
                    let word = self.word(index, field::STATE).load(Ordering::Acquire);
                    if state_of(word) == ACTIVE {
                        cache.active.push((index, word));
                    }
                }
                cache.reg_gen = Some(gen);
            }
            let floor = announced.saturating_sub(capacity);
            let mut holder = None;
            let mut changed = false;
            for &(index, word) in &cache.active {
                // `state` shares a line with `pos`, so checking it costs nothing. A slot whose
                // state changed without a `reg_gen` increment (its owner died between freeing it
                // and counting that, or a hostile write) no longer holds the gate; the next
                // refresh scans every slot again. A registration in progress counts `reg_gen`
                // after its state change, and the check below catches it.
                if self.word(index, field::STATE).load(Ordering::Acquire) != word {
                    changed = true;
                    continue;
                }
                let pos = self.word(index, field::POS).load(Ordering::Acquire);
                // A reader already overwritten cannot be protected (it is told `Lagged`), and a
                // garbage `pos` must not stop the producer for ever or let it run past `tail`.
                let clamped = pos.max(floor).min(tail);
                if holder.map_or(true, |(_, _, p)| clamped < p) {
                    holder = Some((index, word, clamped));
                }
            }
            // Half a ring past what is announced (plus the pre-cleared word), which is more
            // than any one record needs, even after padding.
            let cap = announced.saturating_add(capacity / 2 + 8);
            let (gate, holder) = match holder {
                Some((_, _, p)) if p + capacity < cap => (p + capacity, holder),
                _ => (cap, None),
            };
            if changed {
                cache.reg_gen = None;
            }
            self.gate_limit.store(gate, Ordering::Release);
            fence(Ordering::SeqCst);
            if self.reg_gen.load(Ordering::Relaxed) == gen {
                return Refreshed { gate, holder };
            }
        }
    }

    /// Moves slot `index` from exactly `observed` (an `ACTIVE` state word) to `to` ([`FREE`]
    /// for a dead owner, [`EVICTED`] for a stuck one), counts it and announces it. `false` if
    /// the slot changed meanwhile (its owner left, or a new one registered): nothing is done.
    pub(crate) fn cut_loose(&self, index: usize, observed: u64, to: u64) -> bool {
        debug_assert_eq!(state_of(observed), ACTIVE);
        let done = self
            .word(index, field::STATE)
            .compare_exchange(
                observed,
                state_word(gen_of(observed), to),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if done {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            self.reg_gen.fetch_add(1, Ordering::SeqCst);
        }
        done
    }
}

/// The gate words and slots on the heap, for the unit tests and the loom models.
#[cfg(test)]
pub(crate) struct HeapRegistry {
    gate: AtomicU64,
    evictions: AtomicU64,
    reg_gen: AtomicU64,
    slots: Vec<AtomicU64>,
    gate_wake: AtomicU32,
    blocked: AtomicU32,
}

#[cfg(test)]
impl HeapRegistry {
    pub(crate) fn new(slots: usize) -> Self {
        HeapRegistry {
            gate: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            reg_gen: AtomicU64::new(0),
            slots: (0..slots * layout::SLOT_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            gate_wake: AtomicU32::new(0),
            blocked: AtomicU32::new(0),
        }
    }

    pub(crate) fn gate_words(&self) -> GateWords<'_> {
        GateWords {
            wake: &self.gate_wake,
            blocked: &self.blocked,
        }
    }

    pub(crate) fn registry(&self) -> Registry<'_> {
        Registry::new(&self.gate, &self.evictions, &self.reg_gen, &self.slots)
    }
}

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(all(test, not(loom)))]
mod tests;
