//! Segment files: the mapping the ring lives in ([`Mapping`]), and in submodules the naming
//! (`location`), exclusive creation with pre-allocated pages (`create`) and opening with header
//! validation (`open`).

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::mman::shm_open;
use nix::sys::stat::Mode;

use crate::error::Error;
use crate::layout::{self, offset, Identity, DATA_OFFSET, HEADER_WORDS};
use crate::liveness;
use crate::registry::{GateWords, Registry};
use crate::ring::Ring;
use crate::stale::{self, Dir, Removal, Stale};
use crate::sync;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::wait::{Barrier, WakeWords};

mod create;
mod location;
mod open;

pub(crate) use create::{create, LosslessHeader};
pub(crate) use location::Location;
pub(crate) use open::{check_regular, map_validated, open, read_header};

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
    use std::path::Path;

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
