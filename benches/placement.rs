//! Where the two CPUs sit, and what it does to large-message throughput.
//!
//! `cargo bench --bench placement [-- ROUNDS [SIZE [CAPACITY_MIB]]]` (defaults: 30 rounds,
//! 4096 bytes, a 4 MiB ring). Each round, on the first two CPUs this process may use:
//!
//! 1. the one-cache-line floor: a word bounced 20 000 times between the two threads, one-way
//!    median (round trip / 2), as in `shmcast bench`;
//! 2. throughput: a producer thread publishes 20 000 messages as fast as it can while a
//!    subscriber thread copies and checksums each one (both rates are printed, and the messages
//!    the subscriber lost to laps);
//! 3. the same producer alone, on a second segment nobody reads.
//!
//! Threads rather than processes: the caches see the same traffic either way, and one
//! process can interleave the three parts tightly. On a VM whose vCPUs move between host
//! cores, the floor of each round tells which placement the round ran in, so the rounds can
//! be grouped by it (docs/BENCHMARKS.md, "Why 1 and 4 KiB throughput is bimodal here").

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use shmcast::{Publisher, RecvError, StartAt, Subscriber};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

const BOUNCES: u64 = 20_000;
const MESSAGES: u64 = 20_000;

/// The bounced word, alone on its cache lines.
#[repr(align(128))]
struct Line(AtomicU64);

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let line = Arc::new(Line(AtomicU64::new(0)));
    let barrier = Arc::new(Barrier::new(2));

    let consumer = {
        let (line, barrier) = (line.clone(), barrier.clone());
        let mut sub = Subscriber::open(&name, StartAt::Beginning)?;
        std::thread::spawn(move || -> Result<Vec<(f64, u64)>, String> {
            // Every error waits until the end: the producer thread counts on this one to
            // bounce the floor's word and to meet it at the barriers, every round.
            let mut failure = pin(consumer_cpu).err();
            let mut buf = vec![0u8; size];
            let mut rates = Vec::new();
            for _ in 0..rounds {
                barrier.wait();
                for k in 0..BOUNCES {
                    while line.0.load(Ordering::Acquire) != 2 * k + 1 {
                        std::hint::spin_loop();
                    }
                    line.0.store(2 * k + 2, Ordering::Release);
                }
                barrier.wait();
                match consume(&mut sub, &mut buf) {
                    Ok(rate) => rates.push(rate),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            failure.map_or(Ok(rates), Err)
        })
    };

    pin(producer_cpu)?;
    let payload = vec![0x5Au8; size];
    let mut rows = Vec::new();
    for _ in 0..rounds {
        line.0.store(0, Ordering::SeqCst);
        barrier.wait();
        let mut rtts = Vec::with_capacity(BOUNCES as usize);
        for k in 0..BOUNCES {
            let start = Instant::now();
            line.0.store(2 * k + 1, Ordering::Release);
            while line.0.load(Ordering::Acquire) != 2 * k + 2 {
                std::hint::spin_loop();
            }
            rtts.push(start.elapsed().as_nanos() as u64);
        }
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

fn allowed_cpus() -> nix::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

fn pin(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| e.to_string())?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pinning to CPU {cpu}: {e}"))
}
