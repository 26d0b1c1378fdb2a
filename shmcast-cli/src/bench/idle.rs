//! The CPU an idle subscriber costs: a Rust subscriber process waits in
//! `Subscriber::recv_into_deadline` with one [`WaitStrategy`] on a segment where nothing is
//! published, for a fixed interval, and reports the CPU time it used meanwhile.
//!
//! The subscriber measures itself: `getrusage(RUSAGE_SELF)` (user + system time, and context
//! switches) just before the call and just after it returned `Timeout`, and the wall time of the
//! call on `CLOCK_MONOTONIC`. So process start-up and segment opening are not counted, and the
//! figure has microsecond resolution (the kernel's own accounting of the process's run time),
//! unlike the 10 ms ticks of `/proc/PID/stat`.

use std::time::{Duration, Instant};

use nix::libc;
use serde_json::{json, Value};
use shmcast::{Publisher, RecvError, StartAt, Subscriber, WaitStrategy};

use super::peer::{say, Peer, PeerArgs, Role};
use super::report::IdleRow;
use super::sys::{self, Ctx};
use super::Result;

/// Every strategy, in the order they are reported.
pub const STRATEGIES: [WaitStrategy; 4] = [
    WaitStrategy::Spin,
    WaitStrategy::Yield,
    WaitStrategy::Backoff,
    WaitStrategy::Block,
];

/// Runs one idle subscriber with `wait` on the peer CPU for `interval` and returns its row.
pub fn measure(ctx: &Ctx, wait: WaitStrategy, interval: Duration) -> Result<IdleRow> {
    let name = sys::segment_name("idle");
    // A segment with a producer that publishes nothing: the subscriber can only wait.
    let _publisher = Publisher::options()
        .capacity(shmcast::layout::MIN_CAPACITY)
        .create(&name)?;
    let interval_ms = interval.as_millis().max(1);
    let label = format!("the idle subscriber ({wait})");
    let mut peer = Peer::bench_peer(
        ctx,
        label.clone(),
        ctx.peer_cpu(0),
        Role::ShmIdle,
        &[
            "--read".into(),
            name,
            "--wait".into(),
            wait.name().to_owned(),
            "--interval-ms".into(),
            interval_ms.to_string(),
        ],
        &[],
    )?;
    peer.expect_ready()?;
    // The harness sleeps in the read of the peer's result meanwhile.
    let v = peer.finish_json()?;
    let get = |key: &str| -> Result<u64> {
        v.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{label} printed no {key:?}: {v}").into())
    };
    let cpu_ns = get("cpu_ns")?;
    let interval_ns = get("interval_ns")?.max(1);
    Ok(IdleRow {
        wait: wait.name(),
        cpu_ns,
        interval_ns,
        cpu_percent: 100.0 * cpu_ns as f64 / interval_ns as f64,
        context_switches: get("context_switches")?,
        can_park: v.get("can_park").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// CPU time (user + system) and context switches (voluntary + involuntary) of this process.
fn usage() -> Result<(u64, u64)> {
    // SAFETY: `rusage` is plain old data (integers and `timeval`s), for which all zeroes is a
    // valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` that outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(format!("getrusage: {}", std::io::Error::last_os_error()).into());
    }
    let us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    let cpu_ns = (us(ru.ru_utime) + us(ru.ru_stime)) * 1000;
    let switches = (ru.ru_nvcsw + ru.ru_nivcsw) as u64;
    Ok((cpu_ns, switches))
}

/// Peer side of [`measure`].
pub fn peer(args: &PeerArgs) -> Result<()> {
    let wait = args
        .wait
        .ok_or("bench-peer: --wait is required for shm-idle")?;
    let mut sub = Subscriber::open(args.read_name()?, StartAt::Next)?;
    sub.set_wait_strategy(wait);
    let mut buf = [0u8; 64];
    let interval = Duration::from_millis(args.interval_ms);
    say("ready")?;
    let (cpu0, switches0) = usage()?;
    let start = Instant::now();
    let result = sub.recv_into_deadline(&mut buf, start + interval);
    let elapsed = start.elapsed();
    let (cpu1, switches1) = usage()?;
    match result {
        Err(RecvError::Timeout) => {}
        Ok(r) => return Err(format!("message {} arrived on a silent segment", r.seq).into()),
        Err(e) => return Err(e.into()),
    }
    say(&json!({
        "cpu_ns": cpu1.saturating_sub(cpu0),
        "interval_ns": sys::nanos(elapsed),
        "context_switches": switches1.saturating_sub(switches0),
        "can_park": sub.can_park(),
    })
    .to_string())
}
