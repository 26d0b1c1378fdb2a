//! Permissions as another user would meet them: the `shmcast` tool run as user `nobody` (when
//! the tests run as root) against segments of various modes. A reader with read permission only
//! reads everything (mapping the segment read-only) but cannot register as parked.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{shm_path, unique_shm};
use shmcast::{Error, Publisher, StartAt, Subscriber};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
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
