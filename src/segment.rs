//! Segment files: naming, exclusive creation with pre-allocated pages, opening with header
//! validation, and the mapping the ring lives in.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::mman::shm_open;
use nix::sys::stat::Mode;

use crate::error::Error;
use crate::layout::{self, offset, Identity, DATA_OFFSET, HEADER_SIZE, HEADER_WORDS};
use crate::liveness;
use crate::registry::{GateWords, Registry};
use crate::ring::Ring;
use crate::stale::{self, Dir, Removal, Stale};
use crate::sync;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::wait::{Barrier, WakeWords};

/// Where a segment lives: a POSIX shared-memory object or a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A shared-memory object name, always with its leading slash (`/demo`).
    Shm(String),
    /// A regular file.
    File(PathBuf),
}

impl Location {
    /// Where a segment called `name` lives (docs/CLI.md, "Naming a segment"; the Go reader's
    /// `SegmentPath` applies the same rule):
    ///
    /// - `/demo` (one leading slash and no other) or `demo` (no slash at all) is the
    ///   shared-memory object `/demo`, the file `/dev/shm/demo` on Linux;
    /// - a name with a '/' after its first character (`/run/app/seg`, `./seg`, `dir/seg`) is
    ///   the path of a regular file.
    ///
    /// A name that is empty, contains a NUL byte, or is a shared-memory name that POSIX does not
    /// allow (`/`, `.`, `..`, over 255 bytes) is [`Error::InvalidName`].
    pub(crate) fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.contains('\0') {
            return Err(invalid("the name contains a NUL byte"));
        }
        let bare = name.strip_prefix('/').unwrap_or(name);
        if bare.contains('/') {
            return Ok(Location::File(PathBuf::from(name)));
        }
        if bare.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if bare == "." || bare == ".." {
            return Err(invalid("'.' and '..' are not segment names"));
        }
        if bare.len() > 255 {
            return Err(invalid("the name is longer than 255 bytes"));
        }
        Ok(Location::Shm(format!("/{bare}")))
    }

    /// The file a person would look for: `/dev/shm/NAME` for shared memory on Linux.
    pub(crate) fn path(&self) -> PathBuf {
        match self {
            Location::Shm(name) => PathBuf::from(format!("/dev/shm{name}")),
            Location::File(path) => path.clone(),
        }
    }

    fn open_file(&self, write: bool, create_mode: Option<u32>) -> io::Result<File> {
        match self {
            Location::Shm(name) => {
                let mut flags = if write {
                    OFlag::O_RDWR
                } else {
                    OFlag::O_RDONLY
                };
                if create_mode.is_some() {
                    flags |= OFlag::O_CREAT | OFlag::O_EXCL;
                }
                let mode = Mode::from_bits_truncate(create_mode.unwrap_or(0) as _);
                // glibc adds O_NOFOLLOW: a symbolic link at the name is refused (ELOOP).
                // O_NONBLOCK: a FIFO at the name cannot block the open.
                let fd = shm_open(
                    name.as_str(),
                    flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
                    mode,
                )?;
                Ok(File::from(fd))
            }
            Location::File(path) => {
                let mut options = OpenOptions::new();
                options
                    .read(true)
                    .write(write)
                    .custom_flags(OFlag::O_NONBLOCK.bits());
                if let Some(mode) = create_mode {
                    options.create_new(true).mode(mode);
                }
                options.open(path)
            }
        }
    }

    /// `e`, from opening this location, as the most specific [`Error`]: a directory, or a
    /// symbolic link at a shared-memory name (refused, never followed), is
    /// [`Error::NotRegularFile`].
    fn open_error(&self, action: &'static str, e: io::Error) -> Error {
        let path = self.path();
        if e.raw_os_error() == Some(nix::errno::Errno::EISDIR as i32) {
            return Error::NotRegularFile {
                path,
                kind: "a directory",
            };
        }
        if matches!(self, Location::Shm(_))
            && e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32)
        {
            return Error::NotRegularFile {
                path,
                kind: "a symbolic link (never followed at a shared-memory name)",
            };
        }
        Error::from_io(action, path, e)
    }
}

/// A mapped segment. The ring view borrows from it, so no view outlives the mapping.
pub(crate) struct Mapping {
    map: MmapRaw,
    capacity: u64,
    /// How publishes are ordered before the producer's look at `parked`; `None` when this
    /// process cannot issue the barrier a parking reader needs (it then does not park).
    barrier: Option<Barrier>,
    wake_page: WakePage,
    /// Reader slots of a lossless segment (`reader_slots`, validated at open); 0 on a lossy one.
    /// Fixed before `magic`, so read once rather than on every registered read.
    reader_slots: usize,
    /// Kept open: the producer's liveness lock lives on it (docs/LAYOUT.md, "Producer
    /// liveness"), and subscribers test that lock through it.
    file: File,
}

/// Where this process may store the wake-up words of the subscriber area.
enum WakePage {
    /// The producer: `map` is writable.
    InMap,
    /// A subscriber with write access: the subscriber page mapped writable on its own, so the
    /// header and the ring stay read-only.
    Separate(MmapRaw),
    /// A subscriber without write access: it can wait on `wake_seq` but not register.
    ReadOnly,
}

// The header and the ring are always accessed through atomics (see `Mapping::ring`).
impl Mapping {
    fn header_words(&self) -> &[AtomicU64; HEADER_WORDS] {
        // SAFETY: the mapping is at least DATA_OFFSET + capacity bytes (checked by `create` and
        // `open` before a `Mapping` is built) and lives as long as the returned borrow of
        // `self`. mmap returns page-aligned memory, so the base is 8-byte aligned, and AtomicU64
        // has the size and alignment of u64 with every bit pattern valid. A shared reference to
        // atomics over memory other processes modify is sound: AtomicU64 is an UnsafeCell, and
        // every process accesses these words only with atomic operations (docs/LAYOUT.md). In a
        // read-only mapping this crate only performs relaxed loads, which Rust documents as
        // valid on read-only memory for word-sized atomics.
        unsafe { &*self.map.as_ptr().cast::<[AtomicU64; HEADER_WORDS]>() }
    }

    /// The ring view of this mapping.
    pub(crate) fn ring(&self) -> Ring<'_> {
        // SAFETY: as in `header_words`; DATA_OFFSET is a multiple of 8 and the mapping holds
        // DATA_OFFSET + capacity bytes, so the `capacity / 8` words are in bounds and aligned.
        let data = unsafe {
            std::slice::from_raw_parts(
                self.map
                    .as_ptr()
                    .add(DATA_OFFSET as usize)
                    .cast::<AtomicU64>(),
                (self.capacity / 8) as usize,
            )
        };
        Ring::new(self.header_words(), data)
    }

    /// The wake-up words of the subscriber area (docs/LAYOUT.md, "Waiting and waking").
    pub(crate) fn wake_words(&self) -> WakeWords<'_> {
        let at = |base: *mut u8, off: usize| -> &AtomicU32 {
            // SAFETY: `base` is the start of the subscriber page (in `map`, which is at least
            // DATA_OFFSET bytes, or a separate 4096-byte mapping of it) and `off` < 0x20, so the
            // 4-byte-aligned word is in bounds; both mappings live as long as `self`. Every
            // process accesses these words only atomically (as for `header_words`); through a
            // read-only mapping this process only loads them and passes their address to
            // FUTEX_WAIT, which only reads.
            unsafe { &*base.add(off).cast::<AtomicU32>() }
        };
        let in_map = || {
            // SAFETY: SUBSCRIBER_AREA < DATA_OFFSET <= the mapping's length.
            unsafe { self.map.as_mut_ptr().add(layout::SUBSCRIBER_AREA as usize) }
        };
        let wake_seq = layout::WAKE_SEQ - layout::SUBSCRIBER_AREA as usize;
        let parked = layout::PARKED - layout::SUBSCRIBER_AREA as usize;
        let throttle = layout::WAKE_THROTTLE - layout::SUBSCRIBER_AREA as usize;
        let base = match &self.wake_page {
            WakePage::InMap | WakePage::ReadOnly => in_map(),
            WakePage::Separate(page) => page.as_mut_ptr(),
        };
        let writable = !matches!(self.wake_page, WakePage::ReadOnly);
        match self.barrier {
            Some(barrier) if writable => WakeWords::new(
                at(base, wake_seq),
                Some(at(base, parked)),
                at(base, throttle),
                barrier,
            ),
            _ => WakeWords::new(at(base, wake_seq), None, at(base, throttle), Barrier::Fence),
        }
    }

    /// The subscriber area's base, and whether this process may store to it.
    fn subscriber_area(&self) -> (*mut u8, bool) {
        match &self.wake_page {
            // SAFETY: SUBSCRIBER_AREA < DATA_OFFSET <= the mapping's length.
            WakePage::InMap => (
                unsafe { self.map.as_mut_ptr().add(layout::SUBSCRIBER_AREA as usize) },
                true,
            ),
            WakePage::Separate(page) => (page.as_mut_ptr(), true),
            // SAFETY: as above.
            WakePage::ReadOnly => (
                unsafe { self.map.as_mut_ptr().add(layout::SUBSCRIBER_AREA as usize) },
                false,
            ),
        }
    }

    /// The gate words and reader slots of a lossless segment (docs/LAYOUT.md, "Lossless mode"),
    /// and whether this process may store to the slots (`false`: it can only look). `None` on a
    /// lossy segment.
    #[inline]
    pub(crate) fn registry(&self) -> Option<(Registry<'_>, bool)> {
        if self.reader_slots == 0 {
            return None;
        }
        // Validated at open (1..=31) and by the publisher's options at creation.
        let slots = self.reader_slots.min(layout::MAX_READER_SLOTS as usize);
        let (base, writable) = self.subscriber_area();
        let area = |off: usize| off - layout::SUBSCRIBER_AREA as usize;
        // SAFETY: `base` is the start of the 4096-byte subscriber page (in `map`, or a separate
        // mapping of it), both living as long as `self`; REG_GEN and the `slots` slots lie inside
        // it (SLOTS + 31 * SLOT_SIZE = 0x2000), 8-byte aligned. Every process accesses these
        // words only atomically (docs/LAYOUT.md); through a read-only mapping this process only
        // loads them (`writable` tells callers so).
        let (reg_gen, slot_words) = unsafe {
            (
                &*base.add(area(layout::REG_GEN)).cast::<AtomicU64>(),
                std::slice::from_raw_parts(
                    base.add(area(layout::SLOTS)).cast::<AtomicU64>(),
                    slots * layout::SLOT_WORDS,
                ),
            )
        };
        let header = self.header_words();
        let registry = Registry::new(
            &header[layout::word(offset::GATE_LIMIT)],
            &header[layout::word(offset::EVICTIONS)],
            reg_gen,
            slot_words,
        );
        Some((registry, writable))
    }

    /// The lossless wake-up words (`gate_wake`, `producer_blocked`), if this process may store
    /// to them.
    pub(crate) fn gate_words(&self) -> Option<GateWords<'_>> {
        let (base, writable) = self.subscriber_area();
        if !writable {
            return None;
        }
        let area = |off: usize| off - layout::SUBSCRIBER_AREA as usize;
        // SAFETY: as in `registry`: both u32 words lie inside the subscriber page, 4-byte
        // aligned, and are accessed only atomically by every process.
        unsafe {
            Some(GateWords {
                wake: &*base.add(area(layout::GATE_WAKE)).cast::<AtomicU32>(),
                blocked: &*base.add(area(layout::PRODUCER_BLOCKED)).cast::<AtomicU32>(),
            })
        }
    }

    /// Stores `last_publish_ns` (producer only).
    pub(crate) fn set_last_publish_ns(&self, ns: u64) {
        self.header_words()[layout::word(offset::LAST_PUBLISH_NS)].store(ns, Ordering::Relaxed);
    }

    /// `last_publish_ns`, or `None` if never set.
    pub(crate) fn last_publish_ns(&self) -> Option<u64> {
        let ns = self.header_words()[layout::word(offset::LAST_PUBLISH_NS)].load(Ordering::Relaxed);
        (ns != 0).then_some(ns)
    }

    /// Whether the producer still holds its lock. On an error testing it, assume it does:
    /// reporting a live producer as gone would end readers for nothing.
    pub(crate) fn producer_alive(&self) -> bool {
        liveness::is_locked(&self.file).unwrap_or(true)
    }

    /// The segment's file, on which the producer holds its liveness lock.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Removes `location`'s name if, and only if, it still refers to this mapping's file
    /// (device and inode, compared through a descriptor of its directory, which the unlink
    /// then goes through): `Ok(false)` if the name was removed or now belongs to another file
    /// (another producer's segment, after the name was removed under this one), which is left
    /// alone.
    pub(crate) fn unlink_name(&self, location: &Location) -> io::Result<bool> {
        unlink_if_same(location, &self.file)
    }

    /// Whether `location` still names the file this mapping was made from.
    pub(crate) fn still_at(&self, location: &Location) -> bool {
        liveness::still_at(&self.file, &location.path())
    }

    /// The identity block, loaded with atomics: `magic` first, then an acquire fence, then the
    /// rest, so a header whose `magic` is set is seen complete.
    pub(crate) fn identity(&self) -> Identity {
        load_identity(self.header_words())
    }
}

fn load_identity(words: &[AtomicU64]) -> Identity {
    let get = |off: usize| words[layout::word(off)].load(Ordering::Relaxed);
    let magic = get(offset::MAGIC);
    fence(Ordering::Acquire);
    Identity {
        magic,
        version: get(offset::VERSION) as u32,
        data_offset: get(offset::DATA_OFFSET),
        capacity: get(offset::CAPACITY),
        flags: get(offset::FLAGS),
        epoch: get(offset::EPOCH),
        producer_pid: get(offset::PRODUCER_PID),
        created_unix_ns: get(offset::CREATED_UNIX_NS),
        wake_barrier: get(offset::WAKE_BARRIER),
        reader_slots: get(offset::READER_SLOTS),
        max_block_ns: get(offset::MAX_BLOCK_NS),
    }
}

/// The barrier a reader of a segment whose header says `wake_barrier` must use to park, if it
/// can issue it (an unknown value, or a membarrier this process may not call: it cannot).
fn reader_barrier(wake_barrier: u64) -> Option<Barrier> {
    match wake_barrier {
        layout::WAKE_FENCE => Some(Barrier::Fence),
        layout::WAKE_MEMBARRIER if sync::membarrier_available() => Some(Barrier::Membarrier),
        _ => None,
    }
}

/// Removes `location`'s name if it still refers to `file` (see [`Mapping::unlink_name`]).
fn unlink_if_same(location: &Location, file: &File) -> io::Result<bool> {
    let (dir, name) = match Dir::of(location) {
        Ok(at) => at,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match dir.unlink_entry_if(&name, file) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        other => other,
    }
}

/// Holds a half-created segment's file and removes its name (if the name still refers to that
/// file) unless disarmed.
struct UnlinkGuard<'a> {
    location: &'a Location,
    file: Option<File>,
}

impl UnlinkGuard<'_> {
    fn file(&self) -> &File {
        self.file
            .as_ref()
            .expect("the guard holds the file until disarmed")
    }

    /// Keeps the segment: hands its file back.
    fn disarm(mut self) -> File {
        self.file.take().expect("disarmed once")
    }
}

impl Drop for UnlinkGuard<'_> {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = unlink_if_same(self.location, file);
        }
    }
}

/// Creates a new segment exclusively, takes the producer lock, allocates all of its pages, and
/// writes its header. If the name is taken by a segment whose producer died and
/// `replace_stale` is set, that segment is removed first (docs/LAYOUT.md, "Producer liveness").
/// `membarrier`: whether to register for `membarrier(2)` where the kernel allows it (else
/// every publish fences; `PublisherOptions::membarrier`).
pub(crate) fn create(
    location: &Location,
    capacity: u64,
    mode: u32,
    replace_stale: bool,
    membarrier: bool,
    lossless: Option<LosslessHeader>,
    gap_records: bool,
) -> Result<Mapping, Error> {
    let path = location.path();
    if let Some(reason) = layout::capacity_problem(capacity) {
        return Err(Error::InvalidCapacity { capacity, reason });
    }
    // Another producer may be replacing the same stale segment at the same time; whoever
    // creates the new file first wins, the others then find a live producer.
    for _ in 0..3 {
        match location.open_file(true, Some(CREATE_MODE)) {
            Ok(file) => {
                return create_new(
                    location,
                    file,
                    capacity,
                    mode,
                    membarrier,
                    lossless,
                    gap_records,
                )
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match existing_producer(location)? {
                    Existing::Alive { pid } => return Err(Error::ProducerAlive { path, pid }),
                    Existing::Dead { pid } if replace_stale => remove_stale(location, pid)?,
                    Existing::Dead { .. } | Existing::Unknown => {
                        return Err(Error::AlreadyExists { path })
                    }
                }
            }
            Err(e) => return Err(location.open_error("create", e)),
        }
    }
    Err(Error::AlreadyExists { path })
}

/// The mode a segment file is created with, before its producer has locked it: only its owner
/// may open it, so no other user can take a lock on it before its producer does (a read lock
/// on byte 0 would keep the producer from locking it). The requested mode is set once the
/// lock is held.
const CREATE_MODE: u32 = 0o600;

/// What holds a name that is already taken.
enum Existing {
    /// A live producer holds the lock (`pid` from the header; 0 if not initialised yet).
    Alive { pid: u64 },
    /// A valid segment whose producer is gone.
    Dead { pid: u64 },
    /// Not a valid shmcast segment, or one that nobody finished creating: never removed
    /// automatically.
    Unknown,
}

/// What holds `location`'s name, examined as [`remove_stale_segment`] does: through a
/// descriptor of its directory, never following a symbolic link, never blocking on a FIFO.
/// Anything that is not a regular file is [`Error::NotRegularFile`].
///
/// [`remove_stale_segment`]: crate::remove_stale_segment
fn existing_producer(location: &Location) -> Result<Existing, Error> {
    let path = location.path();
    let opened = Dir::of(location).and_then(|(dir, name)| dir.open_entry(&name, false));
    let file = match opened {
        Ok(file) => file,
        // Removed meanwhile: try creating again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Dead { pid: 0 }),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(Error::NotRegularFile {
                path,
                kind: "a symbolic link (never followed)",
            })
        }
        Err(e) => return Err(Error::from_io("open", path, e)),
    };
    check_regular(&file, &path)?;
    let locked = liveness::is_locked(&file)
        .map_err(|e| Error::from_io("test the lock of", path.clone(), e))?;
    let pid = read_header(&file, &path).ok().map(|id| id.producer_pid);
    Ok(match (locked, pid) {
        (true, pid) => Existing::Alive {
            pid: pid.unwrap_or(0),
        },
        (false, Some(pid)) => Existing::Dead { pid },
        (false, None) => Existing::Unknown,
    })
}

/// Replaces a stale segment for `create`: removes it as [`remove_stale_segment`] does. A live
/// producer (or another process removing or replacing it right now) refuses the replacement,
/// and so does a read lock on its producer-lock byte ([`Error::LockBlocked`]); anything else
/// (removed, already gone, replaced, or now a file that is not a finished segment) lets
/// `create` try again, and its next attempt decides.
///
/// [`remove_stale_segment`]: crate::remove_stale_segment
fn remove_stale(location: &Location, pid: u64) -> Result<(), Error> {
    match stale::remove_if_stale(location, "open (to replace it)")? {
        Stale::Checked(Removal::ProducerAlive { .. }) => Err(Error::ProducerAlive {
            path: location.path(),
            pid,
        }),
        Stale::Checked(_) | Stale::NotASegment(_) => Ok(()),
    }
}

/// Sets up a file that was just created exclusively.
fn create_new(
    location: &Location,
    file: File,
    capacity: u64,
    mode: u32,
    membarrier: bool,
    lossless: Option<LosslessHeader>,
    gap_records: bool,
) -> Result<Mapping, Error> {
    let path = location.path();
    let total = DATA_OFFSET + capacity;
    let guard = UnlinkGuard {
        location,
        file: Some(file),
    };
    let file = guard.file();
    #[cfg(test)]
    hooks::before_lock(&path);
    // Held until the producer's mapping is dropped (or the process dies); taken before `magic`
    // is written, so a reader that finds an initialised segment unlocked knows it is dead. The
    // file was created with mode 0600 (CREATE_MODE), so until the lock is taken no other user
    // can open it and hold a lock on it; a lock held here anyway is a read lock of a process
    // of this user or root.
    if !liveness::try_lock(file).map_err(|e| Error::from_io("lock", path.clone(), e))? {
        return Err(Error::LockBlocked { path });
    }
    // Only now that the lock is held does the file get the mode the caller asked for (exactly:
    // shm_open and open applied the umask).
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| Error::from_io("set the mode of", path.clone(), e))?;
    file.set_len(total)
        .map_err(|e| Error::from_io("size", path.clone(), e))?;
    allocate(file, total).map_err(|e| {
        if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
            Error::NoSpace {
                path: path.clone(),
                bytes: total,
            }
        } else {
            Error::from_io("allocate", path.clone(), e)
        }
    })?;
    let map = MmapOptions::new()
        .len(total as usize)
        .map_raw(file)
        .map_err(|e| Error::from_io("map", path.clone(), e))?;
    // Registered before `magic`: once a reader can see `wake_barrier = membarrier`, its
    // membarrier calls reach this process.
    let barrier = if membarrier && sync::membarrier_register() {
        Barrier::Membarrier
    } else {
        Barrier::Fence
    };
    let mapping = Mapping {
        map,
        capacity,
        barrier: Some(barrier),
        wake_page: WakePage::InMap,
        reader_slots: lossless.map_or(0, |l| l.reader_slots as usize),
        file: guard.disarm(),
    };
    init_header(&mapping, capacity, barrier, lossless, gap_records);
    Ok(mapping)
}

/// Backs every page with memory now, so running out of space is an `ENOSPC` here rather than a
/// SIGBUS on some later publish.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        use std::os::fd::AsRawFd;
        match nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, len as i64) {
            Ok(()) => return Ok(()),
            // Not supported by this file system: fall back to writing zeros.
            Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The fields of a lossless segment's gate block that are written once (docs/LAYOUT.md, "Gate
/// block").
#[derive(Debug, Clone, Copy)]
pub(crate) struct LosslessHeader {
    pub reader_slots: u64,
    pub max_block_ns: u64,
}

fn init_header(
    mapping: &Mapping,
    capacity: u64,
    barrier: Barrier,
    lossless: Option<LosslessHeader>,
    gap_records: bool,
) {
    let words = mapping.header_words();
    let set = |off: usize, value: u64| words[layout::word(off)].store(value, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    set(offset::VERSION, u64::from(layout::VERSION));
    set(offset::DATA_OFFSET, DATA_OFFSET);
    set(offset::CAPACITY, capacity);
    let gaps = if gap_records { layout::FLAG_GAPS } else { 0 };
    set(offset::FLAGS, gaps);
    if let Some(lossless) = lossless {
        set(offset::FLAGS, gaps | layout::FLAG_LOSSLESS);
        set(offset::READER_SLOTS, lossless.reader_slots);
        set(offset::MAX_BLOCK_NS, lossless.max_block_ns);
        // What the producer's first refresh computes with no reader registered; it stores it
        // again before its first publish.
        set(offset::GATE_LIMIT, capacity / 2 + 8);
    }
    set(offset::EPOCH, 1);
    set(offset::PRODUCER_PID, u64::from(std::process::id()));
    set(offset::CREATED_UNIX_NS, now);
    set(
        offset::WAKE_BARRIER,
        match barrier {
            Barrier::Fence => layout::WAKE_FENCE,
            Barrier::Membarrier => layout::WAKE_MEMBARRIER,
        },
    );
    mapping.ring().init_indices();
    // Publishes everything above to readers that see `magic` (docs/LAYOUT.md, "Initialisation").
    words[layout::word(offset::MAGIC)].store(layout::MAGIC, Ordering::Release);
}

/// How long [`open`] keeps retrying a segment that a live producer is still creating (a
/// zero-size or `magic`-zero file whose producer lock is held; docs/LAYOUT.md, "Validating a
/// segment before reading it").
pub(crate) const INIT_WAIT: Duration = Duration::from_secs(2);

/// How long [`open`] retries an empty file whose lock is free: the moment between a producer's
/// exclusive creation of the file and its lock.
pub(crate) const EMPTY_GRACE: Duration = Duration::from_millis(10);

/// How often [`open`] looks again at a segment being created.
const INIT_POLL: Duration = Duration::from_millis(1);

/// Opens an existing segment for reading and validates its header (docs/LAYOUT.md, "Validating
/// a segment before reading it"). The header and the ring are mapped read-only; if the file is
/// writable, the subscriber page is also mapped writable on its own, for parking.
///
/// A segment that a live producer is still creating is retried every millisecond for up to
/// [`INIT_WAIT`] (an empty file whose lock is free, for up to [`EMPTY_GRACE`]) before
/// [`Error::NotInitialized`] (or [`Error::Truncated`]) is returned.
pub(crate) fn open(location: &Location) -> Result<Mapping, Error> {
    let start = Instant::now();
    loop {
        let (file, writable) = open_once(location)?;
        let path = location.path();
        match map_validated(file, path, writable) {
            Err(Error::NotInitialized { path, creating }) => {
                if !creating || start.elapsed() >= INIT_WAIT {
                    return Err(Error::NotInitialized { path, creating });
                }
            }
            Err(Error::Truncated {
                file_size: 0,
                path,
                min,
            }) if start.elapsed() >= EMPTY_GRACE => {
                return Err(Error::Truncated {
                    file_size: 0,
                    path,
                    min,
                })
            }
            Err(Error::Truncated { file_size: 0, .. }) => {}
            other => return other,
        }
        std::thread::sleep(INIT_POLL);
    }
}

/// Opens `location` read-write if allowed, else read-only; `true` if read-write.
fn open_once(location: &Location) -> Result<(File, bool), Error> {
    match location.open_file(true, None) {
        Ok(file) => Ok((file, true)),
        Err(e) if is_access_denied(&e) => match location.open_file(false, None) {
            Ok(file) => Ok((file, false)),
            Err(e) => Err(location.open_error("open", e)),
        },
        Err(e) => Err(location.open_error("open", e)),
    }
}

/// What a file that is not a regular file is, in words.
fn file_kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// The size of `file` (the segment at `path`), after checking that it is a regular file
/// ([`Error::NotRegularFile`]).
pub(crate) fn check_regular(file: &File, path: &Path) -> Result<u64, Error> {
    let meta = file
        .metadata()
        .map_err(|e| Error::from_io("stat", path.to_path_buf(), e))?;
    if !meta.file_type().is_file() {
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind: file_kind(meta.file_type()),
        });
    }
    Ok(meta.len())
}

/// Step 1 of "Validating a segment before reading it": a regular file of at least a header.
/// An empty file is a segment being created if its producer lock is held (its creator sizes it
/// only after locking it): [`Error::NotInitialized`]; else [`Error::Truncated`].
fn check_size(file: &File, path: &Path) -> Result<u64, Error> {
    let file_size = check_regular(file, path)?;
    if file_size == 0 && liveness::is_locked(file).unwrap_or(false) {
        return Err(Error::NotInitialized {
            path: path.to_path_buf(),
            creating: true,
        });
    }
    if file_size < HEADER_SIZE {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            file_size,
            min: HEADER_SIZE,
        });
    }
    Ok(file_size)
}

/// Reads and validates the header of `file` (the segment at `path`), steps 1 to 5 of
/// "Validating a segment before reading it": everything but the file size, which may differ
/// from what the header describes (the segment is then damaged, but its header is still the
/// producer's). Only the header page is mapped, for the time of the call.
pub(crate) fn read_header(file: &File, path: &Path) -> Result<Identity, Error> {
    check_size(file, path)?;
    let map = MmapOptions::new()
        .len(HEADER_SIZE as usize)
        .map_raw_read_only(file)
        .map_err(|e| Error::from_io("map", path.to_path_buf(), e))?;
    // SAFETY: the mapping is HEADER_SIZE bytes (the file has at least that many, checked
    // above) and page-aligned, and lives until the end of this function; see
    // `Mapping::header_words` for why atomics over it are sound.
    let header =
        unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<AtomicU64>(), HEADER_WORDS) };
    let id = load_identity(header);
    validate_header(path, &id, file)?;
    Ok(id)
}

/// Maps `file` (the segment at `path`) read-only after checking its size and header; with
/// `writable`, also maps the subscriber page writable on its own, if the file allows it.
pub(crate) fn map_validated(file: File, path: PathBuf, writable: bool) -> Result<Mapping, Error> {
    let file_size = check_size(&file, &path)?;
    let map = MmapOptions::new()
        .len(file_size as usize)
        .map_raw_read_only(&file)
        .map_err(|e| Error::from_io("map", path.clone(), e))?;
    // Only the header page is touched until the size has been checked against it.
    // SAFETY: the mapping is at least HEADER_SIZE bytes (checked above) and page-aligned; see
    // `Mapping::header_words` for why atomics over it are sound.
    let header =
        unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<AtomicU64>(), HEADER_WORDS) };
    let id = load_identity(header);
    validate_header(&path, &id, &file)?;
    validate_size(&path, &id, file_size)?;
    // Without the writable page the subscriber still works; it just cannot park.
    let wake_page = writable
        .then(|| {
            MmapOptions::new()
                .offset(layout::SUBSCRIBER_AREA)
                .len(layout::SUBSCRIBER_AREA_SIZE as usize)
                .map_raw(&file)
                .ok()
        })
        .flatten()
        .map_or(WakePage::ReadOnly, WakePage::Separate);
    Ok(Mapping {
        map,
        capacity: id.capacity,
        barrier: reader_barrier(id.wake_barrier),
        wake_page,
        reader_slots: if id.flags & layout::FLAG_LOSSLESS != 0 {
            id.reader_slots as usize
        } else {
            0
        },
        file,
    })
}

/// Errors that mean "you may not write this file", after which reading may still work.
fn is_access_denied(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EACCES | Errno::EPERM | Errno::EROFS)
    )
}

/// Steps 2 to 5 of "Validating a segment before reading it": the identity block alone.
fn validate_header(path: &Path, id: &Identity, file: &File) -> Result<(), Error> {
    let path = || path.to_path_buf();
    if id.magic == 0 {
        return Err(Error::NotInitialized {
            path: path(),
            creating: liveness::is_locked(file).unwrap_or(false),
        });
    }
    if id.magic != layout::MAGIC {
        return Err(Error::BadMagic {
            path: path(),
            found: id.magic.to_le_bytes(),
        });
    }
    if id.version != layout::VERSION {
        return Err(Error::UnsupportedVersion {
            path: path(),
            found: id.version,
            supported: layout::VERSION,
        });
    }
    if id.flags & !layout::KNOWN_FLAGS != 0 {
        return Err(Error::UnsupportedFlags {
            path: path(),
            flags: id.flags,
        });
    }
    if id.data_offset != DATA_OFFSET {
        return Err(Error::InvalidHeader {
            path: path(),
            reason: format!("data_offset is {}, expected {DATA_OFFSET}", id.data_offset),
        });
    }
    if let Some(reason) = layout::capacity_problem(id.capacity) {
        return Err(Error::InvalidHeader {
            path: path(),
            reason: format!("capacity {}: {reason}", id.capacity),
        });
    }
    if id.flags & layout::FLAG_LOSSLESS != 0
        && !(1..=layout::MAX_READER_SLOTS).contains(&id.reader_slots)
    {
        return Err(Error::InvalidHeader {
            path: path(),
            reason: format!(
                "reader_slots is {} on a lossless segment, expected 1 to {}",
                id.reader_slots,
                layout::MAX_READER_SLOTS
            ),
        });
    }
    Ok(())
}

/// Step 6 of "Validating a segment before reading it": the file size against the header.
fn validate_size(path: &Path, id: &Identity, file_size: u64) -> Result<(), Error> {
    let path = || path.to_path_buf();
    let expected = DATA_OFFSET + id.capacity;
    if file_size != expected {
        return Err(Error::SizeMismatch {
            path: path(),
            file_size,
            expected,
            capacity: id.capacity,
        });
    }
    Ok(())
}

/// Test hooks: code run at the points where another process could act.
#[cfg(test)]
pub(crate) mod hooks {
    use std::cell::RefCell;
    use std::path::Path;

    type Hook = Box<dyn FnMut(&Path)>;

    thread_local! {
        static BEFORE_LOCK: RefCell<Option<Hook>> = RefCell::new(None);
    }

    /// Runs `hook` (on this thread) between a producer's exclusive creation of its file and
    /// its lock.
    pub(crate) fn set_before_lock(hook: Option<Hook>) {
        BEFORE_LOCK.with(|h| *h.borrow_mut() = hook);
    }

    pub(super) fn before_lock(path: &Path) {
        BEFORE_LOCK.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook(path);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Between its exclusive creation and its lock, a new segment file is 0600 whatever the
    /// requested mode, so no other user can open it and take a lock on it first (which would
    /// make the creation fail); and if a process that may open it does take a read lock there,
    /// the creation fails with `LockBlocked`, not a misleading "already exists".
    #[test]
    fn a_new_file_is_private_until_its_producer_holds_the_lock() {
        let path = std::env::temp_dir().join(format!("shmcast-seg-lock-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let location = Location::File(path.clone());
        let seen = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen2 = seen.clone();
        hooks::set_before_lock(Some(Box::new(move |p: &Path| {
            seen2.set(std::fs::metadata(p).unwrap().mode() & 0o7777);
        })));
        let mapping = create(&location, 4096, 0o644, true, false, None, false).unwrap();
        assert_eq!(seen.get(), 0o600, "mode before the lock");
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o7777,
            0o644,
            "mode once created"
        );
        drop(mapping);
        std::fs::remove_file(&path).unwrap();

        // A read lock taken in that window (by root, or by a process of the same user).
        let held = std::rc::Rc::new(std::cell::RefCell::new(None));
        let held2 = held.clone();
        hooks::set_before_lock(Some(Box::new(move |p: &Path| {
            let file = File::open(p).unwrap();
            read_lock(&file);
            *held2.borrow_mut() = Some(file);
        })));
        let err = create(&location, 4096, 0o644, true, false, None, false)
            .err()
            .unwrap();
        hooks::set_before_lock(None);
        assert!(matches!(err, Error::LockBlocked { .. }), "{err:?}");
        assert!(err.to_string().contains("read lock"), "{err}");
        assert!(!path.exists(), "the failed creation left its file");
    }

    fn read_lock(file: &File) {
        use nix::fcntl::{fcntl, FcntlArg};
        use nix::libc;
        use std::os::fd::AsRawFd;
        // SAFETY: an all-zero `flock` is a valid value; the fields that matter are set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_RDLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_len = 1;
        fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)).unwrap();
    }
}
