//! Under loom: a model of the futex, and no `membarrier` (the models use the fence form).

use std::time::Duration;

use super::{AtomicU32, Ordering};

#[path = "no_membarrier.rs"]
mod no_membarrier;
pub(crate) use no_membarrier::*;

// Under loom a futex is a mutex-protected queue of waiters, each keyed by the address of its
// word: `futex_wait` checks the value and joins the queue under the lock, the same atomicity the
// kernel gives (it checks the value under the lock that FUTEX_WAKE takes); `futex_wake` takes
// the first `n` waiters of that word (the kernel's order for threads of equal priority).
// Timeouts are ignored, so a waiter that nobody wakes shows as a loom deadlock.
#[derive(Default)]
struct FutexQueue {
    /// (word address, ticket) of every waiter, oldest first.
    waiters: std::collections::VecDeque<(usize, u64)>,
    next_ticket: u64,
}

loom::lazy_static! {
    static ref FUTEX: (loom::sync::Mutex<FutexQueue>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(FutexQueue::default()), loom::sync::Condvar::new());
}

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
