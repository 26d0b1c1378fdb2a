//! `shmcast stat`, against `docs/CLI.md`: the publish rate, the retained window, the readers'
//! lag and the producer's liveness, per interval, as text and as JSON.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmcast::{Publisher, StartAt, Subscriber};

#[path = "../../tests/common/mod.rs"]
mod common;

fn shmcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmcast"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shmcast")
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A producer publishing about `rate` messages of 100 bytes a second until told to stop.
fn paced(
    mut publisher: Publisher,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Publisher> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = start.elapsed().as_secs_f64() * rate as f64;
            while (sent as f64) < due {
                publisher.publish(&[7u8; 100]).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        publisher
    })
}

#[test]
fn stat_reports_the_rate_the_window_the_readers_and_the_producers_end() {
    let (name, _cleanup) = common::shm_name("stat");
    let publisher = Publisher::options()
        .capacity(1 << 20)
        .lossless(true)
        .unlink_on_drop(false)
        .create(&name)
        .unwrap();
    // A registered reader that reads nothing: its lag grows with every message.
    let reader = Subscriber::options()
        .start(StartAt::Next)
        .lossless(true)
        .open(&name)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = paced(publisher, 2000, stop.clone());
    std::thread::sleep(Duration::from_millis(100));

    let lines = json_lines(&shmcast(&[
        "stat",
        &name,
        "--json",
        "--count",
        "3",
        "--interval",
        "0.25",
    ]));
    assert_eq!(lines.len(), 3);
    let mut last_next = 0;
    for line in &lines {
        let rate = line["msgs_per_s"].as_f64().unwrap();
        // 2000/s asked; a loaded 2-vCPU machine may stall the producer thread for a while.
        assert!(
            (400.0..=4000.0).contains(&rate),
            "msgs_per_s {rate}: {line}"
        );
        let bytes = line["bytes_per_s"].as_f64().unwrap();
        // Each record spans 16 + 104 bytes.
        assert!(
            (bytes / rate - 120.0).abs() < 12.0,
            "bytes_per_s {bytes}: {line}"
        );
        let next = line["next_seq"].as_u64().unwrap();
        assert!(next > last_next, "{line}");
        last_next = next;
        assert_eq!(line["producer_alive"], true, "{line}");
        assert_eq!(line["oldest_seq"], 1, "{line}");
        assert_eq!(line["retained_msgs"].as_u64().unwrap(), next - 1, "{line}");
        let readers = line["readers"].as_array().unwrap();
        assert_eq!(readers.len(), 1, "{line}");
        assert_eq!(readers[0]["state"], "active");
        assert_eq!(readers[0]["pid"], u64::from(std::process::id()));
        assert!(readers[0]["lag_messages"].as_u64().unwrap() > 0, "{line}");
        assert!(line["last_publish_unix_ns"].as_u64().is_some(), "{line}");
    }

    let text = shmcast(&["stat", &name, "--count", "1", "--interval", "0.1"]);
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    for part in [
        "msg/s",
        "B/s",
        "next ",
        "retained ",
        "producer alive",
        "[slot 0 pid",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }

    // The producer exits (its segment stays): nothing is published any more, and it says so.
    stop.store(true, Ordering::Relaxed);
    drop(producer.join().unwrap());
    drop(reader);
    let lines = json_lines(&shmcast(&[
        "stat",
        &name,
        "--json",
        "--count",
        "1",
        "--interval",
        "0.1",
    ]));
    assert_eq!(lines[0]["producer_alive"], false);
    assert_eq!(lines[0]["msgs_per_s"].as_f64(), Some(0.0));
    assert_eq!(lines[0]["retained_s"], serde_json::Value::Null);
    assert_eq!(lines[0]["readers"].as_array().map(Vec::len), Some(0));
}

#[test]
fn stat_rejects_bad_arguments_and_missing_segments() {
    for args in [
        &["stat", "x", "--interval", "0"][..],
        &["stat", "x", "--count", "0"],
        &["stat", "x", "--interval", "soon"],
    ] {
        let out = shmcast(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = shmcast(&["stat", &common::unique_shm("stat-missing"), "--count", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no shmcast segment"));
}
