//! Cross-process tests: one producer process and several consumer processes sharing a segment.
//!
//! Every process here is a real, separately spawned program, not a thread. The library roles
//! run in this very test binary, re-executed with `--exact child_process_entry` and
//! `SHMCAST_MP_ROLE` set (without that variable `child_process_entry` does nothing); one
//! consumer is the `shmcast tail` CLI. Children talk to the parent through their standard
//! streams: they print lines tagged with [`MARK`] (`CREATED`, `OPENED`, `RESULT k=v …`) and the
//! producer waits for instructions on its standard input, so the parent orders the processes
//! without sleeping.
//!
//! Every payload is the generated pattern of `shmcast::pattern`, so a consumer can check any
//! message it receives (and its length) from the sequence number alone.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shmcast::{layout, pattern, Error, Publisher, RecvError, StartAt, Subscriber};

mod common;

/// The test that children run; it does nothing unless [`ROLE_VAR`] is set.
const CHILD_TEST: &str = "child_process_entry";
const ROLE_VAR: &str = "SHMCAST_MP_ROLE";
const NAME_VAR: &str = "SHMCAST_MP_NAME";
const COUNT_VAR: &str = "SHMCAST_MP_COUNT";
const START_VAR: &str = "SHMCAST_MP_START";
/// Prefix of every line a child prints for the parent (libtest prints other lines too).
const MARK: &str = "@shmcast-mp";

/// A small ring: ~50 average messages per lap, so records straddle the wrap thousands of times.
const CAPACITY: u64 = 64 * 1024;
/// The most records a `CAPACITY` ring can hold (every record spans at least 16 bytes): a
/// reader this many messages behind the producer has certainly been lapped.
const MAX_RECORDS: u64 = CAPACITY / 16;
/// Messages published in the all-consumers test (fewer in much slower debug builds).
const MESSAGES: u64 = if cfg!(debug_assertions) {
    200_000
} else {
    500_000
};
/// Messages published before the mid-stream joiners are started.
const PHASE1: u64 = 5_000;

/// How long the parent waits for the whole test before killing its children and failing.
const TEST_DEADLINE: Duration = Duration::from_secs(90);
/// How long a child runs at most; children give up by themselves so none outlives a test.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// The length of message `seq`: mostly short (0 to 1500 bytes, empty messages included), and
/// every 16th up to the largest a record may be (a quarter of the ring), so that records often
/// do not fit the rest of a lap and the producer writes a padding record and wraps.
fn message_len(seq: u64, max_payload: usize) -> usize {
    if seq % 16 == 0 {
        pattern::length(seq, 1, max_payload)
    } else {
        pattern::length(seq, 0, 1500)
    }
}

// ======================================================================= child processes

/// Entry point of every child process; a no-op in a normal test run.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    match role.as_str() {
        "producer" => producer(),
        "producer-until-stop" => producer_until_stop(),
        "joiner" => joiner(),
        "copy" => consumer(Reader::Copy),
        "zero-copy" => consumer(Reader::ZeroCopy),
        "blocking" => consumer(Reader::Blocking),
        "slow" => consumer(Reader::Slow),
        "parked" => consumer(Reader::Parked),
        "until-gone" => consumer(Reader::UntilGone),
        "paced-producer" => paced_producer(),
        other => panic!("unknown role {other:?}"),
    }
}

fn report(line: &str) {
    // `println!` flushes at the newline: the parent sees each line as soon as it is written.
    println!("{MARK} {line}");
}

fn env_var(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"))
}

fn env_u64(key: &str) -> u64 {
    env_var(key)
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Opens `name`, retrying while the producer has not created or initialised it yet.
fn open_with_retry(name: &str, start: StartAt, deadline: Instant) -> (Subscriber, u32) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match Subscriber::open(name, start) {
            Ok(subscriber) => return (subscriber, attempts),
            Err(Error::NotFound { .. } | Error::NotInitialized { .. })
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("cannot open {name} after {attempts} attempts: {e}"),
        }
    }
}

/// How many messages the producer has published so far. A fresh `StartAt::Next` join reads
/// `latest` with the full lap check, so, unlike the racy `Subscriber::info`, it is exact.
fn published_so_far(name: &str) -> u64 {
    let probe = Subscriber::open(name, StartAt::Next).expect("open a probe subscriber");
    probe.next_seq() - 1
}

/// The sequence number of the last message a dead producer committed: join at the newest
/// message and read on until nothing follows.
fn committed_by_dead_producer(name: &str) -> u64 {
    let mut probe = Subscriber::open(name, StartAt::Newest).expect("open a probe subscriber");
    let mut last = probe.next_seq() - 1;
    let mut buf = Vec::new();
    loop {
        match probe.try_recv(&mut buf) {
            Ok(seq) => last = seq,
            Err(RecvError::Empty) => return last,
            Err(e) => panic!("reading what the dead producer committed: {e}"),
        }
    }
}

/// The producer's view of where records go, computed from `docs/LAYOUT.md` alone and checked
/// against the header at the end: it proves the test made records straddle the wrap.
struct LayoutModel {
    tail: u64,
    last_pos: u64,
    pads: u64,
}

impl LayoutModel {
    fn push(&mut self, len: usize) {
        let span = layout::record_span(len as u64);
        let off = self.tail % CAPACITY;
        let pos = if off + span > CAPACITY {
            self.pads += 1;
            self.tail + (CAPACITY - off)
        } else {
            self.tail
        };
        self.last_pos = pos;
        self.tail = pos + span;
    }
}

/// A producer that publishes `seq` with the generated payload, through `claim` for every third
/// message (written in two pieces, so partial words are exercised) and `publish` otherwise.
struct Producer {
    publisher: Publisher,
    buf: Vec<u8>,
    model: LayoutModel,
}

impl Producer {
    fn create(name: &str) -> Self {
        let publisher = Publisher::options()
            .capacity(CAPACITY)
            // The parent removes the segment; consumers may still be opening it when we exit.
            .unlink_on_drop(false)
            .create(name)
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        let buf = vec![0u8; publisher.max_payload()];
        Producer {
            publisher,
            buf,
            model: LayoutModel {
                tail: 0,
                last_pos: 0,
                pads: 0,
            },
        }
    }

    fn publish_next(&mut self) -> u64 {
        let seq = self.publisher.next_seq();
        let len = message_len(seq, self.publisher.max_payload());
        let payload = &mut self.buf[..len];
        pattern::fill(seq, payload);
        let published = if seq % 3 == 0 {
            let mut claim = self.publisher.claim(len).expect("claim");
            let split = (seq as usize % 13).min(len);
            claim.write_at(0, &payload[..split]);
            claim.write_at(split, &payload[split..]);
            claim.commit()
        } else {
            self.publisher.publish(payload).expect("publish")
        };
        assert_eq!(published, seq);
        self.model.push(len);
        seq
    }

    /// Checks the header against the model once publishing is over (the header is stable now).
    fn check_header(&self, name: &str) {
        let info = Subscriber::open(name, StartAt::Oldest)
            .expect("open own segment")
            .info();
        assert_eq!(info.next_seq, self.publisher.next_seq());
        assert_eq!(info.latest, Some(self.model.last_pos), "latest position");
        // `intent` covers everything written (the records and the cleared word after them)
        // and runs ahead by at most one stride, a sixteenth of the ring (docs/LAYOUT.md).
        let written = self.model.tail + 8;
        assert!(
            (written..=written + info.capacity / 16).contains(&info.intent),
            "intent {} outside [{written}, {written} + capacity/16]",
            info.intent
        );
        assert!(
            info.head + info.capacity >= info.intent,
            "head is within a ring of intent"
        );
    }
}

/// Creates the segment, waits for `go` on standard input, publishes `SHMCAST_MP_COUNT`
/// messages in bursts of 2000 as fast as it can (lapping every consumer) with a 1 ms pause
/// after each (letting fast consumers catch up), and reports how many needed a padding record.
fn producer() {
    let name = env_var(NAME_VAR);
    let count = env_u64(COUNT_VAR);
    let mut producer = Producer::create(&name);
    report("CREATED");
    // Wait until every consumer has mapped the segment, so they all race the producer.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read stdin");
    assert_eq!(line.trim(), "go", "the parent went away");
    let started = Instant::now();
    for _ in 0..count {
        if producer.publish_next() % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = started.elapsed();
    producer.check_header(&name);
    report(&format!(
        "RESULT published={count} pads={} micros={}",
        producer.model.pads,
        elapsed.as_micros()
    ));
}

/// Publishes `PHASE1` messages, then keeps publishing (about 100k messages per second) until
/// a line (or end of file) arrives on standard input, and reports the total.
fn producer_until_stop() {
    let name = env_var(NAME_VAR);
    let mut producer = Producer::create(&name);
    for _ in 0..PHASE1 {
        producer.publish_next();
    }
    report(&format!("PHASE1 published={PHASE1}"));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let deadline = Instant::now() + CHILD_DEADLINE;
    while !stop.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "never told to stop");
        for _ in 0..16 {
            producer.publish_next();
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    producer.check_header(&name);
    report(&format!(
        "RESULT published={} pads={}",
        producer.publisher.next_seq() - 1,
        producer.model.pads
    ));
}

/// Creates the segment and publishes as told on standard input: `publish N` (as fast as it
/// can), `paced N` (bursts of 10 with a 2 ms pause after each, so blocking readers park and are
/// woken again and again), `end`. After each command it reports how many `FUTEX_WAKE` calls
/// publishing has made so far.
fn paced_producer() {
    let name = env_var(NAME_VAR);
    let mut producer = Producer::create(&name);
    report("CREATED");
    for line in std::io::stdin().lines() {
        let line = line.expect("read stdin");
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or("");
        let n: u64 = words.next().map_or(0, |n| n.parse().expect("a count"));
        match command {
            "publish" => (0..n).for_each(|_| {
                producer.publish_next();
            }),
            "paced" => {
                for i in 1..=n {
                    producer.publish_next();
                    if i % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            "end" => break,
            other => panic!("unknown command {other:?}"),
        }
        report(&format!(
            "PUBLISHED published={} wakeups={}",
            producer.publisher.next_seq() - 1,
            producer.publisher.wakeups()
        ));
    }
    producer.check_header(&name);
}

/// What a consumer has seen so far.
struct Tally {
    /// The sequence number the next message must have.
    expected: u64,
    received: u64,
    missed: u64,
    laps: u64,
    /// Messages whose payload or length is not the generated one.
    corrupt: u64,
    /// Messages whose sequence number was not the expected one, and reads after which
    /// `Subscriber::next_seq` disagreed with the tally.
    gaps: u64,
    max_len: usize,
}

impl Tally {
    fn new(first: u64) -> Self {
        Tally {
            expected: first,
            received: 0,
            missed: 0,
            laps: 0,
            corrupt: 0,
            gaps: 0,
            max_len: 0,
        }
    }

    /// Accounts for one read; `Ok(false)` means there was nothing to read.
    fn record(
        &mut self,
        outcome: Result<(u64, &[u8]), RecvError>,
        max_payload: usize,
    ) -> Result<bool, RecvError> {
        match outcome {
            Ok((seq, payload)) => {
                if seq != self.expected {
                    self.gaps += 1;
                }
                self.received += 1;
                self.max_len = self.max_len.max(payload.len());
                if payload.len() != message_len(seq, max_payload) || !pattern::matches(seq, payload)
                {
                    self.corrupt += 1;
                }
                self.expected = seq + 1;
                Ok(true)
            }
            Err(RecvError::Lagged { missed }) => {
                assert!(missed > 0, "a lap that lost nothing was reported");
                self.missed += missed;
                self.laps += 1;
                self.expected += missed;
                Ok(true)
            }
            Err(RecvError::Empty | RecvError::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn check_position(&mut self, subscriber: &Subscriber) {
        if subscriber.next_seq() != self.expected {
            self.gaps += 1;
        }
    }

    fn summary(&self) -> String {
        format!(
            "received={} missed={} laps={} corrupt={} gaps={} max_len={}",
            self.received, self.missed, self.laps, self.corrupt, self.gaps, self.max_len
        )
    }
}

/// Waits a little for the next message: spin first (consumers should be fast), then sleep.
fn idle(streak: &mut u32) {
    *streak += 1;
    if *streak < 64 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[derive(Clone, Copy, Debug)]
enum Reader {
    /// `try_recv_into` a fixed buffer.
    Copy,
    /// `try_read` with `MessageRef::copy_to`.
    ZeroCopy,
    /// `recv_timeout` into a `Vec`.
    Blocking,
    /// `try_recv`, but stalls until it is certainly lapped every 2000 messages and naps often.
    Slow,
    /// `recv_into_deadline` with the default `WaitStrategy::Block`: parks whenever it is idle.
    Parked,
    /// Like `Parked`, without a message count: reads until the producer is gone.
    UntilGone,
}

/// Reads from the beginning until every one of `SHMCAST_MP_COUNT` messages was received or
/// reported missed, checking each payload.
fn consumer(reader: Reader) {
    let name = env_var(NAME_VAR);
    let count = env_u64(COUNT_VAR);
    let deadline = Instant::now() + CHILD_DEADLINE;
    // The parent starts consumers before the producer, so this usually retries a few times.
    let (mut subscriber, attempts) = open_with_retry(&name, StartAt::Beginning, deadline);
    report(&format!(
        "OPENED attempts={attempts} can_park={}",
        u8::from(subscriber.can_park())
    ));
    let max_payload = subscriber.max_payload();
    let mut buf = vec![0u8; max_payload];
    let mut vec = Vec::new();
    let mut tally = Tally::new(1);
    let mut streak = 0;
    let mut gone = None;
    while tally.received + tally.missed < count {
        assert!(
            Instant::now() < deadline,
            "{reader:?} gave up: {}",
            tally.summary()
        );
        let outcome = match reader {
            Reader::Copy => subscriber
                .try_recv_into(&mut buf)
                .map(|r| (r.seq, &buf[..r.len])),
            Reader::ZeroCopy => subscriber
                // Only look inside the closure: the bytes are trustworthy once try_read is Ok.
                .try_read(|m| {
                    let last = m.len().checked_sub(1).and_then(|i| m.get(i));
                    (m.seq(), m.len(), m.copy_to(&mut buf), last, m.get(m.len()))
                })
                .map(|(seq, (ref_seq, len, copied, last, past_end))| {
                    assert_eq!((ref_seq, copied, past_end), (seq, len, None));
                    assert_eq!(last, buf[..len].last().copied(), "MessageRef::get");
                    (seq, &buf[..len])
                }),
            Reader::Blocking => subscriber
                .recv_timeout(&mut vec, Duration::from_millis(200))
                .map(|seq| (seq, &vec[..])),
            Reader::Slow => subscriber.try_recv(&mut vec).map(|seq| (seq, &vec[..])),
            Reader::Parked | Reader::UntilGone => subscriber
                .recv_into_deadline(&mut buf, deadline)
                .map(|r| (r.seq, &buf[..r.len])),
        };
        if let (Reader::UntilGone, Err(RecvError::ProducerGone { replaced })) = (reader, &outcome) {
            gone = Some(*replaced);
            break;
        }
        let was_message = outcome.is_ok();
        let progressed = tally
            .record(outcome, max_payload)
            .unwrap_or_else(|e| panic!("{reader:?}: {e} after {}", tally.summary()));
        tally.check_position(&subscriber);
        if !progressed {
            idle(&mut streak);
            continue;
        }
        streak = 0;
        if matches!(reader, Reader::Slow) && was_message {
            slow_down(&name, &subscriber, tally.received, count, deadline);
        }
    }
    // Nothing may follow the last message.
    assert_eq!(subscriber.try_recv(&mut vec), Err(RecvError::Empty));
    match gone {
        Some(replaced) => report(&format!(
            "RESULT {} gone=1 replaced={}",
            tally.summary(),
            u8::from(replaced)
        )),
        None => report(&format!("RESULT {}", tally.summary())),
    }
}

/// The slow consumer's pace: a short nap every 500 messages, and every 2000 (starting with the
/// first) a stall until the producer is more than a ring ahead, so a lap is certain.
fn slow_down(name: &str, subscriber: &Subscriber, received: u64, count: u64, deadline: Instant) {
    if received % 2000 == 1 {
        loop {
            let published = published_so_far(name);
            if published >= count || published > subscriber.next_seq() + MAX_RECORDS {
                break;
            }
            assert!(Instant::now() < deadline, "the producer stopped publishing");
            std::thread::sleep(Duration::from_millis(1));
        }
    } else if received % 500 == 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Joins a running producer at `SHMCAST_MP_START` (oldest, newest or next), reads until the
/// parent sends the final message count on standard input, and checks what it received.
fn joiner() {
    let name = env_var(NAME_VAR);
    let start = match env_var(START_VAR).as_str() {
        "oldest" => StartAt::Oldest,
        "newest" => StartAt::Newest,
        "next" => StartAt::Next,
        other => panic!("unknown start {other:?}"),
    };
    let deadline = Instant::now() + CHILD_DEADLINE;
    let oldest_now = || {
        Subscriber::open(&name, StartAt::Oldest)
            .expect("open")
            .next_seq()
    };
    // Bracket the join with exact observations of the producer, for the parent to check.
    let (before_published, before_oldest) = (published_so_far(&name), oldest_now());
    let (mut subscriber, _) = open_with_retry(&name, start, deadline);
    let first = subscriber.next_seq();
    let (after_published, after_oldest) = (published_so_far(&name), oldest_now());
    report(&format!(
        "OPENED first={first} before_published={before_published} \
         after_published={after_published} before_oldest={before_oldest} \
         after_oldest={after_oldest}"
    ));

    let total = Arc::new(AtomicU64::new(0));
    {
        let total = total.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).expect("read stdin");
            // Zero (unparsable input, or end of file) keeps the joiner reading until its
            // deadline, which fails it: the parent always sends a number.
            total.store(line.trim().parse().unwrap_or(0), Ordering::SeqCst);
        });
    }
    let max_payload = subscriber.max_payload();
    let mut vec = Vec::new();
    let mut tally = Tally::new(first);
    let mut first_event = None;
    let mut progress_reported = false;
    let mut streak = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "joiner gave up: {}",
            tally.summary()
        );
        let outcome = subscriber.try_recv(&mut vec).map(|seq| (seq, &vec[..]));
        if first_event.is_none() {
            first_event = match &outcome {
                Ok(_) => Some("message"),
                Err(RecvError::Lagged { .. }) => Some("lagged"),
                _ => None,
            };
        }
        let progressed = tally
            .record(outcome, max_payload)
            .unwrap_or_else(|e| panic!("joiner: {e} after {}", tally.summary()));
        tally.check_position(&subscriber);
        if !progress_reported && tally.received >= 200 {
            // The parent stops the producer only once every joiner has read while it ran.
            report("PROGRESS");
            progress_reported = true;
        }
        if progressed {
            streak = 0;
            continue;
        }
        let total = total.load(Ordering::SeqCst);
        if total != 0 && subscriber.next_seq() > total {
            break;
        }
        idle(&mut streak);
    }
    assert_eq!(subscriber.try_recv(&mut vec), Err(RecvError::Empty));
    report(&format!(
        "RESULT first={first} first_event={} {}",
        first_event.unwrap_or("none"),
        tally.summary()
    ));
}

// ======================================================================= parent side

/// Keeps the two tests from oversubscribing the two cores, so each sees the scheduling it was
/// designed for.
static SERIAL: Mutex<()> = Mutex::new(());

/// A command for a child of this test binary in `role`.
fn child(role: &str, name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(NAME_VAR, name);
    cmd
}

enum Event {
    Line(usize, bool, String),
    Closed(usize),
}

struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    open_streams: u8,
}

/// The children of one test. Dropping it kills whichever are still running, so a failing
/// assertion never leaves a process behind.
struct Processes {
    procs: Vec<Proc>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    deadline: Instant,
}

impl Processes {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Processes {
            procs: Vec::new(),
            tx,
            rx,
            deadline: Instant::now() + TEST_DEADLINE,
        }
    }

    fn spawn(&mut self, label: &str, mut cmd: Command) -> usize {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        let index = self.procs.len();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        forward_lines(index, false, stdout, self.tx.clone());
        forward_lines(index, true, stderr, self.tx.clone());
        self.procs.push(Proc {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout: Vec::new(),
            stderr: Vec::new(),
            open_streams: 2,
        });
        index
    }

    /// Handles one event from a child's output; `false` if none came before the deadline.
    fn pump(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left.min(Duration::from_millis(50))) {
            Ok(Event::Line(i, is_stderr, line)) => {
                let p = &mut self.procs[i];
                if is_stderr {
                    p.stderr.push(line);
                } else {
                    p.stdout.push(line);
                }
                true
            }
            Ok(Event::Closed(i)) => {
                self.procs[i].open_streams -= 1;
                true
            }
            Err(RecvTimeoutError::Timeout) => Instant::now() < self.deadline,
            Err(RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
        }
    }

    /// The rest of the first line child `i` tagged with [`MARK`] and `key`.
    fn find(&self, i: usize, key: &str) -> Option<String> {
        self.procs[i].stdout.iter().find_map(|line| {
            let tagged = &line[line.find(MARK)? + MARK.len()..];
            tagged.trim_start().strip_prefix(key).map(str::to_owned)
        })
    }

    /// Waits for child `i` to print a [`MARK`] line starting with `key`; returns the rest.
    fn wait_for(&mut self, i: usize, key: &str) -> String {
        loop {
            if let Some(rest) = self.find(i, key) {
                return rest;
            }
            if self.procs[i].open_streams == 0 {
                panic!(
                    "{} ended without printing {key}\n{}",
                    self.procs[i].label,
                    self.dump()
                );
            }
            if !self.pump() {
                panic!(
                    "timed out waiting for {} to print {key}\n{}",
                    self.procs[i].label,
                    self.dump()
                );
            }
        }
    }

    /// Like [`Self::wait_for`], but consumes the line, so the next call finds the next one.
    fn take(&mut self, i: usize, key: &str) -> String {
        let rest = self.wait_for(i, key);
        let stdout = &mut self.procs[i].stdout;
        if let Some(at) = stdout
            .iter()
            .position(|line| line.contains(MARK) && line.contains(key))
        {
            stdout.remove(at);
        }
        rest
    }

    fn send(&mut self, i: usize, line: &str) {
        let stdin = self.procs[i].stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to a child");
        stdin.flush().expect("flush");
    }

    /// Waits for every child to exit and for all their output.
    fn wait_all(&mut self) -> Vec<ExitStatus> {
        for p in &mut self.procs {
            p.stdin = None;
        }
        while self.procs.iter().any(|p| p.open_streams > 0) {
            if !self.pump() {
                panic!("timed out waiting for the children\n{}", self.dump());
            }
        }
        let mut statuses = Vec::new();
        for i in 0..self.procs.len() {
            loop {
                if let Some(status) = self.procs[i].child.try_wait().expect("try_wait") {
                    statuses.push(status);
                    break;
                }
                if Instant::now() > self.deadline {
                    panic!("{} did not exit\n{}", self.procs[i].label, self.dump());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        statuses
    }

    /// Waits for all children and asserts each exited successfully.
    fn wait_all_ok(&mut self) {
        let statuses = self.wait_all();
        for (p, status) in self.procs.iter().zip(&statuses) {
            assert!(
                status.success(),
                "{} failed ({status})\n{}",
                p.label,
                self.dump()
            );
        }
    }

    /// Everything the children printed, for failure messages.
    fn dump(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            s.push_str(&format!("--- {} stdout:\n", p.label));
            for line in &p.stdout {
                s.push_str(&format!("  {line}\n"));
            }
            s.push_str(&format!("--- {} stderr:\n", p.label));
            for line in &p.stderr {
                s.push_str(&format!("  {line}\n"));
            }
        }
        s
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

/// Sends each line of `stream` (lossily decoded) to the parent, then `Closed`.
fn forward_lines(
    index: usize,
    is_stderr: bool,
    stream: impl Read + Send + 'static,
    tx: Sender<Event>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if tx.send(Event::Line(index, is_stderr, text)).is_err() {
                return;
            }
            line.clear();
        }
        let _ = tx.send(Event::Closed(index));
    });
}

/// Parses `k=v k=v …` into numbers (non-numeric values are skipped).
fn fields(s: &str) -> HashMap<String, u64> {
    s.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn field(map: &HashMap<String, u64>, key: &str, context: &str) -> u64 {
    *map.get(key)
        .unwrap_or_else(|| panic!("{context}: no {key} in {map:?}"))
}

// ======================================================================= the tests

/// One producer process, four library consumer processes (three fast ones with different read
/// APIs, one deliberately slow) and a `shmcast tail --verify` process, all reading every
/// message from the beginning of a 64 KiB ring while 200 000 (debug) or 500 000 (release)
/// messages of random lengths go through it.
#[test]
fn consumers_in_other_processes_account_for_every_message_and_see_no_corruption() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (name, _segment) = common::shm_name("mp-all");
    let mut procs = Processes::new();

    // Consumers first: they must cope with a segment that does not exist yet.
    let consumers: Vec<(usize, &str)> = ["copy", "zero-copy", "blocking", "slow"]
        .into_iter()
        .map(|role| {
            let mut cmd = child(role, &name);
            cmd.env(COUNT_VAR, MESSAGES.to_string());
            (procs.spawn(role, cmd), role)
        })
        .collect();
    let mut cmd = child("producer", &name);
    cmd.env(COUNT_VAR, MESSAGES.to_string());
    let producer = procs.spawn("producer", cmd);
    procs.wait_for(producer, "CREATED");

    for &(i, _) in &consumers {
        procs.wait_for(i, "OPENED");
    }
    procs.send(producer, "go");
    procs.wait_all_ok();

    let produced = fields(&procs.wait_for(producer, "RESULT"));
    assert_eq!(field(&produced, "published", "producer"), MESSAGES);
    let pads = field(&produced, "pads", "producer");
    // About one padding record per lap of ~50 messages: the wrap is straddled thousands of times.
    assert!(
        pads > MESSAGES / 200,
        "only {pads} records straddled the wrap"
    );
    eprintln!(
        "producer: {MESSAGES} messages in {} ms, {pads} padding records",
        field(&produced, "micros", "producer") / 1000
    );

    for &(i, role) in &consumers {
        let result = fields(&procs.wait_for(i, "RESULT"));
        let get = |key| field(&result, key, role);
        eprintln!("{role}: {result:?}");
        assert_eq!(
            get("received") + get("missed"),
            MESSAGES,
            "{role}: received + missed != published"
        );
        assert_eq!(get("corrupt"), 0, "{role}: corrupt payloads");
        assert_eq!(get("gaps"), 0, "{role}: sequence numbers not consecutive");
        // Whatever happened, the messages retained at the end were readable.
        assert!(get("received") > 0, "{role} received nothing");
    }
    let slow = consumers
        .iter()
        .find(|(_, role)| *role == "slow")
        .unwrap()
        .0;
    let slow = fields(&procs.wait_for(slow, "RESULT"));
    assert!(
        field(&slow, "missed", "slow") > 0,
        "the slow consumer was never lapped"
    );
    assert!(field(&slow, "laps", "slow") > 0);
}

/// Three processes join a producer that is publishing: at the oldest retained message, at the
/// newest, and at the next one. Each must start where the producer was when it joined and then
/// receive consecutive, intact messages (or be told exactly how many it missed).
#[test]
fn consumers_joining_mid_stream_start_where_they_should_and_read_consecutively() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (name, _segment) = common::shm_name("mp-join");
    let mut procs = Processes::new();

    let producer = procs.spawn("producer", child("producer-until-stop", &name));
    procs.wait_for(producer, "PHASE1");
    let joiners: Vec<(usize, &str)> = ["oldest", "newest", "next"]
        .into_iter()
        .map(|start| {
            let mut cmd = child("joiner", &name);
            cmd.env(START_VAR, start);
            (procs.spawn(start, cmd), start)
        })
        .collect();
    let mut opened = Vec::new();
    for &(i, start) in &joiners {
        opened.push(fields(&procs.wait_for(i, "OPENED")));
        procs.wait_for(i, "PROGRESS");
        eprintln!("{start} joined: {:?}", opened.last().unwrap());
    }
    // Every joiner has read while the producer was running; now let it finish.
    procs.send(producer, "stop");
    let published = field(
        &fields(&procs.wait_for(producer, "RESULT")),
        "published",
        "producer",
    );
    assert!(published > PHASE1);
    for &(i, _) in &joiners {
        procs.send(i, &published.to_string());
    }
    procs.wait_all_ok();

    for (&(i, start), opened) in joiners.iter().zip(&opened) {
        let get_opened = |key| field(opened, key, start);
        let first = get_opened("first");
        let (before, after) = (
            get_opened("before_published"),
            get_opened("after_published"),
        );
        assert!(before >= PHASE1, "{start}: joined before phase 1 ended");
        match start {
            // The newest message at the time of joining is delivered first.
            "newest" => assert!((before..=after).contains(&first), "{start}: {opened:?}"),
            // Only messages published after joining.
            "next" => assert!(
                (before + 1..=after + 1).contains(&first),
                "{start}: {opened:?}"
            ),
            _ => {
                let range = get_opened("before_oldest")..=get_opened("after_oldest");
                assert!(range.contains(&first), "{start}: {opened:?}");
                // 5000 messages of ~1.2 KB went through a 64 KiB ring before anyone joined.
                assert!(
                    first > 1,
                    "{start}: the oldest retained message cannot be 1"
                );
            }
        }
        let result = fields(&procs.wait_for(i, "RESULT"));
        eprintln!("{start}: {result:?}");
        let get = |key| field(&result, key, start);
        assert_eq!(get("first"), first);
        assert_eq!(
            get("received") + get("missed"),
            published - first + 1,
            "{start}: received + missed != messages since joining"
        );
        assert_eq!(get("corrupt"), 0, "{start}: corrupt payloads");
        assert_eq!(get("gaps"), 0, "{start}: sequence numbers not consecutive");
        assert!(get("received") >= 200, "{start}: read too little");
    }
}

/// Consumers that sleep in the kernel while idle (`WaitStrategy::Block`) are woken for every
/// message, including a burst after a long idle spell, and publishing makes no wake-up call
/// while nobody is parked (only a busy-polling consumer attached).
#[test]
fn parked_consumers_are_woken_for_every_message_and_idle_publishing_makes_no_wakeups() {
    // The producer registers for membarrier where the kernel allows it (publishing without a
    // fence); the fence fallback must work as well.
    parked_consumers_run(false);
    parked_consumers_run(true);
}

fn parked_consumers_run(force_fence: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (name, _segment) = common::shm_name("mp-parked");
    let mut procs = Processes::new();
    let mut cmd = child("paced-producer", &name);
    if force_fence {
        cmd.env("SHMCAST_NO_MEMBARRIER", "1");
    }
    let producer = procs.spawn("paced-producer", cmd);
    procs.wait_for(producer, "CREATED");
    let header = std::fs::read(format!("/dev/shm{name}")).expect("read the header");
    let barrier = u64::from_le_bytes(header[0x40..0x48].try_into().unwrap());
    eprintln!("wake_barrier = {barrier} (force_fence: {force_fence})");
    if force_fence {
        assert_eq!(barrier, layout::WAKE_FENCE);
    }
    let published = |procs: &mut Processes, command: &str| {
        procs.send(producer, command);
        let f = fields(&procs.take(producer, "PUBLISHED"));
        (
            field(&f, "published", "producer"),
            field(&f, "wakeups", "producer"),
        )
    };

    // Phase 1: a busy-polling consumer only. Nobody parks, so no publish may make a system call.
    const PHASE1: u64 = 3000;
    const PAUSE: Duration = Duration::from_millis(300);
    const PHASE3: u64 = 5000;
    const TOTAL: u64 = PHASE1 + 1 + PHASE3;
    let mut cmd = child("copy", &name);
    cmd.env(COUNT_VAR, PHASE1.to_string());
    let poller = procs.spawn("copy", cmd);
    procs.wait_for(poller, "OPENED");
    assert_eq!(
        published(&mut procs, &format!("publish {PHASE1}")),
        (PHASE1, 0)
    );
    procs.wait_for(poller, "RESULT");

    // Phase 2: three blocking consumers read what is retained, then sleep; after a long idle
    // spell one message must wake all of them.
    let parked: Vec<usize> = (0..3)
        .map(|_| {
            let mut cmd = child("parked", &name);
            cmd.env(COUNT_VAR, TOTAL.to_string());
            procs.spawn("parked", cmd)
        })
        .collect();
    for &i in &parked {
        let opened = fields(&procs.wait_for(i, "OPENED"));
        assert_eq!(
            field(&opened, "can_park", "parked"),
            1,
            "the owner may park"
        );
    }
    std::thread::sleep(PAUSE);
    let (_, wakeups) = published(&mut procs, "publish 1");
    assert_eq!(wakeups, 1, "one wake-up call for all parked consumers");

    // Phase 3: bursts with pauses: consumers park and are woken again and again.
    let (n, wakeups) = published(&mut procs, &format!("paced {PHASE3}"));
    assert_eq!(n, TOTAL);
    assert!(
        wakeups > 1,
        "paced publishing never found a consumer parked"
    );
    eprintln!("{TOTAL} messages, {wakeups} wake-up calls");
    for &i in &parked {
        let result = fields(&procs.wait_for(i, "RESULT"));
        eprintln!("parked: {result:?}");
        let get = |key| field(&result, key, "parked");
        assert_eq!(get("received") + get("missed"), TOTAL);
        assert_eq!(get("corrupt"), 0);
        assert_eq!(get("gaps"), 0);
        // A burst is a fifth of the ring and is followed by a 2 ms pause, so a consumer that is
        // woken each time receives nearly all of it; one that slept through would be lapped.
        assert!(
            get("received") > PHASE3 / 2,
            "the consumer missed most of the paced phase"
        );
    }
    procs.send(producer, "end");
    procs.wait_all_ok();
}

/// `kill -9` the producer at a random moment while it publishes as fast as it can (so often in
/// the middle of a publish), three times over the same name. Each time, consumers that block
/// report the producer gone within a bounded time, after receiving or being told they missed
/// every message it committed, with no corrupt payload; and the next producer replaces the
/// dead one's segment.
#[test]
fn a_killed_producer_is_reported_gone_and_a_new_one_replaces_its_segment() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (name, _segment) = common::shm_name("mp-killed");
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    for round in 0..3 {
        let mut procs = Processes::new();
        let producer = procs.spawn("producer-until-stop", child("producer-until-stop", &name));
        procs.wait_for(producer, "PHASE1");
        let consumers: Vec<usize> = (0..2)
            .map(|_| {
                let mut cmd = child("until-gone", &name);
                cmd.env(COUNT_VAR, u64::MAX.to_string());
                procs.spawn("until-gone", cmd)
            })
            .collect();
        for &i in &consumers {
            procs.wait_for(i, "OPENED");
        }
        std::thread::sleep(Duration::from_micros(
            pattern::splitmix64(&mut rng) % 50_000,
        ));
        procs.procs[producer]
            .child
            .kill()
            .expect("SIGKILL the producer");
        let killed = Instant::now();
        procs.procs[producer]
            .child
            .wait()
            .expect("reap the producer");
        // What the producer had committed when it died: read from the newest message on, since
        // a kill between a commit and the `latest` store leaves a committed message after
        // `latest`, which the consumers do receive.
        let published = committed_by_dead_producer(&name);
        assert!(published >= PHASE1);
        let probe = Subscriber::open(&name, StartAt::Oldest).unwrap();
        assert!(!probe.producer_alive(), "the lock died with the producer");
        for &i in &consumers {
            let result = fields(&procs.wait_for(i, "RESULT"));
            eprintln!("round {round}: {published} published; consumer {result:?}");
            let get = |key| field(&result, key, "until-gone");
            assert_eq!(get("gone"), 1);
            assert_eq!(get("received") + get("missed"), published);
            assert_eq!(get("corrupt"), 0);
            assert_eq!(get("gaps"), 0);
        }
        let noticed = killed.elapsed();
        assert!(
            noticed < Duration::from_secs(5),
            "consumers took {noticed:?} to notice the producer's death"
        );
        // The dead producer's segment is still there until the next producer replaces it.
        assert!(std::path::Path::new(&format!("/dev/shm{name}")).exists());
        drop(procs);
    }
}

/// A consumer stopped with SIGSTOP while the producer laps it many times reports, once resumed,
/// exactly how many messages it missed.
#[test]
fn a_stopped_consumer_reports_exactly_what_it_missed() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (name, _segment) = common::shm_name("mp-stopped");
    let mut procs = Processes::new();
    let producer = procs.spawn("paced-producer", child("paced-producer", &name));
    procs.wait_for(producer, "CREATED");
    const TOTAL: u64 = 20_000;
    let mut cmd = child("parked", &name);
    cmd.env(COUNT_VAR, TOTAL.to_string());
    let consumer = procs.spawn("parked", cmd);
    procs.wait_for(consumer, "OPENED");
    procs.send(producer, "publish 100");
    procs.take(producer, "PUBLISHED");
    let pid = Pid::from_raw(procs.procs[consumer].child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    // Far more than the 64 KiB ring holds.
    procs.send(producer, &format!("publish {}", TOTAL - 101));
    procs.take(producer, "PUBLISHED");
    kill(pid, Signal::SIGCONT).unwrap();
    procs.send(producer, "publish 1");
    procs.take(producer, "PUBLISHED");
    let result = fields(&procs.wait_for(consumer, "RESULT"));
    eprintln!("stopped consumer: {result:?}");
    let get = |key| field(&result, key, "parked");
    assert_eq!(get("received") + get("missed"), TOTAL);
    assert!(get("missed") > MAX_RECORDS, "it was lapped while stopped");
    assert_eq!((get("corrupt"), get("gaps")), (0, 0));
    procs.send(producer, "end");
    procs.wait_all_ok();
}
