//! Error types: [`Error`] for creating and opening segments and for publishing, [`RecvError`]
//! for reading (it converts into [`Error`], so `?` works on both).

use std::io;
use std::path::PathBuf;

/// Errors from creating, opening or publishing to a segment, and, through [`Error::Recv`], from
/// reading it.
///
/// Every variant names the segment (where there is one) and says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The segment name is not a valid POSIX shared-memory name.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No segment exists under that name or path.
    #[error("no shmcast segment at {}: is the producer running, and is the name right?", path.display())]
    NotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file already exists where a new segment was to be created.
    #[error("{} already exists and was not replaced (it is not a segment left by a dead producer, or replacing those is off); if nothing uses it, remove it (rm {}) and try again", path.display(), path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The segment's producer is alive, so another may not create or take it over.
    #[error("{} belongs to a live producer (pid {pid}); a segment has one producer: stop that one, or use another name", path.display())]
    ProducerAlive {
        /// The segment's file.
        path: PathBuf,
        /// The process id recorded by the live producer (0 if it has not finished creating
        /// the segment yet).
        pid: u64,
    },
    /// The operating system refused access.
    #[error("permission denied to {action} {}: check the segment's owner and mode (ls -l {})", path.display(), path.display())]
    PermissionDenied {
        /// What was attempted ("open", "create", …).
        action: &'static str,
        /// The segment.
        path: PathBuf,
    },
    /// The file system (usually the tmpfs at /dev/shm) has no room for the segment.
    #[error("no space to allocate {bytes} bytes for {}: free space in its file system or make it larger (Docker: --shm-size), or use a smaller capacity", path.display())]
    NoSpace {
        /// The segment.
        path: PathBuf,
        /// Bytes that were needed.
        bytes: u64,
    },
    /// The requested capacity is not allowed.
    #[error("invalid capacity {capacity}: {reason}")]
    InvalidCapacity {
        /// The capacity asked for.
        capacity: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The file exists but its header has not been written yet (`magic` is zero, or the file is
    /// empty and a producer holds its lock). Opening a segment already retries while its
    /// producer is creating it, for up to 2 s (docs/LAYOUT.md, "Validating a segment before
    /// reading it").
    #[error("{} is not initialised yet{}", path.display(), if *creating { ": its producer is still creating it (it holds the producer lock); try again shortly" } else { " and no producer holds its lock: its creator died before finishing it, or it is not a shmcast segment" })]
    NotInitialized {
        /// The segment.
        path: PathBuf,
        /// Whether a producer holds the file's lock, so it is still being created and trying
        /// again can succeed; `false`: nobody is creating it.
        creating: bool,
    },
    /// The file at the segment's name is not a regular file (a FIFO, a device, a directory, a
    /// socket, or a symbolic link at a shared-memory name, which is never followed), so it cannot
    /// be a segment. Nothing was opened for reading or writing through it.
    #[error("{} is not a regular file: it is {kind}; a segment is always a regular file, so this is not one (remove it if nothing uses it, or use another name)", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead ("a FIFO", "a character device", "a symbolic link", …).
        kind: &'static str,
    },
    /// Another process holds a lock on the byte of the file the producer locks (byte 0, the
    /// liveness lock of docs/LAYOUT.md) without being its producer: a read lock, which anyone
    /// who can read the file can take. It keeps this producer from taking the lock it needs to
    /// create or to replace the segment. Nothing was removed.
    #[error("{} cannot be locked by this producer: another process holds a read lock on its first byte (the producer lock's byte) although no producer is alive; find it with `lslocks` or `fuser {}`, stop it, or use another name", path.display(), path.display())]
    LockBlocked {
        /// The segment's file.
        path: PathBuf,
    },
    /// The file is not a shmcast segment.
    #[error("{} is not a shmcast segment (magic {found:02x?}, expected \"SHMCAST\\0\")", path.display())]
    BadMagic {
        /// The segment.
        path: PathBuf,
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// The segment uses a layout version this crate does not read.
    #[error("{} uses layout version {found}; this shmcast reads version {supported}: upgrade the reader or the producer so they match", path.display())]
    UnsupportedVersion {
        /// The segment.
        path: PathBuf,
        /// Version found in the header.
        found: u32,
        /// Version this crate reads.
        supported: u32,
    },
    /// The segment uses features this crate does not know.
    #[error("{} uses unknown feature flags {flags:#x}: upgrade this reader", path.display())]
    UnsupportedFlags {
        /// The segment.
        path: PathBuf,
        /// The flags found.
        flags: u64,
    },
    /// A header field has an impossible value.
    #[error("{} has a corrupt header: {reason}", path.display())]
    InvalidHeader {
        /// The segment.
        path: PathBuf,
        /// Which field and why.
        reason: String,
    },
    /// The file is shorter than a header. An empty file is this too when no producer holds its
    /// lock (a producer that is creating a segment holds it: [`Error::NotInitialized`]).
    #[error("{} is truncated: {file_size} bytes, a segment needs at least {min}{}", path.display(), if *file_size == 0 { " (an empty file that no producer is creating: not a segment, or its creator died before sizing it)" } else { "" })]
    Truncated {
        /// The segment.
        path: PathBuf,
        /// Its size.
        file_size: u64,
        /// The smallest valid size.
        min: u64,
    },
    /// The file size does not match the capacity in its header.
    #[error("{} is {file_size} bytes but its header describes {expected} bytes (capacity {capacity}); the file was truncated or overwritten", path.display())]
    SizeMismatch {
        /// The segment.
        path: PathBuf,
        /// Its size.
        file_size: u64,
        /// `data_offset + capacity`.
        expected: u64,
        /// Capacity from the header.
        capacity: u64,
    },
    /// A message is larger than this segment accepts.
    #[error("message of {len} bytes is larger than the maximum of {max} for this segment (a quarter of its capacity, less 16); use a larger capacity")]
    MessageTooLarge {
        /// Size of the message.
        len: usize,
        /// Largest accepted size.
        max: usize,
    },
    /// An option given to [`PublisherOptions`](crate::PublisherOptions) is out of range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// Which option.
        option: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A lossless publish could not wait (`try_publish`) or waited until its deadline
    /// (`publish_timeout`): the registered reader in `slot` has not finished with the bytes the
    /// message would overwrite. Nothing was published.
    #[error("held back by the registered reader in slot {slot} (pid {pid}), {behind_messages} messages ({behind_bytes} bytes) behind; try again, or wait with publish / publish_timeout")]
    Backpressure {
        /// The reader's slot.
        slot: usize,
        /// Its process id, as it registered it.
        pid: u64,
        /// Bytes it has not yet read.
        behind_bytes: u64,
        /// Messages it has not yet read.
        behind_messages: u64,
    },
    /// Registering as a lossless reader failed: the segment was not created lossless.
    #[error("{} is not a lossless segment, so a reader cannot register on it: create it with PublisherOptions::lossless(true) (shmcast publish --lossless), or open it without registering", path.display())]
    NotLossless {
        /// The segment.
        path: PathBuf,
    },
    /// Registering as a lossless reader failed: every reader slot is taken by a live reader.
    #[error("all {slots} reader slots of {} are taken by live readers; stop one, or create the segment with more slots (at most 31)", path.display())]
    NoFreeSlot {
        /// The segment.
        path: PathBuf,
        /// How many slots it has.
        slots: usize,
    },
    /// A read failed: the [`RecvError`] says why (its message is this error's message). This
    /// lets `?` pass on the errors of opening and of reading alike, in a function that returns
    /// `Result<_, shmcast::Error>`.
    ///
    /// ```
    /// use shmcast::{Error, Publisher, RecvError, StartAt, Subscriber};
    ///
    /// fn first_message(name: &str) -> Result<Vec<u8>, Error> {
    ///     let mut subscriber = Subscriber::open(name, StartAt::Beginning)?;
    ///     let mut buf = Vec::new();
    ///     subscriber.try_recv(&mut buf)?;
    ///     Ok(buf)
    /// }
    ///
    /// # fn main() -> Result<(), Error> {
    /// let name = format!("/shmcast-doc-error-{}", std::process::id());
    /// let mut publisher = Publisher::options().capacity(4096).create(&name)?;
    /// assert!(matches!(first_message(&name), Err(Error::Recv(RecvError::Empty))));
    /// publisher.publish(b"hi")?;
    /// assert_eq!(first_message(&name)?, b"hi");
    /// # Ok(()) }
    /// ```
    #[error(transparent)]
    Recv(#[from] RecvError),
    /// Any other operating-system error.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The segment.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

#[cfg(not(loom))]
impl Error {
    /// Maps an OS error from `action` on `path` to the most specific variant.
    pub(crate) fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound { path },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists { path },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { action, path },
            _ => Error::Io {
                action,
                path,
                source,
            },
        }
    }
}

/// What a read returns instead of a message.
///
/// [`RecvError::Empty`] and [`RecvError::Lagged`] are part of normal operation; after
/// `Lagged` the subscriber continues with the oldest message still intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No new message has been published yet (non-blocking reads only).
    #[error("no new message")]
    Empty,
    /// The subscriber fell more than a ring behind: exactly `missed` messages were overwritten
    /// before it read them. The next read continues with the oldest message still retained.
    #[error(
        "lagged behind the producer: {missed} messages were overwritten before they were read"
    )]
    Lagged {
        /// How many messages were lost.
        missed: u64,
    },
    /// The caller's buffer cannot hold the next message; the message stays unread.
    #[error("buffer of {available} bytes is too small for the next message of {needed} bytes")]
    BufferTooSmall {
        /// Size of the message.
        needed: usize,
        /// Size of the buffer.
        available: usize,
    },
    /// A typed read found a message whose size is not the size of the type; the message is
    /// consumed.
    #[error("message {seq} has {actual} bytes, but the type read needs {expected}")]
    SizeMismatch {
        /// Its sequence number.
        seq: u64,
        /// Size of the type.
        expected: usize,
        /// Size of the message.
        actual: usize,
    },
    /// A blocking read reached its deadline.
    #[error("timed out waiting for a message")]
    Timeout,
    /// A blocking read found nothing left to read and the producer has exited (or was killed):
    /// no message will ever arrive. Everything it published before was delivered first.
    #[error("{}", if *replaced {
        "the producer has exited, and a new segment now exists under the same name: open it again to follow the new producer"
    } else {
        "the producer has exited; no more messages will arrive"
    })]
    ProducerGone {
        /// Whether another segment now exists under the name this subscriber opened (a new
        /// producer replaced the dead one's segment).
        replaced: bool,
    },
    /// A registered (lossless) reader held the producer back for longer than the segment's
    /// `max_block`, and the producer evicted it. Returned once; the subscriber reads on as a
    /// lossy reader, and a later [`RecvError::Lagged`] says exactly what it lost. It may register
    /// again by opening the segment again.
    #[error(
        "evicted: this registered reader held the producer back too long and is lossy from now on"
    )]
    Evicted,
    /// A [`Canceller`](crate::Canceller) cancelled this subscriber's blocking reads, and this
    /// one found nothing to read (nothing is lost: the next message stays unread). Blocking
    /// reads keep returning it until the canceller is reset; non-blocking ones read on.
    #[error("the blocking read was cancelled")]
    Cancelled,
    /// The ring holds values no correct producer writes. Reading cannot continue.
    #[error("corrupt segment: {0}")]
    Corrupt(&'static str),
}

impl RecvError {
    pub(crate) fn corrupt(reason: &'static str) -> Self {
        RecvError::Corrupt(reason)
    }

    pub(crate) fn overrun() -> Self {
        RecvError::Corrupt(
            "the producer overwrote every record before it could be read, thousands of times in a row",
        )
    }
}
