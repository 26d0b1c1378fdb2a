//! Lossless mode in one process: registered subscribers hold the producer back and receive
//! every message; `try_publish` and `publish_timeout` report who holds them; stuck readers are
//! evicted after `max_block` and told so, then read on as lossy readers with exact counts;
//! registration that cannot be honoured is an error. (Dead readers in other processes are in
//! `tests/multiprocess_lossless.rs`.)

use std::time::{Duration, Instant};

mod common;
use common::unique_shm;
use shmcast::{pattern, Error, Publisher, RecvError, StartAt, Subscriber, WaitStrategy};

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    pattern::fill(seq, &mut p);
    p
}

#[test]
fn a_registered_reader_holds_the_producer_back_and_loses_nothing() {
    let name = unique_shm("ll-basic");
    let mut publisher = Publisher::options()
        .capacity(4096)
        .lossless(true)
        .create(&name)
        .unwrap();
    let mut sub = Subscriber::options().lossless(true).open(&name).unwrap();
    assert!(sub.is_registered());
    assert_eq!(sub.slot(), Some(0));
    let mut published = 0u64;
    loop {
        match publisher.try_publish(&payload(published + 1, 100)) {
            Ok(seq) => published = seq,
            Err(Error::Backpressure {
                slot,
                pid,
                behind_messages,
                ..
            }) => {
                assert_eq!(slot, 0);
                assert_eq!(pid, u64::from(std::process::id()));
                assert_eq!(behind_messages, published);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        published > 10,
        "a 4 KiB ring holds more than {published} such messages"
    );
    let start = Instant::now();
    let err = publisher
        .publish_timeout(&payload(published + 1, 100), Duration::from_millis(30))
        .unwrap_err();
    assert!(matches!(err, Error::Backpressure { .. }), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(30));
    let readers = publisher.readers();
    assert_eq!(readers.len(), 1);
    assert_eq!(readers[0].lag_messages, published);
    let mut buf = Vec::new();
    for expected in 1..=published {
        assert_eq!(sub.try_recv(&mut buf), Ok(expected));
        assert_eq!(buf, payload(expected, 100));
    }
    assert_eq!(sub.try_recv(&mut buf), Err(RecvError::Empty));
    // Having read everything (and said so when it found the ring empty), it lets the producer on.
    publisher.try_publish(&payload(published + 1, 100)).unwrap();
}

#[test]
fn a_reader_thread_receives_every_message_of_a_fast_producer() {
    let name = unique_shm("ll-thread");
    let mut publisher = Publisher::options()
        .capacity(8192)
        .lossless(true)
        .create(&name)
        .unwrap();
    const N: u64 = 200_000;
    let mut readers = Vec::new();
    for wait in [WaitStrategy::Spin, WaitStrategy::Block] {
        let mut sub = Subscriber::options()
            .lossless(true)
            .start(StartAt::Next)
            .wait_strategy(wait)
            .open(&name)
            .unwrap();
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut next = 1;
            while next <= N {
                let seq = sub.recv_timeout(&mut buf, Duration::from_secs(30)).unwrap();
                assert_eq!(seq, next, "{wait:?}");
                assert!(
                    pattern::matches(seq, &buf),
                    "{wait:?}: corrupt payload {seq}"
                );
                next += 1;
            }
        }));
    }
    assert_eq!(publisher.wait_for_readers(2, None).unwrap(), 2);
    for seq in 1..=N {
        let len = (seq * 7919 % 400) as usize;
        assert_eq!(publisher.publish(&payload(seq, len)).unwrap(), seq);
    }
    for reader in readers {
        reader.join().unwrap();
    }
}

#[test]
fn a_stuck_reader_is_evicted_after_max_block_and_told_exactly_what_it_lost() {
    let name = unique_shm("ll-evict");
    let max_block = Duration::from_millis(100);
    let mut publisher = Publisher::options()
        .capacity(4096)
        .lossless(true)
        .max_block(Some(max_block))
        .create(&name)
        .unwrap();
    let mut stuck = Subscriber::options()
        .lossless(true)
        .start(StartAt::Beginning)
        .open(&name)
        .unwrap();
    let start = Instant::now();
    const N: u64 = 500;
    for seq in 1..=N {
        publisher.publish(&payload(seq, 100)).unwrap();
    }
    let held = start.elapsed();
    assert!(
        held >= max_block,
        "the producer was held back only {held:?}"
    );
    assert!(held < max_block * 20, "held back for {held:?}");
    assert!(publisher.readers()[0].evicted);
    assert_eq!(stuck.info().evictions, 1);
    // The reader reads what it still can, is told it was evicted, then gets exact counts.
    let mut buf = Vec::new();
    let mut received = 0;
    let mut missed = 0;
    let mut evicted = 0;
    loop {
        match stuck.try_recv(&mut buf) {
            Ok(seq) => {
                assert!(pattern::matches(seq, &buf));
                received += 1;
            }
            Err(RecvError::Evicted) => evicted += 1,
            Err(RecvError::Lagged { missed: m }) => missed += m,
            Err(RecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(evicted, 1);
    assert!(!stuck.is_registered());
    assert_eq!(received + missed, N);
    assert!(missed > 0);
}

#[test]
fn registration_that_cannot_be_honoured_is_an_error() {
    let lossy = unique_shm("ll-lossy");
    let _p = Publisher::options().capacity(4096).create(&lossy).unwrap();
    let err = Subscriber::options()
        .lossless(true)
        .open(&lossy)
        .unwrap_err();
    assert!(matches!(err, Error::NotLossless { .. }), "{err}");
    // Lossy readers are fine on a lossless segment.
    let name = unique_shm("ll-full");
    let _p = Publisher::options()
        .capacity(4096)
        .lossless(true)
        .reader_slots(2)
        .create(&name)
        .unwrap();
    let a = Subscriber::options().lossless(true).open(&name).unwrap();
    let b = Subscriber::options().lossless(true).open(&name).unwrap();
    assert_eq!((a.slot(), b.slot()), (Some(0), Some(1)));
    let err = Subscriber::options()
        .lossless(true)
        .open(&name)
        .unwrap_err();
    assert!(matches!(err, Error::NoFreeSlot { slots: 2, .. }), "{err}");
    assert!(!Subscriber::open(&name, StartAt::Oldest)
        .unwrap()
        .is_registered());
    // Dropping a registered reader frees its slot.
    drop(a);
    let c = Subscriber::options().lossless(true).open(&name).unwrap();
    assert_eq!(c.slot(), Some(0));
    let err = Publisher::options()
        .lossless(true)
        .reader_slots(32)
        .create(&unique_shm("ll-slots"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
}

#[test]
fn a_lossless_segment_without_readers_runs_like_a_lossy_one() {
    let name = unique_shm("ll-none");
    let mut publisher = Publisher::options()
        .capacity(4096)
        .lossless(true)
        .create(&name)
        .unwrap();
    let mut lossy = Subscriber::open(&name, StartAt::Beginning).unwrap();
    for seq in 1..=1000 {
        publisher.try_publish(&payload(seq, 64)).unwrap();
    }
    let mut buf = Vec::new();
    assert!(matches!(
        lossy.try_recv(&mut buf),
        Err(RecvError::Lagged { .. })
    ));
    let info = lossy.info();
    assert!(info.lossless);
    assert_eq!(info.reader_slots, 31);
    assert_eq!(info.max_block, Some(shmcast::DEFAULT_MAX_BLOCK));
    assert!(info.readers.is_empty());
}
