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
    fence, futex_wait, futex_wait_short, futex_wake, futex_wake_all, membarrier_global, spin_hint,
    AtomicU32, Ordering,
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
/// | `Block` (default) | a futex wake-up: like a blocking socket read (docs/BENCHMARKS.md, "Waiting") | none (10 wake-ups a second to check the producer is alive) |
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

/// `parked` bit of a reader that passes every wake-up it receives on ("Waiting and waking",
/// the relay): the producer need only wake one waiter.
pub(crate) const PARKED_RELAY: u32 = 2;

/// How many waiters a woken reader wakes in turn (the relay fan-out): a tree of depth
/// `log2(parked readers)`, with at most two spare wake-ups per relaying reader.
pub(crate) const RELAY_FANOUT: u32 = 2;

/// The longest single futex wait of a parked reader while the producer has throttled its
/// wake-up calls (`wake_throttle ≠ 0`): a parked reader then notices a message within this long
/// (plus the kernel's timer slack) without being woken.
pub const THROTTLED_WAIT: Duration = Duration::from_millis(1);

/// Fruitless wake-up calls (`FUTEX_WAKE` found nobody asleep) within [`THROTTLE_PERIOD`] that
/// make the producer throttle its wake-ups.
const THROTTLE_AFTER: u32 = 64;
/// How long a throttle lasts, and the window in which fruitless wake-ups are counted.
const THROTTLE_PERIOD: Duration = THROTTLED_WAIT;
/// A throttled producer reads the clock every this many publishes to end the throttle (under
/// loom, on every publish, so that models reach the end of a throttle).
const THROTTLE_CHECK_EVERY: u32 = if cfg!(loom) { 1 } else { 8 };

/// The two wake-up words of the subscriber area, and how to order accesses to them.
#[derive(Clone, Copy)]
pub(crate) struct WakeWords<'a> {
    /// The futex word; readable through any mapping.
    wake_seq: &'a AtomicU32,
    /// `None` when this process cannot register as parked (no write access to the segment, or
    /// a barrier it cannot issue).
    parked: Option<&'a AtomicU32>,
    /// `wake_throttle`: non-zero while the producer makes no wake-up calls.
    throttle: &'a AtomicU32,
    barrier: Barrier,
    /// A [`Canceller`](crate::Canceller)'s word (private to this process; non-zero: cancelled).
    cancel: Option<&'a std::sync::atomic::AtomicU32>,
}

/// The producer's private side of waking: how many wake-up calls it made, and its throttle of
/// fruitless ones (docs/LAYOUT.md, "Waiting and waking", "Throttle").
#[derive(Debug)]
pub(crate) struct WakeState {
    /// `FUTEX_WAKE` calls made for parked readers.
    pub(crate) wakeups: u64,
    /// Times the producer throttled its wake-up calls.
    pub(crate) throttles: u64,
    /// Fruitless calls counted since `window_start`.
    fruitless: u32,
    window_start: u64,
    /// While throttled: when the throttle ends, and publishes since the last clock check.
    throttled_until: Option<u64>,
    since_check: u32,
    limit: u32,
    period: u64,
    clock: Clock,
}

impl Default for WakeState {
    fn default() -> Self {
        WakeState::new(THROTTLE_AFTER, THROTTLE_PERIOD)
    }
}

impl WakeState {
    /// A producer that throttles after `limit` fruitless wake-up calls within `period`, for
    /// `period` (`limit` 0: never).
    pub(crate) fn new(limit: u32, period: Duration) -> Self {
        WakeState {
            wakeups: 0,
            throttles: 0,
            fruitless: 0,
            window_start: 0,
            throttled_until: None,
            since_check: 0,
            limit,
            period: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX),
            clock: Clock::new(),
        }
    }

    /// Whether the producer is throttled now.
    #[cfg(test)]
    pub(crate) fn throttled(&self) -> bool {
        self.throttled_until.is_some()
    }
}

/// Monotonic nanoseconds for the throttle. Under loom, where real time would make runs
/// irreproducible, each reading advances by one nanosecond.
#[derive(Debug)]
struct Clock {
    #[cfg(not(loom))]
    base: Instant,
    #[cfg(loom)]
    ticks: u64,
}

impl Clock {
    fn new() -> Self {
        Clock {
            #[cfg(not(loom))]
            base: Instant::now(),
            #[cfg(loom)]
            ticks: 0,
        }
    }

    fn now(&mut self) -> u64 {
        #[cfg(not(loom))]
        return u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        #[cfg(loom)]
        {
            self.ticks += 1;
            self.ticks
        }
    }
}

impl<'a> WakeWords<'a> {
    pub(crate) fn new(
        wake_seq: &'a AtomicU32,
        parked: Option<&'a AtomicU32>,
        throttle: &'a AtomicU32,
        barrier: Barrier,
    ) -> Self {
        WakeWords {
            wake_seq,
            parked,
            throttle,
            barrier,
            cancel: None,
        }
    }

    /// The same words, with a cancel word a parked reader also sleeps on (non-zero: return
    /// [`RecvError::Cancelled`] instead of waiting).
    pub(crate) fn with_cancel(mut self, cancel: Option<&'a std::sync::atomic::AtomicU32>) -> Self {
        self.cancel = cancel;
        self
    }

    /// Whether a canceller has cancelled the reads.
    #[inline]
    fn cancelled(&self) -> bool {
        self.cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Acquire) != 0)
    }

    /// The futex word (`wake_seq`).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn wake_seq(&self) -> &'a AtomicU32 {
        self.wake_seq
    }

    /// `parked`, if this process can register as parked.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn parked(&self) -> Option<&'a AtomicU32> {
        self.parked
    }

    /// `wake_throttle`.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn throttle(&self) -> &'a AtomicU32 {
        self.throttle
    }

    /// The values of `wake_seq`, `parked` and `wake_throttle` (for display: `shmcast stat`).
    /// `parked` is loaded through this process's mapping of the subscriber area, which is
    /// read-only where it cannot park.
    #[cfg(not(loom))]
    pub(crate) fn values(&self) -> (u32, u32, u32) {
        let parked = match self.parked {
            Some(parked) => parked.load(Ordering::Relaxed),
            None => {
                let at = crate::layout::PARKED - crate::layout::WAKE_SEQ;
                // SAFETY: `wake_seq` is the first word of the subscriber area, which every
                // mapping of a segment maps whole (docs/LAYOUT.md: one 4 KiB page), so the word
                // `PARKED - WAKE_SEQ` bytes on is in bounds and 4-byte aligned for as long as
                // `wake_seq` lives. It is only loaded atomically (valid on read-only memory).
                let word = unsafe {
                    &*(self.wake_seq as *const AtomicU32)
                        .cast::<u8>()
                        .add(at)
                        .cast::<AtomicU32>()
                };
                word.load(Ordering::Relaxed)
            }
        };
        (
            self.wake_seq.load(Ordering::Relaxed),
            parked,
            self.throttle.load(Ordering::Relaxed),
        )
    }

    /// Whether a parking reader must call `membarrier` rather than rely on its own fence.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn needs_membarrier(&self) -> bool {
        self.barrier == Barrier::Membarrier
    }

    /// Whether a waiter can register as parked (and so be woken by the producer).
    pub(crate) fn can_park(&self) -> bool {
        self.parked.is_some()
    }

    /// Publish step 9 with a producer state of its own (tests and models that publish without
    /// a [`WakeState`]: nothing is counted, so nothing is throttled).
    #[cfg(test)]
    pub(crate) fn wake_parked(&self) -> bool {
        self.wake_parked_with(&mut WakeState::new(0, Duration::ZERO))
    }

    /// Publish step 9: after a publish, wake parked subscribers if there are any. Returns
    /// whether it made a `FUTEX_WAKE` call. Only the producer calls this.
    #[inline]
    pub(crate) fn wake_parked_with(&self, state: &mut WakeState) -> bool {
        let Some(parked) = self.parked else {
            return false;
        };
        if state.throttled_until.is_some() && !self.throttle_over(state) {
            return false;
        }
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
        self.wake_now(parked, state);
        true
    }

    /// While throttled: every few publishes, whether the throttle has ended (and if so, end
    /// it: `wake_throttle = 0`, before this publish's look at `parked`).
    #[cold]
    #[inline(never)]
    fn throttle_over(&self, state: &mut WakeState) -> bool {
        state.since_check += 1;
        if state.since_check < THROTTLE_CHECK_EVERY {
            return false;
        }
        state.since_check = 0;
        match state.throttled_until {
            Some(until) if state.clock.now() < until => false,
            _ => {
                self.throttle.store(0, Ordering::Relaxed);
                state.throttled_until = None;
                state.fruitless = 0;
                true
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_now(&self, parked: &AtomicU32, state: &mut WakeState) {
        let who = parked.swap(0, Ordering::Relaxed);
        self.wake_seq.fetch_add(1, Ordering::Release);
        // Only relaying readers parked: wake one, it wakes the others. Anything else (a reader
        // that does not relay stores 1) needs every waiter woken here.
        let n = if who == PARKED_RELAY { 1 } else { u32::MAX };
        let woken = futex_wake(self.wake_seq, n);
        state.wakeups += 1;
        if woken == 0 && state.limit > 0 {
            self.count_fruitless(state);
        }
    }

    /// A wake-up call found nobody asleep: count it, and throttle after too many.
    #[cold]
    fn count_fruitless(&self, state: &mut WakeState) {
        let now = state.clock.now();
        if state.fruitless == 0 || now.saturating_sub(state.window_start) > state.period {
            state.window_start = now;
            state.fruitless = 0;
        }
        state.fruitless += 1;
        if state.fruitless < state.limit {
            return;
        }
        // Throttle: announce it (release, through the increment), then wake every waiter, so
        // that a reader that parked without seeing the throttle is either woken now or finds
        // `wake_seq` changed when it tries to sleep. From now on readers bound their waits.
        self.throttle.store(1, Ordering::Relaxed);
        self.wake_seq.fetch_add(1, Ordering::Release);
        futex_wake_all(self.wake_seq);
        state.throttled_until = Some(now.saturating_add(state.period));
        state.since_check = 0;
        state.throttles += 1;
    }
}

/// The longest single park: [`LIVENESS_INTERVAL`]. Tests raise it for their own threads, so that
/// a reader that relied on its cap instead of a wake-up would hang and fail them.
fn park_cap() -> Duration {
    #[cfg(all(test, not(loom)))]
    if let Some(cap) = tests::PARK_CAP.with(|c| c.get()) {
        return cap;
    }
    LIVENESS_INTERVAL
}

/// Reader side of the relay: after any return from a wait on `wake_seq` with value `v`, a
/// reader that finds the word changed passes the wake-up on to [`RELAY_FANOUT`] more waiters,
/// before it reads (docs/LAYOUT.md, "Waiting and waking", reader step 7).
#[inline]
pub(crate) fn relay(wake_seq: &AtomicU32, v: u32) {
    if wake_seq.load(Ordering::Relaxed) != v {
        futex_wake(wake_seq, RELAY_FANOUT);
    }
}

/// Runs `attempt` until it returns something other than [`RecvError::Empty`], waiting between
/// attempts as `strategy` says, or until `deadline` ([`RecvError::Timeout`]). Every
/// [`LIVENESS_INTERVAL`] of waiting it calls `gone`; if that reports an error (the producer died),
/// one last attempt delivers whatever was published before, else that error is returned.
///
/// `words` is only called if the first attempt finds nothing: a read that finds its message
/// waiting is the common case of a busy stream, and should cost no more than a `try_` read
/// (building the words there cost a single consumer at 64 B a measurable share of its rate).
///
/// A cancellation ([`WakeWords::with_cancel`]) is looked at only after an attempt found
/// nothing, before each wait: it ends the wait with [`RecvError::Cancelled`].
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
        if words.cancelled() {
            return Err(RecvError::Cancelled);
        }
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
                    let timeout = bounded(park_cap());
                    if let Some(found) = park(words, parked, Some(timeout), &mut attempt) {
                        return found;
                    }
                }
                None => {
                    // Cannot register: wait on the futex anyway (woken early when others are
                    // parked), but never longer than `nap`.
                    let v = words.wake_seq.load(Ordering::Acquire);
                    sleep(words, v, Some(bounded(nap)), true);
                    relay(words.wake_seq, v);
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

/// Reader steps 1–7 of "Waiting and waking": register as parked, retry, sleep, relay. Returns
/// the retry's result if it found anything, `None` after the sleep.
fn park<T>(
    words: WakeWords<'_>,
    parked: &AtomicU32,
    timeout: Option<Duration>,
    attempt: &mut impl FnMut() -> Result<T, RecvError>,
) -> Option<Result<T, RecvError>> {
    let v = words.wake_seq.load(Ordering::Acquire);
    parked.fetch_or(PARKED_RELAY, Ordering::Relaxed);
    // Store `parked`, full fence, load the commit word (in `attempt`): the reader half of the
    // Dekker pair with `WakeWords::wake_parked_with`.
    fence(Ordering::SeqCst);
    let mut short = false;
    if words.barrier == Barrier::Membarrier && !membarrier_global() {
        // The producer may not see `parked` in time: sleep no longer than a backoff would.
        short = true;
    }
    match attempt() {
        Err(RecvError::Empty) => {}
        other => return Some(other),
    }
    // Loaded after `v` (acquire): a `v` that includes the producer's throttle announcement
    // sees the throttle.
    if words.throttle.load(Ordering::Relaxed) != 0 {
        short = true;
    }
    if short {
        let cap = timeout.map_or(THROTTLED_WAIT, |t| t.min(THROTTLED_WAIT));
        sleep(words, v, Some(cap), true);
    } else {
        sleep(words, v, timeout, false);
    }
    relay(words.wake_seq, v);
    None
}

/// Reader step 6: sleep while `wake_seq == v`, for at most `timeout` (`short`: a bounded wait
/// the caller relies on, see [`futex_wait_short`]). With a cancel word, sleep on it too: with
/// `futex_waitv` where the kernel has it, else no longer than [`crate::cancel::CANCEL_POLL`].
fn sleep(words: WakeWords<'_>, v: u32, timeout: Option<Duration>, short: bool) {
    #[cfg(not(loom))]
    if let Some(cancel) = words.cancel {
        if crate::waitv::available() {
            use crate::waitv::{wait, Word};
            let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
            wait(
                &[Word::shared(words.wake_seq, v), Word::private(cancel, 0)],
                deadline,
            );
            return;
        }
        let cap = crate::cancel::CANCEL_POLL;
        return futex_wait(words.wake_seq, v, Some(timeout.map_or(cap, |t| t.min(cap))));
    }
    match (short, timeout) {
        (true, Some(t)) => futex_wait_short(words.wake_seq, v, t),
        _ => futex_wait(words.wake_seq, v, timeout),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::{mpsc, Arc};

    thread_local! {
        /// This thread's park cap, if a test raised it (see `park_cap`).
        pub(super) static PARK_CAP: std::cell::Cell<Option<Duration>> = const {
            std::cell::Cell::new(None)
        };
    }

    /// The wake-up words of a segment, on the heap.
    #[derive(Default)]
    struct Words {
        seq: AtomicU32,
        parked: AtomicU32,
        throttle: AtomicU32,
    }

    impl Words {
        fn words(&self) -> WakeWords<'_> {
            WakeWords::new(
                &self.seq,
                Some(&self.parked),
                &self.throttle,
                Barrier::Fence,
            )
        }
    }

    /// Spawns `n` threads that each wait with `Block` until `ready` is true, with a park cap of
    /// a minute (a reader left asleep fails the test instead of waking on its cap); each sends
    /// its index when it returns.
    fn parked_readers(
        n: usize,
        words: &Arc<Words>,
        ready: &Arc<AtomicBool>,
    ) -> mpsc::Receiver<usize> {
        let (tx, rx) = mpsc::channel();
        for i in 0..n {
            let (words, ready, tx) = (words.clone(), ready.clone(), tx.clone());
            std::thread::spawn(move || {
                PARK_CAP.with(|c| c.set(Some(Duration::from_secs(60))));
                let attempt = || match ready.load(Ordering::SeqCst) {
                    true => Ok(()),
                    false => Err(RecvError::Empty),
                };
                wait_for(
                    WaitStrategy::Block,
                    || words.words(),
                    None,
                    attempt,
                    || None,
                )
                .unwrap();
                let _ = tx.send(i);
            });
        }
        rx
    }

    /// Whether `n` threads of this process other than the first sleep in a futex wait (from
    /// /proc: state S and wait channel `futex_wait_queue` or similar). `None` if /proc does not
    /// say.
    fn sleeping_in_futex() -> Option<usize> {
        let mut n = 0;
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let path = task.ok()?.path();
            let wchan = std::fs::read_to_string(path.join("wchan")).ok()?;
            if wchan.contains("futex") {
                n += 1;
            }
        }
        Some(n)
    }

    #[test]
    fn one_wake_call_wakes_every_parked_reader_through_the_relay() {
        const N: usize = 24;
        let words = Arc::new(Words::default());
        let ready = Arc::new(AtomicBool::new(false));
        let done = parked_readers(N, &words, &ready);
        // Let them all fall asleep (up to 20 s); /proc, where readable, says when.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
            match sleeping_in_futex() {
                Some(n) if n >= N => break,
                Some(_) => {}
                None if start.elapsed() > Duration::from_millis(500) => break,
                None => {}
            }
        }
        assert_eq!(words.parked.load(Ordering::Relaxed), PARKED_RELAY);
        // Publish, then step 9: the producer wakes one waiter (only relaying readers parked).
        ready.store(true, Ordering::SeqCst);
        let mut state = WakeState::default();
        assert!(words.words().wake_parked_with(&mut state));
        assert_eq!(state.wakeups, 1);
        // Every reader returns long before its one-minute cap: the relay reached them all.
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..N {
            let left = deadline.saturating_duration_since(Instant::now());
            done.recv_timeout(left)
                .expect("a parked reader was not woken (the relay stopped)");
        }
    }

    #[test]
    fn a_reader_that_does_not_relay_makes_the_producer_wake_everyone() {
        let words = Words::default();
        let mut state = WakeState::default();
        words.parked.store(1 | PARKED_RELAY, Ordering::Relaxed);
        assert!(words.words().wake_parked_with(&mut state));
        assert_eq!(words.parked.load(Ordering::Relaxed), 0);
        assert_eq!(words.seq.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn fruitless_wakes_throttle_the_producer_and_the_throttle_ends() {
        let words = Words::default();
        let w = words.words();
        let period = Duration::from_millis(300);
        let mut state = WakeState::new(THROTTLE_AFTER, period);
        // A process that stores `parked` before every publish and never sleeps.
        let mut calls = 0;
        while !state.throttled() {
            words.parked.store(1, Ordering::Relaxed);
            calls += u32::from(w.wake_parked_with(&mut state));
            assert!(calls <= THROTTLE_AFTER, "not throttled after {calls} calls");
        }
        assert_eq!(calls, THROTTLE_AFTER);
        assert_eq!(words.throttle.load(Ordering::Relaxed), 1);
        assert_eq!(state.throttles, 1);
        // Throttled: no call, and `parked` is not even looked at.
        let seq = words.seq.load(Ordering::Relaxed);
        let throttled_at = Instant::now();
        for _ in 0..1000 {
            words.parked.store(1, Ordering::Relaxed);
            assert!(!w.wake_parked_with(&mut state));
        }
        assert_eq!(words.seq.load(Ordering::Relaxed), seq);
        // After the period the next clock check (within 8 publishes) ends it, and that publish
        // looks at `parked` again.
        std::thread::sleep(period.saturating_sub(throttled_at.elapsed()) + period / 10);
        let mut woke = false;
        for _ in 0..THROTTLE_CHECK_EVERY {
            woke |= w.wake_parked_with(&mut state);
        }
        assert!(woke && !state.throttled());
        assert_eq!(words.throttle.load(Ordering::Relaxed), 0);
    }

    /// The bound of the throttle: a reader asleep while a hostile process keeps storing
    /// `parked` and the producer has throttled its calls sees a message the producer publishes
    /// and then never follows with another (so nothing else would wake it) within
    /// [`THROTTLED_WAIT`] (plus timer slack and scheduling), not its one-minute cap.
    #[test]
    fn a_throttled_producer_does_not_strand_a_sleeper() {
        let words = Arc::new(Words::default());
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let hostile = {
            let (words, stop) = (words.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    words.parked.store(1, Ordering::Relaxed);
                    std::hint::spin_loop();
                }
            })
        };
        let done = parked_readers(1, &words, &ready);
        let mut state = WakeState::new(THROTTLE_AFTER, Duration::from_secs(600));
        // Publishes that the reader does not wait for, until the producer is throttled.
        let published = AtomicU64::new(0);
        let start = Instant::now();
        while !state.throttled() {
            published.fetch_add(1, Ordering::Relaxed);
            words.words().wake_parked_with(&mut state);
            assert!(start.elapsed() < Duration::from_secs(20), "never throttled");
        }
        std::thread::sleep(Duration::from_millis(50));
        // The message the reader waits for, and no publish after it.
        ready.store(true, Ordering::SeqCst);
        let published_at = Instant::now();
        assert!(!words.words().wake_parked_with(&mut state));
        done.recv_timeout(Duration::from_secs(10))
            .expect("the sleeper was stranded while the producer was throttled");
        let took = published_at.elapsed();
        stop.store(true, Ordering::Relaxed);
        hostile.join().unwrap();
        eprintln!("seen {took:?} after the publish (bound: {THROTTLED_WAIT:?} + slack)");
        assert!(state.throttled());
    }

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
        let throttle = AtomicU32::new(0);
        let words = WakeWords::new(&seq, Some(&parked), &throttle, Barrier::Fence);
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
        let throttle = AtomicU32::new(0);
        let words = WakeWords::new(&seq, Some(&parked), &throttle, Barrier::Fence);
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
        let throttle = AtomicU32::new(0);
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
                    || WakeWords::new(&seq, parked, &throttle, Barrier::Fence),
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
