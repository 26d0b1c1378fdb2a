//! A reader's side of lossless mode (docs/LAYOUT.md, "Registering", "Reader progress"): taking a
//! slot, publishing progress in batches, noticing an eviction, and giving the slot back.

use std::fs::File;

use crate::error::RecvError;
use crate::gate::slot_lock_offset;
use crate::liveness;
use crate::registry::{self, GateWords, Registry};
use crate::ring::{ReaderState, Ring, StartAt};

/// Why a registration failed (mapped to [`crate::Error`] by the subscriber, which knows the path).
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// Every slot is held by a live reader (or a squatter's read lock).
    NoFreeSlot { slots: usize },
    /// Joining found a corrupt ring.
    Join(RecvError),
    /// A lock call failed.
    Io(std::io::Error),
}

/// A registered reader's slot.
#[derive(Debug)]
pub(crate) struct Registration {
    slot: usize,
    gen: u64,
    /// The last position stored to the slot.
    published: u64,
    /// Publish progress at least every this many bytes.
    batch: u64,
}

/// What a registration starts with.
pub(crate) struct Registered {
    pub registration: Registration,
    pub state: ReaderState,
    /// Messages passed over while moving to the first protected record.
    pub skipped: u64,
}

impl Registration {
    /// Registers through `file` (opened for writing; its open file description holds the slot
    /// lock for as long as it lives), joining at `start`.
    pub(crate) fn register(
        reg: Registry<'_>,
        ring: Ring<'_>,
        file: &File,
        start: StartAt,
    ) -> Result<Registered, RegisterError> {
        let slot = take_free_slot(reg, file)?;
        let mut gen = None;
        let joined = (|| {
            let mut st = ring.join(start)?;
            gen = Some(reg.activate(
                slot,
                st.pos(),
                st.seq(),
                u64::from(std::process::id()),
                now_ns(),
            ));
            let gate = reg.announce_registration();
            let capacity = ring.capacity();
            let mut skipped = 0;
            if st.pos().saturating_add(capacity) < gate {
                // The join is older than what the gate in force protects: join again, now that
                // the producer cannot go past `gate` without seeing this slot, and move to the
                // first protected record.
                st = ring.join(start)?;
                skipped = ring.skip_to(&mut st, gate - capacity)?;
                reg.publish_progress(slot, st.pos(), st.seq());
            }
            Ok((st, skipped))
        })();
        match (joined, gen) {
            (Ok((state, skipped)), Some(gen)) => Ok(Registered {
                registration: Registration {
                    slot,
                    gen,
                    published: state.pos(),
                    batch: (ring.capacity() / 8).max(8),
                },
                state,
                skipped,
            }),
            (joined, gen) => {
                // A corrupt ring: give the slot back as unregistering does.
                if let Some(gen) = gen {
                    reg.deactivate(slot, gen);
                }
                let _ = liveness::unlock_byte(file, slot_lock_offset(slot));
                Err(RegisterError::Join(joined.err().unwrap_or(
                    RecvError::corrupt("a registration did not complete"),
                )))
            }
        }
    }

    /// The slot this reader holds.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    /// After a read: whether a batch has been consumed since progress was last published, so
    /// it is time to [`Self::publish`] it (without the fence).
    #[inline]
    pub(crate) fn batch_due(&self, st: &ReaderState) -> bool {
        st.pos().wrapping_sub(self.published) >= self.batch
    }

    /// When nothing is left to read: whether some progress is unpublished, so it is time to
    /// [`Self::publish`] it (with the fence).
    #[inline]
    pub(crate) fn idle_due(&self, st: &ReaderState) -> bool {
        st.pos() != self.published
    }

    /// Publishes progress; `Err(Evicted)` if the producer evicted this reader (the
    /// registration is then over; the reader is lossy).
    ///
    /// `dekker`: when the reader found nothing to read (and so before it parks), the store is
    /// followed by a full fence before the load of `producer_blocked`: the reader half of a
    /// Dekker pair with the blocked producer, so a reader that then parks can never leave a
    /// producer asleep waiting for it. A reader finds nothing to read only when it is faster
    /// than the producer, so the fence costs it idle time, not throughput.
    #[cold]
    pub(crate) fn publish(
        &mut self,
        reg: Registry<'_>,
        words: GateWords<'_>,
        st: &ReaderState,
        dekker: bool,
    ) -> Result<(), RecvError> {
        reg.publish_progress(self.slot, st.pos(), st.seq());
        self.published = st.pos();
        words.nudge(dekker);
        self.check(reg)
    }

    /// `Err(Evicted)` if this registration is over: the producer evicted this reader (or, on a
    /// scribbled slot, it is no longer this reader's).
    pub(crate) fn check(&self, reg: Registry<'_>) -> Result<(), RecvError> {
        match reg.owner_state(self.slot, self.gen) {
            registry::ACTIVE => Ok(()),
            _ => Err(RecvError::Evicted),
        }
    }

    /// Gives the slot back (unregistering, or after an eviction): frees it if it is still this
    /// registration's, wakes a producer this reader may have held back, then releases the lock.
    /// The lock sits on the open file description the subscriber's mappings were made from, so
    /// it is released explicitly: closing the descriptor alone would keep it while a mapping
    /// lives.
    pub(crate) fn release(self, reg: Registry<'_>, words: Option<GateWords<'_>>, file: &File) {
        reg.deactivate(self.slot, self.gen);
        if let Some(words) = words {
            words.nudge(true);
        }
        let _ = liveness::unlock_byte(file, slot_lock_offset(self.slot));
    }
}

/// Step 1 of registering: the first slot whose lock this process can take.
fn take_free_slot(reg: Registry<'_>, file: &File) -> Result<usize, RegisterError> {
    for slot in 0..reg.len() {
        if liveness::try_lock_byte(file, slot_lock_offset(slot)).map_err(RegisterError::Io)? {
            return Ok(slot);
        }
    }
    Err(RegisterError::NoFreeSlot { slots: reg.len() })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
