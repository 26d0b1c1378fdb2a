//! In-process costs of the ring on a real shared-memory segment: publish by message size,
//! publish + read (copying and zero-copy) by size, and the read alone (non-blocking, blocking
//! and zero-copy). Every payload is written by the publisher and
//! copied or summed by the reader, so the benchmarks measure the work they claim to.
//!
//! `cargo bench --bench ring`; the cross-process harness is `shmcast bench` (issue 4).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shmcast::pattern::checksum;
use shmcast::{Publisher, StartAt, Subscriber};

const SIZES: [usize; 5] = [8, 64, 1024, 4096, 65536];

fn segment(tag: &str) -> (Publisher, Subscriber) {
    let name = format!("/shmcast-bench-{tag}-{}", std::process::id());
    let publisher = Publisher::options()
        .capacity(4 << 20)
        .create(&name)
        .expect("create bench segment");
    let subscriber = Subscriber::open(&name, StartAt::Next).expect("open bench segment");
    (publisher, subscriber)
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for size in SIZES {
        let (mut publisher, _subscriber) = segment("publish");
        let payload = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| publisher.publish(black_box(&payload)).unwrap())
        });
    }
    group.finish();
}

fn publish_then_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish+read");
    for size in SIZES {
        let payload = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));

        let (mut publisher, mut subscriber) = segment("copy");
        let mut buf = vec![0u8; size];
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| {
                publisher.publish(&payload).unwrap();
                let r = subscriber.try_recv_into(&mut buf).unwrap();
                black_box(checksum(&buf[..r.len]));
            })
        });

        let (mut publisher, mut subscriber) = segment("zero-copy");
        group.bench_with_input(BenchmarkId::new("zero-copy-sum", size), &size, |b, _| {
            let mut chunk = [0u8; 256];
            b.iter(|| {
                publisher.publish(&payload).unwrap();
                // Touch every byte in place: sum it 256 bytes at a time.
                let (_, sum) = subscriber
                    .try_read(|m| {
                        let mut sum = 0u64;
                        let mut at = 0;
                        while at < m.len() {
                            let n = (m.len() - at).min(chunk.len());
                            m.read_at(at, &mut chunk[..n]);
                            sum = sum.wrapping_add(checksum(&chunk[..n]));
                            at += n;
                        }
                        sum
                    })
                    .unwrap();
                black_box(sum);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("pod");
    let (mut publisher, mut subscriber) = segment("pod");
    group.bench_function("publish+read u64x4", |b| {
        let value = [1u64, 2, 3, 4];
        b.iter(|| {
            publisher.publish_pod(black_box(&value)).unwrap();
            black_box(subscriber.try_recv_pod::<[u64; 4]>().unwrap());
        })
    });
    group.finish();
}

/// Reader cost alone: a batch of messages is published untimed, then reading all of them is
/// timed, so the figure is per message read (copying it out and summing it, through the
/// non-blocking or the blocking call, or summing it in place through the zero-copy accessor).
fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    for size in [8usize, 64, 1024, 4096] {
        group.throughput(Throughput::Bytes(size as u64));
        let payload = vec![0x5Au8; size];
        // A batch that fits comfortably in the 4 MiB ring.
        let batch = ((2 << 20) / (size as u64 + 16)).min(10_000);

        let (mut publisher, mut subscriber) = segment("read-copy");
        let mut buf = vec![0u8; size];
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter_custom(|iters| {
                time_reads(iters, batch, &mut publisher, &payload, || {
                    let r = subscriber.try_recv_into(&mut buf).unwrap();
                    black_box(checksum(&buf[..r.len]));
                })
            })
        });

        // The same through the blocking call, which finds every message waiting: the cost of
        // `recv_into` over `try_recv_into` when no wait is needed.
        let (mut publisher, mut subscriber) = segment("read-recv");
        subscriber.set_wait_strategy(shmcast::WaitStrategy::Spin);
        group.bench_with_input(BenchmarkId::new("recv", size), &size, |b, _| {
            b.iter_custom(|iters| {
                time_reads(iters, batch, &mut publisher, &payload, || {
                    let r = subscriber.recv_into(&mut buf).unwrap();
                    black_box(checksum(&buf[..r.len]));
                })
            })
        });

        let (mut publisher, mut subscriber) = segment("read-zero-copy");
        let mut chunk = [0u8; 256];
        group.bench_with_input(BenchmarkId::new("zero-copy", size), &size, |b, _| {
            b.iter_custom(|iters| {
                time_reads(iters, batch, &mut publisher, &payload, || {
                    let (_, sum) = subscriber
                        .try_read(|m| {
                            let mut sum = 0u64;
                            let mut at = 0;
                            while at < m.len() {
                                let k = (m.len() - at).min(chunk.len());
                                m.read_at(at, &mut chunk[..k]);
                                sum = sum.wrapping_add(checksum(&chunk[..k]));
                                at += k;
                            }
                            sum
                        })
                        .unwrap();
                    black_box(sum);
                })
            })
        });
    }
    group.finish();
}

/// Times `read` (one message each) `iters` times: publishes up to `batch` messages untimed, then
/// times reading them, until `iters` were read.
fn time_reads(
    iters: u64,
    batch: u64,
    publisher: &mut Publisher,
    payload: &[u8],
    mut read: impl FnMut(),
) -> std::time::Duration {
    let mut total = std::time::Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        for _ in 0..n {
            publisher.publish(payload).unwrap();
        }
        let start = std::time::Instant::now();
        for _ in 0..n {
            read();
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

/// Lossless mode against lossy, in the same run: the same 64-byte publish (and, in one thread,
/// publish then read) on a lossy segment and on a lossless one with a registered reader that
/// keeps up. The registered reader publishes its progress every capacity/8 bytes and whenever it
/// finds the ring empty; the producer looks at the slots about once per half ring.
fn lossless(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut group = c.benchmark_group("lossless");
    let payload = [0x5Au8; 64];
    group.throughput(Throughput::Bytes(64));
    for lossless in [false, true] {
        let mode = if lossless { "lossless" } else { "lossy" };
        let name = format!("/shmcast-bench-ll-{mode}-{}", std::process::id());
        let mut publisher = Publisher::options()
            .capacity(4 << 20)
            .lossless(lossless)
            .create(&name)
            .expect("create bench segment");
        let mut subscriber = Subscriber::options()
            .start(StartAt::Next)
            .lossless(lossless)
            .open(&name)
            .expect("open bench segment");
        let mut buf = [0u8; 64];
        group.bench_function(BenchmarkId::new("publish+read", mode), |b| {
            b.iter(|| {
                publisher.publish(&payload).unwrap();
                let r = subscriber.try_recv_into(&mut buf).unwrap();
                black_box(checksum(&buf[..r.len]));
            })
        });
        drop(subscriber);

        // A reader thread that keeps up, copying and summing every message.
        let stop = Arc::new(AtomicBool::new(false));
        let mut subscriber = Subscriber::options()
            .start(StartAt::Next)
            .lossless(lossless)
            .open(&name)
            .expect("open bench segment");
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let mut sum = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = subscriber.try_recv_into(&mut buf) {
                        sum = sum.wrapping_add(checksum(&buf[..r.len]));
                    }
                }
                sum
            })
        };
        group.bench_function(BenchmarkId::new("publish, reader thread", mode), |b| {
            b.iter(|| publisher.publish(black_box(&payload)).unwrap())
        });
        stop.store(true, Ordering::Relaxed);
        black_box(reader.join().unwrap());
    }
    group.finish();
}

criterion_group!(benches, publish, publish_then_read, read, lossless);
criterion_main!(benches);
