//! What idle async subscribers cost: `SUBSCRIBERS` tasks (default 1000) on `SEGMENTS` segments
//! (default 100) in one process, all waiting in `recv().await` on a two-worker tokio runtime.
//! It measures the process's CPU time (getrusage: user + system, every thread, the producers'
//! included, which are idle) over `SECONDS` (default 10), counts the process's threads, then
//! publishes one message to every segment and checks that every subscriber receives it, each
//! producer with one wake-up call.
//! Prints one JSON object.
//!
//! ```text
//! cargo run --release --features async --example async_idle -- [SUBSCRIBERS SEGMENTS SECONDS]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmcast::{AsyncSubscriber, Publisher, StartAt, Subscriber};

fn cpu_time() -> Duration {
    // SAFETY: `usage` is a valid rusage to write; RUSAGE_SELF covers every thread.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<nix::libc::rusage>();
        nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: nix::libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(std::env::args()
            .nth(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (subscribers, segments, seconds) = (arg(1, 1000)?, arg(2, 100)?, arg(3, 10)?);
    if segments == 0 || subscribers < segments {
        return Err("need at least one subscriber per segment".into());
    }
    let names: Vec<String> = (0..segments)
        .map(|i| format!("/shmcast-async-idle-{}-{i}", std::process::id()))
        .collect();
    let mut publishers = names
        .iter()
        .map(|name| Publisher::options().capacity(4096).create(name))
        .collect::<Result<Vec<_>, _>>()?;
    let threads_before = threads();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let received = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let name = &names[(i % segments) as usize];
        let mut sub = AsyncSubscriber::new(Subscriber::open(name, StartAt::Next)?)?;
        let received = received.clone();
        tasks.push(runtime.spawn(async move {
            let mut buf = Vec::new();
            let seq = sub.recv(&mut buf).await;
            received.fetch_add(1, Ordering::SeqCst);
            seq
        }));
    }
    // Let every task park, then measure.
    std::thread::sleep(Duration::from_secs(1));
    let (hub_threads, hub_segments) = AsyncSubscriber::hub_census();
    let threads_idle = threads();
    let (cpu0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let idle_received = received.load(Ordering::SeqCst);
    // Wake them: one message per segment.
    let published = Instant::now();
    for p in &mut publishers {
        p.publish(b"wake")?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::SeqCst) < subscribers as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let all_woken_after = published.elapsed();
    let mut ok = 0;
    for task in tasks {
        if runtime.block_on(task)? == Ok(1) {
            ok += 1;
        }
    }
    let wakeups: u64 = publishers.iter().map(Publisher::wakeups).sum();
    println!(
        "{{\"subscribers\":{subscribers},\"segments\":{segments},\"seconds\":{:.3},\"cpu_ms\":{:.3},\"core_percent\":{:.4},\"threads_before_runtime\":{threads_before},\"threads_idle\":{threads_idle},\"hub_threads\":{hub_threads},\"hub_segments\":{hub_segments},\"received_while_idle\":{idle_received},\"received_after_publish\":{ok},\"all_woken_ms\":{:.3},\"producer_wake_calls\":{wakeups}}}",
        wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        all_woken_after.as_secs_f64() * 1e3,
    );
    if ok != subscribers || idle_received != 0 {
        return Err(format!("{ok} of {subscribers} subscribers received the message").into());
    }
    // Each producer found its subscribers parked and made one wake-up call (none: they were
    // not registered as parked, and only the hub's lost-wake-up check woke them).
    if wakeups != segments {
        return Err(format!("{wakeups} wake-up calls for {segments} segments").into());
    }
    Ok(())
}
