//! What a reader makes of a segment whose words no valid producer could have written
//! (`docs/LAYOUT.md`, "Read algorithm", "Lapped", "Joining" and "End of stream"): each case is
//! reported as corrupt, never read as "no message yet" or as an invented loss, so that
//! "received + missed = published" cannot fail without an error.
//!
//! Every case publishes a few messages on a heap ring and then plays the producer's dead
//! segment, edited by a hostile writer, to a reader.

use super::*;
use crate::pattern;

const CAP: u64 = 4096;

/// A heap ring with `count` published messages of 40 bytes, and where each record starts.
fn published(count: u64) -> (HeapRing, Vec<u64>) {
    let heap = HeapRing::new(CAP);
    let mut w = WriterState::new();
    let mut starts = Vec::new();
    for _ in 0..count {
        let mut buf = [0u8; 40];
        pattern::fill(w.next_seq(), &mut buf);
        starts.push(w.tail);
        heap.ring().publish(&mut w, &buf);
    }
    (heap, starts)
}

fn set_word(heap: &HeapRing, pos: u64, value: u64) {
    heap.data()[((pos & (CAP - 1)) / 8) as usize].store(value, Ordering::Relaxed);
}

fn set_field(heap: &HeapRing, at: usize, value: u64) {
    heap.header()[layout::word(at)].store(value, Ordering::Relaxed);
}

fn field(heap: &HeapRing, at: usize) -> u64 {
    heap.header()[layout::word(at)].load(Ordering::Relaxed)
}

/// Reads until something other than a message; returns how many were delivered and what
/// ended the reading.
fn read_all(ring: &Ring<'_>, st: &mut ReaderState) -> (u64, RecvError) {
    let mut received = 0;
    let mut buf = Vec::new();
    loop {
        match ring.read_to_vec(st, &mut buf) {
            Ok(seq) => {
                // (A message whose length was edited is delivered cut short.)
                assert!(
                    buf.len() != 40 || pattern::matches(seq, &buf),
                    "payload of {seq}"
                );
                received += 1;
            }
            Err(e) => return (received, e),
        }
    }
}

fn is_corrupt(result: &RecvError) -> bool {
    matches!(result, RecvError::Corrupt(_))
}

#[test]
fn an_untouched_dead_segment_ends_cleanly_from_every_start() {
    let (heap, _) = published(10);
    let ring = heap.ring();
    for &start in StartAt::ALL {
        let mut st = ring.join(start).unwrap();
        assert_eq!(read_all(&ring, &mut st).1, RecvError::Empty, "{start}");
        assert_eq!(ring.check_end(&st), Ok(()), "{start}");
    }
}

#[test]
fn an_impossible_commit_word_where_a_message_is_expected_is_corrupt() {
    // Message 5 (at `starts[4]`) replaced by: another sequence number; a padding record of
    // another message; a padding record of message 5 itself in mid-ring, which sends the
    // reader to the next lap, where message 5 is not.
    for edit in [42, 9 | PAD, 5 | PAD] {
        let (heap, starts) = published(10);
        set_word(&heap, starts[4], edit);
        let ring = heap.ring();
        let mut st = ring.join(StartAt::Beginning).unwrap();
        let (received, end) = read_all(&ring, &mut st);
        assert_eq!(received, 4, "{edit:#x}");
        assert!(is_corrupt(&end), "{edit:#x}: {end:?}");
    }
}

#[test]
fn a_shortened_length_is_corrupt_where_it_lands() {
    // On a payload word: corrupt at once.
    let (heap, starts) = published(10);
    set_word(&heap, starts[4] + 8, 8);
    let ring = heap.ring();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let (received, end) = read_all(&ring, &mut st);
    assert_eq!(
        received, 5,
        "the shortened message itself is delivered, cut"
    );
    assert!(is_corrupt(&end), "{end:?}");
    // On a zero word: nothing to read there, but the stream has not reached `latest`.
    let (heap, starts) = published(10);
    set_word(&heap, starts[4] + 8, 8);
    set_word(&heap, starts[4] + 24, 0);
    let ring = heap.ring();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert_eq!(read_all(&ring, &mut st), (5, RecvError::Empty));
    assert!(ring.check_end(&st).is_err());
}

#[test]
fn a_stray_word_after_the_last_record_is_corrupt_unless_it_is_a_whole_record() {
    // Any value but the expected sequence number: corrupt at once.
    let (heap, starts) = published(10);
    let end = starts[9] + record_span(40);
    set_word(&heap, end, 77);
    let ring = heap.ring();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let (received, result) = read_all(&ring, &mut st);
    assert_eq!(received, 10);
    assert!(is_corrupt(&result), "{result:?}");

    // The expected number with a length that reaches past `intent`: delivered by a reader that
    // cannot tell it from a producer caught between commit and `latest`, then caught at the
    // end of the stream.
    let (heap, starts) = published(10);
    let end = starts[9] + record_span(40);
    set_word(&heap, end, 11);
    set_word(&heap, end + 8, 512);
    let ring = heap.ring();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let mut buf = Vec::new();
    for _ in 0..10 {
        ring.read_to_vec(&mut st, &mut buf).unwrap();
    }
    assert!(ring.read_to_vec(&mut st, &mut buf).is_err());

    // A whole record that `intent` covers, exactly where the producer would have put it: what
    // a producer killed between its commit and its `latest` store leaves. It is delivered and
    // the stream ends cleanly.
    let (heap, starts) = published(10);
    let end = starts[9] + record_span(40);
    set_word(&heap, end, 11);
    set_word(&heap, end + 8, 0);
    set_word(&heap, end + 16, 0);
    let ring = heap.ring();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert_eq!(
        read_all(&ring, &mut st).1,
        RecvError::Empty,
        "11 messages, the last empty"
    );
    assert_eq!(st.seq(), 12);
    assert_eq!(ring.check_end(&st), Ok(()));

    // Two such records: no producer leaves more than one.
    set_word(&heap, end + 16, 12);
    set_word(&heap, end + 24, 0);
    set_word(&heap, end + 32, 0);
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert_eq!(read_all(&ring, &mut st).1, RecvError::Empty);
    assert_eq!(st.seq(), 13);
    assert!(ring.check_end(&st).is_err());
}

#[test]
fn a_reader_stopped_short_of_latest_is_corrupt_at_the_end() {
    let (heap, starts) = published(10);
    let ring = heap.ring();
    let st = ReaderState {
        pos: starts[6],
        seq: 7,
    };
    assert!(ring.check_end(&st).is_err());
    let nothing = HeapRing::new(CAP);
    let st = ReaderState { pos: 64, seq: 3 };
    assert!(nothing.ring().check_end(&st).is_err());
}

#[test]
fn joining_checks_the_index_words_against_each_other() {
    let corrupt_join = |edit: &dyn Fn(&HeapRing), start: StartAt| {
        let (heap, _) = published(10);
        edit(&heap);
        let result = heap.ring().join(start);
        assert!(matches!(result, Err(RecvError::Corrupt(_))), "{result:?}");
        result
    };
    // `head` ten laps in the future.
    for start in [StartAt::Oldest, StartAt::Newest] {
        let _ = corrupt_join(&|h| set_field(h, offset::HEAD, 10 * CAP + 64), start);
    }
    // `head` more than a ring behind `intent`: reported at once, not retried.
    let stale = corrupt_join(
        &|h| {
            let latest = field(h, offset::LATEST);
            set_field(h, offset::INTENT, 3 * CAP);
            set_field(h, offset::LATEST, latest + 2 * CAP);
        },
        StartAt::Oldest,
    );
    assert_ne!(stale, Err(RecvError::overrun()));
    // `intent` of zero (no torn read could be detected) or misaligned or beyond 2^63.
    for intent in [0, 9, PAD] {
        for start in [StartAt::Oldest, StartAt::Newest, StartAt::Next] {
            let _ = corrupt_join(&|h| set_field(h, offset::INTENT, intent), start);
        }
    }
    // `latest` before `head`.
    let _ = corrupt_join(
        &|h| {
            set_field(h, offset::HEAD, record_span(40));
            set_field(h, offset::LATEST, 0);
        },
        StartAt::Oldest,
    );
    let _ = corrupt_join(
        &|h| set_field(h, offset::HEAD, field(h, offset::LATEST) + 64),
        StartAt::Newest,
    );
}

#[test]
fn reading_from_the_beginning_with_intent_zero_is_corrupt() {
    let (heap, _) = published(10);
    set_field(&heap, offset::INTENT, 0);
    let ring = heap.ring();
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let (received, end) = read_all(&ring, &mut st);
    assert_eq!(received, 0);
    assert!(is_corrupt(&end), "{end:?}");
    // And in batches.
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let mut out = Vec::new();
    let result = ring.read_batch(&mut st, &mut [0; 4096], &mut out, 8, |seq, _| seq);
    assert!(matches!(result, Err(RecvError::Corrupt(_))), "{result:?}");
}

#[test]
fn a_garbage_sequence_number_at_head_is_not_an_arbitrary_loss() {
    // Wrap the ring so that a reader from the beginning is lapped, then plant a huge sequence
    // number at `head`: more messages than the bytes between the reader and `head` can hold.
    let heap = HeapRing::new(CAP);
    let mut w = WriterState::new();
    for _ in 0..300 {
        heap.ring().publish(&mut w, &[7u8; 40]);
    }
    let ring = heap.ring();
    let head = field(&heap, offset::HEAD);
    let genuine = ring.at(head).load(Ordering::Relaxed);
    let mut st = ring.join(StartAt::Beginning).unwrap();
    assert_eq!(
        ring.read_to_vec(&mut st, &mut Vec::new()),
        Err(RecvError::Lagged {
            missed: (genuine & !PAD) - 1
        })
    );
    set_word(&heap, head, 1 << 40 | (genuine & PAD));
    let mut st = ring.join(StartAt::Beginning).unwrap();
    let result = ring.read_to_vec(&mut st, &mut Vec::new());
    assert!(matches!(result, Err(RecvError::Corrupt(_))), "{result:?}");
}

#[test]
fn sequence_numbers_stop_at_two_to_the_63() {
    // A reader expecting 2^63 must not take the padding form of sequence number 0 for it.
    let heap = HeapRing::new(CAP);
    let ring = heap.ring();
    set_word(&heap, 0, PAD);
    set_word(&heap, 8, 8);
    set_field(&heap, offset::INTENT, 64);
    let mut st = ReaderState { pos: 0, seq: PAD };
    let result = ring.read_to_vec(&mut st, &mut Vec::new());
    assert!(matches!(result, Err(RecvError::Corrupt(_))), "{result:?}");
    let mut out = Vec::new();
    let result = ring.read_batch(&mut st, &mut [0; 64], &mut out, 4, |seq, _| seq);
    assert!(matches!(result, Err(RecvError::Corrupt(_))), "{result:?}");
    // Nor wait at an empty word for a message that cannot come.
    set_word(&heap, 0, 0);
    let result = ring.read_to_vec(&mut st, &mut Vec::new());
    assert!(matches!(result, Err(RecvError::Corrupt(_))), "{result:?}");
}
