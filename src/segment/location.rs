//! Where a segment lives: a POSIX shared-memory name or a file path, and how its file is opened
//! (never through a symbolic link, never blocking on a FIFO).

use super::*;

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

    pub(super) fn open_file(&self, write: bool, create_mode: Option<u32>) -> io::Result<File> {
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
    pub(super) fn open_error(&self, action: &'static str, e: io::Error) -> Error {
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
