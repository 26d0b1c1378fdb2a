//! Helpers the integration-test crates share: unique names, and guards that remove what a test
//! created however it ends. (Each crate uses a different subset.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use shmcast::{Error, RecvError};

/// A name no other test (in this or another test process) uses: `shmcast-test-TAG-PID-N`.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "shmcast-test-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A unique shared-memory name (`/shmcast-test-…`).
pub fn unique_shm(tag: &str) -> String {
    format!("/{}", unique(tag))
}

/// The file of a shared-memory name on Linux.
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm{name}"))
}

/// A unique shared-memory name; its file is removed when the guard is dropped.
pub fn shm_name(tag: &str) -> (String, Cleanup) {
    let name = unique_shm(tag);
    let guard = Cleanup(shm_path(&name));
    (name, guard)
}

/// Removes a segment or file at the end of a test, passed or failed.
pub struct Cleanup(pub PathBuf);

impl Cleanup {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh private directory, removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp dir")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a read ended, as the golden and hostile-corpus transcripts name it (Go names it alike).
pub fn recv_kind(e: &RecvError) -> &'static str {
    match e {
        RecvError::ProducerGone { .. } => "producer_gone",
        RecvError::Corrupt(_) => "corrupt",
        RecvError::Timeout => "timeout",
        other => panic!("unexpected end of a read: {other:?}"),
    }
}

/// Why opening a segment failed, as the golden and hostile-corpus transcripts name it.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Truncated { .. } => "truncated",
        Error::NotInitialized { .. } => "not_initialized",
        Error::BadMagic { .. } => "bad_magic",
        Error::UnsupportedVersion { .. } => "unsupported_version",
        Error::UnsupportedFlags { .. } => "unsupported_flags",
        // Joining found the index words inconsistent: Rust reports the header invalid, with
        // the ring's reason; Go returns its *CorruptError. The transcripts name it one way.
        Error::InvalidHeader { reason, .. } if reason.starts_with("corrupt segment:") => {
            "join_corrupt"
        }
        Error::InvalidHeader { .. } => "invalid_header",
        Error::SizeMismatch { .. } => "size_mismatch",
        Error::Recv(e) => recv_kind(e),
        other => panic!("unexpected error opening a corpus file: {other}"),
    }
}
