//! Elsewhere (no futex, no `membarrier`): waiters poll with short sleeps, and readers never
//! park, so producers never need to wake them.

use std::time::Duration;

use super::{AtomicU32, Ordering};

#[path = "no_membarrier.rs"]
mod no_membarrier;
pub(crate) use no_membarrier::*;

/// Without futexes a waiter sleeps for a bounded time and is never woken early.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    if word.load(Ordering::Relaxed) == expected {
        let cap = Duration::from_millis(1);
        std::thread::sleep(timeout.map_or(cap, |t| t.min(cap)));
    }
}

/// Without futexes there is nobody to wake: waiters time out on their own.
pub(crate) fn futex_wake(_word: &AtomicU32, _n: u32) -> u32 {
    0
}
