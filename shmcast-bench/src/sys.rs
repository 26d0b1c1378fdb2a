//! What every measurement shares: the CPUs it runs on, deadlines and interruption, unique
//! segment names that are always removed, the host description, and clocks.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::Result;

// ------------------------------------------------------------------------------- CPUs

/// The CPUs this thread may run on.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| format!("cannot read this process's CPU affinity: {e}"))?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| format!("CPU {cpu} cannot be pinned to: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))?;
    Ok(())
}

/// Where the harness and its peers run, and how long a run may take.
pub struct Ctx {
    /// The CPUs in use: the harness on the first, peers on the others.
    cpus: Vec<usize>,
    /// Whether the harness and its peers are pinned to different CPUs.
    pub pinned: bool,
    /// Why they are not, when they are not.
    pub unpinned_reason: Option<String>,
    /// Spinning sides call `sched_yield` between polls (only one CPU: without it, every
    /// hand-off would wait for a scheduler time slice).
    pub yield_idle: bool,
    /// Limit for one run.
    pub timeout: Duration,
    /// Capacity of the throughput and publish-rate rings.
    pub capacity: u64,
    /// The CPUs this process may run on.
    pub allowed: Vec<usize>,
}

impl Ctx {
    /// Chooses the CPUs (`--cpus`, default the first two allowed) and pins the calling thread
    /// to the first.
    pub fn new(cpus: Option<&[usize]>, timeout: Duration, capacity: u64) -> Result<Ctx> {
        let allowed = allowed_cpus()?;
        let chosen: Vec<usize> = match cpus {
            Some(list) => {
                for c in list {
                    if !allowed.contains(c) {
                        return Err(format!(
                            "--cpus: CPU {c} is not one this process may run on ({})",
                            cpu_list(&allowed)
                        )
                        .into());
                    }
                }
                let mut seen = Vec::new();
                for &c in list {
                    if !seen.contains(&c) {
                        seen.push(c);
                    }
                }
                seen
            }
            None => allowed.iter().copied().take(2).collect(),
        };
        let mut ctx = Ctx {
            cpus: chosen.clone(),
            pinned: false,
            unpinned_reason: None,
            yield_idle: false,
            timeout,
            capacity,
            allowed,
        };
        if chosen.len() < 2 {
            ctx.yield_idle = true;
            ctx.unpinned_reason = Some(format!(
                "only one CPU available ({}): nothing pinned, both sides share it and spinning \
                 sides yield between polls; latencies include scheduler hand-offs",
                cpu_list(&chosen)
            ));
        } else if let Err(e) = pin_current_thread(chosen[0]) {
            ctx.unpinned_reason = Some(format!("pinning failed ({e}); running unpinned"));
        } else {
            ctx.pinned = true;
        }
        Ok(ctx)
    }

    /// The CPUs in use (harness first).
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The harness's CPU, when pinned.
    pub fn harness_cpu(&self) -> Option<usize> {
        self.pinned.then(|| self.cpus[0])
    }

    /// The CPU of the `i`-th concurrent peer (0 for the only one), when pinned: the CPUs after
    /// the harness's, in turn.
    pub fn peer_cpu(&self, i: usize) -> Option<usize> {
        self.pinned
            .then(|| self.cpus[1 + i % (self.cpus.len() - 1)])
    }

    /// How many distinct CPUs peers get.
    pub fn peer_cpus(&self) -> usize {
        self.cpus.len().saturating_sub(1).max(1)
    }

    /// The deadline of a run that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Runs `f` with the calling thread moved to `cpu`, then moves it back to the harness's CPU.
    /// A process spawned inside `f` starts with `cpu` as its affinity (it inherits the spawning
    /// thread's), so even a peer that never pins itself runs there from its first instruction.
    pub fn on_cpu<T>(&self, cpu: Option<usize>, f: impl FnOnce() -> T) -> Result<T> {
        let (Some(cpu), Some(home)) = (cpu, self.harness_cpu()) else {
            return Ok(f());
        };
        pin_current_thread(cpu)?;
        let result = f();
        pin_current_thread(home)?;
        Ok(result)
    }
}

/// `0-3,6` style list.
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", cpus[i], cpus[j])
        } else {
            cpus[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

// ------------------------------------------------------------------------------- interruption

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turns SIGINT, SIGTERM and SIGHUP into a flag that spinning loops and the peer watchdog
/// check, so an interrupted run still kills its peers and removes its segments.
pub fn catch_interrupts() -> Result<()> {
    // The handler only stores to an atomic, which is async-signal-safe.
    shmcast_cli::catch_signals(on_signal)
}

/// Whether the harness was asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// The idle step of a busy-polling loop, with a deadline checked every few thousand polls (off
/// the path of a poll that finds something).
pub struct Spinner {
    polls: u32,
    deadline: Instant,
    yield_idle: bool,
    waiting_for: &'static str,
}

impl Spinner {
    /// A spinner for a loop waiting for `waiting_for`, giving up at `deadline`.
    pub fn new(deadline: Instant, yield_idle: bool, waiting_for: &'static str) -> Self {
        Spinner {
            polls: 0,
            deadline,
            yield_idle,
            waiting_for,
        }
    }

    /// Called after a poll that found nothing. Fails once the deadline has passed or the
    /// harness was interrupted.
    #[inline(always)]
    pub fn idle(&mut self) -> Result<()> {
        if self.yield_idle {
            std::thread::yield_now();
        }
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(4096) {
            return self.check();
        }
        Ok(())
    }

    /// Whether the last [`Spinner::idle`] was one that checked the deadline: a cheap moment
    /// to look at anything else that may end the wait.
    #[inline(always)]
    pub fn ticked(&self) -> bool {
        self.polls.is_multiple_of(4096)
    }

    /// Fails if the deadline has passed or the harness was interrupted.
    #[cold]
    #[inline(never)]
    pub fn check(&self) -> Result<()> {
        if interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() >= self.deadline {
            return Err(format!(
                "timed out waiting for {} (one run may take at most --timeout seconds)",
                self.waiting_for
            )
            .into());
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------- segments

static SEGMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT_SEGMENT: AtomicU32 = AtomicU32::new(0);

/// A new shared-memory name, unique to this process and call, that [`SegmentCleanup`] removes
/// whether the harness or a peer created it.
pub fn segment_name(tag: &str) -> String {
    let n = NEXT_SEGMENT.fetch_add(1, Ordering::Relaxed);
    let name = format!("/shmcast-bench-{}-{n}-{tag}", std::process::id());
    SEGMENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.clone());
    name
}

/// Removes every name [`segment_name`] handed out when dropped (those already removed by their
/// publisher are skipped silently).
pub struct SegmentCleanup;

impl Drop for SegmentCleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *SEGMENTS.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
    }
}

// ------------------------------------------------------------------------------- clocks

/// Nanoseconds in a duration, saturating.
#[inline(always)]
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch: the clock both sides of a timestamp
/// measurement read (the Go reader's `time.Now().UnixNano()`).
pub use shmcast_cli::unix_now_ns as realtime_ns;

/// The median cost of one `Instant::now()` (a `CLOCK_MONOTONIC` read), in nanoseconds.
pub fn clock_read_ns() -> u64 {
    const N: usize = 2001;
    let mut costs = Vec::with_capacity(N);
    for _ in 0..N {
        let a = Instant::now();
        // 16 reads per sample, so the figure is not dominated by one read's granularity.
        let mut last = a;
        for _ in 0..16 {
            last = std::hint::black_box(Instant::now());
        }
        costs.push(nanos(last - a) / 16);
    }
    costs.sort_unstable();
    costs[N / 2]
}

// ------------------------------------------------------------------------------- host

/// Time the hypervisor ran something else on `cpus` ("steal" in `/proc/stat`), in milliseconds,
/// since boot; `None` where the kernel does not report it. Its resolution is the kernel's
/// USER_HZ (10 ms on Linux).
pub fn steal_ms(cpus: &[usize]) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut total = 0u64;
    for cpu in cpus {
        let tag = format!("cpu{cpu} ");
        let line = stat.lines().find(|l| l.starts_with(&tag))?;
        // cpuN user nice system idle iowait irq softirq steal ...
        let ticks: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
        total += ticks * 10;
    }
    Some(total)
}

/// What the report's header says about the machine.
pub struct HostInfo {
    pub cpu_model: String,
    pub online_cpus: String,
    pub online_count: usize,
    pub kernel: String,
    pub clock_read_ns: u64,
}

impl HostInfo {
    /// Reads `/proc/cpuinfo`, the online CPU list and `uname`, and times the clock.
    pub fn collect() -> HostInfo {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let online_cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".to_owned());
        let online_count = online_cpus
            .split(',')
            .filter_map(|part| {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?)
            })
            .sum();
        let kernel = nix::sys::utsname::uname()
            .map(|u| {
                format!(
                    "{} {}",
                    u.sysname().to_string_lossy(),
                    u.release().to_string_lossy()
                )
            })
            .unwrap_or_else(|_| "unknown kernel".to_owned());
        HostInfo {
            cpu_model,
            online_cpus,
            online_count,
            kernel,
            clock_read_ns: clock_read_ns(),
        }
    }
}

// ------------------------------------------------------------------------------- idle gaps

/// The pauses between the messages of a wake-up latency run: pseudo-random (splitmix64 of a
/// seed and an index) and uniform in `[min, max)`, so that sends do not lock on to the
/// scheduler tick. The same seed gives the same sequence, so two transports measured with one
/// seed see the same gaps.
pub struct Gaps {
    state: u64,
    min: Duration,
    span_ns: u64,
}

impl Gaps {
    /// Gaps from `min` (inclusive) to `max` (exclusive; `max <= min` gives `min` always).
    pub fn new(seed: u64, min: Duration, max: Duration) -> Gaps {
        Gaps {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            min,
            span_ns: nanos(max.saturating_sub(min)),
        }
    }
}

impl Iterator for Gaps {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let extra = if self.span_ns == 0 {
            0
        } else {
            z % self.span_ns
        };
        Some(self.min + Duration::from_nanos(extra))
    }
}
