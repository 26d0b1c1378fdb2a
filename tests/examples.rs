//! The examples, run as they are meant to be: `announce_publisher` and `announce_subscriber` as
//! two processes on one segment. Both end with status 0 after a normal publisher run, the
//! subscriber with a summary that counts every announcement.
//!
//! `cargo test` builds the examples (into target/PROFILE/examples/) before it runs the tests;
//! with a filter that skips them (`cargo test --test examples`), run `cargo build --examples`
//! first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{shm_name, TempDir};

/// The example binary `name`, next to this test's own: this test is
/// target/PROFILE/deps/examples-HASH, the examples are target/PROFILE/examples/NAME.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/PROFILE/deps");
    let path = profile.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples, `cargo test --test examples` does not \
         (run `cargo build --examples` first)",
        path.display()
    );
    path
}

fn spawn(name: &str, args: &[&str]) -> Child {
    Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"))
}

/// Waits for `child` to end, killing it after `limit`; its output, and whether it was killed.
fn finish(mut child: Child, limit: Duration) -> (Output, bool) {
    let deadline = Instant::now() + limit;
    let mut killed = false;
    while child.try_wait().expect("wait for the example").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        child.wait_with_output().expect("collect the output"),
        killed,
    )
}

fn describe(what: &str, output: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the subscriber, then the publisher of `count` announcements, on segment `name`.
fn run_both(name: &str, count: u64) {
    // The subscriber first: it waits for the segment to appear, so it cannot miss the start.
    let subscriber = spawn("announce_subscriber", &[name]);
    let count_arg = count.to_string();
    let publisher = spawn(
        "announce_publisher",
        &[name, "--rate", "20", "--count", &count_arg],
    );
    let limit = Duration::from_secs(60);
    let (published, publisher_killed) = finish(publisher, limit);
    let (received, subscriber_killed) = finish(subscriber, limit);
    let (pub_text, sub_text) = (
        describe("publisher", &published),
        describe("subscriber", &received),
    );
    assert!(
        !publisher_killed && !subscriber_killed,
        "{pub_text}\n{sub_text}"
    );
    assert!(published.status.success(), "{pub_text}");
    assert!(received.status.success(), "{sub_text}\n{pub_text}");

    let stdout = String::from_utf8_lossy(&published.stdout);
    assert!(
        stdout.contains(&format!("published {count} announcements; removing ")),
        "{pub_text}"
    );
    let stdout = String::from_utf8_lossy(&received.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some(format!("received {count} announcements, missed 0").as_str()),
        "{sub_text}"
    );
    assert!(lines.contains(&"the publisher has finished"), "{sub_text}");
    let announcements = lines.iter().filter(|l| l.starts_with("seq ")).count();
    assert_eq!(announcements as u64, count, "{sub_text}");
}

#[test]
fn the_announce_examples_run_as_two_processes() {
    let (name, _cleanup) = shm_name("examples");
    run_both(&name, 40);
}

/// The same with a segment file: a name with a '/' after its first character is a path.
#[test]
fn the_announce_examples_take_a_file_path() {
    let dir = TempDir::new("examples-file");
    let path = dir.join("announce");
    run_both(path.to_str().expect("a UTF-8 temp dir"), 20);
    assert!(
        !path.exists(),
        "the publisher removes its segment when it ends"
    );
}
