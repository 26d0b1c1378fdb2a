//! Wake-up latency of an idle reader in another process, 64 B messages one every 1.0–1.5 ms
//! (the reader is asleep when each arrives), receive time minus send time on CLOCK_REALTIME:
//! the blocking `Subscriber::recv_into` (`"wait":"block"`), an `AsyncSubscriber` awaited on a
//! current-thread tokio runtime (`"wait":"async"`), and a blocking Unix stream socket read, in
//! interleaved slices so that all three see the same moods of the machine. Prints one JSON row
//! per reader in the shape of `shmcast-bench --only wake`'s rows, then one line with the ratio
//! the issue-20 target is about (async p50 / block p50, and async p50 / UDS p50).
//!
//! ```text
//! cargo run --release --features async --example async_wake -- [SAMPLES]   # default 2000
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use shmcast::{AsyncSubscriber, Publisher, StartAt, Subscriber};

const SIZE: usize = 64;
const GAP_MIN: Duration = Duration::from_millis(1);
const GAP_MAX: Duration = Duration::from_micros(1500);
const KINDS: [&str; 3] = ["block", "async", "uds"];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn stamp(buf: &[u8]) -> u64 {
    u64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8]))
}

/// The reader process: reads `count` messages and prints their latencies on one line.
fn reader(kind: &str, name: &str, count: usize) -> Result<()> {
    let mut latencies = Vec::with_capacity(count);
    let ready = || -> Result<()> {
        println!("ready");
        std::io::stdout().flush()?;
        Ok(())
    };
    match kind {
        "uds" => {
            // The socket is this process's standard input.
            let mut input = std::io::stdin().lock();
            ready()?;
            let mut buf = [0u8; SIZE];
            for _ in 0..count {
                input.read_exact(&mut buf)?;
                latencies.push(realtime_ns().saturating_sub(stamp(&buf)));
            }
        }
        "block" => {
            let mut sub = Subscriber::open(name, StartAt::Next)?;
            ready()?;
            let mut buf = [0u8; SIZE];
            for _ in 0..count {
                sub.recv_into(&mut buf)?;
                latencies.push(realtime_ns().saturating_sub(stamp(&buf)));
            }
        }
        _ => {
            let mut sub = AsyncSubscriber::new(Subscriber::open(name, StartAt::Next)?)?;
            let runtime = tokio::runtime::Builder::new_current_thread().build()?;
            ready()?;
            runtime.block_on(async {
                let mut buf = Vec::with_capacity(SIZE);
                for _ in 0..count {
                    sub.recv(&mut buf).await?;
                    latencies.push(realtime_ns().saturating_sub(stamp(&buf)));
                }
                Ok::<_, shmcast::RecvError>(())
            })?;
        }
    }
    let line: Vec<String> = latencies.iter().map(u64::to_string).collect();
    println!("{}", line.join(" "));
    Ok(())
}

/// One slice: a reader process of `kind`, `count` messages with pauses from `state`.
/// Returns the latencies and the producer's FUTEX_WAKE calls.
fn slice(kind: &str, count: usize, state: &mut u64) -> Result<(Vec<u64>, u64)> {
    let name = format!("/shmcast-async-wake-{}-{kind}", std::process::id());
    let mut publisher = Publisher::options().capacity(1 << 16).create(&name)?;
    let (mut ours, theirs) = UnixStream::pair()?;
    let stdin = if kind == "uds" {
        Stdio::from(OwnedFd::from(theirs))
    } else {
        drop(theirs);
        Stdio::null()
    };
    let mut child = Command::new(std::env::current_exe()?)
        .args(["reader", kind, &name, &count.to_string()])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    if lines.next().transpose()?.as_deref() != Some("ready") {
        return Err(format!("the {kind} reader did not start").into());
    }
    let mut payload = [0u8; SIZE];
    let span = (GAP_MAX - GAP_MIN).as_nanos() as u64;
    for _ in 0..count {
        let gap = GAP_MIN + Duration::from_nanos(shmcast::pattern::splitmix64(state) % span);
        std::thread::sleep(gap);
        payload[..8].copy_from_slice(&realtime_ns().to_le_bytes());
        if kind == "uds" {
            ours.write_all(&payload)?;
        } else {
            publisher.publish(&payload)?;
        }
    }
    let line = lines
        .next()
        .transpose()?
        .ok_or("the reader printed no latencies")?;
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the {kind} reader failed: {status}").into());
    }
    let latencies = line
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<Vec<u64>, _>>()?;
    Ok((latencies, publisher.wakeups()))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("reader") {
        return reader(&args[2], &args[3], args[4].parse()?);
    }
    let samples: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let slices = if samples >= 1000 { 4 } else { 1 };
    let per = samples.div_ceil(slices);
    let mut all: Vec<(Vec<u64>, u64)> = KINDS.iter().map(|_| (Vec::new(), 0)).collect();
    for s in 0..slices {
        let n = per.min(samples - s * per);
        for (kind, total) in KINDS.iter().zip(&mut all) {
            // The same pauses for each reader of a slice.
            let mut state = s as u64;
            let (latencies, wakeups) = slice(kind, n, &mut state)?;
            total.0.extend(latencies);
            total.1 += wakeups;
        }
    }
    let mut p50 = Vec::new();
    for (kind, (mut latencies, wakeups)) in KINDS.iter().zip(all) {
        latencies.sort_unstable();
        let p = |q| percentile(&latencies, q);
        p50.push(p(0.5));
        let uds = *kind == "uds";
        println!(
            "{{\"transport\":\"{}\",\"metric\":\"wake_latency\",\"size\":{SIZE},\"method\":\"timestamp\",{}\"wait\":\"{}\",\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"samples\":{},\"gap_min_ns\":{},\"gap_max_ns\":{}{}}}",
            if uds { "uds-stream" } else { "shm" },
            if uds { "" } else { "\"reader\":\"rust\"," },
            if uds { "block" } else { kind },
            p(0.5),
            p(0.99),
            p(0.999),
            latencies.last().copied().unwrap_or(0),
            latencies.len(),
            GAP_MIN.as_nanos(),
            GAP_MAX.as_nanos(),
            if uds { String::new() } else { format!(",\"wakeups\":{wakeups}") },
        );
    }
    println!(
        "async p50 / block p50 = {:.3} (target <= 1.2); async p50 / uds p50 = {:.3} (target <= 1)",
        p50[1] as f64 / p50[0].max(1) as f64,
        p50[1] as f64 / p50[2].max(1) as f64,
    );
    Ok(())
}
