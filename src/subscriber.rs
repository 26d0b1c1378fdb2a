//! The consumer side: [`Subscriber`], its [`Messages`] iterator, the zero-copy [`MessageRef`],
//! and [`SegmentInfo`].

use std::iter::FusedIterator;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::cancel::{CancelWord, Canceller};
use crate::copy;
use crate::error::{Error, RecvError};
use crate::registration::{RegisterError, Registration};
use crate::ring::{ReaderState, Ring, StartAt};
use crate::segment::{self, Location, Mapping};
use crate::sync::AtomicU64;
use crate::wait::{self, WaitStrategy};

/// What a copying read delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The message's sequence number.
    pub seq: u64,
    /// Its length in bytes (the prefix of the caller's buffer that holds it).
    pub len: usize,
}

/// A reader of a segment, in this or another process.
///
/// A subscriber maps the producer header and the ring read-only and never writes them. It reads
/// every message in order, or learns exactly how many it missed ([`RecvError::Lagged`]) and
/// continues with the oldest message still intact. It never returns a message that was partly
/// overwritten.
///
/// Messages are read in one of three forms, each with four calls:
///
/// | into | non-blocking | blocking | with a timeout | with a deadline |
/// |---|---|---|---|---|
/// | a `Vec<u8>` (resized) | [`try_recv`](Self::try_recv) | [`recv`](Self::recv) | [`recv_timeout`](Self::recv_timeout) | [`recv_deadline`](Self::recv_deadline) |
/// | a `&mut [u8]` | [`try_recv_into`](Self::try_recv_into) | [`recv_into`](Self::recv_into) | [`recv_into_timeout`](Self::recv_into_timeout) | [`recv_into_deadline`](Self::recv_into_deadline) |
/// | a [`Pod`] value | [`try_recv_pod`](Self::try_recv_pod) | [`recv_pod`](Self::recv_pod) | [`recv_pod_timeout`](Self::recv_pod_timeout) | [`recv_pod_deadline`](Self::recv_pod_deadline) |
///
/// besides [`try_read`](Self::try_read), which inspects a message in place, and
/// [`messages`](Self::messages), an iterator that ends when the producer is gone.
///
/// The blocking calls wait as the subscriber's [`WaitStrategy`] says; the default,
/// [`WaitStrategy::Block`], sleeps in the kernel until the producer publishes. They return
/// [`RecvError::ProducerGone`] once the producer has exited (or was killed) and everything it
/// published was read. To register as sleeping, a subscriber needs write
/// access to the segment file, and then maps only the subscriber page (docs/LAYOUT.md) writable.
/// Without it ([`Self::can_park`] is `false`) it still reads everything, and notices new
/// messages within about 1 ms while idle.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmcast::{Publisher, RecvError, StartAt, Subscriber};
///
/// let name = format!("/shmcast-doc-subscriber-{}", std::process::id());
/// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
/// let mut subscriber = Subscriber::open(&name, StartAt::Beginning)?;
///
/// for i in 0..1000u32 {
///     publisher.publish(&i.to_le_bytes())?;
/// }
/// let mut buf = [0u8; 64];
/// match subscriber.try_recv_into(&mut buf) {
///     Err(RecvError::Lagged { missed }) => println!("missed {missed} messages"),
///     other => panic!("a 4 KiB ring cannot hold 1000 messages: {other:?}"),
/// }
/// let received = subscriber.try_recv_into(&mut buf)?;
/// assert_eq!(&buf[..received.len], &(received.seq as u32 - 1).to_le_bytes());
/// # Ok(()) }
/// ```
pub struct Subscriber {
    mapping: Mapping,
    state: ReaderState,
    location: Location,
    wait: WaitStrategy,
    /// Registered (lossless) subscribers only.
    lossless: Option<Box<Lossless>>,
    /// Once [`Subscriber::canceller`] was called: the word its cancellers raise.
    cancel: Option<Arc<CancelWord>>,
}

/// A registered subscriber's lossless-mode state.
#[derive(Debug)]
struct Lossless {
    /// `None` once the registration ended (the producer evicted this subscriber).
    registration: Option<Registration>,
    /// What the next read returns before anything else: the eviction notice, or the messages a
    /// `Beginning` registrant passed over to reach the first protected one.
    pending: Option<RecvError>,
}

/// How to open a segment as a [`Subscriber`]. Start from [`Subscriber::options`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmcast::{Publisher, StartAt, Subscriber, WaitStrategy};
///
/// let name = format!("/shmcast-doc-options-{}", std::process::id());
/// let _publisher = Publisher::options().lossless(true).create(&name)?;
/// let subscriber = Subscriber::options()
///     .start(StartAt::Oldest)
///     .wait_strategy(WaitStrategy::Spin)
///     .lossless(true) // register: the producer will not overwrite what it has not read
///     .open(&name)?;
/// assert!(subscriber.is_registered());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SubscriberOptions {
    start: StartAt,
    wait: WaitStrategy,
    lossless: bool,
}

impl SubscriberOptions {
    /// Start at [`StartAt::Oldest`], wait with [`WaitStrategy::Block`], do not register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where to start reading (default [`StartAt::Oldest`]).
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// How blocking reads wait (default [`WaitStrategy::Block`]).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Whether to register as a lossless reader (default `false`; docs/LAYOUT.md, "Lossless
    /// mode"). Needs a segment created with
    /// [`PublisherOptions::lossless`](crate::PublisherOptions::lossless), a free reader slot and
    /// write access to the segment file; otherwise opening fails ([`Error::NotLossless`],
    /// [`Error::NoFreeSlot`], [`Error::PermissionDenied`]) rather than reading lossy.
    ///
    /// A registered subscriber receives every message from where it registered: the producer
    /// waits rather than overwrite one it has not read. It starts at `start`, or, if the
    /// producer was already about to overwrite that message when the registration took effect,
    /// at the oldest message it can still guarantee (with [`StartAt::Beginning`], the messages
    /// passed over are reported as one [`RecvError::Lagged`] first, so everything since the
    /// segment was created is still accounted for). If it holds the producer back for longer
    /// than the segment's `max_block`, the producer evicts it: it gets [`RecvError::Evicted`]
    /// once and reads on as a lossy subscriber. Dropping it unregisters it.
    pub fn lossless(mut self, register: bool) -> Self {
        self.lossless = register;
        self
    }

    /// Opens the segment called `name` (see [`Subscriber::open`] for names and paths).
    pub fn open(&self, name: &str) -> Result<Subscriber, Error> {
        Subscriber::open_at(Location::parse(name)?, self)
    }

    /// Opens the segment stored in the file at `path`.
    pub fn open_path(&self, path: impl AsRef<Path>) -> Result<Subscriber, Error> {
        Subscriber::open_at(Location::File(path.as_ref().to_path_buf()), self)
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("path", &self.location.path())
            .field("next_seq", &self.state.seq())
            .field("wait", &self.wait)
            .field("can_park", &self.can_park())
            .finish()
    }
}

impl Subscriber {
    /// Opens the segment called `name` and starts reading at `start`.
    ///
    /// `/demo` (one leading slash and no other) or `demo` (no slash at all) is the
    /// shared-memory segment `/demo` (the file `/dev/shm/demo` on Linux); a name with a '/'
    /// after its first character (`/run/app/seg`, `./seg`, `dir/seg`) is the path of a segment
    /// file, as for [`Self::open_path`]. The `shmcast` tool and the Go reader's `Open` read
    /// names the same way. An empty name, one with a NUL byte, and a shared-memory name that
    /// POSIX does not allow (`/`, `.`, `..`, longer than 255 bytes) are [`Error::InvalidName`].
    pub fn open(name: &str, start: StartAt) -> Result<Self, Error> {
        SubscriberOptions::new().start(start).open(name)
    }

    /// Options for opening a segment: where to start, how to wait, whether to register as a
    /// lossless reader.
    pub fn options() -> SubscriberOptions {
        SubscriberOptions::new()
    }

    /// Opens the segment stored in the file at `path` (whatever its name looks like).
    pub fn open_path(path: impl AsRef<Path>, start: StartAt) -> Result<Self, Error> {
        SubscriberOptions::new().start(start).open_path(path)
    }

    fn open_at(location: Location, options: &SubscriberOptions) -> Result<Self, Error> {
        let mapping = segment::open(&location)?;
        let corrupt = |e: RecvError| Error::InvalidHeader {
            path: location.path(),
            reason: e.to_string(),
        };
        let (state, lossless) = if options.lossless {
            let (registry, writable) = mapping.registry().ok_or_else(|| Error::NotLossless {
                path: location.path(),
            })?;
            if !writable {
                return Err(Error::PermissionDenied {
                    action: "register as a lossless reader of (it needs write access to)",
                    path: location.path(),
                });
            }
            let registered =
                Registration::register(registry, mapping.ring(), mapping.file(), options.start)
                    .map_err(|e| match e {
                        RegisterError::NoFreeSlot { slots } => Error::NoFreeSlot {
                            path: location.path(),
                            slots,
                        },
                        RegisterError::Join(e) => corrupt(e),
                        RegisterError::Io(source) => Error::Io {
                            action: "lock a reader slot of",
                            path: location.path(),
                            source,
                        },
                    })?;
            let pending = (options.start == StartAt::Beginning && registered.skipped > 0)
                .then_some(RecvError::Lagged {
                    missed: registered.skipped,
                });
            let lossless = Lossless {
                registration: Some(registered.registration),
                pending,
            };
            (registered.state, Some(Box::new(lossless)))
        } else {
            (mapping.ring().join(options.start).map_err(corrupt)?, None)
        };
        Ok(Subscriber {
            mapping,
            state,
            location,
            wait: options.wait,
            lossless,
            cancel: None,
        })
    }

    /// Whether this subscriber is registered as a lossless reader (it asked to, and has not
    /// been evicted).
    pub fn is_registered(&self) -> bool {
        self.lossless
            .as_ref()
            .is_some_and(|l| l.registration.is_some())
    }

    /// The reader slot this subscriber holds, if registered.
    pub fn slot(&self) -> Option<usize> {
        self.lossless
            .as_ref()
            .and_then(|l| l.registration.as_ref().map(Registration::slot))
    }

    /// Runs one read attempt, and for a registered subscriber the lossless bookkeeping around
    /// it. A lossy subscriber pays one branch.
    #[inline]
    fn read_once<T>(
        &mut self,
        op: impl FnOnce(Ring<'_>, &mut ReaderState) -> Result<T, RecvError>,
    ) -> Result<T, RecvError> {
        match &mut self.lossless {
            None => op(self.mapping.ring(), &mut self.state),
            Some(lossless) => registered_read(lossless, &self.mapping, &mut self.state, op),
        }
    }

    /// Copies the next message into `buf` (resized to the message's length) without blocking
    /// and returns its sequence number. Reusing the same `Vec` allocates only when a message is
    /// longer than any before it.
    ///
    /// Returns [`RecvError::Empty`] if there is none yet and [`RecvError::Lagged`] if messages
    /// were lost (read again to continue).
    #[inline]
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<u64, RecvError> {
        self.read_once(|ring, st| ring.read_to_vec(st, buf))
    }

    /// Like [`Self::try_recv`], but waits for a message as the [`WaitStrategy`] says. Never
    /// returns [`RecvError::Empty`]; returns [`RecvError::ProducerGone`] once the producer has
    /// exited and everything it published was read.
    #[inline]
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<u64, RecvError> {
        self.wait_for(None, |ring, st| ring.read_to_vec(st, buf))
    }

    /// Like [`Self::recv`], but gives up with [`RecvError::Timeout`] after `timeout`.
    #[inline]
    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<u64, RecvError> {
        self.wait_for(deadline_after(timeout), |ring, st| {
            ring.read_to_vec(st, buf)
        })
    }

    /// Like [`Self::recv`], but gives up with [`RecvError::Timeout`] at `deadline`. One deadline
    /// can bound a whole batch of reads:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::{Duration, Instant};
    /// use shmcast::{Publisher, RecvError, StartAt, Subscriber};
    ///
    /// let name = format!("/shmcast-doc-deadline-{}", std::process::id());
    /// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
    /// let mut subscriber = Subscriber::open(&name, StartAt::Next)?;
    /// publisher.publish(b"one")?;
    /// publisher.publish(b"two")?;
    ///
    /// let deadline = Instant::now() + Duration::from_millis(50);
    /// let mut batch = Vec::new();
    /// let mut buf = Vec::new();
    /// loop {
    ///     match subscriber.recv_deadline(&mut buf, deadline) {
    ///         Ok(_) => batch.push(buf.clone()),
    ///         Err(RecvError::Timeout) => break,
    ///         Err(e) => return Err(e.into()),
    ///     }
    /// }
    /// assert_eq!(batch, [b"one", b"two"]);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn recv_deadline(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<u64, RecvError> {
        self.wait_for(Some(deadline), |ring, st| ring.read_to_vec(st, buf))
    }

    /// Copies the next message into `buf` without blocking.
    ///
    /// Returns [`RecvError::Empty`] if there is none yet, [`RecvError::Lagged`] if messages
    /// were lost (read again to continue), and [`RecvError::BufferTooSmall`] (the message stays
    /// unread) if `buf` is shorter than the message. A buffer of [`Self::max_payload`] bytes
    /// holds any message.
    #[inline]
    pub fn try_recv_into(&mut self, buf: &mut [u8]) -> Result<Received, RecvError> {
        self.read_once(|ring, st| read_into(ring, st, buf))
    }

    /// Like [`Self::try_recv_into`], but waits for a message as the [`WaitStrategy`] says.
    /// Never returns [`RecvError::Empty`]; returns [`RecvError::ProducerGone`] once the
    /// producer has exited and everything it published was read.
    #[inline]
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<Received, RecvError> {
        self.wait_for(None, |ring, st| read_into(ring, st, buf))
    }

    /// Like [`Self::recv_into`], but gives up with [`RecvError::Timeout`] after `timeout`.
    #[inline]
    pub fn recv_into_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Received, RecvError> {
        self.wait_for(deadline_after(timeout), |ring, st| read_into(ring, st, buf))
    }

    /// Like [`Self::recv_into`], but gives up with [`RecvError::Timeout`] at `deadline`.
    #[inline]
    pub fn recv_into_deadline(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<Received, RecvError> {
        self.wait_for(Some(deadline), |ring, st| read_into(ring, st, buf))
    }

    /// Copies up to `max` messages at once, back to back into `buf`, and puts each one's
    /// sequence number and length in `out` (cleared first, and not reallocated once it has room
    /// for `max`); returns how many. Message `i` is
    /// `buf[offset_i .. offset_i + out[i].len]`, where `offset_i` is the sum of the lengths
    /// before it. Without blocking: [`RecvError::Empty`] if there is no message.
    ///
    /// All the copies are validated against the producer with one check at the end, so a
    /// batch costs less per message than as many [`Self::try_recv_into`] calls. A batch stops
    /// early at the first message that does not fit in the rest of `buf` (a buffer of
    /// [`Self::max_payload`] bytes holds at least one); [`RecvError::Lagged`] and the other
    /// errors come as from [`Self::try_recv_into`], with nothing copied.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shmcast::{Publisher, StartAt, Subscriber};
    ///
    /// let name = format!("/shmcast-doc-batch-{}", std::process::id());
    /// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
    /// let mut subscriber = Subscriber::open(&name, StartAt::Next)?;
    /// for word in ["one", "two", "three"] {
    ///     publisher.publish(word.as_bytes())?;
    /// }
    /// let (mut buf, mut out) = (vec![0u8; subscriber.max_payload()], Vec::new());
    /// let n = subscriber.try_recv_batch(&mut buf, &mut out, 64)?;
    /// let mut offset = 0;
    /// let mut words = Vec::new();
    /// for received in &out[..n] {
    ///     words.push(std::str::from_utf8(&buf[offset..offset + received.len])?.to_owned());
    ///     offset += received.len;
    /// }
    /// assert_eq!(words, ["one", "two", "three"]);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn try_recv_batch(
        &mut self,
        buf: &mut [u8],
        out: &mut Vec<Received>,
        max: usize,
    ) -> Result<usize, RecvError> {
        self.read_once(|ring, st| ring.read_batch(st, buf, out, max, received))
    }

    /// Like [`Self::try_recv_batch`], but waits for at least one message as the
    /// [`WaitStrategy`] says. Never returns [`RecvError::Empty`]; returns
    /// [`RecvError::ProducerGone`] once the producer has exited and everything it published
    /// was read.
    #[inline]
    pub fn recv_batch(
        &mut self,
        buf: &mut [u8],
        out: &mut Vec<Received>,
        max: usize,
    ) -> Result<usize, RecvError> {
        self.wait_for(None, |ring, st| {
            ring.read_batch(st, buf, out, max, received)
        })
    }

    /// Reads the next message as a plain-old-data value without blocking. A message whose size
    /// is not `size_of::<T>()` is consumed and reported as [`RecvError::SizeMismatch`].
    /// Otherwise as [`Self::try_recv`].
    pub fn try_recv_pod<T: Pod>(&mut self) -> Result<(u64, T), RecvError> {
        self.read_once(read_pod)
    }

    /// Like [`Self::try_recv_pod`], but waits for a message as the [`WaitStrategy`] says.
    /// Never returns [`RecvError::Empty`]; returns [`RecvError::ProducerGone`] once the
    /// producer has exited and everything it published was read.
    pub fn recv_pod<T: Pod>(&mut self) -> Result<(u64, T), RecvError> {
        self.wait_for(None, read_pod)
    }

    /// Like [`Self::recv_pod`], but gives up with [`RecvError::Timeout`] after `timeout`.
    pub fn recv_pod_timeout<T: Pod>(&mut self, timeout: Duration) -> Result<(u64, T), RecvError> {
        self.wait_for(deadline_after(timeout), read_pod)
    }

    /// Like [`Self::recv_pod`], but gives up with [`RecvError::Timeout`] at `deadline`.
    pub fn recv_pod_deadline<T: Pod>(&mut self, deadline: Instant) -> Result<(u64, T), RecvError> {
        self.wait_for(Some(deadline), read_pod)
    }

    /// Inspects the next message in place, without copying it, and returns its sequence number
    /// with what `f` returned.
    ///
    /// `f` may see bytes the producer is overwriting at that moment; if so its result is
    /// discarded and [`RecvError::Lagged`] is returned. So `f` must not act on the bytes
    /// irrevocably (or panic on surprising values) before this method returns `Ok`.
    pub fn try_read<R>(
        &mut self,
        f: impl FnOnce(MessageRef<'_>) -> R,
    ) -> Result<(u64, R), RecvError> {
        self.read_once(|ring, st| {
            let candidate = ring.peek(st)?;
            let result = f(MessageRef {
                words: ring.payload(&candidate),
                len: candidate.len(),
                seq: candidate.seq(),
            });
            ring.confirm(st, &candidate)?;
            Ok((candidate.seq(), result))
        })
    }

    /// The messages from here on, as an iterator of `(seq, payload)`: each item is read with
    /// [`Self::recv`], so it waits as the [`WaitStrategy`] says, and each payload is a new
    /// `Vec` (use the `recv` calls with one reused buffer to avoid an allocation per message).
    ///
    /// - [`RecvError::Lagged`] is an `Err` item; iteration continues with the oldest message
    ///   still retained.
    /// - [`RecvError::ProducerGone`] ends the iteration (`None`): the producer has exited and
    ///   everything it published was delivered, the normal end of a stream. To tell whether a
    ///   new producer has taken the name over, call [`Self::recv`] afterwards: it returns
    ///   `ProducerGone { replaced }` again (within about [`wait::LIVENESS_INTERVAL`]), and
    ///   `replaced` says whether to open the name again.
    /// - Any other error (a corrupt segment) is the last item.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shmcast::{Publisher, RecvError, StartAt, Subscriber};
    ///
    /// let name = format!("/shmcast-doc-messages-{}", std::process::id());
    /// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
    /// let mut subscriber = Subscriber::open(&name, StartAt::Beginning)?;
    /// for word in ["alpha", "beta", "gamma"] {
    ///     publisher.publish(word.as_bytes())?;
    /// }
    /// drop(publisher); // the producer is done: the stream ends after its last message
    ///
    /// let mut words = Vec::new();
    /// for message in subscriber.messages() {
    ///     let (_seq, payload) = message?;
    ///     words.push(String::from_utf8(payload)?);
    /// }
    /// assert_eq!(words, ["alpha", "beta", "gamma"]);
    /// // Removed, not replaced by a new producer's segment.
    /// assert_eq!(
    ///     subscriber.recv(&mut Vec::new()),
    ///     Err(RecvError::ProducerGone { replaced: false })
    /// );
    /// # Ok(()) }
    /// ```
    pub fn messages(&mut self) -> Messages<'_> {
        Messages {
            subscriber: self,
            ended: false,
        }
    }

    #[inline]
    fn wait_for<T>(
        &mut self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(Ring<'_>, &mut ReaderState) -> Result<T, RecvError>,
    ) -> Result<T, RecvError> {
        let (ring, mapping, location, state, lossless) = (
            self.mapping.ring(),
            &self.mapping,
            &self.location,
            &mut self.state,
            &mut self.lossless,
        );
        let cancel = self.cancel.as_deref().map(CancelWord::word);
        let result = wait::wait_for(
            self.wait,
            || mapping.wake_words().with_cancel(cancel),
            deadline,
            // A registered subscriber publishes its progress whenever it finds nothing to
            // read, so before it parks too.
            || match lossless {
                None => attempt(ring, state),
                Some(l) => registered_read(l, mapping, state, &mut attempt),
            },
            || segment_problem(mapping, location),
        );
        match result {
            // Nothing was left to read once the producer was known to be gone: check that the
            // stream ended where the producer's last record does (`docs/LAYOUT.md`, "End of
            // stream").
            Err(RecvError::ProducerGone { .. }) => ring.check_end(state).and(result),
            other => other,
        }
    }

    /// The segment's mapping (for the async subscriber: its wake-up words and file).
    #[cfg(feature = "async")]
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// After nothing was found to read: `Some` if the producer is gone, checked against the
    /// end of the stream as the blocking reads do (`docs/LAYOUT.md`, "End of stream").
    #[cfg(feature = "async")]
    pub(crate) fn producer_gone(&self) -> Option<RecvError> {
        let gone = segment_problem(&self.mapping, &self.location)?;
        Some(match self.mapping.ring().check_end(&self.state) {
            Ok(()) => gone,
            Err(corrupt) => corrupt,
        })
    }

    /// How the blocking calls wait for a message. See [`WaitStrategy`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use shmcast::{Publisher, StartAt, Subscriber, WaitStrategy};
    ///
    /// let name = format!("/shmcast-doc-wait-{}", std::process::id());
    /// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
    /// let mut subscriber = Subscriber::open(&name, StartAt::Next)?;
    /// subscriber.set_wait_strategy(WaitStrategy::Block); // the default: no CPU while idle
    /// let consumer = std::thread::spawn(move || {
    ///     let mut buf = Vec::new();
    ///     let seq = subscriber.recv_timeout(&mut buf, Duration::from_secs(10));
    ///     seq.map(|seq| (seq, buf))
    /// });
    /// std::thread::sleep(Duration::from_millis(20)); // the consumer is asleep by now
    /// publisher.publish(b"wake up")?; // finds it parked: one FUTEX_WAKE
    /// let (seq, buf) = consumer.join().unwrap()?;
    /// assert_eq!((seq, &buf[..]), (1, &b"wake up"[..]));
    /// # Ok(()) }
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }

    /// The current [`WaitStrategy`] ([`WaitStrategy::Block`] unless changed).
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Whether this subscriber can register as parked, so that the producer wakes it as soon as
    /// it publishes. `false` when the process has only read access to the segment file; a
    /// [`WaitStrategy::Block`] subscriber then polls at most every [`wait::MAX_SLEEP`].
    pub fn can_park(&self) -> bool {
        self.mapping.wake_words().can_park()
    }

    /// Whether the segment's producer is still running: it holds a lock on the segment that
    /// the kernel releases when it exits or is killed (docs/LAYOUT.md, "Producer liveness").
    /// One system call; it does not disturb the producer. Blocking reads check it by themselves
    /// and return [`RecvError::ProducerGone`] within about [`wait::LIVENESS_INTERVAL`] of the
    /// producer's death, once everything it published was read.
    pub fn producer_alive(&self) -> bool {
        self.mapping.producer_alive()
    }

    /// The sequence number of the next message this subscriber expects.
    pub fn next_seq(&self) -> u64 {
        self.state.seq()
    }

    /// A handle that cancels this subscriber's blocking reads from another thread: they
    /// return [`RecvError::Cancelled`] instead of waiting (see [`Canceller`]). Every call
    /// returns a handle to the same cancellation.
    pub fn canceller(&mut self) -> Canceller {
        Canceller::new(self.cancel.get_or_insert_with(Default::default).clone())
    }

    /// How many published messages this subscriber has not read yet (including any the
    /// producer has already overwritten, which a read will report as [`RecvError::Lagged`]).
    /// Read from the mapping, without a system call; a snapshot while the producer runs.
    pub fn lag(&self) -> u64 {
        self.progress().lag
    }

    /// The changing fields of [`Self::info`] and this subscriber's lag, read from the mapping
    /// without a system call (cheap enough to call per message).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shmcast::{Publisher, StartAt, Subscriber};
    ///
    /// let name = format!("/shmcast-doc-progress-{}", std::process::id());
    /// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
    /// let mut subscriber = Subscriber::open(&name, StartAt::Oldest)?;
    /// for i in 0..3u8 {
    ///     publisher.publish(&[i])?;
    /// }
    /// subscriber.try_recv(&mut Vec::new())?;
    /// let progress = subscriber.progress();
    /// assert_eq!((progress.next_seq, progress.oldest_seq, progress.lag), (4, Some(1), 2));
    /// # Ok(()) }
    /// ```
    pub fn progress(&self) -> Progress {
        let snap = self.mapping.ring().snapshot();
        Progress {
            next_seq: snap.next_seq,
            oldest_seq: snap.oldest_seq,
            lag: snap.next_seq.saturating_sub(self.state.seq()),
            last_publish_unix_ns: self.mapping.last_publish_ns(),
        }
    }

    /// The ring capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.mapping.ring().capacity()
    }

    /// The largest payload the segment accepts.
    pub fn max_payload(&self) -> usize {
        self.mapping.ring().max_payload() as usize
    }

    /// The segment's file.
    pub fn path(&self) -> PathBuf {
        self.location.path()
    }

    /// A snapshot of the segment's header. While the producer runs the values move on; they are
    /// for display, not for synchronisation.
    pub fn info(&self) -> SegmentInfo {
        segment_info(&self.mapping, self.location.path())
    }
}

/// The header of the segment mapped by `mapping`, whose file is `path`; see [`Subscriber::info`].
pub(crate) fn segment_info(mapping: &Mapping, path: PathBuf) -> SegmentInfo {
    let id = mapping.identity();
    let ring = mapping.ring();
    let snap = ring.snapshot();
    let registry = mapping.registry().map(|(registry, _)| registry);
    let (wake_seq, parked, throttle) = mapping.wake_words().values();
    SegmentInfo {
        path,
        version: id.version,
        capacity: id.capacity,
        max_payload: ring.max_payload(),
        epoch: id.epoch,
        producer_pid: id.producer_pid,
        created_unix_ns: id.created_unix_ns,
        last_publish_unix_ns: mapping.last_publish_ns(),
        producer_alive: mapping.producer_alive(),
        next_seq: snap.next_seq,
        oldest_seq: snap.oldest_seq,
        intent: snap.intent,
        head: snap.head,
        latest: snap.latest,
        lossless: registry.is_some(),
        gap_records: id.flags & crate::layout::FLAG_GAPS != 0,
        reader_slots: registry.map_or(0, |r| r.len()),
        max_block: (registry.is_some() && id.max_block_ns != 0)
            .then(|| Duration::from_nanos(id.max_block_ns)),
        evictions: registry.map_or(0, |r| r.evictions()),
        readers: registry.map_or_else(Vec::new, |r| r.readers(snap.next_seq, ring.approx_tail())),
        wake_seq,
        parked: parked != 0,
        wake_throttled: throttle != 0,
    }
}

/// One read attempt of a registered subscriber (docs/LAYOUT.md, "Reader progress"): what is
/// pending first, then the read, then progress: every `capacity / 8` bytes after a read, and
/// whatever is unpublished when there is nothing to read. An eviction ends the registration;
/// it is reported instead of `Empty`, or on the next read after a message.
#[inline]
fn registered_read<T>(
    lossless: &mut Lossless,
    mapping: &Mapping,
    st: &mut ReaderState,
    op: impl FnOnce(Ring<'_>, &mut ReaderState) -> Result<T, RecvError>,
) -> Result<T, RecvError> {
    // Look before taking: `take` would store to memory on every read.
    if lossless.pending.is_some() {
        if let Some(pending) = lossless.pending.take() {
            return Err(pending);
        }
    }
    let result = op(mapping.ring(), st);
    let Some(registration) = lossless.registration.as_mut() else {
        return result;
    };
    let (Some((registry, _)), Some(words)) = (mapping.registry(), mapping.gate_words()) else {
        return result;
    };
    let progress = match &result {
        Ok(_) if registration.batch_due(st) => registration.publish(registry, words, st, false),
        Err(RecvError::Empty) if registration.idle_due(st) => {
            registration.publish(registry, words, st, true)
        }
        // A registered reader is lapped only once the producer has evicted it: say that first.
        Err(RecvError::Lagged { .. }) => registration.check(registry),
        _ => return result,
    };
    match progress {
        Ok(()) => result,
        Err(evicted) => {
            if let Some(registration) = lossless.registration.take() {
                registration.release(registry, Some(words), mapping.file());
            }
            match result {
                Ok(value) => {
                    lossless.pending = Some(evicted);
                    Ok(value)
                }
                Err(lagged @ RecvError::Lagged { .. }) => {
                    lossless.pending = Some(lagged);
                    Err(evicted)
                }
                Err(_) => Err(evicted),
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let registration = self.lossless.as_mut().and_then(|l| l.registration.take());
        if let (Some(registration), Some((registry, _))) = (registration, self.mapping.registry()) {
            registration.release(registry, self.mapping.gate_words(), self.mapping.file());
        }
    }
}

/// What an idle blocking read checks now and then (`wait::LIVENESS_INTERVAL`): a dead producer
/// ends it.
fn segment_problem(mapping: &Mapping, location: &Location) -> Option<RecvError> {
    if mapping.producer_alive() {
        return None;
    }
    // "Replaced" only if another file now has the name (not merely removed).
    let replaced = location.path().exists() && !mapping.still_at(location);
    Some(RecvError::ProducerGone { replaced })
}

/// The deadline `timeout` from now; `None` (no deadline) if that is too far to represent.
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// A [`Received`] from a sequence number and a length.
fn received(seq: u64, len: usize) -> Received {
    Received { seq, len }
}

/// Copies the next message into `buf`; see [`Subscriber::try_recv_into`].
#[inline]
fn read_into(
    ring: Ring<'_>,
    state: &mut ReaderState,
    buf: &mut [u8],
) -> Result<Received, RecvError> {
    let (seq, len) = ring.read_into(state, buf)?;
    Ok(Received { seq, len })
}

/// Reads the next message as a `T`; see [`Subscriber::try_recv_pod`].
fn read_pod<T: Pod>(ring: Ring<'_>, state: &mut ReaderState) -> Result<(u64, T), RecvError> {
    let candidate = ring.peek(state)?;
    let expected = std::mem::size_of::<T>();
    if candidate.len() != expected {
        ring.confirm(state, &candidate)?;
        return Err(RecvError::SizeMismatch {
            seq: candidate.seq(),
            expected,
            actual: candidate.len(),
        });
    }
    let mut value = T::zeroed();
    copy::copy_out(ring.payload(&candidate), bytemuck::bytes_of_mut(&mut value));
    ring.confirm(state, &candidate)?;
    Ok((candidate.seq(), value))
}

/// Where the producer is and how far behind a subscriber is: [`Subscriber::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Sequence number the next message will get (1 if nothing was published), as in
    /// [`SegmentInfo::next_seq`].
    pub next_seq: u64,
    /// Sequence number of the oldest retained message, if any.
    pub oldest_seq: Option<u64>,
    /// Messages published that the subscriber has not read: `next_seq` minus
    /// [`Subscriber::next_seq`] (0 when it is caught up).
    pub lag: u64,
    /// As [`SegmentInfo::last_publish_unix_ns`].
    pub last_publish_unix_ns: Option<u64>,
}

/// The header of a segment as [`Subscriber::info`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The segment's file.
    pub path: PathBuf,
    /// Layout version.
    pub version: u32,
    /// Ring capacity in bytes.
    pub capacity: u64,
    /// Largest payload accepted.
    pub max_payload: u64,
    /// Producer generation (1 at creation).
    pub epoch: u64,
    /// Process id of the producer that created the segment.
    pub producer_pid: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// When the producer last showed activity, nanoseconds since the Unix epoch: a recent
    /// publish (its first, every 64th, and any that woke sleeping subscribers) or a
    /// [`Publisher::heartbeat`](crate::Publisher::heartbeat). `None` before the first publish.
    pub last_publish_unix_ns: Option<u64>,
    /// Whether the producer holds its liveness lock ([`Subscriber::producer_alive`]).
    pub producer_alive: bool,
    /// Sequence number the next message will get (1 if nothing was published).
    pub next_seq: u64,
    /// Sequence number of the oldest retained message, if any.
    pub oldest_seq: Option<u64>,
    /// The producer's `intent` position.
    pub intent: u64,
    /// Position of the oldest retained record.
    pub head: u64,
    /// Position of the newest message, if any.
    pub latest: Option<u64>,
    /// Whether the segment is lossless (subscribers may register).
    pub lossless: bool,
    /// Whether the segment may hold gap records: losses before its messages reached it, which
    /// subscribers get as [`RecvError::Lagged`] ([`crate::PublisherOptions::gap_records`]).
    pub gap_records: bool,
    /// Number of reader slots (0 on a lossy segment).
    pub reader_slots: usize,
    /// How long a registered reader may hold the producer back before it is evicted (`None`:
    /// never, or a lossy segment).
    pub max_block: Option<Duration>,
    /// How many registered readers the producer has evicted (stuck) or reclaimed (dead).
    pub evictions: u64,
    /// The registered readers, with their lag (lossless segments).
    pub readers: Vec<crate::RegisteredReader>,
    /// The futex word `wake_seq`: how many times (wrapping at 2^32) the producer has woken
    /// parked readers or started a throttle (docs/LAYOUT.md, "Waiting and waking").
    pub wake_seq: u32,
    /// Whether some reader may be parked (`parked` is not zero; it says nothing of how many).
    pub parked: bool,
    /// Whether the producer is throttling its wake-up calls (`wake_throttle`).
    pub wake_throttled: bool,
}

/// The messages of a [`Subscriber`], read one by one with [`Subscriber::recv`]: see
/// [`Subscriber::messages`]. Items are `(seq, payload)` or a [`RecvError::Lagged`]; the
/// iterator ends when the producer is gone and everything it published was delivered.
#[derive(Debug)]
pub struct Messages<'a> {
    subscriber: &'a mut Subscriber,
    ended: bool,
}

impl Iterator for Messages<'_> {
    type Item = Result<(u64, Vec<u8>), RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let mut buf = Vec::new();
        match self.subscriber.recv(&mut buf) {
            Ok(seq) => Some(Ok((seq, buf))),
            Err(notice @ (RecvError::Lagged { .. } | RecvError::Evicted)) => Some(Err(notice)),
            Err(RecvError::ProducerGone { .. }) => {
                self.ended = true;
                None
            }
            Err(e) => {
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for Messages<'_> {}

/// A message inspected in place by [`Subscriber::try_read`].
///
/// It reads the shared ring word by word with atomic loads; it is not a `&[u8]`, because the
/// producer may be overwriting the memory. What it returns is only trustworthy once
/// `try_read` has returned `Ok`.
#[derive(Clone, Copy)]
pub struct MessageRef<'a> {
    words: &'a [AtomicU64],
    len: usize,
    seq: u64,
}

impl MessageRef<'_> {
    /// The message's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the first `min(len, dst.len())` bytes into `dst` and returns how many.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        copy::copy_out(self.words, &mut dst[..n]);
        n
    }

    /// Copies `dst.len()` bytes starting at `offset`; returns `false` (copying nothing) if that
    /// range is not inside the message.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> bool {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len => {
                copy::copy_range(self.words, offset, dst);
                true
            }
            _ => false,
        }
    }

    /// The byte at `index`, if inside the message.
    pub fn get(&self, index: usize) -> Option<u8> {
        let mut b = [0u8; 1];
        self.read_at(index, &mut b).then_some(b[0])
    }

    /// A copy of the whole message.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        copy::copy_out(self.words, &mut v);
        v
    }
}

impl std::fmt::Debug for MessageRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageRef")
            .field("seq", &self.seq)
            .field("len", &self.len)
            .finish()
    }
}
