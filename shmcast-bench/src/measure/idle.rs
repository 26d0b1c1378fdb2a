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
use shmcast::{Publisher, RecvError, StartAt, Subscriber, WaitStrategy};

use crate::process::{Peer, Program};
use crate::report::IdleRow;
use crate::spec::{PeerReport, PeerSpec, Role, Transport};
use crate::sys::{self, Ctx};
use crate::Result;

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
    let mut spec = PeerSpec::new(Role::Idle, Transport::Shm, 64, 0);
    spec.link.read = Some(name);
    spec.link.wait = Some(wait);
    spec.interval_ms = Some(u64::try_from(interval.as_millis().max(1)).unwrap_or(u64::MAX));
    let who = format!("the idle subscriber ({wait})");
    let peer = Peer::start(ctx, &who, Program::Harness, spec, ctx.peer_cpu(0), &[])?;
    // The harness sleeps in the read of the peer's report meanwhile.
    let report = peer.report()?;
    let cpu_ns = PeerReport::need(&who, "cpu_ns", report.cpu_ns)?;
    let interval_ns = PeerReport::need(&who, "interval_ns", report.interval_ns)?.max(1);
    Ok(IdleRow {
        transport: "shm",
        metric: "idle_cpu",
        reader: "rust",
        wait: wait.name(),
        cpu_percent: 100.0 * cpu_ns as f64 / interval_ns as f64,
        cpu_ns,
        interval_ns,
        context_switches: PeerReport::need(&who, "context_switches", report.context_switches)?,
        can_park: PeerReport::need(&who, "can_park", report.can_park)?,
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
pub fn peer(spec: &PeerSpec) -> Result<PeerReport> {
    let wait = spec
        .link
        .wait
        .ok_or("peer: link.wait is required for role idle")?;
    let mut sub = Subscriber::open(spec.read_name()?, StartAt::Next)?;
    sub.set_wait_strategy(wait);
    let mut buf = [0u8; 64];
    let interval = Duration::from_millis(spec.interval_ms.unwrap_or(1000));
    super::say("ready")?;
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
    Ok(PeerReport {
        cpu_ns: Some(cpu1.saturating_sub(cpu0)),
        interval_ns: Some(sys::nanos(elapsed)),
        context_switches: Some(switches1.saturating_sub(switches0)),
        can_park: Some(sub.can_park()),
        ..PeerReport::default()
    })
}
