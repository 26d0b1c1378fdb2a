//! Results: one JSON object per line (`--json`, the serde types of `rows.rs`), or tables with
//! ratios at the end (`tables.rs`).

mod rows;
mod tables;

use std::io::{IsTerminal, Write};

pub use rows::*;

use crate::sys::{self, cpu_list, Ctx, HostInfo};
use crate::Result;

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
            "shmcast-bench: {}, {} CPUs online ({}), {} allowed ({}), {}\n",
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
    pub fn emit(&mut self, mut row: Row) -> Result<Row> {
        if let Row::Latency(l) = &mut row {
            let p50 = l.summary.p50;
            match (l.transport, l.method) {
                ("floor", _) => self.floor_p50.push((l.paired_size, p50)),
                ("shm", Method::PingPongHalved) => self.shm_p50.push((l.size, p50)),
                _ => {}
            }
            if l.transport != "floor" {
                l.p50_vs_floor = floor_for(&self.floor_p50, l.size)
                    .filter(|&f| f > 0.0)
                    .map(|f| p50 / f);
            }
            if l.transport != "shm" && l.transport != "floor" {
                l.p50_vs_shm = self
                    .shm_p50
                    .iter()
                    .find(|&&(size, p)| size == l.size && p > 0.0)
                    .map(|&(_, shm)| p50 / shm);
            }
        }
        let steal = sys::steal_ms(&self.cpus);
        let steal_ms = steal
            .zip(self.steal_last)
            .map(|(now, then)| now.saturating_sub(then));
        self.steal_last = steal;
        if self.json {
            let mut out = std::io::stdout().lock();
            let line = Line {
                row: &row,
                steal_ms,
                pinned: self.pinned,
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
            out.flush()?;
        } else if self.progress {
            eprint!("\r{:<78}\r", tables::progress_label(&row));
        }
        Ok(row)
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
