//! Cancelling blocking reads from another thread: [`Canceller`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::waitv;

/// A handle that interrupts the blocking reads of one [`Subscriber`](crate::Subscriber) from
/// another thread, like closing a Go reader: see
/// [`Subscriber::canceller`](crate::Subscriber::canceller).
///
/// After [`cancel`](Self::cancel), a blocking read that finds nothing to read returns
/// [`RecvError::Cancelled`](crate::RecvError::Cancelled) instead of waiting, and one asleep
/// returns it promptly. A read that finds a message still returns it, so the non-blocking calls
/// (and blocking ones, until the stream is drained) keep delivering what was published. The
/// cancellation lasts until [`reset`](Self::reset).
///
/// A parked reader sleeps with `futex_waitv(2)` (Linux ≥ 5.16) on both the segment's wake-up
/// word and this handle's word, so `cancel` wakes it at once. On older kernels (or with
/// `SHMCAST_NO_FUTEX_WAITV` set) a subscriber that has a canceller bounds each sleep at
/// [`CANCEL_POLL`] instead. Reading costs nothing more while nobody cancels: the word is loaded
/// only once a read has found nothing and is about to wait.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use shmcast::{Publisher, RecvError, StartAt, Subscriber};
///
/// let name = format!("/shmcast-doc-cancel-{}", std::process::id());
/// let _publisher = Publisher::options().capacity(4096).create(&name)?;
/// let mut subscriber = Subscriber::open(&name, StartAt::Next)?;
/// let canceller = subscriber.canceller();
/// let reader = std::thread::spawn(move || subscriber.recv(&mut Vec::new()));
/// std::thread::sleep(Duration::from_millis(20)); // the reader is asleep by now
/// canceller.cancel();
/// assert_eq!(reader.join().unwrap(), Err(RecvError::Cancelled));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Canceller {
    word: Arc<CancelWord>,
}

/// The longest single sleep of a subscriber that has a [`Canceller`] where `futex_waitv` is not
/// available: how late a cancellation can be noticed there.
pub const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The word a [`Canceller`] raises: `0`, or `1` once cancelled. Private to this process.
#[derive(Debug, Default)]
pub(crate) struct CancelWord(AtomicU32);

impl CancelWord {
    /// Whether the reads are cancelled.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }

    /// The futex word, for a wait with expected value `0`.
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.0
    }
}

impl Canceller {
    pub(crate) fn new(word: Arc<CancelWord>) -> Self {
        Canceller { word }
    }

    /// Cancels: a blocking read asleep now returns [`RecvError::Cancelled`](crate::RecvError::Cancelled)
    /// at once, and so does every later one that would wait, until [`Self::reset`]. The store
    /// comes before the wake-up, and a sleeper's wait is conditional on the word still being
    /// `0`, so a reader that is just going to sleep cannot miss it.
    pub fn cancel(&self) {
        self.word.0.store(1, Ordering::Release);
        waitv::wake_private(&self.word.0, u32::MAX);
    }

    /// Ends the cancellation: blocking reads wait again.
    pub fn reset(&self) {
        self.word.0.store(0, Ordering::Release);
    }

    /// Whether [`Self::cancel`] was called (and not [`Self::reset`] since).
    pub fn is_cancelled(&self) -> bool {
        self.word.is_set()
    }
}
