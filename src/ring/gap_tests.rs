//! Gap records (`docs/LAYOUT.md`, "Gap records") on a heap ring: every way of reading meets them
//! with the exact count, and a ring without the `gaps` flag keeps reading such a record as the
//! 8-byte message it is shaped like.

use super::*;
use crate::pattern;

const CAP: u64 = 4096;

fn gap_ring() -> HeapRing {
    let heap = HeapRing::new(CAP);
    heap.header()[layout::word(offset::FLAGS)].store(layout::FLAG_GAPS, Ordering::Relaxed);
    heap
}

fn publish_pattern(ring: &Ring<'_>, w: &mut WriterState, len: usize) -> u64 {
    let mut buf = vec![0u8; len];
    pattern::fill(w.next_seq(), &mut buf);
    ring.publish(w, &buf)
}

/// What a reader sees until `Empty`: `Ok(seq)` per message (payload checked), `Err(missed)`
/// per loss.
fn transcript(ring: &Ring<'_>, st: &mut ReaderState) -> Vec<Result<u64, u64>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        match ring.read_to_vec(st, &mut buf) {
            Ok(seq) => {
                assert!(pattern::matches(seq, &buf), "payload of {seq} is corrupt");
                out.push(Ok(seq));
            }
            Err(RecvError::Lagged { missed }) => out.push(Err(missed)),
            Err(RecvError::Empty) => return out,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

#[test]
fn a_gap_record_is_reported_as_lagged_and_skips_its_sequence_numbers() {
    let heap = gap_ring();
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert_eq!(publish_pattern(&ring, &mut w, 10), 1);
    assert_eq!(ring.try_publish_gap(&mut w, 3), Ok(2));
    assert_eq!(w.next_seq(), 5);
    assert_eq!(publish_pattern(&ring, &mut w, 30), 5);
    assert_eq!(ring.try_publish_gap(&mut w, 1), Ok(6));
    assert_eq!(ring.try_publish_gap(&mut w, 100), Ok(7));
    assert_eq!(publish_pattern(&ring, &mut w, 0), 107);
    assert_eq!(
        transcript(&ring, &mut st),
        [Ok(1), Err(3), Ok(5), Err(1), Err(100), Ok(107)]
    );
    assert_eq!(ring.snapshot().next_seq, 108);
}

#[test]
fn batches_and_zero_copy_reads_stop_at_a_gap_and_report_it() {
    let heap = gap_ring();
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    publish_pattern(&ring, &mut w, 8);
    publish_pattern(&ring, &mut w, 8);
    ring.try_publish_gap(&mut w, 5).unwrap();
    publish_pattern(&ring, &mut w, 8);
    let mut buf = [0u8; 256];
    let mut out = Vec::new();
    let entry = |seq, len| (seq, len);
    assert_eq!(
        ring.read_batch(&mut st, &mut buf, &mut out, 10, entry),
        Ok(2)
    );
    assert_eq!(out, [(1, 8), (2, 8)]);
    assert_eq!(
        ring.read_batch(&mut st, &mut buf, &mut out, 10, entry),
        Err(RecvError::Lagged { missed: 5 })
    );
    let candidate = ring.peek(&mut st).unwrap();
    assert_eq!(candidate.seq(), 8);
    ring.confirm(&mut st, &candidate).unwrap();
    assert_eq!(ring.peek(&mut st).unwrap_err(), RecvError::Empty);
}

#[test]
fn joining_at_a_gap_starts_after_it() {
    let heap = gap_ring();
    let ring = heap.ring();
    let mut w = WriterState::new();
    publish_pattern(&ring, &mut w, 8);
    ring.try_publish_gap(&mut w, 4).unwrap(); // `latest` is the gap record, seq 2..=5
    let mut newest = ring.join(StartAt::Newest).unwrap();
    let mut next = ring.join(StartAt::Next).unwrap();
    assert_eq!((newest.seq(), next.seq()), (6, 6));
    publish_pattern(&ring, &mut w, 8);
    assert_eq!(transcript(&ring, &mut newest), [Ok(6)]);
    assert_eq!(transcript(&ring, &mut next), [Ok(6)]);
    let mut oldest = ring.join(StartAt::Oldest).unwrap();
    assert_eq!(transcript(&ring, &mut oldest), [Ok(1), Err(4), Ok(6)]);
}

#[test]
fn a_lapped_reader_counts_gaps_among_what_it_missed() {
    let heap = gap_ring();
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let mut received = 0;
    let mut missed = 0;
    for i in 0..3000u64 {
        if i % 7 == 3 {
            ring.try_publish_gap(&mut w, 1 + i % 5).unwrap();
        } else {
            publish_pattern(&ring, &mut w, pattern::length(i, 0, 200));
        }
        if i % 400 == 399 {
            for r in transcript(&ring, &mut st) {
                match r {
                    Ok(_) => received += 1,
                    Err(m) => missed += m,
                }
            }
        }
    }
    for r in transcript(&ring, &mut st) {
        match r {
            Ok(_) => received += 1,
            Err(m) => missed += m,
        }
    }
    assert!(w.tail > 20 * CAP, "the test should lap the reader");
    assert_eq!(received + missed, w.next_seq() - 1);
}

#[test]
fn impossible_gap_counts_are_corrupt() {
    for count in [0, PAD] {
        let heap = gap_ring();
        let ring = heap.ring();
        let mut w = WriterState::new();
        publish_pattern(&ring, &mut w, 8);
        ring.try_publish_gap(&mut w, 1).unwrap();
        heap.data()[((24 + 16) / 8) as usize].store(count, Ordering::Relaxed);
        let mut st = ring.join(StartAt::Beginning).unwrap();
        let mut buf = Vec::new();
        assert_eq!(ring.read_to_vec(&mut st, &mut buf), Ok(1));
        assert!(
            matches!(
                ring.read_to_vec(&mut st, &mut buf),
                Err(RecvError::Corrupt { .. })
            ),
            "count {count}"
        );
        assert!(
            matches!(ring.join(StartAt::Next), Err(RecvError::Corrupt { .. })),
            "count {count}"
        );
    }
}

#[test]
fn without_the_flag_a_gap_shaped_record_is_an_eight_byte_message() {
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    let mut w = WriterState::new();
    ring.try_publish_gap(&mut w, 3).unwrap();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let mut buf = Vec::new();
    assert_eq!(ring.read_to_vec(&mut st, &mut buf), Ok(1));
    assert_eq!(buf, 3u64.to_le_bytes());
}

#[test]
fn the_stream_ends_after_a_trailing_gap() {
    let heap = gap_ring();
    let ring = heap.ring();
    let mut w = WriterState::new();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    publish_pattern(&ring, &mut w, 8);
    ring.try_publish_gap(&mut w, 9).unwrap();
    assert_eq!(transcript(&ring, &mut st), [Ok(1), Err(9)]);
    assert_eq!(ring.check_end(&st), Ok(()));

    // A producer killed between committing a gap record and indexing it.
    let before = ring.field(offset::LATEST).load(Ordering::Relaxed);
    ring.try_publish_gap(&mut w, 2).unwrap();
    ring.field(offset::LATEST).store(before, Ordering::Relaxed);
    assert_eq!(transcript(&ring, &mut st), [Err(2)]);
    assert_eq!(ring.check_end(&st), Ok(()));

    // A reader short of the trailing gap is not at the end.
    let mut short = ring.join(StartAt::Beginning).unwrap();
    let mut buf = Vec::new();
    assert_eq!(ring.read_to_vec(&mut short, &mut buf), Ok(1));
    assert!(matches!(
        ring.check_end(&short),
        Err(RecvError::Corrupt { .. })
    ));
}
