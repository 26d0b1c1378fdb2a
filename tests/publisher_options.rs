//! `PublisherOptions::membarrier` and `PublisherOptions::write_prefetch`: the switches that
//! the environment variables `SHMCAST_NO_MEMBARRIER` and `SHMCAST_NO_PREFETCH` also turn off.
//! (The environment variables themselves: `tests/multiprocess.rs`, `parked_consumers_…`.) And
//! `PublisherOptions::gap_records`.

use std::time::Duration;

use shmcast::{layout, Publisher, StartAt, Subscriber, WaitStrategy};

mod common;
use common::shm_name;

/// The segment header's `wake_barrier` word.
fn wake_barrier(name: &str) -> u64 {
    let header = std::fs::read(common::shm_path(name)).expect("read the header");
    let at = layout::offset::WAKE_BARRIER;
    u64::from_le_bytes(header[at..at + 8].try_into().unwrap())
}

/// Without membarrier the producer fences on every publish and says so in the header, and a
/// subscriber parked in the kernel is still woken by each publish.
#[test]
fn without_membarrier_parked_readers_are_still_woken() {
    let (name, _cleanup) = shm_name("fence");
    let mut publisher = Publisher::options()
        .capacity(1 << 16)
        .membarrier(false)
        .create(&name)
        .unwrap();
    assert_eq!(wake_barrier(&name), layout::WAKE_FENCE);
    let mut subscriber = Subscriber::open(&name, StartAt::Next).unwrap();
    assert!(subscriber.can_park(), "the owner may park");
    subscriber.set_wait_strategy(WaitStrategy::Block);
    const ROUNDS: u64 = 5;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        (1..=ROUNDS)
            .map(|_| {
                subscriber
                    .recv_timeout(&mut buf, Duration::from_secs(30))
                    .map(|seq| (seq, buf.clone()))
            })
            .collect::<Vec<_>>()
    });
    for round in 1..=ROUNDS {
        // Long enough for the reader to have parked: this publish must wake it.
        std::thread::sleep(Duration::from_millis(50));
        publisher.publish(&round.to_le_bytes()).unwrap();
    }
    let received = reader.join().unwrap();
    for (round, got) in (1..=ROUNDS).zip(received) {
        assert_eq!(got, Ok((round, round.to_le_bytes().to_vec())));
    }
    assert!(
        publisher.wakeups() >= 1,
        "no publish found the reader parked"
    );
}

/// Whether this kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` to this process.
fn membarrier_available() -> bool {
    use nix::libc;
    const QUERY: libc::c_int = 0;
    const GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
    // SAFETY: membarrier's QUERY command takes two integers and touches no memory.
    let supported = unsafe { libc::syscall(libc::SYS_membarrier, QUERY, 0 as libc::c_int) };
    supported >= 0 && supported & GLOBAL_EXPEDITED != 0
}

/// By default the producer registers for membarrier where this kernel allows it (and the
/// environment does not turn it off), and the header tells readers so.
#[test]
fn membarrier_is_the_default_where_available() {
    let (name, _cleanup) = shm_name("membarrier");
    let _publisher = Publisher::options().capacity(4096).create(&name).unwrap();
    let expected = if membarrier_available() && std::env::var_os("SHMCAST_NO_MEMBARRIER").is_none()
    {
        layout::WAKE_MEMBARRIER
    } else {
        layout::WAKE_FENCE
    };
    assert_eq!(wake_barrier(&name), expected);
}

/// The write prefetch only changes speed: without it, every message (across many wraps of a
/// small ring, small and large) reads back the same.
#[test]
fn without_write_prefetch_publishing_is_unchanged() {
    for prefetch in [true, false] {
        let (name, _cleanup) = shm_name("prefetch");
        let mut publisher = Publisher::options()
            .capacity(4096)
            .write_prefetch(prefetch)
            .create(&name)
            .unwrap();
        let mut subscriber = Subscriber::open(&name, StartAt::Next).unwrap();
        let mut buf = Vec::new();
        for seq in 1..=2000u64 {
            let len = (seq as usize * 37) % publisher.max_payload();
            let payload: Vec<u8> = (0..len).map(|i| (i as u64 ^ seq) as u8).collect();
            assert_eq!(publisher.publish(&payload).unwrap(), seq);
            assert_eq!(
                subscriber.try_recv(&mut buf),
                Ok(seq),
                "prefetch {prefetch}"
            );
            assert_eq!(buf, payload, "prefetch {prefetch}");
        }
    }
}

/// `PublisherOptions::gap_records`: off by default, where `publish_gap` is refused and nothing is
/// written; on, `info()` says so and a subscriber gets the gap as `Lagged`, with the sequence
/// numbers it stands for skipped.
#[test]
fn gap_records_are_off_by_default_and_reported_when_on() {
    let (name, _cleanup) = shm_name("gaps-off");
    let mut publisher = Publisher::options().capacity(4096).create(&name).unwrap();
    let subscriber = Subscriber::open(&name, StartAt::Beginning).unwrap();
    assert!(!subscriber.info().gap_records);
    assert!(matches!(
        publisher.publish_gap(3),
        Err(shmcast::Error::InvalidOption {
            option: "gap_records",
            ..
        })
    ));
    assert_eq!(publisher.next_seq(), 1);

    let (name, _cleanup) = shm_name("gaps-on");
    let mut publisher = Publisher::options()
        .capacity(4096)
        .gap_records(true)
        .create(&name)
        .unwrap();
    let mut subscriber = Subscriber::open(&name, StartAt::Beginning).unwrap();
    assert!(subscriber.info().gap_records);
    publisher.publish_gap(0).unwrap(); // nothing lost, nothing recorded
    publisher.publish_gap(4).unwrap();
    assert_eq!(publisher.publish(b"five").unwrap(), 5);
    let mut buf = Vec::new();
    assert_eq!(
        subscriber.try_recv(&mut buf),
        Err(shmcast::RecvError::Lagged { missed: 4 })
    );
    assert_eq!(subscriber.try_recv(&mut buf), Ok(5));
    assert_eq!(buf, b"five");
    assert!(matches!(
        publisher.publish_gap(u64::MAX),
        Err(shmcast::Error::InvalidOption {
            option: "missed",
            ..
        })
    ));
}
