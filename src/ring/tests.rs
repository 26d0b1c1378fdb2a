//! Single-process tests of the protocol on a heap ring. Cross-thread interleavings are covered
//! by the loom models; cross-process behaviour by `tests/multiprocess.rs`.

use super::*;
use crate::pattern;

const CAP: u64 = 4096;

fn publish_pattern(ring: &Ring<'_>, w: &mut WriterState, len: usize) -> u64 {
    let mut buf = vec![0u8; len];
    pattern::fill(w.next_seq(), &mut buf);
    ring.publish(w, &buf)
}

/// Reads until `Empty`, checking every payload; returns (received, missed, last seq).
fn drain(ring: &Ring<'_>, st: &mut ReaderState) -> (u64, u64, u64) {
    let (mut received, mut missed, mut last) = (0, 0, 0);
    let mut buf = Vec::new();
    loop {
        match ring.read_to_vec(st, &mut buf) {
            Ok(seq) => {
                assert!(seq > last, "sequence went backwards: {seq} after {last}");
                assert!(pattern::matches(seq, &buf), "payload of {seq} is corrupt");
                received += 1;
                last = seq;
            }
            Err(RecvError::Lagged { missed: m }) => {
                assert!(m > 0);
                missed += m;
            }
            Err(RecvError::Empty) => return (received, missed, last),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

#[test]
fn empty_ring_reads_empty_from_every_start() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    for start in [
        StartAt::Beginning,
        StartAt::Oldest,
        StartAt::Newest,
        StartAt::Next,
    ] {
        let mut st = ring.join(start).unwrap();
        assert_eq!(st, ReaderState { pos: 0, seq: 1 });
        assert_eq!(ring.read_into(&mut st, &mut [0; 8]), Err(RecvError::Empty));
    }
}

#[test]
fn keeping_up_receives_everything_across_many_laps() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let mut total = 0;
    for i in 0..5000u64 {
        // Lengths 0..=max_payload, so records of every alignment meet the end of the ring.
        let len = pattern::length(i, 0, ring.max_payload() as usize);
        publish_pattern(&ring, &mut w, len);
        total += 1;
        if i % 3 == 2 {
            let (received, missed, last) = drain(&ring, &mut st);
            assert_eq!(missed, 0);
            assert_eq!(last, total);
            assert!(received >= 1);
        }
    }
    let (_, missed, last) = drain(&ring, &mut st);
    assert_eq!((missed, last), (0, total));
    assert!(w.tail > 100 * CAP, "the test should wrap many times");
}

#[test]
fn lapped_reader_learns_exactly_how_many_it_missed() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    for i in 0..1000 {
        publish_pattern(&ring, &mut w, pattern::length(i, 1, 200));
    }
    let oldest = ring.snapshot().oldest_seq.unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        ring.read_to_vec(&mut st, &mut buf),
        Err(RecvError::Lagged { missed: oldest - 1 })
    );
    let (received, missed, last) = drain(&ring, &mut st);
    assert_eq!(missed, 0);
    assert_eq!(last, 1000);
    assert_eq!(received + oldest - 1, 1000);
}

#[test]
fn joins_start_where_documented() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    for i in 0..300 {
        publish_pattern(&ring, &mut w, pattern::length(i, 1, 100));
    }
    let mut buf = Vec::new();
    let oldest_seq = ring.snapshot().oldest_seq.unwrap();
    assert!(oldest_seq > 1);

    let mut st = ring.join(StartAt::Oldest).unwrap();
    assert_eq!(ring.read_to_vec(&mut st, &mut buf), Ok(oldest_seq));

    let mut st = ring.join(StartAt::Newest).unwrap();
    assert_eq!(ring.read_to_vec(&mut st, &mut buf), Ok(300));
    assert_eq!(ring.read_to_vec(&mut st, &mut buf), Err(RecvError::Empty));

    let mut st = ring.join(StartAt::Next).unwrap();
    assert_eq!(ring.read_to_vec(&mut st, &mut buf), Err(RecvError::Empty));
    publish_pattern(&ring, &mut w, 10);
    assert_eq!(ring.read_to_vec(&mut st, &mut buf), Ok(301));

    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert_eq!(
        ring.read_to_vec(&mut st, &mut buf),
        Err(RecvError::Lagged {
            missed: oldest_seq - 1
        })
    );
}

#[test]
fn too_small_buffer_leaves_the_message_unread() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    ring.publish(&mut w, b"twelve bytes");
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        ring.read_into(&mut st, &mut small),
        Err(RecvError::BufferTooSmall {
            needed: 12,
            available: 4
        })
    );
    let mut big = [0u8; 16];
    assert_eq!(ring.read_into(&mut st, &mut big), Ok((1, 12)));
    assert_eq!(&big[..12], b"twelve bytes");
}

#[test]
fn stale_words_equal_to_the_next_seq_are_not_mistaken_for_a_record() {
    // Old ring contents can hold any value, including the sequence number a reader expects
    // next at that very position. Plant exactly that (with a plausible length word) where the
    // next record will start, before every publish: the producer's pre-cleared next word must
    // keep the reader from taking it for a committed record.
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let mut buf = Vec::new();
    for round in 0..2000u64 {
        let len = pattern::length(round, 0, 200);
        let end = w.tail + record_span(len as u64);
        if (w.tail & (CAP - 1)) + record_span(len as u64) <= CAP {
            heap.data()[((end & (CAP - 1)) / 8) as usize]
                .store(w.next_seq() + 1, Ordering::Relaxed);
            heap.data()[(((end + 8) & (CAP - 1)) / 8) as usize].store(8, Ordering::Relaxed);
        }
        let seq = publish_pattern(&ring, &mut w, len);
        assert_eq!(ring.read_to_vec(&mut st, &mut buf), Ok(seq));
        assert!(pattern::matches(seq, &buf));
        assert_eq!(ring.read_to_vec(&mut st, &mut buf), Err(RecvError::Empty));
    }
}

#[test]
fn trailing_bytes_of_the_last_word_are_zero() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    ring.publish(&mut w, &[0xFF; 3]);
    assert_eq!(heap.data()[2].load(Ordering::Relaxed), 0x00FF_FFFF);
    assert_eq!(
        heap.data()[3].load(Ordering::Relaxed),
        0,
        "next commit word pre-cleared"
    );
}

#[test]
fn a_record_length_outside_the_ring_is_corrupt_not_a_panic() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    ring.publish(&mut w, b"hello");
    heap.data()[1].store(u64::from(u32::MAX), Ordering::Relaxed);
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert!(matches!(
        ring.read_to_vec(&mut st, &mut Vec::new()),
        Err(RecvError::Corrupt(_))
    ));
}

#[test]
fn padding_at_the_start_of_a_lap_is_corrupt() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    heap.data()[0].store(1 | PAD, Ordering::Relaxed);
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert!(matches!(
        ring.read_to_vec(&mut st, &mut Vec::new()),
        Err(RecvError::Corrupt(_))
    ));
}

#[test]
fn an_impossible_intent_is_corrupt_not_an_endless_loop() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    heap.header()[layout::word(offset::INTENT)].store(u64::MAX, Ordering::Relaxed);
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert!(matches!(
        ring.read_to_vec(&mut st, &mut Vec::new()),
        Err(RecvError::Corrupt(_))
    ));
}

/// A small deterministic generator for the hostile-input test.
fn next(state: &mut u64) -> u64 {
    pattern::splitmix64(state)
}

#[test]
fn arbitrary_bytes_never_panic_or_hang() {
    // Every header index word and ring word random (or a plausible small value), then every
    // read operation: each must return promptly with a message, Empty, Lagged or Corrupt.
    let mut rng = 0x5EED;
    for _ in 0..3000 {
        let heap = HeapRing::new(CAP);
        let ring = heap.ring();
        let plausible = |rng: &mut u64| match next(rng) % 4 {
            0 => next(rng),
            1 => next(rng) % 64,
            2 => (next(rng) % (4 * CAP)) & !7,
            _ => (next(rng) % 64) | PAD,
        };
        for off in [offset::INTENT, offset::HEAD, offset::LATEST] {
            heap.header()[layout::word(off)].store(plausible(&mut rng), Ordering::Relaxed);
        }
        for word in heap.data() {
            word.store(plausible(&mut rng), Ordering::Relaxed);
        }
        for start in [
            StartAt::Beginning,
            StartAt::Oldest,
            StartAt::Newest,
            StartAt::Next,
        ] {
            let Ok(mut st) = ring.join(start) else {
                continue;
            };
            let mut buf = Vec::new();
            for _ in 0..50 {
                match ring.read_to_vec(&mut st, &mut buf) {
                    Ok(_) => assert!(buf.len() as u64 <= ring.max_payload()),
                    Err(RecvError::Lagged { missed }) => assert!(missed > 0),
                    Err(RecvError::Empty) | Err(RecvError::Corrupt(_)) => break,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }
        let _ = ring.snapshot();
    }
}

#[test]
fn concurrent_readers_account_for_every_message() {
    // Threads, not processes: a fast and a slow reader against a producer publishing checksummed
    // payloads of random lengths into a small ring. (The multi-process version is in tests/.)
    use std::sync::atomic::AtomicBool;
    const N: u64 = 200_000;
    let heap = HeapRing::new(CAP);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = [0u32, 50]
            .into_iter()
            .map(|pause_every| {
                let heap = &heap;
                let done = &done;
                s.spawn(move || {
                    let ring = heap.ring();
                    let mut st = ring.join(StartAt::Beginning).unwrap();
                    let (mut received, mut missed, mut last) = (0u64, 0u64, 0u64);
                    let mut buf = Vec::new();
                    loop {
                        match ring.read_to_vec(&mut st, &mut buf) {
                            Ok(seq) => {
                                assert_eq!(seq, last + 1, "gap without a Lagged report");
                                assert!(pattern::matches(seq, &buf), "torn payload {seq}");
                                received += 1;
                                last = seq;
                                if pause_every > 0 && seq % u64::from(pause_every) == 0 {
                                    std::thread::sleep(std::time::Duration::from_micros(200));
                                }
                            }
                            Err(RecvError::Lagged { missed: m }) => {
                                missed += m;
                                last += m;
                            }
                            Err(RecvError::Empty) => {
                                if done.load(Ordering::Acquire) && received + missed == N {
                                    return (received, missed);
                                }
                                std::hint::spin_loop();
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                })
            })
            .collect();
        let ring = heap.ring();
        let mut w = WriterState::new();
        for i in 0..N {
            publish_pattern(&ring, &mut w, pattern::length(i, 1, 300));
        }
        done.store(true, Ordering::Release);
        let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        for (received, missed) in &results {
            assert_eq!(received + missed, N);
        }
        assert!(results[1].1 > 0, "the slow reader should have been lapped");
    });
}

/// Threads that block ([`WaitStrategy::Block`]) while a producer publishes bursts with pauses:
/// every message arrives intact, and the final message, published after every consumer has
/// registered as parked, is delivered by the wake-up (a lost wake-up would time out).
#[test]
fn blocking_readers_are_woken_for_every_burst() {
    use crate::wait::{wait_for, WaitStrategy};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const BURSTS: u64 = 200;
    const PER_BURST: u64 = 8;
    const TOTAL: u64 = BURSTS * PER_BURST + 1;
    let heap = Arc::new(HeapRing::new(1 << 16));
    let deadline = Instant::now() + Duration::from_secs(60);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let heap = heap.clone();
            std::thread::spawn(move || {
                let ring = heap.ring();
                let mut st = ring.join(StartAt::Beginning).unwrap();
                let mut buf = Vec::new();
                // A reader the machine deschedules for longer than the ring holds is lapped:
                // that is counted, not failed; what is checked is that every reader is woken
                // until the last message, and that received + missed adds up.
                let (mut received, mut missed, mut last) = (0, 0, 0);
                while last < TOTAL {
                    match wait_for(
                        WaitStrategy::Block,
                        || heap.wake_words(),
                        Some(deadline),
                        || ring.read_to_vec(&mut st, &mut buf),
                        || None,
                    ) {
                        Ok(seq) => {
                            assert!(pattern::matches(seq, &buf), "payload of {seq} is corrupt");
                            received += 1;
                            last = seq;
                        }
                        Err(RecvError::Lagged { missed: m }) => missed += m,
                        Err(e) => panic!("waiting after {last}: {e:?}"),
                    }
                }
                assert_eq!(received + missed, TOTAL);
            })
        })
        .collect();
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut wakeups = 0;
    for _ in 0..BURSTS {
        for _ in 0..PER_BURST {
            let len = pattern::length(w.next_seq(), 0, 300);
            publish_pattern(&ring, &mut w, len);
            wakeups += u64::from(heap.wake_words().wake_parked());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // Wait until some reader has registered as parked, then publish the last message: the
    // publish must find it and wake.
    while heap.parked.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no reader ever parked");
        std::thread::sleep(Duration::from_millis(1));
    }
    publish_pattern(&ring, &mut w, 8);
    assert!(
        heap.wake_words().wake_parked(),
        "a parked reader was not woken"
    );
    for reader in readers {
        reader.join().unwrap();
    }
    eprintln!("{TOTAL} messages, {} wake-up calls", wakeups + 1);
}

#[test]
fn prefetch_reaches_each_line_ahead_once_in_order() {
    // Messages of one to eight lines: the lines PREFETCH_DISTANCE ahead of the tail are each
    // prefetched exactly once as the tail passes them, none skipped.
    let announced = 1 << 20;
    let (mut tail, mut seen) = (0, Vec::new());
    for &len in [8u64, 64, 100, 200, 24, 56, 496].iter().cycle().take(300) {
        let span = record_span(len);
        let to = tail + span;
        let (mut line, end) = prefetch_window(tail, to, span, announced);
        while line < end {
            seen.push(line);
            line += CACHE_LINE;
        }
        tail = to;
    }
    let expected: Vec<u64> = (PREFETCH_DISTANCE..tail + PREFETCH_DISTANCE)
        .step_by(CACHE_LINE as usize)
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn large_messages_prefetch_the_record_after_next_once_each() {
    // 1 KiB messages (17 lines): every line of the record two ahead, none of the next one.
    let span = record_span(1024);
    let (mut tail, mut seen) = (0, Vec::new());
    for _ in 0..100 {
        let to = tail + span;
        let (first, end) = prefetch_window(tail, to, span, 1 << 30);
        assert!(
            first >= to + span,
            "{first} is within the record after {to}"
        );
        seen.extend((first..end).step_by(CACHE_LINE as usize));
        tail = to;
    }
    let expected: Vec<u64> = ((2 * span).next_multiple_of(CACHE_LINE)..tail + 2 * span)
        .step_by(CACHE_LINE as usize)
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn prefetch_stays_within_what_is_announced_and_the_per_publish_limit() {
    // Nothing past `intent`: the lines there may still hold records readers rely on.
    let (first, end) = prefetch_window(0, 80, 80, 344);
    assert!(first >= end, "prefetched {first}..{end} past intent 344");
    let span = record_span(4096);
    let (first, end) = prefetch_window(0, span, span, 2 * span + 1100);
    assert_eq!(
        (first, end),
        ((2 * span).next_multiple_of(CACHE_LINE), 2 * span + 1100)
    );
    // A large message prefetches only the first PREFETCH_LINES lines of its window, which
    // starts past the next record.
    let (first, end) = prefetch_window(0, span, span, 1 << 20);
    assert!(first >= 2 * span);
    assert_eq!((end - first) / CACHE_LINE, PREFETCH_LINES);
}

#[test]
fn eviction_is_exact_and_intent_runs_at_most_a_stride_ahead() {
    // Mostly small messages (marks do the eviction), with bursts of long ones (no mark fits,
    // so the producer walks), and now and then a reservation dropped without commit (a
    // `Claim` dropped; its mark may point where the next record starts). After every publish, `head` must be exactly the first record at
    // or after `intent - capacity`, and `intent` within a stride of what was written.
    let cap = 64 * 1024;
    let heap = HeapRing::new(cap);
    let ring = heap.ring();
    let stride = ring.intent_stride();
    let word = |off| heap.header()[layout::word(off)].load(Ordering::Relaxed);
    let mut w = WriterState::new();
    let mut starts = Vec::new(); // every record start, padding included, in order
    let mut reserved = 0; // the furthest any reservation reached, committed or not
    let mut seed = 7;
    for i in 0..40_000u64 {
        let r = pattern::splitmix64(&mut seed);
        if r % 97 == 0 {
            // A claim dropped without commit: reserves (and may mark or announce), writes nothing.
            let dropped = ring.reserve(&mut w, (r >> 8) as usize % ring.max_payload() as usize);
            reserved = reserved.max(dropped.pos + record_span(dropped.len) + 8);
        }
        let len = if (i / 2000) % 5 == 4 {
            (r % ring.max_payload()) as usize
        } else {
            (r % 200) as usize
        };
        let span = record_span(len as u64);
        let off = w.tail & ring.mask;
        if off + span > cap {
            starts.push(w.tail);
            starts.push(w.tail + (cap - off));
        } else {
            starts.push(w.tail);
        }
        publish_pattern(&ring, &mut w, len);
        let (intent, head) = (word(offset::INTENT), word(offset::HEAD));
        let written = w.tail + 8;
        reserved = reserved.max(written);
        assert!(
            (written..=reserved + stride).contains(&intent),
            "publish {i}: intent {intent} not within a stride of {reserved}"
        );
        let floor = intent.saturating_sub(cap);
        let first = starts.partition_point(|&s| s < floor);
        if floor > 0 {
            assert_eq!(
                head, starts[first],
                "publish {i}: head is not the first record >= {floor}"
            );
        } else {
            assert_eq!(head, 0);
        }
    }
    assert!(w.tail > 50 * cap, "the test should wrap many times");
}

#[test]
fn start_names_round_trip() {
    for &start in StartAt::ALL {
        assert_eq!(start.to_string().parse::<StartAt>(), Ok(start));
    }
    let names: Vec<&str> = StartAt::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["beginning", "oldest", "newest", "next"]);
    let err = "Oldest".parse::<StartAt>().unwrap_err();
    assert!(err.to_string().contains("\"Oldest\""), "{err}");
    assert_eq!(StartAt::default(), StartAt::Oldest);
}

/// Batched reads deliver exactly what single reads deliver: the same messages, the same laps
/// with the same counts, across wrap-around and padding, whatever the batch size and however
/// much room the buffer has.
#[test]
fn batched_reads_deliver_what_single_reads_deliver() {
    // Messages are under 90 bytes, so every buffer here holds at least one.
    for (batch, room) in [(1, 4096), (3, 4096), (64, 4096), (64, 300), (64, 90)] {
        let heap = HeapRing::new(CAP);
        let ring = heap.ring();
        let mut w = WriterState::new();
        let mut single = ring.join(StartAt::Beginning).unwrap();
        let mut batched = single;
        let (mut buf, mut out) = (vec![0u8; room], Vec::new());
        let mut one = vec![0u8; ring.max_payload() as usize];
        let mut rng = 0x1234_5678_u64;
        for round in 0..400 {
            // Publish a few messages of varied lengths, sometimes enough to lap both readers.
            let count = if round % 37 == 0 { 60 } else { round % 5 };
            for _ in 0..count {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                publish_pattern(&ring, &mut w, (rng >> 33) as usize % 90);
            }
            // Drain both ways and compare message for message.
            let mut expected = Vec::new();
            loop {
                match ring.read_into(&mut single, &mut one) {
                    Ok((seq, len)) => expected.push(Ok((seq, one[..len].to_vec()))),
                    Err(RecvError::Empty) => break,
                    Err(e) => expected.push(Err(e)),
                }
            }
            let mut got = Vec::new();
            loop {
                match ring.read_batch(&mut batched, &mut buf, &mut out, batch, |s, l| (s, l)) {
                    Ok(n) => {
                        assert!(n >= 1 && n <= batch);
                        let mut at = 0;
                        for &(seq, len) in &out {
                            got.push(Ok((seq, buf[at..at + len].to_vec())));
                            at += len;
                        }
                    }
                    Err(RecvError::Empty) => break,
                    Err(e) => got.push(Err(e)),
                }
            }
            assert_eq!(got, expected, "batch {batch}, room {room}, round {round}");
            assert_eq!(batched, single);
        }
    }
}

/// Moving a registering reader forward stops at the first record at or after the floor, also
/// when a padding record lies just before it: the message after the padding stays unread.
#[test]
fn skip_to_stops_at_the_message_after_a_padding_record() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    // Records of 1016 bytes at 0, 1016, 2032 and 3048; the fifth does not fit in what is left
    // of the lap, so a padding record sits at 4064 and message 5 at 4096.
    for _ in 0..6 {
        publish_pattern(&ring, &mut w, 1000);
    }
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert_eq!(ring.skip_to(&mut st, 4090), Ok(4));
    assert_eq!((st.pos(), st.seq()), (4096, 5));
    let mut buf = Vec::new();
    assert_eq!(ring.read_to_vec(&mut st, &mut buf), Ok(5));
}
