//! Creating a segment: exclusively, locked before anything is visible, every page allocated,
//! the header written with `magic` last; a dead producer's segment in the way is replaced.

use super::*;

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
