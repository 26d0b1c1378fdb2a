//! Segments left behind by producers that died: finding them in a directory, telling live,
//! stale and foreign files apart, and removing the stale ones safely (what `shmcast list` and
//! `shmcast clean` print, and what a new producer does to a dead one's segment in its way).
//!
//! A directory such as `/dev/shm` is shared with every local user, who may swap files, links
//! and FIFOs under any name at any moment. So a file is examined through the one descriptor it
//! was opened with (never through a symbolic link, never blocking on a FIFO put in its place),
//! and a removal locks the file and checks that the name still refers to it before unlinking.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

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
/// time, and against anyone who may rename or replace directories of `path` meanwhile:
///
/// 1. open the directory of `path` once; every later step names the file relative to that one
///    descriptor, so swapping a directory of `path` for a symbolic link cannot redirect them;
/// 2. open the file in it, never through a symbolic link (a link at `path` is an error, not
///    followed) and never blocking (a FIFO is [`Error::NotRegularFile`]);
/// 3. validate its header, on that descriptor: a file that is not a segment, or that its
///    creator has not finished initialising (`magic` not written yet, so it may still be about
///    to take its lock), is never touched and is reported as the validation error
///    ([`Error::NotInitialized`], [`Error::BadMagic`], [`Error::Truncated`], …). Only the
///    header counts: a dead segment whose size or ring is damaged is removed all the same;
/// 4. take the producer lock on it: if another process holds it as a producer, the producer is
///    alive (or someone else is removing the segment right now) and the result is
///    [`Removal::ProducerAlive`]; if a process that is not a producer keeps it from being
///    taken (a read lock on the byte), [`Error::LockBlocked`]. Holding the lock also keeps any
///    other shmcast producer or cleaner from removing or replacing the name until this call
///    returns;
/// 5. check that the name, in that directory, still refers to the file it locked (device and
///    inode), else [`Removal::Replaced`]: a new segment created under the same name is left
///    alone;
/// 6. unlink the name from that directory.
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
    match remove_if_stale(&location, "open (to remove it)")? {
        Stale::Checked(removal) => Ok(removal),
        Stale::NotASegment(e) => Err(e),
    }
}

/// The removal procedure of [`remove_stale_segment`] for any location.
pub(crate) fn remove_if_stale(
    location: &Location,
    open_action: &'static str,
) -> Result<Stale, Error> {
    let (dir, name) = match Dir::of(location) {
        Ok(at) => at,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stale::Checked(Removal::Gone)),
        Err(e) => return Err(Error::from_io(open_action, location.path(), e)),
    };
    remove_in(&dir, &name, open_action)
}

/// Steps 2 to 6 of [`remove_stale_segment`] for the entry `name` of `dir`.
fn remove_in(dir: &Dir, name: &OsStr, open_action: &'static str) -> Result<Stale, Error> {
    let path = dir.entry_path(name);
    let file = match dir.open_entry(name, true) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stale::Checked(Removal::Gone)),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Ok(Stale::NotASegment(Error::Io {
                action: "remove",
                path,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which is never followed: pass the segment's own path",
                ),
            }))
        }
        Err(e) => return Err(Error::from_io(open_action, path, e)),
    };
    // Validate before locking: a file whose `magic` is not written yet may belong to a
    // producer that has created it but not locked it yet, and must not be locked by anyone
    // else. `magic` is written only after the lock is taken and never cleared, so a valid
    // header found unlocked below means its producer is gone.
    let id = match segment::read_header(&file, &path) {
        Ok(id) => id,
        Err(e) => return Ok(Stale::NotASegment(e)),
    };
    let pid = id.producer_pid;
    // Testing first keeps the answer right where OFD locks are missing (there every producer
    // counts as alive, and `try_lock` cannot tell).
    let lock_error = |e| Error::from_io("lock", path.clone(), e);
    if liveness::is_locked(&file).map_err(lock_error)? {
        return Ok(Stale::Checked(Removal::ProducerAlive { pid }));
    }
    if !liveness::try_lock(&file).map_err(lock_error)? {
        // Not a producer's write lock a moment ago: a producer that locked it since, or a
        // read lock, which a producer cannot take over.
        return if liveness::is_locked(&file).map_err(lock_error)? {
            Ok(Stale::Checked(Removal::ProducerAlive { pid }))
        } else {
            Err(Error::LockBlocked { path })
        };
    }
    // From here until `file` (and with it the lock) is dropped, no shmcast producer or cleaner
    // can remove or replace the name: they would need this lock first.
    #[cfg(test)]
    hooks::before_unlink();
    match dir.unlink_entry_if(name, &file) {
        Ok(true) => Ok(Stale::Checked(Removal::Removed { pid })),
        Ok(false) => Ok(Stale::Checked(Removal::Replaced)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Stale::Checked(Removal::Gone)),
        Err(e) => Err(Error::from_io("remove", path, e)),
    }
}

/// A directory held open, whose entries are opened, compared and unlinked relative to that
/// one descriptor (`openat`, `fstatat`, `unlinkat`): once it is open, renaming or replacing
/// directories of its path (by a symbolic link, say) cannot make an operation on one of its
/// entries reach a file elsewhere.
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path` (following symbolic links in it once, now).
    pub(crate) fn open(path: &Path) -> io::Result<Dir> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory holding `location` and its name in it: `/dev/shm` and `NAME` for the
    /// shared-memory object `/NAME`.
    pub(crate) fn of(location: &Location) -> io::Result<(Dir, OsString)> {
        let path = location.path();
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path does not end with a file name",
            )
        })?;
        let dir = Dir::open(path.parent().unwrap_or(Path::new(".")))?;
        Ok((dir, name.to_owned()))
    }

    /// The entry's path, for messages.
    pub(crate) fn entry_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the entry `name` read-only or read-write, never following a symbolic link
    /// (`ELOOP`) and never blocking (a FIFO opens at once). What it is (a regular file or not)
    /// is for the caller to check, on the descriptor.
    pub(crate) fn open_entry(&self, name: &OsStr, write: bool) -> io::Result<File> {
        let access = if write {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let fd = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: `openat` just returned this descriptor; nothing else owns it.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Whether the entry `name` is `file` itself (same device and inode; a symbolic link
    /// never is).
    pub(crate) fn entry_is(&self, name: &OsStr, file: &File) -> io::Result<bool> {
        let named = nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        let open = file.metadata()?;
        Ok(open.dev() == named.st_dev as u64 && open.ino() == named.st_ino as u64)
    }

    /// Unlinks the entry `name` if it is `file` itself (checked just before, by device and
    /// inode, through this directory's descriptor). `Ok(false)`: the name now refers to
    /// another file, which is left alone.
    pub(crate) fn unlink_entry_if(&self, name: &OsStr, file: &File) -> io::Result<bool> {
        if !self.entry_is(name, file)? {
            return Ok(false);
        }
        nix::unistd::unlinkat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?;
        Ok(true)
    }
}

/// Test hooks: code run at the points where a hostile process could act.
#[cfg(test)]
pub(crate) mod hooks {
    use std::cell::RefCell;

    thread_local! {
        static BEFORE_UNLINK: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }

    /// Runs `hook` (on this thread) between a removal's last check and its unlink.
    pub(crate) fn set_before_unlink(hook: Option<Box<dyn FnMut()>>) {
        BEFORE_UNLINK.with(|h| *h.borrow_mut() = hook);
    }

    pub(super) fn before_unlink() {
        BEFORE_UNLINK.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook();
            }
        });
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
    /// A file with a valid segment header (docs/LAYOUT.md, "Validating a segment before
    /// reading it", steps 2 to 5) that readers refuse all the same: its size does not match its
    /// header (grown or shrunk), or its ring's positions are corrupt. Reported with its
    /// problem rather than hidden; [`clean_stale_segments`] removes it if its producer is dead.
    Damaged(DamagedSegment),
    /// A file that is not a finished segment: not a shmcast segment at all, one whose header is
    /// corrupt, or one whose producer has not finished creating it.
    NotASegment,
    /// A file this process may not open (permission denied): whether it is a segment cannot be
    /// told. Its owner (or root) can.
    Unreadable,
}

/// A file whose segment header is valid but which readers refuse
/// ([`SegmentStatus::Damaged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedSegment {
    /// Ring capacity in bytes, from the header.
    pub capacity: u64,
    /// `producer_pid` from the header (informational).
    pub producer_pid: u64,
    /// Creation time from the header, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// Whether a producer holds the segment's liveness lock. [`clean_stale_segments`] removes
    /// the segment only if not.
    pub producer_alive: bool,
    /// What is wrong with it: the error a reader gets when it opens the segment.
    pub problem: String,
}

impl SegmentStatus {
    /// The segment's header, for [`SegmentStatus::Live`] and [`SegmentStatus::Stale`].
    pub fn info(&self) -> Option<&SegmentInfo> {
        match self {
            SegmentStatus::Live(info) | SegmentStatus::Stale(info) => Some(info),
            SegmentStatus::Damaged(_) | SegmentStatus::NotASegment | SegmentStatus::Unreadable => {
                None
            }
        }
    }

    /// Whether [`clean_stale_segments`] removes this entry: a stale segment, or a damaged one
    /// whose producer is dead.
    pub fn is_removable(&self) -> bool {
        match self {
            SegmentStatus::Stale(_) => true,
            SegmentStatus::Damaged(damaged) => !damaged.producer_alive,
            _ => false,
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
/// segment, a stale segment (its producer is dead), a damaged segment (a valid header, but a
/// wrong size or corrupt positions), not a segment, or unreadable, sorted by path. Pass
/// `/dev/shm` for the shared-memory segments of a Linux host.
///
/// The directory is opened once, and each file is opened relative to that descriptor, once,
/// read-only, without following a symbolic link and without blocking (a FIFO put in a file's
/// place cannot hang the call), and its header is read through that descriptor, so a name or
/// a directory changed meanwhile cannot lead the listing out of `dir`. Entries that are not
/// regular files (directories, symbolic links, FIFOs, sockets, devices) and files that vanish
/// or stop being regular files while they are examined are left out. A live producer's segment
/// is examined without disturbing it: only readers' loads and a lock test.
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
    let dir = Dir::open(dir.as_ref())?;
    Ok(list_in(&dir)?.into_iter().map(|(_, entry)| entry).collect())
}

/// The listing of [`list_segments`], with each entry's name in `dir`.
fn list_in(dir: &Dir) -> io::Result<Vec<(OsString, SegmentEntry)>> {
    let mut entries = Vec::new();
    // The names come from reading the directory by its path; each is then opened relative to
    // `dir`, so a name that is not (or no longer) in the directory opened is just skipped.
    for entry in std::fs::read_dir(&dir.path)? {
        let entry = entry?;
        // The entry's own type: a symbolic link is not followed.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name();
        if let Some(status) = examine(dir, &name) {
            let path = dir.entry_path(&name);
            entries.push((name, SegmentEntry { path, status }));
        }
    }
    entries.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    Ok(entries)
}

/// What the entry `name` of `dir` is; `None` if it is no longer a regular file of the
/// directory (removed meanwhile, replaced by a link or something else that is not a regular
/// file).
fn examine(dir: &Dir, name: &OsStr) -> Option<SegmentStatus> {
    let path = dir.entry_path(name);
    let file = match dir.open_entry(name, false) {
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
    let id = match segment::read_header(&file, &path) {
        Ok(id) => id,
        Err(Error::PermissionDenied { .. }) => return Some(SegmentStatus::Unreadable),
        Err(_) => return Some(SegmentStatus::NotASegment),
    };
    let damaged = |problem: String, file: &std::fs::File| {
        SegmentStatus::Damaged(DamagedSegment {
            capacity: id.capacity,
            producer_pid: id.producer_pid,
            created_unix_ns: id.created_unix_ns,
            producer_alive: liveness::is_locked(file).unwrap_or(true),
            problem,
        })
    };
    let probe = file.try_clone();
    let mapping = match segment::map_validated(file, path.clone(), false) {
        Ok(mapping) => mapping,
        Err(Error::PermissionDenied { .. }) => return Some(SegmentStatus::Unreadable),
        Err(e) => {
            return Some(match probe {
                Ok(file) => damaged(e.to_string(), &file),
                Err(_) => SegmentStatus::NotASegment,
            })
        }
    };
    // The positions must let a reader join, as `Subscriber::open` requires.
    if let Err(e) = mapping.ring().join(StartAt::Next) {
        return Some(damaged(format!("{}: {e}", path.display()), mapping.file()));
    }
    let info = subscriber::segment_info(&mapping, path);
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
    /// What [`remove_stale_segment`] did with it: `Some` for an entry that
    /// [`SegmentStatus::is_removable`] (a stale segment, or a damaged one whose producer is
    /// dead), except in a dry run; `None` for every other entry, which is left alone.
    pub removal: Option<Result<Removal, Error>>,
}

/// Removes the stale segments of `dir` (those [`list_segments`] finds
/// [`SegmentStatus::Stale`], and the [`SegmentStatus::Damaged`] ones whose producer is dead)
/// with the procedure of [`remove_stale_segment`], and returns every entry of the listing with
/// what became of it. With `dry_run`, nothing is removed (every `removal` is `None`).
///
/// The directory is opened once: the listing and every removal act on entries of that one
/// descriptor, so renaming or replacing a directory of the path (by a symbolic link, say) while
/// it runs cannot make it remove a file elsewhere. A segment that changes between the listing
/// and its removal is left alone and reported: a producer restarted under its name
/// ([`Removal::ProducerAlive`], [`Removal::Replaced`]), or another cleaner that removed it
/// first ([`Removal::Gone`]). A live producer's segment, a file without a valid segment
/// header, a symbolic link and anything in a subdirectory are never touched. Readers of a
/// removed segment are not disturbed: they read what was published, then learn that the
/// producer is gone.
///
/// The error is that of reading the directory; the errors of single removals are in the
/// entries. See [`list_segments`] for an example.
pub fn clean_stale_segments(dir: impl AsRef<Path>, dry_run: bool) -> io::Result<Vec<Cleaned>> {
    let dir = Dir::open(dir.as_ref())?;
    let entries = list_in(&dir)?;
    Ok(entries
        .into_iter()
        .map(|(name, entry)| {
            let removal = (entry.status.is_removable() && !dry_run).then(|| {
                match remove_in(&dir, &name, "open (to remove it)")? {
                    Stale::Checked(removal) => Ok(removal),
                    Stale::NotASegment(e) => Err(e),
                }
            });
            Cleaned { entry, removal }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Publisher;

    /// A directory under the system's temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let path = std::env::temp_dir().join(format!(
                "shmcast-stale-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            hooks::set_before_unlink(None);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dead_segment(path: &Path) {
        drop(
            Publisher::options()
                .capacity(4096)
                .unlink_on_drop(false)
                .create_path(path)
                .unwrap(),
        );
    }

    /// `root/d/seg` is a dead producer's segment and `root/victim/seg` a file the cleaner must
    /// never remove. Between the cleaner's last check and its unlink, the hook swaps `root/d`
    /// for a symbolic link to `root/victim` (what a user who owns `root` can do). Acting by path,
    /// the unlink would remove `root/victim/seg`; through the directory descriptor it removes
    /// the segment it checked, in the directory it opened.
    fn swap_directory_before_unlink(root: &Path) -> PathBuf {
        let d = root.join("d");
        let victim_dir = root.join("victim");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(&victim_dir).unwrap();
        dead_segment(&d.join("seg"));
        let victim = victim_dir.join("seg");
        std::fs::write(&victim, "precious").unwrap();
        let (d2, moved) = (d.clone(), root.join("d.moved"));
        let mut swapped = false;
        hooks::set_before_unlink(Some(Box::new(move || {
            if !swapped {
                swapped = true;
                std::fs::rename(&d2, &moved).unwrap();
                std::os::unix::fs::symlink(&victim_dir, &d2).unwrap();
            }
        })));
        victim
    }

    #[test]
    fn removing_a_stale_segment_cannot_be_redirected_by_swapping_a_directory() {
        let root = Scratch::new("swap-remove");
        let victim = swap_directory_before_unlink(&root.0);
        assert_eq!(
            remove_stale_segment(root.0.join("d").join("seg")).unwrap(),
            Removal::Removed {
                pid: u64::from(std::process::id())
            }
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!root.0.join("d.moved").join("seg").exists());
    }

    #[test]
    fn cleaning_a_directory_cannot_be_redirected_by_swapping_it() {
        let root = Scratch::new("swap-clean");
        let victim = swap_directory_before_unlink(&root.0);
        let cleaned = clean_stale_segments(root.0.join("d"), false).unwrap();
        assert_eq!(cleaned.len(), 1);
        assert!(
            matches!(cleaned[0].removal, Some(Ok(Removal::Removed { .. }))),
            "{cleaned:?}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!root.0.join("d.moved").join("seg").exists());
    }

    /// The name replaced by another file between the check and the unlink (by a rename over
    /// it): the other file stays.
    #[test]
    fn a_name_replaced_before_the_unlink_is_left_alone() {
        let root = Scratch::new("replace");
        let seg = root.0.join("seg");
        dead_segment(&seg);
        let other = root.0.join("other");
        std::fs::write(&other, "someone else's").unwrap();
        let (from, to) = (other.clone(), seg.clone());
        hooks::set_before_unlink(Some(Box::new(move || {
            std::fs::rename(&from, &to).unwrap();
        })));
        assert_eq!(remove_stale_segment(&seg).unwrap(), Removal::Replaced);
        assert_eq!(std::fs::read(&seg).unwrap(), b"someone else's");
    }
}
