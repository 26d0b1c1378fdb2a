//! shmcast between two processes: ping-pong latency, timestamp latency, consumer throughput,
//! and the producer's publish rate with 0, 1 and N consumers.
//!
//! Readers busy-spin on `Subscriber::try_recv_into` (one message copied out per call) and
//! checksum every payload they receive; senders stamp a counter (or a timestamp) into the first
//! word of a fixed pattern and publish the whole message with `Publisher::publish`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shmcast::{Publisher, Received, RecvError, StartAt, Subscriber, WaitStrategy};

use super::payload::{checksum, counter, Payload};
use super::peer::{say, Peer, PeerArgs, Role};
use super::report::{LatencyRow, Method, PublishRow, Summary, ThroughputRow};
use super::sys::{self, Ctx, Spinner};
use super::Result;

/// Capacity of the ping and pong rings (the crate's default).
pub const LATENCY_CAPACITY: u64 = 1 << 20;
/// Capacity of the timestamp ring: small, because that run has no warm-up (the Go reader
/// counts every message) and each 4 KiB page of a new segment costs each process one page
/// fault the first time it is touched. 256 KiB still holds 60 messages of 4 KiB, 600 µs at
/// the pacing below.
pub const TIMESTAMP_CAPACITY: u64 = 256 << 10;
/// Interval between messages of the timestamp method: long enough that a reader is never
/// behind, so each sample is the latency of one message, not of a queue.
pub const TIMESTAMP_INTERVAL: Duration = Duration::from_micros(10);

/// Who reads.
#[derive(Clone, Copy)]
pub enum Reader<'a> {
    /// A `shmcast bench-peer` process (the Rust `Subscriber`).
    Rust,
    /// The Go bench reader.
    Go(&'a GoReader),
}

impl Reader<'_> {
    fn label(self) -> &'static str {
        match self {
            Reader::Rust => "rust",
            Reader::Go(_) => "go",
        }
    }
}

/// Whether a throughput consumer reads lossy (an ordinary subscriber the producer may lap) or
/// registered on a lossless segment (docs/LAYOUT.md, "Lossless mode": the producer waits
/// rather than overwrite what it has not read).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Lossy,
    Lossless,
}

impl Mode {
    /// The `"mode"` value of its rows.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Lossy => "lossy",
            Mode::Lossless => "lossless",
        }
    }
}

/// How a throughput consumer reads: its [`Mode`], and whether in batches (up to `batch`
/// messages per call of the batched receive API; the Rust reader only).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reading {
    pub mode: Mode,
    pub batch: Option<u16>,
}

impl Reading {
    /// One message per call, lossy: every consumer before lossless mode.
    pub const LOSSY: Reading = Reading {
        mode: Mode::Lossy,
        batch: None,
    };
}

/// The Go bench reader binary (`go-client/cmd/shmcast-bench-reader`), built into a temporary
/// directory unless given with `--go-reader`. Its contract:
/// `shmcast-bench-reader NAME --mode latency|throughput --count N [--cpu K] [--timeout SECONDS]
/// [--wait STRATEGY] [--lossless]`, one JSON line on standard output when done.
pub struct GoReader {
    path: PathBuf,
    built_in: Option<PathBuf>,
}

impl GoReader {
    /// `explicit`, or a fresh `go build` of the reader found in `./go-client` or in the
    /// source tree this `shmcast` was built from.
    pub fn locate(explicit: Option<&Path>) -> Result<GoReader> {
        if let Some(path) = explicit {
            if !path.is_file() {
                return Err(format!("--go-reader {}: no such file", path.display()).into());
            }
            return Ok(GoReader {
                path: path.to_path_buf(),
                built_in: None,
            });
        }
        let candidates = [
            PathBuf::from("go-client"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../go-client"),
        ];
        let Some(dir) = candidates
            .iter()
            .find(|d| d.join("cmd/shmcast-bench-reader").is_dir())
        else {
            return Err(format!(
                "--consumer go: the Go bench reader (go-client/cmd/shmcast-bench-reader) was not \
                 found in {} or {}; build it and pass --go-reader PATH",
                candidates[0].display(),
                candidates[1].display()
            )
            .into());
        };
        let tmp = std::env::temp_dir().join(format!("shmcast-bench-go-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let reader = GoReader {
            path: tmp.join("shmcast-bench-reader"),
            built_in: Some(tmp),
        };
        let output = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&reader.path)
            .arg("./cmd/shmcast-bench-reader")
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "--consumer go: cannot run `go build` in {} ({e}); install Go or pass \
                     --go-reader PATH",
                    dir.display()
                )
            })?;
        if !output.status.success() {
            return Err(format!(
                "--consumer go: `go build ./cmd/shmcast-bench-reader` in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Ok(reader)
    }

    /// Starts the reader on `name`, waiting with `wait` (its `--wait`) if given, registered on
    /// the lossless segment `name` (its `--lossless`) with `Mode::Lossless`.
    fn spawn(
        &self,
        ctx: &Ctx,
        name: &str,
        mode: &str,
        count: u64,
        wait: Option<WaitStrategy>,
        registered: Mode,
    ) -> Result<Peer> {
        let mut cmd = Command::new(&self.path);
        cmd.arg(name)
            .arg("--mode")
            .arg(mode)
            .arg("--count")
            .arg(count.to_string())
            .args(wait_args(wait));
        if registered == Mode::Lossless {
            cmd.arg("--lossless");
        }
        let cpu = ctx.peer_cpu(0);
        if let Some(cpu) = cpu {
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        cmd.arg("--timeout")
            .arg(ctx.timeout.as_secs_f64().to_string());
        let mut peer = Peer::spawn(ctx, format!("the Go reader ({mode})"), cmd, cpu, &[])?;
        wait_attached(ctx, &mut peer, name)?;
        Ok(peer)
    }
}

impl Drop for GoReader {
    fn drop(&mut self) {
        if let Some(dir) = &self.built_in {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Waits until `peer` has mapped the segment `name` (it shows in `/proc/PID/maps`), then a
/// little longer for it to reach its polling loop. For readers that print no `ready` line.
fn wait_attached(ctx: &Ctx, peer: &mut Peer, name: &str) -> Result<()> {
    let path = format!("/dev/shm{name}");
    let maps = format!("/proc/{}/maps", peer.pid());
    let deadline = ctx.deadline();
    loop {
        if std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(&path)) {
            std::thread::sleep(Duration::from_millis(20));
            return Ok(());
        }
        if peer.exited() {
            return Err("the Go reader exited before it opened the segment".into());
        }
        if sys::interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() >= deadline {
            return Err(format!("the Go reader did not open {path} in time").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long one blocking call of a [`Waiter`] may wait before it looks at the run's deadline
/// and at interruption.
const BLOCKING_SLICE: Duration = Duration::from_millis(100);

/// How a Rust shm reader of the harness (or of a peer) waits for its next message: busy-polling
/// `try_recv_into` back to back (the default), or, with `--wait`, the library's blocking
/// `recv_into_deadline` with the subscriber's [`WaitStrategy`], in slices of at most
/// [`BLOCKING_SLICE`] so that the run's deadline and an interruption are noticed.
pub struct Waiter {
    blocking: bool,
    /// The end of the current blocking slice, moved on every 1024 messages and after a
    /// timeout: a clock read per message would cost about as much as receiving a small one.
    slice_end: Instant,
    received: u32,
    spin: Spinner,
    /// Polls that found nothing (busy-polling only).
    pub empty: u64,
}

impl Waiter {
    /// A waiter for `sub`; `wait` (if any) becomes the subscriber's strategy.
    pub fn new(sub: &mut Subscriber, wait: Option<WaitStrategy>, spin: Spinner) -> Waiter {
        if let Some(strategy) = wait {
            sub.set_wait_strategy(strategy);
        }
        Waiter {
            blocking: wait.is_some(),
            slice_end: Instant::now() + BLOCKING_SLICE,
            received: 0,
            spin,
            empty: 0,
        }
    }

    /// Copies the next message into `buf`: `Ok(Ok(received))`, or `Ok(Err(missed))` when
    /// messages were lost to a lap.
    #[inline(always)]
    pub fn recv(
        &mut self,
        sub: &mut Subscriber,
        buf: &mut [u8],
    ) -> Result<std::result::Result<Received, u64>> {
        if self.blocking {
            return self.recv_blocking(sub, buf);
        }
        self.poll(|| sub.try_recv_into(buf))
    }

    /// Calls `read` until it returns something other than `Empty` (counting the empty polls):
    /// `Ok(Ok(what it read))`, or `Ok(Err(missed))` for `Lagged`.
    #[inline(always)]
    fn poll<T>(
        &mut self,
        mut read: impl FnMut() -> std::result::Result<T, RecvError>,
    ) -> Result<std::result::Result<T, u64>> {
        loop {
            match read() {
                Ok(r) => return Ok(Ok(r)),
                Err(RecvError::Empty) => {
                    self.empty += 1;
                    self.spin.idle()?;
                }
                Err(RecvError::Lagged { missed }) => return Ok(Err(missed)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn recv_blocking(
        &mut self,
        sub: &mut Subscriber,
        buf: &mut [u8],
    ) -> Result<std::result::Result<Received, u64>> {
        self.received = self.received.wrapping_add(1);
        if self.received.is_multiple_of(1024) {
            self.slice_end = Instant::now() + BLOCKING_SLICE;
        }
        loop {
            match sub.recv_into_deadline(buf, self.slice_end) {
                Ok(r) => return Ok(Ok(r)),
                Err(RecvError::Timeout) => {
                    self.spin.check()?;
                    self.slice_end = Instant::now() + BLOCKING_SLICE;
                }
                Err(RecvError::Lagged { missed }) => return Ok(Err(missed)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Copies up to `max` messages into `buf` (back to back; their sequence numbers and lengths
    /// in `out`) with one call of the batched receive API: `Ok(Ok(n))`, or `Ok(Err(missed))`
    /// when messages were lost to a lap. Busy-polls `try_recv_batch`, or, with a strategy,
    /// waits in `recv_batch` (which takes no deadline: a producer that stops publishing leaves
    /// it to the harness's watchdog).
    #[inline(always)]
    pub fn recv_batch(
        &mut self,
        sub: &mut Subscriber,
        buf: &mut [u8],
        out: &mut Vec<Received>,
        max: usize,
    ) -> Result<std::result::Result<usize, u64>> {
        if self.blocking {
            // Never `Empty`.
            return self.poll(|| sub.recv_batch(buf, out, max));
        }
        self.poll(|| sub.try_recv_batch(buf, out, max))
    }

    /// Like [`Waiter::recv`], but a lost message is an error (ping-pong never laps).
    #[inline(always)]
    fn recv_all(&mut self, sub: &mut Subscriber, buf: &mut [u8]) -> Result<Received> {
        match self.recv(sub, buf)? {
            Ok(r) => Ok(r),
            Err(missed) => Err(format!("lagged: {missed} messages were overwritten").into()),
        }
    }
}

/// The `"wait"` label of a Rust shm reader's rows: its strategy, or `spin` for the busy-poll.
pub fn wait_label(wait: Option<WaitStrategy>) -> &'static str {
    wait.map_or("spin", WaitStrategy::name)
}

fn create(name: &str, capacity: u64) -> Result<Publisher> {
    Ok(Publisher::options().capacity(capacity).create(name)?)
}

/// A lossless segment that never evicts a live registered reader (no max block): a reader
/// that falls behind holds the producer back for as long as it takes, so a throughput run
/// measures the pair's common rate, never an eviction.
fn create_lossless(name: &str, capacity: u64) -> Result<Publisher> {
    Ok(Publisher::options()
        .capacity(capacity)
        .lossless(true)
        .max_block(None)
        .create(name)?)
}

fn field_u64(v: &Value, key: &str, who: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{who} printed no unsigned integer {key:?}: {v}").into())
}

fn field_f64(v: &Value, key: &str, who: &str) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("{who} printed no number {key:?}: {v}").into())
}

// ------------------------------------------------------------------------------- ping-pong

/// Ping-pong over two segments: the harness publishes message `k` on *ping*, the peer busy-spins
/// on *ping* (or waits with `wait`), copies it out, checks its checksum, and publishes a reply
/// of the same size on *pong*; the harness busy-spins on *pong* (or waits with `wait`), copies
/// and checks the reply. Returns the last
/// `samples` round-trip times in ns (one clock read per round trip, taken after the reply was
/// checked), after discarded warm-up round trips: `warmup`, and at least two laps of the ring
/// (so the first-touch page faults of both mappings are not measured).
pub fn pingpong(
    ctx: &Ctx,
    size: usize,
    samples: usize,
    warmup: usize,
    wait: Option<WaitStrategy>,
) -> Result<Vec<u64>> {
    let lap = LATENCY_CAPACITY / shmcast::layout::record_span(size as u64);
    let warmup = warmup.max(usize::try_from(2 * lap).unwrap_or(usize::MAX));
    let total = (warmup + samples) as u64;
    let ping_name = sys::segment_name("ping");
    let pong_name = sys::segment_name("pong");
    let mut publisher = create(&ping_name, LATENCY_CAPACITY)?;
    let mut args = vec![
        "--read".into(),
        ping_name.clone(),
        "--reply".into(),
        pong_name.clone(),
        "--size".into(),
        size.to_string(),
        "--count".into(),
        total.to_string(),
    ];
    args.extend(wait_args(wait));
    let mut peer = Peer::bench_peer(
        ctx,
        "the shm pong peer",
        ctx.peer_cpu(0),
        Role::ShmPong,
        &args,
        &[],
    )?;
    peer.expect_ready()?;
    let mut sub = Subscriber::open(&pong_name, StartAt::Beginning)?;
    let mut payload = Payload::new(size);
    let mut buf = vec![0u8; size];
    let mut rtts = Vec::with_capacity(samples);
    let spin = Spinner::new(ctx.deadline(), ctx.yield_idle, "the shm pong peer");
    let mut waiter = Waiter::new(&mut sub, wait, spin);
    let mut bad = 0u64;
    let warmup = warmup as u64;
    let mut prev = Instant::now();
    for k in 0..total {
        payload.stamp(k);
        publisher.publish(payload.bytes())?;
        let r = waiter.recv_all(&mut sub, &mut buf)?;
        bad += u64::from(r.len != size || checksum(&buf[..r.len]) != payload.expected(k));
        let now = Instant::now();
        if k >= warmup {
            rtts.push(sys::nanos(now - prev));
        }
        prev = now;
    }
    let result = peer.finish_json()?;
    let peer_bad = field_u64(&result, "bad", "the shm pong peer")?;
    if bad + peer_bad > 0 {
        return Err(format!(
            "shm ping-pong: {bad} replies and {peer_bad} pings had a wrong checksum"
        )
        .into());
    }
    Ok(rtts)
}

/// Peer side of [`pingpong`].
pub fn peer_pong(args: &PeerArgs) -> Result<()> {
    let mut sub = Subscriber::open(args.read_name()?, StartAt::Beginning)?;
    let reply = args
        .reply
        .as_deref()
        .ok_or("bench-peer: --reply is required for shm-pong")?;
    let mut publisher = create(reply, LATENCY_CAPACITY)?;
    let mut payload = Payload::new(args.size);
    let mut buf = vec![0u8; args.size];
    let mut waiter = Waiter::new(&mut sub, args.wait, args.spinner("the harness's ping"));
    say("ready")?;
    let mut bad = 0u64;
    for k in 0..args.count {
        let r = waiter.recv_all(&mut sub, &mut buf)?;
        bad += u64::from(r.len != args.size || checksum(&buf[..r.len]) != payload.expected(k));
        payload.stamp(k);
        publisher.publish(payload.bytes())?;
    }
    say(&json!({ "bad": bad }).to_string())
}

// ------------------------------------------------------------------------------- timestamps

/// `--wait NAME` for a peer, when a strategy was chosen.
fn wait_args(wait: Option<WaitStrategy>) -> Vec<String> {
    wait.map(|w| vec!["--wait".to_owned(), w.name().to_owned()])
        .unwrap_or_default()
}

/// Starts the Rust timestamp reader on `name` and waits until it is ready.
fn timestamp_reader(
    ctx: &Ctx,
    name: &str,
    size: usize,
    count: u64,
    wait: Option<WaitStrategy>,
    raw: bool,
) -> Result<Peer> {
    let mut args = vec![
        "--read".into(),
        name.to_owned(),
        "--size".into(),
        size.to_string(),
        "--count".into(),
        count.to_string(),
    ];
    args.extend(wait_args(wait));
    if raw {
        args.push("--raw".into());
    }
    let mut peer = Peer::bench_peer(
        ctx,
        "the shm timestamp reader",
        ctx.peer_cpu(0),
        Role::ShmTimestamp,
        &args,
        &[],
    )?;
    peer.expect_ready()?;
    Ok(peer)
}

/// Checks a timestamp reader's result: no bad checksum, every one of `count` messages
/// accounted for. Returns (received, lagged).
fn check_timestamp_result(v: &Value, who: &str, count: u64) -> Result<(u64, u64)> {
    if let Some(bad) = v.get("bad").and_then(Value::as_u64).filter(|&b| b > 0) {
        return Err(format!("{who}: {bad} messages had a wrong checksum").into());
    }
    let received = field_u64(v, "received", who)?;
    let lagged = field_u64(v, "lagged", who)?;
    if received + lagged != count {
        return Err(format!(
            "{who} accounted for {received} received + {lagged} lagged of {count} messages"
        )
        .into());
    }
    Ok((received, lagged))
}

/// One-way latency by timestamps: the harness publishes `count` messages, one every
/// [`TIMESTAMP_INTERVAL`], each carrying in its first word the `CLOCK_REALTIME` nanoseconds
/// read just before `publish`; the reader (Rust or Go) busy-spins (the Rust one waits with
/// `wait` if given), and for each message records its own `CLOCK_REALTIME` at receipt minus
/// that stamp. Both read the same system clock.
pub fn timestamp(
    ctx: &Ctx,
    reader: Reader<'_>,
    size: usize,
    count: usize,
    wait: Option<WaitStrategy>,
) -> Result<LatencyRow> {
    let count = count as u64;
    let name = sys::segment_name("ts");
    let mut publisher = create(&name, TIMESTAMP_CAPACITY)?;
    let peer = match reader {
        Reader::Rust => timestamp_reader(ctx, &name, size, count, wait, false)?,
        Reader::Go(go) => go.spawn(ctx, &name, "latency", count, wait, Mode::Lossy)?,
    };
    let mut payload = Payload::new(size);
    let start = Instant::now();
    let mut due = start;
    for _ in 0..count {
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        due += TIMESTAMP_INTERVAL;
        payload.stamp(sys::realtime_ns());
        publisher.publish(payload.bytes())?;
    }
    let who = if matches!(reader, Reader::Go(_)) {
        "the Go reader"
    } else {
        "the shm timestamp reader"
    };
    let v = peer.finish_json()?;
    let (received, lagged) = check_timestamp_result(&v, who, count)?;
    Ok(LatencyRow {
        transport: "shm",
        size,
        method: Method::Timestamp,
        reader: Some(reader.label()),
        wait: Some(wait_label(wait)),
        recv_call: wait.is_some(),
        summary: Summary {
            p50: field_f64(&v, "p50_ns", who)?,
            p99: field_f64(&v, "p99_ns", who)?,
            p999: field_f64(&v, "p999_ns", who)?,
            max: field_f64(&v, "max_ns", who)?,
            samples: received,
        },
        lagged: Some(lagged),
        paired_size: None,
    })
}

/// The ring of a wake-up latency run: one page when `size` fits (so the reader's first-touch
/// page faults end with the warm-up), else the smallest ring that holds `size`.
fn wake_capacity(size: usize) -> u64 {
    ((size as u64 + 16) * 4)
        .next_power_of_two()
        .max(shmcast::layout::MIN_CAPACITY)
}

/// Raw one-way latencies of one wake-up latency slice, and what the run around them saw.
pub struct WakeSamples {
    /// Receive time minus send time, ns, one per measured message.
    pub latencies: Vec<u64>,
    /// Measured messages the reader missed.
    pub lagged: u64,
    /// `FUTEX_WAKE` calls the producer made for the measured messages (shm only).
    pub wakeups: Option<u64>,
}

/// Wake-up latency of an idle shm subscriber: after a warm-up (two laps of a small ring,
/// stamped 0 and not measured), the harness publishes `samples` messages, each after a pause
/// taken from `gaps` (long enough for the reader to have parked), each carrying the
/// `CLOCK_REALTIME` nanoseconds read just before `publish`. The reader (a Rust peer waiting in
/// `recv_into_deadline` with `wait`) records its `CLOCK_REALTIME` at receipt minus the stamp.
pub fn wake(
    ctx: &Ctx,
    size: usize,
    samples: usize,
    wait: WaitStrategy,
    gaps: &mut sys::Gaps,
) -> Result<WakeSamples> {
    let capacity = wake_capacity(size);
    let lap = capacity / shmcast::layout::record_span(size as u64);
    let warmup = 2 * lap.max(1);
    let count = warmup + samples as u64;
    let name = sys::segment_name("wake");
    let mut publisher = create(&name, capacity)?;
    let peer = timestamp_reader(ctx, &name, size, count, Some(wait), true)?;
    let mut payload = Payload::new(size);
    let mut run = || -> Result<u64> {
        // Warm-up: every page of the ring touched by both sides, the wake-up path taken.
        payload.stamp(0);
        for _ in 0..warmup {
            publisher.publish(payload.bytes())?;
            std::thread::sleep(WAKE_WARMUP_INTERVAL);
        }
        std::thread::sleep(WAKE_SETTLE);
        let before = publisher.wakeups();
        for gap in gaps.by_ref().take(samples) {
            std::thread::sleep(gap);
            if sys::interrupted() {
                return Err("interrupted".into());
            }
            payload.stamp(sys::realtime_ns());
            publisher.publish(payload.bytes())?;
        }
        Ok(publisher.wakeups() - before)
    };
    let wakeups = match run() {
        Ok(w) => w,
        Err(e) => return Err(peer.explain(e)),
    };
    let who = "the shm wake-up reader";
    let v = peer.finish_json()?;
    check_timestamp_result(&v, who, count)?;
    let latencies = raw_latencies(&v, who)?;
    Ok(WakeSamples {
        // Measured messages without a sample were lost to a lap (warm-up losses do not count).
        lagged: (samples as u64).saturating_sub(latencies.len() as u64),
        latencies,
        wakeups: Some(wakeups),
    })
}

/// Wake-up latency of the Go reader (`--mode latency --wait WAIT`), as [`wake`] measures the
/// Rust one, except that there is no warm-up (the Go reader measures every message it gets;
/// the ring is one page when `size` allows, so only the first message pays for first-touch page
/// faults) and the reader reports percentiles, not samples. Returns them with the messages it
/// missed and the producer's `FUTEX_WAKE` calls.
pub fn wake_go(
    ctx: &Ctx,
    go: &GoReader,
    size: usize,
    samples: usize,
    wait: WaitStrategy,
    gaps: &mut sys::Gaps,
) -> Result<(Summary, u64, u64)> {
    let count = samples as u64;
    let name = sys::segment_name("wake-go");
    let mut publisher = create(&name, wake_capacity(size))?;
    let peer = go.spawn(ctx, &name, "latency", count, Some(wait), Mode::Lossy)?;
    let mut payload = Payload::new(size);
    let mut run = || -> Result<()> {
        for gap in gaps.by_ref().take(samples) {
            std::thread::sleep(gap);
            if sys::interrupted() {
                return Err("interrupted".into());
            }
            payload.stamp(sys::realtime_ns());
            publisher.publish(payload.bytes())?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        return Err(peer.explain(e));
    }
    let who = "the Go reader";
    let v = peer.finish_json()?;
    let (received, lagged) = check_timestamp_result(&v, who, count)?;
    let summary = Summary {
        p50: field_f64(&v, "p50_ns", who)?,
        p99: field_f64(&v, "p99_ns", who)?,
        p999: field_f64(&v, "p999_ns", who)?,
        max: field_f64(&v, "max_ns", who)?,
        samples: received,
    };
    Ok((summary, lagged, publisher.wakeups()))
}

/// Pause between warm-up messages of a wake-up run.
pub const WAKE_WARMUP_INTERVAL: Duration = Duration::from_micros(50);
/// Pause between the warm-up and the first measured message of a wake-up run.
pub const WAKE_SETTLE: Duration = Duration::from_millis(5);

/// The `"latencies_ns"` array a timestamp reader printed with `--raw`.
pub fn raw_latencies(v: &Value, who: &str) -> Result<Vec<u64>> {
    v.get("latencies_ns")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{who} printed no \"latencies_ns\" array"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .ok_or_else(|| format!("{who}: {x} is not a latency in ns").into())
        })
        .collect()
}

/// Peer side of [`timestamp`] (the Rust twin of the Go reader's latency mode) and of [`wake`].
/// A message stamped 0 is a warm-up message: checked, counted as received, not measured.
pub fn peer_timestamp(args: &PeerArgs) -> Result<()> {
    let mut sub = Subscriber::open(args.read_name()?, StartAt::Beginning)?;
    let base = Payload::new(args.size).base();
    let mut buf = vec![0u8; args.size];
    let mut latencies = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    let mut waiter = Waiter::new(&mut sub, args.wait, args.spinner("the harness's messages"));
    say("ready")?;
    let (mut received, mut lagged, mut bad) = (0u64, 0u64, 0u64);
    while received + lagged < args.count {
        match waiter.recv(&mut sub, &mut buf)? {
            Ok(r) => {
                let now = sys::realtime_ns();
                let sent = counter(&buf[..r.len]);
                if sent != 0 {
                    latencies.push(now.saturating_sub(sent));
                }
                bad += u64::from(checksum(&buf[..r.len]) != base.wrapping_add(sent));
                received += 1;
            }
            Err(missed) => lagged += missed,
        }
    }
    let s = Summary::of(&latencies, 1.0);
    let mut v = json!({
        "received": received,
        "lagged": lagged,
        "p50_ns": s.p50,
        "p99_ns": s.p99,
        "p999_ns": s.p999,
        "max_ns": s.max,
        "bad": bad,
    });
    if args.raw {
        v["latencies_ns"] = json!(latencies);
    }
    say(&v.to_string())
}

// ------------------------------------------------------------------------------- throughput

/// One producer, one consumer: the harness publishes `count` messages of `size` bytes as fast
/// as it can into a ring of `--capacity` bytes (default 4 MiB); the consumer (Rust or Go) busy-spins,
/// receiving one message per call, checksumming each, and counting messages lost to laps. Its
/// rate is over its active interval (first receive to last); the producer's over its loop.
///
/// With [`Mode::Lossless`] the segment is created lossless without a max block, the consumer
/// registers (`lossless(true)`, the Go reader's `--lossless`), and the harness waits until it
/// has registered before it publishes the first message: the producer is then held back
/// rather than lap it, and any message lost is an error, not a figure.
///
/// With `batch` (Rust reader only), the consumer receives up to that many messages per call of
/// `Subscriber::try_recv_batch` (`recv_batch` with `wait`), checksumming each.
pub fn throughput(
    ctx: &Ctx,
    reader: Reader<'_>,
    reading: Reading,
    size: usize,
    count: u64,
    wait: Option<WaitStrategy>,
) -> Result<ThroughputRow> {
    let Reading { mode, batch } = reading;
    if batch.is_some() && matches!(reader, Reader::Go(_)) {
        return Err("the Go bench reader has no batched mode".into());
    }
    let name = sys::segment_name(match mode {
        Mode::Lossy => "thr",
        Mode::Lossless => "thr-lossless",
    });
    let mut publisher = match mode {
        Mode::Lossy => create(&name, ctx.capacity)?,
        Mode::Lossless => create_lossless(&name, ctx.capacity)?,
    };
    let who = match (reader, mode) {
        (Reader::Rust, Mode::Lossy) => "the shm consumer",
        (Reader::Rust, Mode::Lossless) => "the lossless shm consumer",
        (Reader::Go(_), Mode::Lossy) => "the Go reader",
        (Reader::Go(_), Mode::Lossless) => "the lossless Go reader",
    };
    let peer = match reader {
        Reader::Rust => {
            let mut peer = consumer(ctx, &name, size, count, 0, wait, reading)?;
            peer.expect_ready()?;
            peer
        }
        Reader::Go(go) => go.spawn(ctx, &name, "throughput", count, wait, mode)?,
    };
    if mode == Mode::Lossless {
        if let Err(e) = wait_registered(ctx, &publisher, &peer, who) {
            return Err(peer.explain(e));
        }
    }
    let producer_rate = match publish_n(&mut publisher, size, count) {
        Ok(rate) => rate,
        Err(e) => return Err(peer.explain(e)),
    };
    let v = peer.finish_json()?;
    if let Some(bad) = v.get("bad").and_then(Value::as_u64).filter(|&b| b > 0) {
        return Err(format!("{who}: {bad} messages had a wrong checksum").into());
    }
    let received = field_u64(&v, "received", who)?;
    let lagged = field_u64(&v, "lagged", who)?;
    if received + lagged != count {
        return Err(format!(
            "{who} accounted for {received} received + {lagged} lagged of {count} messages"
        )
        .into());
    }
    if mode == Mode::Lossless && (lagged != 0 || received != count) {
        return Err(format!(
            "{who} lost messages: {lagged} of {count} lagged ({received} received), on a \
             lossless segment it had registered on before the first publish"
        )
        .into());
    }
    if lagged == 0 {
        // Every message k (= its sequence number) arrived, and its checksum is base + k.
        let base = Payload::new(size).base();
        let sum_k = (u128::from(count) * (u128::from(count) + 1) / 2) as u64;
        let expected = base.wrapping_mul(count).wrapping_add(sum_k);
        match v.get("checksum").and_then(Value::as_u64) {
            Some(sum) if sum != expected => {
                let msg = format!(
                    "{who}: checksum {sum} over all payloads, expected {expected} (the wrapping \
                     sum of the little-endian u64 words of every payload)"
                );
                match reader {
                    Reader::Rust => return Err(msg.into()),
                    // The Go reader's checksum is its own business; say so but keep its figures.
                    Reader::Go(_) => eprintln!("shmcast bench: warning: {msg}"),
                }
            }
            _ => {}
        }
    }
    let msgs_per_s = field_f64(&v, "msgs_per_s", who)?;
    Ok(ThroughputRow {
        transport: "shm",
        size,
        reader: reader.label(),
        mode: mode.label(),
        batch: batch.map(usize::from),
        batch_mean: v.get("batch_mean").and_then(Value::as_f64),
        wait: wait_label(wait),
        recv_call: wait.is_some(),
        sent: count,
        received,
        lagged,
        msgs_per_s,
        bytes_per_s: field_f64(&v, "bytes_per_s", who)?,
        producer_msgs_per_s: producer_rate,
        capacity: Some(ctx.capacity),
        empty_polls: v.get("empty_polls").and_then(Value::as_u64),
        wakeups: Some(publisher.wakeups()),
        rounds: 1,
        min_msgs_per_s: msgs_per_s,
        max_msgs_per_s: msgs_per_s,
        vs_lossy: None,
    })
}

/// Waits until the consumer `peer` holds a reader slot of the lossless segment `publisher`
/// created (its process id in a slot that was not evicted), so that nothing is published
/// before it is protected.
fn wait_registered(ctx: &Ctx, publisher: &Publisher, peer: &Peer, who: &str) -> Result<()> {
    let pid = u64::from(peer.pid());
    let registered = || {
        publisher
            .readers()
            .iter()
            .any(|r| r.pid == pid && !r.evicted)
    };
    let deadline = ctx.deadline();
    while !registered() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sys::interrupted() {
            return Err(
                format!("{who} (process {pid}) did not register in a reader slot in time").into(),
            );
        }
        // Sleeps until some reader registers (at most 10 ms, then looks at the slots again).
        publisher.wait_for_readers(1, Some(left.min(Duration::from_millis(10))))?;
        if !registered() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Starts a Rust consumer peer on `name` (the `i`-th concurrent one), registered on the
/// lossless segment `name` with [`Mode::Lossless`], receiving in batches if `reading` says so.
fn consumer(
    ctx: &Ctx,
    name: &str,
    size: usize,
    count: u64,
    i: usize,
    wait: Option<WaitStrategy>,
    reading: Reading,
) -> Result<Peer> {
    let mut args = vec![
        "--read".into(),
        name.to_owned(),
        "--size".into(),
        size.to_string(),
        "--count".into(),
        count.to_string(),
    ];
    args.extend(wait_args(wait));
    if reading.mode == Mode::Lossless {
        args.push("--lossless".into());
    }
    if let Some(batch) = reading.batch {
        args.extend(["--batch".into(), batch.to_string()]);
    }
    Peer::bench_peer(
        ctx,
        format!("shm consumer {i}"),
        ctx.peer_cpu(i),
        Role::ShmConsume,
        &args,
        &[],
    )
}

/// Publishes messages 1..=count (message `k` stamped with `k`, which is its sequence number in
/// a new segment) as fast as possible; returns messages per second.
fn publish_n(publisher: &mut Publisher, size: usize, count: u64) -> Result<f64> {
    let mut payload = Payload::new(size);
    let start = Instant::now();
    for k in 1..=count {
        payload.stamp(k);
        publisher.publish(payload.bytes())?;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Peer side of [`throughput`] and [`publish_rate`]: receive until every one of `--count`
/// messages was received or reported lost; with `--batch N`, up to N messages per call of the
/// batched receive API.
pub fn peer_consume(args: &PeerArgs) -> Result<()> {
    // Registered (`--lossless`): opening fails rather than read lossy, and an eviction ends the
    // run with an error (`RecvError::Evicted` from the waiter).
    let mut sub = Subscriber::options()
        .start(StartAt::Beginning)
        .lossless(args.lossless)
        .open(args.read_name()?)?;
    let batch = usize::from(args.batch.unwrap_or(1));
    let mut buf = vec![0u8; args.size * batch];
    let mut out = Vec::with_capacity(batch);
    let mut waiter = Waiter::new(&mut sub, args.wait, args.spinner("the producer"));
    let mut tally = Tally::new(args.size);
    say("ready")?;
    let mut calls = 0u64;
    if args.batch.is_none() {
        while tally.received + tally.lagged < args.count {
            match waiter.recv(&mut sub, &mut buf)? {
                Ok(r) => tally.message(r, &buf[..r.len]),
                Err(missed) => tally.lost(missed),
            }
        }
    } else {
        while tally.received + tally.lagged < args.count {
            match waiter.recv_batch(&mut sub, &mut buf, &mut out, batch)? {
                Ok(n) => {
                    calls += 1;
                    let mut offset = 0;
                    for &r in &out[..n] {
                        tally.message(r, &buf[offset..offset + r.len]);
                        offset += r.len;
                    }
                }
                Err(missed) => tally.lost(missed),
            }
        }
    }
    let mut v = tally.result();
    if args.batch.is_some() {
        // Messages per call that returned some: how full the batches were.
        v["batch_mean"] = json!(tally.received as f64 / calls.max(1) as f64);
    }
    // Empty polls happen inside the library's blocking call, out of sight, with --wait.
    if args.wait.is_none() {
        v["empty_polls"] = json!(waiter.empty);
    }
    say(&v.to_string())
}

/// What a throughput consumer counted: every message checksummed as it arrived.
struct Tally {
    size: usize,
    base: u64,
    received: u64,
    lagged: u64,
    bad: u64,
    sum: u64,
    first: Option<Instant>,
}

impl Tally {
    fn new(size: usize) -> Tally {
        Tally {
            size,
            base: Payload::new(size).base(),
            received: 0,
            lagged: 0,
            bad: 0,
            sum: 0,
            first: None,
        }
    }

    /// Message `r`, whose payload is `payload`.
    #[inline(always)]
    fn message(&mut self, r: Received, payload: &[u8]) {
        let c = checksum(payload);
        self.bad += u64::from(r.len != self.size || c != self.base.wrapping_add(r.seq));
        self.sum = self.sum.wrapping_add(c);
        self.received += 1;
        self.started();
    }

    fn lost(&mut self, missed: u64) {
        self.lagged += missed;
        self.started();
    }

    #[inline(always)]
    fn started(&mut self) {
        if self.first.is_none() {
            self.first = Some(Instant::now());
        }
    }

    /// The result line (its rate up to now).
    fn result(&self) -> Value {
        let end = Instant::now();
        // As the Go reader computes it: received / (last receive - first receive).
        let secs = self.first.map_or(0.0, |f| (end - f).as_secs_f64());
        let msgs_per_s = if secs > 0.0 && self.received > 1 {
            self.received as f64 / secs
        } else {
            0.0
        };
        json!({
            "received": self.received,
            "lagged": self.lagged,
            "msgs_per_s": msgs_per_s,
            "bytes_per_s": msgs_per_s * self.size as f64,
            "checksum": self.sum,
            "bad": self.bad,
        })
    }
}

// ------------------------------------------------------------------------------- publish rate

/// The producer's publish rate (`count` messages as fast as possible) with `consumers` Rust
/// consumers busy-reading the same segment from other processes (or waiting with `wait`).
pub fn publish_rate(
    ctx: &Ctx,
    size: usize,
    count: u64,
    consumers: usize,
    wait: Option<WaitStrategy>,
) -> Result<PublishRow> {
    let name = sys::segment_name("rate");
    let mut publisher = create(&name, ctx.capacity)?;
    let mut peers = Vec::with_capacity(consumers);
    for i in 0..consumers {
        peers.push(consumer(ctx, &name, size, count, i, wait, Reading::LOSSY)?);
    }
    for peer in &mut peers {
        peer.expect_ready()?;
    }
    let rate = publish_n(&mut publisher, size, count)?;
    let (mut received, mut lagged) = (0, 0);
    for peer in peers {
        let v = peer.finish_json()?;
        if let Some(bad) = v.get("bad").and_then(Value::as_u64).filter(|&b| b > 0) {
            return Err(format!("a consumer got {bad} messages with a wrong checksum").into());
        }
        received += field_u64(&v, "received", "a consumer")?;
        lagged += field_u64(&v, "lagged", "a consumer")?;
    }
    Ok(PublishRow {
        size,
        consumers,
        msgs_per_s: rate,
        bytes_per_s: rate * size as f64,
        ratio_to_none: 1.0,
        consumer_received: received,
        consumer_lagged: lagged,
        sent: count,
        shared_cpu: consumers > 0 && (!ctx.pinned || consumers > ctx.peer_cpus()),
        capacity: ctx.capacity,
        rounds: 1,
        min_msgs_per_s: rate,
        max_msgs_per_s: rate,
        wait: wait_label(wait),
        recv_call: wait.is_some(),
        wakeups: publisher.wakeups(),
    })
}
