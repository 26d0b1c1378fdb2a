//! The kernel's primitives: shared futexes and `membarrier(2)`, on Linux and Android.

use std::time::Duration;

use super::AtomicU32;

/// `membarrier(2)` commands (linux/membarrier.h).
mod membarrier_cmd {
    pub const QUERY: i32 = 0;
    pub const GLOBAL_EXPEDITED: i32 = 1 << 1;
    pub const REGISTER_GLOBAL_EXPEDITED: i32 = 1 << 2;
}

fn membarrier(cmd: i32) -> i64 {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    unsafe { nix::libc::syscall(nix::libc::SYS_membarrier, cmd, 0u32) as i64 }
}

/// Whether this kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (and this process may call it:
/// a seccomp filter can refuse it).
pub(crate) fn membarrier_available() -> bool {
    let supported = membarrier(membarrier_cmd::QUERY);
    supported >= 0 && supported & i64::from(membarrier_cmd::GLOBAL_EXPEDITED) != 0
}

/// Registers this process as a target of `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: from now on a
/// reader's `membarrier` call runs a full memory barrier on every CPU running one of our
/// threads. `false` if the kernel (or a seccomp filter) refuses, or `SHMCAST_NO_MEMBARRIER` is
/// set. (`PublisherOptions::membarrier(false)` does not call this at all.)
pub(crate) fn membarrier_register() -> bool {
    // Lets tests and unusual deployments choose the fence fallback without recompiling.
    if std::env::var_os("SHMCAST_NO_MEMBARRIER").is_some() {
        return false;
    }
    membarrier_available() && membarrier(membarrier_cmd::REGISTER_GLOBAL_EXPEDITED) == 0
}

/// A full memory barrier on this thread and on every running thread of every registered
/// process (the producers). `false` if the call failed.
pub(crate) fn membarrier_global() -> bool {
    membarrier(membarrier_cmd::GLOBAL_EXPEDITED) == 0
}

/// Sleeps until `word` is woken by [`super::futex_wake_all`], unless it no longer holds `expected`
/// (checked atomically with going to sleep), or until `timeout` passes. May also return
/// spuriously; callers re-check whatever they wait for.
///
/// The futex is *shared* (no `FUTEX_PRIVATE_FLAG`): the kernel keys it by file and offset, so
/// processes that map the same segment wait on and wake the same word, through read-only
/// mappings too.
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
