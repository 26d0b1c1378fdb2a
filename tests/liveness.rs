//! Producer liveness in one process: the producer lock, one producer per segment, replacing a
//! dead producer's segment, and blocking reads that end when the producer is gone.
//! (Killing a producer process with SIGKILL is in `tests/multiprocess.rs`.)

use std::time::{Duration, Instant};

use shmcast::wait::LIVENESS_INTERVAL;
use shmcast::{Error, Publisher, RecvError, StartAt, Subscriber, WaitStrategy};

mod common;
use common::{shm_name, shm_path};

#[test]
fn a_second_producer_on_a_live_segment_is_refused_with_the_owners_pid() {
    let (name, _cleanup) = shm_name("second");
    let mut first = Publisher::create(&name).unwrap();
    first.publish(b"kept").unwrap();
    match Publisher::create(&name) {
        Err(Error::ProducerAlive { path, pid }) => {
            assert_eq!(path, shm_path(&name));
            assert_eq!(pid, u64::from(std::process::id()));
            let message = Error::ProducerAlive { path, pid }.to_string();
            assert!(message.contains("live producer (pid "), "{message}");
        }
        other => panic!("expected ProducerAlive, got {other:?}"),
    }
    // The live segment was not touched.
    let mut sub = Subscriber::open(&name, StartAt::Oldest).unwrap();
    assert!(sub.producer_alive());
    let mut buf = Vec::new();
    assert_eq!(sub.try_recv(&mut buf), Ok(1));
    assert_eq!(buf, b"kept");
}

#[test]
fn a_dead_producers_segment_is_replaced_and_its_readers_are_told() {
    let (name, _cleanup) = shm_name("replace");
    let mut old = Publisher::options()
        .unlink_on_drop(false)
        .create(&name)
        .unwrap();
    let mut reader = Subscriber::open(&name, StartAt::Beginning).unwrap();
    old.publish(b"last words").unwrap();
    assert!(reader.producer_alive());
    drop(old); // the lock goes with it, as it would with the process
    assert!(!reader.producer_alive());

    let mut new = Publisher::options()
        .capacity(1 << 16)
        .create(&name)
        .unwrap();
    assert_eq!(new.next_seq(), 1, "a replacement starts a new stream");
    new.publish(b"hello again").unwrap();

    // The old reader first gets what the dead producer published, then learns it is gone and
    // that the name now holds another segment.
    let mut buf = Vec::new();
    assert_eq!(reader.recv(&mut buf), Ok(1));
    assert_eq!(buf, b"last words");
    assert_eq!(
        reader.recv(&mut buf),
        Err(RecvError::ProducerGone { replaced: true })
    );
    // Opening the name again follows the new producer.
    let mut follower = Subscriber::open(&name, StartAt::Beginning).unwrap();
    assert!(follower.producer_alive());
    assert_eq!(follower.capacity(), 1 << 16);
    assert_eq!(follower.recv(&mut buf), Ok(1));
    assert_eq!(buf, b"hello again");
}

#[test]
fn replacing_can_be_turned_off_and_foreign_files_are_never_replaced() {
    let (name, _cleanup) = shm_name("keep");
    drop(
        Publisher::options()
            .unlink_on_drop(false)
            .create(&name)
            .unwrap(),
    );
    let refused = Publisher::options().replace_stale(false).create(&name);
    assert!(
        matches!(refused, Err(Error::AlreadyExists { .. })),
        "{refused:?}"
    );
    assert!(shm_path(&name).exists());

    let (foreign, _cleanup_foreign) = shm_name("foreign");
    std::fs::write(shm_path(&foreign), b"not a segment").unwrap();
    let refused = Publisher::create(&foreign);
    assert!(
        matches!(refused, Err(Error::AlreadyExists { .. })),
        "{refused:?}"
    );
    assert_eq!(std::fs::read(shm_path(&foreign)).unwrap(), b"not a segment");
}

#[test]
fn blocking_reads_end_soon_after_the_producer_is_gone_with_every_strategy() {
    for strategy in [
        WaitStrategy::Spin,
        WaitStrategy::Yield,
        WaitStrategy::Backoff,
        WaitStrategy::Block,
    ] {
        let (name, _cleanup) = shm_name("gone");
        let mut publisher = Publisher::create(&name).unwrap();
        let mut reader = Subscriber::open(&name, StartAt::Next).unwrap();
        reader.set_wait_strategy(strategy);
        let waiting = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let first = reader.recv(&mut buf);
            let started = Instant::now();
            let second = reader.recv_timeout(&mut buf, Duration::from_secs(30));
            (first, second, started.elapsed())
        });
        publisher.publish(b"one").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let dropped = Instant::now();
        drop(publisher); // removes the name too (unlink_on_drop): gone, not replaced
        let (first, second, waited) = waiting.join().unwrap();
        assert_eq!(first, Ok(1), "{strategy}");
        assert_eq!(
            second,
            Err(RecvError::ProducerGone { replaced: false }),
            "{strategy}"
        );
        // Checked every LIVENESS_INTERVAL; allow a loaded machine plenty of slack.
        let after_drop = dropped.elapsed();
        assert!(
            after_drop < 10 * LIVENESS_INTERVAL,
            "{strategy}: took {after_drop:?} to notice (waited {waited:?})"
        );
    }
}

/// Anyone who can read the file can take a read lock on the liveness byte; that must not make
/// a dead producer look alive (docs/SECURITY.md).
#[test]
fn a_read_lock_taken_by_a_reader_does_not_fake_a_live_producer() {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    use std::os::fd::AsRawFd;

    let (name, _cleanup) = shm_name("rdlock");
    let publisher = Publisher::options()
        .unlink_on_drop(false)
        .create(&name)
        .unwrap();
    let reader = Subscriber::open(&name, StartAt::Oldest).unwrap();
    drop(publisher);
    let file = std::fs::File::open(shm_path(&name)).unwrap();
    // SAFETY: an all-zero `flock` is a valid value; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_RDLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_len = 1;
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)).expect("take a read lock");
    assert!(
        !reader.producer_alive(),
        "a read lock passed for the producer's"
    );
    assert!(!Subscriber::open(&name, StartAt::Oldest)
        .unwrap()
        .producer_alive());
}

/// `Subscriber::messages` ends (`None`) when the producer is gone and everything it published
/// was delivered, as the end of a stream; lags are items and iteration goes on past them.
#[test]
fn the_message_iterator_ends_when_the_producer_is_gone() {
    const N: u32 = 200;
    let (name, _cleanup) = shm_name("messages");
    let mut publisher = Publisher::options()
        .capacity(1 << 16)
        .create(&name)
        .unwrap();
    let mut reader = Subscriber::open(&name, StartAt::Beginning).unwrap();
    let producer = std::thread::spawn(move || {
        for i in 1..=N {
            publisher.publish(&i.to_le_bytes()).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20)); // the reader waits meanwhile
            }
        }
        // Dropping it ends the stream (and removes the name: gone, not replaced).
    });
    let mut expected = 1u32;
    for message in reader.messages() {
        let (seq, payload) = message.unwrap();
        assert_eq!(
            (seq, payload),
            (u64::from(expected), expected.to_le_bytes().to_vec())
        );
        expected += 1;
    }
    assert_eq!(expected, N + 1, "every message, then the end");
    producer.join().unwrap();
    // A read afterwards says why the stream ended.
    assert_eq!(
        reader.recv(&mut Vec::new()),
        Err(RecvError::ProducerGone { replaced: false })
    );
    // And a second iteration ends at once.
    assert_eq!(reader.messages().count(), 0);
}

#[test]
fn the_message_iterator_yields_lags_and_goes_on() {
    let (name, _cleanup) = shm_name("messages-lag");
    let mut old = Publisher::options()
        .capacity(4096)
        .unlink_on_drop(false)
        .create(&name)
        .unwrap();
    let mut reader = Subscriber::open(&name, StartAt::Beginning).unwrap();
    for i in 1..=1000u32 {
        old.publish(&i.to_le_bytes()).unwrap();
    }
    drop(old);
    // A new producer takes the name over; the old reader still reads the old stream.
    let _new = Publisher::options().capacity(4096).create(&name).unwrap();
    let (mut received, mut missed, mut lags) = (0u64, 0u64, 0);
    for message in reader.messages() {
        match message {
            Ok((seq, payload)) => {
                assert_eq!(payload, (seq as u32).to_le_bytes());
                received += 1;
            }
            Err(RecvError::Lagged { missed: n }) => {
                missed += n;
                lags += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(lags, 1, "a 4 KiB ring cannot hold 1000 messages");
    assert_eq!(received + missed, 1000);
    assert!(received > 0);
    assert_eq!(
        reader.recv(&mut Vec::new()),
        Err(RecvError::ProducerGone { replaced: true })
    );
}
