//! `futex_waitv(2)`: one thread sleeping on several futex words at once (Linux ≥ 5.16), each
//! shared (a segment's `wake_seq`, keyed by file and offset) or private (a word of this
//! process). The cancellable blocking reads sleep on a segment's word and a cancel word; the
//! async wait hub ([`crate::wait_hub`]) sleeps on the words of up to [`MAX_WORDS`]` - 1`
//! segments and its own control word.
//!
//! Where the call does not exist (`ENOSYS`: kernels before 5.16, or a seccomp filter), or the
//! environment variable `SHMCAST_NO_FUTEX_WAITV` is set, [`available`] is `false` and callers
//! fall back to bounded waits (documented where they do).

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

/// The kernel's limit on the number of words of one call (`FUTEX_WAITV_MAX`).
pub(crate) const MAX_WORDS: usize = 128;

/// One word to wait on: sleep while `*word == expected`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Word {
    /// The word's address (it need not stay mapped after the call starts: the kernel keys the
    /// wait by file and offset, or by address space and address, and never reads it again).
    pub(crate) addr: usize,
    pub(crate) expected: u32,
    /// `true` for a word only this process maps (a cheaper, private key).
    pub(crate) private: bool,
}

impl Word {
    /// A word another process may wake (through its own mapping of the same file).
    pub(crate) fn shared(word: &AtomicU32, expected: u32) -> Self {
        Word {
            addr: word.as_ptr() as usize,
            expected,
            private: false,
        }
    }

    /// A word of this process only.
    pub(crate) fn private(word: &AtomicU32, expected: u32) -> Self {
        Word {
            addr: word.as_ptr() as usize,
            expected,
            private: true,
        }
    }
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Woken on the word at this index (or, rarely, spuriously).
    Index(usize),
    /// Some word no longer held its expected value when the call began (`EAGAIN`).
    Changed,
    /// The deadline passed.
    TimedOut,
    /// A signal, a fault on an address that is no longer mapped, or anything else: re-check.
    Other,
}

/// Whether `futex_waitv` can be used in this process (checked once).
pub(crate) fn available() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 yes, 2 no
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = std::env::var_os("SHMCAST_NO_FUTEX_WAITV").is_none() && probe();
            STATE.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Calls `futex_waitv` with no word: `EINVAL` if the kernel has the call, `ENOSYS` if not.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn probe() -> bool {
    use nix::libc;
    // SAFETY: a null array of zero words and no timeout: the kernel reads nothing and returns
    // EINVAL (or ENOSYS without the call, or EPERM under a seccomp filter).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            std::ptr::null::<u8>(),
            0u32,
            0u32,
            std::ptr::null::<libc::timespec>(),
            libc::CLOCK_MONOTONIC,
        )
    };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn probe() -> bool {
    false
}

/// The kernel's `struct futex_waitv`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32` and `FUTEX2_PRIVATE` (include/uapi/linux/futex.h).
#[cfg(any(target_os = "linux", target_os = "android"))]
const FUTEX2_SIZE_U32: u32 = 0x02;
#[cfg(any(target_os = "linux", target_os = "android"))]
const FUTEX2_PRIVATE: u32 = 128;

/// Sleeps until one of `words` is woken, one no longer holds its expected value, or `deadline`
/// (`None`: no deadline) passes. At most [`MAX_WORDS`] words; only call when [`available`].
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn wait(words: &[Word], deadline: Option<Instant>) -> Woken {
    use nix::libc;
    debug_assert!(!words.is_empty() && words.len() <= MAX_WORDS);
    let list: Vec<FutexWaitv> = words
        .iter()
        .map(|w| FutexWaitv {
            val: u64::from(w.expected),
            uaddr: w.addr as u64,
            flags: FUTEX2_SIZE_U32 | if w.private { FUTEX2_PRIVATE } else { 0 },
            reserved: 0,
        })
        .collect();
    // The timeout is absolute, on CLOCK_MONOTONIC (Instant's clock on Linux): now + remaining.
    let ts = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec to write to.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let at = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).saturating_add(left);
        libc::timespec {
            tv_sec: at.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: at.subsec_nanos() as libc::c_long,
        }
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `list` holds `list.len()` initialised entries and outlives the call; `ts_ptr` is
    // null or points to a timespec that outlives it. The kernel only reads the futex words (an
    // address no longer mapped makes it fail with EFAULT, which is reported as `Other`), and
    // keys each wait by its flags: shared words by file and offset, private ones by address.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            list.as_ptr(),
            list.len() as u32,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return Woken::Index(r as usize);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Woken::Changed,
        Some(libc::ETIMEDOUT) => Woken::TimedOut,
        _ => Woken::Other,
    }
}

/// Wakes at most `n` threads waiting on `word` as a private word (a [`Word::private`]; also a
/// private `FUTEX_WAIT`). Returns how many it woke.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn wake_private(word: &AtomicU32, n: u32) -> u32 {
    use nix::libc;
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: `word` is a live, aligned u32 of this process; FUTEX_WAKE does not access its
    // value. An error (there is none for a valid address) is reported as nobody woken.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    u32::try_from(woken).unwrap_or(0)
}

/// Sleeps while `word == expected` (a private `FUTEX_WAIT`), for at most `timeout`; woken by
/// [`wake_private`]. May return early or spuriously.
#[cfg(all(feature = "async", any(target_os = "linux", target_os = "android")))]
pub(crate) fn wait_private(word: &AtomicU32, expected: u32, timeout: Duration) {
    use nix::libc;
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 of this process for the duration of the call;
    // FUTEX_WAIT only reads it. `ts` outlives the call. Every return means "re-check".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Without futexes: a bounded sleep.
#[cfg(all(
    feature = "async",
    not(any(target_os = "linux", target_os = "android"))
))]
pub(crate) fn wait_private(word: &AtomicU32, expected: u32, timeout: Duration) {
    if word.load(std::sync::atomic::Ordering::Relaxed) == expected {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
    }
}

/// Without futexes nobody sleeps on a word: waiters poll.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn wake_private(_word: &AtomicU32, _n: u32) -> u32 {
    0
}

/// Without the call: never used ([`available`] is `false`); sleeps until the deadline.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn wait(_words: &[Word], deadline: Option<Instant>) -> Woken {
    let cap = Duration::from_millis(1);
    let left = deadline.map_or(cap, |d| {
        d.saturating_duration_since(Instant::now()).min(cap)
    });
    std::thread::sleep(left);
    Woken::TimedOut
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn a_wait_on_two_words_wakes_on_either_and_sees_a_changed_value() {
        if !available() {
            eprintln!("futex_waitv not available here: skipped");
            return;
        }
        let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let far = Some(Instant::now() + Duration::from_secs(30));
        // A stale expected value: EAGAIN at once.
        assert_eq!(
            wait(
                &[Word::private(&words[0], 1), Word::private(&words[1], 0)],
                far
            ),
            Woken::Changed
        );
        // Nobody wakes: the deadline.
        let start = Instant::now();
        let soon = Some(start + Duration::from_millis(20));
        let r = wait(
            &[Word::private(&words[0], 0), Word::shared(&words[1], 0)],
            soon,
        );
        assert_eq!(r, Woken::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(20));
        // Woken through the second word.
        let waker = {
            let words = words.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                words[1].store(1, Ordering::SeqCst);
                crate::sync::futex_wake_all(&words[1]);
            })
        };
        let r = wait(
            &[Word::shared(&words[0], 0), Word::shared(&words[1], 0)],
            far,
        );
        assert!(matches!(r, Woken::Index(1) | Woken::Changed), "{r:?}");
        waker.join().unwrap();
        // And through a private word, by a private wake.
        let waker = {
            let words = words.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                words[0].store(1, Ordering::SeqCst);
                wake_private(&words[0], 1);
            })
        };
        let r = wait(
            &[Word::private(&words[0], 0), Word::shared(&words[1], 1)],
            far,
        );
        assert!(matches!(r, Woken::Index(0) | Woken::Changed), "{r:?}");
        waker.join().unwrap();
    }
}
