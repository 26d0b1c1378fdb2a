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

// The system calls, one backend per platform; each defines the same five functions.
#[cfg_attr(
    all(not(loom), any(target_os = "linux", target_os = "android")),
    path = "sync/linux.rs"
)]
#[cfg_attr(loom, path = "sync/loom.rs")]
#[cfg_attr(
    all(not(loom), not(any(target_os = "linux", target_os = "android"))),
    path = "sync/fallback.rs"
)]
mod os;

// Under loom only the protocol is built, which never registers for membarrier.
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use os::{
    futex_wait, futex_wake, membarrier_available, membarrier_global, membarrier_register,
};

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
