//! The tables printed at the end of a run without `--json`.

use std::io::Write;

use super::*;
use crate::measure::throughput::fraction;

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

impl Reporter {
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
                    ("shm", Method::Timestamp, Some(r), _) if l.recv.is_some() => {
                        format!("shm, {r} reader, timestamp, recv {}", l.wait.unwrap_or("?"))
                    }
                    ("shm", Method::Timestamp, Some(r), _) => format!("shm, {r} reader, timestamp"),
                    ("shm", _, _, Some(w)) if l.recv.is_some() => format!("shm, recv {w}"),
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
                if t.recv.is_some() {
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
                if t.rounds.rounds > 1 {
                    format!("{} .. {}", fmt_rate(t.rounds.min), fmt_rate(t.rounds.max))
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
        if let Some(rounds) = all.iter().map(|t| t.rounds.rounds).max().filter(|&r| r > 1) {
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
        match all.iter().find(|p| p.recv.is_some()) {
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
                format!("{} .. {}", fmt_rate(p.rounds.min), fmt_rate(p.rounds.max)),
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
                p.rounds.rounds
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
            let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
            let (r50, r99) = (ratio(w.p50_vs_uds), ratio(w.p99_vs_uds));
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

pub(super) fn progress_label(row: &Row) -> String {
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
