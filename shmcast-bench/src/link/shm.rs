//! The shmcast link: a segment to publish on and/or one to read, with the reader waiting by
//! busy-polling `try_recv_into` (the default) or in the library's blocking call.

use std::time::{Duration, Instant};

use shmcast::{AsyncSubscriber, Publisher, Received, RecvError, StartAt, Subscriber, WaitStrategy};

use super::{Got, Link};
use crate::payload::Payload;
use crate::sys::Spinner;
use crate::Result;

/// How one blocking call of a [`Waiter`] may wait before it looks at the run's deadline and
/// at interruption.
const BLOCKING_SLICE: Duration = Duration::from_millis(100);

/// How a Rust shm reader waits for its next message: busy-polling `try_recv_into` back to back
/// (the default), or, with a [`WaitStrategy`], the library's blocking `recv_into_deadline`, in
/// slices of at most `BLOCKING_SLICE` so that the run's deadline and an interruption are
/// noticed.
pub struct Waiter {
    blocking: bool,
    /// The end of the current blocking slice, moved on every 1024 messages and after a
    /// timeout: a clock read per message would cost about as much as receiving a small one.
    slice_end: Instant,
    received: u32,
    spin: Spinner,
    /// Polls that found nothing (busy-polling only).
    empty: u64,
}

impl Waiter {
    /// A waiter for `sub`; `wait` (if any) becomes the subscriber's strategy.
    pub fn new(sub: &mut Subscriber, wait: Option<WaitStrategy>, spin: Spinner) -> Waiter {
        if let Some(strategy) = wait {
            sub.set_wait_strategy(strategy);
        }
        Waiter {
            blocking: wait.is_some(),
            slice_end: Instant::now() + BLOCKING_SLICE,
            received: 0,
            spin,
            empty: 0,
        }
    }

    /// Copies the next message into `buf`: `Ok(Ok(received))`, or `Ok(Err(missed))` when
    /// messages were lost to a lap.
    #[inline(always)]
    fn recv(
        &mut self,
        sub: &mut Subscriber,
        buf: &mut [u8],
    ) -> Result<std::result::Result<Received, u64>> {
        if self.blocking {
            return self.recv_blocking(sub, buf);
        }
        self.poll(|| sub.try_recv_into(buf))
    }

    /// Calls `read` until it returns something other than `Empty` (counting the empty polls):
    /// `Ok(Ok(what it read))`, or `Ok(Err(missed))` for `Lagged`.
    #[inline(always)]
    fn poll<T>(
        &mut self,
        mut read: impl FnMut() -> std::result::Result<T, RecvError>,
    ) -> Result<std::result::Result<T, u64>> {
        loop {
            match read() {
                Ok(r) => return Ok(Ok(r)),
                Err(RecvError::Empty) => {
                    self.empty += 1;
                    self.spin.idle()?;
                }
                Err(RecvError::Lagged { missed }) => return Ok(Err(missed)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn recv_blocking(
        &mut self,
        sub: &mut Subscriber,
        buf: &mut [u8],
    ) -> Result<std::result::Result<Received, u64>> {
        self.received = self.received.wrapping_add(1);
        if self.received.is_multiple_of(1024) {
            self.slice_end = Instant::now() + BLOCKING_SLICE;
        }
        loop {
            match sub.recv_into_deadline(buf, self.slice_end) {
                Ok(r) => return Ok(Ok(r)),
                Err(RecvError::Timeout) => {
                    self.spin.check()?;
                    self.slice_end = Instant::now() + BLOCKING_SLICE;
                }
                Err(RecvError::Lagged { missed }) => return Ok(Err(missed)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Copies up to `max` messages into `buf` (back to back; their sequence numbers and lengths
    /// in `out`) with one call of the batched receive API. Busy-polls `try_recv_batch`, or,
    /// with a strategy, waits in `recv_batch` (which takes no deadline: a producer that stops
    /// publishing leaves it to the harness's watchdog).
    #[inline(always)]
    fn recv_batch(
        &mut self,
        sub: &mut Subscriber,
        buf: &mut [u8],
        out: &mut Vec<Received>,
        max: usize,
    ) -> Result<std::result::Result<usize, u64>> {
        if self.blocking {
            // Never `Empty`.
            return self.poll(|| sub.recv_batch(buf, out, max));
        }
        self.poll(|| sub.try_recv_batch(buf, out, max))
    }
}

/// A reader's subscriber: used directly, or as an `AsyncSubscriber` awaited on a
/// current-thread tokio runtime (see [`ShmLink::asynchronous`]).
enum Sub {
    Plain(Subscriber),
    Async(Box<(AsyncSubscriber, tokio::runtime::Runtime)>),
}

/// Receives the next message into `buf` with the async subscriber, in slices of at most
/// [`BLOCKING_SLICE`] so that the run's deadline and an interruption are noticed.
fn recv_async(
    asynch: &mut (AsyncSubscriber, tokio::runtime::Runtime),
    buf: &mut Vec<u8>,
    spin: &Spinner,
) -> Result<std::result::Result<Received, u64>> {
    let (sub, runtime) = asynch;
    loop {
        match runtime.block_on(async { tokio::time::timeout(BLOCKING_SLICE, sub.recv(buf)).await })
        {
            Err(_elapsed) => spin.check()?,
            Ok(Ok(seq)) => {
                return Ok(Ok(Received {
                    seq,
                    len: buf.len(),
                }))
            }
            Ok(Err(RecvError::Lagged { missed })) => return Ok(Err(missed)),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// The reading half of an [`ShmLink`].
struct Reader {
    sub: Sub,
    waiter: Waiter,
    /// Receive buffer: `batch` messages.
    buf: Vec<u8>,
    /// With a batch: the messages of the last call, the next one to hand out, and its offset.
    batch: usize,
    out: Vec<Received>,
    next: usize,
    offset: usize,
    calls: u64,
}

/// One side's ends of an shm link: a publisher (the harness's pings or messages, a pong
/// peer's replies) and a subscriber (a peer's input, the harness's replies), either optional.
pub struct ShmLink {
    tx: Option<Publisher>,
    payload: Payload,
    rx: Option<Reader>,
}

/// A segment of `capacity` bytes, lossless without a max block when `lossless`: a registered
/// reader that falls behind then holds the producer back for as long as it takes, so a
/// throughput run measures the pair's common rate, never an eviction.
pub fn create(name: &str, capacity: u64, lossless: bool) -> Result<Publisher> {
    let options = Publisher::options().capacity(capacity);
    let options = if lossless {
        options.lossless(true).max_block(None)
    } else {
        options
    };
    Ok(options.create(name)?)
}

impl ShmLink {
    /// A link that publishes `size`-byte messages with `tx` and/or reads with `rx`.
    pub fn new(size: usize, tx: Option<Publisher>, rx: Option<(Subscriber, Waiter)>) -> Self {
        ShmLink {
            tx,
            payload: Payload::new(size),
            rx: rx.map(|(sub, waiter)| Reader {
                sub: Sub::Plain(sub),
                waiter,
                buf: vec![0u8; size],
                batch: 1,
                out: Vec::new(),
                next: 0,
                offset: 0,
                calls: 0,
            }),
        }
    }

    /// Opens `name` from its beginning (registered when `lossless`), waiting with `wait`.
    pub fn open(
        name: &str,
        lossless: bool,
        wait: Option<WaitStrategy>,
        spin: Spinner,
    ) -> Result<(Subscriber, Waiter)> {
        // Registered: opening fails rather than read lossy, and an eviction ends the run with
        // an error (`RecvError::Evicted` from the waiter).
        let mut sub = Subscriber::options()
            .start(StartAt::Beginning)
            .lossless(lossless)
            .open(name)?;
        let waiter = Waiter::new(&mut sub, wait, spin);
        Ok((sub, waiter))
    }

    /// Reads with an `AsyncSubscriber` on a current-thread tokio runtime instead (one message
    /// per call: not with [`Self::batched`]).
    pub fn asynchronous(mut self) -> Result<Self> {
        if let Some(mut rx) = self.rx.take() {
            rx.sub = match rx.sub {
                Sub::Plain(sub) => {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()?;
                    Sub::Async(Box::new((AsyncSubscriber::new(sub)?, runtime)))
                }
                asynch => asynch,
            };
            self.rx = Some(rx);
        }
        Ok(self)
    }

    /// Receives up to `batch` messages per call of the batched receive API.
    pub fn batched(mut self, batch: u16) -> Self {
        if let Some(rx) = &mut self.rx {
            rx.batch = usize::from(batch.max(1));
            rx.buf = vec![0u8; rx.buf.len() * rx.batch];
            rx.out = Vec::with_capacity(rx.batch);
        }
        self
    }

    /// The publisher, if this side has one.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.tx.as_ref()
    }
}

impl Link for ShmLink {
    #[inline(always)]
    fn send(&mut self, counter: u64) -> Result<()> {
        let tx = self.tx.as_mut().ok_or("this shm link has no publisher")?;
        self.payload.stamp(counter);
        tx.publish(self.payload.bytes())?;
        Ok(())
    }

    #[inline(always)]
    fn recv(&mut self) -> Result<Got<'_>> {
        let rx = self.rx.as_mut().ok_or("this shm link has no subscriber")?;
        if rx.batch == 1 {
            let got = match &mut rx.sub {
                Sub::Plain(sub) => rx.waiter.recv(sub, &mut rx.buf)?,
                Sub::Async(asynch) => recv_async(asynch, &mut rx.buf, &rx.waiter.spin)?,
            };
            return Ok(match got {
                Ok(r) => Got::Msg(Some(r.seq), &rx.buf[..r.len]),
                Err(missed) => Got::Lost(missed),
            });
        }
        // A loop, not an `if`: a call that returns no message (never expected) calls again.
        let Sub::Plain(sub) = &mut rx.sub else {
            return Err("an async reader receives one message per call (no batch)".into());
        };
        while rx.next == rx.out.len() {
            let max = rx.batch;
            match rx.waiter.recv_batch(sub, &mut rx.buf, &mut rx.out, max)? {
                Ok(n) => {
                    rx.calls += 1;
                    rx.out.truncate(n);
                    (rx.next, rx.offset) = (0, 0);
                }
                Err(missed) => {
                    rx.out.clear();
                    (rx.next, rx.offset) = (0, 0);
                    return Ok(Got::Lost(missed));
                }
            }
        }
        let r = rx.out[rx.next];
        let start = rx.offset;
        rx.next += 1;
        rx.offset += r.len;
        Ok(Got::Msg(Some(r.seq), &rx.buf[start..start + r.len]))
    }

    fn expected(&self, counter: u64) -> u64 {
        self.payload.expected(counter)
    }

    fn empty_polls(&self) -> Option<u64> {
        self.rx
            .as_ref()
            .filter(|rx| !rx.waiter.blocking)
            .map(|rx| rx.waiter.empty)
    }

    fn calls(&self) -> Option<u64> {
        self.rx
            .as_ref()
            .filter(|rx| rx.batch > 1)
            .map(|rx| rx.calls)
    }

    fn wakeups(&self) -> Option<u64> {
        self.tx.as_ref().map(Publisher::wakeups)
    }
}
