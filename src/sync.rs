//! The atomics the ring protocol uses: `std`'s in production, loom's under `--cfg loom`.
//!
//! The protocol in [`crate::ring`] is written once against these names, so the code that loom
//! model-checks is the code that runs over the shared mapping.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

/// A hint for spin loops; under loom it yields so the model can make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
