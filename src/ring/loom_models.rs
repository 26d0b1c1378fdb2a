//! Loom models of the ring protocol: every interleaving (up to loom's preemption bound) of one
//! producer and two consumers, with wrap-around, padding, eviction and lapped consumers; and of
//! the park/wake protocol (no lost wake-up).
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`.
//!
//! Each model checks, for every consumer, that received + missed == published, that sequence
//! numbers are consecutive apart from reported laps, and that every received payload is exactly
//! what was published (a torn copy would show as a mismatch).

use super::*;
use loom::sync::Arc;
use loom::thread;

/// 128-byte ring: max payload 16 bytes, so a handful of messages wrap it.
const CAP: u64 = 128;

/// Payload of message `seq`: `len` bytes, every word different and tied to `seq`, so a copy
/// mixing two messages cannot pass.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|k| (seq * 1000 + k + 1).to_le_bytes())
        .take(len)
        .collect()
}

/// A consumer's tally, checked as it goes.
#[derive(Default, Debug)]
struct Tally {
    received: u64,
    missed: u64,
    last: u64,
    /// Read up to this many messages at once with `read_batch` (0: one at a time).
    batch: usize,
}

impl Tally {
    /// One read attempt; returns false on `Empty`.
    fn step(&mut self, ring: &Ring<'_>, st: &mut ReaderState, lens: &[usize]) -> bool {
        if self.batch > 0 {
            return self.step_batch(ring, st, lens);
        }
        let mut buf = Vec::new();
        let read = ring.read_to_vec(st, &mut buf);
        let read = read.map(|seq| self.deliver(seq, &buf, lens));
        self.account(read)
    }

    /// One batched read attempt: every message of the batch is checked like a single read.
    fn step_batch(&mut self, ring: &Ring<'_>, st: &mut ReaderState, lens: &[usize]) -> bool {
        let (mut buf, mut out) = (vec![0u8; 64], Vec::new());
        let read = ring.read_batch(st, &mut buf, &mut out, self.batch, |s, l| (s, l));
        let read = read.map(|_| {
            let mut at = 0;
            for &(seq, len) in &out {
                self.deliver(seq, &buf[at..at + len], lens);
                at += len;
            }
        });
        self.account(read)
    }

    /// Checks and counts one received message.
    fn deliver(&mut self, seq: u64, bytes: &[u8], lens: &[usize]) {
        assert_eq!(
            seq,
            self.last + 1,
            "a message was skipped without a lap report"
        );
        assert_eq!(
            bytes,
            &payload(seq, lens[(seq - 1) as usize])[..],
            "torn payload {seq}"
        );
        self.received += 1;
        self.last = seq;
    }

    /// Counts a lap; returns false on `Empty`.
    fn account(&mut self, read: Result<(), RecvError>) -> bool {
        match read {
            Ok(()) => true,
            Err(RecvError::Lagged { missed }) => {
                assert!(missed > 0);
                self.missed += missed;
                self.last += missed;
                true
            }
            Err(RecvError::Empty) => false,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

/// One producer publishing messages of `lens`, two consumers that each make `attempts` reads
/// concurrently; afterwards each consumer drains what is left and the accounting must be exact.
///
/// The first `before` messages are published before the consumers start, so the model spends
/// its interleavings on the publishes that matter (wrap, padding, eviction).
fn model(lens: &'static [usize], before: usize, attempts: [usize; 2], starts: [StartAt; 2]) {
    model_batched(lens, before, attempts, starts, 0);
}

/// [`model`] with the first consumer reading up to `batch` messages at once (0: one at a time).
fn model_batched(
    lens: &'static [usize],
    before: usize,
    attempts: [usize; 2],
    starts: [StartAt; 2],
    batch: usize,
) {
    loom::model(move || {
        let heap = Arc::new(HeapRing::new(CAP));
        if lens.iter().any(|&len| len >= GAP) {
            heap.header()[layout::word(offset::FLAGS)].store(layout::FLAG_GAPS, Ordering::Relaxed);
        }
        let mut w = WriterState::new();
        let mut i = 0;
        while i < before {
            i += publish_item(&heap.ring(), &mut w, lens, i);
        }
        let consumers: Vec<_> = (0..2)
            .map(|i| {
                let heap = heap.clone();
                thread::spawn(move || {
                    let ring = heap.ring();
                    let mut st = ring.join(starts[i]).unwrap();
                    let mut tally = Tally {
                        batch: if i == 0 { batch } else { 0 },
                        ..Tally::default()
                    };
                    // A consumer that joins after some publishes starts later in the stream.
                    tally.last = st.seq() - 1;
                    for _ in 0..attempts[i] {
                        tally.step(&ring, &mut st, lens);
                    }
                    (st, tally)
                })
            })
            .collect();

        let ring = heap.ring();
        let mut i = before;
        while i < lens.len() {
            i += publish_item(&ring, &mut w, lens, i);
        }

        for consumer in consumers {
            let (mut st, mut tally) = consumer.join().unwrap();
            let first = tally.last - tally.received - tally.missed;
            while tally.step(&ring, &mut st, lens) {}
            assert_eq!(
                tally.received + tally.missed + first,
                lens.len() as u64,
                "{tally:?}"
            );
        }
    });
}

/// An entry `GAP + k` of a model's `lens` is a gap record standing for messages `i + 1 ..= i + k`
/// (the next `k - 1` entries are placeholders for the sequence numbers it covers).
const GAP: usize = 1000;

/// Publishes entry `i` of `lens` (a message, or a gap record); returns how many entries it used.
fn publish_item(ring: &Ring<'_>, w: &mut WriterState, lens: &[usize], i: usize) -> usize {
    let seq = if lens[i] >= GAP {
        ring.try_publish_gap(w, (lens[i] - GAP) as u64).unwrap()
    } else {
        ring.publish(w, &payload(i as u64 + 1, lens[i]))
    };
    assert_eq!(seq, i as u64 + 1);
    if lens[i] >= GAP {
        lens[i] - GAP
    } else {
        1
    }
}

/// Five messages: the fifth does not fit at the end of the first lap, so it is preceded by a
/// padding record and evicts the first message. Consumers read while this happens.
#[test]
fn loom_wrap_with_padding_two_consumers() {
    model(
        &[16, 8, 16, 16, 8],
        3,
        [2, 1],
        [StartAt::Beginning, StartAt::Beginning],
    );
}

/// Six messages through the small ring: a consumer is lapped while, or before, it copies
/// (the last two publishes evict the first three messages) and must report exactly what it lost.
#[test]
fn loom_lapped_consumer() {
    model(
        &[16, 16, 16, 16, 16, 16],
        4,
        [1, 2],
        [StartAt::Beginning, StartAt::Beginning],
    );
}

/// The lapped scenario with the first consumer reading in batches of up to three: a batch is
/// delivered only if its first record was intact when the copies were done, which proves the
/// later ones intact too.
#[test]
fn loom_lapped_batched_consumer() {
    model_batched(
        &[16, 16, 16, 16, 16, 16],
        4,
        [1, 2],
        [StartAt::Beginning, StartAt::Beginning],
        3,
    );
}

/// Gap records among messages while a consumer is lapped: a gap record is reported with its
/// count only if the count was read before the record was overwritten (the same `intent`
/// re-check as a payload), so received + missed stays exact whatever the interleaving.
#[test]
fn loom_lapped_consumer_with_gaps() {
    model(
        &[16, GAP + 2, 0, 16, 16, GAP + 1],
        4,
        [1, 2],
        [StartAt::Beginning, StartAt::Next],
    );
}

/// Consumers joining at `Oldest` and `Next` while the producer publishes and evicts.
#[test]
fn loom_join_while_publishing() {
    model(
        &[16, 16, 16, 16, 8],
        3,
        [1, 1],
        [StartAt::Oldest, StartAt::Next],
    );
}

/// How a park/wake model is set up.
#[derive(Clone, Copy)]
struct Park {
    /// Consumers that block with [`WaitStrategy::Block`] (relaying readers).
    consumers: usize,
    /// Consumers that park as a reader written before the relay does: store `1` to `parked`
    /// and never pass a wake-up on.
    old_consumers: usize,
    /// Messages published.
    count: u64,
    /// Fruitless wake-up calls after which the producer throttles (for ever: the model's clock
    /// never reaches the end); 0: never.
    throttle_after: u32,
    /// How long a throttle lasts, in readings of the model's clock (each publish while
    /// throttled reads it once); `None`: for ever.
    throttle_for: Option<u64>,
    /// A thread that stores `1` to `parked` this many times without ever sleeping.
    hostile_stores: usize,
}

impl Park {
    const fn new(consumers: usize, count: u64) -> Self {
        Park {
            consumers,
            old_consumers: 0,
            count,
            throttle_after: 0,
            throttle_for: None,
            hostile_stores: 0,
        }
    }
}

/// Consumers that block ([`WaitStrategy::Block`], parking on the futex as soon as the ring is
/// empty) while the producer publishes `count` messages and runs publish step 9 after each
/// (docs/LAYOUT.md, "Waiting and waking"). Loom's futex has no timeout, so a consumer that parks
/// and is never woken leaves the model deadlocked, which loom reports as a failure; only a wait
/// the protocol bounds to a short timeout (a throttled producer) returns without a wake-up.
fn park_model(cfg: Park) {
    use crate::wait::{wait_for, WaitStrategy, WakeState};
    loom::model(move || {
        let heap = Arc::new(HeapRing::new(CAP));
        let count = cfg.count;
        let mut handles: Vec<_> = (0..cfg.consumers)
            .map(|_| {
                let heap = heap.clone();
                thread::spawn(move || {
                    let ring = heap.ring();
                    let mut st = ring.join(StartAt::Beginning).unwrap();
                    let mut buf = Vec::new();
                    for expected in 1..=count {
                        let seq = wait_for(
                            WaitStrategy::Block,
                            || heap.wake_words(),
                            None,
                            || ring.read_to_vec(&mut st, &mut buf),
                            || None,
                        )
                        .unwrap();
                        assert_eq!(seq, expected);
                        assert_eq!(buf, payload(seq, 8));
                    }
                })
            })
            .collect();
        handles.extend((0..cfg.old_consumers).map(|_| {
            let heap = heap.clone();
            thread::spawn(move || {
                let ring = heap.ring();
                let mut st = ring.join(StartAt::Beginning).unwrap();
                let mut buf = Vec::new();
                for expected in 1..=count {
                    // The reader protocol before the relay: steps 1-5 with `parked = 1`.
                    let seq = loop {
                        let v = heap.wake_seq.load(Ordering::Acquire);
                        heap.parked.store(1, Ordering::Relaxed);
                        loom::sync::atomic::fence(Ordering::SeqCst);
                        match ring.read_to_vec(&mut st, &mut buf) {
                            Ok(seq) => break seq,
                            Err(RecvError::Empty) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                        crate::sync::futex_wait(&heap.wake_seq, v, None);
                    };
                    assert_eq!(seq, expected);
                }
            })
        }));
        handles.extend((0..cfg.hostile_stores.min(1)).map(|_| {
            let heap = heap.clone();
            thread::spawn(move || {
                for _ in 0..cfg.hostile_stores {
                    heap.parked.store(1, Ordering::Relaxed);
                    thread::yield_now();
                }
            })
        }));
        let ring = heap.ring();
        let mut w = WriterState::new();
        let period = cfg
            .throttle_for
            .map_or(std::time::Duration::MAX, std::time::Duration::from_nanos);
        let mut wake = WakeState::new(cfg.throttle_after, period);
        for seq in 1..=count {
            ring.publish(&mut w, &payload(seq, 8));
            heap.wake_words().wake_parked_with(&mut wake);
        }
        for handle in handles {
            handle.join().unwrap();
        }
    });
}

/// One consumer, two messages: it may park before either publish, between them, or not at all.
#[test]
fn loom_park_wake_one_consumer() {
    park_model(Park::new(1, 2));
}

/// Two consumers parked on the same word: the producer wakes one, which wakes the other (the
/// relay).
#[test]
fn loom_park_wake_two_consumers() {
    park_model(Park::new(2, 1));
}

/// Three consumers, one message: the relay must reach the third whatever order the kernel's
/// queue holds them in, and whichever of them were woken as spares.
#[test]
fn loom_park_wake_relay_three_consumers() {
    park_model(Park::new(3, 1));
}

/// A relaying consumer beside one that parks the old way (stores `1`, never relays): the
/// producer must then wake every waiter itself.
#[test]
fn loom_park_wake_old_reader_beside_a_relaying_one() {
    park_model(Park {
        old_consumers: 1,
        ..Park::new(1, 1)
    });
}

/// The producer throttles after its first fruitless wake-up call and stays throttled: a
/// consumer parked at any point must still get both messages, by the announcement's wake-up or
/// its bounded wait, never by sleeping unbounded while the producer makes no calls.
#[test]
fn loom_park_wake_throttled_producer() {
    park_model(Park {
        throttle_after: 1,
        ..Park::new(1, 2)
    });
}

/// The producer throttles after its first fruitless call and ends the throttle on the next
/// publish: a consumer that parked during the throttle, saw it, or saw it end, is still woken or
/// bounded (the end of a throttle is the same store, fence, load pair as step 9).
#[test]
fn loom_park_wake_throttle_ends() {
    park_model(Park {
        throttle_after: 1,
        throttle_for: Some(1),
        ..Park::new(1, 3)
    });
}

/// A process that stores `parked` without sleeping, against a producer that throttles after
/// one fruitless call: the consumer still gets every message.
#[test]
fn loom_park_wake_hostile_parked_writer() {
    park_model(Park {
        throttle_after: 1,
        hostile_stores: 2,
        ..Park::new(1, 2)
    });
}
