//! One-way latency by timestamps, over any link: the harness sends messages carrying in their
//! first word the `CLOCK_REALTIME` nanoseconds read just before the send; the reader records,
//! per message, its own `CLOCK_REALTIME` at receipt minus that stamp. Both read the same
//! system clock. A message stamped 0 is a warm-up message: checked, counted, not measured.
//!
//! [`paced`] sends one message every [`PACED_INTERVAL`] to a busy reader; [`wake`] sends each
//! after a pause long enough for the reader to have gone to sleep.

use std::time::{Duration, Instant};

use crate::link::{self, AnyLink, Got, Link, Setup};
use crate::payload::{checksum, counter};
use crate::process::Reader;
use crate::spec::{PeerReport, PeerSpec, Role, Transport};
use crate::sys::{self, Ctx, Gaps};
use crate::Result;

/// Capacity of the paced run's ring: small, because that run has no warm-up and each 4 KiB
/// page of a new segment costs each process one page fault the first time it is touched.
/// 256 KiB still holds 60 messages of 4 KiB, 600 µs at the pacing below.
pub const PACED_CAPACITY: u64 = 256 << 10;
/// Interval between paced messages: long enough that a reader is never behind, so each sample
/// is the latency of one message, not of a queue.
pub const PACED_INTERVAL: Duration = Duration::from_micros(10);
/// Pause between warm-up messages of a wake-up run.
const WAKE_WARMUP_INTERVAL: Duration = Duration::from_micros(50);
/// Pause between the warm-up and the first measured message of a wake-up run.
const WAKE_SETTLE: Duration = Duration::from_millis(5);
/// Warm-up messages of a socket or pipe wake-up run.
pub const FD_WAKE_WARMUP: u64 = 100;

/// Raw one-way latencies of one run, and what the run around them saw.
pub struct Samples {
    /// Receive time minus send time, ns, one per measured message received.
    pub latencies: Vec<u64>,
    /// Measured messages the reader missed.
    pub lagged: u64,
    /// `FUTEX_WAKE` calls the producer made for the measured messages (shm only).
    pub wakeups: Option<u64>,
}

/// `count` messages, one every [`PACED_INTERVAL`], no warm-up.
pub fn paced(
    ctx: &Ctx,
    reader: Reader<'_>,
    setup: &Setup,
    size: usize,
    count: usize,
) -> Result<Samples> {
    let setup = Setup {
        capacity: PACED_CAPACITY,
        ..*setup
    };
    run(
        ctx,
        reader,
        &setup,
        size,
        0,
        count,
        Pace::Every(PACED_INTERVAL),
    )
}

/// Wake-up latency of an idle reader: after a warm-up (for shm two laps of a small ring, else
/// [`FD_WAKE_WARMUP`] messages), `samples` messages, each after a pause taken from `gaps`.
pub fn wake(
    ctx: &Ctx,
    reader: Reader<'_>,
    setup: &Setup,
    size: usize,
    samples: usize,
    gaps: &mut Gaps,
) -> Result<Samples> {
    // One page when `size` fits (so the reader's first-touch page faults end with the
    // warm-up), else the smallest ring that holds `size`.
    let capacity = ((size as u64 + 16) * 4)
        .next_power_of_two()
        .max(shmcast::layout::MIN_CAPACITY);
    let warmup = if setup.transport == Transport::Shm {
        2 * (capacity / shmcast::layout::record_span(size as u64)).max(1)
    } else {
        FD_WAKE_WARMUP
    };
    let setup = Setup { capacity, ..*setup };
    run(
        ctx,
        reader,
        &setup,
        size,
        warmup,
        samples,
        Pace::After(gaps),
    )
}

/// When each measured message is sent.
enum Pace<'g> {
    /// On a fixed schedule (busy-waiting to each due time: a sleep would oversleep by more
    /// than the interval).
    Every(Duration),
    /// After a sleep taken from the gaps.
    After(&'g mut Gaps),
}

/// The body of both: start the reader, send `warmup` messages stamped 0 (each followed by
/// [`WAKE_WARMUP_INTERVAL`], then [`WAKE_SETTLE`]), then `samples` stamped ones as `pace`
/// says, and collect the reader's samples.
fn run(
    ctx: &Ctx,
    reader: Reader<'_>,
    setup: &Setup,
    size: usize,
    warmup: u64,
    samples: usize,
    mut pace: Pace<'_>,
) -> Result<Samples> {
    let count = warmup + samples as u64;
    let who = reader.who(setup.transport, setup.lossless, "timestamp reader");
    let (mut link, peer) = link::connect(
        ctx,
        setup,
        reader.program(),
        &who,
        Role::Timestamp,
        size,
        count,
    )?;
    let mut send = || -> Result<Option<u64>> {
        for _ in 0..warmup {
            link.send(0)?;
            std::thread::sleep(WAKE_WARMUP_INTERVAL);
        }
        if warmup > 0 {
            std::thread::sleep(WAKE_SETTLE);
        }
        let wakeups_before = link.wakeups();
        let mut due = Instant::now();
        for _ in 0..samples {
            match &mut pace {
                Pace::Every(interval) => {
                    while Instant::now() < due {
                        std::hint::spin_loop();
                    }
                    due += *interval;
                }
                Pace::After(gaps) => {
                    std::thread::sleep(gaps.next().unwrap_or_default());
                    if sys::interrupted() {
                        return Err("interrupted".into());
                    }
                }
            }
            link.send(sys::realtime_ns())?;
        }
        Ok(link.wakeups().zip(wakeups_before).map(|(a, b)| a - b))
    };
    let wakeups = match send() {
        Ok(w) => w,
        Err(e) => return Err(peer.explain(e)),
    };
    let report = peer.report()?;
    report.check_bad(&who)?;
    report.accounted(&who, count)?;
    let latencies = PeerReport::need(&who, "latencies_ns", report.latencies_ns)?;
    Ok(Samples {
        // Measured messages without a sample were lost to a lap (warm-up losses do not count).
        lagged: (samples as u64).saturating_sub(latencies.len() as u64),
        latencies,
        wakeups,
    })
}

/// Peer side: receive `count` messages (or account for them as lost), recording now minus the
/// stamp of each one stamped with a time.
pub fn peer(spec: &PeerSpec, link: &mut AnyLink) -> Result<PeerReport> {
    let mut latencies = Vec::with_capacity(usize::try_from(spec.count).unwrap_or(0));
    let (mut received, mut lagged, mut bad) = (0u64, 0u64, 0u64);
    while received + lagged < spec.count {
        let (now, len, sent, sum) = match link.recv()? {
            Got::Msg(_, payload) => {
                let now = sys::realtime_ns();
                (now, payload.len(), counter(payload), checksum(payload))
            }
            Got::Lost(missed) => {
                lagged += missed;
                continue;
            }
        };
        if sent != 0 {
            latencies.push(now.saturating_sub(sent));
        }
        bad += u64::from(len != spec.size || sum != link.expected(sent));
        received += 1;
    }
    Ok(PeerReport {
        received: Some(received),
        lagged: Some(lagged),
        bad: Some(bad),
        latencies_ns: Some(latencies),
        ..PeerReport::default()
    })
}
