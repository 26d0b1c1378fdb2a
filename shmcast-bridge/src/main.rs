//! `shmcast-bridge`: carries the messages of a shmcast segment to other hosts over NATS, with
//! every source sequence number delivered once or counted as lost (docs/BRIDGE.md).
//!
//! - `export NAME --nats URL --subject SUBJECT [--jetstream]`: segment → NATS.
//! - `import --nats URL --subject SUBJECT NAME [--jetstream]`: NATS → segment.
//! - `bench`: the exporter's rate against a plain async-nats publisher loop.

mod accounting;
mod bench;
mod connect;
mod counters;
mod export;
mod import;
mod js;
mod local;
mod log;
mod wire;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shmcast-bridge",
    version,
    about = "Bridge shmcast segments and NATS subjects, counting every lost message"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish the messages of a local segment to a NATS subject.
    Export(ExportCli),
    /// Publish the messages of a NATS subject into a new local segment.
    Import(ImportCli),
    /// Measure the exporter against a plain async-nats publisher loop (needs a NATS server).
    Bench(bench::BenchArgs),
}

/// Options both directions share.
#[derive(Args)]
struct Common {
    /// NATS server URL, e.g. nats://127.0.0.1:4222.
    #[arg(long = "nats", value_name = "URL")]
    url: String,
    /// Subject the messages travel on (one source per subject).
    #[arg(long)]
    subject: String,
    /// Go through JetStream: messages are stored (file storage) and de-duplicated, the exporter
    /// publishes again whatever was not acknowledged.
    #[arg(long)]
    jetstream: bool,
    /// JetStream stream name (default: SHMCAST_ and the subject, `.` and other signs as `_`).
    #[arg(long, requires = "jetstream")]
    stream: Option<String>,
    /// Most messages the JetStream stream keeps (older ones are discarded).
    #[arg(long, default_value_t = 1_000_000, requires = "jetstream")]
    max_msgs: i64,
    /// Print the counters as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Seconds between two counter lines (they are printed at exit too).
    #[arg(long, default_value_t = 10.0, value_parser = parse_interval)]
    report_every: f64,
}

#[derive(Args)]
struct ExportCli {
    /// Segment to read.
    name: String,
    #[command(flatten)]
    common: Common,
    /// Most JetStream messages published and not yet acknowledged.
    #[arg(long, default_value_t = 4096, requires = "jetstream")]
    max_unacked: usize,
}

#[derive(Args)]
struct ImportCli {
    /// Segment to create.
    name: String,
    #[command(flatten)]
    common: Common,
    /// Capacity of the segment: a power of two >= 4096.
    #[arg(long, default_value_t = shmcast::DEFAULT_CAPACITY)]
    capacity: u64,
    /// Seconds a gap waits for re-sent messages before it counts as lost (JetStream mode).
    #[arg(long, default_value_t = 10.0, value_parser = parse_interval, requires = "jetstream")]
    reorder_wait: f64,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds above 0 and at most 86400"
        )),
    }
}

impl Common {
    fn jetstream(&self, max_unacked: usize) -> Option<js::JetStreamArgs> {
        self.jetstream.then(|| js::JetStreamArgs {
            stream: self
                .stream
                .clone()
                .unwrap_or_else(|| format!("SHMCAST_{}", wire::token(&self.subject))),
            max_msgs: self.max_msgs,
            max_unacked,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shmcast-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let (common, counters, task) = match cli.command {
            Command::Bench(args) => return bench::run(args).await,
            Command::Export(e) => {
                let counters = counters::Counters::new("export", export::COUNTERS);
                let args = export::ExportArgs {
                    segment: e.name,
                    url: e.common.url.clone(),
                    subject: e.common.subject.clone(),
                    jetstream: e.common.jetstream(e.max_unacked),
                };
                let task = tokio::spawn(export::run(args, counters.clone()));
                (e.common, counters, task)
            }
            Command::Import(i) => {
                let counters = counters::Counters::new("import", import::COUNTERS);
                let args = import::ImportArgs {
                    segment: i.name,
                    capacity: i.capacity,
                    url: i.common.url.clone(),
                    subject: i.common.subject.clone(),
                    jetstream: i.common.jetstream(0),
                    reorder_wait: Duration::from_secs_f64(i.reorder_wait),
                };
                let task = tokio::spawn(import::run(args, counters.clone()));
                (i.common, counters, task)
            }
        };
        counters.spawn_reporter(Duration::from_secs_f64(common.report_every), common.json);
        let outcome = tokio::select! {
            done = task => done,
            _ = stop_signal() => {
                counters.print(common.json);
                return ExitCode::SUCCESS;
            }
        };
        counters.print(common.json);
        match outcome {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(export::StartError(why))) => {
                eprintln!("shmcast-bridge: {why}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("shmcast-bridge: internal error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
