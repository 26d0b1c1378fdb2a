//! Smoke tests of `shmcast-bench` (docs/CLI.md, "shmcast-bench"): it finishes, every line of
//! `--json` parses, every measurement appears with positive values, nothing is left in
//! /dev/shm, and its errors are clear. Nothing here asserts anything about speed.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `shmcast-bench ARGS`, killing it if it takes longer than `limit`.
fn shmcast(args: &[&str], limit: Duration) -> (Output, u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmcast-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmcast");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shmcast {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, pid)
}

/// Segments a run with process id `pid` left in /dev/shm.
fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("shmcast-bench-{pid}-");
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `shmcast-bench ARGS` as [`shmcast`] does and checks that it succeeded, did not panic and
/// left no segment behind.
fn succeeded(args: &[&str], limit: Duration) -> Output {
    let (output, pid) = shmcast(args, limit);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(leftovers(pid).is_empty(), "left {:?}", leftovers(pid));
    output
}

fn lines(output: &Output) -> Vec<Value> {
    let text = String::from_utf8(output.stdout.clone()).expect("UTF-8 output");
    text.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"))
        })
        .collect()
}

fn positive(v: &Value, key: &str) {
    let n = v
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"));
    assert!(n > 0.0, "{key} is not positive in {v}");
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
        .to_owned()
}

#[test]
fn quick_json_run_reports_every_measurement() {
    let output = succeeded(&["--quick", "--json"], Duration::from_secs(300));

    let results = lines(&output);
    let mut latency = BTreeSet::new();
    let mut throughput = BTreeSet::new();
    let mut producer_consumers = BTreeSet::new();
    let mut shm_modes = BTreeSet::new();
    let mut waiting = Vec::new();
    let (mut parked_counts, mut hostile_rounds) = (BTreeSet::new(), BTreeSet::new());
    for v in &results {
        let transport = text(v, "transport");
        let metric = text(v, "metric");
        assert!(v.get("pinned").and_then(Value::as_bool).is_some(), "{v}");
        if metric == "wake_latency" || metric == "idle_cpu" {
            waiting.push(v.clone());
            continue;
        }
        if metric == "publish_cost" {
            // Every parked subscriber received every timed message: a missed wake-up would
            // show here, not only as a slower row.
            assert_eq!(v["all_received"].as_bool(), Some(true), "{v}");
            assert_eq!(v["received"].as_u64(), v["expected"].as_u64(), "{v}");
            for key in ["p50_ns", "p99_ns", "samples"] {
                positive(v, key);
            }
            parked_counts.insert(v["parked"].as_u64().expect("parked"));
            continue;
        }
        if let Some(hostile) = v.get("hostile_parked_writer").and_then(Value::as_bool) {
            positive(v, "msgs_per_s");
            hostile_rounds.insert(hostile);
            continue;
        }
        positive(v, "size");
        match metric.as_str() {
            "latency" => {
                for key in ["p50_ns", "p99_ns", "p999_ns", "max_ns", "samples"] {
                    positive(v, key);
                }
                let p = |k: &str| v[k].as_f64().unwrap();
                assert!(
                    p("p50_ns") <= p("p99_ns") && p("p99_ns") <= p("p999_ns"),
                    "{v}"
                );
                assert!(p("p999_ns") <= p("max_ns"), "{v}");
                let method = text(v, "method");
                assert!(method == "pingpong-halved" || method == "timestamp", "{v}");
                latency.insert((transport, method));
            }
            "throughput" => {
                positive(v, "msgs_per_s");
                positive(v, "bytes_per_s");
                check_reader_and_mode(v);
                match text(v, "side").as_str() {
                    "consumer" => {
                        positive(v, "received");
                        if transport == "shm" {
                            shm_modes.insert(shm_kind(v));
                        } else {
                            // Sockets and pipes: a Rust peer, and a writer that blocks.
                            assert_eq!(text(v, "reader"), "rust", "{v}");
                            assert_eq!(text(v, "mode"), "lossless", "{v}");
                        }
                        // The median round, between the slowest and the fastest (one with --quick).
                        assert_eq!(v["rounds"].as_u64(), Some(1), "{v}");
                        let rate = v["msgs_per_s"].as_f64().expect("msgs_per_s");
                        let min = v["msgs_per_s_min"].as_f64().expect("msgs_per_s_min");
                        let max = v["msgs_per_s_max"].as_f64().expect("msgs_per_s_max");
                        assert!(min <= rate && rate <= max, "{v}");
                        throughput.insert(transport);
                    }
                    "producer" => {
                        assert_eq!(transport, "shm");
                        producer_consumers.insert(v["consumers"].as_u64().expect("consumers"));
                        assert_eq!(text(v, "reader"), "rust", "{v}");
                        assert_eq!(text(v, "mode"), "lossy", "{v}");
                        // Busy-spinning consumers never park; the count is there either way.
                        assert!(v["wakeups"].as_u64().is_some(), "{v}");
                        assert_eq!(text(v, "wait"), "spin", "{v}");
                    }
                    other => panic!("unknown side {other:?} in {v}"),
                }
            }
            other => panic!("unknown metric {other:?} in {v}"),
        }
    }
    assert_eq!(parked_counts, BTreeSet::from([0, 10, 100]));
    assert_eq!(hostile_rounds, BTreeSet::from([false, true]));
    for t in ["floor", "shm", "uds-stream", "uds-seqpacket", "pipe"] {
        assert!(
            latency.contains(&(t.to_owned(), "pingpong-halved".to_owned())),
            "no {t} ping-pong latency in {latency:?}"
        );
    }
    assert!(latency.contains(&("shm".to_owned(), "timestamp".to_owned())));
    for t in ["shm", "uds-stream", "uds-seqpacket", "pipe"] {
        assert!(
            throughput.contains(t),
            "no {t} throughput in {throughput:?}"
        );
    }
    assert_eq!(producer_consumers, BTreeSet::from([0, 1, 2]));
    // Each shm throughput row has its lossless twins in the same run, one batched.
    assert_eq!(
        shm_modes,
        BTreeSet::from_iter(kinds(&[
            ("rust", "lossy", None),
            ("rust", "lossless", None),
            ("rust", "lossless", Some(64))
        ]))
    );
    // The default run includes the wake and idle parts.
    check_wake_and_idle(&waiting, "block");
}

/// What kind of shm throughput row `v` is: reader, mode and batch.
fn shm_kind(v: &Value) -> (String, String, Option<u64>) {
    (text(v, "reader"), text(v, "mode"), v["batch"].as_u64())
}

fn kinds(list: &[(&str, &str, Option<u64>)]) -> Vec<(String, String, Option<u64>)> {
    list.iter()
        .map(|&(r, m, b)| (r.to_owned(), m.to_owned(), b))
        .collect()
}

/// Checks the keys every throughput row carries: `"reader"` and `"mode"`, `"batch"` where a
/// batched receive API was used; and that a lossless shm consumer row lost nothing and is
/// compared with its lossy twin.
fn check_reader_and_mode(v: &Value) {
    let reader = text(v, "reader");
    assert!(reader == "rust" || reader == "go", "{v}");
    let mode = text(v, "mode");
    assert!(mode == "lossy" || mode == "lossless", "{v}");
    if let Some(batch) = v.get("batch") {
        let batch = batch.as_f64().expect("batch");
        assert!(batch >= 1.0, "{v}");
        // How full the batches were: at least one message per call, at most the batch.
        let mean = v["batch_mean"].as_f64().expect("batch_mean");
        assert!((1.0..=batch).contains(&mean), "{v}");
    } else {
        assert!(v.get("batch_mean").is_none(), "{v}");
    }
    if v["transport"] == "shm" && v["side"] == "consumer" && mode == "lossless" {
        let sent = v["sent"].as_u64().expect("sent");
        assert!(sent > 0, "{v}");
        assert_eq!(
            v["received"].as_u64(),
            Some(sent),
            "a lossless row lost messages: {v}"
        );
        assert_eq!(
            v["lagged"].as_u64(),
            Some(0),
            "a lossless row lost messages: {v}"
        );
        assert_eq!(v["lost_fraction"].as_f64(), Some(0.0), "{v}");
        positive(v, "msgs_per_s_vs_lossy");
    } else {
        assert!(v.get("msgs_per_s_vs_lossy").is_none(), "{v}");
    }
}

/// Checks the rows of the wake and idle parts: one shm (waiting with `wait`), with `block` also
/// one shm `async` (an AsyncSubscriber), and one UDS wake-up latency row with ordered
/// percentiles, and one idle-CPU row per strategy.
fn check_wake_and_idle(rows: &[Value], wait: &str) {
    let mut wake = BTreeSet::new();
    let mut shm_waits = Vec::new();
    let mut idle = Vec::new();
    for v in rows {
        assert!(v.get("pinned").and_then(Value::as_bool).is_some(), "{v}");
        match text(v, "metric").as_str() {
            "wake_latency" => {
                positive(v, "size");
                assert_eq!(text(v, "method"), "timestamp", "{v}");
                for key in ["p50_ns", "p99_ns", "p999_ns", "max_ns", "samples"] {
                    positive(v, key);
                }
                let p = |k: &str| v[k].as_f64().unwrap();
                assert!(p("p50_ns") <= p("p99_ns"), "{v}");
                assert!(
                    p("p99_ns") <= p("p999_ns") && p("p999_ns") <= p("max_ns"),
                    "{v}"
                );
                assert!(
                    p("gap_min_ns") >= 1e6 && p("gap_max_ns") >= p("gap_min_ns"),
                    "{v}"
                );
                let transport = text(v, "transport");
                if transport == "shm" {
                    shm_waits.push(text(v, "wait"));
                    assert_eq!(text(v, "reader"), "rust", "{v}");
                    positive(v, "p50_vs_uds");
                    positive(v, "p99_vs_uds");
                    let wakeups = v["wakeups"].as_u64().expect("wakeups");
                    let lagged = v["lagged"].as_u64().expect("lagged");
                    assert!(wakeups <= p("samples") as u64 + lagged, "{v}");
                } else {
                    assert_eq!(transport, "uds-stream", "{v}");
                    assert_eq!(text(v, "wait"), "block", "{v}");
                }
                wake.insert(transport);
            }
            "idle_cpu" => {
                assert_eq!(text(v, "transport"), "shm", "{v}");
                positive(v, "interval_ns");
                let cpu = v["cpu_percent"].as_f64().expect("cpu_percent");
                assert!(cpu.is_finite() && cpu >= 0.0, "{v}");
                assert!(v["cpu_ns"].as_u64().is_some(), "{v}");
                assert!(v["context_switches"].as_u64().is_some(), "{v}");
                assert!(v["can_park"].as_bool().is_some(), "{v}");
                idle.push(text(v, "wait"));
            }
            other => panic!("unexpected metric {other:?} in {v}"),
        }
    }
    assert_eq!(
        wake,
        BTreeSet::from(["shm".to_owned(), "uds-stream".to_owned()])
    );
    let expected: &[&str] = if wait == "block" {
        &[wait, "async"]
    } else {
        &[wait]
    };
    assert_eq!(shm_waits, expected);
    assert_eq!(idle, ["spin", "yield", "backoff", "block"]);
}

#[test]
fn wake_and_idle_parts_report_json() {
    let output = succeeded(
        &["--quick", "--json", "--only", "wake,idle"],
        Duration::from_secs(120),
    );
    check_wake_and_idle(&lines(&output), "block");
}

#[test]
fn wait_flag_reaches_the_shm_readers() {
    let output = succeeded(
        &[
            "--quick",
            "--json",
            "--wait",
            "backoff",
            "--only",
            "latency,producer,wake",
            "--samples",
            "2000",
            "--socket-samples",
            "200",
        ],
        Duration::from_secs(300),
    );
    let results = lines(&output);
    let shm: Vec<&Value> = results.iter().filter(|v| v["transport"] == "shm").collect();
    assert!(
        shm.iter().any(|v| v["metric"] == "latency")
            && shm.iter().any(|v| v["side"] == "producer")
            && shm.iter().any(|v| v["metric"] == "wake_latency"),
        "{results:?}"
    );
    for v in shm {
        assert_eq!(text(v, "wait"), "backoff", "{v}");
        if v["metric"] != "wake_latency" {
            assert_eq!(text(v, "recv"), "recv_into_deadline", "{v}");
        }
    }
    // Sockets are not affected.
    for v in results.iter().filter(|v| v["transport"] == "uds-stream") {
        assert_eq!(text(v, "wait"), "block", "{v}");
    }

    let (output, _) = shmcast(&["--wait", "busy"], Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn table_run_on_one_cpu_says_it_is_not_pinned() {
    // One CPU for both sides: nothing pinned, spinning sides yield, and the run still finishes.
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let cpu = (0..nix::sched::CpuSet::count())
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .expect("an allowed CPU")
        .to_string();
    let output = succeeded(
        &[
            "--quick",
            "--cpus",
            &cpu,
            "--only",
            "floor,latency,producer",
            "--samples",
            "2000",
            "--socket-samples",
            "200",
        ],
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("NOT pinned"), "{stdout}");
    for row in [
        "floor",
        "shm, busy-spin",
        "uds-stream",
        "uds-seqpacket",
        "pipe",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in\n{stdout}");
    }
    assert!(stdout.contains("Producer publish rate"), "{stdout}");
}

#[test]
fn throughput_table_shows_each_lossless_row_under_its_lossy_one() {
    let output = succeeded(
        &["--quick", "--only", "throughput", "--sizes", "64,4096"],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = stdout.lines().collect();
    for size in ["64 B", "4096 B"] {
        let at = |label: &str| {
            rows.iter()
                .position(|l| l.trim_start().starts_with(size) && l.contains(label))
                .unwrap_or_else(|| panic!("no {size} {label:?} row in\n{stdout}"))
        };
        let lossy = at("shm, rust reader, lossy ");
        let lossless = at("shm, rust reader, lossless ");
        let batched = at("shm, rust reader, lossless, batch 64 ");
        assert_eq!((lossless, batched), (lossy + 1, lossy + 2), "\n{stdout}");
        for row in [lossless, batched] {
            // Nothing lost.
            let cells: Vec<&str> = rows[row].split_whitespace().collect();
            assert!(cells.contains(&"0.00%"), "{}", rows[row]);
        }
    }
    assert!(stdout.contains("x lossy"), "{stdout}");
    assert!(
        stdout.contains("lossless: the segment is lossless"),
        "{stdout}"
    );
}

#[test]
fn go_reader_throughput_rows_include_a_lossless_one() {
    if Command::new("go").arg("version").output().is_err() {
        eprintln!("skipped: no go tool to build the Go bench reader");
        return;
    }
    let output = succeeded(
        &[
            "--quick",
            "--json",
            "--only",
            "throughput",
            "--consumer",
            "go",
        ],
        Duration::from_secs(300),
    );
    let mut shm_modes = Vec::new();
    for v in lines(&output) {
        check_reader_and_mode(&v);
        if v["transport"] == "shm" {
            shm_modes.push(shm_kind(&v));
        }
    }
    // Each reader lossy, then lossless, in the order of the table.
    let want = kinds(&[
        ("rust", "lossy", None),
        ("rust", "lossless", None),
        ("rust", "lossless", Some(64)),
        ("go", "lossy", None),
        ("go", "lossless", None),
    ]);
    assert_eq!(shm_modes, want);
}

#[test]
fn a_missing_go_reader_is_a_clear_error() {
    let (output, _) = shmcast(
        &[
            "--quick",
            "--consumer",
            "go",
            "--go-reader",
            "/nonexistent/shmcast-bench-reader",
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "shmcast-bench: error: --go-reader /nonexistent/shmcast-bench-reader: no such file"
    );
}

#[test]
fn bad_sizes_and_cpus_are_refused() {
    let (output, _) = shmcast(&["--sizes", "4"], Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(2));
    let (output, _) = shmcast(&["--cpus", "100000"], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("shmcast-bench: error: --cpus"),
        "{stderr}"
    );
}
