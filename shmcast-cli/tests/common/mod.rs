//! Helpers the CLI's test crates share: the workspace's (`tests/common`: unique names and
//! cleanup guards) and the checks of a command's output. (Each crate uses a different subset.)
#![allow(dead_code)]

use std::process::Output;

#[path = "../../../tests/common/mod.rs"]
mod workspace;
pub use workspace::*;

/// Standard output, which must be UTF-8.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// Standard error, lossily decoded.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that the command succeeded, printing nothing on standard error.
#[track_caller]
pub fn assert_ok(output: &Output) {
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "expected success, got {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
}
