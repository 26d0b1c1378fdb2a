//! A real nats-server on 127.0.0.1, the bridge's processes, a generated producer and verifying
//! readers, for the end-to-end tests. Every process is killed by its own handle when dropped.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmcast::{pattern, Publisher, RecvError, StartAt, Subscriber};

/// The nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on the PATH. Missing is a
/// failure, not a skip: CI installs it (.ci/run) and these tests are the bridge's evidence.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "NATS_SERVER_BIN={} is not a file", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "nats-server not found: set NATS_SERVER_BIN or put it on the PATH \
         (GOTOOLCHAIN=local go install github.com/nats-io/nats-server/v2@v2.15.3; .ci/run does)"
    );
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A nats-server process that can be killed and started again on the same port.
pub struct Server {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Starts a server on a free port; with `store`, JetStream with file storage there.
    pub fn start(store: Option<&Path>, log: PathBuf) -> Server {
        let port = free_port();
        let mut args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        if let Some(dir) = store {
            args.extend(["-js".into(), "-sd".into(), dir.display().to_string()]);
        }
        let mut s = Server {
            port,
            args,
            child: None,
            log,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log file");
        let child = Command::new(nats_server_bin())
            .args(&self.args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `shmcast-bridge` process whose `--json` counter lines are collected.
pub struct Bridge {
    child: Child,
    last: Arc<Mutex<Option<serde_json::Value>>>,
}

impl Bridge {
    /// Runs `shmcast-bridge ARGS --json --report-every 0.1`, its log lines into `log`.
    pub fn start(args: &[&str], log: &Path) -> Bridge {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("bridge log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shmcast-bridge"))
            .args(args)
            .args(["--json", "--report-every", "0.1"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start shmcast-bridge");
        let out = child.stdout.take().expect("stdout");
        let last = Arc::new(Mutex::new(None));
        let keep = Arc::clone(&last);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
                *keep.lock().unwrap() = Some(v);
            }
        });
        Bridge { child, last }
    }

    /// The latest value of counter `name` (0 before the first line).
    pub fn counter(&self, name: &str) -> u64 {
        self.last
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|v| v[name].as_u64())
            .unwrap_or(0)
    }

    /// The latest counter line.
    pub fn counters(&self) -> serde_json::Value {
        self.last.lock().unwrap().clone().unwrap_or_default()
    }

    /// Waits until counter `name` reaches `value`.
    pub fn wait_for(&self, name: &str, value: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.counter(name) < value {
            assert!(
                Instant::now() < deadline,
                "{name} stayed at {} < {value} for {within:?}; counters {}",
                self.counter(name),
                self.counters()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bridge {
    /// SIGTERM, so an importer removes its segment; SIGKILL if it has not ended after 3 s.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }
}

/// A producer thread publishing `count` generated payloads of `len` bytes at `rate` per second
/// into a new segment; the segment stays until [`Producer::stop`].
pub struct Producer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Producer {
    pub fn start(name: &str, capacity: u64, count: u64, len: usize, rate: f64) -> Producer {
        let mut publisher = Publisher::options()
            .capacity(capacity)
            .create(name)
            .expect("create the source segment");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut buf = vec![0u8; len];
            for seq in 1..=count {
                let due = start + Duration::from_secs_f64((seq - 1) as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                pattern::fill(seq, &mut buf);
                assert_eq!(publisher.publish(&buf).expect("publish"), seq);
            }
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Producer {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("producer thread");
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens segment `name`, waiting for it to exist.
pub fn open_when_there(name: &str) -> Subscriber {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Subscriber::open(name, StartAt::Beginning) {
            Ok(s) => return s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "segment {name} did not appear: {e}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// What a verifying reader saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub received: u64,
    pub lagged: u64,
}

/// Reads `sub` from the beginning until sequence number `last` is delivered or counted lost,
/// checking that every payload is the generated one of its sequence number and that sequence
/// numbers only go up (no duplicate is delivered).
pub fn verify_until(mut sub: Subscriber, last: u64, within: Duration) -> Read {
    let deadline = Instant::now() + within;
    let mut read = Read::default();
    let mut prev = 0;
    let mut buf = Vec::new();
    while sub.next_seq() <= last {
        match sub.recv_deadline(&mut buf, deadline) {
            Ok(seq) => {
                assert!(
                    seq > prev,
                    "seq {seq} after {prev}: delivered twice or out of order"
                );
                assert!(
                    pattern::matches(seq, &buf),
                    "payload of seq {seq} is not the generated one"
                );
                prev = seq;
                read.received += 1;
            }
            Err(RecvError::Lagged { missed }) => read.lagged += missed,
            Err(e) => panic!(
                "reading the imported segment: {e} after {read:?}, next seq {}",
                sub.next_seq()
            ),
        }
    }
    assert_eq!(read.received + read.lagged, last);
    read
}

/// Builds Go package `pkg` of the module in `module` into the temporary directory, once per
/// test process (the tests of one binary run in parallel and share it).
fn go_build(module: &Path, pkg: &str, name: &str) -> PathBuf {
    static BUILDS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = builds.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(pkg)
        .current_dir(module)
        .status()
        .expect("run go build (Go is needed for the Go reader and the Go example consumer)");
    assert!(
        status.success(),
        "go build {pkg} in {} failed",
        module.display()
    );
    builds.push((name.to_owned(), out.clone()));
    out
}

/// The Go reader's `shmcast-tail`.
pub fn go_tail() -> PathBuf {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../go-client");
    go_build(&module, "./cmd/shmcast-tail", "shmcast-tail-go")
}

/// The Go example consumer (shmcast-bridge/go-consumer).
pub fn go_consumer() -> PathBuf {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("go-consumer");
    go_build(&module, ".", "shmcast-bridge-go-consumer")
}

/// Starts the Go example consumer on `subject` until source sequence number `count`.
pub fn start_go_consumer(bin: &Path, url: &str, subject: &str, count: u64, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(bin)
        .args([
            "-nats",
            url,
            "-subject",
            subject,
            "-count",
            &count.to_string(),
        ])
        .args(["-verify", "-json", "-timeout", "90s"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start the Go example consumer")
}

/// Waits for the Go example consumer and returns its summary.
pub fn finish_go_consumer(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("Go example consumer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Go example consumer failed: {stdout}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout:?}: {e}"))
}

/// Starts the Go `shmcast-tail --verify` on `name` for `count` sequence numbers.
pub fn start_go_tail(bin: &Path, name: &str, count: u64) -> Child {
    Command::new(bin)
        .args([
            name,
            "--from",
            "beginning",
            "--count",
            &count.to_string(),
            "--verify",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Go shmcast-tail")
}

/// Waits for the Go tail and returns its `received=… lagged=… corrupt=…` summary.
pub fn finish_go_tail(child: Child) -> Read {
    let out = child.wait_with_output().expect("Go shmcast-tail");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Go shmcast-tail failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let field = |k: &str| -> u64 {
        line.split(' ')
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in the Go tail's summary {line:?}"))
    };
    assert_eq!(field("corrupt="), 0, "the Go reader found corrupt payloads");
    Read {
        received: field("received="),
        lagged: field("lagged="),
    }
}

/// A directory for one test's files, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("shmcast-bridge-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
