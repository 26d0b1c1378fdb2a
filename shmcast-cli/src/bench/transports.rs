//! The baselines: a Unix domain stream socket, a Unix domain seqpacket socket and a pair of
//! pipes, carrying the same payloads as shmcast with the same framing.
//!
//! Every message is one frame: a 4-byte little-endian length, then the payload (the pattern of
//! [`super::payload`] with a counter in its first word). A sender writes a frame with one
//! `write` (looping only on a short write); a receiver reads it with `read_exact`-style loops
//! (length, then payload) on the stream socket and the pipe, and with one `read` per packet on
//! the seqpacket socket, then checksums the payload. By default descriptors block, so a
//! receiver sleeps in the kernel and is woken by the sender (what an application using them
//! does); with `--spin-sockets` both sides also run with `O_NONBLOCK`, retrying on `EAGAIN`
//! (busy-polling, comparable to shmcast's busy-spinning reader).
//!
//! The descriptors are created by the harness before the peer starts and inherited by it (their
//! numbers are passed as arguments).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use clap::ValueEnum;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde_json::json;

use super::payload::{checksum, counter, Payload};
use super::peer::{say, Peer, PeerArgs, Role};
use super::report::{Summary, ThroughputRow};
use super::shm::{self, WakeSamples};
use super::sys::{self, Ctx, Spinner};
use super::Result;

/// A socket or pipe transport.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// `socketpair(AF_UNIX, SOCK_STREAM)`.
    UdsStream,
    /// `socketpair(AF_UNIX, SOCK_SEQPACKET)`.
    UdsSeqpacket,
    /// Two pipes, one per direction.
    Pipe,
}

impl Transport {
    /// Every transport, in report order.
    pub const ALL: [Transport; 3] = [
        Transport::UdsStream,
        Transport::UdsSeqpacket,
        Transport::Pipe,
    ];

    /// The name used in reports and in `--transport`.
    pub fn label(self) -> &'static str {
        match self {
            Transport::UdsStream => "uds-stream",
            Transport::UdsSeqpacket => "uds-seqpacket",
            Transport::Pipe => "pipe",
        }
    }
}

/// One side's ends of a channel.
struct Ends {
    rd: File,
    wr: File,
}

/// The peer's descriptors, before they are handed over.
struct PeerFds {
    rd: OwnedFd,
    /// A separate write descriptor (pipes); sockets use `rd` both ways.
    wr: Option<OwnedFd>,
}

impl PeerFds {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--fd".to_owned(), self.rd.as_raw_fd().to_string()];
        if let Some(wr) = &self.wr {
            args.extend(["--wfd".to_owned(), wr.as_raw_fd().to_string()]);
        }
        args
    }

    fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.rd.as_fd()];
        if let Some(wr) = &self.wr {
            fds.push(wr.as_fd());
        }
        fds
    }
}

/// Creates a channel (close-on-exec descriptors): the harness's ends and the peer's.
fn channel(t: Transport) -> Result<(Ends, PeerFds)> {
    let ends = |a: OwnedFd| -> Result<Ends> {
        let wr = File::from(a);
        Ok(Ends {
            rd: wr.try_clone()?,
            wr,
        })
    };
    match t {
        Transport::UdsStream => {
            let (a, b) = UnixStream::pair()?;
            Ok((
                ends(OwnedFd::from(a))?,
                PeerFds {
                    rd: OwnedFd::from(b),
                    wr: None,
                },
            ))
        }
        Transport::UdsSeqpacket => {
            let (a, b) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("socketpair(AF_UNIX, SOCK_SEQPACKET): {e}"))?;
            Ok((ends(a)?, PeerFds { rd: b, wr: None }))
        }
        Transport::Pipe => {
            let (to_peer_rd, to_peer_wr) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
            let (to_us_rd, to_us_wr) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
            Ok((
                Ends {
                    rd: File::from(to_us_rd),
                    wr: File::from(to_peer_wr),
                },
                PeerFds {
                    rd: to_peer_rd,
                    wr: Some(to_us_wr),
                },
            ))
        }
    }
}

/// The peer's ends, from the descriptors it inherited.
fn peer_ends(args: &PeerArgs) -> Result<(Transport, Ends)> {
    let t = args
        .transport
        .ok_or("bench-peer: --transport is required for this role")?;
    let rd = args
        .fd
        .ok_or("bench-peer: --fd is required for this role")?;
    let adopt = |fd: i32| -> Result<File> {
        if fd < 3 || fcntl(fd, FcntlArg::F_GETFD).is_err() {
            return Err(format!("bench-peer: descriptor {fd} was not inherited").into());
        }
        // SAFETY: the harness created this descriptor for this process and passed its number;
        // it was checked open above, and nothing else in this process refers to it.
        Ok(unsafe { File::from_raw_fd(fd) })
    };
    let rd_file = adopt(rd)?;
    let wr_file = match args.wfd {
        Some(wr) if wr != rd => adopt(wr)?,
        _ => rd_file.try_clone()?,
    };
    let ends = Ends {
        rd: rd_file,
        wr: wr_file,
    };
    if args.nonblocking {
        set_nonblocking(&ends.rd)?;
        set_nonblocking(&ends.wr)?;
    }
    Ok((t, ends))
}

fn set_nonblocking(f: &File) -> Result<()> {
    let fd = f.as_raw_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fcntl(F_GETFL): {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| format!("fcntl(F_SETFL): {e}"))?;
    Ok(())
}

/// A frame to send and a buffer to receive into.
struct Frames {
    /// `[len: u32 LE][payload]`.
    frame: Vec<u8>,
    base: u64,
    size: usize,
    /// Receive buffer: a frame and 8 spare bytes (so an oversized packet shows).
    rx: Vec<u8>,
}

impl Frames {
    fn new(size: usize) -> Result<Frames> {
        let payload = Payload::new(size);
        let len = u32::try_from(size).map_err(|_| "message size does not fit a 4-byte length")?;
        let mut frame = Vec::with_capacity(4 + size);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload.bytes());
        Ok(Frames {
            frame,
            base: payload.base(),
            size,
            rx: vec![0u8; 4 + size + 8],
        })
    }

    #[inline(always)]
    fn stamp(&mut self, counter: u64) {
        self.frame[4..12].copy_from_slice(&counter.to_le_bytes());
    }

    #[inline(always)]
    fn expected(&self, counter: u64) -> u64 {
        self.base.wrapping_add(counter)
    }

    /// Sends the frame.
    #[inline(always)]
    fn send(&self, wr: &mut File, spin: &mut Spinner) -> Result<()> {
        write_full(wr, &self.frame, spin)
    }

    /// Receives one frame; returns its payload length and checksum.
    #[inline(always)]
    fn recv(&mut self, t: Transport, rd: &mut File, spin: &mut Spinner) -> Result<(usize, u64)> {
        let len = self.recv_frame(t, rd, spin)?;
        Ok((len, checksum(self.payload(len))))
    }

    /// Receives one frame into the receive buffer; returns its payload length.
    #[inline(always)]
    fn recv_frame(&mut self, t: Transport, rd: &mut File, spin: &mut Spinner) -> Result<usize> {
        if t == Transport::UdsSeqpacket {
            loop {
                match rd.read(&mut self.rx) {
                    Ok(0) => return Err(closed()),
                    Ok(n) => {
                        let len = frame_len(&self.rx);
                        if n < 4 || len != n - 4 || len > self.size {
                            return Err(format!("malformed {n}-byte packet").into());
                        }
                        return Ok(len);
                    }
                    Err(e) => retry(e, spin)?,
                }
            }
        }
        read_full(rd, &mut self.rx[..4], spin)?;
        let len = frame_len(&self.rx);
        if len > self.size {
            return Err(format!("malformed frame: length {len}").into());
        }
        read_full(rd, &mut self.rx[4..4 + len], spin)?;
        Ok(len)
    }

    /// The payload of the frame last received, `len` bytes.
    #[inline(always)]
    fn payload(&self, len: usize) -> &[u8] {
        &self.rx[4..4 + len]
    }
}

#[inline(always)]
fn frame_len(rx: &[u8]) -> usize {
    u32::from_le_bytes([rx[0], rx[1], rx[2], rx[3]]) as usize
}

fn closed() -> Box<dyn std::error::Error> {
    "the other side closed the connection".into()
}

/// What to do after a failed read or write: spin on `EAGAIN`, retry on `EINTR` unless the
/// harness was interrupted, fail otherwise.
#[inline(always)]
fn retry(e: io::Error, spin: &mut Spinner) -> Result<()> {
    match e.kind() {
        io::ErrorKind::WouldBlock => spin.idle(),
        io::ErrorKind::Interrupted if !sys::interrupted() => Ok(()),
        io::ErrorKind::Interrupted => Err("interrupted".into()),
        _ => Err(e.into()),
    }
}

/// Reads exactly `buf.len()` bytes (`read_exact`, also for non-blocking descriptors).
#[inline(always)]
fn read_full(rd: &mut File, mut buf: &mut [u8], spin: &mut Spinner) -> Result<()> {
    while !buf.is_empty() {
        match rd.read(buf) {
            Ok(0) => return Err(closed()),
            Ok(n) => buf = &mut std::mem::take(&mut buf)[n..],
            Err(e) => retry(e, spin)?,
        }
    }
    Ok(())
}

/// Writes all of `buf` (`write_all`, also for non-blocking descriptors).
#[inline(always)]
fn write_full(wr: &mut File, mut buf: &[u8], spin: &mut Spinner) -> Result<()> {
    while !buf.is_empty() {
        match wr.write(buf) {
            Ok(0) => return Err(closed()),
            Ok(n) => buf = &buf[n..],
            Err(e) => retry(e, spin)?,
        }
    }
    Ok(())
}

/// Starts a peer with the channel's other ends, then closes the harness's copies of them (so a
/// peer that dies shows as the end of the stream).
fn start_peer(
    ctx: &Ctx,
    t: Transport,
    nonblocking: bool,
    role: Role,
    size: usize,
    count: u64,
    fds: PeerFds,
) -> Result<Peer> {
    let mut args = vec![
        "--transport".to_owned(),
        t.label().to_owned(),
        "--size".to_owned(),
        size.to_string(),
        "--count".to_owned(),
        count.to_string(),
    ];
    args.extend(fds.args());
    if nonblocking {
        args.push("--nonblocking".to_owned());
    }
    let label = match role {
        Role::Pong => format!("the {} pong peer", t.label()),
        Role::Timestamp => format!("the {} wake-up reader", t.label()),
        _ => format!("the {} consumer", t.label()),
    };
    let mut peer = Peer::bench_peer(ctx, label, ctx.peer_cpu(0), role, &args, &fds.borrowed())?;
    drop(fds);
    peer.expect_ready()?;
    Ok(peer)
}

/// Ping-pong: the harness sends frame `k`, the peer receives and checks it and sends a frame of
/// the same size back, the harness receives and checks that. Returns the last `samples`
/// round-trip times (ns), after `warmup` discarded ones.
pub fn pingpong(
    ctx: &Ctx,
    t: Transport,
    nonblocking: bool,
    size: usize,
    samples: usize,
    warmup: usize,
) -> Result<Vec<u64>> {
    let total = (warmup + samples) as u64;
    let (mut ends, fds) = channel(t)?;
    let peer = start_peer(ctx, t, nonblocking, Role::Pong, size, total, fds)?;
    if nonblocking {
        set_nonblocking(&ends.rd)?;
        set_nonblocking(&ends.wr)?;
    }
    let mut frames = Frames::new(size)?;
    let mut spin = Spinner::new(ctx.deadline(), ctx.yield_idle, "the pong peer");
    let mut rtts = Vec::with_capacity(samples);
    let warmup = warmup as u64;
    let mut run = || -> Result<u64> {
        let mut bad = 0u64;
        let mut prev = Instant::now();
        for k in 0..total {
            frames.stamp(k);
            frames.send(&mut ends.wr, &mut spin)?;
            let (len, sum) = frames.recv(t, &mut ends.rd, &mut spin)?;
            bad += u64::from(len != size || sum != frames.expected(k));
            let now = Instant::now();
            if k >= warmup {
                rtts.push(sys::nanos(now - prev));
            }
            prev = now;
        }
        Ok(bad)
    };
    let bad = match run() {
        Ok(bad) => bad,
        Err(e) => return Err(peer.explain(e)),
    };
    let v = peer.finish_json()?;
    let peer_bad = v
        .get("bad")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if bad + peer_bad > 0 {
        return Err(format!(
            "{} ping-pong: {bad} replies and {peer_bad} pings had a wrong checksum",
            t.label()
        )
        .into());
    }
    Ok(rtts)
}

/// Peer side of [`pingpong`].
pub fn peer_pong(args: &PeerArgs) -> Result<()> {
    let (t, mut ends) = peer_ends(args)?;
    let mut frames = Frames::new(args.size)?;
    let mut spin = args.spinner("the harness's ping");
    say("ready")?;
    let mut bad = 0u64;
    for k in 0..args.count {
        let (len, sum) = frames.recv(t, &mut ends.rd, &mut spin)?;
        bad += u64::from(len != args.size || sum != frames.expected(k));
        frames.stamp(k);
        frames.send(&mut ends.wr, &mut spin)?;
    }
    say(&json!({ "bad": bad }).to_string())
}

/// Throughput: the harness writes `count` frames as fast as the transport takes them; the peer
/// reads every one (one frame per receive) and checksums it. The consumer's rate is over its
/// active interval (first receive to last).
pub fn throughput(
    ctx: &Ctx,
    t: Transport,
    nonblocking: bool,
    size: usize,
    count: u64,
) -> Result<ThroughputRow> {
    let (mut ends, fds) = channel(t)?;
    let peer = start_peer(ctx, t, nonblocking, Role::Consume, size, count, fds)?;
    if nonblocking {
        set_nonblocking(&ends.wr)?;
    }
    let mut frames = Frames::new(size)?;
    let mut spin = Spinner::new(ctx.deadline(), ctx.yield_idle, "the consumer");
    let start = Instant::now();
    let mut run = || -> Result<()> {
        for k in 1..=count {
            frames.stamp(k);
            frames.send(&mut ends.wr, &mut spin)?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        return Err(peer.explain(e));
    }
    let producer_rate = count as f64 / start.elapsed().as_secs_f64();
    let who = format!("the {} consumer", t.label());
    let v = peer.finish_json()?;
    let get = |key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("{who} printed no {key:?}: {v}"))
    };
    if get("bad")? > 0.0 {
        return Err(format!("{who}: {} frames had a wrong checksum", get("bad")?).into());
    }
    let msgs_per_s = get("msgs_per_s")?;
    Ok(ThroughputRow {
        transport: t.label(),
        size,
        // The peer is this binary; its writer blocks while the socket or pipe is full, so no
        // frame can be lost.
        reader: "rust",
        mode: "lossless",
        batch: None,
        batch_mean: None,
        wait: if nonblocking { "spin" } else { "block" },
        recv_call: false,
        sent: count,
        received: get("received")? as u64,
        lagged: 0,
        msgs_per_s,
        bytes_per_s: get("bytes_per_s")?,
        producer_msgs_per_s: producer_rate,
        capacity: None,
        empty_polls: None,
        wakeups: None,
        rounds: 1,
        min_msgs_per_s: msgs_per_s,
        max_msgs_per_s: msgs_per_s,
        vs_lossy: None,
    })
}

/// Peer side of [`throughput`].
pub fn peer_consume(args: &PeerArgs) -> Result<()> {
    let (t, mut ends) = peer_ends(args)?;
    let mut frames = Frames::new(args.size)?;
    let mut spin = args.spinner("the harness's messages");
    say("ready")?;
    let (mut bad, mut sum) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    for k in 1..=args.count {
        let (len, c) = frames.recv(t, &mut ends.rd, &mut spin)?;
        if first.is_none() {
            first = Some(Instant::now());
        }
        bad += u64::from(len != args.size || c != frames.expected(k));
        sum = sum.wrapping_add(c);
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let msgs_per_s = if secs > 0.0 && args.count > 1 {
        args.count as f64 / secs
    } else {
        0.0
    };
    say(&json!({
        "received": args.count,
        "lagged": 0,
        "msgs_per_s": msgs_per_s,
        "bytes_per_s": msgs_per_s * args.size as f64,
        "checksum": sum,
        "bad": bad,
    })
    .to_string())
}

/// Wake-up latency of an idle reader blocked in `read` on transport `t` (the baseline of the
/// shm wake-up run, [`shm::wake`]): after [`WAKE_WARMUP`] warm-up frames (stamped 0, not
/// measured), the harness sends `samples` frames, each after a pause taken from `gaps`, each
/// carrying the `CLOCK_REALTIME` nanoseconds read just before its `write`; the reader records
/// its `CLOCK_REALTIME` when the frame has been read, minus the stamp, then checks the
/// checksum.
pub fn wake(
    ctx: &Ctx,
    t: Transport,
    size: usize,
    samples: usize,
    gaps: &mut sys::Gaps,
) -> Result<WakeSamples> {
    let count = WAKE_WARMUP + samples as u64;
    let (mut ends, fds) = channel(t)?;
    let peer = start_peer(ctx, t, false, Role::Timestamp, size, count, fds)?;
    let mut frames = Frames::new(size)?;
    let mut spin = Spinner::new(ctx.deadline(), ctx.yield_idle, "the wake-up reader");
    let mut run = || -> Result<()> {
        frames.stamp(0);
        for _ in 0..WAKE_WARMUP {
            frames.send(&mut ends.wr, &mut spin)?;
            std::thread::sleep(shm::WAKE_WARMUP_INTERVAL);
        }
        std::thread::sleep(shm::WAKE_SETTLE);
        for gap in gaps.by_ref().take(samples) {
            std::thread::sleep(gap);
            if sys::interrupted() {
                return Err("interrupted".into());
            }
            frames.stamp(sys::realtime_ns());
            frames.send(&mut ends.wr, &mut spin)?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        return Err(peer.explain(e));
    }
    let who = format!("the {} wake-up reader", t.label());
    let v = peer.finish_json()?;
    if let Some(bad) = v
        .get("bad")
        .and_then(serde_json::Value::as_u64)
        .filter(|&b| b > 0)
    {
        return Err(format!("{who}: {bad} frames had a wrong checksum").into());
    }
    Ok(WakeSamples {
        latencies: shm::raw_latencies(&v, &who)?,
        lagged: 0,
        wakeups: None,
    })
}

/// Warm-up frames of a socket wake-up run.
const WAKE_WARMUP: u64 = 100;

/// Peer side of [`wake`]: reads `--count` frames (blocking), and for each one stamped with a
/// time records now minus that time.
pub fn peer_timestamp(args: &PeerArgs) -> Result<()> {
    let (t, mut ends) = peer_ends(args)?;
    let mut frames = Frames::new(args.size)?;
    let mut spin = args.spinner("the harness's messages");
    let mut latencies = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    say("ready")?;
    let mut bad = 0u64;
    for _ in 0..args.count {
        let len = frames.recv_frame(t, &mut ends.rd, &mut spin)?;
        let now = sys::realtime_ns();
        let payload = frames.payload(len);
        let sent = counter(payload);
        if sent != 0 {
            latencies.push(now.saturating_sub(sent));
        }
        bad += u64::from(len != args.size || checksum(payload) != frames.expected(sent));
    }
    let s = Summary::of(&latencies, 1.0);
    say(&json!({
        "received": args.count,
        "lagged": 0,
        "p50_ns": s.p50,
        "p99_ns": s.p99,
        "p999_ns": s.p999,
        "max_ns": s.max,
        "bad": bad,
        "latencies_ns": latencies,
    })
    .to_string())
}
