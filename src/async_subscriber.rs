//! [`AsyncSubscriber`]: a [`Subscriber`] whose waits are futures, for any executor (tokio,
//! async-std, smol, `futures::executor`), woken by the process's wait hub
//! ([`crate::wait_hub`]) instead of a thread per subscriber. Needs the `async` feature.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{Error, RecvError};
use crate::subscriber::Subscriber;
use crate::sync::{fence, membarrier_global, Ordering};
use crate::wait::{MAX_SLEEP, PARKED_RELAY, THROTTLED_WAIT};
use crate::wait_hub::{self, Attachment};

/// The first bounded wait of a subscriber that cannot park (no write access), doubling up to
/// [`MAX_SLEEP`], as the blocking reader's.
const FIRST_NAP: Duration = Duration::from_micros(20);

/// A [`Subscriber`] for async code: [`recv`](Self::recv) is a future, and the subscriber is a
/// [`Stream`](futures_core::Stream) of messages. Lossy and registered (lossless) subscribers
/// alike: open the [`Subscriber`] as usual, then wrap it.
///
/// No thread is spent per subscriber. A task with nothing to read parks as a blocking reader
/// does (docs/LAYOUT.md, "Waiting and waking": it sets `parked`, fences, reads again) and
/// leaves its waker with the process's wait hub: one thread per 127 segments that sleeps on
/// every segment's `wake_seq` word at once with `futex_waitv(2)` and wakes the tasks of the
/// segments whose word changed. So N async subscribers on M segments use `ceil(M / 127)` extra
/// threads, and the producer is unchanged (no system call while nobody is parked, one
/// `FUTEX_WAKE` however many wait). Without `futex_waitv` (Linux before 5.16) the hub looks
/// at the words every millisecond while some task waits instead (see the README).
///
/// Futures are cancel-safe: a message is taken from the ring only inside a poll that returns
/// it, so dropping a [`Recv`] future (a `select!` branch that lost, a timeout) loses nothing,
/// and a lossless registration lives as long as the `AsyncSubscriber`. The stream ends once the
/// producer has exited and everything it published was delivered (the hub checks the
/// producer's liveness lock every [`LIVENESS_INTERVAL`](crate::wait::LIVENESS_INTERVAL) while
/// a task waits). A subscriber without write access to the segment cannot park: its task
/// retries after bounded waits of 20 µs doubling to 1 ms, as a blocking reader polls.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmcast::{AsyncSubscriber, Publisher, StartAt, Subscriber};
///
/// let name = format!("/shmcast-doc-async-{}", std::process::id());
/// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
/// let mut subscriber = AsyncSubscriber::new(Subscriber::open(&name, StartAt::Next)?)?;
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// let producer = std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_millis(20)); // the task is parked by now
///     publisher.publish(b"hello").map(|_| ())
/// });
/// let mut buf = Vec::new();
/// let seq = runtime.block_on(subscriber.recv(&mut buf))?;
/// assert_eq!((seq, &buf[..]), (1, &b"hello"[..]));
/// producer.join().unwrap()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncSubscriber {
    // Dropped before `subscriber`: the hub stops using the mapping's word before it goes.
    attachment: Attachment,
    subscriber: Subscriber,
    /// The next bounded wait of a subscriber that cannot park.
    nap: Duration,
    /// The stream has ended.
    ended: bool,
    /// The stream's buffer, handed out with each message.
    spare: Vec<u8>,
}

impl AsyncSubscriber {
    /// Wraps `subscriber` (its [`WaitStrategy`](crate::WaitStrategy) is not used: waits are
    /// futures). Fails only if the segment file cannot be examined or duplicated, or the hub
    /// thread cannot be started.
    pub fn new(subscriber: Subscriber) -> Result<Self, Error> {
        let mapping = subscriber.mapping();
        // SAFETY: the attachment is a field of the `AsyncSubscriber` declared before the
        // subscriber, so it is dropped first (and `into_inner` drops it first): the mapping
        // outlives it, and moving the subscriber does not move the mapped memory.
        let attached = unsafe {
            wait_hub::attach(
                mapping.file(),
                mapping.wake_words().wake_seq(),
                mapping.ring(),
            )
        };
        let attachment = attached.map_err(|source| Error::Io {
            action: "start waiting asynchronously on",
            path: subscriber.path(),
            source,
        })?;
        Ok(AsyncSubscriber {
            attachment,
            subscriber,
            nap: FIRST_NAP,
            ended: false,
            spare: Vec::new(),
        })
    }

    /// Receives the next message into `buf` (resized to its length), waiting without blocking
    /// the thread, and returns its sequence number. Results as [`Subscriber::recv`]: a
    /// [`RecvError::Lagged`] or [`RecvError::Evicted`] notice, or [`RecvError::ProducerGone`]
    /// once everything was read. Cancel-safe.
    pub fn recv<'a>(&'a mut self, buf: &'a mut Vec<u8>) -> Recv<'a> {
        Recv {
            subscriber: self,
            buf,
        }
    }

    /// The poll behind [`Self::recv`]: `Ready` with what a read returned, or `Pending` with
    /// `cx`'s waker left with the wait hub.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<Result<u64, RecvError>> {
        self.poll_read(cx, |s| s.try_recv(buf))
    }

    /// Reader steps 1–5 of "Waiting and waking" with the hub as the sleeper.
    fn poll_read<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(&mut Subscriber) -> Result<T, RecvError>,
    ) -> Poll<Result<T, RecvError>> {
        match attempt(&mut self.subscriber) {
            Err(RecvError::Empty) => {}
            found => return self.ready(found),
        }
        if self.attachment.producer_dead() {
            if let Some(gone) = self.subscriber.producer_gone() {
                // One last read: what the producer published before it died comes first.
                return match attempt(&mut self.subscriber) {
                    Err(RecvError::Empty) => Poll::Ready(Err(gone)),
                    found => self.ready(found),
                };
            }
        }
        // (The words are looked up again after each read, which needs the subscriber mutably.)
        let words = self.subscriber.mapping().wake_words();
        // Step 1: the value the hub is to wait for a change of.
        let v = words.wake_seq().load(Ordering::Acquire);
        let Some(parked) = words.parked() else {
            // Cannot register as parked: a bounded wait, growing as a blocking reader's.
            let deadline = Instant::now() + self.nap;
            self.nap = (self.nap * 2).min(MAX_SLEEP);
            self.attachment.park(v, cx.waker(), Some(deadline));
            return Poll::Pending;
        };
        self.attachment.park(v, cx.waker(), None);
        // Steps 2–3: announce the sleeper, then the store-fence-load pair with the producer.
        parked.fetch_or(PARKED_RELAY, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let short = words.needs_membarrier() && !membarrier_global();
        // Step 4: read again; a waker left behind costs at most one spurious wake-up.
        match attempt(&mut self.subscriber) {
            Err(RecvError::Empty) => {}
            found => return self.ready(found),
        }
        // Step 5: a throttled producer (or no membarrier) does not wake: bound the wait.
        let words = self.subscriber.mapping().wake_words();
        if short || words.throttle().load(Ordering::Relaxed) != 0 {
            self.attachment
                .park(v, cx.waker(), Some(Instant::now() + THROTTLED_WAIT));
        }
        Poll::Pending
    }

    fn ready<T>(&mut self, found: Result<T, RecvError>) -> Poll<Result<T, RecvError>> {
        self.nap = FIRST_NAP;
        Poll::Ready(found)
    }

    /// The subscriber, for its other calls (non-blocking reads, [`Subscriber::progress`], ...).
    pub fn get_ref(&self) -> &Subscriber {
        &self.subscriber
    }

    /// The subscriber, mutably (for `try_recv` and friends).
    pub fn get_mut(&mut self) -> &mut Subscriber {
        &mut self.subscriber
    }

    /// Unwraps the subscriber (it leaves the wait hub; a registration stays).
    pub fn into_inner(self) -> Subscriber {
        let AsyncSubscriber {
            attachment,
            subscriber,
            ..
        } = self;
        drop(attachment);
        subscriber
    }

    /// How many wait-hub threads this process runs, and on how many segments they wait (one
    /// entry per segment file, however many async subscribers read it).
    pub fn hub_census() -> (usize, usize) {
        wait_hub::census()
    }
}

/// The future of [`AsyncSubscriber::recv`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Recv<'a> {
    subscriber: &'a mut AsyncSubscriber,
    buf: &'a mut Vec<u8>,
}

impl Future for Recv<'_> {
    type Output = Result<u64, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.subscriber.poll_recv(cx, this.buf)
    }
}

/// Messages as `(seq, payload)`, or a [`RecvError::Lagged`]/[`RecvError::Evicted`] notice; the
/// stream ends (after everything was delivered) when the producer is gone, or after another
/// error, which it yields first. Each message is a new `Vec`; [`AsyncSubscriber::recv`] reuses
/// one.
impl futures_core::Stream for AsyncSubscriber {
    type Item = Result<(u64, Vec<u8>), RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let mut buf = std::mem::take(&mut this.spare);
        let polled = this.poll_recv(cx, &mut buf);
        match polled {
            Poll::Pending => {
                this.spare = buf;
                Poll::Pending
            }
            Poll::Ready(Ok(seq)) => Poll::Ready(Some(Ok((seq, buf)))),
            Poll::Ready(Err(notice @ (RecvError::Lagged { .. } | RecvError::Evicted))) => {
                Poll::Ready(Some(Err(notice)))
            }
            Poll::Ready(Err(RecvError::ProducerGone { .. })) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl futures_core::FusedStream for AsyncSubscriber {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}
