//! The hardware floor: one cache line bounced between the two CPUs.
//!
//! Two threads of the harness, pinned to the same two CPUs as the harness and its peers, share
//! one `AtomicU64` alone on its own 128-byte block (two 64-byte lines, so the adjacent-line
//! prefetcher couples it with nothing). The ping side stores `2k+1` and spins until it reads
//! `2k+2`; the pong side spins until it reads `2k+1` and stores `2k+2`. One round trip is two
//! transfers of the line, so half of it is the cost of one cache-line hand-off from one core to
//! the other: the least any shared-memory transport can take to deliver anything. Each sample
//! is timed like the transports' (one clock read per round trip) and halved when reported.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::sys::{self, Ctx, Spinner};
use crate::Result;

/// One word alone on a 128-byte block.
#[repr(align(128))]
struct Line(AtomicU64);

/// Runs `warmup + samples` round trips between this thread and one on the peer CPU of `ctx`,
/// and returns the last `samples` round-trip times (ns).
pub fn run(ctx: &Ctx, samples: usize, warmup: usize) -> Result<Vec<u64>> {
    bounce(
        ctx.peer_cpu(0),
        samples,
        warmup,
        ctx.deadline(),
        ctx.yield_idle,
    )
}

/// [`run`] without a harness context (the placement bench): the calling thread pings, a
/// scoped thread pinned to `peer_cpu` (if given) answers, until `deadline`.
pub fn bounce(
    peer_cpu: Option<usize>,
    samples: usize,
    warmup: usize,
    deadline: Instant,
    yield_idle: bool,
) -> Result<Vec<u64>> {
    let line = Line(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let total = (warmup + samples) as u64;
    std::thread::scope(|scope| {
        // Errors cross the thread boundary as text (a boxed error is not `Send`).
        let pong = scope.spawn(|| -> std::result::Result<(), String> {
            let result = pong(&line, &stop, total, peer_cpu, deadline, yield_idle);
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            result.map_err(|e| e.to_string())
        });
        let pinged = ping(&line, &stop, total, warmup, samples, deadline, yield_idle);
        if pinged.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let ponged = pong
            .join()
            .unwrap_or_else(|_| Err("the floor's pong thread panicked".to_owned()));
        ponged?;
        pinged
    })
}

fn pong(
    line: &Line,
    stop: &AtomicBool,
    total: u64,
    cpu: Option<usize>,
    deadline: Instant,
    yield_idle: bool,
) -> Result<()> {
    if let Some(cpu) = cpu {
        sys::pin_current_thread(cpu)?;
    }
    let mut spin = Spinner::new(deadline, yield_idle, "the floor's ping thread");
    for k in 0..total {
        let want = 2 * k + 1;
        while line.0.load(Ordering::Acquire) != want {
            spin.idle()?;
            if spin.ticked() && stop.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
        line.0.store(want + 1, Ordering::Release);
    }
    Ok(())
}

fn ping(
    line: &Line,
    stop: &AtomicBool,
    total: u64,
    warmup: usize,
    samples: usize,
    deadline: Instant,
    yield_idle: bool,
) -> Result<Vec<u64>> {
    let mut rtts = Vec::with_capacity(samples);
    let mut spin = Spinner::new(deadline, yield_idle, "the floor's pong thread");
    let warmup = warmup as u64;
    let mut prev = Instant::now();
    for k in 0..total {
        line.0.store(2 * k + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * k + 2 {
            spin.idle()?;
            if spin.ticked() && stop.load(Ordering::Relaxed) {
                return Err("the floor's pong thread failed".into());
            }
        }
        let now = Instant::now();
        if k >= warmup {
            rtts.push(sys::nanos(now - prev));
        }
        prev = now;
    }
    Ok(rtts)
}
