//! Opening a segment: the file type, size and header are checked before anything is mapped,
//! and a segment its producer is still creating is waited for, briefly.

use super::*;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::layout::HEADER_SIZE;

/// How long [`open`] keeps retrying a segment that a live producer is still creating (a
/// zero-size or `magic`-zero file whose producer lock is held; docs/LAYOUT.md, "Validating a
/// segment before reading it").
const INIT_WAIT: Duration = Duration::from_secs(2);

/// How long [`open`] retries an empty file whose lock is free: the moment between a producer's
/// exclusive creation of the file and its lock.
const EMPTY_GRACE: Duration = Duration::from_millis(10);

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
