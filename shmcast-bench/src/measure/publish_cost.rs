//! What one publish costs the producer while N subscribers are parked (docs/LAYOUT.md,
//! "Waiting and waking"), and the producer's rate while a process keeps storing `parked`
//! without sleeping (the hostile writer the wake-up throttle is for).
//!
//! Parked subscribers are N threads of one peer process (`shmcast bench-peer shm-parked`),
//! each with its own `Subscriber` in `recv_into_deadline` with [`WaitStrategy::Block`], all on
//! the peer CPU. Before each publish the harness waits until every one of them sleeps (state
//! `S` in `/proc/PID/task/TID/stat`), then times the `publish` call alone. Each subscriber
//! checks that it received every message in order; the row reports what they received.

use std::time::{Duration, Instant};

use shmcast::{Publisher, RecvError, StartAt, Subscriber, WaitStrategy};

use crate::process::{Peer, Program};
use crate::report::{HostileRow, PublishCostRow, Rounds, Summary};
use crate::spec::{PeerReport, PeerSpec, Role, Transport};
use crate::sys::{self, Ctx};
use crate::Result;

/// Payload of the publish-cost messages.
const SIZE: usize = 64;

/// Publishes `samples` messages to a segment with `parked` parked subscribers, each when all of
/// them sleep, and times each publish.
pub fn measure(ctx: &Ctx, parked: usize, samples: usize) -> Result<PublishCostRow> {
    let name = sys::segment_name("cost");
    let mut publisher = Publisher::options().capacity(1 << 20).create(&name)?;
    let who = format!("the {parked} parked subscribers");
    let peer = if parked > 0 {
        let mut spec = PeerSpec::new(Role::Parked, Transport::Shm, SIZE, samples as u64);
        spec.link.read = Some(name.clone());
        spec.readers = Some(parked);
        Some(Peer::start(
            ctx,
            &who,
            Program::Harness,
            spec,
            ctx.peer_cpu(0),
            &[],
        )?)
    } else {
        None
    };
    let pid = peer.as_ref().map(Peer::pid);
    let payload = [0x5au8; SIZE];
    let mut costs = Vec::with_capacity(samples);
    let mut not_asleep = 0u64;
    let deadline = ctx.deadline();
    for _ in 0..samples {
        // Every subscriber asleep (or, without /proc, a pause long enough for them to be).
        let pause_until = Instant::now() + Duration::from_millis(1);
        loop {
            std::thread::sleep(Duration::from_micros(200));
            let asleep = pid.map_or(Some(0), asleep_threads);
            match asleep {
                Some(n) if n >= parked && Instant::now() >= pause_until => break,
                None if Instant::now() >= pause_until + Duration::from_millis(20) => {
                    not_asleep += 1;
                    break;
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(format!("{parked} subscribers never all fell asleep").into());
            }
        }
        // A short spin first, so the producer's CPU is awake and running when it publishes
        // (a sleeping vCPU's wake-up is not part of a publish's cost).
        let spin_until = Instant::now() + Duration::from_micros(50);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        publisher.publish(&payload)?;
        costs.push(sys::nanos(t.elapsed()));
    }
    let (received, lagged) = match peer {
        Some(peer) => {
            let report = peer.report()?;
            (
                PeerReport::need(&who, "received", report.received)?,
                PeerReport::need(&who, "lagged", report.lagged)?,
            )
        }
        None => (0, 0),
    };
    let expected = (parked * samples) as u64;
    Ok(PublishCostRow {
        transport: "shm",
        metric: "publish_cost",
        parked,
        size: SIZE,
        summary: Summary::of(&costs, 1.0),
        received,
        expected,
        lagged,
        all_received: received == expected,
        wakeups: publisher.wakeups(),
        unverified_sleep: not_asleep,
        readers: "threads of one process",
    })
}

/// Threads of process `pid` other than its main thread that are asleep (state `S`); `None`
/// if /proc cannot say.
fn asleep_threads(pid: u32) -> Option<usize> {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        if task.file_name().to_str() == Some(&pid.to_string()) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        n += usize::from(state == 'S');
    }
    Some(n)
}

/// Peer side of [`measure`]: `readers` threads, each a subscriber that must receive `count`
/// messages in order.
pub fn peer(spec: &PeerSpec) -> Result<PeerReport> {
    let name = spec.read_name()?.to_owned();
    let readers = spec.readers.unwrap_or(1).max(1);
    let count = spec.count;
    let deadline = Instant::now() + Duration::from_millis(spec.timeout_ms);
    let mut subs = Vec::with_capacity(readers);
    for _ in 0..readers {
        let mut sub = Subscriber::open(&name, StartAt::Next)?;
        sub.set_wait_strategy(WaitStrategy::Block);
        if !sub.can_park() {
            return Err("peer: the subscriber cannot park (no write access)".into());
        }
        subs.push(sub);
    }
    let threads: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            std::thread::spawn(move || -> (u64, u64) {
                let mut buf = [0u8; SIZE];
                let (mut received, mut lagged, mut next) = (0, 0, 1);
                while received + lagged < count {
                    match sub.recv_into_deadline(&mut buf, deadline) {
                        Ok(r) if r.seq == next && buf[..r.len].iter().all(|&b| b == 0x5a) => {
                            received += 1;
                            next += 1;
                        }
                        Ok(r) => {
                            lagged += r.seq.saturating_sub(next).max(1);
                            next = r.seq + 1;
                        }
                        Err(RecvError::Lagged { missed }) => {
                            lagged += missed;
                            next += missed;
                        }
                        Err(_) => break,
                    }
                }
                (received, lagged)
            })
        })
        .collect();
    super::say("ready")?;
    let (mut received, mut lagged) = (0, 0);
    for t in threads {
        let (r, l) = t.join().map_err(|_| "a subscriber thread panicked")?;
        received += r;
        lagged += l;
    }
    Ok(PeerReport {
        received: Some(received),
        lagged: Some(lagged),
        ..PeerReport::default()
    })
}

/// One round of the hostile-writer part: the producer publishes `count` 64-byte messages as
/// fast as it can, with no subscriber, while (with `hostile`) a thread on the peer CPU keeps
/// storing `1` to the segment's `parked` word.
pub fn hostile_round(ctx: &Ctx, count: u64, hostile: bool) -> Result<HostileRow> {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;
    let name = sys::segment_name("hostile");
    let mut publisher = Publisher::options().capacity(1 << 22).create(&name)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = if hostile {
        let page = subscriber_page(&publisher.path())?;
        let (stop, cpu) = (stop.clone(), ctx.peer_cpu(0));
        Some(std::thread::spawn(move || -> u64 {
            if let Some(cpu) = cpu {
                // Unpinned, the writer still runs: the figure is then only less telling.
                let _ = sys::pin_current_thread(cpu);
            }
            // SAFETY: the page is mapped shared and writable for as long as `page` lives (this
            // thread owns it); `parked` is a 4-byte-aligned word in it (the page is
            // page-aligned) that every process accesses only atomically.
            let parked = unsafe { &*page.as_ptr().add(4).cast::<AtomicU32>() };
            let mut stores = 0u64;
            while !stop.load(Ordering::Relaxed) {
                parked.store(1, Ordering::Relaxed);
                stores += 1;
            }
            drop(page);
            stores
        }))
    } else {
        None
    };
    // Let the writer start.
    std::thread::sleep(Duration::from_millis(5));
    let payload = [0x5au8; SIZE];
    let (wakeups0, throttles0) = (publisher.wakeups(), publisher.wake_throttles());
    let t = Instant::now();
    for _ in 0..count {
        publisher.publish(&payload)?;
    }
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let stores = match writer {
        Some(w) => w.join().map_err(|_| "the hostile writer panicked")?,
        None => 0,
    };
    let msgs_per_s = count as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok(HostileRow {
        transport: "shm",
        metric: "throughput",
        side: "producer",
        size: SIZE,
        consumers: 0,
        hostile,
        msgs_per_s,
        vs_quiet: None,
        rounds: Rounds::one(msgs_per_s),
        sent: count,
        wakeups: publisher.wakeups() - wakeups0,
        throttles: publisher.wake_throttles() - throttles0,
        hostile_stores: stores,
    })
}

/// The subscriber page of a segment file, mapped shared and writable.
fn subscriber_page(path: &std::path::Path) -> Result<memmap2::MmapMut> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // SAFETY: a shared mapping of one page of the segment file, at a page-aligned offset inside
    // it. The producer writes the page too, so it is only ever accessed through atomics (above),
    // never as the byte slice `MmapMut` could give.
    let page = unsafe {
        memmap2::MmapOptions::new()
            .offset(shmcast::layout::SUBSCRIBER_AREA)
            .len(shmcast::layout::SUBSCRIBER_AREA_SIZE as usize)
            .map_mut(&file)?
    };
    Ok(page)
}
