//! How long a lossless producer stays blocked on a registered reader that stopped reading,
//! once that reader is gone or stuck: a measurement, not a test.
//!
//! `cargo bench --bench lossless_release [-- ROUNDS]` (default 20). Each round, a registered
//! reader in a child process (this program, re-executed) reads until it is stopped with
//! SIGSTOP; the producer (this process) then publishes until it is held back, and:
//!
//! 1. **kill -9** (`max_block` `None`, default 5 ms `probe_interval`): a `publish` waits, asleep;
//!    at a random moment the reader is killed (T0). Measured: T0 to the `publish` returning,
//!    i.e. how long a dead reader holds the producer (the probe finds its slot lock free).
//! 2. **SIGSTOP** (`max_block` 100 ms): from the first `try_publish` that fails (the producer
//!    starts waiting on the reader) to the blocked `publish` returning, the reader evicted.
//!    Reported minus `max_block`: how late the eviction comes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmcast::{layout, pattern, Error, Publisher, RecvError, Subscriber, WaitStrategy};

const ROLE_VAR: &str = "SHMCAST_RELEASE_CHILD";
const CAPACITY: u64 = 64 * 1024;
const MAX_BLOCK: Duration = Duration::from_millis(100);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(name) = std::env::var(ROLE_VAR) {
        reader(&name);
    }
    // `cargo bench` passes `--bench`; only a number is ours.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(20)
        .max(1);
    let mut killed = Vec::with_capacity(rounds);
    let mut stopped = Vec::with_capacity(rounds);
    let mut rng = u64::from(std::process::id());
    for round in 0..rounds {
        let delay = Duration::from_micros(pattern::splitmix64(&mut rng) % 10_000);
        killed.push(kill_round(round, delay)?);
        stopped.push(stop_round(round)?);
    }
    println!();
    println!(
        "lossless_release: {rounds} rounds, {} KiB ring, probe_interval {:?} (default)",
        CAPACITY / 1024,
        shmcast::DEFAULT_PROBE_INTERVAL
    );
    println!(
        "{:<58} {:>8} {:>8} {:>8} {:>8}",
        "case (ms)", "min", "p50", "p90", "max"
    );
    row(
        "kill -9 of the holder -> blocked publish returns",
        &mut killed,
    );
    row(
        "SIGSTOPped holder, max_block 100 ms: eviction - max_block",
        &mut stopped,
    );
    Ok(())
}

/// One line of the table: min, p50, p90 and max (nearest rank) of `samples`, in ms.
fn row(label: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let rank =
        |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{label:<58} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        samples[0],
        rank(0.5),
        rank(0.9),
        samples[samples.len() - 1]
    );
}

/// The child: a registered reader that reads (sleeping in the kernel while idle) until it is
/// stopped, killed, or the producer goes away.
fn reader(name: &str) -> ! {
    let mut sub = Subscriber::options()
        .lossless(true)
        .wait_strategy(WaitStrategy::Block)
        .open(name)
        .unwrap_or_else(|e| panic!("register on {name}: {e}"));
    println!("OPENED");
    std::io::stdout().flush().expect("flush");
    let mut buf = Vec::new();
    loop {
        match sub.recv_timeout(&mut buf, Duration::from_secs(1)) {
            Ok(_) | Err(RecvError::Timeout | RecvError::Lagged { .. } | RecvError::Evicted) => {}
            Err(RecvError::ProducerGone { .. }) => std::process::exit(0),
            Err(e) => panic!("{e}"),
        }
    }
}

/// A producer on a fresh segment, held back by a registered reader child that was reading and
/// is now stopped (SIGSTOP): `try_publish` fails. Returns both, and the reader's pid.
fn held_producer(
    round: usize,
    max_block: Option<Duration>,
) -> Result<(Publisher, Child, Pid), Box<dyn std::error::Error>> {
    let name = format!("/shmcast-bench-release-{}-{round}", std::process::id());
    let mut publisher = Publisher::options()
        .capacity(CAPACITY)
        .lossless(true)
        .max_block(max_block)
        .create(&name)?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(ROLE_VAR, &name)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    assert_eq!(line.trim(), "OPENED", "the reader child did not start");
    assert_eq!(
        publisher.wait_for_readers(1, Some(Duration::from_secs(10)))?,
        1
    );
    let pid = Pid::from_raw(child.id() as i32);
    let mut buf = vec![0u8; 1000];
    for seq in 1..=1000 {
        publisher.publish(payload(seq, &mut buf))?;
    }
    kill(pid, Signal::SIGSTOP)?;
    loop {
        let seq = publisher.next_seq();
        match publisher.try_publish(payload(seq, &mut buf)) {
            Ok(_) => {}
            Err(Error::Backpressure { .. }) => return Ok((publisher, child, pid)),
            Err(e) => return Err(e.into()),
        }
    }
}

fn payload(seq: u64, buf: &mut [u8]) -> &[u8] {
    let len = pattern::length(seq, 0, buf.len());
    pattern::fill(seq, &mut buf[..len]);
    &buf[..len]
}

/// Round type 1: milliseconds from `kill -9` of the holder to the blocked `publish` returning.
/// The kill comes `delay` after the producer fell asleep, so the rounds sample every phase of
/// its probe interval.
fn kill_round(round: usize, delay: Duration) -> Result<f64, Box<dyn std::error::Error>> {
    let (mut publisher, mut child, pid) = held_producer(round, None)?;
    let path = publisher.path();
    let killed_at = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            // `producer_blocked`: the producer is asleep, waiting for the reader.
            let file = std::fs::File::open(&path).expect("open the segment");
            let mut word = [0u8; 4];
            loop {
                std::os::unix::fs::FileExt::read_exact_at(
                    &file,
                    &mut word,
                    layout::PRODUCER_BLOCKED as u64,
                )
                .expect("read the segment");
                if word != [0; 4] {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(delay);
            let at = Instant::now();
            kill(pid, Signal::SIGKILL).expect("SIGKILL the reader");
            at
        });
        let seq = publisher.next_seq();
        let published = publisher.publish(payload(seq, &mut [0u8; 1000]));
        let returned = Instant::now();
        let killed_at = killer.join().expect("the killer thread");
        published.map(|_| returned.duration_since(killed_at))
    })?;
    child.wait()?;
    Ok(killed_at.as_secs_f64() * 1e3)
}

/// Round type 2: milliseconds past `max_block` from the producer's first failed `try_publish`
/// to the blocked `publish` returning once the stopped holder is evicted.
fn stop_round(round: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let (mut publisher, mut child, pid) = held_producer(round, Some(MAX_BLOCK))?;
    let waiting_since = Instant::now();
    let seq = publisher.next_seq();
    publisher.publish(payload(seq, &mut [0u8; 1000]))?;
    let held = waiting_since.elapsed();
    assert!(
        publisher.readers().iter().all(|r| r.evicted),
        "the producer went on without evicting the stopped reader"
    );
    kill(pid, Signal::SIGKILL)?;
    child.wait()?;
    Ok((held.as_secs_f64() - MAX_BLOCK.as_secs_f64()) * 1e3)
}
