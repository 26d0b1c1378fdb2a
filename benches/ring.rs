//! In-process costs of the ring on a real shared-memory segment: publish by message size, and
//! publish + read (copying and zero-copy) by size. Every payload is written by the publisher and
//! copied or summed by the reader, so the benchmarks measure the work they claim to.
//!
//! `cargo bench --bench ring`; the cross-process harness is `shmcast bench` (issue 4).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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
                black_box(&buf[..r.len]);
            })
        });

        let (mut publisher, mut subscriber) = segment("zero-copy");
        group.bench_with_input(BenchmarkId::new("zero-copy-sum", size), &size, |b, _| {
            let mut chunk = [0u8; 64];
            b.iter(|| {
                publisher.publish(&payload).unwrap();
                // Touch every byte in place: sum it 64 bytes at a time.
                let (_, sum) = subscriber
                    .try_read(|m| {
                        let mut sum = 0u64;
                        let mut at = 0;
                        while at < m.len() {
                            let n = (m.len() - at).min(64);
                            m.read_at(at, &mut chunk[..n]);
                            sum += chunk[..n].iter().map(|&b| u64::from(b)).sum::<u64>();
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

criterion_group!(benches, publish, publish_then_read);
criterion_main!(benches);
