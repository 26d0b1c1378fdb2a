//! Throughput over any link: the harness sends `count` messages as fast as the link takes
//! them; the consumer receives every one it can (one message per receive call, or per batch
//! where one is named), checksums it, and counts messages lost to laps. The consumer's rate is
//! over its active interval (first receive to last); the producer's over its loop.
//!
//! And the shm producer's publish rate with 0, 1 and N consumers reading the same segment.

use std::time::Instant;

use crate::link::{self, create, AnyLink, Got, Link, Setup, ShmLink};
use crate::payload::{checksum, Payload};
use crate::process::{Peer, Program, Reader};
use crate::report::{PublishRow, Rounds, ThroughputRow};
use crate::spec::{PeerReport, PeerSpec, Role, Transport};
use crate::sys::{self, Ctx};
use crate::Result;

/// Consumer throughput. With `setup.lossless` the segment is lossless without a max block and
/// the consumer registers before it says `ready`: the producer is then held back rather than
/// lap it, and any message lost is an error, not a figure. Sockets and pipes are lossless by
/// nature (their writer blocks).
pub fn consumer(
    ctx: &Ctx,
    reader: Reader<'_>,
    setup: &Setup,
    size: usize,
    count: u64,
) -> Result<ThroughputRow> {
    if setup.batch.is_some() && matches!(reader, Reader::Go(_)) {
        return Err("the Go bench reader has no batched mode".into());
    }
    let who = reader.who(setup.transport, setup.lossless, "consumer");
    let (mut link, peer) = link::connect(
        ctx,
        setup,
        reader.program(),
        &who,
        Role::Consume,
        size,
        count,
    )?;
    let start = Instant::now();
    let mut send = || -> Result<()> {
        // Message k is stamped k, which is its sequence number in a new segment.
        for k in 1..=count {
            link.send(k)?;
        }
        Ok(())
    };
    if let Err(e) = send() {
        return Err(peer.explain(e));
    }
    let producer_rate = count as f64 / start.elapsed().as_secs_f64();
    let report = peer.report()?;
    report.check_bad(&who)?;
    let (received, lagged) = report.accounted(&who, count)?;
    let lossless = setup.lossless || setup.transport != Transport::Shm;
    if lossless && lagged != 0 {
        return Err(format!(
            "{who} lost messages: {lagged} of {count} lagged ({received} received), on a \
             lossless link it had registered on before the first message"
        )
        .into());
    }
    if lagged == 0 {
        // Every message k arrived, and its checksum is base + k.
        let base = Payload::new(size).base();
        let sum_k = (u128::from(count) * (u128::from(count) + 1) / 2) as u64;
        let expected = base.wrapping_mul(count).wrapping_add(sum_k);
        let sum = PeerReport::need(&who, "checksum", report.checksum)?;
        if sum != expected {
            return Err(format!(
                "{who}: checksum {sum} over all payloads, expected {expected} (the wrapping \
                 sum of the little-endian u64 words of every payload)"
            )
            .into());
        }
    }
    let msgs_per_s = PeerReport::need(&who, "msgs_per_s", report.msgs_per_s)?;
    let shm = setup.transport == Transport::Shm;
    Ok(ThroughputRow {
        transport: setup.transport.label(),
        metric: "throughput",
        side: "consumer",
        size,
        reader: reader.label(),
        mode: if lossless { "lossless" } else { "lossy" },
        wait: setup.wait_label(),
        recv: (shm && setup.wait.is_some())
            .then(|| crate::report::recv_call(reader.label(), setup.batch.is_some())),
        batch: setup.batch,
        batch_mean: report.batch_mean,
        msgs_per_s,
        bytes_per_s: PeerReport::need(&who, "bytes_per_s", report.bytes_per_s)?,
        sent: count,
        received,
        lagged,
        lost_fraction: fraction(lagged, count),
        producer_msgs_per_s: producer_rate,
        rounds: Rounds::one(msgs_per_s),
        vs_lossy: None,
        capacity: shm.then_some(setup.capacity),
        empty_polls: report.empty_polls,
        wakeups: link.wakeups(),
    })
}

/// The producer's publish rate (`count` messages as fast as possible) with `consumers` Rust
/// consumers reading the same segment from other processes, busy-polling or waiting with
/// `setup.wait`.
pub fn producer(
    ctx: &Ctx,
    setup: &Setup,
    size: usize,
    count: u64,
    consumers: usize,
) -> Result<PublishRow> {
    let name = sys::segment_name("rate");
    let publisher = create(&name, setup.capacity, false)?;
    let mut peers: Vec<Peer> = Vec::with_capacity(consumers);
    for i in 0..consumers {
        let mut spec = PeerSpec::new(Role::Consume, Transport::Shm, size, count);
        spec.link.read = Some(name.clone());
        spec.link.wait = setup.wait;
        let label = format!("shm consumer {i}");
        peers.push(Peer::start(
            ctx,
            label,
            Program::Harness,
            spec,
            ctx.peer_cpu(i),
            &[],
        )?);
    }
    let mut link = ShmLink::new(size, Some(publisher), None);
    let start = Instant::now();
    for k in 1..=count {
        link.send(k)?;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let (mut received, mut lagged) = (0, 0);
    for peer in peers {
        let report = peer.report()?;
        report.check_bad("a consumer")?;
        let (r, l) = report.accounted("a consumer", count)?;
        received += r;
        lagged += l;
    }
    Ok(PublishRow {
        transport: "shm",
        metric: "throughput",
        side: "producer",
        size,
        consumers,
        reader: "rust",
        mode: "lossy",
        wait: setup.wait_label(),
        recv: setup.wait.map(|_| crate::report::recv_call("rust", false)),
        msgs_per_s: rate,
        bytes_per_s: rate * size as f64,
        ratio_to_none: 1.0,
        rounds: Rounds::one(rate),
        sent: count,
        consumer_received: received,
        consumer_lagged: lagged,
        shared_cpu: consumers > 0 && (!ctx.pinned || consumers > ctx.peer_cpus()),
        capacity: setup.capacity,
        wakeups: link.wakeups().unwrap_or(0),
    })
}

/// `part / whole`, 0 for nothing.
pub fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Peer side: receive until every one of `count` messages was received or reported lost,
/// checksumming each as it arrives.
pub fn peer(spec: &PeerSpec, link: &mut AnyLink) -> Result<PeerReport> {
    let (mut received, mut lagged, mut bad, mut sum) = (0u64, 0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    while received + lagged < spec.count {
        // Message k is stamped k: its sequence number where the link has one, else its place.
        let next = received + lagged + 1;
        let (seq, len, c) = match link.recv()? {
            Got::Msg(seq, payload) => (seq.unwrap_or(next), payload.len(), checksum(payload)),
            Got::Lost(missed) => {
                lagged += missed;
                first.get_or_insert_with(Instant::now);
                continue;
            }
        };
        first.get_or_insert_with(Instant::now);
        bad += u64::from(len != spec.size || c != link.expected(seq));
        sum = sum.wrapping_add(c);
        received += 1;
    }
    // As the Go reader computes it: received / (last receive - first receive).
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let msgs_per_s = if secs > 0.0 && received > 1 {
        received as f64 / secs
    } else {
        0.0
    };
    Ok(PeerReport {
        received: Some(received),
        lagged: Some(lagged),
        bad: Some(bad),
        msgs_per_s: Some(msgs_per_s),
        bytes_per_s: Some(msgs_per_s * spec.size as f64),
        checksum: Some(sum),
        // Messages per call that returned some: how full the batches were.
        batch_mean: link
            .calls()
            .map(|calls| received as f64 / calls.max(1) as f64),
        // Empty polls happen inside the library's blocking call, out of sight, with a wait.
        empty_polls: link.empty_polls(),
        ..PeerReport::default()
    })
}
