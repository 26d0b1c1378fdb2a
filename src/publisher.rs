//! The producer side: [`Publisher`], its [`PublisherOptions`], and zero-copy [`Claim`]s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::copy;
use crate::error::Error;
use crate::gate::{
    Gate, Patience, DEFAULT_MAX_BLOCK, DEFAULT_PROBE_INTERVAL, DEFAULT_READER_SLOTS,
};
use crate::registry::RegisteredReader;
use crate::ring::{Reservation, Ring, WriterState};
use crate::segment::{self, Location, Mapping};
use crate::sync::AtomicU64;
use crate::wait::WakeState;

/// Default ring capacity: 1 MiB.
pub const DEFAULT_CAPACITY: u64 = 1 << 20;
/// Default file mode of a new segment: readable and writable by its owner only.
pub const DEFAULT_MODE: u32 = 0o600;

/// How to create a segment. Start from [`Publisher::options`] or [`PublisherOptions::new`].
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    capacity: u64,
    mode: u32,
    unlink_on_drop: bool,
    replace_stale: bool,
    membarrier: bool,
    write_prefetch: bool,
    lossless: bool,
    reader_slots: u64,
    max_block: Option<Duration>,
    probe_interval: Duration,
    gap_records: bool,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            capacity: DEFAULT_CAPACITY,
            mode: DEFAULT_MODE,
            unlink_on_drop: true,
            replace_stale: true,
            membarrier: true,
            write_prefetch: true,
            lossless: false,
            reader_slots: DEFAULT_READER_SLOTS,
            max_block: Some(DEFAULT_MAX_BLOCK),
            probe_interval: DEFAULT_PROBE_INTERVAL,
            gap_records: false,
        }
    }
}

impl PublisherOptions {
    /// Capacity 1 MiB, mode `0o600`, segment removed when the publisher is dropped, a dead
    /// producer's segment replaced, `membarrier` and the write prefetch used where available.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ring capacity in bytes: a power of two from 4096 to 2^40. The largest message is
    /// `capacity / 4 - 16` bytes.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// File mode of the new segment (applied exactly, regardless of the umask). Readers need
    /// read permission only.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Whether dropping the [`Publisher`] removes the segment's name (default `true`).
    /// Subscribers that already mapped it keep reading what was published.
    pub fn unlink_on_drop(mut self, unlink: bool) -> Self {
        self.unlink_on_drop = unlink;
        self
    }

    /// Whether creating over a segment whose producer died removes that segment and creates a
    /// new one (default `true`). Its subscribers then get [`RecvError::ProducerGone`] once they
    /// have read what the dead producer published, and must open the name again to follow the
    /// new producer. See [`Self::create`].
    ///
    /// [`RecvError::ProducerGone`]: crate::RecvError::ProducerGone
    pub fn replace_stale(mut self, replace: bool) -> Self {
        self.replace_stale = replace;
        self
    }

    /// Whether the publisher registers for `membarrier(2)` where the kernel allows it (default
    /// `true`). Registered, it publishes without a full memory fence, and a subscriber about to
    /// sleep calls `membarrier` instead (a few microseconds per sleep rather than a fence per
    /// publish; docs/LAYOUT.md, "Waiting and waking"). With `false`, or where the kernel (or a
    /// seccomp filter) refuses the call, every publish fences; subscribers are woken either way.
    ///
    /// The environment variable `SHMCAST_NO_MEMBARRIER`, set in the producer's process, turns
    /// it off too, without recompiling: off wins, whichever of the two says so.
    pub fn membarrier(mut self, enabled: bool) -> Self {
        self.membarrier = enabled;
        self
    }

    /// Whether publishing prefetches the ring's next cache lines for writing (`PREFETCHW`,
    /// on x86-64 CPUs that have it; default `true`), so the stores that fill them need not wait
    /// for subscribers' cores to give them up. It only changes speed (docs/BENCHMARKS.md), never
    /// what is published.
    ///
    /// The environment variable `SHMCAST_NO_PREFETCH`, set in the producer's process, turns it
    /// off too, without recompiling: off wins, whichever of the two says so.
    pub fn write_prefetch(mut self, enabled: bool) -> Self {
        self.write_prefetch = enabled;
        self
    }

    /// Whether the segment is lossless (default `false`; docs/LAYOUT.md, "Lossless mode").
    ///
    /// On a lossless segment, subscribers may *register*
    /// ([`SubscriberOptions::lossless`](crate::SubscriberOptions::lossless)); the producer then
    /// never overwrites a message a live registered subscriber has not read: [`Publisher::publish`]
    /// waits instead, [`Publisher::try_publish`] fails with [`Error::Backpressure`]. A registered
    /// subscriber that dies releases the producer within [`Self::probe_interval`]; one that holds
    /// it back longer than [`Self::max_block`] is evicted and continues as a lossy reader. With no
    /// subscriber registered the producer runs as on a lossy segment. Unregistered subscribers
    /// are lossy as ever. Readers built before lossless mode refuse lossless segments.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shmcast::{Error, Publisher, Subscriber, StartAt};
    ///
    /// let name = format!("/shmcast-doc-lossless-{}", std::process::id());
    /// let mut publisher = Publisher::options().capacity(4096).lossless(true).create(&name)?;
    /// let mut subscriber = Subscriber::options().lossless(true).open(&name)?;
    /// // The ring holds a few dozen of these; the producer will not overwrite any unread one.
    /// let mut published = 0;
    /// while let Ok(_) = publisher.try_publish(&[7u8; 100]) {
    ///     published += 1;
    /// }
    /// assert!(matches!(publisher.try_publish(&[7u8; 100]), Err(Error::Backpressure { .. })));
    /// let mut buf = Vec::new();
    /// for _ in 0..published {
    ///     subscriber.try_recv(&mut buf)?; // every one is there: no `Lagged`
    /// }
    /// # let _ = StartAt::Next;
    /// # Ok(()) }
    /// ```
    pub fn lossless(mut self, enabled: bool) -> Self {
        self.lossless = enabled;
        self
    }

    /// Number of reader slots of a lossless segment: how many subscribers can register at once
    /// (default and maximum 31, all the subscriber area holds).
    pub fn reader_slots(mut self, slots: u64) -> Self {
        self.reader_slots = slots;
        self
    }

    /// How long a live registered subscriber may hold the producer back before the producer
    /// evicts it (it then reads on as a lossy subscriber, told exactly what it lost): default
    /// [`DEFAULT_MAX_BLOCK`], 2 s. `None`: never evict a live subscriber, so a stopped one
    /// (SIGSTOP, a debugger) stops the producer until it goes on or dies.
    pub fn max_block(mut self, max_block: Option<Duration>) -> Self {
        self.max_block = max_block;
        self
    }

    /// How often a producer held back by a registered subscriber tests whether that subscriber
    /// is still alive (default [`DEFAULT_PROBE_INTERVAL`], 5 ms; one `fcntl` call, made only
    /// while held back). A subscriber that dies releases the producer within about this long.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Whether the segment may hold gap records ([`Publisher::publish_gap`]): notes that
    /// messages were lost before they reached it, which readers report as
    /// [`RecvError::Lagged`](crate::RecvError::Lagged). For segments fed from elsewhere, such as
    /// a bridge from the network. Off by default: readers written before gap records existed
    /// refuse such a segment (`flags` bit 1, docs/LAYOUT.md "Gap records") rather than misread
    /// it.
    pub fn gap_records(mut self, enabled: bool) -> Self {
        self.gap_records = enabled;
        self
    }

    /// Creates the segment called `name`: a shared-memory segment for `/demo` or `demo` (the
    /// file `/dev/shm/demo` on Linux), a file for a name with a '/' after its first character
    /// (`/run/app/seg`, `./seg`); see [`Subscriber::open`] for the rule.
    ///
    /// Creation is exclusive: a publisher never adopts a file it did not make, and holds a lock
    /// on the segment for as long as it lives (docs/LAYOUT.md, "Producer liveness"). If the name
    /// is taken:
    /// - by a segment whose producer is alive: [`Error::ProducerAlive`], naming its PID;
    /// - by a segment whose producer has exited or was killed: it is replaced by a new, empty
    ///   segment (unless [`Self::replace_stale`] is off, then [`Error::AlreadyExists`]);
    /// - by anything else (not a shmcast segment, or one whose creator died before finishing
    ///   it): [`Error::AlreadyExists`]; nothing is removed.
    ///
    /// [`Subscriber::open`]: crate::Subscriber::open
    pub fn create(&self, name: &str) -> Result<Publisher, Error> {
        self.create_at(Location::parse(name)?)
    }

    /// Creates a segment as a regular file at `path` (exclusive, like [`Self::create`]).
    pub fn create_path(&self, path: impl AsRef<Path>) -> Result<Publisher, Error> {
        self.create_at(Location::File(path.as_ref().to_path_buf()))
    }

    fn create_at(&self, location: Location) -> Result<Publisher, Error> {
        let lossless = if self.lossless {
            if !(1..=crate::layout::MAX_READER_SLOTS).contains(&self.reader_slots) {
                return Err(Error::InvalidOption {
                    option: "reader_slots",
                    reason: "a lossless segment has 1 to 31 reader slots",
                });
            }
            Some(segment::LosslessHeader {
                reader_slots: self.reader_slots,
                max_block_ns: self.max_block.map_or(0, |d| {
                    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
                }),
            })
        } else {
            None
        };
        let mapping = segment::create(
            &location,
            self.capacity,
            self.mode,
            self.replace_stale,
            self.membarrier,
            lossless,
            self.gap_records,
        )?;
        let max_payload = mapping.ring().max_payload() as usize;
        let mut state = if self.write_prefetch {
            WriterState::new()
        } else {
            WriterState::new().without_prefetch()
        };
        let gate = mapping.registry().map(|(registry, _)| {
            let mut gate = Gate::new(self.probe_interval, self.max_block);
            gate.start(registry, &mut state, mapping.ring().capacity());
            gate
        });
        Ok(Publisher {
            mapping,
            state,
            location,
            unlink_on_drop: self.unlink_on_drop,
            max_payload,
            wake: WakeState::default(),
            gate,
            gap_records: self.gap_records,
        })
    }
}

/// The single producer of a segment.
///
/// Publishing never blocks and never waits for subscribers; its cost does not depend on how
/// many there are. A subscriber that falls a whole ring behind is told how many messages it
/// missed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmcast::{Publisher, StartAt, Subscriber};
///
/// let name = format!("/shmcast-doc-publisher-{}", std::process::id());
/// let mut publisher = Publisher::options().capacity(64 * 1024).create(&name)?;
/// let mut subscriber = Subscriber::open(&name, StartAt::Oldest)?;
///
/// let seq = publisher.publish(b"hello")?;
/// let mut buf = Vec::new();
/// assert_eq!(subscriber.try_recv(&mut buf)?, seq);
/// assert_eq!(buf, b"hello");
/// # Ok(()) }
/// ```
pub struct Publisher {
    mapping: Mapping,
    state: WriterState,
    location: Location,
    unlink_on_drop: bool,
    max_payload: usize,
    wake: WakeState,
    /// Lossless segments: the gate and what it knows of the readers.
    gate: Option<Gate>,
    /// Whether [`Self::publish_gap`] may write gap records.
    gap_records: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("path", &self.location.path())
            .field("capacity", &self.capacity())
            .field("next_seq", &self.state.next_seq())
            .finish()
    }
}

impl Publisher {
    /// Options for creating a segment.
    pub fn options() -> PublisherOptions {
        PublisherOptions::new()
    }

    /// Creates the segment called `name` (see [`PublisherOptions::create`]) with the default
    /// options.
    pub fn create(name: &str) -> Result<Self, Error> {
        PublisherOptions::new().create(name)
    }

    /// Publishes one message and returns its sequence number (1 for the first message).
    ///
    /// On a lossless segment this waits while a registered subscriber has not read what the
    /// message would overwrite: until it reads on, dies (noticed within the probe interval), or
    /// is evicted after `max_block` ([`PublisherOptions::lossless`]). Otherwise it never waits.
    #[inline]
    pub fn publish(&mut self, payload: &[u8]) -> Result<u64, Error> {
        self.publish_with(payload, Patience::Until(None))
    }

    /// Like [`Self::publish`], but never waits: on a lossless segment where a registered
    /// subscriber holds the producer back it returns [`Error::Backpressure`], naming that
    /// subscriber, and publishes nothing.
    #[inline]
    pub fn try_publish(&mut self, payload: &[u8]) -> Result<u64, Error> {
        self.publish_with(payload, Patience::None)
    }

    /// Like [`Self::publish`], but waits at most `timeout`, then returns
    /// [`Error::Backpressure`] and publishes nothing.
    pub fn publish_timeout(&mut self, payload: &[u8], timeout: Duration) -> Result<u64, Error> {
        self.publish_with(
            payload,
            Patience::Until(Instant::now().checked_add(timeout)),
        )
    }

    #[inline]
    fn publish_with(&mut self, payload: &[u8], patience: Patience) -> Result<u64, Error> {
        self.check_len(payload.len())?;
        let seq = loop {
            match self.mapping.ring().try_publish(&mut self.state, payload) {
                Ok(seq) => break seq,
                Err(limit) => self.open_gate(limit, patience)?,
            }
        };
        after_publish(&self.mapping, seq, &mut self.wake);
        Ok(seq)
    }

    /// Records that the next `missed` messages were lost before they reached this segment (on a
    /// segment created with [`PublisherOptions::gap_records`]). A subscriber that reaches this
    /// point gets [`RecvError::Lagged`](crate::RecvError::Lagged) with `missed`, as if they had
    /// been overwritten, and the next message published has a sequence number `missed` higher
    /// than it would have had. So a segment fed from elsewhere can keep its source's sequence
    /// numbers and tell its readers exactly what never arrived. `missed = 0` records nothing.
    ///
    /// A gap record takes 24 bytes of the ring, like an 8-byte message, and waits on a lossless
    /// segment as [`Self::publish`] does.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shmcast::{Publisher, RecvError, StartAt, Subscriber};
    ///
    /// let name = format!("/shmcast-doc-gap-{}", std::process::id());
    /// let mut publisher = Publisher::options().gap_records(true).create(&name)?;
    /// let mut subscriber = Subscriber::open(&name, StartAt::Beginning)?;
    /// publisher.publish(b"first")?; // sequence number 1
    /// publisher.publish_gap(3)?; // 2, 3 and 4 never arrived
    /// assert_eq!(publisher.publish(b"fifth")?, 5);
    ///
    /// let mut buf = Vec::new();
    /// assert_eq!(subscriber.try_recv(&mut buf)?, 1);
    /// assert_eq!(subscriber.try_recv(&mut buf), Err(RecvError::Lagged { missed: 3 }));
    /// assert_eq!(subscriber.try_recv(&mut buf)?, 5);
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::InvalidOption`] if the segment was not created with gap records, or if
    /// sequence numbers would pass 2^63; on a lossless segment, as [`Self::publish`].
    pub fn publish_gap(&mut self, missed: u64) -> Result<(), Error> {
        if missed == 0 {
            return Ok(());
        }
        if !self.gap_records {
            return Err(Error::InvalidOption {
                option: "gap_records",
                reason:
                    "publish_gap needs a segment created with PublisherOptions::gap_records(true)",
            });
        }
        if self
            .state
            .next_seq()
            .checked_add(missed)
            .map_or(true, |s| s >= crate::layout::PAD)
        {
            return Err(Error::InvalidOption {
                option: "missed",
                reason: "the gap would take sequence numbers past 2^63",
            });
        }
        let seq = loop {
            match self.mapping.ring().try_publish_gap(&mut self.state, missed) {
                Ok(seq) => break seq,
                Err(limit) => self.open_gate(limit, Patience::Until(None))?,
            }
        };
        after_publish(&self.mapping, seq, &mut self.wake);
        Ok(())
    }

    /// The publish needs `intent` at `limit`, past the gate: raise it, waiting as `patience`
    /// allows (lossless segments only; docs/LAYOUT.md, "Producer").
    #[cold]
    #[inline(never)]
    fn open_gate(&mut self, limit: u64, patience: Patience) -> Result<(), Error> {
        let (Some(gate), Some((registry, _)), Some(words)) = (
            self.gate.as_mut(),
            self.mapping.registry(),
            self.mapping.gate_words(),
        ) else {
            // Only a lossless producer is ever gated.
            self.state.set_gate(u64::MAX);
            return Ok(());
        };
        let capacity = self.mapping.ring().capacity();
        gate.open(
            registry,
            words,
            self.mapping.file(),
            &mut self.state,
            capacity,
            limit,
            patience,
        )
        .map_err(|b| Error::Backpressure {
            slot: b.slot,
            pid: b.pid,
            behind_bytes: b.behind_bytes,
            behind_messages: b.behind_messages,
        })
    }

    /// Whether the segment is lossless ([`PublisherOptions::lossless`]).
    pub fn is_lossless(&self) -> bool {
        self.gate.is_some()
    }

    /// The subscribers registered on this lossless segment (empty on a lossy one): slot, pid,
    /// whether evicted, position and lag.
    pub fn readers(&self) -> Vec<RegisteredReader> {
        match self.mapping.registry() {
            Some((registry, _)) => registry.readers(self.state.next_seq(), self.state.tail()),
            None => Vec::new(),
        }
    }

    /// Waits until at least `count` subscribers have registered, or `timeout` passes (`None`:
    /// no limit), and returns how many are registered. Publishing only then means nothing is
    /// lost from the first message on ([`Error::NotLossless`] on a lossy segment).
    pub fn wait_for_readers(
        &self,
        count: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        let Some((registry, _)) = self.mapping.registry() else {
            return Err(Error::NotLossless { path: self.path() });
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let active = registry.active();
            if active >= count || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(active);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Publishes the bytes of a plain-old-data value (read it back with
    /// [`Subscriber::try_recv_pod`](crate::Subscriber::try_recv_pod)).
    pub fn publish_pod<T: Pod>(&mut self, value: &T) -> Result<u64, Error> {
        self.publish(bytemuck::bytes_of(value))
    }

    /// Reserves `len` bytes to fill in place, then [`Claim::commit`] publishes them.
    ///
    /// Dropping the claim without committing publishes nothing. Subscribers lapped by the
    /// reservation are told so, as for any publish. On a lossless segment it waits for room as
    /// [`Self::publish`] does.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use shmcast::Publisher;
    /// # let name = format!("/shmcast-doc-claim-{}", std::process::id());
    /// # let mut publisher = Publisher::create(&name)?;
    /// let mut claim = publisher.claim(12)?;
    /// claim.write_at(0, &7u32.to_le_bytes());
    /// claim.write_at(4, b"in place");
    /// let seq = claim.commit();
    /// # assert_eq!(seq, 1);
    /// # Ok(()) }
    /// ```
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>, Error> {
        self.check_len(len)?;
        let reservation = loop {
            match self.mapping.ring().try_reserve(&mut self.state, len) {
                Ok(reservation) => break reservation,
                Err(limit) => self.open_gate(limit, Patience::Until(None))?,
            }
        };
        let ring = self.mapping.ring();
        let words = ring.reserved_words(&reservation);
        // Bytes past `len` in the last word must read as zero (docs/LAYOUT.md, "Records").
        if len % 8 != 0 {
            words[words.len() - 1].store(0, crate::sync::Ordering::Relaxed);
        }
        Ok(Claim {
            ring,
            mapping: &self.mapping,
            wake: &mut self.wake,
            state: &mut self.state,
            reservation: Some(reservation),
            words,
            len,
        })
    }

    fn check_len(&self, len: usize) -> Result<(), Error> {
        if len > self.max_payload {
            return Err(Error::MessageTooLarge {
                len,
                max: self.max_payload,
            });
        }
        Ok(())
    }

    /// The largest payload this segment accepts (`capacity / 4 - 16`).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The ring capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.mapping.ring().capacity()
    }

    /// The sequence number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq()
    }

    /// Records "alive and well, now" in the segment header (`last_publish_ns`, shown by
    /// `shmcast inspect` and [`SegmentInfo::last_publish_unix_ns`]) without publishing. Publishes
    /// update it by themselves, but only every 64th (or when they wake sleeping subscribers), so
    /// a producer that publishes rarely and wants to be seen as not hung can call this from
    /// its idle loop.
    ///
    /// [`SegmentInfo::last_publish_unix_ns`]: crate::SegmentInfo::last_publish_unix_ns
    pub fn heartbeat(&self) {
        self.mapping.set_last_publish_ns(unix_now_ns());
    }

    /// How many times this publisher has woken parked subscribers: one `FUTEX_WAKE` system call
    /// each, made by a publish that found some subscriber parked. While no subscriber is parked,
    /// publishing makes no system call and this does not grow.
    pub fn wakeups(&self) -> u64 {
        self.wake.wakeups
    }

    /// How many times this publisher has throttled its wake-up calls because they kept finding
    /// nobody asleep (a process storing `parked` without sleeping; docs/LAYOUT.md, "Waiting and
    /// waking"). While throttled, parked subscribers poll every millisecond instead of being
    /// woken.
    pub fn wake_throttles(&self) -> u64 {
        self.wake.throttles
    }

    /// The segment's file (`/dev/shm/NAME` for a shared-memory segment).
    pub fn path(&self) -> PathBuf {
        self.location.path()
    }
}

/// Publish step 9 (wake parked subscribers), and now and then the `last_publish_ns` header
/// word: on the first publish, every 64th, and whenever subscribers were woken. (Reading the
/// clock on every publish would cost more than the rest of a small publish.)
#[inline]
fn after_publish(mapping: &Mapping, seq: u64, wake: &mut WakeState) {
    let woke = mapping.wake_words().wake_parked_with(wake);
    if woke || seq % 64 == 1 {
        mapping.set_last_publish_ns(unix_now_ns());
    }
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            // Only if the name is still this segment's: after it was removed under this
            // producer (an operator, systemd's RemoveIPC), another producer may own it now.
            let _ = self.mapping.unlink_name(&self.location);
        }
    }
}

/// A reserved message being filled in place; see [`Publisher::claim`].
///
/// The memory is written through this accessor rather than a `&mut [u8]` because lapped
/// subscribers may still be reading it. Bytes you do not write hold unspecified older ring
/// contents; call [`Claim::fill`] first if that matters.
pub struct Claim<'a> {
    ring: Ring<'a>,
    mapping: &'a Mapping,
    wake: &'a mut WakeState,
    state: &'a mut WriterState,
    reservation: Option<Reservation>,
    words: &'a [AtomicU64],
    len: usize,
}

impl Claim<'_> {
    /// The number of bytes reserved.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether zero bytes are reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `src` at byte `offset` of the message.
    ///
    /// # Panics
    ///
    /// If `offset + src.len()` exceeds [`Claim::len`].
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        let end = offset.checked_add(src.len());
        assert!(
            end.is_some_and(|end| end <= self.len),
            "write of {} bytes at offset {offset} exceeds the claimed {} bytes",
            src.len(),
            self.len
        );
        copy::write_range(self.words, offset, src);
    }

    /// Writes a plain-old-data value at byte `offset`.
    ///
    /// # Panics
    ///
    /// If the value does not fit at `offset`.
    pub fn write_pod_at<T: Pod>(&mut self, offset: usize, value: &T) {
        self.write_at(offset, bytemuck::bytes_of(value));
    }

    /// Sets every byte of the message to `byte`.
    pub fn fill(&mut self, byte: u8) {
        let word = u64::from_le_bytes([byte; 8]);
        let full = self.len / 8;
        for w in &self.words[..full] {
            w.store(word, crate::sync::Ordering::Relaxed);
        }
        let rest = self.len % 8;
        if rest != 0 {
            let mut b = [0u8; 8];
            b[..rest].fill(byte);
            self.words[full].store(u64::from_le_bytes(b), crate::sync::Ordering::Relaxed);
        }
    }

    /// Publishes the message and returns its sequence number.
    pub fn commit(mut self) -> u64 {
        let reservation = self
            .reservation
            .take()
            .expect("a claim is committed at most once");
        let seq = self.ring.commit(self.state, reservation);
        after_publish(self.mapping, seq, self.wake);
        seq
    }
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("len", &self.len).finish()
    }
}
