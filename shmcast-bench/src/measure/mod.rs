//! One generic measurement per kind, each with its harness side and its peer side, and
//! [`serve`]: the peer's role dispatch, in one place.
//!
//! - [`pingpong`]: round trips over any link, halved;
//! - [`timestamp`]: one-way latency by timestamps, paced ([`timestamp::paced`]) or to an idle
//!   receiver ([`timestamp::wake`]), over any link;
//! - [`throughput`]: consumer throughput over any link, and the shm producer's rate with
//!   0, 1 and N consumers;
//! - [`idle`]: the CPU an idle subscriber uses; [`publish_cost`]: what a publish costs with
//!   subscribers parked, and with a hostile writer.
//!
//! The cache-line floor is [`crate::floor`].

pub mod idle;
pub mod pingpong;
pub mod publish_cost;
pub mod throughput;
pub mod timestamp;

use std::io::Write;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::link;
use crate::spec::{PeerReport, PeerSpec, Role};
use crate::sys::{self, Spinner};
use crate::Result;

/// Runs a peer: the other side of one measurement, as `spec` says.
pub fn serve(spec: &PeerSpec) -> Result<()> {
    // Die with the harness, so a harness killed outright leaves no peer spinning.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("peer: cannot set the parent-death signal: {e}"))?;
    if let Some(parent) = spec.parent {
        if i64::from(nix::unistd::getppid().as_raw()) != i64::from(parent) {
            return Err("peer: the harness has already exited".into());
        }
    }
    if spec.size < 8 {
        return Err("peer: size must be at least 8".into());
    }
    if let Some(cpu) = spec.cpu {
        sys::pin_current_thread(cpu)?;
    }
    let report = match spec.role {
        Role::Idle => idle::peer(spec)?,
        Role::Parked => publish_cost::peer(spec)?,
        role => {
            let mut link = link::open(spec, spinner(spec, "the harness's messages"))?;
            say("ready")?;
            match role {
                Role::Pong => pingpong::peer(spec, &mut link)?,
                Role::Consume => throughput::peer(spec, &mut link)?,
                _ => timestamp::peer(spec, &mut link)?,
            }
        }
    };
    say(&serde_json::to_string(&report)?)
}

/// A spinner with the deadline of `spec`.
fn spinner(spec: &PeerSpec, waiting_for: &'static str) -> Spinner {
    Spinner::new(
        Instant::now() + Duration::from_millis(spec.timeout_ms),
        spec.yield_idle,
        waiting_for,
    )
}

/// Prints one line for the harness and flushes it.
pub fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// A report with only the count of wrong payloads.
fn bad_only(bad: u64) -> PeerReport {
    PeerReport {
        bad: Some(bad),
        ..PeerReport::default()
    }
}
