//! Where the two CPUs sit, and what it does to large-message throughput.
//!
//! `cargo bench -p shmcast-bench --bench placement [-- ROUNDS [SIZE [CAPACITY_MIB]]]` (defaults: 30 rounds,
//! 4096 bytes, a 4 MiB ring). Each round, on the first two CPUs this process may use:
//!
//! 1. the one-cache-line floor: a word bounced 20 000 times between the two threads, one-way
//!    median (round trip / 2), measured by the harness's own floor (`shmcast_bench::floor`);
//! 2. throughput: a producer thread publishes 20 000 messages as fast as it can while a
//!    subscriber thread copies and checksums each one (both rates are printed, and the messages
//!    the subscriber lost to laps);
//! 3. the same producer alone, on a second segment nobody reads.
//!
//! Threads rather than processes: the caches see the same traffic either way, and one
//! process can interleave the three parts tightly. The CPUs are the harness's (`shmcast_bench::sys`). On a VM whose vCPUs move between host
//! cores, the floor of each round tells which placement the round ran in, so the rounds can
//! be grouped by it (docs/PERFORMANCE-LOG.md, "Why 1 and 4 KiB throughput is bimodal here").

use shmcast::{Publisher, RecvError, StartAt, Subscriber};
use shmcast_bench::floor;
use shmcast_bench::sys::{allowed_cpus, pin_current_thread};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const BOUNCES: usize = 20_000;
const MESSAGES: u64 = 20_000;

fn main() -> shmcast_bench::Result<()> {
    // `cargo bench` passes `--bench`; only numbers are ours.
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(30);
    let size = args.get(1).copied().unwrap_or(4096) as usize;
    let capacity = args.get(2).copied().unwrap_or(4) << 20;
    let cpus = allowed_cpus()?;
    if cpus.len() < 2 {
        println!("placement: needs two CPUs, this process may use {cpus:?}; nothing measured");
        return Ok(());
    }
    let (producer_cpu, consumer_cpu) = (cpus[0], cpus[1]);

    let name = format!("/shmcast-placement-{}", std::process::id());
    let lone_name = format!("/shmcast-placement-lone-{}", std::process::id());
    let mut publisher = Publisher::options().capacity(capacity).create(&name)?;
    let mut lone = Publisher::options().capacity(capacity).create(&lone_name)?;
    let barrier = Arc::new(Barrier::new(2));

    let consumer = {
        let barrier = barrier.clone();
        let mut sub = Subscriber::open(&name, StartAt::Beginning)?;
        std::thread::spawn(move || -> Result<Vec<(f64, u64)>, String> {
            // Every error waits until the end: the producer thread counts on this one to meet
            // it at the barrier, every round.
            let mut failure = pin_current_thread(consumer_cpu)
                .err()
                .map(|e| e.to_string());
            let mut buf = vec![0u8; size];
            let mut rates = Vec::new();
            for _ in 0..rounds {
                barrier.wait();
                match consume(&mut sub, &mut buf) {
                    Ok(rate) => rates.push(rate),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            failure.map_or(Ok(rates), Err)
        })
    };

    pin_current_thread(producer_cpu)?;
    let payload = vec![0x5Au8; size];
    let mut rows = Vec::new();
    for _ in 0..rounds {
        // The consumer thread waits at the barrier meanwhile: the floor's own thread has its CPU.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut rtts = floor::bounce(Some(consumer_cpu), BOUNCES, 0, deadline, false)?;
        rtts.sort_unstable();
        let floor_ns = rtts[rtts.len() / 2] / 2;
        barrier.wait();
        let with_reader = publish_rate(&mut publisher, &payload)?;
        let alone = publish_rate(&mut lone, &payload)?;
        rows.push((floor_ns, with_reader, alone));
    }
    let consumed = consumer
        .join()
        .map_err(|_| "the consumer thread panicked")??;

    println!(
        "placement: {size} B messages, {} KiB ring, CPUs {producer_cpu} and {consumer_cpu}",
        capacity >> 10
    );
    println!("  floor (one-way)   consumer      lost   producer with it   producer alone");
    for ((floor_ns, with_reader, alone), (consumer, lost)) in rows.iter().zip(&consumed) {
        println!(
            "  {floor_ns:>9} ns   {:>7.2} GB/s {lost:>8}   {:>11.2} GB/s  {:>10.2} GB/s",
            consumer * size as f64 / 1e9,
            with_reader * size as f64 / 1e9,
            alone * size as f64 / 1e9,
        );
    }
    Ok(())
}

/// Receives until `MESSAGES` were received or lost; returns (received per second, lost).
fn consume(sub: &mut Subscriber, buf: &mut [u8]) -> Result<(f64, u64), String> {
    let (mut received, mut lost, mut sum) = (0u64, 0u64, 0u64);
    let mut first = None;
    while received + lost < MESSAGES {
        match sub.try_recv_into(buf) {
            Ok(r) => {
                first.get_or_insert_with(Instant::now);
                received += 1;
                sum = buf[..r.len].chunks_exact(8).fold(sum, |s, c| {
                    s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()))
                });
            }
            Err(RecvError::Empty) => std::hint::spin_loop(),
            Err(RecvError::Lagged { missed }) => lost += missed,
            Err(e) => return Err(e.to_string()),
        }
    }
    std::hint::black_box(sum);
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    Ok((
        if secs > 0.0 {
            received as f64 / secs
        } else {
            0.0
        },
        lost,
    ))
}

/// Publishes `MESSAGES` copies of `payload`; returns messages per second.
fn publish_rate(publisher: &mut Publisher, payload: &[u8]) -> Result<f64, shmcast::Error> {
    let start = Instant::now();
    for _ in 0..MESSAGES {
        publisher.publish(payload)?;
    }
    Ok(MESSAGES as f64 / start.elapsed().as_secs_f64())
}
