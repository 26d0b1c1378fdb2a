//! Cancelling blocking reads from another thread (`Subscriber::canceller`).

mod common;

use std::time::{Duration, Instant};

use shmcast::{Publisher, RecvError, StartAt, Subscriber, WaitStrategy};

/// How long after `cancel` a sleeping reader must have returned: well under the 100 ms park
/// cap, so a reader that only noticed at the end of its park would fail.
const PROMPT: Duration = Duration::from_millis(50);

/// A reader asleep in `recv` (for each strategy) returns `Cancelled` promptly after `cancel`,
/// and a message published before is still delivered after it.
#[test]
fn cancel_wakes_a_blocked_reader_promptly_with_a_distinct_error() {
    for strategy in [
        WaitStrategy::Block,
        WaitStrategy::Backoff,
        WaitStrategy::Yield,
        WaitStrategy::Spin,
    ] {
        let (name, _cleanup) = common::shm_name("cancel");
        let mut publisher = Publisher::options().capacity(4096).create(&name).unwrap();
        let mut subscriber = Subscriber::options()
            .start(StartAt::Next)
            .wait_strategy(strategy)
            .open(&name)
            .unwrap();
        let canceller = subscriber.canceller();
        let reader = std::thread::spawn(move || {
            let r = subscriber.recv(&mut Vec::new());
            (r, Instant::now(), subscriber)
        });
        // Let it fall asleep (a Block reader parks within microseconds).
        std::thread::sleep(Duration::from_millis(150));
        let cancelled_at = Instant::now();
        canceller.cancel();
        let (r, returned_at, mut subscriber) = reader.join().unwrap();
        let took = returned_at.saturating_duration_since(cancelled_at);
        assert_eq!(r, Err(RecvError::Cancelled), "{strategy}");
        assert!(took < PROMPT, "{strategy}: returned {took:?} after cancel");
        eprintln!("{strategy}: returned {took:?} after cancel");
        // Sticky until reset, but a message that is there is delivered, not lost.
        publisher.publish(b"kept").unwrap();
        let mut buf = Vec::new();
        assert_eq!(subscriber.recv(&mut buf), Ok(1), "{strategy}");
        assert_eq!(buf, b"kept");
        assert_eq!(subscriber.recv(&mut buf), Err(RecvError::Cancelled));
        assert!(canceller.is_cancelled());
        canceller.reset();
        let r = subscriber.recv_timeout(&mut buf, Duration::from_millis(20));
        assert_eq!(r, Err(RecvError::Timeout), "{strategy}");
    }
}

/// A cancel that comes just before the reader goes to sleep is not lost: many rounds of
/// cancel racing a fresh `recv`, each of which must return (no round may sleep on).
#[test]
fn a_cancel_racing_the_park_is_never_missed() {
    let (name, _cleanup) = common::shm_name("cancel-race");
    let _publisher = Publisher::options().capacity(4096).create(&name).unwrap();
    let mut subscriber = Subscriber::open(&name, StartAt::Next).unwrap();
    let canceller = subscriber.canceller();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        while go_rx.recv().is_ok() {
            let start = Instant::now();
            let r = subscriber.recv(&mut Vec::new());
            done_tx.send((r, start.elapsed())).unwrap();
        }
    });
    for round in 0..300u32 {
        canceller.reset();
        go_tx.send(()).unwrap();
        // Anywhere from before the read starts to after it sleeps.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_micros(u64::from(round % 50) * 10) {
            std::hint::spin_loop();
        }
        canceller.cancel();
        let (r, took) = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a cancelled reader slept on");
        assert_eq!(r, Err(RecvError::Cancelled), "round {round}");
        // Not rescued by the park cap (100 ms) or the liveness check.
        assert!(took < Duration::from_millis(90), "round {round}: {took:?}");
    }
    drop(go_tx);
    reader.join().unwrap();
}

/// Cancelling also interrupts a read-only subscriber (it cannot park, and waits in bounded
/// sleeps) and a lossless registered one; the registration survives the cancellation.
#[test]
fn cancel_interrupts_registered_readers_too() {
    let (name, _cleanup) = common::shm_name("cancel-lossless");
    let mut publisher = Publisher::options()
        .capacity(4096)
        .lossless(true)
        .create(&name)
        .unwrap();
    let mut subscriber = Subscriber::options()
        .start(StartAt::Next)
        .lossless(true)
        .open(&name)
        .unwrap();
    let canceller = subscriber.canceller();
    let reader = std::thread::spawn(move || {
        let r = subscriber.recv(&mut Vec::new());
        (r, subscriber)
    });
    std::thread::sleep(Duration::from_millis(100));
    canceller.cancel();
    let (r, mut subscriber) = reader.join().unwrap();
    assert_eq!(r, Err(RecvError::Cancelled));
    assert!(subscriber.is_registered());
    canceller.reset();
    publisher.publish(b"after").unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        subscriber.recv_timeout(&mut buf, Duration::from_secs(5)),
        Ok(1)
    );
}
