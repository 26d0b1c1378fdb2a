//! A whole run: the flags, how many samples each measurement takes, and the order of the
//! measurements (interleaved where two of them are compared, so that a slow spell of the
//! machine hits both alike).

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use shmcast::WaitStrategy;

use crate::go_reader::GoReader;
use crate::link::Setup;
use crate::measure::{idle, pingpong, publish_cost, throughput, timestamp};
use crate::process::{self, Reader};
use crate::report::{LatencyRow, Method, Rated, Reporter, Rounds, Row, Summary, WakeRow};
use crate::spec::Transport;
use crate::sys::{self, Ctx};
use crate::{floor, Result};

/// Largest payload the harness accepts (the seqpacket socket must hold one frame, and the
/// latency ring `capacity / 4 - 16`).
const MAX_SIZE: usize = 65536;

/// The flags of `shmcast-bench`.
#[derive(clap::Parser)]
#[command(
    name = "shmcast-bench",
    version,
    about = "Measure shmcast's latency and throughput across two processes, against Unix sockets \
             and pipes, with the hardware floor measured in the same run"
)]
pub struct BenchArgs {
    /// Payload sizes in bytes (8 to 65536), comma-separated [default: 64,1024,4096; with
    /// --quick: 64].
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    sizes: Option<Vec<usize>>,
    /// CPUs to pin to: the harness on the first, its peer on the second; producer-rate
    /// consumers take the second and later ones in turn [default: the first two CPUs this
    /// process may run on].
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Number of consumers in the "N consumers" producer-rate run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=64))]
    consumers: u16,
    /// Few samples and, unless --sizes is given, 64-byte messages only: a few seconds.
    #[arg(long)]
    quick: bool,
    /// One JSON object per result line.
    #[arg(long)]
    json: bool,
    /// `go` adds Go-reader runs (timestamp latency and throughput) beside the Rust ones.
    #[arg(long, value_enum, default_value = "rust")]
    consumer: ConsumerKind,
    /// The Go reader binary (default: build go-client/cmd/shmcast-bench-reader with `go build`).
    #[arg(long, value_name = "PATH")]
    go_reader: Option<PathBuf>,
    /// Also measure the socket and pipe transports with busy-polling (non-blocking) readers.
    #[arg(long)]
    spin_sockets: bool,
    /// Run only these parts.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Option<Vec<Part>>,
    /// How the Rust shm readers wait: spin, yield, backoff or block, in the library's
    /// `recv_into_deadline` [default: the harness's own busy-poll of `try_recv_into` for the
    /// latency, timestamp, throughput and producer parts; block for the wake part].
    #[arg(long, value_name = "STRATEGY")]
    wait: Option<WaitStrategy>,
    /// Ping-pong samples per size for the floor and shmcast [default: 200000; --quick: 50000].
    #[arg(long)]
    samples: Option<usize>,
    /// Ping-pong samples per size for sockets and pipes [default: 10000; --quick: 2000].
    #[arg(long)]
    socket_samples: Option<usize>,
    /// Capacity of the shm throughput and publish-rate rings: a power of two, with an optional
    /// K, M or G suffix.
    #[arg(long, default_value = "4M", value_parser = parse_capacity)]
    capacity: u64,
    /// Limit for each single run (one transport, one size), in seconds.
    #[arg(long, default_value = "60", value_parser = parse_timeout)]
    timeout: Duration,
}

/// Which readers run the shm timestamp-latency and throughput measurements.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConsumerKind {
    /// The Rust `Subscriber` only.
    Rust,
    /// The Rust `Subscriber` and the Go reader (`go-client/cmd/shmcast-bench-reader`).
    Go,
}

/// The parts of a run, for `--only`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Cache-line floor.
    Floor,
    /// Ping-pong latency: shm, UDS stream, UDS seqpacket, pipe.
    Latency,
    /// One-way shm latency by timestamps (Rust and Go readers).
    Timestamp,
    /// Throughput, one producer and one consumer.
    Throughput,
    /// Publish rate with 0, 1 and N consumers.
    Producer,
    /// Wake-up latency of an idle reader: shm against a blocking UDS stream reader.
    Wake,
    /// CPU used by an idle subscriber with each wait strategy.
    Idle,
    /// Cost of one publish with 0, 10 and 100 subscribers parked, and the publish rate with a
    /// process storing `parked` in a loop.
    PublishCost,
}

/// Messages per call of the batched lossless throughput row (`Subscriber::try_recv_batch`).
const THROUGHPUT_BATCH: u16 = 64;

/// Parked subscribers in the publish-cost part.
const PARKED_COUNTS: [usize; 3] = [0, 10, 100];

/// The pauses before each message of the wake-up latency part: long enough for a reader to
/// have gone to sleep (a `block` subscriber parks within microseconds; a VM's idle vCPU halts
/// after at most a few hundred), random within the range so that sends do not lock on to the
/// scheduler tick.
const WAKE_GAP_MIN: Duration = Duration::from_millis(1);
const WAKE_GAP_MAX: Duration = Duration::from_micros(1500);

/// How many samples and messages each measurement uses.
struct Plan {
    sizes: Vec<usize>,
    samples: usize,
    socket_samples: usize,
    timestamp_messages: usize,
    /// Throughput: at most this many messages…
    max_messages: u64,
    /// …and at most this many payload bytes per run.
    max_bytes: u64,
    socket_max_messages: u64,
    socket_max_bytes: u64,
    producer_max_messages: u64,
    producer_max_bytes: u64,
    /// Rounds of the publish-rate measurement (the median is reported).
    producer_rounds: usize,
    /// Rounds of each shm throughput measurement (the median is reported).
    throughput_rounds: usize,
    /// Wake-up latency: measured messages per transport.
    wake_samples: usize,
    /// How long each idle subscriber waits.
    idle_interval: Duration,
    /// Timed publishes per parked-subscriber count.
    cost_samples: usize,
    /// Rounds (each configuration) and messages per round of the hostile-writer rate.
    hostile_rounds: usize,
    hostile_messages: u64,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let quick = args.quick;
        let sizes = args.sizes.clone().unwrap_or_else(|| {
            if quick {
                vec![64]
            } else {
                vec![64, 1024, 4096]
            }
        });
        let pick = |full: u64, fast: u64| if quick { fast } else { full };
        Plan {
            sizes,
            samples: args
                .samples
                .unwrap_or(pick(200_000, 50_000) as usize)
                .max(1),
            socket_samples: args
                .socket_samples
                .unwrap_or(pick(10_000, 2_000) as usize)
                .max(1),
            timestamp_messages: pick(20_000, 5_000) as usize,
            max_messages: pick(10_000_000, 1_000_000),
            max_bytes: pick(4 << 30, 128 << 20),
            socket_max_messages: pick(200_000, 50_000),
            socket_max_bytes: pick(256 << 20, 32 << 20),
            producer_max_messages: pick(5_000_000, 1_000_000),
            producer_max_bytes: pick(2 << 30, 128 << 20),
            producer_rounds: pick(3, 1) as usize,
            throughput_rounds: pick(3, 1) as usize,
            wake_samples: pick(2_000, 200) as usize,
            idle_interval: Duration::from_millis(pick(1_000, 250)),
            cost_samples: pick(1_000, 200) as usize,
            hostile_rounds: pick(5, 3) as usize,
            hostile_messages: pick(20_000_000, 5_000_000),
        }
    }

    fn messages(max_messages: u64, max_bytes: u64, size: usize) -> u64 {
        (max_bytes / size as u64).clamp(1, max_messages)
    }

    fn warmup(samples: usize) -> usize {
        (samples / 10).clamp(100, 20_000)
    }
}

/// Runs `shmcast-bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    // Remove every segment this run named, whatever happens below.
    let _cleanup = sys::SegmentCleanup;
    sys::catch_interrupts()?;
    process::start_watchdog()?;
    match measure(&args) {
        Err(_) if sys::interrupted() => Err("interrupted (peers killed, segments removed)".into()),
        result => result,
    }
}

fn measure(args: &BenchArgs) -> Result<()> {
    let plan = Plan::new(args);
    let largest = plan.sizes.iter().copied().max().unwrap_or(0) as u64;
    if largest > shmcast::layout::max_payload(args.capacity) {
        return Err(format!(
            "--capacity {}: a {largest}-byte message needs a ring of at least {} bytes \
             (the largest message is a quarter of the capacity, less 16 bytes)",
            args.capacity,
            ((largest + 16) * 4).next_power_of_two()
        )
        .into());
    }
    let ctx = Ctx::new(args.cpus.as_deref(), args.timeout, args.capacity)?;
    let wants = |part: Part| args.only.as_ref().is_none_or(|o| o.contains(&part));
    let go_reader = match args.consumer {
        ConsumerKind::Go
            if wants(Part::Timestamp) || wants(Part::Throughput) || wants(Part::Wake) =>
        {
            Some(GoReader::locate(args.go_reader.as_deref())?)
        }
        _ => None,
    };
    let mut out = Reporter::new(args.json, &ctx);
    out.header(&sys::HostInfo::collect(), &ctx)?;

    let mut rows = Vec::new();
    let floor_row = |samples: &[u64], paired: Option<usize>| {
        let mut row = LatencyRow::new("floor", 8, Method::PingPongHalved, None, None, samples);
        row.paired_size = paired;
        Row::Latency(row)
    };
    if wants(Part::Floor) && !wants(Part::Latency) {
        let samples = floor::run(&ctx, plan.samples, Plan::warmup(plan.samples))?;
        rows.push(out.emit(floor_row(&samples, None))?);
    }
    // The shm setups: busy-polling (or waiting with --wait) readers on a --capacity ring.
    let shm = Setup {
        wait: args.wait,
        ..Setup::new(Transport::Shm, args.capacity)
    };
    // The socket and pipe setups: blocking, and busy-polling with --spin-sockets.
    let mut baselines = Vec::new();
    for transport in Transport::BASELINES {
        baselines.push(Setup::new(transport, 0));
        if args.spin_sockets {
            baselines.push(Setup {
                nonblocking: true,
                ..Setup::new(transport, 0)
            });
        }
    }
    let mut readers = vec![Reader::Rust];
    if let Some(go) = &go_reader {
        readers.push(Reader::Go(go));
    }
    if wants(Part::Latency) {
        for &size in &plan.sizes {
            // The floor and shm are measured in interleaved slices, so that both see the same
            // placement of the virtual CPUs on the host, which can change during a run.
            let slices = if plan.samples >= 40_000 { 4 } else { 1 };
            let per = plan.samples.div_ceil(slices);
            let (mut floor_samples, mut shm_samples) = (Vec::new(), Vec::new());
            for _ in 0..slices {
                if wants(Part::Floor) {
                    floor_samples.extend(floor::run(&ctx, per, Plan::warmup(per))?);
                }
                shm_samples.extend(pingpong::run(&ctx, &shm, size, per, Plan::warmup(per))?);
            }
            if wants(Part::Floor) {
                rows.push(out.emit(floor_row(&floor_samples, Some(size)))?);
            }
            let row = latency_row(
                &shm,
                Reader::Rust,
                size,
                Method::PingPongHalved,
                &shm_samples,
            );
            rows.push(out.emit(Row::Latency(row))?);
            for setup in &baselines {
                let n = plan.socket_samples;
                let rtts = pingpong::run(&ctx, setup, size, n, Plan::warmup(n))?;
                let row = latency_row(setup, Reader::Rust, size, Method::PingPongHalved, &rtts);
                rows.push(out.emit(Row::Latency(row))?);
            }
        }
    }
    if wants(Part::Timestamp) {
        for &size in &plan.sizes {
            for &reader in &readers {
                let s = timestamp::paced(&ctx, reader, &shm, size, plan.timestamp_messages)?;
                let mut row = latency_row(&shm, reader, size, Method::Timestamp, &s.latencies);
                row.lagged = Some(s.lagged);
                rows.push(out.emit(Row::Latency(row))?);
            }
        }
    }
    if wants(Part::Throughput) {
        for &size in &plan.sizes {
            let count = Plan::messages(plan.max_messages, plan.max_bytes, size);
            // Each reader lossy, then registered on a lossless segment (the Rust one also
            // receiving in batches), all in the same rounds.
            let lossless = Setup {
                lossless: true,
                ..shm
            };
            let batched = Setup {
                batch: Some(THROUGHPUT_BATCH),
                ..lossless
            };
            let mut configs = vec![
                (Reader::Rust, shm),
                (Reader::Rust, lossless),
                (Reader::Rust, batched),
            ];
            if let Some(go) = &go_reader {
                configs.push((Reader::Go(go), shm));
                configs.push((Reader::Go(go), lossless));
            }
            let runs = interleaved_rounds(&configs, plan.throughput_rounds, |(reader, setup)| {
                throughput::consumer(&ctx, reader, &setup, size, count)
            })?;
            let mut lossy = None;
            for (rounds, (_, setup)) in runs.into_iter().zip(&configs) {
                let Some(mut row) = median_round(rounds) else {
                    continue;
                };
                if setup.lossless {
                    row.vs_lossy = lossy.filter(|&l| l > 0.0).map(|l| row.msgs_per_s / l);
                } else {
                    lossy = Some(row.msgs_per_s);
                }
                rows.push(out.emit(Row::Throughput(row))?);
            }
            let count = Plan::messages(plan.socket_max_messages, plan.socket_max_bytes, size);
            for setup in &baselines {
                let row = throughput::consumer(&ctx, Reader::Rust, setup, size, count)?;
                rows.push(out.emit(Row::Throughput(row))?);
            }
        }
    }
    if wants(Part::Producer) {
        let configs = [0, 1, usize::from(args.consumers)];
        for &size in &plan.sizes {
            let count = Plan::messages(plan.producer_max_messages, plan.producer_max_bytes, size);
            let runs = interleaved_rounds(&configs, plan.producer_rounds, |consumers| {
                throughput::producer(&ctx, &shm, size, count, consumers)
            })?;
            let mut none = None;
            for mut row in runs.into_iter().filter_map(median_round) {
                let base = *none.get_or_insert(row.msgs_per_s);
                row.ratio_to_none = row.msgs_per_s / base;
                rows.push(out.emit(Row::Publish(row))?);
            }
        }
    }
    if wants(Part::Wake) {
        let size = plan.sizes.iter().copied().min().unwrap_or(64);
        let wake_shm = Setup {
            wait: Some(args.wait.unwrap_or(WaitStrategy::Block)),
            ..shm
        };
        for row in wake(&ctx, &wake_shm, &readers, size, plan.wake_samples)? {
            rows.push(out.emit(Row::Wake(row))?);
        }
    }
    if wants(Part::Idle) {
        for wait in idle::STRATEGIES {
            let row = idle::measure(&ctx, wait, plan.idle_interval)?;
            rows.push(out.emit(Row::Idle(row))?);
        }
    }
    if wants(Part::PublishCost) {
        for parked in PARKED_COUNTS {
            let row = publish_cost::measure(&ctx, parked, plan.cost_samples)?;
            rows.push(out.emit(Row::PublishCost(row))?);
        }
        let runs = interleaved_rounds(&[false, true], plan.hostile_rounds, |hostile| {
            publish_cost::hostile_round(&ctx, plan.hostile_messages, hostile)
        })?;
        let mut quiet = None;
        for mut row in runs.into_iter().filter_map(median_round) {
            let base = *quiet.get_or_insert(row.msgs_per_s);
            row.vs_quiet = Some(row.msgs_per_s / base);
            rows.push(out.emit(Row::Hostile(row))?);
        }
    }
    out.finish(&rows)
}

/// A latency row of `reader` over `setup` from its samples (round trips are halved).
fn latency_row(
    setup: &Setup,
    reader: Reader<'_>,
    size: usize,
    method: Method,
    samples: &[u64],
) -> LatencyRow {
    let shm = setup.transport == Transport::Shm;
    let mut row = LatencyRow::new(
        setup.transport.label(),
        size,
        method,
        shm.then(|| reader.label()),
        Some(setup.wait_label()),
        samples,
    );
    row.recv =
        (shm && setup.wait.is_some()).then(|| crate::report::recv_call(reader.label(), false));
    row
}

/// Runs `measure` for each of `configs`, `rounds` times, the configurations interleaved (a, b,
/// a, b, …) so that a slow spell of the machine hits them alike. Returns each configuration's
/// rounds, in the order of `configs`.
fn interleaved_rounds<C: Copy, R>(
    configs: &[C],
    rounds: usize,
    mut measure: impl FnMut(C) -> Result<R>,
) -> Result<Vec<Vec<R>>> {
    let mut runs: Vec<Vec<R>> = configs.iter().map(|_| Vec::with_capacity(rounds)).collect();
    for _ in 0..rounds {
        for (of_config, &config) in runs.iter_mut().zip(configs) {
            of_config.push(measure(config)?);
        }
    }
    Ok(runs)
}

/// The median of `rounds` by rate, carrying the number of rounds and the lowest and highest
/// rate; `None` if there were no rounds.
fn median_round<R: Rated>(mut rounds: Vec<R>) -> Option<R> {
    rounds.sort_by(|a, b| a.msgs_per_s().total_cmp(&b.msgs_per_s()));
    let (n, min, max) = (
        rounds.len(),
        rounds.first()?.msgs_per_s(),
        rounds.last()?.msgs_per_s(),
    );
    let mut row = rounds.into_iter().nth(n / 2)?;
    *row.rounds_mut() = Rounds {
        rounds: n,
        min,
        max,
    };
    Some(row)
}

/// The wake-up latency part: `samples` messages to each idle reader of `readers` over `shm`
/// and as many to a blocking UDS stream reader, in interleaved slices (shm readers, UDS, shm
/// readers, UDS, …, each with its own reader process) so that all see the same moods of the
/// machine, each slice with the same sequence of pauses. Returns the shm rows (with their
/// ratios to UDS) and the UDS row.
fn wake(
    ctx: &Ctx,
    shm: &Setup,
    readers: &[Reader<'_>],
    size: usize,
    samples: usize,
) -> Result<Vec<WakeRow>> {
    // One entry per row, in report order; a new reader or wait variant is one more entry
    // (with its `Setup` field or `Reader`), the UDS baseline last.
    let uds = Setup::new(Transport::UdsStream, 0);
    let mut runs: Vec<(Setup, Reader<'_>)> = readers.iter().map(|&r| (*shm, r)).collect();
    // The Rust reader as an AsyncSubscriber (woken through the wait hub), next to the blocking
    // one it is compared with; not when --wait asks for another strategy.
    if shm.wait == Some(WaitStrategy::Block) {
        let asynch = Setup {
            asynch: true,
            ..*shm
        };
        runs.insert(1, (asynch, Reader::Rust));
    }
    runs.push((uds, Reader::Rust));
    let slices = if samples >= 1000 { 4 } else { 1 };
    let per = samples.div_ceil(slices);
    let mut all: Vec<timestamp::Samples> = runs
        .iter()
        .map(|(setup, _)| timestamp::Samples {
            latencies: Vec::with_capacity(samples),
            lagged: 0,
            wakeups: (setup.transport == Transport::Shm).then_some(0),
        })
        .collect();
    for slice in 0..slices {
        let n = per.min(samples - slice * per);
        for ((setup, reader), total) in runs.iter().zip(&mut all) {
            let mut gaps = sys::Gaps::new(slice as u64, WAKE_GAP_MIN, WAKE_GAP_MAX);
            let s = timestamp::wake(ctx, *reader, setup, size, n, &mut gaps)?;
            total.latencies.extend(s.latencies);
            total.lagged += s.lagged;
            total.wakeups = total.wakeups.zip(s.wakeups).map(|(a, b)| a + b);
        }
    }
    let uds_p = Summary::of(all.last().map_or(&[][..], |s| &s.latencies), 1.0);
    let valid = uds_p.p50 > 0.0 && uds_p.p99 > 0.0;
    Ok(runs
        .iter()
        .zip(all)
        .map(|((setup, reader), s)| {
            let shm = setup.transport == Transport::Shm;
            let summary = Summary::of(&s.latencies, 1.0);
            let vs = |p: f64, uds: f64| (shm && valid).then(|| p / uds);
            WakeRow {
                transport: setup.transport.label(),
                metric: "wake_latency",
                size,
                method: Method::Timestamp,
                reader: shm.then(|| reader.label()),
                wait: setup.wait_label(),
                summary,
                lagged: shm.then_some(s.lagged),
                gap_min_ns: sys::nanos(WAKE_GAP_MIN),
                gap_max_ns: sys::nanos(WAKE_GAP_MAX),
                wakeups: s.wakeups,
                p50_vs_uds: vs(summary.p50, uds_p.p50),
                p99_vs_uds: vs(summary.p99, uds_p.p99),
            }
        })
        .collect())
}

fn parse_size(s: &str) -> std::result::Result<usize, String> {
    shmcast_cli::parse_bytes(s)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (8..=MAX_SIZE).contains(n))
        .ok_or_else(|| format!("{s:?} is not a message size from 8 to {MAX_SIZE} bytes"))
}

fn parse_capacity(s: &str) -> std::result::Result<u64, String> {
    shmcast_cli::parse_bytes(s)
        .ok()
        .filter(|c| {
            c.is_power_of_two()
                && (shmcast::layout::MIN_CAPACITY..=shmcast::layout::MAX_CAPACITY).contains(c)
        })
        .ok_or_else(|| {
            format!("{s:?} is not a ring capacity (a power of two from 4K to 1024G, e.g. 4M)")
        })
}

/// `--timeout`: the shared rule for seconds, and more than 0 (a run of no time fails at once).
fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    shmcast_cli::parse_seconds(s).and_then(|d| {
        if d.is_zero() {
            Err("--timeout must be more than 0 seconds".to_owned())
        } else {
            Ok(d)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{interleaved_rounds, median_round};
    use crate::report::{Rated, Rounds};

    #[derive(Debug, PartialEq)]
    struct Rate(f64, &'static str, Rounds);

    impl Rated for Rate {
        fn msgs_per_s(&self) -> f64 {
            self.0
        }
        fn rounds_mut(&mut self) -> &mut Rounds {
            &mut self.2
        }
    }

    fn rate(r: f64, tag: &'static str) -> Rate {
        Rate(r, tag, Rounds::one(0.0))
    }

    fn rounds(rounds: usize, min: f64, max: f64) -> Rounds {
        Rounds { rounds, min, max }
    }

    #[test]
    fn median_round_picks_the_middle_round_and_the_extremes() {
        let all = vec![rate(30.0, "b"), rate(10.0, "a"), rate(20.0, "c")];
        let want = Rate(20.0, "c", rounds(3, 10.0, 30.0));
        assert_eq!(median_round(all), Some(want));
        // An even number of rounds reports the upper of the two middle ones.
        let all = [4.0, 1.0, 3.0, 2.0].map(|r| rate(r, ""));
        let want = Rate(3.0, "", rounds(4, 1.0, 4.0));
        assert_eq!(median_round(all.into()), Some(want));
        assert_eq!(median_round(Vec::<Rate>::new()), None);
    }

    #[test]
    fn interleaved_rounds_alternate_the_configurations() {
        let mut order = Vec::new();
        let runs = interleaved_rounds(&['a', 'b'], 3, |c| {
            order.push(c);
            Ok(order.len())
        })
        .expect("no error");
        assert_eq!(order, ['a', 'b', 'a', 'b', 'a', 'b']);
        assert_eq!(runs, [vec![1, 3, 5], vec![2, 4, 6]]);
        // The first failure ends the measurement.
        let failed = interleaved_rounds(
            &[1, 2],
            2,
            |c| if c == 2 { Err("no".into()) } else { Ok(c) },
        );
        assert!(failed.is_err());
    }
}
