//! Async subscribers against a producer in another process: they receive exactly what a
//! blocking subscriber receives (every message checked against the pattern, and the same
//! checksums), futures dropped at random points lose nothing and leak no registration, and the
//! producer's exit ends every stream.
//!
//! The producer is this test binary re-executed with `--exact child_process_entry` and
//! `SHMCAST_ASYNC_ROLE` set; it creates a lossless segment, says `CREATED`, waits for a line on
//! its standard input, publishes, and exits.
#![cfg(feature = "async")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_core::Stream;
use shmcast::{pattern, AsyncSubscriber, Publisher, RecvError, StartAt, Subscriber};

const ROLE_VAR: &str = "SHMCAST_ASYNC_ROLE";
/// Messages the producer publishes (fewer in debug builds, which copy far more slowly).
const MESSAGES: u64 = if cfg!(debug_assertions) {
    20_000
} else {
    100_000
};
const MAX_LEN: usize = 1500;

/// The test that the producer child runs; it does nothing unless [`ROLE_VAR`] is set.
#[test]
fn child_process_entry() {
    match std::env::var(ROLE_VAR).as_deref() {
        Ok("producer") => producer(),
        Ok("read-only") => read_only_reader(),
        _ => {}
    }
}

/// A reader without write access (run as user `nobody`): it cannot park, so its task waits in
/// bounded timers; it reads until the producer is gone and reports what it got.
fn read_only_reader() {
    let name = std::env::var("SHMCAST_ASYNC_NAME").unwrap();
    let sub = Subscriber::open(&name, StartAt::Oldest).unwrap();
    let can_park = sub.can_park();
    let mut sub = AsyncSubscriber::new(sub).unwrap();
    println!("READY");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (received, end) = runtime.block_on(async {
        let mut buf = Vec::new();
        let mut received = 0u64;
        loop {
            match sub.recv(&mut buf).await {
                Ok(seq) => {
                    assert_eq!(buf, seq.to_le_bytes());
                    received += 1;
                }
                Err(e) => return (received, e),
            }
        }
    });
    println!("RESULT can_park={can_park} received={received} end={end:?}");
}

fn producer() {
    let name = std::env::var("SHMCAST_ASYNC_NAME").unwrap();
    let mut publisher = Publisher::options()
        .capacity(1 << 16)
        .lossless(true)
        .max_block(None)
        .create(&name)
        .unwrap();
    println!("CREATED");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut buf = vec![0u8; MAX_LEN];
    for seq in 1..=MESSAGES {
        let len = pattern::length(seq, 0, MAX_LEN);
        pattern::fill(seq, &mut buf[..len]);
        assert_eq!(publisher.publish(&buf[..len]).unwrap(), seq);
        // Pauses, so that readers catch up and park (and are woken) many times.
        if seq % 997 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Exits: the liveness lock goes with the process.
}

/// What a reader saw: messages, missed ones, and a checksum over (seq, payload) in order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    received: u64,
    missed: u64,
    sum: u64,
    last: u64,
}

impl Seen {
    fn message(&mut self, seq: u64, payload: &[u8]) {
        assert!(seq > self.last, "out of order: {seq} after {}", self.last);
        assert!(
            pattern::matches(seq, payload),
            "message {seq} is not what was published"
        );
        self.received += 1;
        self.last = seq;
        self.sum = self
            .sum
            .rotate_left(7)
            .wrapping_add(seq ^ pattern::checksum(payload));
    }
}

fn spawn_producer(name: &str) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VAR, "producer")
        .env("SHMCAST_ASYNC_NAME", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the producer ended before CREATED")
            .unwrap();
        if line.contains("CREATED") {
            break;
        }
    }
    // Keep reading what the child's test harness prints, so it never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, stdin)
}

async fn drain_stream(mut sub: AsyncSubscriber) -> Seen {
    let mut seen = Seen::default();
    let mut sub = std::pin::Pin::new(&mut sub);
    while let Some(item) = std::future::poll_fn(|cx| sub.as_mut().poll_next(cx)).await {
        match item {
            Ok((seq, payload)) => seen.message(seq, &payload),
            Err(RecvError::Lagged { missed }) => seen.missed += missed,
            Err(e) => panic!("stream: {e}"),
        }
    }
    seen
}

/// Reads with `recv` futures that a timeout of a few microseconds drops at random points (while
/// parked, or just after a wake-up); every message must still arrive, in order.
async fn drain_dropping(mut sub: AsyncSubscriber, seed: u64) -> (Seen, u64) {
    let mut seen = Seen::default();
    let mut state = seed;
    let mut dropped = 0;
    let mut buf = Vec::new();
    loop {
        let wait = Duration::from_micros(pattern::splitmix64(&mut state) % 300);
        match tokio::time::timeout(wait, sub.recv(&mut buf)).await {
            Err(_) => dropped += 1,
            Ok(Ok(seq)) => seen.message(seq, &buf),
            Ok(Err(RecvError::ProducerGone { .. })) => return (seen, dropped),
            Ok(Err(e)) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn async_readers_receive_what_a_blocking_reader_receives_and_end_with_the_producer() {
    let (name, _cleanup) = common::shm_name("async-mp");
    let (mut child, mut stdin) = spawn_producer(&name);
    let open = |lossless: bool| {
        Subscriber::options()
            .start(StartAt::Oldest)
            .lossless(lossless)
            .open(&name)
            .unwrap()
    };
    // Opened now: the producer removes the name when it exits.
    let observer = open(false);
    let blocking = open(true);
    let streamed = AsyncSubscriber::new(open(true)).unwrap();
    let dropping = AsyncSubscriber::new(open(true)).unwrap();
    let lossy = AsyncSubscriber::new(open(false)).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let streamed = runtime.spawn(drain_stream(streamed));
    let dropping = runtime.spawn(drain_dropping(dropping, 0x5eed));
    let lossy = runtime.spawn(drain_stream(lossy));
    let blocking = std::thread::spawn(move || {
        let mut blocking = blocking;
        let mut seen = Seen::default();
        for item in blocking.messages() {
            let (seq, payload) = item.unwrap();
            seen.message(seq, &payload);
        }
        seen
    });
    let start = Instant::now();
    stdin.write_all(b"go\n").unwrap();
    // A reader left asleep would hold the lossless producer back for ever: fail, not hang.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the producer did not finish in 120 s: a reader stopped reading");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "producer: {status}");
    let produced_in = start.elapsed();
    let blocking = blocking.join().unwrap();
    let (streamed, (dropping, dropped), lossy) = runtime.block_on(async {
        let t = Duration::from_secs(60);
        (
            tokio::time::timeout(t, streamed)
                .await
                .expect("a stream did not end")
                .unwrap(),
            tokio::time::timeout(t, dropping)
                .await
                .expect("a stream did not end")
                .unwrap(),
            tokio::time::timeout(t, lossy)
                .await
                .expect("a stream did not end")
                .unwrap(),
        )
    });
    eprintln!(
        "{MESSAGES} messages in {produced_in:?}; {dropped} recv futures dropped; lossy: {} received, {} missed",
        lossy.received, lossy.missed
    );
    assert_eq!(blocking.received, MESSAGES);
    assert_eq!(
        streamed, blocking,
        "the stream differs from the blocking reader"
    );
    assert_eq!(
        dropping, blocking,
        "futures dropped midway lost or changed messages"
    );
    assert!(
        dropped > 0,
        "no future was dropped: the test did not test that"
    );
    assert_eq!(lossy.received + lossy.missed, MESSAGES);
    if lossy.missed == 0 {
        assert_eq!(lossy, blocking);
    }
    // No registration is left behind: every slot is free once the subscribers are gone.
    let info = observer.info();
    assert!(!info.producer_alive);
    assert!(info.readers.is_empty(), "leaked: {:?}", info.readers);
}

/// A reader that cannot park (read access only: run as user `nobody`, so only when the tests
/// run as root) still gets every message through its bounded waits, and its stream ends when
/// the producer exits; the producer never made a wake-up call for it.
#[test]
fn an_async_reader_without_write_access_polls_and_still_gets_everything() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot run a reader as another user; skipped");
        return;
    }
    use std::os::unix::process::CommandExt;
    let (name, _cleanup) = common::shm_name("async-read-only");
    let mut publisher = Publisher::options()
        .capacity(1 << 16)
        .mode(0o644)
        .create(&name)
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VAR, "read-only")
        .env("SHMCAST_ASYNC_NAME", &name)
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the reader ended before READY")
            .unwrap();
        if line.contains("READY") {
            break;
        }
    }
    for seq in 1..=30u64 {
        std::thread::sleep(Duration::from_millis(3));
        publisher.publish(&seq.to_le_bytes()).unwrap();
    }
    assert_eq!(publisher.wakeups(), 0, "nobody could register as parked");
    drop(publisher);
    // Everything it prints (to its end: the pipe stays open while it writes).
    let output: Vec<String> = lines.map(Result::unwrap).collect();
    let result = output
        .iter()
        .find(|l| l.starts_with("RESULT"))
        .expect("the reader printed no result");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        result,
        "RESULT can_park=false received=30 end=ProducerGone { replaced: false }"
    );
}
