//! Lossless mode across processes: registered readers in other processes hold the producer
//! back and receive every message; one killed with `kill -9`, stopped with SIGSTOP, registering
//! and unregistering in a loop, or random bytes in the reader slots never wedge the producer
//! for longer than the documented bounds, and lossy readers keep exact accounts throughout.
//!
//! The producer is the test process itself (so it can assert on `try_publish`, `readers()` and
//! the time a blocked `publish` takes); the readers are this test binary re-executed with
//! `--exact child_process_entry` and `SHMCAST_LL_ROLE` set (without it that test does nothing),
//! as in `tests/multiprocess.rs`. A child prints lines tagged with [`MARK`] (`OPENED`,
//! `HOLDING`, `RESULT k=v …`) and waits for `go` on its standard input when told to hold.
//!
//! Every payload is `shmcast::pattern`'s, of a length drawn from 0..=1000 bytes, in rings of
//! 16 or 64 KiB, so padding records (a record that does not fit the rest of a lap) are common.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmcast::{layout, pattern, Error, Publisher, RecvError, StartAt, Subscriber, WaitStrategy};

mod common;
use common::{shm_name, shm_path};

/// The test that children run; it does nothing unless [`ROLE_VAR`] is set.
const CHILD_TEST: &str = "child_process_entry";
const ROLE_VAR: &str = "SHMCAST_LL_ROLE";
const NAME_VAR: &str = "SHMCAST_LL_NAME";
const ARGS_VAR: &str = "SHMCAST_LL_ARGS";
/// Prefix of every line a child prints for the parent (libtest prints other lines too).
const MARK: &str = "@shmcast-ll";
/// Longest message: lengths are drawn from `0..=MAX_LEN`.
const MAX_LEN: usize = 1000;
/// How long the parent waits for any one line from a child before failing the test.
const LINE_WAIT: Duration = Duration::from_secs(45);
/// How long a child runs at most; children give up by themselves so none outlives a test.
const CHILD_DEADLINE: Duration = Duration::from_secs(90);
/// Bound on how long a dead reader may keep holding the producer (its probe runs every 5 ms).
const RELEASE_BOUND: Duration = Duration::from_secs(2);

/// The length of message `seq`.
fn message_len(seq: u64) -> usize {
    pattern::length(seq, 0, MAX_LEN)
}

/// The generated payload of message `seq`, in `buf`.
fn payload(seq: u64, buf: &mut Vec<u8>) -> &[u8] {
    buf.resize(message_len(seq), 0);
    pattern::fill(seq, buf);
    buf
}

/// `k=v` pairs, as children print them and receive their arguments.
struct Fields(String);

impl Fields {
    fn text(&self, key: &str) -> Option<&str> {
        self.0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    fn num(&self, key: &str) -> u64 {
        self.text(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {key} in {:?}", self.0))
    }
}

// ======================================================================= child processes

/// Entry point of every child process; a no-op in a normal test run.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let name = std::env::var(NAME_VAR).expect("the segment name");
    let args = Fields(std::env::var(ARGS_VAR).unwrap_or_default());
    match role.as_str() {
        "reader" => reader(&name, &args),
        "churn" => churn(&name, &args),
        other => panic!("unknown role {other:?}"),
    }
}

fn report(line: &str) {
    println!("{MARK} {line}");
}

/// Blocks until the parent sends a line (or goes away).
fn wait_for_go() {
    let _ = std::io::stdin().read_line(&mut String::new());
}

/// What a reader has seen so far.
struct Tally {
    first: u64,
    /// The sequence number the next message must have.
    next: u64,
    received: u64,
    missed: u64,
    evicted: u64,
    /// `Lagged` reports while the subscriber was still registered (before any `Evicted`).
    registered_lags: u64,
    /// Messages whose sequence number was not the expected one.
    gaps: u64,
    /// Messages whose payload or length is not the generated one.
    corrupt: u64,
}

impl Tally {
    fn new(first: u64) -> Self {
        Tally {
            first,
            next: first,
            received: 0,
            missed: 0,
            evicted: 0,
            registered_lags: 0,
            gaps: 0,
            corrupt: 0,
        }
    }

    /// Accounts for one read by a subscriber that was `registered` before it; `true` if the
    /// read delivered something (a message or a notice).
    fn record(&mut self, outcome: Result<u64, RecvError>, buf: &[u8], registered: bool) -> bool {
        match outcome {
            Ok(seq) => {
                self.gaps += u64::from(seq != self.next);
                self.corrupt +=
                    u64::from(buf.len() != message_len(seq) || !pattern::matches(seq, buf));
                self.received += 1;
                self.next = seq + 1;
            }
            Err(RecvError::Lagged { missed }) => {
                assert!(missed > 0, "a lap that lost nothing was reported");
                self.missed += missed;
                self.next += missed;
                self.registered_lags += u64::from(registered);
            }
            Err(RecvError::Evicted) => self.evicted += 1,
            Err(RecvError::Empty | RecvError::Timeout) => return false,
            Err(e) => panic!("{e} after {}", self.summary()),
        }
        true
    }

    fn summary(&self) -> String {
        format!(
            "first={} received={} missed={} evicted={} registered_lags={} gaps={} corrupt={}",
            self.first,
            self.received,
            self.missed,
            self.evicted,
            self.registered_lags,
            self.gaps,
            self.corrupt
        )
    }
}

/// The first message a subscriber opened at `start` accounts for: 1 from the beginning (a
/// registration that had to skip what was lost reports that as `Lagged` first, though
/// `next_seq` already points past it), else its `next_seq`.
fn first_of(sub: &Subscriber, start: StartAt) -> u64 {
    if start == StartAt::Beginning {
        1
    } else {
        sub.next_seq()
    }
}

/// A reader: `registered=0|1 wait=W start=S count=N [hold=K]`. Reads until every message up
/// to `count` was received or reported missed; with `hold`, stops after `K` messages, prints
/// `HOLDING` and waits for a line on standard input first.
fn reader(name: &str, args: &Fields) {
    let registered = args.num("registered") == 1;
    let wait: WaitStrategy = args.text("wait").unwrap_or("block").parse().unwrap();
    let start: StartAt = args.text("start").unwrap_or("beginning").parse().unwrap();
    let count = args.num("count");
    let mut hold = args.text("hold").map(|_| args.num("hold"));
    let mut sub = Subscriber::options()
        .lossless(registered)
        .start(start)
        .wait_strategy(wait)
        .open(name)
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    let mut tally = Tally::new(first_of(&sub, start));
    report(&format!(
        "OPENED slot={} first={}",
        sub.slot().map_or(u64::MAX, |s| s as u64),
        tally.first
    ));
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut buf = Vec::new();
    while tally.next <= count {
        if hold == Some(tally.received) {
            report("HOLDING");
            wait_for_go();
            hold = None;
        }
        let was_registered = sub.is_registered();
        let outcome = sub.recv_timeout(&mut buf, Duration::from_millis(100));
        tally.record(outcome, &buf, was_registered);
        assert!(Instant::now() < deadline, "gave up: {}", tally.summary());
    }
    assert_eq!(sub.try_recv(&mut buf), Err(RecvError::Empty));
    report(&format!("RESULT {}", tally.summary()));
}

/// Registers and unregisters `rounds` times (one to three subscribers at a time, every start,
/// reading a few messages each), then keeps two registered subscribers (at `oldest` and
/// `next`), prints `CHURNED first0=… first1=…`, and reads both up to `count`.
fn churn(name: &str, args: &Fields) {
    let rounds = args.num("rounds");
    let count = args.num("count");
    let register = |start: StartAt| {
        Subscriber::options()
            .lossless(true)
            .start(start)
            .open(name)
            .unwrap_or_else(|e| panic!("register at {start:?}: {e}"))
    };
    let starts = [
        StartAt::Oldest,
        StartAt::Newest,
        StartAt::Next,
        StartAt::Beginning,
    ];
    let mut buf = Vec::new();
    let mut registrations = 0;
    for round in 0..rounds {
        let mut subs: Vec<(Subscriber, Tally, StartAt)> = (0..1 + round % 3)
            .map(|i| {
                let start = starts[((round + i) % 4) as usize];
                let sub = register(start);
                let tally = Tally::new(first_of(&sub, start));
                (sub, tally, start)
            })
            .collect();
        registrations += subs.len();
        for (sub, tally, start) in &mut subs {
            for _ in 0..round % 4 {
                if !tally.record(sub.try_recv(&mut buf), &buf, true) {
                    break;
                }
            }
            let what = format!("round {round}, {start:?}: {}", tally.summary());
            assert_eq!(
                (tally.gaps, tally.corrupt, tally.evicted),
                (0, 0, 0),
                "{what}"
            );
            // Only a `beginning` registrant may be told (once) that it lost what came before.
            assert!(tally.missed == 0 || *start == StartAt::Beginning, "{what}");
            assert_eq!(tally.registered_lags, u64::from(tally.missed > 0), "{what}");
        }
        if round % 2 == 1 {
            subs.reverse();
        }
        drop(subs);
    }
    let mut survivors: Vec<(Subscriber, Tally)> = [StartAt::Oldest, StartAt::Next]
        .into_iter()
        .map(|start| {
            let sub = register(start);
            let tally = Tally::new(sub.next_seq());
            (sub, tally)
        })
        .collect();
    report(&format!(
        "CHURNED registrations={registrations} first0={} first1={}",
        survivors[0].1.first, survivors[1].1.first
    ));
    let deadline = Instant::now() + CHILD_DEADLINE;
    while survivors.iter().any(|(_, t)| t.next <= count) {
        let mut progressed = false;
        for (sub, tally) in &mut survivors {
            if tally.next <= count {
                progressed |= tally.record(sub.try_recv(&mut buf), &buf, true);
            }
        }
        if !progressed {
            assert!(Instant::now() < deadline, "survivors gave up");
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    report(&format!(
        "RESULT {} | {}",
        survivors[0].1.summary().replace('=', "0="),
        survivors[1].1.summary().replace('=', "1=")
    ));
}

// ======================================================================= parent side

/// Keeps the tests from oversubscribing the two cores (and from timing each other).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process of this test binary. Dropping it kills it if it is still running.
struct Kid {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Kid {
    fn spawn(label: &str, role: &str, name: &str, args: &str) -> Kid {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .env(NAME_VAR, name)
            .env(ARGS_VAR, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, tagged)) = line.split_once(MARK) {
                    let _ = tx.send(tagged.trim().to_owned());
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Kid {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// A `reader` child (see [`reader`] for `args`).
    fn reader(label: &str, name: &str, args: &str) -> Kid {
        Kid::spawn(label, "reader", name, args)
    }

    fn pid(&self) -> u64 {
        u64::from(self.child.id())
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} {}: {e}", self.label));
    }

    /// `kill -9`, and waits until it is gone (so the kernel has released its locks).
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Kills the child and fails the test with `why` and what the child wrote to stderr.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        panic!(
            "{}: {why}\n--- its stderr:\n{}",
            self.label,
            stderr.unwrap_or_default()
        );
    }

    /// The child's next tagged line, which must start with `key`: its fields.
    fn expect(&mut self, key: &str) -> Fields {
        match self.lines.recv_timeout(LINE_WAIT) {
            Ok(line) => self.check(line, key),
            Err(e) => self.fail(&format!("no {key} line ({e})")),
        }
    }

    /// Like [`Self::expect`], without waiting: `None` if no line has come yet.
    fn poll(&mut self, key: &str) -> Option<Fields> {
        match self.lines.try_recv() {
            Ok(line) => Some(self.check(line, key)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => self.fail(&format!("ended without {key}")),
        }
    }

    fn check(&mut self, line: String, key: &str) -> Fields {
        match line.strip_prefix(key) {
            Some(rest) => Fields(rest.to_owned()),
            None => self.fail(&format!("expected {key}, got {line:?}")),
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to a child");
        stdin.flush().expect("flush");
    }

    /// Waits for `RESULT` and a successful exit; returns the result.
    fn finish(mut self) -> Fields {
        let result = self.expect("RESULT");
        let status = self.child.wait().expect("wait");
        if !status.success() {
            self.fail(&format!("exited with {status}"));
        }
        eprintln!("{}: {}", self.label, result.0);
        result
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A lossless producer on a fresh segment (removed with the publisher, or by the test's guard).
fn lossless(name: &str, capacity: u64, max_block: Option<Duration>) -> Publisher {
    Publisher::options()
        .capacity(capacity)
        .lossless(true)
        .max_block(max_block)
        .create(name)
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

/// Publishes the next messages up to and including `last`, waiting for readers as needed.
fn publish_through(publisher: &mut Publisher, last: u64, buf: &mut Vec<u8>) {
    for seq in publisher.next_seq()..=last {
        assert_eq!(publisher.publish(payload(seq, buf)).unwrap(), seq);
    }
}

/// Publishes with `try_publish` until a registered reader holds the producer back; returns
/// that reader's slot and pid.
fn publish_until_blocked(publisher: &mut Publisher, buf: &mut Vec<u8>) -> (usize, u64) {
    loop {
        let seq = publisher.next_seq();
        match publisher.try_publish(payload(seq, buf)) {
            Ok(published) => assert_eq!(published, seq),
            Err(Error::Backpressure { slot, pid, .. }) => return (slot, pid),
            Err(e) => panic!("try_publish {seq}: {e}"),
        }
        assert!(seq < 1_000_000, "nobody ever held the producer back");
    }
}

/// A registered reader child that reads `hold` messages and then stops, holding the producer
/// (once it has published that many) until it is told `go`. Returns it with its slot.
fn hold_producer(
    name: &str,
    publisher: &mut Publisher,
    buf: &mut Vec<u8>,
    count: u64,
) -> (Kid, usize) {
    const HOLD: u64 = 10;
    let mut kid = Kid::reader(
        "holder",
        name,
        &format!("registered=1 wait=block start=beginning count={count} hold={HOLD}"),
    );
    let slot = kid.expect("OPENED").num("slot") as usize;
    assert_eq!(publisher.wait_for_readers(1, Some(LINE_WAIT)).unwrap(), 1);
    publish_through(publisher, HOLD, buf);
    kid.expect("HOLDING");
    let (held_by, pid) = publish_until_blocked(publisher, buf);
    assert_eq!(
        (held_by, pid),
        (slot, kid.pid()),
        "Backpressure names the holder"
    );
    (kid, slot)
}

/// The `u32` at `offset` of the segment `name`'s file.
fn segment_u32(name: &str, offset: usize) -> u32 {
    let file = std::fs::File::open(shm_path(name)).expect("open the segment file");
    let mut bytes = [0u8; 4];
    file.read_exact_at(&mut bytes, offset as u64)
        .expect("read the segment file");
    u32::from_le_bytes(bytes)
}

/// The segment's `evictions` count, as a subscriber reads it.
fn evictions(name: &str) -> u64 {
    Subscriber::open(name, StartAt::Oldest)
        .expect("open a probe subscriber")
        .info()
        .evictions
}

/// Asserts that a registered reader received every message from `first` to `count`, intact,
/// in order, with no notice.
fn assert_lossless(label: &str, result: &Fields, suffix: &str, first: u64, count: u64) {
    let get = |key: &str| result.num(&format!("{key}{suffix}"));
    assert_eq!(get("first"), first, "{label}: {}", result.0);
    for key in ["missed", "evicted", "registered_lags", "gaps", "corrupt"] {
        assert_eq!(get(key), 0, "{label}: {key} in {}", result.0);
    }
    assert_eq!(get("received"), count - first + 1, "{label}: {}", result.0);
}

/// Asserts that a lossy (or evicted) reader from the beginning accounted for all `count`
/// messages exactly, each it received intact and in order.
fn assert_accounted(label: &str, result: &Fields, count: u64) {
    assert_eq!(
        result.num("received") + result.num("missed"),
        count,
        "{label}: received + missed != published: {}",
        result.0
    );
    assert_eq!(
        (result.num("gaps"), result.num("corrupt")),
        (0, 0),
        "{label}: {}",
        result.0
    );
}

// ======================================================================= the tests

/// How many of messages `1..=count` need a padding record in a ring of `capacity` bytes
/// (docs/LAYOUT.md, "Records": a record that does not fit the rest of a lap).
fn padding_records(count: u64, capacity: u64) -> u64 {
    let (mut tail, mut pads) = (0, 0);
    for seq in 1..=count {
        let span = layout::record_span(message_len(seq) as u64);
        if tail % capacity + span > capacity {
            pads += 1;
            tail = tail.next_multiple_of(capacity);
        }
        tail += span;
    }
    pads
}

/// One lossless producer, three registered reader processes (spinning, blocking in the kernel,
/// backing off) and two lossy ones, 300 000 messages (200 000 in a debug build) through a
/// 64 KiB ring, thousands of them after a padding record: every registered reader receives
/// every message, in order and intact, without a single notice; the lossy readers account for
/// every message exactly.
#[test]
fn registered_readers_in_other_processes_receive_every_message() {
    const N: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        300_000
    };
    const CAPACITY: u64 = 64 * 1024;
    let pads = padding_records(N, CAPACITY);
    assert!(pads > N / 200, "only {pads} records straddle the wrap");
    let _serial = serial();
    let (name, _guard) = shm_name("ll-mp-all");
    let mut publisher = lossless(&name, CAPACITY, None);
    let mut registered = Vec::new();
    for wait in ["spin", "block", "backoff"] {
        let args = format!("registered=1 wait={wait} start=beginning count={N}");
        registered.push(Kid::reader(&format!("registered {wait}"), &name, &args));
    }
    let mut lossy = Vec::new();
    for wait in ["block", "backoff"] {
        let args = format!("registered=0 wait={wait} start=beginning count={N}");
        lossy.push(Kid::reader(&format!("lossy {wait}"), &name, &args));
    }
    for kid in registered.iter_mut().chain(&mut lossy) {
        kid.expect("OPENED");
    }
    assert_eq!(publisher.wait_for_readers(3, Some(LINE_WAIT)).unwrap(), 3);
    let started = Instant::now();
    publish_through(&mut publisher, N, &mut Vec::new());
    eprintln!(
        "{N} messages ({pads} after a padding record) published in {:?}",
        started.elapsed()
    );
    for kid in registered {
        let label = kid.label.clone();
        assert_lossless(&label, &kid.finish(), "", 1, N);
    }
    for kid in lossy {
        let label = kid.label.clone();
        assert_accounted(&label, &kid.finish(), N);
    }
    assert_eq!(evictions(&name), 0);
}

/// A registered reader that stopped reading holds a producer that never evicts (`max_block`
/// `None`): `try_publish` names its slot and pid, and a `publish` sleeps. `kill -9` of the
/// reader releases the producer within a bound, counts an eviction and frees the slot.
#[test]
fn a_killed_registered_reader_releases_the_blocked_producer() {
    let _serial = serial();
    let (name, _guard) = shm_name("ll-mp-kill");
    let mut publisher = lossless(&name, 16 * 1024, None);
    let mut buf = Vec::new();
    let (holder, slot) = hold_producer(&name, &mut publisher, &mut buf, u64::MAX);
    let blocked_at = publisher.next_seq();
    let err = publisher
        .publish_timeout(payload(blocked_at, &mut buf), Duration::from_millis(50))
        .unwrap_err();
    assert!(
        matches!(err, Error::Backpressure { slot: s, .. } if s == slot),
        "{err}"
    );
    assert_eq!(evictions(&name), 0);

    let (published, released_after) = std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let seq = publisher.publish(payload(blocked_at, &mut buf));
            (seq, Instant::now())
        });
        // The producer announces that it sleeps waiting for a reader (`producer_blocked`).
        let deadline = Instant::now() + RELEASE_BOUND;
        while segment_u32(&name, layout::PRODUCER_BLOCKED) == 0 {
            assert!(Instant::now() < deadline, "the producer never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !blocked.is_finished(),
            "publish returned while the reader held it"
        );
        let killed = Instant::now();
        holder.signal(Signal::SIGKILL);
        let (seq, at) = blocked.join().expect("the publishing thread");
        (seq, at.duration_since(killed))
    });
    eprintln!("the producer resumed {released_after:?} after kill -9");
    assert_eq!(published.unwrap(), blocked_at);
    assert!(
        released_after < RELEASE_BOUND,
        "the producer resumed only {released_after:?} after the reader was killed"
    );
    assert_eq!(evictions(&name), 1, "the dead reader's slot was reclaimed");
    assert!(publisher.readers().is_empty(), "{:?}", publisher.readers());
    // The slot is free again: the next registration gets it, and nothing holds the producer.
    let again = Subscriber::options().lossless(true).open(&name).unwrap();
    assert_eq!(again.slot(), Some(slot));
    drop(again);
    for _ in 0..1000 {
        let seq = publisher.next_seq();
        publisher.try_publish(payload(seq, &mut buf)).unwrap();
    }
}

/// A registered reader stopped with SIGSTOP holds the producer for `max_block` (200 ms), then
/// is evicted and the producer goes on; resumed, it is told `Evicted` exactly once and reads on
/// as a lossy reader with exact counts, while the other registered readers lose nothing.
#[test]
fn a_stopped_registered_reader_is_evicted_after_max_block_and_reads_on_lossy() {
    const N: u64 = 20_000;
    const MAX_BLOCK: Duration = Duration::from_millis(200);
    let _serial = serial();
    let (name, _guard) = shm_name("ll-mp-stop");
    let mut publisher = lossless(&name, 16 * 1024, Some(MAX_BLOCK));
    let mut buf = Vec::new();
    let reader = |label: &str, wait: &str| {
        let args = format!("registered=1 wait={wait} start=beginning count={N}");
        Kid::reader(label, &name, &args)
    };
    let mut victim = reader("stopped", "block");
    let mut others = [
        reader("registered spin", "spin"),
        reader("registered backoff", "backoff"),
    ];
    let victim_slot = victim.expect("OPENED").num("slot") as usize;
    for kid in &mut others {
        kid.expect("OPENED");
    }
    assert_eq!(publisher.wait_for_readers(3, Some(LINE_WAIT)).unwrap(), 3);
    publish_through(&mut publisher, N / 4, &mut buf);

    victim.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    let mut longest = Duration::ZERO;
    while !publisher
        .readers()
        .iter()
        .any(|r| r.slot == victim_slot && r.evicted)
    {
        assert!(
            publisher.next_seq() < N / 2,
            "the stopped reader was never evicted"
        );
        let started = Instant::now();
        let seq = publisher.next_seq();
        publisher.publish(payload(seq, &mut buf)).unwrap();
        longest = longest.max(started.elapsed());
    }
    let evicted_after = stopped.elapsed();
    eprintln!("evicted {evicted_after:?} after SIGSTOP; the longest publish took {longest:?}");
    assert!(longest >= MAX_BLOCK, "held back only {longest:?}");
    assert!(longest < MAX_BLOCK * 20, "held back for {longest:?}");
    assert_eq!(evictions(&name), 1);
    // Lap the stopped reader many times over (a 16 KiB ring holds ~30 such messages).
    let lapped = publisher.next_seq() + 2000;
    publish_through(&mut publisher, lapped, &mut buf);
    victim.signal(Signal::SIGCONT);
    publish_through(&mut publisher, N, &mut buf);

    let result = victim.finish();
    assert_accounted("stopped", &result, N);
    // Exactly one notice. (Its `registered_lags` is sometimes 1: a `Lagged` before the
    // `Evicted`; see `an_evicted_and_lapped_reader_is_told_evicted_before_lagged`.)
    assert_eq!(result.num("evicted"), 1, "{}", result.0);
    assert!(result.num("missed") > 0, "{}", result.0);
    for kid in others {
        let label = kid.label.clone();
        assert_lossless(&label, &kid.finish(), "", 1, N);
    }
    assert_eq!(evictions(&name), 1, "only the stopped reader was evicted");
}

/// While one registered reader holds the producer (not reading; `max_block` `None`), another
/// process registers and unregisters hundreds of subscribers: the producer stays held by that
/// reader throughout (`try_publish` and `publish_timeout` keep naming it), nothing panics, and
/// once the reader reads on, it and the subscribers still registered at the end receive every
/// message from where they registered.
#[test]
fn registration_churn_never_releases_a_producer_held_by_a_reader() {
    const N: u64 = 20_000;
    const ROUNDS: u64 = 300;
    let _serial = serial();
    let (name, _guard) = shm_name("ll-mp-churn");
    let mut publisher = lossless(&name, 16 * 1024, None);
    let mut buf = Vec::new();
    let (mut holder, slot) = hold_producer(&name, &mut publisher, &mut buf, N);
    let pid = holder.pid();
    let blocked_at = publisher.next_seq();

    let mut churn = Kid::spawn(
        "churn",
        "churn",
        &name,
        &format!("rounds={ROUNDS} count={N}"),
    );
    let mut checks = 0u64;
    let churned = loop {
        if let Some(fields) = churn.poll("CHURNED") {
            break fields;
        }
        let outcome = if checks % 8 == 7 {
            publisher.publish_timeout(payload(blocked_at, &mut buf), Duration::from_millis(3))
        } else {
            publisher.try_publish(payload(blocked_at, &mut buf))
        };
        match outcome {
            Err(Error::Backpressure {
                slot: s, pid: p, ..
            }) => assert_eq!((s, p), (slot, pid), "held by someone else"),
            Ok(seq) => panic!("the producer published {seq} while the holder held it"),
            Err(e) => panic!("{e}"),
        }
        checks += 1;
        std::thread::sleep(Duration::from_micros(50));
    };
    assert!(churned.num("registrations") >= ROUNDS, "{}", churned.0);
    assert_eq!(publisher.next_seq(), blocked_at);
    assert!(publisher.readers().len() == 3, "{:?}", publisher.readers());
    eprintln!(
        "{} registrations, {checks} checks that the producer was still held",
        churned.num("registrations")
    );

    holder.say("go");
    publish_through(&mut publisher, N, &mut buf);
    assert_lossless("holder", &holder.finish(), "", 1, N);
    let result = churn.finish();
    // The `oldest` survivor starts where the holder held the producer back, or later.
    let first0 = churned.num("first0");
    assert!(first0 <= blocked_at, "{}", churned.0);
    assert_eq!(churned.num("first1"), blocked_at, "{}", churned.0);
    assert_lossless("survivor (oldest)", &result, "0", first0, N);
    assert_lossless("survivor (next)", &result, "1", churned.num("first1"), N);
    assert_eq!(evictions(&name), 0);
}

/// A writer with write access puts random bytes into the whole subscriber area the lossless
/// words and slots live in (`0x1008..0x2000`: wake-up words, `reg_gen`, every slot), six times
/// while the producer publishes (`max_block` 200 ms), each time making one or two slots look
/// like `ACTIVE` readers far behind; it holds the lock of the first, as a live squatter would,
/// and not of the second. Nothing panics or hangs: the producer reclaims an unlocked slot as a
/// dead reader's within its probe interval, evicts a locked one after `max_block`, and so
/// finishes within those bounds; a lossy reader accounts for every message.
#[test]
fn random_bytes_in_the_reader_slots_cost_the_producer_at_most_max_block_per_slot() {
    const N: u64 = 100_000;
    const BURSTS: u64 = 6;
    const MAX_BLOCK: Duration = Duration::from_millis(200);
    let _serial = serial();
    let (name, _guard) = shm_name("ll-mp-random");
    let mut publisher = lossless(&name, 64 * 1024, Some(MAX_BLOCK));
    let mut lossy = Kid::reader(
        "lossy",
        &name,
        &format!("registered=0 wait=backoff start=beginning count={N}"),
    );
    lossy.expect("OPENED");
    let progress = AtomicU64::new(0);
    let started = Instant::now();
    let (longest, hostile) = std::thread::scope(|s| {
        let hostile = s.spawn(|| {
            let mut hostile = Hostile::open(&name);
            for burst in 1..=BURSTS {
                while progress.load(Ordering::Relaxed) < N * burst / (BURSTS + 1) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                hostile.scribble();
            }
            hostile
        });
        let mut buf = Vec::new();
        let mut longest = Duration::ZERO;
        for seq in 1..=N {
            let one = Instant::now();
            assert_eq!(publisher.publish(payload(seq, &mut buf)).unwrap(), seq);
            longest = longest.max(one.elapsed());
            progress.store(seq, Ordering::Relaxed);
        }
        (longest, hostile.join().expect("the hostile writer"))
    });
    let took = started.elapsed();
    let (squatted, holding) = (hostile.squatted, hostile.holding);
    eprintln!(
        "{N} messages in {took:?} (longest publish {longest:?}); {holding} slots held the \
         producer back, {squatted} of them locked"
    );
    // Each slot made to look far behind is cut loose once; nothing else is.
    assert_eq!(evictions(&name), holding);
    // A locked one only after `max_block`: each costs that, one after another.
    assert!(took >= MAX_BLOCK * squatted as u32, "{took:?}");
    // One burst costs one `max_block` and a probe interval or so; allow for a noisy machine.
    assert!(longest < MAX_BLOCK * 10, "one publish took {longest:?}");
    assert!(took < Duration::from_secs(30), "publishing took {took:?}");
    assert_accounted("lossy", &lossy.finish(), N);
}

/// The hostile writer of the test above: a read-write descriptor of the segment file, and
/// another whose locks on slot bytes make it the live owner of those slots.
struct Hostile {
    file: std::fs::File,
    locks: Option<std::fs::File>,
    path: std::path::PathBuf,
    rng: u64,
    /// Slots made to hold the producer back so far, and how many of them were locked.
    holding: u64,
    squatted: u64,
}

impl Hostile {
    fn open(name: &str) -> Self {
        let path = shm_path(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open the segment read-write");
        Hostile {
            file,
            locks: None,
            path,
            rng: u64::from(std::process::id()) ^ 0x5EED,
            holding: 0,
            squatted: 0,
        }
    }

    fn next(&mut self) -> u64 {
        pattern::splitmix64(&mut self.rng)
    }

    /// One burst of random bytes over `0x1008..0x2000`, with one or two slots made `ACTIVE`
    /// (some generation) at a position far behind the producer, the first of them locked.
    /// The slots are written before the words below them, `reg_gen` among them, as a
    /// registration would write them: see
    /// [`a_slot_freed_without_a_reg_gen_change_releases_the_producer`] for a producer that
    /// does not notice a slot that changed under an unchanged `reg_gen`.
    fn scribble(&mut self) {
        const START: usize = layout::GATE_WAKE;
        const END: usize = (layout::SUBSCRIBER_AREA + layout::SUBSCRIBER_AREA_SIZE) as usize;
        let mut words: Vec<u64> = (START..END).step_by(8).map(|_| self.next()).collect();
        let index = |slot: usize, field: usize| (slot_offset(slot) + field - START) / 8;
        let slots = layout::MAX_READER_SLOTS as usize;
        // A random `pos` is almost surely far past the producer, where the clamp makes it hold
        // nothing back: make sure, so that the counts are exact.
        for slot in 0..slots {
            words[index(slot, layout::slot::POS)] |= 1 << 62;
        }
        let holding = 1 + self.next() % 2;
        let first = (self.next() % slots as u64) as usize;
        // The previous burst's locks go; the new one is taken before its slot looks alive.
        self.locks = None;
        let locks = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .expect("open the segment for locks");
        write_lock_byte(&locks, slot_offset(first));
        self.locks = Some(locks);
        for k in 0..holding as usize {
            let slot = (first + k) % slots;
            words[index(slot, layout::slot::STATE)] = (self.next() << 2) | 1;
            words[index(slot, layout::slot::POS)] = self.next() % 4096 * 8;
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let split = layout::SLOTS - START;
        self.file
            .write_all_at(&bytes[split..], layout::SLOTS as u64)
            .expect("write the slots");
        self.file
            .write_all_at(&bytes[..split], START as u64)
            .expect("write the wake-up words and reg_gen");
        self.holding += holding;
        self.squatted += 1;
    }
}

/// Where slot `slot` starts in the segment file (its first byte is its owner's lock).
fn slot_offset(slot: usize) -> usize {
    layout::SLOTS + slot * layout::SLOT_SIZE
}

/// Takes an open-file-description write lock on byte `offset` of `file`, as a registered
/// reader does on its slot's byte (docs/LAYOUT.md, "Slot lock").
fn write_lock_byte(file: &std::fs::File, offset: usize) {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    use std::os::fd::AsRawFd;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: offset as libc::off_t,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)).expect("lock a slot byte");
}

/// A registered reader killed between the two steps of unregistering (the compare-and-swap of
/// its slot to `FREE`, then the increment of `reg_gen`) leaves its slot `FREE` under an
/// unchanged `reg_gen`, and its lock released. The producer it held must go on: at once, its
/// reader being dead, and within `max_block` at worst. The interrupted unregistration is
/// reproduced here by writing the `FREE` state word, then killing the reader.
#[test]
fn a_slot_freed_without_a_reg_gen_change_releases_the_producer() {
    let _serial = serial();
    let (name, _guard) = shm_name("ll-mp-stale");
    let mut publisher = lossless(&name, 16 * 1024, Some(Duration::from_millis(200)));
    let mut buf = Vec::new();
    let (mut holder, slot) = hold_producer(&name, &mut publisher, &mut buf, u64::MAX);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&name))
        .expect("open the segment read-write");
    let at = (slot_offset(slot) + layout::slot::STATE) as u64;
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, at).unwrap();
    let free = u64::from_le_bytes(word) & !3;
    file.write_all_at(&free.to_le_bytes(), at).unwrap();
    holder.kill9();
    assert!(publisher.readers().is_empty(), "{:?}", publisher.readers());
    let seq = publisher.next_seq();
    let started = Instant::now();
    let outcome = publisher.publish_timeout(payload(seq, &mut buf), RELEASE_BOUND);
    assert!(
        outcome.is_ok(),
        "after {:?} the producer is still held by slot {slot}, which is FREE and whose reader \
         is dead: {outcome:?}",
        started.elapsed()
    );
}

/// The reader the SIGSTOP test above evicts is told `Lagged` (while `is_registered()` still
/// says `true`) before it is told `Evicted`, although `RecvError::Evicted` promises the notice
/// first and "a later `RecvError::Lagged`" for what was lost. The same in one process, with no
/// timing involved: a registered reader that never read is evicted and lapped; its first read
/// must be the eviction notice.
#[test]
fn an_evicted_and_lapped_reader_is_told_evicted_before_lagged() {
    let _serial = serial();
    let (name, _guard) = shm_name("ll-mp-order");
    let mut publisher = lossless(&name, 16 * 1024, Some(Duration::from_millis(100)));
    let mut stuck = Subscriber::options()
        .lossless(true)
        .start(StartAt::Beginning)
        .open(&name)
        .unwrap();
    let mut buf = Vec::new();
    publish_through(&mut publisher, 2000, &mut buf);
    assert_eq!(evictions(&name), 1);
    let first = stuck.try_recv(&mut buf);
    assert_eq!(
        first,
        Err(RecvError::Evicted),
        "the first read of an evicted reader (registered: {})",
        stuck.is_registered()
    );
}
