//! Every error path of creating, opening, publishing and reading: each is a typed error with a
//! message a person can act on, and a failed creation leaves nothing behind.
//! (Corrupt headers are covered file by file in `tests/golden.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{shm_path, unique_shm};
use shmcast::{Error, Publisher, PublisherOptions, RecvError, StartAt, Subscriber};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn invalid_names_are_refused() {
    for name in ["", "/", "/a/b", "a\0b", "/..", &"x".repeat(300)] {
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

/// Runs the CLI as user `nobody` (only possible as root).
fn shmcast_as_nobody(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shmcast"))
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run shmcast as nobody")
}

#[test]
fn permission_is_denied_without_read_access_and_read_only_access_suffices() {
    let name = unique_shm("perm");
    let mut publisher = Publisher::options()
        .capacity(4096)
        .mode(0o600)
        .create(&name)
        .unwrap();
    publisher.publish(b"secret").unwrap();
    if is_root() {
        // Another user cannot open a 0600 segment...
        let out = shmcast_as_nobody(&["tail", &name, "--timeout", "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("permission denied"), "{stderr}");
        // ...but with read permission only (0644) it reads, mapping the segment read-only.
        std::fs::set_permissions(shm_path(&name), std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = shmcast_as_nobody(&["tail", &name, "--from", "beginning", "--timeout", "0"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout, "seq=1 len=6 secret\n");
    } else {
        // Without root the owner can still lock itself out.
        std::fs::set_permissions(shm_path(&name), std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = Subscriber::open(&name, StartAt::Oldest).unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    }
}

/// A subscriber that may read but not write the segment cannot register as parked; a blocking
/// read still sees every message, by polling the futex word with a timeout of at most 1 ms.
#[test]
fn a_read_only_subscriber_cannot_park_but_blocking_reads_still_deliver() {
    let name = unique_shm("ro-wait");
    let mut publisher = Publisher::options()
        .capacity(1 << 16)
        .mode(0o644)
        .create(&name)
        .unwrap();
    let publish_paced = |publisher: &mut Publisher| {
        for _ in 0..20 {
            // Each message arrives while the reader is idle, waiting.
            std::thread::sleep(Duration::from_millis(20));
            let mut payload = vec![0u8; 100];
            shmcast::pattern::fill(publisher.next_seq(), &mut payload);
            publisher.publish(&payload).unwrap();
        }
    };
    if is_root() {
        // Root may write anything; run the reader as another user, who may only read (0644).
        let tail = Command::new(env!("CARGO_BIN_EXE_shmcast"))
            .args(["tail", &name, "--from", "beginning", "--count", "20"])
            .args(["--verify", "--timeout", "20", "--wait", "block"])
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        publish_paced(&mut publisher);
        let out = tail.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "received=20 lagged=0 corrupt=0\n"
        );
        assert_eq!(publisher.wakeups(), 0, "nobody could register as parked");
    } else {
        // The owner is held to the mode bits too: with 0444 it cannot open the file to write.
        std::fs::set_permissions(shm_path(&name), std::fs::Permissions::from_mode(0o444)).unwrap();
        let mut subscriber = Subscriber::open(&name, StartAt::Beginning).unwrap();
        assert!(!subscriber.can_park());
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            for expected in 1..=20 {
                let seq = subscriber
                    .recv_timeout(&mut buf, Duration::from_secs(20))
                    .unwrap();
                assert_eq!(seq, expected);
                assert!(shmcast::pattern::matches(seq, &buf));
            }
        });
        publish_paced(&mut publisher);
        reader.join().unwrap();
        assert_eq!(publisher.wakeups(), 0, "nobody could register as parked");
    }
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

    std::fs::write(&path, []).unwrap();
    let err = Subscriber::open_path(&path, StartAt::Oldest).unwrap_err();
    assert!(matches!(err, Error::NotInitialized { .. }), "{err:?}");
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
