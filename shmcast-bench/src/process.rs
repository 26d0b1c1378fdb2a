//! The peer processes of the harness: started with a [`PeerSpec`], awaited through the
//! handshake of [`crate::spec`], and killed by a watchdog once past their deadline.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::go_reader::GoReader;
use crate::spec::{PeerReport, PeerSpec, Transport};
use crate::sys::{self, Ctx};
use crate::Result;

/// Who reads, in the measurements that have a Go twin.
#[derive(Clone, Copy)]
pub enum Reader<'a> {
    /// A peer process of this harness (the Rust `Subscriber`, or the socket and pipe reader).
    Rust,
    /// The Go bench reader.
    Go(&'a GoReader),
}

impl<'a> Reader<'a> {
    /// The `"reader"` value of its rows.
    pub fn label(self) -> &'static str {
        match self {
            Reader::Rust => "rust",
            Reader::Go(_) => "go",
        }
    }

    /// The program it runs.
    pub fn program(self) -> Program<'a> {
        match self {
            Reader::Rust => Program::Harness,
            Reader::Go(go) => Program::Go(go.path()),
        }
    }

    /// How errors name it: "the lossless shm consumer", "the Go timestamp reader".
    pub fn who(self, transport: Transport, lossless: bool, what: &str) -> String {
        let lossless = if lossless { "lossless " } else { "" };
        match self {
            Reader::Rust => format!("the {lossless}{} {what}", transport.label()),
            Reader::Go(_) => format!("the {lossless}Go {what}"),
        }
    }
}

/// The program a peer runs.
#[derive(Clone, Copy)]
pub enum Program<'a> {
    /// This harness's own binary (`shmcast-bench peer SPEC`).
    Harness,
    /// The Go bench reader (`shmcast-bench-reader SPEC`).
    Go(&'a Path),
}

/// A running peer process. Dropping it kills the process if it is still running.
pub struct Peer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    label: String,
}

impl Peer {
    /// Starts `program` with `spec` (completed with the deadline, the harness's process id,
    /// `cpu` and whether to yield) on `cpu`, passing it `fds` (their numbers must be in
    /// `spec.link`), and waits for its `ready` line.
    pub fn start(
        ctx: &Ctx,
        label: impl Into<String>,
        program: Program<'_>,
        mut spec: PeerSpec,
        cpu: Option<usize>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Peer> {
        spec.cpu = cpu;
        spec.timeout_ms = u64::try_from(ctx.timeout.as_millis()).unwrap_or(u64::MAX);
        spec.parent = Some(std::process::id());
        spec.yield_idle = ctx.yield_idle;
        let mut cmd = match program {
            Program::Harness => {
                let mut cmd = Command::new(harness_exe()?);
                cmd.arg("peer");
                cmd
            }
            Program::Go(path) => Command::new(path),
        };
        cmd.arg(serde_json::to_string(&spec)?);
        let mut peer = Peer::spawn(ctx, label, cmd, cpu, fds)?;
        peer.expect_ready()?;
        Ok(peer)
    }

    /// Starts `cmd` as a peer on `cpu` (it inherits that affinity from its first instruction),
    /// with `fds` inherited and its standard output and error captured.
    fn spawn(
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

    /// Waits for the peer's `ready` line.
    fn expect_ready(&mut self) -> Result<()> {
        let line = self.read_line()?;
        if line != "ready" {
            return Err(format!("{}: expected \"ready\", got {line:?}", self.label).into());
        }
        Ok(())
    }

    /// Reads the peer's result line, waits for it to exit, and checks that it succeeded.
    fn finish(mut self) -> Result<String> {
        let line = self.read_line()?;
        let status = self.reap()?;
        if !status.0.success() {
            return Err(self.describe_failure("failed", status).into());
        }
        Ok(line)
    }

    /// The peer's report.
    pub fn report(self) -> Result<PeerReport> {
        let label = self.label.clone();
        let line = self.finish()?;
        serde_json::from_str(&line)
            .map_err(|e| format!("{label} printed {line:?}, not its report: {e}").into())
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

/// This very binary: `/proc/self/exe` is it even if its file was replaced or removed since it
/// started (a rebuild during a run), so the peer is always the same code.
fn harness_exe() -> Result<PathBuf> {
    let exe = Path::new("/proc/self/exe");
    if exe.exists() {
        return Ok(exe.to_path_buf());
    }
    std::env::current_exe().map_err(|e| {
        format!("cannot find the shmcast-bench executable to start a peer: {e}").into()
    })
}
