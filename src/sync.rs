//! The primitives the protocol uses: atomics and futex calls, `std`'s and the kernel's in
//! production, loom's under `--cfg loom`.
//!
//! The protocol in [`crate::ring`] and the parking in [`crate::wait`] are written once against
//! these names, so the code that loom model-checks is the code that runs over the shared mapping.

use std::time::Duration;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// `membarrier(2)` commands (linux/membarrier.h).
#[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
mod membarrier_cmd {
    pub const QUERY: i32 = 0;
    pub const GLOBAL_EXPEDITED: i32 = 1 << 1;
    pub const REGISTER_GLOBAL_EXPEDITED: i32 = 1 << 2;
}

#[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
fn membarrier(cmd: i32) -> i64 {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    unsafe { nix::libc::syscall(nix::libc::SYS_membarrier, cmd, 0u32) as i64 }
}

/// Whether this kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (and this process may call it:
/// a seccomp filter can refuse it).
pub(crate) fn membarrier_available() -> bool {
    #[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
    {
        let supported = membarrier(membarrier_cmd::QUERY);
        supported >= 0 && supported & i64::from(membarrier_cmd::GLOBAL_EXPEDITED) != 0
    }
    #[cfg(not(all(not(loom), any(target_os = "linux", target_os = "android"))))]
    false
}

/// Registers this process as a target of `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: from now on a
/// reader's `membarrier` call runs a full memory barrier on every CPU running one of our
/// threads. `false` if the kernel (or a seccomp filter) refuses, or `SHMCAST_NO_MEMBARRIER` is
/// set. (`PublisherOptions::membarrier(false)` does not call this at all.)
pub(crate) fn membarrier_register() -> bool {
    #[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
    {
        // Lets tests and unusual deployments choose the fence fallback without recompiling.
        if std::env::var_os("SHMCAST_NO_MEMBARRIER").is_some() {
            return false;
        }
        membarrier_available() && membarrier(membarrier_cmd::REGISTER_GLOBAL_EXPEDITED) == 0
    }
    #[cfg(not(all(not(loom), any(target_os = "linux", target_os = "android"))))]
    false
}

/// A full memory barrier on this thread and on every running thread of every registered
/// process (the producers). `false` if the call failed.
pub(crate) fn membarrier_global() -> bool {
    #[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
    return membarrier(membarrier_cmd::GLOBAL_EXPEDITED) == 0;
    #[cfg(not(all(not(loom), any(target_os = "linux", target_os = "android"))))]
    false
}

/// Proof that this CPU has `PREFETCHW` (prefetch a cache line for writing), checked once per
/// producer; only a holder can issue the instruction. `None` without it, under loom and Miri,
/// and when `SHMCAST_NO_PREFETCH` is set (so one binary can be measured with and without).
/// `PublisherOptions::write_prefetch(false)` drops it as well.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WritePrefetch(());

impl WritePrefetch {
    /// `Some` if this x86-64 CPU reports `PREFETCHW` (CPUID leaf `0x8000_0001`, ECX bit 8, which
    /// current AMD CPUs and Intel ones since Broadwell set). Other architectures: `None` for now.
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        {
            use std::arch::x86_64::{__cpuid, __get_cpuid_max};
            if std::env::var_os("SHMCAST_NO_PREFETCH").is_some() {
                return None;
            }
            // SAFETY: CPUID exists on every x86-64 CPU, and leaf 0x8000_0001 is read only after
            // the highest extended leaf says it exists. (Newer compilers consider these calls
            // safe, hence the allow.)
            #[allow(unused_unsafe)]
            let has = unsafe {
                __get_cpuid_max(0x8000_0000).0 >= 0x8000_0001
                    && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
            };
            if has {
                return Some(WritePrefetch(()));
            }
        }
        None
    }

    /// Asks the CPU to bring the cache line holding `word` into this core in a writable state,
    /// so the stores that fill it later need not wait for other cores to give it up.
    #[inline(always)]
    pub(crate) fn line(&self, word: &AtomicU64) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        // SAFETY: `self` exists only if the CPU has PREFETCHW (see `detect`). The instruction is
        // a hint: it never faults, moves a cache line but reads or writes no value as the
        // language sees it (no data race with the readers of that line), and touches neither
        // the stack nor the flags.
        unsafe {
            std::arch::asm!(
                "prefetchw [{0}]",
                in(reg) word.as_ptr(),
                options(nostack, readonly, preserves_flags),
            );
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = word;
    }
}

/// A hint for spin loops; under loom it yields so the model can make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Sleeps until `word` is woken by [`futex_wake_all`], unless it no longer holds `expected`
/// (checked atomically with going to sleep), or until `timeout` passes. May also return
/// spuriously; callers re-check whatever they wait for.
///
/// The futex is *shared* (no `FUTEX_PRIVATE_FLAG`): the kernel keys it by file and offset, so
/// processes that map the same segment wait on and wake the same word, through read-only
/// mappings too.
#[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    use nix::libc;
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, 4-byte aligned u32 for the duration of the call (it is borrowed);
    // FUTEX_WAIT only reads it. `ts_ptr` is null or points to a timespec that outlives the call.
    // The result (0, EAGAIN, EINTR, ETIMEDOUT) needs no handling: every return means "re-check".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes at most `n` threads, in any process, waiting in [`futex_wait`] on `word` (the kernel
/// takes them in the order they started waiting, real-time threads first), and returns how many
/// it woke.
#[cfg(all(not(loom), any(target_os = "linux", target_os = "android")))]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    use nix::libc;
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access its value. An error
    // (there is none for a valid address) is reported as nobody woken.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    u32::try_from(woken).unwrap_or(0)
}

/// Without futexes a waiter sleeps for a bounded time and is never woken early.
#[cfg(all(not(loom), not(any(target_os = "linux", target_os = "android"))))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    if word.load(Ordering::Relaxed) == expected {
        let cap = Duration::from_millis(1);
        std::thread::sleep(timeout.map_or(cap, |t| t.min(cap)));
    }
}

/// Without futexes there is nobody to wake: waiters time out on their own.
#[cfg(all(not(loom), not(any(target_os = "linux", target_os = "android"))))]
pub(crate) fn futex_wake(_word: &AtomicU32, _n: u32) -> u32 {
    0
}

/// Wakes every thread, in any process, waiting in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) -> u32 {
    futex_wake(word, i32::MAX as u32)
}

/// [`futex_wait`] for a wait that is bounded by a short `timeout` (at most
/// [`crate::wait::MAX_SLEEP`]) and relies on it: the caller polls again soon whether woken or
/// not. Under loom, where time does not pass, such a wait returns at once (after letting other
/// threads run), so a model checks that nobody depends on a wake-up from such a waiter.
pub(crate) fn futex_wait_short(word: &AtomicU32, expected: u32, timeout: Duration) {
    #[cfg(loom)]
    {
        let _ = (word, expected, timeout);
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    futex_wait(word, expected, Some(timeout));
}

// Under loom a futex is a mutex-protected queue of waiters, each keyed by the address of its
// word: `futex_wait` checks the value and joins the queue under the lock, the same atomicity the
// kernel gives (it checks the value under the lock that FUTEX_WAKE takes); `futex_wake` takes
// the first `n` waiters of that word (the kernel's order for threads of equal priority).
// Timeouts are ignored, so a waiter that nobody wakes shows as a loom deadlock.
#[cfg(loom)]
#[derive(Default)]
struct FutexQueue {
    /// (word address, ticket) of every waiter, oldest first.
    waiters: std::collections::VecDeque<(usize, u64)>,
    next_ticket: u64,
}

#[cfg(loom)]
loom::lazy_static! {
    static ref FUTEX: (loom::sync::Mutex<FutexQueue>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(FutexQueue::default()), loom::sync::Condvar::new());
}

#[cfg(loom)]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
    let mut queue = FUTEX.0.lock().unwrap();
    if word.load(Ordering::Relaxed) != expected {
        return;
    }
    let ticket = queue.next_ticket;
    queue.next_ticket += 1;
    queue
        .waiters
        .push_back((word as *const AtomicU32 as usize, ticket));
    while queue.waiters.iter().any(|&(_, t)| t == ticket) {
        queue = FUTEX.1.wait(queue).unwrap();
    }
}

#[cfg(loom)]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    let addr = word as *const AtomicU32 as usize;
    let mut queue = FUTEX.0.lock().unwrap();
    let mut woken = 0;
    while woken < n {
        let Some(i) = queue.waiters.iter().position(|&(a, _)| a == addr) else {
            break;
        };
        queue.waiters.remove(i);
        woken += 1;
    }
    if woken > 0 {
        FUTEX.1.notify_all();
    }
    woken
}
