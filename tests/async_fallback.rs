//! Without `futex_waitv` (Linux before 5.16; forced here with `SHMCAST_NO_FUTEX_WAITV`, read
//! once per process, so this file is a test binary of its own with a single test): async
//! subscribers are still woken (the wait hub polls the words every millisecond while tasks
//! wait), and a cancelled blocking read still returns promptly (bounded sleeps).
#![cfg(feature = "async")]

mod common;

use std::time::{Duration, Instant};

use shmcast::{AsyncSubscriber, Publisher, RecvError, StartAt, Subscriber, CANCEL_POLL};

#[test]
fn without_futex_waitv_async_readers_are_woken_and_cancels_are_noticed() {
    std::env::set_var("SHMCAST_NO_FUTEX_WAITV", "1");
    let (name, _cleanup) = common::shm_name("async-fallback");
    let mut publisher = Publisher::options()
        .capacity(1 << 16)
        .create(&name)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut subs: Vec<AsyncSubscriber> = (0..3)
        .map(|_| AsyncSubscriber::new(Subscriber::open(&name, StartAt::Next).unwrap()).unwrap())
        .collect();
    // The publisher publishes round r a little after being told to, so the tasks are parked.
    let (go, rounds) = std::sync::mpsc::channel::<u64>();
    let publisher = std::thread::spawn(move || {
        for round in rounds {
            std::thread::sleep(Duration::from_millis(if round % 10 == 0 { 20 } else { 2 }));
            publisher.publish(&round.to_le_bytes()).unwrap();
        }
        publisher
    });
    for round in 1..=50u64 {
        go.send(round).unwrap();
        runtime.block_on(async {
            for sub in &mut subs {
                let mut buf = Vec::new();
                let got = tokio::time::timeout(Duration::from_secs(10), sub.recv(&mut buf))
                    .await
                    .expect("not woken without futex_waitv");
                assert_eq!(got, Ok(round));
                assert_eq!(buf, round.to_le_bytes());
            }
        });
    }
    drop(go);
    let _publisher = publisher.join().unwrap();

    // A cancel is noticed within the bounded sleep, not the 100 ms park cap.
    let mut blocking = Subscriber::open(&name, StartAt::Next).unwrap();
    let canceller = blocking.canceller();
    let reader = std::thread::spawn(move || {
        let r = blocking.recv(&mut Vec::new());
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(150));
    let cancelled_at = Instant::now();
    canceller.cancel();
    let (r, returned_at) = reader.join().unwrap();
    assert_eq!(r, Err(RecvError::Cancelled));
    let took = returned_at.saturating_duration_since(cancelled_at);
    assert!(took < CANCEL_POLL * 4, "cancel noticed after {took:?}");
}
