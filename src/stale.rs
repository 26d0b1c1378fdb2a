//! Segments left behind by producers that died: finding them in a directory, telling live,
//! stale and foreign files apart, and removing the stale ones safely (what `shmcast list` and
//! `shmcast clean` print, and what a new producer does to a dead one's segment in its way).
//!
//! A directory such as `/dev/shm` is shared with every local user, who may swap files, links
//! and FIFOs under any name at any moment. So a file is examined through the one descriptor it
//! was opened with (never through a symbolic link, never blocking on a FIFO put in its place),
//! and a removal locks the file and checks that the name still refers to it before unlinking.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::error::Error;
use crate::liveness;
use crate::ring::StartAt;
use crate::segment::{self, Location};
use crate::subscriber::{self, SegmentInfo};

/// What [`remove_stale_segment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Removal {
    /// The file was a valid segment whose producer is gone; it was removed.
    Removed {
        /// `producer_pid` from its header: the process that created it (informational).
        pid: u64,
    },
    /// A producer holds the segment's liveness lock: it is alive, or another process is
    /// removing or replacing this stale segment at this very moment. Nothing was removed.
    ProducerAlive {
        /// `producer_pid` from the header (informational; liveness is decided by the lock).
        pid: u64,
    },
    /// Nothing was at the path (someone else removed it first).
    Gone,
    /// The path stopped naming the file that was examined (it was removed, or removed and
    /// created again, meanwhile). Nothing was removed.
    Replaced,
}

/// Outcome of [`remove_if_stale`]: `NotASegment` keeps the validation error apart from the
/// errors of the removal itself, which its callers treat differently.
pub(crate) enum Stale {
    Checked(Removal),
    NotASegment(Error),
}

/// Removes the segment file at `path` if, and only if, it was left by a dead producer
/// (docs/LAYOUT.md, "Producer liveness"), with the procedure a new producer uses to replace
/// such a segment, so that it is safe against producers and other cleaners acting at the same
/// time:
///
/// 1. open the file (never through a symbolic link: a link at `path` is an error, not followed);
/// 2. validate its header, on that descriptor: a file that is not a segment, or that its
///    creator has not finished initialising (`magic` not written yet, so it may still be about
///    to take its lock), is never touched and is reported as the validation error
///    ([`Error::NotInitialized`], [`Error::BadMagic`], [`Error::Truncated`], …);
/// 3. take the producer lock on it: if another process holds it, the producer is alive (or
///    someone else is removing the segment right now) and the result is
///    [`Removal::ProducerAlive`]. Holding the lock also keeps any other shmcast producer or
///    cleaner from removing or replacing the name until this call returns;
/// 4. check that `path` still names the file it locked (device and inode), else
///    [`Removal::Replaced`]: a new segment created under the same name is left alone;
/// 5. unlink `path`.
///
/// A shared-memory segment `/NAME` is the file `/dev/shm/NAME` on Linux. Nothing at `path` is
/// `Ok(`[`Removal::Gone`]`)`. Processes that still map the removed segment (its readers) are
/// not disturbed: they read what the dead producer published and then learn it is gone.
///
/// Without OFD locks (not Linux) every producer counts as alive, so nothing is ever removed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmcast::{remove_stale_segment, Publisher, Removal};
///
/// let path = std::env::temp_dir().join(format!("shmcast-doc-clean-{}", std::process::id()));
/// let live = Publisher::options().capacity(4096).create_path(&path)?;
/// // The producer is alive: its segment stays.
/// assert!(matches!(remove_stale_segment(&path)?, Removal::ProducerAlive { .. }));
/// assert!(path.exists());
///
/// // A producer that ends without removing its segment (or is killed) leaves it behind.
/// drop(live);
/// let stale = Publisher::options().capacity(4096).unlink_on_drop(false).create_path(&path)?;
/// drop(stale);
/// assert_eq!(
///     remove_stale_segment(&path)?,
///     Removal::Removed { pid: u64::from(std::process::id()) }
/// );
/// assert!(!path.exists());
/// assert_eq!(remove_stale_segment(&path)?, Removal::Gone);
/// # Ok(()) }
/// ```
pub fn remove_stale_segment(path: impl AsRef<Path>) -> Result<Removal, Error> {
    let location = Location::File(path.as_ref().to_path_buf());
    match remove_if_stale(&location, false, "open (to remove it)")? {
        Stale::Checked(removal) => Ok(removal),
        Stale::NotASegment(e) => Err(e),
    }
}

/// The removal procedure of [`remove_stale_segment`] for any location. `follow`: whether a
/// symbolic link at a file location is followed (as `create` always did) or refused.
pub(crate) fn remove_if_stale(
    location: &Location,
    follow: bool,
    open_action: &'static str,
) -> Result<Stale, Error> {
    let path = location.path();
    let file = match location.open_for_removal(follow) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stale::Checked(Removal::Gone)),
        Err(e) if !follow && e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(Error::Io {
                action: "remove",
                path,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which is never followed: pass the segment's own path",
                ),
            })
        }
        Err(e) => return Err(Error::from_io(open_action, path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::from_io("stat", path.clone(), e))?;
    if !meta.file_type().is_file() {
        return Ok(Stale::NotASegment(Error::Io {
            action: "remove",
            path,
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        }));
    }
    // Validate before locking: a file whose `magic` is not written yet may belong to a
    // producer that has created it but not locked it yet, and must not be locked by anyone
    // else. `magic` is written only after the lock is taken and never cleared, so a valid
    // header found unlocked below means its producer is gone.
    let mapping = match segment::map_validated(file, path.clone(), false) {
        Ok(mapping) => mapping,
        Err(e) => return Ok(Stale::NotASegment(e)),
    };
    let pid = mapping.identity().producer_pid;
    // Testing first keeps the answer right where OFD locks are missing (there every producer
    // counts as alive, and `try_lock` cannot tell).
    let lock_error = |e| Error::from_io("lock", path.clone(), e);
    if liveness::is_locked(mapping.file()).map_err(lock_error)?
        || !liveness::try_lock(mapping.file()).map_err(lock_error)?
    {
        return Ok(Stale::Checked(Removal::ProducerAlive { pid }));
    }
    // From here until `mapping` (and with it the lock) is dropped, no shmcast producer or
    // cleaner can remove or replace the name: they would need this lock first.
    if !liveness::same_file(mapping.file(), &path, follow) {
        return Ok(Stale::Checked(Removal::Replaced));
    }
    match location.unlink() {
        Ok(()) => Ok(Stale::Checked(Removal::Removed { pid })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Stale::Checked(Removal::Gone)),
        Err(e) => Err(Error::from_io("remove", path, e)),
    }
}

/// What [`list_segments`] found a regular file of the directory to be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SegmentStatus {
    /// A segment whose producer is alive: it holds the segment's liveness lock
    /// (docs/LAYOUT.md, "Producer liveness").
    Live(SegmentInfo),
    /// A segment whose producer has exited or was killed without removing it: stale.
    /// [`clean_stale_segments`] removes it, and so does a new producer that creates a segment
    /// under its name.
    Stale(SegmentInfo),
    /// A file that is not a finished segment: not a shmcast segment at all, a corrupt one, or
    /// one whose producer has not finished creating it.
    NotASegment,
    /// A file this process may not open (permission denied): whether it is a segment cannot be
    /// told. Its owner (or root) can.
    Unreadable,
}

impl SegmentStatus {
    /// The segment's header, for [`SegmentStatus::Live`] and [`SegmentStatus::Stale`].
    pub fn info(&self) -> Option<&SegmentInfo> {
        match self {
            SegmentStatus::Live(info) | SegmentStatus::Stale(info) => Some(info),
            SegmentStatus::NotASegment | SegmentStatus::Unreadable => None,
        }
    }
}

/// A regular file of a directory, as [`list_segments`] classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentEntry {
    /// The file: the directory joined with the entry's name. A file of `/dev/shm` called
    /// `NAME` is the shared-memory segment `/NAME`.
    pub path: PathBuf,
    /// What it is.
    pub status: SegmentStatus,
}

/// Every regular file of `dir` (not of its subdirectories), classified by its header as a live
/// segment, a stale segment (its producer is dead), not a segment, or unreadable, sorted by
/// path. Pass `/dev/shm` for the shared-memory segments of a Linux host.
///
/// Each file is opened once, read-only, without following a symbolic link and without blocking
/// (a FIFO put in a file's place cannot hang the call), and its header is read through that
/// descriptor, so a name changed meanwhile cannot lead the listing out of `dir`. Entries that
/// are not regular files (directories, symbolic links, FIFOs, sockets, devices) and files that
/// vanish or stop being regular files while they are examined are left out. A live producer's
/// segment is examined without disturbing it: only readers' loads and a lock test.
///
/// The error is that of reading the directory itself.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmcast::{clean_stale_segments, list_segments, Publisher, Removal, SegmentStatus};
///
/// let dir = std::env::temp_dir().join(format!("shmcast-doc-list-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let live = Publisher::options().capacity(4096).create_path(dir.join("a-live"))?;
/// // A producer that ends without removing its segment (or is killed) leaves it behind.
/// let dead = Publisher::options().capacity(4096).unlink_on_drop(false);
/// drop(dead.create_path(dir.join("b-dead"))?);
/// std::fs::write(dir.join("c-notes.txt"), "not a segment")?;
///
/// let entries = list_segments(&dir)?;
/// assert!(matches!(&entries[0].status, SegmentStatus::Live(info) if info.capacity == 4096));
/// assert!(matches!(entries[1].status, SegmentStatus::Stale(_)));
/// assert_eq!(entries[2].status, SegmentStatus::NotASegment);
///
/// // Only the stale segment goes.
/// let cleaned = clean_stale_segments(&dir, false)?;
/// let removed: Vec<_> = cleaned
///     .iter()
///     .filter(|c| matches!(c.removal, Some(Ok(Removal::Removed { .. }))))
///     .map(|c| c.entry.path.clone())
///     .collect();
/// assert_eq!(removed, [dir.join("b-dead")]);
/// assert_eq!(list_segments(&dir)?.len(), 2);
/// drop(live);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
pub fn list_segments(dir: impl AsRef<Path>) -> io::Result<Vec<SegmentEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // The entry's own type: a symbolic link is not followed.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if let Some(status) = examine(&path) {
            entries.push(SegmentEntry { path, status });
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// What the file at `path` is; `None` if it is no longer a regular file of the directory
/// (removed meanwhile, replaced by a link or something else that is not a regular file).
fn examine(path: &Path) -> Option<SegmentStatus> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Some(SegmentStatus::Unreadable)
        }
        Err(_) => return None,
    };
    if !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
        return None;
    }
    // The header is read through this very descriptor: no second open by name.
    let mapping = match segment::map_validated(file, path.to_path_buf(), false) {
        Ok(mapping) => mapping,
        Err(Error::PermissionDenied { .. }) => return Some(SegmentStatus::Unreadable),
        Err(_) => return Some(SegmentStatus::NotASegment),
    };
    // The positions must let a reader join, as `Subscriber::open` requires.
    if mapping.ring().join(StartAt::Next).is_err() {
        return Some(SegmentStatus::NotASegment);
    }
    let info = subscriber::segment_info(&mapping, path.to_path_buf());
    Some(if info.producer_alive {
        SegmentStatus::Live(info)
    } else {
        SegmentStatus::Stale(info)
    })
}

/// One file of the directory [`clean_stale_segments`] cleaned, and what became of it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Cleaned {
    /// The file as [`list_segments`] found it, before any removal.
    pub entry: SegmentEntry,
    /// What [`remove_stale_segment`] did with it: `Some` for a [`SegmentStatus::Stale`] entry,
    /// except in a dry run; `None` for every other entry, which is left alone.
    pub removal: Option<Result<Removal, Error>>,
}

/// Removes the stale segments of `dir` (those [`list_segments`] finds [`SegmentStatus::Stale`])
/// with [`remove_stale_segment`], and returns every entry of the listing with what became of
/// it. With `dry_run`, nothing is removed (every `removal` is `None`).
///
/// A segment that changes between the listing and its removal is left alone and reported: a
/// producer restarted under its name ([`Removal::ProducerAlive`], [`Removal::Replaced`]), or
/// another cleaner that removed it first ([`Removal::Gone`]). A live producer's segment, a file
/// that is not a valid segment, a symbolic link and anything in a subdirectory are never
/// touched. Readers of a removed segment are not disturbed: they read what was published, then
/// learn that the producer is gone.
///
/// The error is that of reading the directory; the errors of single removals are in the
/// entries. See [`list_segments`] for an example.
pub fn clean_stale_segments(dir: impl AsRef<Path>, dry_run: bool) -> io::Result<Vec<Cleaned>> {
    let entries = list_segments(dir)?;
    Ok(entries
        .into_iter()
        .map(|entry| {
            let removal = match entry.status {
                SegmentStatus::Stale(_) if !dry_run => Some(remove_stale_segment(&entry.path)),
                _ => None,
            };
            Cleaned { entry, removal }
        })
        .collect())
}
