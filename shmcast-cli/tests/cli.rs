//! The `shmcast` command end to end, against `docs/CLI.md`: publishing lines and generated
//! messages, tailing them back in every format (also while a publisher runs), inspecting the
//! header, and the error paths (each must exit 1 with exactly one `shmcast: error:` line, or 2
//! for a usage error, and never panic).
//!
//! Commands are written as one string, `NAME` standing for the test's segment:
//! `shmcast("tail NAME --from beginning --json", &name)`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use shmcast::pattern;

mod common;
use common::{assert_ok, shm_name, stderr, stdout, unique, Cleanup};

/// `shmcast` with the arguments of `cmdline` (split at spaces, `NAME` replaced by `name`).
fn command(cmdline: &str, name: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmcast"));
    cmd.args(
        cmdline
            .split_whitespace()
            .map(|arg| if arg == "NAME" { name } else { arg }),
    );
    cmd
}

/// Runs a command with `input` on its standard input.
fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmcast");
    // Small inputs: the write cannot block on a full pipe before the child reads. A command
    // that fails early may exit without reading it, which makes the write a broken pipe.
    match child.stdin.take().unwrap().write_all(input) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("wait for shmcast")
}

/// Runs `shmcast CMDLINE` with an empty standard input.
fn shmcast(cmdline: &str, name: &str) -> Output {
    run_with_input(command(cmdline, name), b"")
}

/// Runs `shmcast CMDLINE` with `input` on its standard input.
fn shmcast_with_input(cmdline: &str, name: &str, input: &[u8]) -> Output {
    run_with_input(command(cmdline, name), input)
}

/// A running command that is killed if the test fails before waiting for it.
struct Running(Option<Child>);

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shmcast");
        Running(Some(child))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    fn finish(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().expect("wait")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts exit status 1 and exactly one line `shmcast: error: …` containing `needle` on
/// standard error (nothing else, and no panic).
#[track_caller]
fn assert_error(output: &Output, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("panicked"));
    assert_eq!(err.lines().count(), 1, "expected one line: {err:?}");
    assert!(err.ends_with('\n'), "{err:?}");
    assert!(err.starts_with("shmcast: error: "), "{err:?}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

/// Asserts exit status 2 (a usage error) with a message and no panic.
#[track_caller]
fn assert_usage_error(output: &Output) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {err}");
    assert!(!err.trim().is_empty(), "a usage error says what is wrong");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(output.stdout.is_empty());
}

/// A unique file path in the temporary directory; removed when the guard is dropped.
fn temp_path(what: &str) -> (String, Cleanup) {
    let path = std::env::temp_dir().join(unique(what));
    let text = path.to_str().expect("UTF-8 temp dir").to_owned();
    (text, Cleanup(path))
}

/// The `--json` line of a message.
fn json_line(seq: u64, payload: &[u8]) -> String {
    format!(
        "{{\"seq\":{seq},\"len\":{},\"data\":\"{}\"}}",
        payload.len(),
        base64::engine::general_purpose::STANDARD.encode(payload)
    )
}

/// The `--json` line of generated message `seq` with a length drawn from `1..=900`.
fn generated_json_line(seq: u64) -> String {
    let mut payload = vec![0u8; pattern::length(seq, 1, 900)];
    pattern::fill(seq, &mut payload);
    json_line(seq, &payload)
}

/// `shmcast publish NAME --count COUNT --size 1-900 --capacity 64K --keep`; returns the pid
/// of the publishing process.
fn publish_generated(name: &str, count: u64) -> u32 {
    let cmdline = format!("publish NAME --count {count} --size 1-900 --capacity 64K --keep");
    let mut publisher = Running::spawn(command(&cmdline, name));
    let pid = publisher.child().id();
    let output = publisher.finish();
    assert_ok(&output);
    assert!(output.stdout.is_empty(), "publish prints nothing");
    pid
}

fn inspect_json(name: &str) -> serde_json::Value {
    let output = shmcast("inspect NAME --json", name);
    assert_ok(&output);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Parses the `--verify` summary, which must be exactly `received=R lagged=L corrupt=C`.
fn summary(line: &str) -> (u64, u64, u64) {
    let values: Vec<u64> = line
        .split(' ')
        .map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse().ok()))
        .collect::<Option<_>>()
        .unwrap_or_else(|| panic!("not a summary: {line:?}"));
    let [received, lagged, corrupt] = values[..] else {
        panic!("not a summary: {line:?}");
    };
    assert_eq!(
        line,
        format!("received={received} lagged={lagged} corrupt={corrupt}")
    );
    (received, lagged, corrupt)
}

// ======================================================================= publish and tail

#[test]
fn lines_published_from_stdin_come_back_from_tail_as_json_and_text() {
    let (name, _cleanup) = shm_name("lines");
    let input =
        b"first line\n\nsecond: with spaces\n\xff\xfe\x00binary\ncrlf ends here\r\nno newline";
    let payloads: [&[u8]; 6] = [
        b"first line",
        b"",
        b"second: with spaces",
        b"\xff\xfe\x00binary",
        b"crlf ends here",
        b"no newline",
    ];
    let output = shmcast_with_input("publish NAME --keep", &name, input);
    assert_ok(&output);
    assert!(output.stdout.is_empty(), "publish prints nothing");

    // The producer has exited: the tail reads everything, then says so and ends (status 0).
    let output = shmcast("tail NAME --from beginning --json --timeout 0.2", &name);
    assert_ended(&output, GONE);
    let expected: Vec<String> = (1..)
        .zip(payloads)
        .map(|(seq, payload)| json_line(seq, payload))
        .collect();
    assert_eq!(stdout(&output).lines().collect::<Vec<_>>(), expected);
    // The JSON is valid and its data decodes to the payload.
    for (line, payload) in stdout(&output).lines().zip(payloads) {
        let value: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        let data = base64::engine::general_purpose::STANDARD
            .decode(value["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, payload);
    }

    // The human format: printable text as is, anything else as hex.
    let output = shmcast("tail NAME --from beginning --timeout 0.2", &name);
    assert_ended(&output, GONE);
    assert_eq!(
        stdout(&output),
        "seq=1 len=10 first line\n\
         seq=2 len=0 \n\
         seq=3 len=19 second: with spaces\n\
         seq=4 len=9 hex:fffe0062696e617279\n\
         seq=5 len=14 crlf ends here\n\
         seq=6 len=10 no newline\n"
    );

    // The default start is the oldest retained message: all six fit in the 1 MiB ring.
    let output = shmcast("tail NAME --json --timeout 0.2 --count 2", &name);
    assert_ok(&output);
    assert_eq!(
        stdout(&output),
        format!("{}\n{}\n", expected[0], expected[1])
    );

    let info = inspect_json(&name);
    assert_eq!(info["next_seq"], 7);
    assert_eq!(info["oldest_seq"], 1);
    assert_eq!(info["capacity"], 1 << 20);
}

#[test]
fn publish_without_keep_removes_the_segment_when_it_ends() {
    let (name, cleanup) = shm_name("nokeep");
    assert_ok(&shmcast_with_input("publish NAME", &name, b"gone\n"));
    assert!(!cleanup.path().exists(), "the segment was left behind");
    assert_error(&shmcast("tail NAME", &name), "no shmcast segment");
}

#[test]
fn generated_messages_overflow_a_small_ring_and_tail_verify_accounts_for_all() {
    let (name, _cleanup) = shm_name("verify");
    publish_generated(&name, 5000);

    let output = shmcast("tail NAME --from beginning --verify --timeout 0.2", &name);
    assert_ended(&output, GONE);
    let text = stdout(&output);
    // With --verify and without --json only the summary is printed.
    assert_eq!(text.lines().count(), 1, "{text}");
    let (received, lagged, corrupt) = summary(text.trim_end());
    assert_eq!(received + lagged, 5000);
    assert!(lagged > 0, "5000 messages cannot fit a 64 KiB ring");
    assert_eq!(corrupt, 0);
    // What was received is exactly what the ring retains.
    let oldest = inspect_json(&name)["oldest_seq"].as_u64().unwrap();
    assert_eq!(received, 5001 - oldest);

    // With --json: one line for the lap, then every retained message, consecutively.
    let output = shmcast("tail NAME --from beginning --json --timeout 0.2", &name);
    assert_ended(&output, GONE);
    let mut expected = vec![format!("{{\"lagged\":{lagged}}}")];
    expected.extend((lagged + 1..=5000).map(generated_json_line));
    assert_eq!(stdout(&output).lines().collect::<Vec<_>>(), expected);

    // Starting at the oldest retained message there is no lap.
    let output = shmcast("tail NAME --from oldest --json --timeout 0.2", &name);
    assert_ended(&output, GONE);
    assert_eq!(stdout(&output).lines().collect::<Vec<_>>(), expected[1..]);

    // --count counts lagged messages too: the lap alone satisfies it.
    let output = shmcast("tail NAME --from beginning --json --count 3", &name);
    assert_ok(&output);
    assert_eq!(stdout(&output), format!("{}\n", expected[0]));
}

#[test]
fn tail_from_newest_and_next_start_at_the_end() {
    let (name, _cleanup) = shm_name("ends");
    publish_generated(&name, 5000);

    let output = shmcast("tail NAME --from newest --count 1 --json", &name);
    assert_ok(&output);
    assert_eq!(stdout(&output), format!("{}\n", generated_json_line(5000)));

    let output = shmcast("tail NAME --from next --timeout 0.2", &name);
    assert_ended(&output, GONE);
    assert_eq!(stdout(&output), "", "nothing is published after joining");

    // ...and so is one that cannot be reached because the producer has exited (noticed within
    // about 100 ms, long before this timeout).
    let output = shmcast("tail NAME --count 10 --from next --timeout 20", &name);
    let exited =
        "the producer has exited; no more messages will arrive: received 0 and lagged 0 of 10";
    assert_error(&output, exited);
    // A timeout shorter than that is the producer's exit too: a dead producer is reported
    // whichever the read notices first, so that the Rust and Go tails agree.
    let output = shmcast("tail NAME --count 10 --from next --timeout 0.02", &name);
    assert_error(&output, exited);
    let output = shmcast("tail NAME --from next --timeout 0", &name);
    assert_ended(&output, GONE);

    // A --count that is not reached before the timeout is an error: here a live producer
    // publishes nothing (it waits for a lossless reader that never comes).
    let (live, _live_cleanup) = shm_name("ends-live");
    let _producer = Running::spawn(command(
        "publish NAME --lossless --wait-readers 1 --count 1",
        &live,
    ));
    await_segment(&live);
    let output = shmcast("tail NAME --count 10 --from next --timeout 0.02", &live);
    assert_error(&output, "timed out");
    assert_eq!(stdout(&output), "");
    // --verify still prints its summary when the command then fails.
    let output = shmcast(
        "tail NAME --count 10 --from next --timeout 0.02 --verify",
        &live,
    );
    assert_error(&output, "timed out");
    assert_eq!(stdout(&output), "received=0 lagged=0 corrupt=0\n");
}

#[test]
fn inspect_reports_the_header_as_json_and_as_text() {
    let (name, _cleanup) = shm_name("inspect");
    let publisher_pid = publish_generated(&name, 5000);

    let info = inspect_json(&name);
    assert_eq!(info["layout_version"], 1);
    assert_eq!(info["capacity"], 65536);
    assert_eq!(info["max_payload"], 65536 / 4 - 16);
    assert_eq!(info["epoch"], 1);
    assert_eq!(info["next_seq"], 5001);
    assert_eq!(
        info["producer_pid"].as_u64(),
        Some(u64::from(publisher_pid))
    );
    assert_eq!(info["path"], format!("/dev/shm{name}"));
    assert!(info["oldest_seq"].as_u64().unwrap() > 1, "{info}");
    assert!(info["created_unix_ns"].as_u64().unwrap() > 0, "{info}");
    // The publisher has exited; it published, so it left a time behind.
    assert_eq!(info["producer_alive"], false, "{info}");
    assert_eq!(info["gap_records"], false, "{info}");
    let last_publish = info["last_publish_unix_ns"].as_u64().unwrap();
    assert!(
        last_publish >= info["created_unix_ns"].as_u64().unwrap(),
        "{info}"
    );
    // Keys sorted, nothing else: consumers may rely on the set.
    let keys: Vec<&str> = info
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "capacity",
            "created_unix_ns",
            "epoch",
            "evictions",
            "gap_records",
            "head",
            "intent",
            "last_publish_unix_ns",
            "latest",
            "layout_version",
            "lossless",
            "max_block_ns",
            "max_payload",
            "next_seq",
            "oldest_seq",
            "path",
            "producer_alive",
            "producer_pid",
            "reader_slots",
            "readers"
        ]
    );
    let position = |key: &str| {
        info[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {info}"))
    };
    let (head, latest, intent) = (position("head"), position("latest"), position("intent"));
    // The retained records lie between head and intent, within one ring.
    assert!(
        head <= latest && latest < intent && intent <= head + 65536,
        "{info}"
    );
    assert!([head, latest, intent].iter().all(|p| p % 8 == 0), "{info}");

    let output = shmcast("inspect NAME", &name);
    assert_ok(&output);
    let text = stdout(&output);
    assert!(text.contains("65536"), "{text}");
    assert!(text.contains("5001"), "{text}");
    assert!(text.contains(&format!("/dev/shm{name}")), "{text}");
    assert!(
        text.contains(&format!(
            "\nproducer        pid {publisher_pid}, dead (epoch 1)\n"
        )),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("last publish    "));
    let line = line.unwrap_or_else(|| panic!("no last publish line: {text}"));
    assert!(
        line.contains(" UTC (") && line.ends_with(" s ago)"),
        "{line}"
    );
}

#[test]
fn a_segment_can_be_a_regular_file_with_an_exact_mode() {
    let (path, cleanup) = temp_path("file");
    let output = shmcast(
        "publish NAME --count 10 --capacity 4K --mode 640 --keep",
        &path,
    );
    assert_ok(&output);
    let meta = std::fs::metadata(cleanup.path()).expect("the segment file exists");
    assert_eq!(meta.len(), 8192 + 4096);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);

    let output = shmcast("tail NAME --from beginning --verify --timeout 0", &path);
    assert_ended(&output, GONE);
    assert_eq!(stdout(&output), "received=10 lagged=0 corrupt=0\n");
}

#[test]
fn tail_into_a_closed_pipe_ends_quietly() {
    let (name, _cleanup) = shm_name("pipe");
    // Far more output (14 MB) than a pipe buffers, so tail is still writing when we leave.
    let output = shmcast(
        "publish NAME --count 10000 --size 1000 --capacity 16M --keep",
        &name,
    );
    assert_ok(&output);
    let mut tail = Running::spawn(command(
        "tail NAME --from beginning --json --timeout 5",
        &name,
    ));
    let mut first = String::new();
    BufReader::new(tail.child().stdout.take().unwrap())
        .read_line(&mut first)
        .expect("read a line");
    assert!(first.starts_with("{\"seq\":1,\"len\":1000,"), "{first}");
    // The reader is dropped: tail's next write fails with a broken pipe.
    assert_ok(&tail.finish());
}

#[test]
fn tail_streams_messages_while_a_paced_publish_is_running() {
    let (name, _cleanup) = shm_name("live");
    let started = Instant::now();
    // 150 messages at 100 per second: the publisher runs for about 1.5 s.
    let mut publisher = Running::spawn(command(
        "publish NAME --count 150 --rate 100 --size 1-900 --capacity 64K",
        &name,
    ));
    // Bounded wait for the segment to be created and initialised.
    while !shmcast("inspect NAME", &name).status.success() {
        assert!(started.elapsed() < Duration::from_secs(10), "no segment");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut tail = Running::spawn(command(
        "tail NAME --from beginning --json --count 150 --timeout 10",
        &name,
    ));
    let mut lines = BufReader::new(tail.child().stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").expect("read");
    // tail flushes as soon as it has caught up, long before the publisher is done.
    assert!(
        publisher.child().try_wait().unwrap().is_none(),
        "the first line only came after the publisher ended"
    );
    // The ring holds far more than 150 small messages: nothing is lagged.
    let received: Vec<String> = std::iter::once(Ok(first))
        .chain(lines)
        .collect::<Result<_, _>>()
        .expect("read");
    let expected: Vec<String> = (1..=150).map(generated_json_line).collect();
    assert_eq!(received, expected);
    assert_ok(&tail.finish());
    assert_ok(&publisher.finish());
    // --rate paces the messages: the 150th is due 1.49 s after the first.
    assert!(started.elapsed() >= Duration::from_millis(1490));
}

// ======================================================================= errors

#[test]
fn a_missing_segment_is_an_error() {
    let missing = format!("/shmcast-does-not-exist-{}", std::process::id());
    assert_error(&shmcast("tail NAME", &missing), "no shmcast segment");
    assert_error(&shmcast("inspect NAME", &missing), "no shmcast segment");
    assert_error(
        &shmcast("inspect NAME --json", &missing),
        "no shmcast segment",
    );
    let (path, _cleanup) = temp_path("missing");
    assert_error(&shmcast("tail NAME", &path), "no shmcast segment");
}

#[test]
fn files_that_are_not_segments_are_refused() {
    let (path, cleanup) = temp_path("notseg");
    let cases: [(&[u8], &str); 4] = [
        (&[0; 8192], "not initialised"),
        // Empty, and no producer is creating it: truncated, not "not initialised yet".
        (b"", "is truncated: 0 bytes"),
        (&[0xA5; 8192], "not a shmcast segment"),
        (&[0; 100], "truncated"),
    ];
    for (contents, needle) in cases {
        std::fs::write(cleanup.path(), contents).unwrap();
        assert_error(&shmcast("tail NAME", &path), needle);
        assert_error(&shmcast("inspect NAME", &path), needle);
    }
}

#[test]
fn damaged_segment_files_are_refused() {
    let (path, cleanup) = temp_path("damaged");
    let output = shmcast("publish NAME --count 10 --capacity 4K --keep", &path);
    assert_ok(&output);
    let good = std::fs::read(cleanup.path()).unwrap();

    // The segment with the header word at `offset` replaced.
    let with = |offset: usize, word: u64| {
        let mut bytes = good.clone();
        bytes[offset..offset + 8].copy_from_slice(&word.to_le_bytes());
        bytes
    };
    let cases: [(Vec<u8>, &str); 6] = [
        (good[..8192 + 1024].to_vec(), "header describes"),
        (with(0x008, 2), "layout version 2"),
        // Bit 2: neither lossless (bit 0) nor gap records (bit 1).
        (with(0x020, 4), "unknown feature flags"),
        // Lossless (bit 0) without reader slots.
        (with(0x020, 1), "corrupt header"),
        (with(0x018, 5000), "corrupt header"),
        (with(0x010, 4096), "corrupt header"),
    ];
    for (contents, needle) in cases {
        std::fs::write(cleanup.path(), &contents).unwrap();
        assert_error(&shmcast("tail NAME", &path), needle);
        assert_error(&shmcast("inspect NAME --json", &path), needle);
    }
}

#[test]
fn invalid_names_are_refused() {
    let long = format!("/{}", "n".repeat(300));
    for name in ["/", "", "/..", long.as_str()] {
        for subcommand in ["tail", "inspect", "publish"] {
            // Not through `command`: an empty name would vanish when the line is split.
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmcast"));
            cmd.args([subcommand, name]);
            assert_error(&run_with_input(cmd, b""), "invalid segment name");
        }
    }
}

#[test]
fn publish_replaces_a_dead_producers_segment_but_never_a_live_one_or_a_foreign_file() {
    let (name, cleanup) = shm_name("exists");
    assert_ok(&shmcast_with_input(
        "publish NAME --keep",
        &name,
        b"one\ntwo\n",
    ));
    assert_eq!(inspect_json(&name)["next_seq"], 3);
    // That producer has exited: a new one replaces its segment and starts a new stream.
    assert_ok(&shmcast_with_input(
        "publish NAME --keep",
        &name,
        b"three\n",
    ));
    assert_eq!(inspect_json(&name)["next_seq"], 2);
    assert!(cleanup.path().exists());

    // A live producer keeps its segment; the second one is told who owns it.
    let (live, _live_cleanup) = shm_name("live");
    let mut running = Running::spawn(command("publish NAME --count 1000000 --rate 10", &live));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !shmcast("inspect NAME", &live).status.success() {
        assert!(
            Instant::now() < deadline,
            "the producer never created {live}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = running.child().id();
    let output = shmcast("publish NAME --count 1", &live);
    assert_error(&output, &format!("belongs to a live producer (pid {pid})"));
    assert!(shmcast("inspect NAME", &live).status.success());
    drop(running);

    // A file that is not a segment is never overwritten.
    let (path, _file) = temp_path("exists");
    std::fs::write(&path, b"someone else's file").unwrap();
    assert_error(&shmcast("publish NAME --count 1", &path), "already exists");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's file");
}

#[test]
fn publish_refuses_bad_capacities_and_oversized_messages() {
    let (name, cleanup) = shm_name("capacity");
    for capacity in ["1000", "2048", "3K"] {
        let cmdline = format!("publish NAME --capacity {capacity} --count 1");
        assert_error(&shmcast(&cmdline, &name), "invalid capacity");
        assert!(!cleanup.path().exists(), "a refused segment was created");
    }
    // 2000 bytes is over the 1008-byte maximum of a 4 KiB ring.
    let output = shmcast("publish NAME --capacity 4K --count 1 --size 2000", &name);
    assert_error(&output, "larger than the maximum");
    assert!(!cleanup.path().exists(), "the segment was left behind");
    // Even with --keep: the size is refused before the segment is created.
    let output = shmcast(
        "publish NAME --capacity 4K --count 1 --size 10-2000 --keep",
        &name,
    );
    assert_error(&output, "larger than the maximum");
    assert!(!cleanup.path().exists(), "--keep left a segment behind");
    // A power-of-two capacity too small for any record is refused, not a panic.
    assert_error(
        &shmcast("publish NAME --capacity 16 --count 1", &name),
        "invalid capacity",
    );
    let output = shmcast_with_input("publish NAME --capacity 4K", &name, &[b'x'; 2000]);
    assert_error(&output, "larger than the maximum");
    assert!(!cleanup.path().exists(), "the segment was left behind");
}

#[test]
fn usage_errors_exit_with_status_2() {
    let cases = [
        "",
        "frobnicate",
        "tail",
        "tail /x --bogus",
        "tail /x --from sideways",
        "tail /x --timeout -1",
        "tail /x --timeout soon",
        "tail /x --count many",
        "publish /x --capacity 12Q",
        "publish /x --mode 9",
        "publish /x --size 5",
        "publish /x --count 1 --size 9-3",
        "inspect /x /y",
    ];
    for cmdline in cases {
        assert_usage_error(&shmcast(cmdline, ""));
    }
    // Help is not an error.
    let output = shmcast("--help", "");
    assert_ok(&output);
    assert!(stdout(&output).contains("publish"));
}

/// Lossless mode from the shell: a producer that waits for two registered tails, which then
/// receive every one of the messages through a ring far too small to hold them; `inspect` lists
/// them while they read; a tail cannot register on a lossy segment.
#[test]
fn lossless_publish_and_tails_lose_nothing() {
    let (name, _cleanup) = shm_name("ll");
    let count = 100_000u64;
    let mut producer = command(
        &format!("publish NAME --lossless --readers 4 --capacity 16K --count {count} --size 0-1000 --wait-readers 2 --keep"),
        &name,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The producer prints this once the segment exists.
    let mut err = BufReader::new(producer.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert_eq!(line, "shmcast: waiting for 2 readers to register\n");
    let tails: Vec<Child> = ["block", "spin"]
        .iter()
        .map(|wait| {
            command(
                &format!("tail NAME --lossless --from beginning --verify --count {count} --timeout 20 --wait {wait}"),
                &name,
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let info = inspect_json(&name);
    assert_eq!(info["lossless"], true, "{info}");
    assert_eq!(info["reader_slots"], 4, "{info}");
    for tail in tails {
        let out = tail.wait_with_output().unwrap();
        assert_ok(&out);
        assert_eq!(
            stdout(&out),
            format!("received={count} lagged=0 corrupt=0\n")
        );
    }
    assert!(producer.wait().unwrap().success());
    let info = inspect_json(&name);
    assert_eq!(info["readers"], serde_json::json!([]), "{info}");
    assert_eq!(info["evictions"], 0, "{info}");

    let (lossy, _cleanup) = shm_name("ll-lossy");
    assert_ok(&shmcast("publish NAME --count 1 --keep", &lossy));
    assert_error(
        &shmcast("tail NAME --lossless --timeout 0", &lossy),
        "is not a lossless segment",
    );
}

// ======================================================================= hardening (issue 18)

/// What both tails print on standard error when the producer is gone (`docs/CLI.md`, "Exit
/// status").
const GONE: &str = "shmcast: the producer has exited; no more messages will arrive\n";
const REPLACED: &str = "shmcast: the producer has exited, and a new segment now exists under \
                        the same name: open it again to follow the new producer\n";

/// Asserts that a tail ended by itself because the producer was gone: status 0, and the one
/// line `expected` on standard error.
#[track_caller]
fn assert_ended(output: &Output, expected: &str) {
    assert_eq!(
        (output.status.code(), stderr(output).as_str()),
        (Some(0), expected),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Writes the little-endian word `value` at `offset` of the file at `path`; returns the file.
fn write_word(path: &std::path::Path, offset: u64, value: u64) -> std::fs::File {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &value.to_le_bytes(), offset).unwrap();
    file
}

/// Waits at most 10 s for `child` to exit.
fn wait_briefly(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the command did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits at most 10 s until `inspect` can open the segment `name`.
fn await_segment(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shmcast("inspect NAME", name).status.success() {
        assert!(
            Instant::now() < deadline,
            "the producer never created {name}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Item 3: a tail whose producer is gone says so on standard error, and says when a new
/// producer has replaced the segment; both are the normal end of the stream (status 0).
#[test]
fn tail_says_that_the_producer_is_gone_and_whether_its_segment_was_replaced() {
    let (path, _cleanup) = temp_path("gone");
    assert_ok(&shmcast("publish NAME --count 2 --keep", &path));
    for args in ["--verify", "--json", "", "--timeout 5 --wait spin"] {
        let output = shmcast(&format!("tail NAME --from beginning {args}"), &path);
        assert_ended(&output, GONE);
    }
    // Falling short of --count stays an error, in one line.
    let output = shmcast("tail NAME --from beginning --count 3", &path);
    assert_error(
        &output,
        "the producer has exited; no more messages will arrive: received 2 and lagged 0 of 3",
    );

    // The producer is killed (it cannot remove its segment) and, before the tail notices, a new
    // producer's segment takes the name: the tail, which still maps the old file, says so.
    let mut producer = Running::spawn(command("publish NAME --count 1000000 --rate 10", &path));
    await_segment(&path);
    let mut tail = Running::spawn(command("tail NAME --from beginning --json", &path));
    let mut first = String::new();
    BufReader::new(tail.child().stdout.take().unwrap())
        .read_line(&mut first)
        .expect("read a line");
    assert!(first.starts_with("{\"seq\":1,"), "{first}");
    let (staged, _staged_cleanup) = temp_path("gone-new");
    let replacement = shmcast::Publisher::options()
        .capacity(4096)
        .unlink_on_drop(false)
        .create_path(&staged)
        .expect("create the replacement");
    std::fs::rename(&staged, &path).unwrap();
    producer.child().kill().unwrap();
    let output = tail.finish();
    assert_ended(&output, REPLACED);
    drop(replacement);
}

/// Item 9: a valid header may claim a capacity of up to 1 TiB on a sparse file; the tail's
/// buffer follows the messages read, so a tail limited to 1 GiB of data reads a segment that
/// claims 128 GiB (a maximum payload of 32 GiB), messages larger than its first buffer included.
#[test]
fn a_huge_sparse_segment_is_read_with_memory_for_its_messages_only() {
    let (path, cleanup) = temp_path("huge");
    let output = shmcast(
        "publish NAME --capacity 1M --count 3 --size 100000-200000 --keep",
        &path,
    );
    assert_ok(&output);
    // The three records lie well inside the first MiB; a larger ring has them at the same
    // offsets.
    let huge: u64 = 1 << 37;
    write_word(cleanup.path(), 0x18, huge)
        .set_len(8192 + huge)
        .unwrap();
    assert_eq!(inspect_json(&path)["capacity"], huge);
    let limited = |args: &str| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -d 1048576 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_shmcast"))
            .args(["tail", &path, "--from", "beginning"])
            .args(args.split_whitespace());
        run_with_input(cmd, b"")
    };
    let output = limited("--verify");
    assert_ended(&output, GONE);
    assert_eq!(stdout(&output), "received=3 lagged=0 corrupt=0\n");
    let output = limited("--json");
    assert_ended(&output, GONE);
    let expected: Vec<String> = (1..=3)
        .map(|seq| {
            let mut payload = vec![0u8; pattern::length(seq, 100_000, 200_000)];
            pattern::fill(seq, &mut payload);
            json_line(seq, &payload)
        })
        .collect();
    assert_eq!(stdout(&output).lines().collect::<Vec<_>>(), expected);
}

/// Item 10: `inspect` shows header values that cannot be as they are, never computing with
/// them (a debug build panicked on the subtraction, a release build printed nonsense).
#[test]
fn inspect_shows_impossible_header_values_as_such() {
    let (path, cleanup) = temp_path("impossible");
    assert_ok(&shmcast_with_input(
        "publish NAME --capacity 4K --keep",
        &path,
        b"one\ntwo\nthree\n",
    ));
    // The commit word of the record at `head` (position 0) says seq 1000: the oldest retained
    // message would be newer than the newest (seq 3).
    write_word(cleanup.path(), 8192, 1000);
    let output = shmcast("inspect NAME", &path);
    assert_ok(&output);
    let text = stdout(&output);
    assert!(
        text.contains(
            "\nretained        impossible: oldest seq 1000, next seq 4 (the segment is corrupt)\n"
        ),
        "{text}"
    );
    let info = inspect_json(&path);
    assert_eq!(
        (&info["oldest_seq"], &info["next_seq"]),
        (&1000.into(), &4.into())
    );
}

/// Item 12: a line longer than the maximum payload is refused after reading at most that
/// much of it: an endless line does not make `publish` buffer it whole.
#[test]
fn publish_refuses_an_endless_line_without_reading_it_all() {
    let (name, cleanup) = shm_name("endless");
    let mut child = command("publish NAME --capacity 4K", &name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A line (after one that fits) of up to 256 MiB: the command must give up long before.
    let writer = std::thread::spawn(move || {
        let mut written = 0usize;
        let _ = stdin.write_all(b"fits\n");
        let chunk = [b'x'; 64 << 10];
        while written < 256 << 20 {
            match stdin.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => break, // the command has exited: a broken pipe
            }
        }
        written
    });
    let output = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    assert_error(
        &output,
        "line 2 of standard input is larger than the maximum of 1008 bytes for this segment",
    );
    assert!(
        written < 16 << 20,
        "the command read {written} bytes of the line"
    );
    assert!(!cleanup.path().exists(), "the segment was left behind");
}

/// Item 12: numeric options out of range are usage errors (status 2), not panics, and no
/// segment is created for them.
#[test]
fn out_of_range_numbers_and_modes_are_usage_errors() {
    let (name, cleanup) = shm_name("range");
    let cases = [
        "tail NAME --timeout 1e19",
        "tail NAME --timeout 1e10",
        "tail NAME --timeout NaN",
        "tail NAME --timeout inf",
        "publish NAME --count 1 --rate 0",
        "publish NAME --count 1 --rate NaN",
        "publish NAME --count 1 --rate -5",
        "publish NAME --count 1 --rate inf",
        "publish NAME --lossless --max-block 1e19",
        "publish NAME --lossless --max-block NaN",
        "publish NAME --lossless --wait-readers 32",
        "publish NAME --mode 7777",
        "publish NAME --mode 4600",
        "publish NAME --mode 1777",
        "publish NAME --mode 1000",
    ];
    for cmdline in cases {
        let output = shmcast(cmdline, &name);
        assert_usage_error(&output);
        assert!(!cleanup.path().exists(), "{cmdline}: created the segment");
    }
    // The largest accepted values work; a very slow rate publishes its first message at once.
    let (path, file) = temp_path("range");
    assert_ok(&shmcast(
        "publish NAME --count 1 --rate 1e-300 --mode 777 --keep",
        &path,
    ));
    assert_eq!(
        std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o7777,
        0o777
    );
    let output = shmcast("tail NAME --from beginning --verify --timeout 1e9", &path);
    assert_ended(&output, GONE);
    assert_eq!(stdout(&output), "received=1 lagged=0 corrupt=0\n");
}

/// Item 12: SIGINT, SIGTERM or SIGHUP make `publish` (without --keep) remove its segment, and
/// promptly, wherever it waits: reading standard input, pacing for --rate, waiting for readers
/// to register, or blocked by a lossless reader that reads nothing. It then dies of the signal.
#[test]
fn publish_removes_its_segment_when_a_signal_stops_it() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::os::unix::process::ExitStatusExt;
    let waits = [
        "publish NAME",
        "publish NAME --count 100 --rate 0.5",
        "publish NAME --lossless --wait-readers 1 --count 10",
        "publish NAME --lossless --max-block never --capacity 4K --count 100000 --size 500",
    ];
    for (i, cmdline) in waits.iter().enumerate() {
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            let (name, cleanup) = shm_name("signal");
            let mut producer = command(cmdline, &name)
                .stdin(Stdio::piped()) // kept open: `publish NAME` waits for a line
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            await_segment(&name);
            // The last case: a registered reader, stopped, holds the producer back for ever.
            let reader = (i == 3).then(|| {
                let mut tail = Running::spawn(command(
                    "tail NAME --lossless --from beginning --verify",
                    &name,
                ));
                let pid = Pid::from_raw(tail.child().id() as i32);
                let deadline = Instant::now() + Duration::from_secs(10);
                while inspect_json(&name)["readers"]
                    .as_array()
                    .unwrap()
                    .is_empty()
                {
                    assert!(Instant::now() < deadline, "the tail did not register");
                    std::thread::sleep(Duration::from_millis(5));
                }
                kill(pid, Signal::SIGSTOP).unwrap();
                // Until the producer has filled the ring and waits.
                std::thread::sleep(Duration::from_millis(200));
                tail
            });
            std::thread::sleep(Duration::from_millis(50));
            let sent = Instant::now();
            kill(Pid::from_raw(producer.id() as i32), signal).unwrap();
            let status = wait_briefly(&mut producer);
            assert_eq!(
                status.signal(),
                Some(signal as i32),
                "{cmdline}: {signal}: {status}"
            );
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "{cmdline}: {signal}: slow to stop"
            );
            assert!(
                !cleanup.path().exists(),
                "{cmdline}: {signal}: the segment was left behind"
            );
            drop(reader);
        }
    }
}
