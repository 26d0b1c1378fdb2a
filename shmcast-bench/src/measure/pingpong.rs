//! Ping-pong latency over any link: the harness sends message `k`, the peer receives and
//! checks it and sends a message of the same size back, the harness receives and checks that.
//! One clock read per round trip, taken after the reply was checked; reported halved.

use std::time::Instant;

use super::bad_only;
use crate::link::{self, AnyLink, Got, Link, Setup};
use crate::process::Program;
use crate::spec::{PeerReport, PeerSpec, Role, Transport};
use crate::sys::{self, Ctx};
use crate::Result;

/// Capacity of the shm ping and pong rings (the crate's default).
pub const CAPACITY: u64 = 1 << 20;

/// Returns the last `samples` round-trip times in ns, after discarded warm-up round trips:
/// `warmup`, and for shm at least two laps of the ring (so the first-touch page faults of both
/// mappings are not measured).
pub fn run(
    ctx: &Ctx,
    setup: &Setup,
    size: usize,
    samples: usize,
    warmup: usize,
) -> Result<Vec<u64>> {
    let warmup = if setup.transport == Transport::Shm {
        let lap = CAPACITY / shmcast::layout::record_span(size as u64);
        warmup.max(usize::try_from(2 * lap).unwrap_or(usize::MAX))
    } else {
        warmup
    };
    let total = (warmup + samples) as u64;
    let setup = Setup {
        capacity: CAPACITY,
        ..*setup
    };
    let label = format!("the {} pong peer", setup.transport.label());
    let (mut link, peer) = link::connect(
        ctx,
        &setup,
        Program::Harness,
        &label,
        Role::Pong,
        size,
        total,
    )?;
    let mut rtts = Vec::with_capacity(samples);
    let mut bounce = || -> Result<u64> {
        let mut bad = 0u64;
        let mut prev = Instant::now();
        for k in 0..total {
            link.send(k)?;
            bad += u64::from(!reply_intact(&mut link, size, k)?);
            let now = Instant::now();
            if k as usize >= warmup {
                rtts.push(sys::nanos(now - prev));
            }
            prev = now;
        }
        Ok(bad)
    };
    let bad = match bounce() {
        Ok(bad) => bad,
        Err(e) => return Err(peer.explain(e)),
    };
    let peer_bad = PeerReport::need(&label, "bad", peer.report()?.bad)?;
    if bad + peer_bad > 0 {
        return Err(format!(
            "{} ping-pong: {bad} replies and {peer_bad} pings had a wrong checksum",
            setup.transport.label()
        )
        .into());
    }
    Ok(rtts)
}

/// Receives message `k`; whether it arrived intact. A lost message is an error: ping-pong
/// never laps.
#[inline(always)]
fn reply_intact(link: &mut AnyLink, size: usize, k: u64) -> Result<bool> {
    let expected = link.expected(k);
    match link.recv()? {
        Got::Msg(_, payload) => {
            Ok(payload.len() == size && crate::payload::checksum(payload) == expected)
        }
        Got::Lost(missed) => Err(format!("lagged: {missed} messages were overwritten").into()),
    }
}

/// Peer side: receive each ping, check it, send the same-size reply.
pub fn peer(spec: &PeerSpec, link: &mut AnyLink) -> Result<PeerReport> {
    let mut bad = 0u64;
    for k in 0..spec.count {
        bad += u64::from(!reply_intact(link, spec.size, k)?);
        link.send(k)?;
    }
    Ok(bad_only(bad))
}
