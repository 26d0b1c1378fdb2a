//! Stale-segment hygiene, against `docs/CLI.md`: `shmcast list` finds the segments of a
//! directory by their header (never by name, never through a link), `shmcast clean` removes
//! exactly those whose producer is dead, and `inspect` shows whether the producer is alive and
//! when it last published. Also the library call behind `clean`,
//! `shmcast::remove_stale_segment`, including the races it must lose gracefully.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use shmcast::{
    layout, pattern, remove_stale_segment, Error, Publisher, Removal, StartAt, Subscriber,
};

mod common;
use common::{assert_ok, stdout, unique, Cleanup, TempDir};

fn shmcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmcast"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shmcast")
}

/// `shmcast list --json ARGS`, parsed: one object per line.
fn list_json(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let output = shmcast(&all);
    assert!(output.status.success(), "{output:?}");
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A segment whose producer has exited without removing it.
fn dead_segment(path: &Path, messages: u64) {
    let mut publisher = Publisher::options()
        .capacity(4096)
        .unlink_on_drop(false)
        .create_path(path)
        .expect("create the dead producer's segment");
    for seq in 1..=messages {
        publisher.publish(&seq.to_le_bytes()).unwrap();
    }
    drop(publisher);
    await_dead(path);
}

/// Waits until the producer lock of the segment at `path` is free. Another test thread may be
/// spawning a process when a producer is dropped: until that child execs, it shares our
/// descriptors, and so the lock.
fn await_dead(path: &Path) {
    let probe =
        Subscriber::open_path(path, StartAt::Oldest).expect("open the dead producer's segment");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while probe.producer_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock outlived its producer"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| pattern::splitmix64(&mut state) as u8)
        .collect()
}

/// A file with a valid magic and a header nothing accepts (capacity not a power of two),
/// sized like a segment.
fn bad_header() -> Vec<u8> {
    let mut bytes = vec![0u8; (layout::DATA_OFFSET + 4096) as usize];
    let mut put = |off: usize, v: u64| bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(layout::offset::MAGIC, layout::MAGIC);
    put(layout::offset::VERSION, u64::from(layout::VERSION));
    put(layout::offset::DATA_OFFSET, layout::DATA_OFFSET);
    put(layout::offset::CAPACITY, 3000);
    put(layout::offset::EPOCH, 1);
    put(layout::offset::PRODUCER_PID, 1);
    bytes
}

/// Takes the producer lock (docs/LAYOUT.md, "Producer liveness") on `file`, as a producer does
/// right after creating its file and before writing `magic`.
fn producer_lock(file: &File) {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)).expect("take the producer lock");
}

/// Everything `list` and `clean` must leave alone, with the bytes each file must keep.
struct Foreign {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// A segment-sized file of zeros whose "producer" holds the lock but has not written
    /// `magic` yet.
    _creating: File,
    /// The dead segment behind the symbolic link, outside the directory.
    outside: PathBuf,
    _outside_dir: TempDir,
}

fn add_foreign_files(dir: &TempDir) -> Foreign {
    let mut files = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        files.push((path, bytes));
    };
    add("noise", noise((layout::DATA_OFFSET + 4096) as usize, 7));
    add("empty", Vec::new());
    add("bad-header", bad_header());
    add(
        "unfinished",
        vec![0u8; (layout::DATA_OFFSET + 4096) as usize],
    );
    add("creating", vec![0u8; (layout::DATA_OFFSET + 4096) as usize]);
    let creating = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("creating"))
        .unwrap();
    producer_lock(&creating);

    // A subdirectory holding a dead segment: not searched.
    std::fs::create_dir(dir.join("subdir")).unwrap();
    dead_segment(&dir.join("subdir").join("deeper"), 1);
    // A symbolic link to a dead segment outside the directory: not followed.
    let outside_dir = TempDir::new("outside");
    let outside = outside_dir.join("target");
    dead_segment(&outside, 1);
    std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
    Foreign {
        files,
        _creating: creating,
        outside,
        _outside_dir: outside_dir,
    }
}

impl Foreign {
    #[track_caller]
    fn assert_intact(&self, dir: &TempDir) {
        for (path, bytes) in &self.files {
            let now = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(&now == bytes, "{} was changed", path.display());
        }
        assert!(dir.join("subdir").join("deeper").exists());
        assert!(std::fs::symlink_metadata(dir.join("link")).is_ok());
        assert!(self.outside.exists(), "the link's target was removed");
    }
}

#[test]
fn list_and_clean_act_on_segments_only_and_never_on_a_live_one() {
    let dir = TempDir::new("dir");
    let live_path = dir.join("live");
    let dead_path = dir.join("dead");
    let mut live = Publisher::options()
        .capacity(64 * 1024)
        .create_path(&live_path)
        .unwrap();
    let mut reader = Subscriber::open_path(&live_path, StartAt::Beginning).unwrap();
    for seq in 1..=10u64 {
        live.publish(&seq.to_le_bytes()).unwrap();
    }
    dead_segment(&dead_path, 3);
    let foreign = add_foreign_files(&dir);
    let live_name = live_path.to_str().unwrap();
    let dead_name = dead_path.to_str().unwrap();

    // list: exactly the two segments, sorted by name, with the right liveness.
    let rows = list_json(&["--dir", dir.arg()]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (dead, alive) = (&rows[0], &rows[1]);
    assert_eq!(dead["name"], dead_name);
    assert_eq!(dead["path"], dead_name);
    assert_eq!(dead["producer_alive"], false);
    assert_eq!(dead["capacity"], 4096);
    assert_eq!(dead["next_seq"], 4);
    assert_eq!(dead["producer_pid"], u64::from(std::process::id()));
    assert!(dead["last_publish_unix_ns"].as_u64().unwrap() > 0);
    assert_eq!(alive["name"], live_name);
    assert_eq!(alive["producer_alive"], true);
    assert_eq!(alive["capacity"], 65536);
    assert_eq!(alive["next_seq"], 11);
    assert_eq!(alive["producer_pid"], u64::from(std::process::id()));

    // The table: a header and one aligned row per segment.
    let output = shmcast(&["list", "--dir", dir.arg()]);
    assert_ok(&output);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("NAME "), "{text}");
    assert!(lines[1].starts_with(dead_name) && lines[1].contains(" dead "));
    assert!(lines[2].starts_with(live_name) && lines[2].contains(" alive "));
    // Columns line up: every column starts where its header does.
    for header in ["CAPACITY", "PID", "PRODUCER", "LAST PUBLISH", "NEXT SEQ"] {
        let end = lines[0].find(header).unwrap() + header.len();
        let start = lines[0].find(header).unwrap();
        for row in &lines[1..] {
            let right_aligned = ["CAPACITY", "PID", "NEXT SEQ"].contains(&header);
            let at = if right_aligned { end - 1 } else { start };
            assert_ne!(row.as_bytes()[at], b' ', "{header} misaligned:\n{text}");
        }
    }

    // clean --dry-run: names the dead one, removes nothing.
    let output = shmcast(&["clean", "--dry-run", "--dir", dir.arg()]);
    assert_ok(&output);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let pid = std::process::id();
    let prefix = format!("would remove {dead_name} (producer pid {pid}, last publish ");
    assert!(
        lines[0].starts_with(&prefix) && lines[0].ends_with(" s ago)"),
        "{text}"
    );
    assert_eq!(
        lines[1],
        "would remove 1 stale segment, keep 1 with a live producer"
    );
    assert!(dead_path.exists() && live_path.exists());
    foreign.assert_intact(&dir);

    // clean: removes the dead one only.
    let output = shmcast(&["clean", "--dir", dir.arg()]);
    assert_ok(&output);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(&format!("removed {dead_name} (producer pid ")));
    assert_eq!(
        lines[1],
        "removed 1 stale segment, kept 1 with a live producer"
    );
    assert!(!dead_path.exists());
    assert!(live_path.exists());
    foreign.assert_intact(&dir);
    let rows = list_json(&["--dir", dir.arg()]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], live_name);

    // The live producer and its reader carry on.
    assert!(reader.producer_alive());
    live.publish(b"after clean").unwrap();
    let mut buf = Vec::new();
    for seq in 1..=10u64 {
        assert_eq!(reader.try_recv(&mut buf), Ok(seq));
        assert_eq!(buf, seq.to_le_bytes());
    }
    assert_eq!(reader.try_recv(&mut buf), Ok(11));
    assert_eq!(buf, b"after clean");
    let mut late = Subscriber::open_path(&live_path, StartAt::Newest).unwrap();
    assert_eq!(late.try_recv(&mut buf), Ok(11));

    // A second clean finds nothing more to do.
    let output = shmcast(&["clean", "--dir", dir.arg()]);
    assert_ok(&output);
    assert_eq!(
        stdout(&output),
        "removed 0 stale segments, kept 1 with a live producer\n"
    );
    foreign.assert_intact(&dir);
}

#[test]
fn an_empty_directory_and_a_missing_one() {
    let dir = TempDir::new("empty");
    let output = shmcast(&["list", "--dir", dir.arg()]);
    assert_ok(&output);
    assert_eq!(
        stdout(&output),
        format!("no shmcast segments in {}\n", dir.arg())
    );
    assert!(list_json(&["--dir", dir.arg()]).is_empty());
    let output = shmcast(&["clean", "--dir", dir.arg()]);
    assert_ok(&output);
    assert_eq!(
        stdout(&output),
        "removed 0 stale segments, kept 0 with a live producer\n"
    );

    let missing = dir.join("missing");
    for cmd in ["list", "clean"] {
        let output = shmcast(&[cmd, "--dir", missing.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("shmcast: error: cannot read the directory "),
            "{err}"
        );
    }
    // Usage errors are clap's: status 2.
    assert_eq!(shmcast(&["clean", "--force"]).status.code(), Some(2));
    assert_eq!(shmcast(&["list", "extra"]).status.code(), Some(2));
}

#[test]
fn the_default_directory_is_dev_shm_with_shm_names() {
    let live_name = format!("/{}", unique("shm-live"));
    let dead_name = format!("/{}", unique("shm-dead"));
    let _cleanup = (
        Cleanup(PathBuf::from(format!("/dev/shm{live_name}"))),
        Cleanup(PathBuf::from(format!("/dev/shm{dead_name}"))),
    );
    let _live = Publisher::options()
        .capacity(4096)
        .create(&live_name)
        .unwrap();
    drop(
        Publisher::options()
            .capacity(4096)
            .unlink_on_drop(false)
            .create(&dead_name)
            .unwrap(),
    );
    await_dead(&common::shm_path(&dead_name));

    let rows = list_json(&[]);
    let find = |name: &str| {
        let row = rows.iter().find(|r| r["name"] == name);
        row.unwrap_or_else(|| panic!("{name} not listed: {rows:?}"))
            .clone()
    };
    assert_eq!(find(&live_name)["producer_alive"], true);
    assert_eq!(find(&dead_name)["producer_alive"], false);
    assert_eq!(find(&dead_name)["path"], format!("/dev/shm{dead_name}"));
    assert_eq!(
        find(&dead_name)["last_publish_unix_ns"],
        serde_json::Value::Null
    );
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(
        names.windows(2).all(|w| w[0] <= w[1]),
        "not sorted: {names:?}"
    );

    // Dry run only: a real `clean` of the shared /dev/shm could remove other tests' segments.
    let output = shmcast(&["clean", "--dry-run"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(
        text.contains(&format!("would remove {dead_name} (producer pid ")),
        "{text}"
    );
    assert!(!text.contains(&live_name), "{text}");
    // The removal itself, of our own segment, through the library call `clean` uses.
    assert!(matches!(
        remove_stale_segment(format!("/dev/shm{dead_name}")),
        Ok(Removal::Removed { .. })
    ));
    assert!(matches!(
        remove_stale_segment(format!("/dev/shm{live_name}")),
        Ok(Removal::ProducerAlive { .. })
    ));
}

#[test]
fn inspect_shows_a_live_producer_that_never_published() {
    let dir = TempDir::new("inspect");
    let path = dir.join("seg");
    let publisher = Publisher::options()
        .capacity(4096)
        .create_path(&path)
        .unwrap();
    let output = shmcast(&["inspect", path.to_str().unwrap(), "--json"]);
    assert_ok(&output);
    let info: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(info["producer_alive"], true);
    assert_eq!(info["last_publish_unix_ns"], serde_json::Value::Null);
    let output = shmcast(&["inspect", path.to_str().unwrap()]);
    assert_ok(&output);
    let text = stdout(&output);
    let pid = std::process::id();
    assert!(text.contains(&format!("\nproducer        pid {pid}, alive (epoch 1)\n")));
    assert!(text.contains("\nlast publish    never\n"), "{text}");

    // A heartbeat counts as a sign of life; the producer's end makes it dead.
    publisher.heartbeat();
    drop(publisher);
    let dead = Publisher::options()
        .capacity(4096)
        .unlink_on_drop(false)
        .create_path(&path)
        .unwrap();
    dead.heartbeat();
    drop(dead);
    await_dead(&path);
    let output = shmcast(&["inspect", path.to_str().unwrap()]);
    assert_ok(&output);
    let text = stdout(&output);
    assert!(text.contains(&format!("\nproducer        pid {pid}, dead (epoch 1)\n")));
    let line = text
        .lines()
        .find(|l| l.starts_with("last publish"))
        .unwrap();
    assert!(
        line.contains(" UTC (") && line.ends_with(" s ago)"),
        "{line}"
    );
    assert!(line.starts_with("last publish    20"), "{line}");
}

#[test]
fn remove_stale_segment_leaves_everything_but_a_dead_producers_segment_alone() {
    let dir = TempDir::new("lib");
    let foreign = add_foreign_files(&dir);

    // A producer between creating its file and writing `magic` holds the lock: untouched.
    match remove_stale_segment(dir.join("creating")) {
        Err(Error::NotInitialized { .. }) => {}
        other => panic!("expected NotInitialized, got {other:?}"),
    }
    // So is a file nobody finished creating (no lock, no `magic`), and every foreign file.
    match remove_stale_segment(dir.join("unfinished")) {
        Err(Error::NotInitialized { .. }) => {}
        other => panic!("expected NotInitialized, got {other:?}"),
    }
    assert!(matches!(
        remove_stale_segment(dir.join("noise")),
        Err(Error::BadMagic { .. })
    ));
    assert!(matches!(
        remove_stale_segment(dir.join("bad-header")),
        Err(Error::InvalidHeader { .. })
    ));
    assert!(matches!(
        // An empty file that no producer is creating is truncated, not "being created".
        remove_stale_segment(dir.join("empty")),
        Err(Error::Truncated { .. })
    ));
    assert!(remove_stale_segment(dir.join("subdir")).is_err());
    // A link is refused, not followed: neither it nor its target goes.
    let err = remove_stale_segment(dir.join("link")).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    foreign.assert_intact(&dir);
    assert_eq!(
        remove_stale_segment(dir.join("nothing")).unwrap(),
        Removal::Gone
    );

    // A stale segment replaced by a new live producer before the cleaner acts: left alone.
    let path = dir.join("restarted");
    dead_segment(&path, 2);
    let mut restarted = Publisher::options()
        .capacity(4096)
        .create_path(&path)
        .unwrap();
    assert_eq!(
        remove_stale_segment(&path).unwrap(),
        Removal::ProducerAlive {
            pid: u64::from(std::process::id())
        }
    );
    assert_eq!(restarted.publish(b"still here").unwrap(), 1);

    // A reader of a removed stale segment still reads what was published, then learns the
    // producer is gone.
    let path = dir.join("stale");
    dead_segment(&path, 2);
    let mut reader = Subscriber::open_path(&path, StartAt::Beginning).unwrap();
    assert_eq!(
        remove_stale_segment(&path).unwrap(),
        Removal::Removed {
            pid: u64::from(std::process::id())
        }
    );
    assert!(!path.exists());
    let mut buf = Vec::new();
    assert_eq!(reader.try_recv(&mut buf), Ok(1));
    assert_eq!(reader.try_recv(&mut buf), Ok(2));
    assert_eq!(
        reader.recv(&mut buf),
        Err(shmcast::RecvError::ProducerGone { replaced: false })
    );
}

#[test]
fn concurrent_cleaners_remove_each_stale_segment_once() {
    let dir = TempDir::new("race");
    let _live = Publisher::options()
        .capacity(4096)
        .create_path(dir.join("live"))
        .unwrap();
    let names: Vec<String> = (0..40)
        .map(|i| {
            let path = dir.join(&format!("dead-{i:02}"));
            dead_segment(&path, 1);
            path.to_str().unwrap().to_owned()
        })
        .collect();
    let cleaners: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_shmcast"))
                .args(["clean", "--dir", dir.arg()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut removed = Vec::new();
    for cleaner in cleaners {
        let output = cleaner.wait_with_output().unwrap();
        assert_ok(&output);
        for line in stdout(&output).lines() {
            if let Some(rest) = line.strip_prefix("removed /") {
                if let Some((name, _)) = rest.split_once(" (producer pid ") {
                    removed.push(format!("/{name}"));
                }
            }
        }
    }
    removed.sort();
    assert_eq!(removed, names, "each stale segment removed exactly once");
    let rows = list_json(&["--dir", dir.arg()]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["producer_alive"], true);
}

/// Issue 18, item 11: a file name is shown with its control characters, other non-printable
/// characters, backslashes and bytes that are not UTF-8 escaped, so a hostile name can neither
/// clear the terminal nor forge a line of `list` or `clean`; JSON escapes it itself.
#[test]
fn hostile_names_are_escaped_in_list_and_clean() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("hostile-names");
    let staged = dir.join("staged");
    dead_segment(&staged, 2);
    let raw: &[u8] =
        b"evil\x1b[2J\nremoved FORGED (producer pid 1, last publish never)\\\xff\xe2\x80\xae";
    let hostile = dir.path().join(OsStr::from_bytes(raw));
    std::fs::rename(&staged, &hostile).unwrap();
    let shown = format!(
        "{}/evil\\x1b[2J\\nremoved FORGED (producer pid 1, last publish never)\\\\\\xff\\u{{202e}}",
        dir.arg()
    );
    let clean_text = |output: &Output| {
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8");
        assert!(!text.contains(['\x1b', '\u{202e}']), "{text:?}");
        text
    };

    let text = clean_text(&shmcast(&["list", "--dir", dir.arg()]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].starts_with(&format!("{shown}  ")), "{text}");

    let listed = list_json(&["--dir", dir.arg()]);
    assert_eq!(listed.len(), 1);
    let lossy = format!(
        "{}/evil\x1b[2J\nremoved FORGED (producer pid 1, last publish never)\\\u{fffd}\u{202e}",
        dir.arg()
    );
    assert_eq!(listed[0]["name"], lossy.as_str());
    assert_eq!(listed[0]["path"], lossy.as_str());

    let text = clean_text(&shmcast(&["clean", "--dry-run", "--dir", dir.arg()]));
    assert_eq!(
        text,
        format!(
            "would remove {shown} (producer pid {}, last publish 0 s ago)\n\
             would remove 1 stale segment, keep 0 with a live producer\n",
            std::process::id()
        )
    );
    let text = clean_text(&shmcast(&["clean", "--dir", dir.arg()]));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with(&format!("removed {shown} (")), "{text}");
    assert!(!hostile.exists());

    // In /dev/shm, where a file is shown as `/NAME`: only listed (other tests' segments live
    // there too).
    let name = format!("{}-\x1b[31m\n", unique("hostile"));
    let shm = Path::new("/dev/shm").join(&name);
    let _cleanup = Cleanup(shm.clone());
    dead_segment(&shm, 1);
    let text = clean_text(&shmcast(&["list"]));
    let shown = format!("/{}-\\x1b[31m\\n  ", name.trim_end_matches("-\x1b[31m\n"));
    assert_eq!(text.matches(&shown).count(), 1, "{text}");
}

#[test]
fn damaged_segments_are_listed_with_their_problem_and_dead_ones_cleaned() {
    // A dead producer's segment that grew after it was written: readers refuse it (size
    // mismatch), so it used to be neither listed nor cleaned.
    let dir = TempDir::new("cli-damaged");
    let grown = dir.join("grown");
    dead_segment(&grown, 3);
    let len = std::fs::metadata(&grown).unwrap().len();
    File::options()
        .write(true)
        .open(&grown)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let listed = shmcast(&["list", "--dir", dir_arg]);
    assert_ok(&listed);
    let text = stdout(&listed);
    assert!(
        text.contains("damaged") && text.contains("grown") && text.contains("dead"),
        "{text}"
    );
    let rows = list_json(&["--dir", dir_arg]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0]["damaged"].as_str().is_some(), "{rows:?}");
    assert_eq!(rows[0]["producer_alive"], false);

    let cleaned = shmcast(&["clean", "--dir", dir_arg]);
    assert_ok(&cleaned);
    assert!(
        stdout(&cleaned).contains("removed 1 stale segment"),
        "{}",
        stdout(&cleaned)
    );
    assert!(!grown.exists());
}
