//! How a subscriber waits for the next message, and how the producer wakes it: the idle
//! strategies and the futex protocol of `docs/LAYOUT.md`, "Waiting and waking".
//!
//! Where the kernel allows it, a producer registers for `membarrier(2)` and publishes without
//! a memory fence; a subscriber about to sleep then calls `membarrier` instead (a few
//! microseconds per sleep rather than a fence per publish). A producer created with
//! [`PublisherOptions::membarrier(false)`](crate::PublisherOptions::membarrier), or in a process
//! where the environment variable `SHMCAST_NO_MEMBARRIER` is set, fences on every publish
//! instead.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff as SpinBackoff;

use crate::error::RecvError;
use crate::sync::{
    fence, futex_wait, futex_wake_all, membarrier_global, spin_hint, AtomicU32, Ordering,
};
use std::sync::atomic::compiler_fence;

/// The longest single sleep of a [`WaitStrategy::Backoff`] subscriber, and the longest a
/// subscriber that cannot park (no write access to the segment) waits before polling again.
pub const MAX_SLEEP: Duration = Duration::from_millis(1);
const FIRST_SLEEP: Duration = Duration::from_micros(20);
/// How often an idle blocking read checks that the producer is still alive (and the segment
/// intact), so it returns [`RecvError::ProducerGone`] within about this long of its death.
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);

/// What a subscriber does while no message is available, in the blocking calls
/// ([`Subscriber::recv`](crate::Subscriber::recv) and friends). Set it with
/// [`Subscriber::set_wait_strategy`](crate::Subscriber::set_wait_strategy).
///
/// | strategy | wake-up latency | CPU while idle |
/// |---|---|---|
/// | `Spin` | lowest (a cache miss) | a whole core |
/// | `Yield` | low; depends on what else runs | a whole core, given away on demand |
/// | `Backoff` | up to [`MAX_SLEEP`] | a few wake-ups per millisecond |
/// | `Block` (default) | a futex wake-up: like a blocking socket read (p50 75 µs on a 2-vCPU VM) | none (10 wake-ups a second to check the producer is alive) |
///
/// `Block` needs write access to the segment file to register as parked. A subscriber that only
/// has read access ([`Subscriber::can_park`](crate::Subscriber::can_park) is `false`) waits on
/// the futex with a timeout instead, growing from 20 µs to [`MAX_SLEEP`]: it sees a new message
/// within about 1 ms, sooner when the producer is waking other, parked subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Poll without pause. For a consumer that owns a core.
    Spin,
    /// Spin briefly, then call `sched_yield` between polls.
    Yield,
    /// Spin briefly, yield, then sleep between polls, 20 µs doubling up to [`MAX_SLEEP`].
    Backoff,
    /// Spin briefly, then sleep in the kernel until the producer publishes.
    #[default]
    Block,
}

impl WaitStrategy {
    /// The name used by [`FromStr`], [`Display`](fmt::Display) and the `--wait` flags.
    pub fn name(self) -> &'static str {
        match self {
            WaitStrategy::Spin => "spin",
            WaitStrategy::Yield => "yield",
            WaitStrategy::Backoff => "backoff",
            WaitStrategy::Block => "block",
        }
    }
}

impl fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`WaitStrategy`] from an unknown name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown wait strategy {0:?}: expected spin, yield, backoff or block")]
pub struct ParseWaitStrategyError(String);

impl FromStr for WaitStrategy {
    type Err = ParseWaitStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spin" => Ok(WaitStrategy::Spin),
            "yield" => Ok(WaitStrategy::Yield),
            "backoff" => Ok(WaitStrategy::Backoff),
            "block" => Ok(WaitStrategy::Block),
            other => Err(ParseWaitStrategyError(other.to_owned())),
        }
    }
}

/// How the producer orders its publishes before its look at `parked` (the header's
/// `wake_barrier`, docs/LAYOUT.md "Waiting and waking").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// The producer fences after every publish; a parking reader fences too.
    Fence,
    /// The producer only stops the compiler from reordering; a parking reader calls
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which runs the fence on the producer's CPU
    /// for it (an asymmetric fence: a few µs per park instead of a fence per publish).
    Membarrier,
}

/// The two wake-up words of the subscriber area, and how to order accesses to them.
#[derive(Clone, Copy)]
pub(crate) struct WakeWords<'a> {
    /// The futex word; readable through any mapping.
    wake_seq: &'a AtomicU32,
    /// `None` when this process cannot register as parked (no write access to the segment, or
    /// a barrier it cannot issue).
    parked: Option<&'a AtomicU32>,
    barrier: Barrier,
}

impl<'a> WakeWords<'a> {
    pub(crate) fn new(
        wake_seq: &'a AtomicU32,
        parked: Option<&'a AtomicU32>,
        barrier: Barrier,
    ) -> Self {
        WakeWords {
            wake_seq,
            parked,
            barrier,
        }
    }

    /// Whether a waiter can register as parked (and so be woken by the producer).
    pub(crate) fn can_park(&self) -> bool {
        self.parked.is_some()
    }

    /// Publish step 9: after a publish, wake parked subscribers if there are any. Returns
    /// whether it made the `FUTEX_WAKE` call. Only the producer calls this.
    #[inline]
    pub(crate) fn wake_parked(&self) -> bool {
        let Some(parked) = self.parked else {
            return false;
        };
        // Store (the commit, `latest`), full fence, load `parked`: the producer half of the
        // Dekker pair with `park` below. With `Membarrier` the parking reader's membarrier call
        // puts that fence on this CPU, so only the compiler must keep the order.
        match self.barrier {
            Barrier::Fence => fence(Ordering::SeqCst),
            Barrier::Membarrier => compiler_fence(Ordering::SeqCst),
        }
        if parked.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.wake_now(parked)
    }

    #[cold]
    fn wake_now(&self, parked: &AtomicU32) -> bool {
        parked.swap(0, Ordering::Relaxed);
        self.wake_seq.fetch_add(1, Ordering::Release);
        futex_wake_all(self.wake_seq);
        true
    }
}

/// Runs `attempt` until it returns something other than [`RecvError::Empty`], waiting between
/// attempts as `strategy` says, or until `deadline` ([`RecvError::Timeout`]). Every
/// [`LIVENESS_INTERVAL`] of waiting it calls `gone`; if that reports an error (the producer died),
/// one last attempt delivers whatever was published before, else that error is returned.
///
/// `words` is only called if the first attempt finds nothing: a read that finds its message
/// waiting is the common case of a busy stream, and should cost no more than a `try_` read
/// (docs/BENCHMARKS.md: one consumer at 64 B went from 19 to 26 M msg/s).
#[inline]
pub(crate) fn wait_for<'w, T>(
    strategy: WaitStrategy,
    words: impl FnOnce() -> WakeWords<'w>,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Result<T, RecvError>,
    gone: impl FnMut() -> Option<RecvError>,
) -> Result<T, RecvError> {
    match attempt() {
        Err(RecvError::Empty) => wait_after_empty(strategy, words(), deadline, attempt, gone),
        found => found,
    }
}

/// [`wait_for`] once a first attempt found nothing (out of line: it is the slow path).
#[inline(never)]
fn wait_after_empty<T>(
    strategy: WaitStrategy,
    words: WakeWords<'_>,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Result<T, RecvError>,
    mut gone: impl FnMut() -> Option<RecvError>,
) -> Result<T, RecvError> {
    let spin = SpinBackoff::new();
    let mut nap = FIRST_SLEEP;
    let mut polls: u32 = 0;
    let mut next_check: Option<Instant> = None;
    let busy = matches!(strategy, WaitStrategy::Spin | WaitStrategy::Yield);
    // Each turn waits, then polls: the caller's attempt just found nothing.
    loop {
        // Reading the clock costs about as much as a poll: busy strategies look every 64th.
        polls = polls.wrapping_add(1);
        let mut remaining = None;
        if !busy || polls % 64 == 0 {
            let now = Instant::now();
            if let Some(d) = deadline {
                match d.checked_duration_since(now) {
                    Some(r) if !r.is_zero() => remaining = Some(r),
                    _ => return Err(RecvError::Timeout),
                }
            }
            let due = *next_check.get_or_insert(now + LIVENESS_INTERVAL);
            if now >= due {
                if let Some(error) = gone() {
                    return match attempt() {
                        Err(RecvError::Empty) => Err(error),
                        other => other,
                    };
                }
                next_check = Some(now + LIVENESS_INTERVAL);
            }
        }
        // No sleep outlasts the deadline, and a park lasts at most one liveness interval (so a
        // dead producer is noticed about one interval after its death).
        let bounded = |nap: Duration| remaining.map_or(nap, |r| r.min(nap));
        match strategy {
            WaitStrategy::Spin => spin_hint(),
            WaitStrategy::Yield if !spin.is_completed() => spin.snooze(),
            WaitStrategy::Yield => std::thread::yield_now(),
            // Loom explores every poll, so its models park straight away.
            WaitStrategy::Backoff | WaitStrategy::Block if !cfg!(loom) && !spin.is_completed() => {
                spin.snooze()
            }
            WaitStrategy::Backoff => {
                std::thread::sleep(bounded(nap));
                nap = (nap * 2).min(MAX_SLEEP);
            }
            WaitStrategy::Block => match words.parked {
                Some(parked) => {
                    let timeout = bounded(LIVENESS_INTERVAL);
                    if let Some(found) = park(words, parked, Some(timeout), &mut attempt) {
                        return found;
                    }
                }
                None => {
                    // Cannot register: wait on the futex anyway (woken early when others are
                    // parked), but never longer than `nap`.
                    let v = words.wake_seq.load(Ordering::Acquire);
                    futex_wait(words.wake_seq, v, Some(bounded(nap)));
                    nap = (nap * 2).min(MAX_SLEEP);
                }
            },
        }
        match attempt() {
            Err(RecvError::Empty) => {}
            other => return other,
        }
    }
}

/// Reader steps 1–5 of "Waiting and waking": register as parked, retry, sleep. Returns the
/// retry's result if it found anything, `None` after the sleep.
fn park<T>(
    words: WakeWords<'_>,
    parked: &AtomicU32,
    timeout: Option<Duration>,
    attempt: &mut impl FnMut() -> Result<T, RecvError>,
) -> Option<Result<T, RecvError>> {
    let v = words.wake_seq.load(Ordering::Acquire);
    parked.store(1, Ordering::Relaxed);
    // Store `parked`, full fence, load the commit word (in `attempt`): the reader half of the
    // Dekker pair with `WakeWords::wake_parked`.
    fence(Ordering::SeqCst);
    let mut timeout = timeout;
    if words.barrier == Barrier::Membarrier && !membarrier_global() {
        // The producer may not see `parked` in time: sleep no longer than a backoff would.
        timeout = Some(timeout.map_or(MAX_SLEEP, |t| t.min(MAX_SLEEP)));
    }
    match attempt() {
        Err(RecvError::Empty) => {}
        other => return Some(other),
    }
    futex_wait(words.wake_seq, v, timeout);
    None
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            WaitStrategy::Spin,
            WaitStrategy::Yield,
            WaitStrategy::Backoff,
            WaitStrategy::Block,
        ] {
            assert_eq!(s.to_string().parse::<WaitStrategy>(), Ok(s));
        }
        let err = "busy".parse::<WaitStrategy>().unwrap_err();
        assert!(err.to_string().contains("\"busy\""), "{err}");
        assert_eq!(WaitStrategy::default(), WaitStrategy::Block);
    }

    #[test]
    fn wake_is_skipped_while_nobody_is_parked() {
        let (seq, parked) = (AtomicU32::new(0), AtomicU32::new(0));
        let words = WakeWords::new(&seq, Some(&parked), Barrier::Fence);
        assert!(!words.wake_parked());
        parked.store(1, Ordering::Relaxed);
        assert!(words.wake_parked());
        assert_eq!(
            parked.load(Ordering::Relaxed),
            0,
            "the wake clears `parked`"
        );
        assert_eq!(seq.load(Ordering::Relaxed), 1, "and bumps the futex word");
        assert!(!words.wake_parked());
    }

    #[test]
    fn a_dead_producer_ends_the_wait_after_what_it_published() {
        use std::cell::Cell;
        let (seq, parked) = (AtomicU32::new(0), AtomicU32::new(0));
        let words = WakeWords::new(&seq, Some(&parked), Barrier::Fence);
        let dead = || Some(RecvError::ProducerGone { replaced: false });
        for s in [WaitStrategy::Spin, WaitStrategy::Block] {
            let start = Instant::now();
            // One message becomes visible only once the producer is found dead (it published
            // just before dying): it must be delivered, not lost.
            let found_dead = Cell::new(false);
            let attempt = || match found_dead.get() {
                true => Ok(()),
                false => Err(RecvError::Empty),
            };
            let gone = || {
                found_dead.set(true);
                dead()
            };
            assert_eq!(wait_for(s, || words, None, attempt, gone), Ok(()), "{s}");
            let empty = || Err::<(), _>(RecvError::Empty);
            assert_eq!(
                wait_for(s, || words, None, empty, dead),
                dead().map_or(Ok(()), Err),
                "{s}"
            );
            let took = start.elapsed();
            assert!(
                took >= 2 * LIVENESS_INTERVAL,
                "{s}: checked too early ({took:?})"
            );
            assert!(
                took < 20 * LIVENESS_INTERVAL,
                "{s}: checked too late ({took:?})"
            );
        }
    }

    #[test]
    fn timeouts_are_honoured_by_every_strategy() {
        let (seq, parked) = (AtomicU32::new(0), AtomicU32::new(0));
        for parked in [Some(&parked), None] {
            for s in [
                WaitStrategy::Spin,
                WaitStrategy::Yield,
                WaitStrategy::Backoff,
                WaitStrategy::Block,
            ] {
                let start = Instant::now();
                let deadline = Some(start + Duration::from_millis(30));
                let r = wait_for(
                    s,
                    || WakeWords::new(&seq, parked, Barrier::Fence),
                    deadline,
                    || Err::<(), _>(RecvError::Empty),
                    || None,
                );
                assert_eq!(r, Err(RecvError::Timeout), "{s}");
                assert!(start.elapsed() >= Duration::from_millis(30), "{s}");
            }
        }
    }
}
