//! Loom models of lossless mode: a reader registering while the producer refreshes its gate,
//! reader progress against the producer's overwrites, and eviction against slot reuse.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`.

use super::*;
use crate::error::RecvError;
use crate::ring::{HeapRing, StartAt, WriterState};
use crate::sync::spin_hint;
use loom::sync::Arc;
use loom::thread;

/// 128-byte ring: four 16-byte messages (32-byte records) fill it.
const CAP: u64 = 128;

fn payload(seq: u64) -> Vec<u8> {
    [seq * 1000 + 1, seq * 1000 + 2]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// Publishes message `seq` through the gate as a lossless producer does, refreshing when it
/// needs room and yielding while a reader holds it back.
fn publish_gated(
    heap: &HeapRing,
    reg: Registry<'_>,
    w: &mut WriterState,
    cache: &mut ScanCache,
    seq: u64,
) {
    let ring = heap.ring();
    loop {
        match ring.try_publish(w, &payload(seq)) {
            Ok(published) => {
                assert_eq!(published, seq);
                return;
            }
            Err(limit) => {
                let r = reg.refresh(cache, w.announced(), w.tail(), CAP);
                w.set_gate(r.gate);
                if r.gate < limit {
                    spin_hint();
                }
            }
        }
    }
}

/// A lossless producer's state: gated from the start, its first gate published before any
/// publish, as `Gate::start` does.
fn gated_producer(reg: Registry<'_>) -> (WriterState, ScanCache) {
    let (mut w, mut cache) = (WriterState::new(), ScanCache::default());
    w.set_gate(reg.refresh(&mut cache, 0, 0, CAP).gate);
    (w, cache)
}

/// Registers a reader as docs/LAYOUT.md, "Registering", says: join, activate, announce, and
/// move forward if the join is no longer protected by the gate in force.
fn register(
    ring: &crate::ring::Ring<'_>,
    reg: Registry<'_>,
    start: StartAt,
) -> crate::ring::ReaderState {
    let mut st = ring.join(start).unwrap();
    reg.activate(0, st.pos(), st.seq(), 1, 0);
    let gate = reg.announce_registration();
    if st.pos() + CAP < gate {
        st = ring.join(start).unwrap();
        ring.skip_to(&mut st, gate - CAP).unwrap();
        assert!(
            st.pos() + CAP >= gate,
            "moved forward to a protected record"
        );
        reg.publish_progress(0, st.pos(), st.seq());
    }
    st
}

/// A reader registers while the producer publishes `total` messages, `before` of them before
/// the reader starts. The registered reader must receive every message from where it
/// registered, intact and in order, and never be lapped: the producer may not overwrite what
/// it has not read. This fails if the Dekker pair between the producer's refresh and the
/// registration is weakened (the registrant's fence removed), and, at `oldest`, if the
/// registrant does not move forward to a protected record. (A progress store weakened from
/// release to relaxed is not caught: loom does not model loads reordered after later stores.)
fn registration_model(before: u64, total: u64, start: StartAt) {
    loom::model(move || {
        let heap = Arc::new(HeapRing::new(CAP));
        let words = Arc::new(HeapRegistry::new(1));
        let (mut w, mut cache) = gated_producer(words.registry());
        for seq in 1..=before {
            publish_gated(&heap, words.registry(), &mut w, &mut cache, seq);
        }
        let reader = {
            let (heap, words) = (heap.clone(), words.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let reg = words.registry();
                let mut st = register(&ring, reg, start);
                let mut buf = Vec::new();
                while st.seq() <= total {
                    match ring.read_to_vec(&mut st, &mut buf) {
                        Ok(seq) => {
                            assert_eq!(buf, payload(seq), "torn payload {seq}");
                            reg.publish_progress(0, st.pos(), st.seq());
                        }
                        Err(RecvError::Empty) => spin_hint(),
                        Err(e) => panic!("a registered reader got {e:?}"),
                    }
                }
            })
        };
        for seq in before + 1..=total {
            publish_gated(&heap, words.registry(), &mut w, &mut cache, seq);
        }
        reader.join().unwrap();
    });
}

#[test]
fn loom_lossless_registration_at_next_races_the_gate() {
    registration_model(3, 7, StartAt::Next);
}

#[test]
fn loom_lossless_registration_at_oldest_races_the_gate() {
    registration_model(4, 6, StartAt::Oldest);
}

/// The producer evicts the slot it saw (generation 1) while its owner leaves and a new reader
/// registers in it: the new owner must never be evicted by the stale observation (no ABA), and
/// exactly one of "evicted" or "freed" happens to the old registration.
#[test]
fn loom_lossless_eviction_never_hits_a_new_owner() {
    loom::model(|| {
        let words = Arc::new(HeapRegistry::new(1));
        let reg = words.registry();
        let gen1 = reg.activate(0, 0, 1, 1, 0);
        let observed = reg.view(0).state;
        let owners = {
            let words = words.clone();
            thread::spawn(move || {
                let reg = words.registry();
                reg.deactivate(0, gen1);
                reg.activate(0, 64, 2, 2, 0)
            })
        };
        let evicted = reg.cut_loose(0, observed, EVICTED);
        let gen2 = owners.join().unwrap();
        assert_eq!(gen2, gen1 + 1);
        assert_eq!(
            reg.owner_state(0, gen2),
            ACTIVE,
            "the new owner was evicted"
        );
        assert_eq!(reg.evictions(), u64::from(evicted));
    });
}

/// A producer blocked on a registered reader and that reader parked waiting for messages must
/// wake each other (docs/LAYOUT.md, "Producer", "Blocked", and "Waiting and waking"). The reader
/// publishes its progress only when it finds nothing to read (its batch is larger than the
/// ring), with the fence of `nudge(true)`, and then parks; the producer sleeps on `gate_wake`
/// after `announce_blocked`. Loom's futex has no timeout, so a lost wake-up either way leaves the
/// model deadlocked, which loom reports. This is the same sequence `gate.rs` and
/// `registration.rs` run, with their timeouts, probes and batching left out.
#[test]
fn loom_lossless_blocked_producer_and_parked_reader_wake_each_other() {
    use crate::wait::{wait_for, WaitStrategy};
    const TOTAL: u64 = 5;
    loom::model(|| {
        let heap = Arc::new(HeapRing::new(CAP));
        let words = Arc::new(HeapRegistry::new(1));
        let (mut w, mut cache) = gated_producer(words.registry());
        let ring = heap.ring();
        let mut st = ring.join(StartAt::Next).unwrap();
        words.registry().activate(0, st.pos(), st.seq(), 1, 0);
        words.registry().announce_registration();
        let reader = {
            let (heap, words) = (heap.clone(), words.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let (reg, gate) = (words.registry(), words.gate_words());
                let mut published = st.pos();
                let mut buf = Vec::new();
                for expected in 1..=TOTAL {
                    let seq = wait_for(
                        WaitStrategy::Block,
                        || heap.wake_words(),
                        None,
                        || {
                            let result = ring.read_to_vec(&mut st, &mut buf);
                            if result == Err(RecvError::Empty) && st.pos() != published {
                                reg.publish_progress(0, st.pos(), st.seq());
                                published = st.pos();
                                gate.nudge(true);
                            }
                            result
                        },
                        || None,
                    )
                    .unwrap();
                    assert_eq!(seq, expected);
                    assert_eq!(buf, payload(seq));
                }
            })
        };
        let (reg, gate) = (words.registry(), words.gate_words());
        for seq in 1..=TOTAL {
            loop {
                match ring.try_publish(&mut w, &payload(seq)) {
                    Ok(_) => break,
                    Err(limit) => {
                        let mut blocked = false;
                        loop {
                            let seen = gate.seen();
                            let r = reg.refresh(&mut cache, w.announced(), w.tail(), CAP);
                            w.set_gate(r.gate);
                            if r.gate >= limit {
                                break;
                            }
                            if !blocked {
                                gate.announce_blocked();
                                blocked = true;
                                continue;
                            }
                            gate.sleep(seen, None);
                        }
                        if blocked {
                            gate.unblocked();
                        }
                    }
                }
            }
            heap.wake_words().wake_parked();
        }
        reader.join().unwrap();
    });
}
