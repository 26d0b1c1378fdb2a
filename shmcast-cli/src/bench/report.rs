//! Results: one JSON object per line (`--json`), or tables with ratios.

use std::io::{IsTerminal, Write};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::sys::{self, cpu_list, Ctx, HostInfo};
use super::Result;

/// The rows of one kind: `rows_of!(rows, Row::Latency)` is a `Vec<&LatencyRow>`.
macro_rules! rows_of {
    ($rows:expr, $variant:path) => {
        $rows
            .iter()
            .filter_map(|r| match r {
                $variant(row) => Some(row),
                _ => None,
            })
            .collect()
    };
}

/// How a latency was obtained.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Round trip between the two processes, halved.
    PingPongHalved,
    /// Receive time minus the send time written into the message, on one clock.
    Timestamp,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::PingPongHalved => "pingpong-halved",
            Method::Timestamp => "timestamp",
        }
    }
}

/// The `"recv"` value of rows whose shm reader waited in its library's blocking call: the Rust
/// `Subscriber::recv_into_deadline`, or the Go reader's `Reader.Read`.
fn recv_call(reader: Option<&str>) -> &'static str {
    if reader == Some("go") {
        "Read"
    } else {
        "recv_into_deadline"
    }
}

/// Percentiles of one-way latency, in nanoseconds.
#[derive(Clone, Copy)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
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

/// One latency result.
pub struct LatencyRow {
    pub transport: &'static str,
    pub size: usize,
    pub method: Method,
    pub reader: Option<&'static str>,
    pub wait: Option<&'static str>,
    /// The shm reader waited in its library's blocking call (`--wait`: Rust
    /// `recv_into_deadline`, Go `Read`), not in a busy-poll of the non-blocking read.
    pub recv_call: bool,
    pub summary: Summary,
    /// Messages the reader missed (timestamp method).
    pub lagged: Option<u64>,
    /// For the floor: the message size whose shm ping-pong it was interleaved with.
    pub paired_size: Option<usize>,
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
            size,
            method,
            reader,
            wait,
            recv_call: false,
            summary: Summary::of(samples, divisor),
            lagged: None,
            paired_size: None,
        }
    }
}

/// One consumer-throughput result.
pub struct ThroughputRow {
    pub transport: &'static str,
    pub size: usize,
    /// The consumer's language: `"rust"` (the Rust `Subscriber`, or the socket and pipe
    /// reader of a Rust peer) or `"go"`.
    pub reader: &'static str,
    /// `"lossy"` (the producer may overwrite what the reader has not read; lost messages are
    /// reported as lagged) or `"lossless"` (a registered reader on a lossless segment, or a
    /// socket or pipe, whose writer blocks: nothing can be lost).
    pub mode: &'static str,
    /// Messages received per call of a batched receive API, at most, when one was used…
    pub batch: Option<usize>,
    /// …and on average over the calls that returned some.
    pub batch_mean: Option<f64>,
    pub wait: &'static str,
    /// See [`LatencyRow::recv_call`].
    pub recv_call: bool,
    /// Messages the producer sent.
    pub sent: u64,
    pub received: u64,
    pub lagged: u64,
    /// Received messages per second over the consumer's active interval.
    pub msgs_per_s: f64,
    pub bytes_per_s: f64,
    /// The producer's send rate over its own loop.
    pub producer_msgs_per_s: f64,
    /// Ring capacity (shm).
    pub capacity: Option<u64>,
    /// Polls that found nothing (Rust shm reader).
    pub empty_polls: Option<u64>,
    /// `FUTEX_WAKE` calls of the producer (shm).
    pub wakeups: Option<u64>,
    /// Rounds measured; the other fields are the median round's (by `msgs_per_s`), these
    /// the extremes.
    pub rounds: usize,
    pub min_msgs_per_s: f64,
    pub max_msgs_per_s: f64,
    /// Lossless shm rows: `msgs_per_s` over that of the lossy row of the same size and reader
    /// in the same run (both medians).
    pub vs_lossy: Option<f64>,
}

/// A rate measured in several rounds and reported as the median round, with the slowest and
/// fastest beside it.
pub trait Rounds {
    fn msgs_per_s(&self) -> f64;
    /// Records how many rounds there were and their extreme rates.
    fn set_rounds(&mut self, rounds: usize, min_msgs_per_s: f64, max_msgs_per_s: f64);
}

impl Rounds for ThroughputRow {
    fn msgs_per_s(&self) -> f64 {
        self.msgs_per_s
    }
    fn set_rounds(&mut self, rounds: usize, min_msgs_per_s: f64, max_msgs_per_s: f64) {
        (self.rounds, self.min_msgs_per_s, self.max_msgs_per_s) =
            (rounds, min_msgs_per_s, max_msgs_per_s);
    }
}

impl Rounds for PublishRow {
    fn msgs_per_s(&self) -> f64 {
        self.msgs_per_s
    }
    fn set_rounds(&mut self, rounds: usize, min_msgs_per_s: f64, max_msgs_per_s: f64) {
        (self.rounds, self.min_msgs_per_s, self.max_msgs_per_s) =
            (rounds, min_msgs_per_s, max_msgs_per_s);
    }
}

/// One producer publish-rate result.
pub struct PublishRow {
    pub size: usize,
    pub consumers: usize,
    pub msgs_per_s: f64,
    pub bytes_per_s: f64,
    /// `msgs_per_s` over the rate with no consumer.
    pub ratio_to_none: f64,
    /// Messages the consumers received and missed, summed over them.
    pub consumer_received: u64,
    pub consumer_lagged: u64,
    pub sent: u64,
    /// Whether some consumers share a CPU.
    pub shared_cpu: bool,
    pub capacity: u64,
    /// Rounds measured; `msgs_per_s` is the median round's, these the extremes.
    pub rounds: usize,
    pub min_msgs_per_s: f64,
    pub max_msgs_per_s: f64,
    /// How the consumers wait, and whether in the library's blocking call.
    pub wait: &'static str,
    pub recv_call: bool,
    /// `FUTEX_WAKE` calls the producer made in the reported round.
    pub wakeups: u64,
}

/// One wake-up latency result: a receiver that is idle when each message arrives.
pub struct WakeRow {
    pub transport: &'static str,
    pub size: usize,
    pub reader: Option<&'static str>,
    pub wait: &'static str,
    pub summary: Summary,
    pub lagged: Option<u64>,
    /// The range of the pauses before each message, ns.
    pub gap_min_ns: u64,
    pub gap_max_ns: u64,
    /// `FUTEX_WAKE` calls the producer made for the measured messages (shm).
    pub wakeups: Option<u64>,
    /// p50 and p99 of the blocking UDS stream reader in the same run (on the shm rows).
    pub uds: Option<(f64, f64)>,
}

/// The CPU an idle subscriber used.
pub struct IdleRow {
    pub wait: &'static str,
    pub cpu_ns: u64,
    pub interval_ns: u64,
    /// Percent of one core.
    pub cpu_percent: f64,
    pub context_switches: u64,
    pub can_park: bool,
}

/// What one publish cost the producer with `parked` subscribers asleep.
pub struct PublishCostRow {
    pub parked: usize,
    pub size: usize,
    pub summary: Summary,
    /// Messages the parked subscribers received in order, of `expected` (parked × samples).
    pub received: u64,
    pub expected: u64,
    pub lagged: u64,
    /// `FUTEX_WAKE` calls of the producer.
    pub wakeups: u64,
    /// Publishes made without /proc confirming that every subscriber slept.
    pub unverified_sleep: u64,
}

/// The producer's rate with or without a thread storing `parked` without sleeping.
pub struct HostileRow {
    pub hostile: bool,
    pub size: usize,
    pub sent: u64,
    pub msgs_per_s: f64,
    pub wakeups: u64,
    pub throttles: u64,
    pub hostile_stores: u64,
    pub rounds: usize,
    pub min_msgs_per_s: f64,
    pub max_msgs_per_s: f64,
    /// The rate as a fraction of the rate without the writer (median rounds).
    pub vs_quiet: Option<f64>,
}

impl Rounds for HostileRow {
    fn msgs_per_s(&self) -> f64 {
        self.msgs_per_s
    }
    fn set_rounds(&mut self, rounds: usize, min: f64, max: f64) {
        (self.rounds, self.min_msgs_per_s, self.max_msgs_per_s) = (rounds, min, max);
    }
}

/// Any result.
pub enum Row {
    Latency(LatencyRow),
    Throughput(ThroughputRow),
    Publish(PublishRow),
    Wake(WakeRow),
    Idle(IdleRow),
    PublishCost(PublishCostRow),
    Hostile(HostileRow),
}

/// Prints results as they come (`--json`) or as tables at the end.
pub struct Reporter {
    json: bool,
    /// p50 of the floor, once measured, with the size it was paired with.
    floor_p50: Vec<(Option<usize>, f64)>,
    /// p50 of shm ping-pong per size, once measured.
    shm_p50: Vec<(usize, f64)>,
    pinned: bool,
    progress: bool,
    peer_cpus: usize,
    harness_cpu: Option<usize>,
    peer_cpu: Option<usize>,
    /// The CPUs whose steal time is tracked, and their steal at the start and at the last
    /// result.
    cpus: Vec<usize>,
    steal_start: Option<u64>,
    steal_last: Option<u64>,
}

impl Reporter {
    pub fn new(json: bool, ctx: &Ctx) -> Reporter {
        Reporter {
            json,
            floor_p50: Vec::new(),
            shm_p50: Vec::new(),
            pinned: ctx.pinned,
            progress: !json && std::io::stderr().is_terminal(),
            peer_cpus: ctx.peer_cpus(),
            harness_cpu: ctx.harness_cpu(),
            peer_cpu: ctx.peer_cpu(0),
            cpus: ctx.cpus().to_vec(),
            steal_start: sys::steal_ms(ctx.cpus()),
            steal_last: sys::steal_ms(ctx.cpus()),
        }
    }

    /// The machine and the pinning, on standard output for tables and on standard error with
    /// `--json` (whose standard output is only result lines).
    pub fn header(&mut self, host: &HostInfo, ctx: &Ctx) -> Result<()> {
        let mut text = format!(
            "shmcast bench: {}, {} CPUs online ({}), {} allowed ({}), {}\n",
            host.cpu_model,
            host.online_count,
            host.online_cpus,
            ctx.allowed.len(),
            cpu_list(&ctx.allowed),
            host.kernel
        );
        match (&ctx.unpinned_reason, self.harness_cpu, self.peer_cpu) {
            (None, Some(h), Some(p)) => text.push_str(&format!(
                "pinned: harness on CPU {h}, peer on CPU {p}{}\n",
                if self.peer_cpus > 1 {
                    " (producer-rate consumers on the listed CPUs after the first, in turn)"
                } else {
                    ""
                }
            )),
            (reason, _, _) => text.push_str(&format!(
                "NOT pinned: {}\n",
                reason.as_deref().unwrap_or("unknown reason")
            )),
        }
        text.push_str(&format!(
            "clock: one Instant::now() costs ~{} ns; ping-pong samples include one per round trip \
             (~{} ns in each one-way figure)\n",
            host.clock_read_ns,
            host.clock_read_ns / 2
        ));
        text.push_str(
            "all latencies are one-way: ping-pong round trip / 2, or (timestamp rows) receive \
             time - send time on CLOCK_REALTIME\n",
        );
        if self.json {
            eprint!("{text}");
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()?;
        }
        Ok(())
    }

    /// Reports one result (immediately with `--json`) and hands it back for the tables.
    pub fn emit(&mut self, row: Row) -> Result<Row> {
        if let Row::Latency(l) = &row {
            match (l.transport, l.method) {
                ("floor", _) => self.floor_p50.push((l.paired_size, l.summary.p50)),
                ("shm", Method::PingPongHalved) => self.shm_p50.push((l.size, l.summary.p50)),
                _ => {}
            }
        }
        let steal = sys::steal_ms(&self.cpus);
        let steal_ms = steal
            .zip(self.steal_last)
            .map(|(now, then)| now.saturating_sub(then));
        self.steal_last = steal;
        if self.json {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", self.json_line(&row, steal_ms))?;
            out.flush()?;
        } else if self.progress {
            eprint!("\r{:<78}\r", progress_label(&row));
        }
        Ok(row)
    }

    fn json_line(&self, row: &Row, steal_ms: Option<u64>) -> String {
        let mut fields: Vec<(&str, Value)> = Vec::new();
        match row {
            Row::Latency(r) => {
                fields.push(("transport", json!(r.transport)));
                fields.push(("metric", json!("latency")));
                fields.push(("size", json!(r.size)));
                fields.push(("method", json!(r.method.label())));
                if let Some(reader) = r.reader {
                    fields.push(("reader", json!(reader)));
                }
                if let Some(wait) = r.wait {
                    fields.push(("wait", json!(wait)));
                }
                if r.recv_call {
                    fields.push(("recv", json!(recv_call(r.reader))));
                }
                let s = &r.summary;
                fields.push(("p50_ns", ns(s.p50)));
                fields.push(("p99_ns", ns(s.p99)));
                fields.push(("p999_ns", ns(s.p999)));
                fields.push(("max_ns", ns(s.max)));
                fields.push(("samples", json!(s.samples)));
                if let Some(lagged) = r.lagged {
                    fields.push(("lagged", json!(lagged)));
                }
                let ratio = |den: f64| json!(round3(s.p50 / den));
                if let Some(paired) = r.paired_size {
                    fields.push(("paired_size", json!(paired)));
                }
                if r.transport != "floor" {
                    if let Some(floor) = floor_for(&self.floor_p50, r.size).filter(|&f| f > 0.0) {
                        fields.push(("p50_vs_floor", ratio(floor)));
                    }
                }
                if r.transport != "shm" && r.transport != "floor" {
                    let shm = self.shm_p50.iter().find(|(size, _)| *size == r.size);
                    if let Some(&(_, shm)) = shm.filter(|(_, p)| *p > 0.0) {
                        fields.push(("p50_vs_shm", ratio(shm)));
                    }
                }
            }
            Row::Throughput(r) => {
                fields.push(("transport", json!(r.transport)));
                fields.push(("metric", json!("throughput")));
                fields.push(("side", json!("consumer")));
                fields.push(("size", json!(r.size)));
                fields.push(("reader", json!(r.reader)));
                fields.push(("mode", json!(r.mode)));
                fields.push(("wait", json!(r.wait)));
                if r.recv_call {
                    let call = if r.batch.is_some() {
                        "recv_batch"
                    } else {
                        recv_call(Some(r.reader))
                    };
                    fields.push(("recv", json!(call)));
                }
                if let Some(batch) = r.batch {
                    fields.push(("batch", json!(batch)));
                }
                if let Some(mean) = r.batch_mean {
                    fields.push(("batch_mean", json!(round3(mean))));
                }
                fields.push(("msgs_per_s", rate(r.msgs_per_s)));
                fields.push(("bytes_per_s", rate(r.bytes_per_s)));
                fields.push(("sent", json!(r.sent)));
                fields.push(("received", json!(r.received)));
                fields.push(("lagged", json!(r.lagged)));
                fields.push(("lost_fraction", json!(fraction(r.lagged, r.sent))));
                fields.push(("producer_msgs_per_s", rate(r.producer_msgs_per_s)));
                fields.push(("rounds", json!(r.rounds)));
                fields.push(("msgs_per_s_min", rate(r.min_msgs_per_s)));
                fields.push(("msgs_per_s_max", rate(r.max_msgs_per_s)));
                if let Some(ratio) = r.vs_lossy {
                    fields.push(("msgs_per_s_vs_lossy", json!(round3(ratio))));
                }
                if let Some(c) = r.capacity {
                    fields.push(("capacity", json!(c)));
                }
                if let Some(e) = r.empty_polls {
                    fields.push(("empty_polls", json!(e)));
                }
                if let Some(w) = r.wakeups {
                    fields.push(("wakeups", json!(w)));
                }
            }
            Row::Publish(r) => {
                fields.push(("transport", json!("shm")));
                fields.push(("metric", json!("throughput")));
                fields.push(("side", json!("producer")));
                fields.push(("size", json!(r.size)));
                fields.push(("consumers", json!(r.consumers)));
                // The consumers, when there are any: Rust subscribers, lossy.
                fields.push(("reader", json!("rust")));
                fields.push(("mode", json!("lossy")));
                fields.push(("wait", json!(r.wait)));
                if r.recv_call {
                    fields.push(("recv", json!(recv_call(Some("rust")))));
                }
                fields.push(("msgs_per_s", rate(r.msgs_per_s)));
                fields.push(("bytes_per_s", rate(r.bytes_per_s)));
                fields.push(("ratio_to_none", json!(round3(r.ratio_to_none))));
                fields.push(("rounds", json!(r.rounds)));
                fields.push(("msgs_per_s_min", rate(r.min_msgs_per_s)));
                fields.push(("msgs_per_s_max", rate(r.max_msgs_per_s)));
                fields.push(("sent", json!(r.sent)));
                fields.push(("consumer_received", json!(r.consumer_received)));
                fields.push(("consumer_lagged", json!(r.consumer_lagged)));
                fields.push(("shared_cpu", json!(r.shared_cpu)));
                fields.push(("capacity", json!(r.capacity)));
                fields.push(("wakeups", json!(r.wakeups)));
            }
            Row::Wake(r) => {
                fields.push(("transport", json!(r.transport)));
                fields.push(("metric", json!("wake_latency")));
                fields.push(("size", json!(r.size)));
                fields.push(("method", json!(Method::Timestamp.label())));
                if let Some(reader) = r.reader {
                    fields.push(("reader", json!(reader)));
                }
                fields.push(("wait", json!(r.wait)));
                let s = &r.summary;
                fields.push(("p50_ns", ns(s.p50)));
                fields.push(("p99_ns", ns(s.p99)));
                fields.push(("p999_ns", ns(s.p999)));
                fields.push(("max_ns", ns(s.max)));
                fields.push(("samples", json!(s.samples)));
                if let Some(lagged) = r.lagged {
                    fields.push(("lagged", json!(lagged)));
                }
                fields.push(("gap_min_ns", json!(r.gap_min_ns)));
                fields.push(("gap_max_ns", json!(r.gap_max_ns)));
                if let Some(w) = r.wakeups {
                    fields.push(("wakeups", json!(w)));
                }
                if let Some((p50, p99)) = r.uds.filter(|&(p50, p99)| p50 > 0.0 && p99 > 0.0) {
                    fields.push(("p50_vs_uds", json!(round3(s.p50 / p50))));
                    fields.push(("p99_vs_uds", json!(round3(s.p99 / p99))));
                }
            }
            Row::Idle(r) => {
                fields.push(("transport", json!("shm")));
                fields.push(("metric", json!("idle_cpu")));
                fields.push(("reader", json!("rust")));
                fields.push(("wait", json!(r.wait)));
                fields.push(("cpu_percent", json!(round3(r.cpu_percent))));
                fields.push(("cpu_ns", json!(r.cpu_ns)));
                fields.push(("interval_ns", json!(r.interval_ns)));
                fields.push(("context_switches", json!(r.context_switches)));
                fields.push(("can_park", json!(r.can_park)));
            }
            Row::PublishCost(r) => {
                fields.push(("transport", json!("shm")));
                fields.push(("metric", json!("publish_cost")));
                fields.push(("parked", json!(r.parked)));
                fields.push(("size", json!(r.size)));
                let s = &r.summary;
                fields.push(("p50_ns", ns(s.p50)));
                fields.push(("p99_ns", ns(s.p99)));
                fields.push(("p999_ns", ns(s.p999)));
                fields.push(("max_ns", ns(s.max)));
                fields.push(("samples", json!(s.samples)));
                fields.push(("received", json!(r.received)));
                fields.push(("expected", json!(r.expected)));
                fields.push(("lagged", json!(r.lagged)));
                fields.push(("all_received", json!(r.received == r.expected)));
                fields.push(("wakeups", json!(r.wakeups)));
                fields.push(("unverified_sleep", json!(r.unverified_sleep)));
                fields.push(("readers", json!("threads of one process")));
            }
            Row::Hostile(r) => {
                fields.push(("transport", json!("shm")));
                fields.push(("metric", json!("throughput")));
                fields.push(("side", json!("producer")));
                fields.push(("size", json!(r.size)));
                fields.push(("consumers", json!(0)));
                fields.push(("hostile_parked_writer", json!(r.hostile)));
                fields.push(("msgs_per_s", rate(r.msgs_per_s)));
                if let Some(v) = r.vs_quiet {
                    fields.push(("ratio_to_quiet", json!(round3(v))));
                }
                fields.push(("rounds", json!(r.rounds)));
                fields.push(("msgs_per_s_min", rate(r.min_msgs_per_s)));
                fields.push(("msgs_per_s_max", rate(r.max_msgs_per_s)));
                fields.push(("sent", json!(r.sent)));
                fields.push(("wakeups", json!(r.wakeups)));
                fields.push(("wake_throttles", json!(r.throttles)));
                fields.push(("hostile_stores", json!(r.hostile_stores)));
            }
        }
        if let Some(steal) = steal_ms {
            fields.push(("steal_ms", json!(steal)));
        }
        fields.push(("pinned", json!(self.pinned)));
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", json!(k)))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// Prints the tables (nothing more with `--json`).
    pub fn finish(&self, rows: &[Row]) -> Result<()> {
        if self.progress {
            eprint!("\r{:<78}\r", "");
        }
        if self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        self.latency_tables(&mut out, rows)?;
        self.throughput_table(&mut out, rows)?;
        self.publish_table(&mut out, rows)?;
        self.wake_table(&mut out, rows)?;
        self.idle_table(&mut out, rows)?;
        self.publish_cost_table(&mut out, rows)?;
        if let (Some(start), Some(end)) = (self.steal_start, sys::steal_ms(&self.cpus)) {
            writeln!(
                out,
                "hypervisor steal on CPUs {} during the run: {} ms{}",
                cpu_list(&self.cpus),
                end.saturating_sub(start),
                if end > start {
                    " (the host ran something else on them: expect outliers)"
                } else {
                    ""
                }
            )?;
        }
        out.flush()?;
        Ok(())
    }

    fn latency_tables(&self, out: &mut impl Write, rows: &[Row]) -> Result<()> {
        let latencies: Vec<&LatencyRow> = rows_of!(rows, Row::Latency);
        if latencies.is_empty() {
            return Ok(());
        }
        let floors: Vec<(Option<usize>, &LatencyRow)> = latencies
            .iter()
            .filter(|l| l.transport == "floor")
            .map(|l| (l.paired_size, *l))
            .collect();
        let floor_of = |size: Option<usize>| {
            floors
                .iter()
                .find(|(p, _)| size.is_some() && *p == size)
                .or_else(|| floors.first())
                .map(|(_, l)| *l)
        };
        let floor = floor_of(None);
        let mut sizes: Vec<usize> = Vec::new();
        for l in latencies.iter().filter(|l| l.transport != "floor") {
            if !sizes.contains(&l.size) {
                sizes.push(l.size);
            }
        }
        if sizes.is_empty() {
            if let Some(f) = floor {
                writeln!(out, "One-way latency")?;
                latency_heading(out)?;
                latency_line(out, "floor: 1 cache line", &f.summary, None, None)?;
                writeln!(out)?;
            }
            return Ok(());
        }
        for size in sizes {
            writeln!(
                out,
                "One-way latency, {size} B payload (copied out and checksummed by every receiver)"
            )?;
            latency_heading(out)?;
            let of_size: Vec<&&LatencyRow> = latencies
                .iter()
                .filter(|l| l.size == size && l.transport != "floor")
                .collect();
            let uds = of_size
                .iter()
                .find(|l| l.transport == "uds-stream" && l.wait == Some("block"))
                .map(|l| l.summary.p50);
            let floor = floor_of(Some(size));
            let floor_p50 = floor.map(|f| f.summary.p50);
            if let Some(f) = floor {
                latency_line(out, "floor: 1 cache line", &f.summary, floor_p50, uds)?;
            }
            for l in of_size {
                let name = match (l.transport, l.method, l.reader, l.wait) {
                    ("shm", Method::Timestamp, Some(r), _) if l.recv_call => {
                        format!("shm, {r} reader, timestamp, recv {}", l.wait.unwrap_or("?"))
                    }
                    ("shm", Method::Timestamp, Some(r), _) => format!("shm, {r} reader, timestamp"),
                    ("shm", _, _, Some(w)) if l.recv_call => format!("shm, recv {w}"),
                    ("shm", _, _, _) => "shm, busy-spin".to_owned(),
                    (t, _, _, Some(w)) => {
                        format!(
                            "{t}, {}",
                            if w == "spin" { "busy-poll" } else { "blocking" }
                        )
                    }
                    (t, _, _, None) => t.to_owned(),
                };
                latency_line(out, &name, &l.summary, floor_p50, uds)?;
                if let Some(lagged) = l.lagged.filter(|&n| n > 0) {
                    writeln!(out, "      ({lagged} messages missed by that reader)")?;
                }
            }
            writeln!(out)?;
        }
        writeln!(
            out,
            "  x floor = p50 / floor p50; uds/x = blocking uds-stream p50 / p50 (how many times \
             faster than UDS)\n"
        )?;
        Ok(())
    }

    fn throughput_table(&self, out: &mut impl Write, rows: &[Row]) -> Result<()> {
        let all: Vec<&ThroughputRow> = rows_of!(rows, Row::Throughput);
        if all.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "Throughput, one producer and one consumer process; the consumer copies and \
             checksums every payload, one message per receive call{}",
            if all.iter().any(|t| t.batch.is_some()) {
                " (or per batch, where one is named)"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "  {:>6}  {:<40} {:>12} {:>12} {:>8} {:>8} {:>8} {:>14} {:>23}",
            "size",
            "transport",
            "msgs/s",
            "bytes/s",
            "lost",
            "x uds",
            "x lossy",
            "producer msg/s",
            "range of rounds"
        )?;
        for t in &all {
            let uds = all
                .iter()
                .find(|u| u.size == t.size && u.transport == "uds-stream" && u.wait == "block")
                .map(|u| u.msgs_per_s);
            let name = if t.transport == "shm" {
                let mut name = format!("shm, {} reader, {}", t.reader, t.mode);
                if t.recv_call {
                    name.push_str(&format!(", recv {}", t.wait));
                }
                if let Some(batch) = t.batch {
                    name.push_str(&format!(", batch {batch}"));
                }
                name
            } else {
                format!(
                    "{}, {}",
                    t.transport,
                    if t.wait == "spin" {
                        "busy-poll"
                    } else {
                        "blocking"
                    }
                )
            };
            writeln!(
                out,
                "  {:>6}  {:<40} {:>12} {:>12} {:>7.2}% {:>8} {:>8} {:>14} {:>23}",
                format!("{} B", t.size),
                name,
                fmt_rate(t.msgs_per_s),
                fmt_bytes(t.bytes_per_s),
                100.0 * fraction(t.lagged, t.sent),
                uds.map_or("-".to_owned(), |u| format!("{:.2}", t.msgs_per_s / u)),
                t.vs_lossy.map_or("-".to_owned(), |r| format!("{r:.2}")),
                fmt_rate(t.producer_msgs_per_s),
                if t.rounds > 1 {
                    format!(
                        "{} .. {}",
                        fmt_rate(t.min_msgs_per_s),
                        fmt_rate(t.max_msgs_per_s)
                    )
                } else {
                    "-".to_owned()
                },
            )?;
        }
        let capacity = all.iter().find_map(|t| t.capacity);
        if let Some(c) = capacity {
            writeln!(
                out,
                "  shm ring capacity {} KiB; lost = messages overwritten before the consumer read \
                 them (reported by the reader as lagged)",
                c >> 10
            )?;
        }
        if all
            .iter()
            .any(|t| t.transport == "shm" && t.mode == "lossless")
        {
            writeln!(
                out,
                "  lossless: the segment is lossless (no max block) and the reader registers \
                 before the first publish, so the producer waits instead of overwriting; any \
                 loss fails the run. x lossy = msgs/s / the lossy row's of the same size and \
                 reader"
            )?;
        }
        if let Some(rounds) = all.iter().map(|t| t.rounds).max().filter(|&r| r > 1) {
            writeln!(
                out,
                "  shm rows: the median of {rounds} rounds (readers and modes interleaved) by \
                 msgs/s, with the slowest and fastest round; sockets and pipe: one round"
            )?;
        }
        writeln!(out)?;
        Ok(())
    }

    fn publish_table(&self, out: &mut impl Write, rows: &[Row]) -> Result<()> {
        let all: Vec<&PublishRow> = rows_of!(rows, Row::Publish);
        if all.is_empty() {
            return Ok(());
        }
        match all.iter().find(|p| p.recv_call) {
            Some(p) => writeln!(
                out,
                "Producer publish rate with consumers in other processes waiting in recv ({})",
                p.wait
            )?,
            None => writeln!(
                out,
                "Producer publish rate with consumers busy-reading in other processes"
            )?,
        }
        writeln!(
            out,
            "  {:>6}  {:>9}  {:>12} {:>12} {:>9} {:>21} {:>14} {:>8}",
            "size",
            "consumers",
            "msgs/s",
            "bytes/s",
            "vs none",
            "range of rounds",
            "consumers lost",
            "wakeups"
        )?;
        for p in &all {
            writeln!(
                out,
                "  {:>6}  {:>9}  {:>12} {:>12} {:>9.3} {:>21} {:>13.2}% {:>8}",
                format!("{} B", p.size),
                p.consumers,
                fmt_rate(p.msgs_per_s),
                fmt_bytes(p.bytes_per_s),
                p.ratio_to_none,
                format!(
                    "{} .. {}",
                    fmt_rate(p.min_msgs_per_s),
                    fmt_rate(p.max_msgs_per_s)
                ),
                100.0 * fraction(p.consumer_lagged, p.sent * p.consumers as u64),
                p.wakeups,
            )?;
        }
        if let Some(p) = all.first() {
            writeln!(
                out,
                "  each row: the median of {} rounds (configurations interleaved); vs none = \
                 median / median with no consumer; wakeups = FUTEX_WAKE calls of the producer in \
                 that round (0: no system call, nobody was parked)",
                p.rounds
            )?;
        }
        if all.iter().any(|p| p.shared_cpu) {
            if self.pinned {
                writeln!(
                    out,
                    "  consumers share CPUs: {} CPU(s) for consumers (not the producer's), so \
                     more consumers than that take turns on them",
                    self.peer_cpus
                )?;
            } else {
                writeln!(
                    out,
                    "  nothing pinned: the producer and its consumers share the CPU(s) they get"
                )?;
            }
        }
        writeln!(out)?;
        Ok(())
    }
}

impl Reporter {
    fn wake_table(&self, out: &mut impl Write, rows: &[Row]) -> Result<()> {
        let all: Vec<&WakeRow> = rows_of!(rows, Row::Wake);
        let Some(first) = all.first() else {
            return Ok(());
        };
        writeln!(
            out,
            "Wake-up latency of an idle receiver, {} B payload: one message every {}-{} (the \
             receiver is asleep when it arrives); receive time - send time on CLOCK_REALTIME",
            first.size,
            fmt_ns(first.gap_min_ns as f64),
            fmt_ns(first.gap_max_ns as f64),
        )?;
        writeln!(
            out,
            "  {:<40} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8}",
            "", "p50", "p99", "p99.9", "max", "samples", "p50/uds", "p99/uds", "wakeups"
        )?;
        for w in &all {
            let name = match w.reader {
                Some(r) => format!("{}, {r} reader, recv {}", w.transport, w.wait),
                None if w.wait == "block" => format!("{}, blocking read", w.transport),
                None => format!("{}, {}", w.transport, w.wait),
            };
            let s = &w.summary;
            let (r50, r99) = match w.uds {
                Some((p50, p99)) if p50 > 0.0 && p99 > 0.0 => {
                    (format!("{:.2}", s.p50 / p50), format!("{:.2}", s.p99 / p99))
                }
                _ => ("-".to_owned(), "-".to_owned()),
            };
            writeln!(
                out,
                "  {:<40} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8}",
                name,
                fmt_ns(s.p50),
                fmt_ns(s.p99),
                fmt_ns(s.p999),
                fmt_ns(s.max),
                s.samples,
                r50,
                r99,
                w.wakeups.map_or("-".to_owned(), |n| n.to_string()),
            )?;
            if let Some(lagged) = w.lagged.filter(|&n| n > 0) {
                writeln!(out, "      ({lagged} messages missed by that reader)")?;
            }
        }
        writeln!(
            out,
            "  p50/uds, p99/uds = percentile / that of the blocking uds-stream reader (below 1: \
             shm wakes faster); wakeups = FUTEX_WAKE calls of the producer for the measured \
             messages\n"
        )?;
        Ok(())
    }

    fn publish_cost_table(&self, out: &mut impl Write, rows: &[Row]) -> Result<()> {
        let costs: Vec<&PublishCostRow> = rows_of!(rows, Row::PublishCost);
        if let Some(first) = costs.first() {
            writeln!(
                out,
                "Cost of one publish call ({} B) with N subscribers asleep in recv (threads of \
                 one peer process, all asleep before each publish)",
                first.size
            )?;
            writeln!(
                out,
                "  {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>22} {:>8}",
                "parked", "p50", "p99", "p99.9", "max", "samples", "received/expected", "wakeups"
            )?;
            for c in &costs {
                let s = &c.summary;
                writeln!(
                    out,
                    "  {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>22} {:>8}",
                    c.parked,
                    fmt_ns(s.p50),
                    fmt_ns(s.p99),
                    fmt_ns(s.p999),
                    fmt_ns(s.max),
                    s.samples,
                    format!("{}/{}", c.received, c.expected),
                    c.wakeups,
                )?;
            }
            writeln!(out)?;
        }
        let hostile: Vec<&HostileRow> = rows_of!(rows, Row::Hostile);
        if let Some(first) = hostile.first() {
            writeln!(
                out,
                "Publish rate ({} B, no subscriber) with and without a thread storing `parked` \
                 in a loop (alternating rounds, median)",
                first.size
            )?;
            for h in &hostile {
                writeln!(
                    out,
                    "  {:<22} {:>12} msg/s  (x{:.2})  wake calls {:>8}  throttles {:>6}",
                    if h.hostile {
                        "hostile parked writer"
                    } else {
                        "quiet"
                    },
                    fmt_rate(h.msgs_per_s),
                    h.vs_quiet.unwrap_or(1.0),
                    h.wakeups,
                    h.throttles,
                )?;
            }
            writeln!(out)?;
        }
        Ok(())
    }

    fn idle_table(&self, out: &mut impl Write, rows: &[Row]) -> Result<()> {
        let all: Vec<&IdleRow> = rows_of!(rows, Row::Idle);
        let Some(first) = all.first() else {
            return Ok(());
        };
        writeln!(
            out,
            "CPU used by an idle subscriber process waiting in recv for {} on a segment where \
             nothing is published",
            fmt_ns(first.interval_ns as f64)
        )?;
        writeln!(
            out,
            "  {:<10} {:>12} {:>14} {:>17} {:>9}",
            "wait", "CPU time", "% of one core", "context switches", "can park"
        )?;
        for i in &all {
            writeln!(
                out,
                "  {:<10} {:>12} {:>13.3}% {:>17} {:>9}",
                i.wait,
                fmt_ns(i.cpu_ns as f64),
                i.cpu_percent,
                i.context_switches,
                if i.can_park { "yes" } else { "no" },
            )?;
        }
        writeln!(
            out,
            "  CPU time = user + system time (getrusage) of the subscriber over the wait\n"
        )?;
        Ok(())
    }
}

/// The floor measured with `size` (interleaved with its shm ping-pong), else the first one.
fn floor_for(floors: &[(Option<usize>, f64)], size: usize) -> Option<f64> {
    floors
        .iter()
        .find(|(paired, _)| *paired == Some(size))
        .or_else(|| floors.first())
        .map(|&(_, p50)| p50)
}

fn latency_heading(out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "  {:<40} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>8}",
        "", "p50", "p99", "p99.9", "max", "samples", "x floor", "uds/x"
    )?;
    Ok(())
}

fn latency_line(
    out: &mut impl Write,
    name: &str,
    s: &Summary,
    floor: Option<f64>,
    uds: Option<f64>,
) -> Result<()> {
    let ratio = |num: Option<f64>, den: Option<f64>| match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => format!("{:.2}", n / d),
        _ => "-".to_owned(),
    };
    writeln!(
        out,
        "  {:<40} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>8}",
        name,
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.p999),
        fmt_ns(s.max),
        s.samples,
        ratio(Some(s.p50), floor),
        ratio(uds, Some(s.p50)),
    )?;
    Ok(())
}

fn progress_label(row: &Row) -> String {
    match row {
        Row::Wake(w) => format!("measured {} wake-up latency", w.transport),
        Row::Idle(i) => format!("measured idle CPU, {}", i.wait),
        Row::Latency(l) => format!("measured {} {} B latency", l.transport, l.size),
        Row::Throughput(t) => format!("measured {} {} B throughput", t.transport, t.size),
        Row::PublishCost(c) => format!("measured the publish cost, {} parked", c.parked),
        Row::Hostile(h) => format!("measured the publish rate, hostile writer {}", h.hostile),
        Row::Publish(p) => format!(
            "measured the publish rate, {} B, {} consumers",
            p.size, p.consumers
        ),
    }
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A latency in ns with one decimal (round trips halve to .5).
fn ns(v: f64) -> Value {
    json!((v * 10.0).round() / 10.0)
}

/// A rate as a whole number.
fn rate(v: f64) -> Value {
    json!(v.round() as u64)
}

fn fmt_ns(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0} ns")
    } else if v < 1e6 {
        format!("{:.2} µs", v / 1e3)
    } else if v < 1e9 {
        format!("{:.2} ms", v / 1e6)
    } else {
        format!("{:.2} s", v / 1e9)
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_bytes(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} GB/s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} MB/s", v / 1e6)
    } else {
        format!("{:.1} kB/s", v / 1e3)
    }
}
