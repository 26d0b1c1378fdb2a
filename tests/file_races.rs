//! The segment file and its name against other processes: files of the wrong type at a
//! segment's name, empty files, locks taken by readers, names removed and re-created under a
//! live producer, and damaged segments in a listing (docs/LAYOUT.md, "The file", "Validating a
//! segment before reading it", "Producer liveness"; docs/SECURITY.md). The directory swaps
//! between a check and an unlink are unit tests of `src/stale.rs`, which has the hook.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{shm_name, shm_path, TempDir};
use shmcast::{
    clean_stale_segments, list_segments, remove_stale_segment, Error, Publisher, Removal,
    SegmentStatus, StartAt, Subscriber,
};

/// Runs `f` on a thread and fails the test if it has not returned within 10 s (a hang).
fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

fn lock(file: &File, l_type: i32) {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    // SAFETY: an all-zero `flock` is a valid value; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = l_type as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_len = 1;
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)).expect("take the lock");
}

/// A lock like a producer's (a write lock on byte 0) or a reader's read lock there.
fn write_lock(file: &File) {
    lock(file, nix::libc::F_WRLCK);
}

fn read_lock(file: &File) {
    lock(file, nix::libc::F_RDLCK);
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

// --- item 6: a FIFO, a device, a link at a segment's name ----------------------------------

#[test]
fn a_fifo_at_a_segment_name_is_reported_not_waited_on() {
    let (name, cleanup) = shm_name("fifo");
    nix::unistd::mkfifo(
        cleanup.path(),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let n = name.clone();
    let err = within_10s("publish over a FIFO", move || {
        Publisher::create(&n).expect_err("a FIFO is not replaced")
    });
    assert!(
        matches!(err, Error::NotRegularFile { kind, .. } if kind.contains("FIFO")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("is not a regular file: it is a FIFO"),
        "{err}"
    );
    let n = name.clone();
    let err = within_10s("open a FIFO", move || {
        Subscriber::open(&n, StartAt::Oldest).err().unwrap()
    });
    assert!(matches!(err, Error::NotRegularFile { .. }), "{err:?}");
    let path = cleanup.path().to_path_buf();
    let err = within_10s("remove a FIFO", move || {
        remove_stale_segment(path).unwrap_err()
    });
    assert!(matches!(err, Error::NotRegularFile { .. }), "{err:?}");
    assert!(cleanup.path().exists(), "the FIFO was removed");
}

#[test]
fn devices_and_directories_say_what_they_are() {
    let err = Subscriber::open_path("/dev/zero", StartAt::Oldest).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRegularFile {
                kind: "a character device",
                ..
            }
        ),
        "{err:?}"
    );
    let dir = TempDir::new("isdir");
    let err = Subscriber::open_path(dir.path(), StartAt::Oldest).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRegularFile {
                kind: "a directory",
                ..
            }
        ),
        "{err:?}"
    );
}

/// docs/SECURITY.md: a symbolic link at a shared-memory name is never followed, by readers
/// (Rust and Go) or producers.
#[test]
fn a_symbolic_link_at_a_shared_memory_name_is_refused() {
    let (target, _target_cleanup) = shm_name("link-target");
    let _live = Publisher::create(&target).unwrap();
    let (name, cleanup) = shm_name("link");
    std::os::unix::fs::symlink(shm_path(&target), cleanup.path()).unwrap();
    let err = Subscriber::open(&name, StartAt::Oldest).unwrap_err();
    assert!(
        matches!(err, Error::NotRegularFile { kind, .. } if kind.contains("symbolic link")),
        "{err:?}"
    );
    let err = Publisher::create(&name).unwrap_err();
    assert!(
        matches!(err, Error::NotRegularFile { kind, .. } if kind.contains("symbolic link")),
        "{err:?}"
    );
}

// --- item 3: empty files --------------------------------------------------------------------

/// An empty file nobody holds is truncated (not "initialising"), at once.
#[test]
fn an_empty_file_without_a_producer_is_truncated() {
    let dir = TempDir::new("empty");
    let path = dir.join("seg");
    std::fs::write(&path, []).unwrap();
    let start = Instant::now();
    let err = Subscriber::open_path(&path, StartAt::Oldest).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { file_size: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no producer is creating"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

/// An empty file whose producer lock is held is a segment being created: the reader retries
/// (docs/LAYOUT.md: every millisecond, for up to 2 s) and opens it once it is initialised, or
/// reports it not initialised (yet) after those 2 s.
#[test]
fn an_empty_file_being_created_is_waited_for_then_opened() {
    let dir = TempDir::new("creating");
    let path = dir.join("seg");
    let creator = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    write_lock(&creator);
    // Nothing comes: not initialised, after about 2 s.
    let start = Instant::now();
    let err = Subscriber::open_path(&path, StartAt::Oldest).unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(err, Error::NotInitialized { creating: true, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("try again"), "{err}");
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(5)).contains(&waited),
        "{waited:?}"
    );
    // The "producer" finishes creating it 100 ms after the reader started: the open succeeds.
    let golden = std::fs::read("testdata/golden/few.seg").unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        creator.set_len(golden.len() as u64).unwrap();
        creator.write_all_at(&golden[8..], 8).unwrap();
        creator.write_all_at(&golden[..8], 0).unwrap(); // magic last
        creator
    });
    let mut reader = Subscriber::open_path(&path, StartAt::Beginning).unwrap();
    let mut buf = Vec::new();
    assert_eq!(reader.try_recv(&mut buf).unwrap(), 1);
    drop(writer.join().unwrap());
}

// --- item 5: the producer's unlink on exit --------------------------------------------------

/// The name of a live producer's segment removed (by an operator, or systemd's RemoveIPC) and
/// created again by another producer: the first one's exit must not remove the second one's.
#[test]
fn a_producer_exiting_leaves_a_segment_created_again_under_its_name() {
    let (name, cleanup) = shm_name("recreated");
    let first = Publisher::create(&name).unwrap();
    std::fs::remove_file(cleanup.path()).unwrap();
    let mut second = Publisher::create(&name).unwrap();
    drop(first);
    assert!(
        cleanup.path().exists(),
        "the first producer removed the second one's segment"
    );
    let reader = Subscriber::open(&name, StartAt::Oldest).unwrap();
    assert!(reader.producer_alive());
    second.publish(b"still here").unwrap();
    drop(second);
    assert!(
        !cleanup.path().exists(),
        "a producer removes its own segment"
    );

    // Also for a file path, where the name is re-created as a plain file.
    let dir = TempDir::new("recreated");
    let path = dir.join("seg");
    let producer = Publisher::options().create_path(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "someone else's").unwrap();
    drop(producer);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

// --- item 7: read locks, damaged segments in list and clean ---------------------------------

/// A reader's read lock on a dead segment's liveness byte: the segment is not reported alive,
/// and neither a new producer nor `clean` can take it over; both say why.
#[test]
fn a_read_lock_on_a_dead_segment_is_a_clear_error_not_a_live_producer() {
    let (name, cleanup) = shm_name("rdlock-replace");
    dead_segment(cleanup.path());
    let squatter = File::open(cleanup.path()).unwrap();
    read_lock(&squatter);
    let err = Publisher::create(&name).unwrap_err();
    assert!(matches!(err, Error::LockBlocked { .. }), "{err:?}");
    assert!(err.to_string().contains("read lock"), "{err}");
    let err = remove_stale_segment(cleanup.path()).unwrap_err();
    assert!(matches!(err, Error::LockBlocked { .. }), "{err:?}");
    assert!(cleanup.path().exists());
    drop(squatter);
    // Once the lock is gone, the replacement goes ahead.
    drop(Publisher::create(&name).unwrap());
}

/// A dead segment grown past its size, or with a corrupt index, is listed with its problem
/// (not hidden) and cleaned; a live one is listed and kept; a file without a valid header is
/// never removed.
#[test]
fn damaged_segments_are_listed_and_dead_ones_cleaned() {
    let dir = TempDir::new("damaged");
    dead_segment(&dir.join("a-grown"));
    let grown = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("a-grown"))
        .unwrap();
    grown.set_len(8192 + 4096 + 4096).unwrap();
    dead_segment(&dir.join("b-bad-index"));
    let bad_index = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("b-bad-index"))
        .unwrap();
    bad_index.write_all_at(&3u64.to_le_bytes(), 0x108).unwrap(); // `latest`, not a multiple of 8
    let live = Publisher::options()
        .capacity(4096)
        .create_path(dir.join("c-live-bad-index"))
        .unwrap();
    let live_file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("c-live-bad-index"))
        .unwrap();
    live_file.write_all_at(&3u64.to_le_bytes(), 0x108).unwrap();
    let mut noise = vec![0u8; 8192 + 4096];
    noise[..8].copy_from_slice(b"NOTSHMCA");
    std::fs::write(dir.join("d-noise"), &noise).unwrap();

    let entries = list_segments(dir.path()).unwrap();
    let status = |i: usize| &entries[i].status;
    assert_eq!(entries.len(), 4, "{entries:?}");
    match status(0) {
        SegmentStatus::Damaged(d) => {
            assert!(!d.producer_alive && d.capacity == 4096, "{d:?}");
            assert!(d.problem.contains("header describes"), "{}", d.problem);
        }
        other => panic!("grown segment: {other:?}"),
    }
    match status(1) {
        SegmentStatus::Damaged(d) => assert!(!d.producer_alive, "{d:?}"),
        other => panic!("corrupt index: {other:?}"),
    }
    match status(2) {
        SegmentStatus::Damaged(d) => assert!(d.producer_alive, "{d:?}"),
        other => panic!("live, corrupt index: {other:?}"),
    }
    assert_eq!(*status(3), SegmentStatus::NotASegment);

    let cleaned = clean_stale_segments(dir.path(), false).unwrap();
    let removed: Vec<_> = cleaned
        .iter()
        .filter(|c| matches!(c.removal, Some(Ok(Removal::Removed { .. }))))
        .map(|c| c.entry.path.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(removed, ["a-grown", "b-bad-index"], "{cleaned:?}");
    assert!(dir.join("c-live-bad-index").exists());
    assert!(dir.join("d-noise").exists());
    drop(live);
}
