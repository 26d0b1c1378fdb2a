//! Where there is no `membarrier` (other systems, and loom models, which check the fence
//! form of the wake barrier): producers fence after every publish instead.

/// No `membarrier` here.
pub(crate) fn membarrier_available() -> bool {
    false
}

/// No `membarrier` here.
pub(crate) fn membarrier_register() -> bool {
    false
}

/// No `membarrier` here.
pub(crate) fn membarrier_global() -> bool {
    false
}
