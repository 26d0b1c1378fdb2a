//! How a blocking read waits for the next message.
//!
//! For now one strategy: spin briefly, then yield the CPU, then sleep in growing steps up to
//! [`MAX_SLEEP`]. A waiting subscriber therefore costs little CPU once idle and notices a new
//! message within about `MAX_SLEEP`. (Futex-based parking belongs here too when it lands.)

use std::time::{Duration, Instant};

use crossbeam_utils::Backoff as SpinBackoff;

/// The longest single sleep of an idle subscriber.
pub const MAX_SLEEP: Duration = Duration::from_millis(1);
const FIRST_SLEEP: Duration = Duration::from_micros(20);

/// Escalating wait between polls: spin, yield, then sleep.
pub(crate) struct Backoff {
    spin: SpinBackoff,
    sleep: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            spin: SpinBackoff::new(),
            sleep: FIRST_SLEEP,
        }
    }

    /// Waits a little, longer each call; never past `deadline`. Returns `false` once the
    /// deadline has passed.
    pub(crate) fn wait(&mut self, deadline: Option<Instant>) -> bool {
        if !self.spin.is_completed() {
            self.spin.snooze();
            return deadline.is_none_or(|d| Instant::now() < d);
        }
        let mut nap = self.sleep;
        if let Some(deadline) = deadline {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            nap = nap.min(deadline - now);
        }
        std::thread::sleep(nap);
        self.sleep = (self.sleep * 2).min(MAX_SLEEP);
        true
    }
}
