//! Producer liveness: the lock a producer holds on its segment for as long as it lives
//! (docs/LAYOUT.md, "Producer liveness"), and how others test it. Removing a dead producer's
//! segment is `stale.rs`'s business.
//!
//! The lock is an open-file-description lock (`fcntl(F_OFD_SETLK)`), a write lock on byte 0 of
//! the file. The kernel releases it when the producer's descriptor is closed, however the
//! process ends (kill -9 included), so it cannot be fooled by a reused PID. Testing it
//! (`F_OFD_GETLK`) acquires nothing, so a reader checking liveness never disturbs the producer,
//! and it works on a read-only descriptor.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod ofd {
    use super::*;
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;

    fn one_byte(l_type: libc::c_int, offset: u64) -> libc::flock {
        // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = l_type as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = offset as libc::off_t;
        lock.l_len = 1;
        lock
    }

    pub(super) fn try_lock(file: &File, offset: u64) -> io::Result<bool> {
        match fcntl(
            file.as_raw_fd(),
            FcntlArg::F_OFD_SETLK(&one_byte(libc::F_WRLCK, offset)),
        ) {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn unlock(file: &File, offset: u64) -> io::Result<()> {
        fcntl(
            file.as_raw_fd(),
            FcntlArg::F_OFD_SETLK(&one_byte(libc::F_UNLCK, offset)),
        )?;
        Ok(())
    }

    pub(super) fn is_locked(file: &File, offset: u64) -> io::Result<bool> {
        let mut lock = one_byte(libc::F_WRLCK, offset);
        fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut lock))?;
        // Only a write lock counts. Anyone who can read the file can take a read lock on the
        // byte (F_GETLK then reports it), but a read lock cannot coexist with the owner's write
        // lock, so it never means "alive".
        Ok(lock.l_type == libc::F_WRLCK as libc::c_short)
    }
}

/// Takes the producer lock on `file` (opened for writing). `false` if another open file
/// description holds it.
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    try_lock_byte(file, 0)
}

/// Takes a write lock on byte `offset` of `file` (opened for writing): the producer lock at 0,
/// a reader slot's lock at the slot's first byte (docs/LAYOUT.md, "Lossless mode"). `false` if
/// another open file description holds a lock there.
pub(crate) fn try_lock_byte(file: &File, offset: u64) -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return ofd::try_lock(file, offset);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return Ok(true);
}

/// Releases this open file description's lock on byte `offset` of `file`, if it holds one.
pub(crate) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return ofd::unlock(file, offset);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return Ok(());
}

/// Whether some open file description other than `file`'s holds the producer lock: the
/// producer is alive. Without OFD locks (not Linux) every producer counts as alive.
pub(crate) fn is_locked(file: &File) -> io::Result<bool> {
    is_locked_byte(file, 0)
}

/// Whether some open file description other than `file`'s holds a write lock on byte `offset`:
/// for a reader slot, whether its owner is alive. Without OFD locks every owner counts as alive.
pub(crate) fn is_locked_byte(file: &File, offset: u64) -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return ofd::is_locked(file, offset);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return Ok(true);
}

/// Whether `file` is still the file at `path` (same device and inode): `false` once the segment
/// was removed, or removed and created again.
pub(crate) fn still_at(file: &File, path: &std::path::Path) -> bool {
    same_file(file, path, true)
}

/// Whether `path` names `file` (same device and inode). `follow`: whether a symbolic link at
/// `path` counts as the file it points to; if not, a link never names `file`.
pub(crate) fn same_file(file: &File, path: &std::path::Path, follow: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let named = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    match (file.metadata(), named) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}
