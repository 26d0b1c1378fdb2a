//! The producer's side of lossless mode (docs/LAYOUT.md, "Lossless mode", "Producer"): its gate,
//! waiting while a registered reader holds it back, and cutting dead or stuck readers loose.
//!
//! The hot path never comes here: a publish consults the gate only when it must announce
//! `intent` past it ([`crate::ring::Ring::try_reserve`]), about once per half ring while
//! readers keep up.

use std::fs::File;
use std::time::{Duration, Instant};

use crate::layout;
use crate::liveness;
use crate::registry::{self, GateWords, Registry, ScanCache};
use crate::ring::WriterState;
use crate::sync::spin_hint;

/// Default number of reader slots of a lossless segment (all the subscriber area holds).
pub const DEFAULT_READER_SLOTS: u64 = layout::MAX_READER_SLOTS;
/// Default for how long a live registered reader may hold the producer back before it is
/// evicted: 2 s. Far longer than a scheduling delay, a page-fault storm or a garbage-collection
/// pause, so a reader that is merely slow for a moment is never evicted; short enough that a
/// stopped or wedged reader costs the producer seconds, not an outage.
pub const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(2);
/// Default for how often a blocked producer tests whether the reader holding it back is still
/// alive: 5 ms, so a reader killed while it holds the producer releases it within about that.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// How many times a blocked producer re-reads the slots before it sleeps: a reader that is
/// about to publish its progress is usually quicker to wait for than a futex round trip.
const SPINS: u32 = 200;

/// The reader that holds the producer back, as [`Error::Backpressure`](crate::Error) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocker {
    pub slot: usize,
    pub pid: u64,
    pub behind_bytes: u64,
    pub behind_messages: u64,
}

/// How long a publish may wait for room.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience {
    /// Not at all (`try_publish`).
    None,
    /// Until the deadline (`publish_timeout`), or for ever (`publish`).
    Until(Option<Instant>),
}

/// The producer's private state of lossless mode.
#[derive(Debug)]
pub(crate) struct Gate {
    cache: ScanCache,
    probe_interval: Duration,
    max_block: Option<Duration>,
    held: Option<Held>,
}

/// Which reader holds the producer back, and since when.
#[derive(Debug, Clone, Copy)]
struct Held {
    slot: usize,
    state: u64,
    since: Instant,
    probed: Instant,
}

impl Gate {
    pub(crate) fn new(probe_interval: Duration, max_block: Option<Duration>) -> Self {
        Gate {
            cache: ScanCache::default(),
            probe_interval,
            max_block,
            held: None,
        }
    }

    /// Publishes the first gate, before the segment's `magic`: a lossless producer is gated from
    /// its first publish.
    pub(crate) fn start(&mut self, reg: Registry<'_>, w: &mut WriterState, capacity: u64) {
        let r = reg.refresh(&mut self.cache, w.announced(), w.tail(), capacity);
        w.set_gate(r.gate);
    }

    /// Raises the gate to at least `limit`, waiting as `patience` allows while a registered
    /// reader holds it back (docs/LAYOUT.md, "Producer", "Blocked"). Evicts a reader that holds it
    /// for `max_block`, and frees the slot of one that died.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        &mut self,
        reg: Registry<'_>,
        words: GateWords<'_>,
        file: &File,
        w: &mut WriterState,
        capacity: u64,
        limit: u64,
        patience: Patience,
    ) -> Result<(), Blocker> {
        let mut spins = 0;
        let mut flagged = false;
        let result = loop {
            let seen = words.seen();
            let r = reg.refresh(&mut self.cache, w.announced(), w.tail(), capacity);
            w.set_gate(r.gate);
            if r.gate >= limit {
                self.held = None;
                break Ok(());
            }
            let Some((slot, state, pos)) = r.holder else {
                // The half-ring bound always covers one record; only a changing registry gets
                // here, and the next refresh sees it settled.
                spin_hint();
                continue;
            };
            let now = Instant::now();
            let held = match self.held {
                Some(h) if h.slot == slot && h.state == state => h,
                _ => Held {
                    slot,
                    state,
                    since: now,
                    probed: now,
                },
            };
            self.held = Some(held);
            let deadline = match patience {
                Patience::None => break Err(self.blocker(reg, w, slot, pos)),
                Patience::Until(deadline) => deadline,
            };
            if deadline.is_some_and(|d| now >= d) {
                break Err(self.blocker(reg, w, slot, pos));
            }
            // A stuck reader: evict it; it continues as a lossy reader, told what it lost.
            if let Some(max) = self.max_block {
                if now.duration_since(held.since) >= max {
                    reg.cut_loose(slot, state, registry::EVICTED);
                    self.held = None;
                    continue;
                }
            }
            // A dead reader: its slot lock is free.
            if now.duration_since(held.probed) >= self.probe_interval {
                self.held = Some(Held {
                    probed: now,
                    ..held
                });
                if reclaim_if_dead(reg, file, slot, state) {
                    self.held = None;
                    continue;
                }
            }
            if spins < SPINS {
                spins += 1;
                spin_hint();
                continue;
            }
            if !flagged {
                words.announce_blocked();
                flagged = true;
                continue;
            }
            let mut nap = self
                .probe_interval
                .saturating_sub(now.duration_since(held.probed));
            if let Some(max) = self.max_block {
                nap = nap.min(max.saturating_sub(now.duration_since(held.since)));
            }
            if let Some(d) = deadline {
                nap = nap.min(d.saturating_duration_since(now));
            }
            words.sleep(seen, Some(nap.max(Duration::from_micros(50))));
        };
        if flagged {
            words.unblocked();
        }
        result
    }

    fn blocker(&self, reg: Registry<'_>, w: &WriterState, slot: usize, pos: u64) -> Blocker {
        let view = reg.view(slot);
        Blocker {
            slot,
            pid: view.pid,
            behind_bytes: w.tail().saturating_sub(pos),
            behind_messages: w.next_seq().saturating_sub(view.seq),
        }
    }
}

/// The byte of the segment file whose lock is slot `slot`'s ownership.
pub(crate) fn slot_lock_offset(slot: usize) -> u64 {
    (layout::SLOTS + slot * layout::SLOT_SIZE) as u64
}

/// Frees slot `slot` if its owner is dead (its lock is free): takes the lock itself so that no
/// new owner can register meanwhile, frees the exact registration it observed, and lets go.
/// `true` if it freed the slot.
fn reclaim_if_dead(reg: Registry<'_>, file: &File, slot: usize, state: u64) -> bool {
    let offset = slot_lock_offset(slot);
    // On an error, assume the owner is alive: freeing a live reader's slot would lose it messages.
    if liveness::is_locked_byte(file, offset).unwrap_or(true) {
        return false;
    }
    if !liveness::try_lock_byte(file, offset).unwrap_or(false) {
        return false; // a new owner has just taken it
    }
    let freed = reg.cut_loose(slot, state, registry::FREE);
    let _ = liveness::unlock_byte(file, offset);
    freed
}
