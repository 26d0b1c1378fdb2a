//! What the bridge says when it cannot start, and that a missing server is waited for, not an
//! error.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shmcast-bridge"))
}

/// Runs the bridge to its end and returns (success, stderr).
fn run_to_end(args: &[&str]) -> (bool, String) {
    let out = bridge().args(args).output().expect("run shmcast-bridge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_url_is_an_error_naming_the_option() {
    let name = format!("/shmcast-bridge-errors-url-{}", std::process::id());
    let (ok, err) = run_to_end(&["import", "--nats", "nats://[::1", "--subject", "s", &name]);
    assert!(!ok);
    assert!(
        err.contains("--nats") && err.contains("not a NATS server address"),
        "{err}"
    );
}

#[test]
fn a_missing_segment_is_an_error_naming_it() {
    let name = format!("/shmcast-bridge-errors-missing-{}", std::process::id());
    let (ok, err) = run_to_end(&[
        "export",
        &name,
        "--nats",
        "nats://127.0.0.1:1",
        "--subject",
        "s",
    ]);
    assert!(!ok);
    assert!(
        err.contains(&name) && err.contains("start its producer first"),
        "{err}"
    );
}

#[test]
fn a_live_segment_of_another_producer_is_not_taken_over() {
    let name = format!("/shmcast-bridge-errors-taken-{}", std::process::id());
    let _publisher = shmcast::Publisher::options()
        .capacity(1 << 16)
        .create(&name)
        .unwrap();
    let (ok, err) = run_to_end(&[
        "import",
        "--nats",
        "nats://127.0.0.1:1",
        "--subject",
        "s",
        &name,
    ]);
    assert!(!ok);
    assert!(err.contains("cannot create segment"), "{err}");
}

/// Waits up to 10 s for `text` in the log file.
fn wait_for_line(log: &std::path::Path, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = std::fs::read_to_string(log).unwrap_or_default();
        if got.contains(text) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} in the log: {got}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_server_at_start_is_retried_and_logged_then_connects() {
    let dir = TempDir::new("noserver");
    let port = free_port();
    let name = format!("/shmcast-bridge-errors-wait-{}", std::process::id());
    let log = dir.0.join("bridge.log");
    let url = format!("nats://127.0.0.1:{port}");
    let importer = Bridge::start(&["import", "--nats", &url, "--subject", "s", &name], &log);
    wait_for_line(&log, "cannot reach a NATS server");
    // The server comes up later on that port: the importer connects by itself.
    let mut child = Command::new(nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_line(&log, "connected to");
    drop(importer);
    let _ = child.kill();
    let _ = child.wait();
}
