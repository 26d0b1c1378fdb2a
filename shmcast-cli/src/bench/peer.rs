//! The other process of every measurement: `shmcast bench-peer ROLE …` (hidden), started by the
//! harness with [`Peer`], and a watchdog that kills peers that outlive their deadline.
//!
//! A peer prints `ready` on standard output once it has opened what it reads and created what
//! it writes, and one JSON object when it is done; errors go to standard error as
//! `shmcast: error: …` with exit status 1, which the harness reports with the peer's name.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shmcast::WaitStrategy;

use super::sys::{self, Ctx, Spinner};
use super::transports::Transport;
use super::{idle, publish_cost, shm, transports, Result};

/// What a peer does.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Reads each shm ping and publishes the same-size reply on its own segment.
    ShmPong,
    /// Reads an shm segment as fast as it can, checksumming every payload.
    ShmConsume,
    /// Reads an shm segment and records, per message, now minus the timestamp inside it.
    ShmTimestamp,
    /// Waits in `recv` on an shm segment where nothing is published, and reports the CPU time
    /// it used.
    ShmIdle,
    /// `--readers` threads, each a blocking subscriber that must receive `--count` messages
    /// (the parked subscribers of the publish-cost part).
    ShmParked,
    /// Reads each framed ping on a socket or pipe and writes the same-size reply.
    Pong,
    /// Reads framed messages on a socket or pipe, checksumming every payload.
    Consume,
    /// Reads framed messages on a socket or pipe and records, per message, now minus the
    /// timestamp inside it.
    Timestamp,
}

/// Flags of the hidden `shmcast bench-peer` subcommand (set by the harness, not by people).
#[derive(clap::Args)]
pub struct PeerArgs {
    #[arg(value_enum)]
    pub role: Role,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Payload size.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages to handle.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Segment to read.
    #[arg(long)]
    pub read: Option<String>,
    /// Segment to create for replies.
    #[arg(long)]
    pub reply: Option<String>,
    /// Transport of the inherited descriptors.
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Inherited descriptor to read from.
    #[arg(long)]
    pub fd: Option<i32>,
    /// Inherited descriptor to write to (default: `--fd`).
    #[arg(long)]
    pub wfd: Option<i32>,
    /// Busy-poll non-blocking descriptors instead of blocking.
    #[arg(long)]
    pub nonblocking: bool,
    /// Yield the CPU between polls (only one CPU).
    #[arg(long)]
    pub yield_idle: bool,
    /// Wait for shm messages in the library's blocking call with this strategy (instead of
    /// busy-polling `try_recv_into`).
    #[arg(long)]
    pub wait: Option<WaitStrategy>,
    /// How long the idle subscriber waits, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// shm consumers: register as a lossless reader (the segment must be lossless).
    #[arg(long)]
    pub lossless: bool,
    /// shm consumers: receive up to this many messages per call of the batched receive API.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch: Option<u16>,
    /// Timestamp readers: also print every sample (`"latencies_ns"`).
    #[arg(long)]
    pub raw: bool,
    /// Subscriber threads (shm-parked).
    #[arg(long, default_value_t = 1)]
    pub readers: usize,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
    /// Process id of the harness; the peer refuses to run without it.
    #[arg(long)]
    pub parent: Option<u32>,
}

impl PeerArgs {
    /// `--read`, or an error naming the role.
    pub fn read_name(&self) -> Result<&str> {
        self.read
            .as_deref()
            .ok_or_else(|| "bench-peer: --read is required for this role".into())
    }

    /// A spinner with this peer's deadline.
    pub fn spinner(&self, waiting_for: &'static str) -> Spinner {
        Spinner::new(
            Instant::now() + Duration::from_millis(self.timeout_ms),
            self.yield_idle,
            waiting_for,
        )
    }
}

/// Runs a peer.
pub fn run(args: PeerArgs) -> Result<()> {
    // Die with the harness, so a harness killed outright leaves no peer spinning.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("bench-peer: cannot set the parent-death signal: {e}"))?;
    if let Some(parent) = args.parent {
        if i64::from(nix::unistd::getppid().as_raw()) != i64::from(parent) {
            return Err("bench-peer: the harness has already exited".into());
        }
    }
    if args.size < 8 {
        return Err("bench-peer: --size must be at least 8".into());
    }
    if let Some(cpu) = args.cpu {
        sys::pin_current_thread(cpu)?;
    }
    match args.role {
        Role::ShmPong => shm::peer_pong(&args),
        Role::ShmConsume => shm::peer_consume(&args),
        Role::ShmTimestamp => shm::peer_timestamp(&args),
        Role::ShmIdle => idle::peer(&args),
        Role::ShmParked => publish_cost::peer(&args),
        Role::Pong => transports::peer_pong(&args),
        Role::Consume => transports::peer_consume(&args),
        Role::Timestamp => transports::peer_timestamp(&args),
    }
}

/// Prints one line for the harness and flushes it.
pub fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

// ------------------------------------------------------------------------------- harness side

/// A running peer process. Dropping it kills the process if it is still running.
pub struct Peer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    label: String,
}

impl Peer {
    /// Starts `shmcast bench-peer ROLE ARGS…` on `cpu`, passing it `fds` (their numbers must be
    /// in `args`).
    pub fn bench_peer(
        ctx: &Ctx,
        label: impl Into<String>,
        cpu: Option<usize>,
        role: Role,
        args: &[String],
        fds: &[BorrowedFd<'_>],
    ) -> Result<Peer> {
        // `/proc/self/exe` is this very binary even if its file was replaced or removed since
        // it started (a rebuild during a run), so the peer is always the same code.
        let exe = Path::new("/proc/self/exe");
        let exe = if exe.exists() {
            exe.to_path_buf()
        } else {
            std::env::current_exe()
                .map_err(|e| format!("cannot find the shmcast executable to start a peer: {e}"))?
        };
        let mut cmd = Command::new(exe);
        cmd.arg("bench-peer")
            .arg(
                role.to_possible_value()
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default(),
            )
            .args(args)
            .arg("--timeout-ms")
            .arg(ctx.timeout.as_millis().to_string())
            .arg("--parent")
            .arg(std::process::id().to_string());
        if let Some(cpu) = cpu {
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        if ctx.yield_idle {
            cmd.arg("--yield-idle");
        }
        Peer::spawn(ctx, label, cmd, cpu, fds)
    }

    /// Starts `cmd` as a peer on `cpu` (it inherits that affinity from its first instruction),
    /// with `fds` inherited and its standard output and error captured.
    pub fn spawn(
        ctx: &Ctx,
        label: impl Into<String>,
        mut cmd: Command,
        cpu: Option<usize>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Peer> {
        let label = label.into();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Only this thread starts processes, so clearing close-on-exec for the duration of one
        // spawn hands the descriptors to that process alone.
        for fd in fds {
            set_cloexec(*fd, false)?;
        }
        let spawned = ctx.on_cpu(cpu, || cmd.spawn());
        for fd in fds {
            set_cloexec(*fd, true)?;
        }
        let mut child = spawned?.map_err(|e| format!("cannot start {label}: {e}"))?;
        watch(child.id(), ctx.deadline() + Duration::from_secs(2));
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            unwatch(child.id());
            return Err(format!("{label}: no standard output").into());
        };
        Ok(Peer {
            child,
            stdout: BufReader::new(stdout),
            label,
        })
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the peer has exited (it then cannot be attached to anything).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the peer's `ready` line.
    pub fn expect_ready(&mut self) -> Result<()> {
        let line = self.read_line()?;
        if line != "ready" {
            return Err(format!("{}: expected \"ready\", got {line:?}", self.label).into());
        }
        Ok(())
    }

    /// Reads the peer's result line, waits for it to exit, and checks that it succeeded.
    pub fn finish(mut self) -> Result<String> {
        let line = self.read_line()?;
        let status = self.reap()?;
        if !status.0.success() {
            return Err(self.describe_failure("failed", status).into());
        }
        Ok(line)
    }

    /// The result line as JSON.
    pub fn finish_json(self) -> Result<serde_json::Value> {
        let label = self.label.clone();
        let line = self.finish()?;
        serde_json::from_str(&line)
            .map_err(|e| format!("{label} printed {line:?}, not a JSON object: {e}").into())
    }

    /// The error `e` the harness met while the peer ran, completed with the peer's own account
    /// when the peer failed (which usually says why). The peer is killed if still running.
    pub fn explain(mut self, e: Box<dyn std::error::Error>) -> Box<dyn std::error::Error> {
        // A peer that failed is exiting: give it a moment.
        let until = Instant::now() + Duration::from_millis(200);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.child.try_wait() {
            Ok(Some(status)) if !status.success() => {
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                format!("{e}; {}", self.describe_failure("failed", (status, stderr))).into()
            }
            _ => e,
        }
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => {
                let status = self.reap()?;
                Err(self.describe_failure("ended early", status).into())
            }
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(format!("{}: cannot read its output: {e}", self.label).into()),
        }
    }

    /// Reads what the peer printed on standard error (to its end, i.e. until it exits) and
    /// waits for it.
    fn reap(&mut self) -> Result<(std::process::ExitStatus, String)> {
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        unwatch(self.child.id());
        let status = self
            .child
            .wait()
            .map_err(|e| format!("{}: cannot wait for it: {e}", self.label))?;
        Ok((status, stderr))
    }

    fn describe_failure(
        &self,
        what: &str,
        (status, stderr): (std::process::ExitStatus, String),
    ) -> String {
        use std::os::unix::process::ExitStatusExt;
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(9)) if sys::interrupted() => "killed: interrupted".to_owned(),
            (None, Some(9)) => "killed by the watchdog: timed out".to_owned(),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => status.to_string(),
        };
        let stderr = stderr.trim();
        if stderr.is_empty() {
            format!("{} {what} ({how})", self.label)
        } else {
            format!("{} {what} ({how}): {stderr}", self.label)
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        unwatch(self.child.id());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flag = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(flag)).map_err(|e| {
        format!(
            "cannot change close-on-exec of descriptor {}: {e}",
            fd.as_raw_fd()
        )
    })?;
    Ok(())
}

// ------------------------------------------------------------------------------- watchdog

/// Peers still running, with the time after which they are killed.
static WATCHED: Mutex<Vec<(u32, Instant)>> = Mutex::new(Vec::new());

fn watch(pid: u32, deadline: Instant) {
    WATCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, deadline));
}

fn unwatch(pid: u32) {
    WATCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&(p, _)| p != pid);
}

/// Starts a thread that, every 100 ms, kills peers past their deadline (or all of them once
/// the harness is interrupted). A harness blocked in a read on a hung peer then sees the end of
/// the stream and fails cleanly instead of waiting for ever.
pub fn start_watchdog() -> Result<()> {
    std::thread::Builder::new()
        .name("bench-watchdog".to_owned())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            let stop = sys::interrupted();
            let watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
            for &(pid, deadline) in watched.iter() {
                if stop || now >= deadline {
                    if let Ok(pid) = i32::try_from(pid) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
    Ok(())
}
