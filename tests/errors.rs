//! Every error path of creating, opening, publishing and reading: each is a typed error with a
//! message a person can act on, and a failed creation leaves nothing behind.
//! (Corrupt headers are covered file by file in `tests/golden.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{shm_name, shm_path, unique_shm, TempDir};
use shmcast::{Error, Publisher, PublisherOptions, RecvError, StartAt, Subscriber};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn invalid_names_are_refused() {
    for name in ["", "/", "a\0b", "/dir/a\0b", "/..", "..", &"x".repeat(300)] {
        match Publisher::create(name) {
            Err(Error::InvalidName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
        assert!(matches!(
            Subscriber::open(name, StartAt::Oldest),
            Err(Error::InvalidName { .. })
        ));
    }
}

#[test]
fn a_bare_name_means_the_same_segment_as_a_slashed_one() {
    let name = unique_shm("bare");
    let mut publisher = Publisher::options().capacity(4096).create(&name).unwrap();
    publisher.publish(b"x").unwrap();
    let mut sub = Subscriber::open(name.trim_start_matches('/'), StartAt::Oldest).unwrap();
    assert_eq!(sub.try_recv(&mut Vec::new()), Ok(1));
}

/// docs/CLI.md, "Naming a segment": a '/' after the first character makes a name a file path,
/// for the library as for the CLI and the Go reader.
#[test]
fn a_name_with_a_slash_after_its_first_character_is_a_file() {
    let dir = TempDir::new("path-name");
    let path = dir.join("seg");
    let name = path.to_str().unwrap();
    assert!(name.starts_with('/') && name[1..].contains('/'));
    let mut publisher = Publisher::options().capacity(4096).create(name).unwrap();
    assert_eq!(publisher.path(), path);
    assert!(std::fs::metadata(&path).unwrap().is_file());
    publisher.publish(b"by path").unwrap();

    let mut buf = Vec::new();
    let mut by_name = Subscriber::open(name, StartAt::Oldest).unwrap();
    assert_eq!(by_name.path(), path);
    assert_eq!(by_name.try_recv(&mut buf), Ok(1));
    assert_eq!(buf, b"by path");
    let mut by_path = Subscriber::open_path(&path, StartAt::Oldest).unwrap();
    assert_eq!(by_path.try_recv(&mut buf), Ok(1));
    // The same file is not also a shared-memory name.
    assert!(!shm_path(&format!("/{}", path.file_name().unwrap().to_str().unwrap())).exists());

    // Relative paths too: `dir/seg`, `./seg`.
    for relative in ["no-such-dir-shmcast/seg", "./no-such-dir-shmcast/seg"] {
        match Subscriber::open(relative, StartAt::Oldest) {
            Err(Error::NotFound { path }) => assert_eq!(path, PathBuf::from(relative)),
            other => panic!("{relative}: expected NotFound, got {other:?}"),
        }
    }
}

#[test]
fn invalid_capacities_are_refused_and_leave_no_file() {
    for capacity in [0, 1000, 2048, 4097, 1 << 41] {
        let name = unique_shm("cap");
        match Publisher::options().capacity(capacity).create(&name) {
            Err(e @ Error::InvalidCapacity { .. }) => {
                assert!(e.to_string().contains(&capacity.to_string()), "{e}")
            }
            other => panic!("{capacity}: expected InvalidCapacity, got {other:?}"),
        }
        assert!(!shm_path(&name).exists());
    }
}

/// (A live or dead segment in the way: `tests/liveness.rs`.)
#[test]
fn a_plain_file_in_the_way_is_never_adopted() {
    let path = std::env::temp_dir().join(format!("shmcast-err-file-{}", std::process::id()));
    std::fs::write(&path, b"not mine").unwrap();
    let err = Publisher::options().create_path(&path).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not mine");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn messages_larger_than_the_maximum_are_refused() {
    let name = unique_shm("large");
    let mut publisher = Publisher::options().capacity(4096).create(&name).unwrap();
    let max = publisher.max_payload();
    assert_eq!(max, 1008);
    assert!(publisher.publish(&vec![7; max]).is_ok());
    let err = publisher.publish(&vec![7; max + 1]).unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { len, max: m } if len == max + 1 && m == max),
        "{err:?}"
    );
    assert!(matches!(
        publisher.claim(max + 1),
        Err(Error::MessageTooLarge { .. })
    ));
    // Nothing was published by the refused calls.
    assert_eq!(publisher.next_seq(), 2);
}

#[test]
fn missing_segments_are_not_found() {
    let name = unique_shm("missing");
    let err = Subscriber::open(&name, StartAt::Oldest).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("/dev/shm{name}")),
        "{err}"
    );
    let err = Subscriber::open_path("/nonexistent/dir/seg", StartAt::Oldest).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[test]
fn the_requested_mode_is_applied_exactly() {
    let name = unique_shm("mode");
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let result = Publisher::options()
        .capacity(4096)
        .mode(0o640)
        .create(&name);
    nix::sys::stat::umask(old);
    let _publisher = result.unwrap();
    let mode = std::fs::metadata(shm_path(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);

    let default = unique_shm("mode-default");
    let _p = Publisher::options()
        .capacity(4096)
        .create(&default)
        .unwrap();
    let mode = std::fs::metadata(shm_path(&default))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[test]
fn unlink_on_drop_is_the_default_and_can_be_turned_off() {
    let name = unique_shm("drop");
    drop(Publisher::options().capacity(4096).create(&name).unwrap());
    assert!(!shm_path(&name).exists());

    let kept = unique_shm("keep");
    drop(
        Publisher::options()
            .capacity(4096)
            .unlink_on_drop(false)
            .create(&kept)
            .unwrap(),
    );
    assert!(shm_path(&kept).exists());
    assert!(Subscriber::open(&kept, StartAt::Oldest).is_ok());
    std::fs::remove_file(shm_path(&kept)).unwrap();
}

/// A tmpfs of 1 MiB mounted for the test, unmounted when dropped.
struct TinyTmpfs(PathBuf);

impl TinyTmpfs {
    fn mount() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("shmcast-tinyfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(TinyTmpfs(dir))
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_file_system_is_an_error_at_creation_not_a_sigbus_later() {
    if !is_root() {
        eprintln!("skipped: mounting a 1 MiB tmpfs needs root");
        return;
    }
    let fs = TinyTmpfs::mount().expect("root could not mount a tmpfs");
    let path: PathBuf = fs.0.join("seg");
    let err = PublisherOptions::new()
        .capacity(2 << 20)
        .create_path(&path)
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert!(err.to_string().contains("--shm-size"), "{err}");
    assert!(!path.exists(), "the failed segment must be removed");
    // A segment that fits is fine, and every page of it is really there.
    let mut publisher = PublisherOptions::new()
        .capacity(256 << 10)
        .create_path(&path)
        .unwrap();
    for i in 0..10_000u32 {
        publisher.publish(&[i as u8; 200]).unwrap();
    }
}

#[test]
fn file_errors_say_what_to_do() {
    let path = std::env::temp_dir().join(format!("shmcast-err-magic-{}", std::process::id()));
    std::fs::write(&path, vec![0xAB; 12288]).unwrap();
    let err = Subscriber::open_path(&path, StartAt::Oldest).unwrap_err();
    assert!(matches!(err, Error::BadMagic { .. }), "{err:?}");
    assert!(err.to_string().contains("not a shmcast segment"), "{err}");

    std::fs::write(&path, [0u8; 100]).unwrap();
    let err = Subscriber::open_path(&path, StartAt::Oldest).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { file_size: 100, .. }),
        "{err:?}"
    );

    // Empty and no producer holds its lock: truncated, not "initialising" (tests/file_races.rs
    // has the empty file of a producer that is still creating it).
    std::fs::write(&path, []).unwrap();
    let err = Subscriber::open_path(&path, StartAt::Oldest).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { file_size: 0, .. }),
        "{err:?}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn read_errors() {
    let name = unique_shm("read");
    let mut publisher = Publisher::options().capacity(4096).create(&name).unwrap();
    let mut sub = Subscriber::open(&name, StartAt::Beginning).unwrap();

    assert_eq!(sub.try_recv(&mut Vec::new()), Err(RecvError::Empty));

    // Too small a buffer leaves the message unread.
    publisher.publish(b"0123456789").unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        sub.try_recv_into(&mut small),
        Err(RecvError::BufferTooSmall {
            needed: 10,
            available: 4
        })
    );
    let mut big = [0u8; 10];
    assert_eq!(sub.try_recv_into(&mut big).unwrap().seq, 1);

    // A typed read of the wrong size consumes the message and says so.
    publisher.publish(&[1u8; 3]).unwrap();
    assert_eq!(
        sub.try_recv_pod::<u64>(),
        Err(RecvError::SizeMismatch {
            seq: 2,
            expected: 8,
            actual: 3
        })
    );
    publisher.publish_pod(&0xDEAD_BEEF_u64).unwrap();
    assert_eq!(sub.try_recv_pod::<u64>(), Ok((3, 0xDEAD_BEEF)));

    // A blocking read with nothing to read times out (and not long after the deadline).
    let started = Instant::now();
    assert_eq!(
        sub.recv_timeout(&mut Vec::new(), Duration::from_millis(50)),
        Err(RecvError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
}

/// The blocking reads, in each of their forms: each delivers what is there, and times out at
/// its timeout or deadline when nothing comes.
#[test]
fn every_blocking_read_delivers_and_times_out() {
    let (name, _cleanup) = shm_name("blocking");
    let mut publisher = Publisher::options().capacity(4096).create(&name).unwrap();
    let mut sub = Subscriber::open(&name, StartAt::Beginning).unwrap();
    let wait = Duration::from_millis(20);
    for i in 1..=9u64 {
        publisher.publish_pod(&i).unwrap();
    }
    let (mut vec, mut buf) = (Vec::new(), [0u8; 8]);
    let into =
        |r: shmcast::Received, buf: &[u8]| (r.seq, u64::from_le_bytes(buf.try_into().unwrap()));
    assert_eq!(sub.recv(&mut vec), Ok(1));
    assert_eq!(sub.recv_timeout(&mut vec, wait), Ok(2));
    assert_eq!(sub.recv_deadline(&mut vec, Instant::now() + wait), Ok(3));
    assert_eq!(vec, 3u64.to_le_bytes());
    assert_eq!(sub.recv_into(&mut buf).map(|r| into(r, &buf)), Ok((4, 4)));
    assert_eq!(
        sub.recv_into_timeout(&mut buf, wait).map(|r| into(r, &buf)),
        Ok((5, 5))
    );
    assert_eq!(
        sub.recv_into_deadline(&mut buf, Instant::now() + wait)
            .map(|r| into(r, &buf)),
        Ok((6, 6))
    );
    assert_eq!(sub.recv_pod::<u64>(), Ok((7, 7)));
    assert_eq!(sub.recv_pod_timeout::<u64>(wait), Ok((8, 8)));
    assert_eq!(
        sub.recv_pod_deadline::<u64>(Instant::now() + wait),
        Ok((9, 9))
    );

    let started = Instant::now();
    let past = started - Duration::from_millis(1);
    assert_eq!(sub.recv_timeout(&mut vec, wait), Err(RecvError::Timeout));
    assert_eq!(sub.recv_deadline(&mut vec, past), Err(RecvError::Timeout));
    assert_eq!(
        sub.recv_into_timeout(&mut buf, wait),
        Err(RecvError::Timeout)
    );
    assert_eq!(
        sub.recv_into_deadline(&mut buf, past),
        Err(RecvError::Timeout)
    );
    assert_eq!(sub.recv_pod_timeout::<u64>(wait), Err(RecvError::Timeout));
    assert_eq!(sub.recv_pod_deadline::<u64>(past), Err(RecvError::Timeout));
    assert!(started.elapsed() >= 3 * wait);
    // A timeout too long to be a deadline means no deadline: the message is still received.
    publisher.publish_pod(&10u64).unwrap();
    assert_eq!(sub.recv_pod_timeout::<u64>(Duration::MAX), Ok((10, 10)));

    // Reading errors convert into `Error`, so `?` takes both.
    let err = shmcast::Error::from(RecvError::Timeout);
    assert!(matches!(err, Error::Recv(RecvError::Timeout)), "{err:?}");
    assert_eq!(err.to_string(), RecvError::Timeout.to_string());
}
