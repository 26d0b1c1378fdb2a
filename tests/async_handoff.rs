//! The hand-off between parking tasks and the wait hub, under stress: tasks on two segments
//! park and are woken hundreds of times, with publishes landing at random moments of their
//! parking (before, during and after a task leaves its waker, while the hub rebuilds its list
//! or sleeps). A lost wake-up is rescued only by the hub's 100 ms check, so any round that
//! takes longer than [`LOST`] is reported as one.
#![cfg(feature = "async")]

mod common;

use std::time::{Duration, Instant};

use shmcast::{pattern, AsyncSubscriber, Publisher, StartAt, Subscriber};

/// Longer than any wake-up on a loaded machine, shorter than the hub's rescue (100 ms).
const LOST: Duration = Duration::from_millis(60);
const ROUNDS: u64 = 400;
const TASKS_PER_SEGMENT: usize = 3;

#[test]
fn no_wake_up_is_lost_between_a_parking_task_and_the_hub() {
    let (a, _ga) = common::shm_name("handoff-a");
    let (b, _gb) = common::shm_name("handoff-b");
    let mut publishers =
        [&a, &b].map(|n| Publisher::options().capacity(1 << 16).create(n).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, u64, Instant)>();
    let mut tasks = Vec::new();
    for (s, name) in [&a, &b].into_iter().enumerate() {
        for _ in 0..TASKS_PER_SEGMENT {
            let mut sub =
                AsyncSubscriber::new(Subscriber::open(name, StartAt::Next).unwrap()).unwrap();
            let done = done_tx.clone();
            tasks.push(runtime.spawn(async move {
                let mut buf = Vec::new();
                for round in 1..=ROUNDS {
                    let seq = sub.recv(&mut buf).await.unwrap();
                    assert_eq!(seq, round);
                    done.send((s, seq, Instant::now())).unwrap();
                }
            }));
        }
    }
    let mut state = 0x4a11_u64;
    let mut worst = Duration::ZERO;
    for round in 1..=ROUNDS {
        // Publish to both segments, at a random moment of the tasks' parking: right away (they
        // are still handling the last round), or after they have had time to park.
        let pause = Duration::from_micros(pattern::splitmix64(&mut state) % 400);
        std::thread::sleep(pause);
        let order = pattern::splitmix64(&mut state) % 2;
        let published = Instant::now();
        for i in [order as usize, 1 - order as usize] {
            assert_eq!(publishers[i].publish(&round.to_le_bytes()).unwrap(), round);
        }
        for _ in 0..2 * TASKS_PER_SEGMENT {
            let (s, seq, at) = done_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a task never received its message");
            assert_eq!(seq, round, "segment {s}");
            let took = at.saturating_duration_since(published);
            worst = worst.max(took);
            assert!(
                took < LOST,
                "round {round}, segment {s}: woken after {took:?} (lost wake-up)"
            );
        }
    }
    for t in tasks {
        runtime.block_on(t).unwrap();
    }
    eprintln!("{ROUNDS} rounds, slowest wake-up {worst:?}");
}
