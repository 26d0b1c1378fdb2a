//! The result rows: one serde type per kind, serialised as one JSON object per line with
//! `--json` (docs/CLI.md, "shmcast-bench", lists every field). Values are kept unrounded;
//! serialisation rounds latencies to 0.1 ns, rates to whole numbers and ratios to 3 decimals.

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};

/// Percentiles of one-way latency, in nanoseconds.
#[derive(Clone, Copy, Serialize)]
pub struct Summary {
    #[serde(rename = "p50_ns", serialize_with = "ns")]
    pub p50: f64,
    #[serde(rename = "p99_ns", serialize_with = "ns")]
    pub p99: f64,
    #[serde(rename = "p999_ns", serialize_with = "ns")]
    pub p999: f64,
    #[serde(rename = "max_ns", serialize_with = "ns")]
    pub max: f64,
    pub samples: u64,
}

impl Summary {
    /// Percentiles of `values` (ns) from an HDR histogram (3 significant digits), each divided
    /// by `divisor` (2 for round trips).
    pub fn of(values: &[u64], divisor: f64) -> Summary {
        // 1 ns to 1 hour at 3 significant digits: these bounds are valid, so this cannot fail;
        // the fallback only keeps the harness free of panics.
        let Ok(mut h) = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3) else {
            return Summary {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                samples: 0,
            };
        };
        for &v in values {
            h.saturating_record(v);
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 / divisor;
        Summary {
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / divisor,
            samples: h.len(),
        }
    }
}

/// How a latency was obtained.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Round trip between the two processes, halved.
    #[serde(rename = "pingpong-halved")]
    PingPongHalved,
    /// Receive time minus the send time written into the message, on one clock.
    #[serde(rename = "timestamp")]
    Timestamp,
}

/// The `"recv"` value of rows whose shm reader waited in its library's blocking call: the
/// Rust `Subscriber::recv_into_deadline` (or `recv_batch`), or the Go reader's `Reader.Read`.
pub fn recv_call(reader: &str, batch: bool) -> &'static str {
    match (reader, batch) {
        (_, true) => "recv_batch",
        ("go", _) => "Read",
        _ => "recv_into_deadline",
    }
}

/// One latency result (`"metric":"latency"`).
#[derive(Serialize)]
pub struct LatencyRow {
    pub transport: &'static str,
    pub metric: &'static str,
    pub size: usize,
    pub method: Method,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reader: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<&'static str>,
    /// The shm reader's blocking call, when it waited in one (`--wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv: Option<&'static str>,
    #[serde(flatten)]
    pub summary: Summary,
    /// Messages the reader missed (timestamp method).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lagged: Option<u64>,
    /// For the floor: the message size whose shm ping-pong it was interleaved with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paired_size: Option<usize>,
    /// p50 over the floor's, and over shm ping-pong's of the same size (set by the reporter).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ratio")]
    pub p50_vs_floor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ratio")]
    pub p50_vs_shm: Option<f64>,
}

impl LatencyRow {
    /// A row from round-trip samples (halved) or one-way samples.
    pub fn new(
        transport: &'static str,
        size: usize,
        method: Method,
        reader: Option<&'static str>,
        wait: Option<&'static str>,
        samples: &[u64],
    ) -> LatencyRow {
        let divisor = if method == Method::PingPongHalved {
            2.0
        } else {
            1.0
        };
        LatencyRow {
            transport,
            metric: "latency",
            size,
            method,
            reader,
            wait,
            recv: None,
            summary: Summary::of(samples, divisor),
            lagged: None,
            paired_size: None,
            p50_vs_floor: None,
            p50_vs_shm: None,
        }
    }
}

/// One consumer-throughput result (`"metric":"throughput","side":"consumer"`).
#[derive(Serialize)]
pub struct ThroughputRow {
    pub transport: &'static str,
    pub metric: &'static str,
    pub side: &'static str,
    pub size: usize,
    /// The consumer's language: `"rust"` (the Rust `Subscriber`, or the socket and pipe
    /// reader of a Rust peer) or `"go"`.
    pub reader: &'static str,
    /// `"lossy"` (the producer may overwrite what the reader has not read) or `"lossless"` (a
    /// registered reader on a lossless segment, or a socket or pipe, whose writer blocks).
    pub mode: &'static str,
    pub wait: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv: Option<&'static str>,
    /// Messages received per call of a batched receive API, at most, when one was used…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u16>,
    /// …and on average over the calls that returned some.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ratio")]
    pub batch_mean: Option<f64>,
    /// Received messages per second over the consumer's active interval.
    #[serde(serialize_with = "rate")]
    pub msgs_per_s: f64,
    #[serde(serialize_with = "rate")]
    pub bytes_per_s: f64,
    pub sent: u64,
    pub received: u64,
    pub lagged: u64,
    pub lost_fraction: f64,
    /// The producer's send rate over its own loop.
    #[serde(serialize_with = "rate")]
    pub producer_msgs_per_s: f64,
    #[serde(flatten)]
    pub rounds: Rounds,
    /// Lossless shm rows: `msgs_per_s` over that of the lossy row of the same size and reader.
    #[serde(
        rename = "msgs_per_s_vs_lossy",
        skip_serializing_if = "Option::is_none",
        serialize_with = "ratio"
    )]
    pub vs_lossy: Option<f64>,
    /// Ring capacity (shm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Polls that found nothing (busy-polling Rust shm reader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_polls: Option<u64>,
    /// `FUTEX_WAKE` calls of the producer (shm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeups: Option<u64>,
}

/// Rounds of a rate measured several times and reported as the median round, with the
/// slowest and fastest beside it.
#[derive(Clone, Copy, PartialEq, Debug, Serialize)]
pub struct Rounds {
    pub rounds: usize,
    #[serde(rename = "msgs_per_s_min", serialize_with = "rate")]
    pub min: f64,
    #[serde(rename = "msgs_per_s_max", serialize_with = "rate")]
    pub max: f64,
}

impl Rounds {
    /// One round at `rate`.
    pub fn one(rate: f64) -> Rounds {
        Rounds {
            rounds: 1,
            min: rate,
            max: rate,
        }
    }
}

/// A row whose rate is measured in rounds.
pub trait Rated {
    fn msgs_per_s(&self) -> f64;
    fn rounds_mut(&mut self) -> &mut Rounds;
}

macro_rules! rated {
    ($($t:ty),*) => {$(
        impl Rated for $t {
            fn msgs_per_s(&self) -> f64 {
                self.msgs_per_s
            }
            fn rounds_mut(&mut self) -> &mut Rounds {
                &mut self.rounds
            }
        }
    )*};
}
rated!(ThroughputRow, PublishRow, HostileRow);

/// One producer publish-rate result (`"metric":"throughput","side":"producer"`).
#[derive(Serialize)]
pub struct PublishRow {
    pub transport: &'static str,
    pub metric: &'static str,
    pub side: &'static str,
    pub size: usize,
    pub consumers: usize,
    /// The consumers, when there are any: Rust subscribers, lossy.
    pub reader: &'static str,
    pub mode: &'static str,
    pub wait: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv: Option<&'static str>,
    #[serde(serialize_with = "rate")]
    pub msgs_per_s: f64,
    #[serde(serialize_with = "rate")]
    pub bytes_per_s: f64,
    /// `msgs_per_s` over the rate with no consumer.
    #[serde(serialize_with = "round3")]
    pub ratio_to_none: f64,
    #[serde(flatten)]
    pub rounds: Rounds,
    pub sent: u64,
    /// Messages the consumers received and missed, summed over them.
    pub consumer_received: u64,
    pub consumer_lagged: u64,
    /// Whether some consumers share a CPU.
    pub shared_cpu: bool,
    pub capacity: u64,
    /// `FUTEX_WAKE` calls the producer made in the reported round.
    pub wakeups: u64,
}

/// One wake-up latency result: a receiver that is idle when each message arrives.
#[derive(Serialize)]
pub struct WakeRow {
    pub transport: &'static str,
    pub metric: &'static str,
    pub size: usize,
    pub method: Method,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reader: Option<&'static str>,
    pub wait: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lagged: Option<u64>,
    /// The range of the pauses before each message, ns.
    pub gap_min_ns: u64,
    pub gap_max_ns: u64,
    /// `FUTEX_WAKE` calls the producer made for the measured messages (shm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeups: Option<u64>,
    /// p50 and p99 over those of the blocking UDS stream reader in the same run (shm rows).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ratio")]
    pub p50_vs_uds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ratio")]
    pub p99_vs_uds: Option<f64>,
}

/// The CPU an idle subscriber used (`"metric":"idle_cpu"`).
#[derive(Serialize)]
pub struct IdleRow {
    pub transport: &'static str,
    pub metric: &'static str,
    pub reader: &'static str,
    pub wait: &'static str,
    /// Percent of one core.
    #[serde(serialize_with = "round3")]
    pub cpu_percent: f64,
    pub cpu_ns: u64,
    pub interval_ns: u64,
    pub context_switches: u64,
    pub can_park: bool,
}

/// What one publish cost the producer with `parked` subscribers asleep.
#[derive(Serialize)]
pub struct PublishCostRow {
    pub transport: &'static str,
    pub metric: &'static str,
    pub parked: usize,
    pub size: usize,
    #[serde(flatten)]
    pub summary: Summary,
    /// Messages the parked subscribers received in order, of `expected` (parked × samples).
    pub received: u64,
    pub expected: u64,
    pub lagged: u64,
    pub all_received: bool,
    /// `FUTEX_WAKE` calls of the producer.
    pub wakeups: u64,
    /// Publishes made without /proc confirming that every subscriber slept.
    pub unverified_sleep: u64,
    pub readers: &'static str,
}

/// The producer's rate with or without a thread storing `parked` without sleeping.
#[derive(Serialize)]
pub struct HostileRow {
    pub transport: &'static str,
    pub metric: &'static str,
    pub side: &'static str,
    pub size: usize,
    pub consumers: usize,
    #[serde(rename = "hostile_parked_writer")]
    pub hostile: bool,
    #[serde(serialize_with = "rate")]
    pub msgs_per_s: f64,
    /// The rate as a fraction of the rate without the writer (median rounds).
    #[serde(
        rename = "ratio_to_quiet",
        skip_serializing_if = "Option::is_none",
        serialize_with = "ratio"
    )]
    pub vs_quiet: Option<f64>,
    #[serde(flatten)]
    pub rounds: Rounds,
    pub sent: u64,
    pub wakeups: u64,
    #[serde(rename = "wake_throttles")]
    pub throttles: u64,
    pub hostile_stores: u64,
}

/// Any result.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Row {
    Latency(LatencyRow),
    Throughput(ThroughputRow),
    Publish(PublishRow),
    Wake(WakeRow),
    Idle(IdleRow),
    PublishCost(PublishCostRow),
    Hostile(HostileRow),
}

/// A row as printed: the row's fields, then what the reporter adds to every one.
#[derive(Serialize)]
pub struct Line<'a> {
    #[serde(flatten)]
    pub row: &'a Row,
    /// Hypervisor steal on the CPUs in use since the previous row, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steal_ms: Option<u64>,
    pub pinned: bool,
}

/// A latency in ns with one decimal (round trips halve to .5).
fn ns<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 10.0).round() / 10.0)
}

/// A rate as a whole number.
fn rate<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.round() as u64)
}

/// A ratio with three decimals.
fn round3<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 1000.0).round() / 1000.0)
}

fn ratio<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => round3(v, s),
        None => s.serialize_none(),
    }
}
