//! `shmcast`: create, publish to, read and inspect shmcast segments from the shell.
//!
//! The flags and output formats are specified in `docs/CLI.md`; the Go twin of `tail`
//! (`go-client/cmd/shmcast-tail`) prints the same bytes with `--json` and `--verify`.

use std::ffi::c_int;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use shmcast::{
    layout, pattern, Publisher, PublisherOptions, RecvError, StartAt, Subscriber, WaitStrategy,
};

mod admin;
mod stat;

use shmcast_cli::{catch_signals, parse_bytes, parse_seconds, MAX_SECONDS};

#[derive(Parser)]
#[command(
    name = "shmcast",
    version,
    about = "Broadcast messages through a shared-memory ring, and read them back",
    after_help = "NAME is a shared-memory name (`/demo` or `demo`, i.e. /dev/shm/demo) or, if it \
                  has a '/' after its first character, a file path (`./seg`, `/tmp/seg`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a segment and publish each line of standard input (or generated messages).
    Publish(PublishArgs),
    /// Print messages as they arrive.
    Tail(TailArgs),
    /// Print a segment's header.
    Inspect(InspectArgs),
    /// List the shmcast segments in /dev/shm (or a directory), live and dead.
    List(admin::ListArgs),
    /// Remove the segments whose producer is dead.
    Clean(admin::CleanArgs),
    /// Watch a segment: publish rate, retained window, wake-ups, readers' lag, per interval.
    Stat(stat::StatArgs),
}

#[derive(clap::Args)]
struct PublishArgs {
    /// Segment to create.
    name: String,
    /// Ring capacity: a power of two >= 4096, with an optional K, M or G suffix.
    #[arg(long, default_value = "1M", value_parser = parse_bytes)]
    capacity: u64,
    /// File mode of the new segment, in octal.
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    mode: u32,
    /// Publish N generated, verifiable messages instead of reading standard input.
    #[arg(long)]
    count: Option<u64>,
    /// Payload length of generated messages: BYTES or MIN-MAX.
    #[arg(long, default_value = "64", value_parser = parse_size_range, requires = "count")]
    size: (usize, usize),
    /// Generated messages per second, a positive number (default: as fast as possible).
    #[arg(long, requires = "count", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Leave the segment in place when the command exits.
    #[arg(long)]
    keep: bool,
    /// Create a lossless segment: readers that register (`tail --lossless`) hold the producer
    /// back instead of losing messages.
    #[arg(long)]
    lossless: bool,
    /// Reader slots of a lossless segment: how many readers can register at once (1 to 31).
    #[arg(long, default_value_t = shmcast::DEFAULT_READER_SLOTS, requires = "lossless",
          value_parser = clap::value_parser!(u64).range(1..=31))]
    readers: u64,
    /// Evict a registered reader that holds the producer back this long (SECONDS, or `never`).
    #[arg(long, default_value = "2", requires = "lossless", value_parser = parse_max_block)]
    max_block: MaxBlock,
    /// Publish nothing until N readers have registered, so they miss nothing from message 1.
    #[arg(long, value_name = "N", requires = "lossless",
          value_parser = clap::value_parser!(u64).range(0..=31))]
    wait_readers: Option<u64>,
}

/// `--max-block`: a duration, or never.
#[derive(Clone, Copy)]
struct MaxBlock(Option<Duration>);

#[derive(clap::Args)]
struct TailArgs {
    /// Segment to read.
    name: String,
    /// Where to start.
    #[arg(long, default_value = "oldest", value_parser = start_at())]
    from: StartAt,
    /// Stop once received + lagged messages reach N.
    #[arg(long)]
    count: Option<u64>,
    /// Stop when no message arrives for this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Check generated payloads and end with a summary line.
    #[arg(long)]
    verify: bool,
    /// How to wait while no message is available: spin, yield, backoff or block (sleep until
    /// the producer publishes; no CPU while idle).
    #[arg(long, default_value = "block")]
    wait: WaitStrategy,
    /// Register as a lossless reader: the producer waits rather than overwrite a message this
    /// reader has not read (the segment must be created with `publish --lossless`).
    #[arg(long)]
    lossless: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// Segment to inspect.
    name: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Publish(args) => publish(args),
        Command::Tail(args) => tail(args),
        Command::Inspect(args) => inspect(args),
        Command::List(args) => admin::list(args),
        Command::Clean(args) => admin::clean(args),
        Command::Stat(args) => stat::stat(args),
    };
    // `publish` stopped by a signal has removed its segment (unless --keep): now die of it.
    if let Some(signal) = stop_signal() {
        die_of(signal);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<io::Error>().map(io::Error::kind)
                == Some(io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Messages may quote names and paths, which may hold control characters.
            eprintln!("shmcast: error: {}", admin::escape(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `--from`: a `StartAt` by its name, the names listed in `--help` and in usage errors.
fn start_at() -> impl TypedValueParser<Value = StartAt> {
    PossibleValuesParser::new(StartAt::ALL.iter().map(|start| start.name()))
        .try_map(|name| name.parse::<StartAt>())
}

fn publish(args: PublishArgs) -> Result<()> {
    // Before the segment exists: from here on SIGINT, SIGTERM and SIGHUP end the command through
    // its normal path, which removes the segment (unless --keep).
    catch_stop_signals()?;
    // Refuse impossible sizes before a segment exists, so a failure leaves nothing behind.
    let max = layout::max_payload(args.capacity);
    let valid_capacity = args.capacity.is_power_of_two()
        && (layout::MIN_CAPACITY..=layout::MAX_CAPACITY).contains(&args.capacity);
    if args.count.is_some() && valid_capacity && args.size.1 as u64 > max {
        return Err(shmcast::Error::MessageTooLarge {
            len: args.size.1,
            max: max as usize,
        }
        .into());
    }
    let options = PublisherOptions::new()
        .capacity(args.capacity)
        .mode(args.mode)
        .unlink_on_drop(!args.keep)
        .lossless(args.lossless)
        .reader_slots(args.readers)
        .max_block(args.max_block.0);
    // `docs/CLI.md`, "Naming a segment": the library reads NAME by the same rule.
    let mut publisher = options.create(&args.name)?;
    if let Some(n) = args.wait_readers {
        eprintln!("shmcast: waiting for {n} readers to register");
        // In slices, so that a signal is noticed.
        while publisher.wait_for_readers(n as usize, Some(STOP_POLL))? < n as usize {
            if stop_signal().is_some() {
                return Ok(());
            }
        }
    }
    match args.count {
        Some(count) => publish_generated(&mut publisher, count, args.size, args.rate),
        None => publish_lines(&mut publisher),
    }
}

/// How often `publish` looks for a stop signal while it waits: for readers to register, for
/// a lossless reader to make room, or for the next message's turn under `--rate`.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Publishes `payload`; `false` if a stop signal came first (nothing published). On a
/// lossless segment the wait for room is cut in slices to notice one.
fn publish_one(publisher: &mut Publisher, payload: &[u8]) -> Result<bool> {
    if !publisher.is_lossless() {
        publisher.publish(payload)?;
        return Ok(true);
    }
    loop {
        // A reader that holds the producer back across slices is still evicted after
        // --max-block: the producer keeps track of it between calls.
        match publisher.publish_timeout(payload, STOP_POLL) {
            Ok(_) => return Ok(true),
            Err(shmcast::Error::Backpressure { .. }) if stop_signal().is_none() => {}
            Err(shmcast::Error::Backpressure { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// One line of standard input, as [`read_line`] found it.
enum Line {
    /// A whole line, without its terminator (`\n` or `\r\n`).
    Whole,
    /// A line longer than the limit; only its beginning was read, the rest was not.
    TooLong,
}

/// Reads the next line of `input` into `line`, without its terminator (`\n` or `\r\n`):
/// `None` at the end of the input or on a stop signal. It keeps no more than `limit + 1` bytes
/// of a line: a longer one is reported as soon as that is known, the rest of it unread, so an
/// endless line is never buffered whole.
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<Line>> {
    line.clear();
    let mut started = false;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            // The handlers are installed without SA_RESTART, so a signal ends a blocked read.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if stop_signal().is_some() {
                    return Ok(None);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if available.is_empty() && !started {
            return Ok(None);
        }
        started = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        // More than `limit + 1` bytes: too long even if the last is a `\r`.
        if chunk.len() > limit + 1 - line.len() {
            return Ok(Some(Line::TooLong));
        }
        line.extend_from_slice(chunk);
        // The last line may have no terminator.
        let end = newline.is_some() || available.is_empty();
        let used = newline.map_or(available.len(), |i| i + 1);
        input.consume(used);
        if end {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(if line.len() > limit {
                Line::TooLong
            } else {
                Line::Whole
            }));
        }
    }
}

fn publish_lines(publisher: &mut Publisher) -> Result<()> {
    let max = publisher.max_payload();
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    for number in 1u64.. {
        match read_line(&mut input, &mut line, max)? {
            None => break,
            Some(Line::Whole) => {
                if !publish_one(publisher, &line)? {
                    break;
                }
            }
            Some(Line::TooLong) => {
                return Err(format!(
                    "line {number} of standard input is larger than the maximum of {max} bytes \
                     for this segment (a quarter of its capacity, less 16); use a larger \
                     capacity (nothing from this line on was published)"
                )
                .into())
            }
        }
        if stop_signal().is_some() {
            break;
        }
    }
    Ok(())
}

fn publish_generated(
    publisher: &mut Publisher,
    count: u64,
    (min, max): (usize, usize),
    rate: Option<f64>,
) -> Result<()> {
    let mut buf = vec![0u8; max];
    let start = Instant::now();
    for seq in 1..=count {
        if let Some(rate) = rate {
            // At most `MAX_SECONDS` ahead: a slow rate and a large count cannot overflow.
            let ahead = ((seq - 1) as f64 / rate).min(MAX_SECONDS);
            let due = start + Duration::from_secs_f64(ahead);
            // Sleep in slices (noticing a stop signal), then spin the last 200 µs.
            loop {
                if stop_signal().is_some() {
                    return Ok(());
                }
                let Some(left) = due.checked_duration_since(Instant::now()) else {
                    break;
                };
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left.min(STOP_POLL));
                } else {
                    std::hint::spin_loop();
                }
            }
        } else if stop_signal().is_some() {
            return Ok(());
        }
        let payload = &mut buf[..pattern::length(seq, min, max)];
        pattern::fill(seq, payload);
        if !publish_one(publisher, payload)? {
            return Ok(());
        }
    }
    Ok(())
}

/// The signal that asked `publish` to stop (SIGINT, SIGTERM or SIGHUP), or 0.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: c_int) {
    STOP_SIGNAL.store(signal, Ordering::Relaxed);
}

/// Makes SIGINT, SIGTERM and SIGHUP set [`STOP_SIGNAL`], which `publish` checks between
/// messages and while it waits.
fn catch_stop_signals() -> Result<()> {
    catch_signals(on_stop_signal)
}

fn stop_signal() -> Option<nix::sys::signal::Signal> {
    nix::sys::signal::Signal::try_from(STOP_SIGNAL.load(Ordering::Relaxed)).ok()
}

/// Ends the process by `signal`, as if no handler had caught it, so whoever started it sees
/// how it ended (status 128 + the signal's number in a shell).
fn die_of(signal: nix::sys::signal::Signal) -> ! {
    use nix::sys::signal::{raise, signal as set_handler, SigHandler};
    // SAFETY: restoring the default disposition installs no handler.
    let _ = unsafe { set_handler(signal, SigHandler::SigDfl) };
    let _ = raise(signal);
    std::process::exit(128 + signal as i32)
}

/// Running totals of `tail`.
#[derive(Default)]
struct Totals {
    received: u64,
    lagged: u64,
    corrupt: u64,
}

fn tail(args: TailArgs) -> Result<()> {
    let mut subscriber = Subscriber::options()
        .start(args.from)
        .wait_strategy(args.wait)
        .lossless(args.lossless)
        .open(&args.name)?;
    // Grown to the longest message read so far: never sized by the header's capacity, which
    // a hostile file may claim to be 1 TiB (docs/CLI.md).
    let mut buf = vec![0u8; subscriber.max_payload().min(INITIAL_BUFFER)];
    let mut gone = None;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut totals = Totals::default();
    let outcome = loop {
        if args
            .count
            .is_some_and(|n| totals.received + totals.lagged >= n)
        {
            break Ok(());
        }
        let result = match subscriber.try_recv_into(&mut buf) {
            Err(RecvError::Empty) => {
                // Show what we have before waiting.
                out.flush()?;
                match args.timeout {
                    Some(timeout) => match subscriber.recv_into_timeout(&mut buf, timeout) {
                        // A dead producer is the end of the stream, whichever the read noticed
                        // first: one more read says how it ended (or delivers what it committed
                        // last), bounded in case a lock holder makes it look alive.
                        Err(RecvError::Timeout) if !subscriber.producer_alive() => {
                            subscriber.recv_into_timeout(&mut buf, GONE_GRACE)
                        }
                        other => other,
                    },
                    None => subscriber.recv_into(&mut buf),
                }
            }
            other => other,
        };
        match result {
            Ok(received) => {
                let payload = &buf[..received.len];
                totals.received += 1;
                if args.verify && !pattern::matches(received.seq, payload) {
                    totals.corrupt += 1;
                }
                if args.json {
                    let data = base64::engine::general_purpose::STANDARD.encode(payload);
                    writeln!(
                        out,
                        "{{\"seq\":{},\"len\":{},\"data\":\"{data}\"}}",
                        received.seq, received.len
                    )?;
                } else if !args.verify {
                    writeln!(
                        out,
                        "seq={} len={} {}",
                        received.seq,
                        received.len,
                        printable(payload)
                    )?;
                }
            }
            // The message stays unread: read it again into a buffer that holds it.
            Err(RecvError::BufferTooSmall { needed, .. }) => grow(&mut buf, needed)?,
            // Reported once; reading goes on, lossy, with exact `lagged` counts from here on.
            Err(e @ RecvError::Evicted) => {
                out.flush()?;
                eprintln!("shmcast: {e}");
            }
            Err(RecvError::Lagged { missed }) => {
                totals.lagged += missed;
                if args.json {
                    writeln!(out, "{{\"lagged\":{missed}}}")?;
                } else if !args.verify {
                    writeln!(out, "lagged={missed}")?;
                }
            }
            // The stream is over: everything published was read and nothing more will come
            // (or not within --timeout). Falling short of --count is the only failure.
            Err(e @ (RecvError::Timeout | RecvError::ProducerGone { .. })) => {
                let is_gone = matches!(e, RecvError::ProducerGone { .. });
                let why = match e {
                    RecvError::Timeout => format!(
                        "timed out after {} s without a message",
                        args.timeout.unwrap_or_default().as_secs_f64()
                    ),
                    gone => gone.to_string(),
                };
                break match args.count {
                    Some(n) => Err(format!(
                        "{why}: received {} and lagged {} of {n}",
                        totals.received, totals.lagged
                    )),
                    None => {
                        // The normal end of the stream, said once everything else is out.
                        if is_gone {
                            gone = Some(why);
                        }
                        Ok(())
                    }
                };
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    if args.verify {
        writeln!(
            out,
            "received={} lagged={} corrupt={}",
            totals.received, totals.lagged, totals.corrupt
        )?;
    }
    out.flush()?;
    if let Some(gone) = gone {
        eprintln!("shmcast: {gone}");
    }
    outcome?;
    if totals.corrupt > 0 {
        return Err(format!(
            "{} payloads did not match the generated pattern",
            totals.corrupt
        )
        .into());
    }
    Ok(())
}

/// How long `tail` waits, after a `--timeout` with the producer dead, for the read to report
/// it gone (the libraries test liveness every 100 ms).
const GONE_GRACE: Duration = Duration::from_millis(500);

/// The size `tail` starts its message buffer with (or the maximum payload, if smaller).
const INITIAL_BUFFER: usize = 64 << 10;

/// Makes `buf` hold a message of `needed` bytes; an error, not an abort, if memory runs out.
fn grow(buf: &mut Vec<u8>, needed: usize) -> Result<()> {
    buf.try_reserve_exact(needed.saturating_sub(buf.len()))
        .map_err(|e| format!("cannot allocate {needed} bytes for the next message: {e}"))?;
    buf.resize(needed, 0);
    Ok(())
}

/// The payload as text if it is printable UTF-8, else `hex:` and its bytes.
fn printable(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => {
            let mut hex = String::from("hex:");
            for b in payload {
                hex.push_str(&format!("{b:02x}"));
            }
            hex
        }
    }
}

fn inspect(args: InspectArgs) -> Result<()> {
    let info = Subscriber::open(&args.name, StartAt::Beginning)?.info();
    let mut out = io::stdout().lock();
    if args.json {
        let value = serde_json::json!({
            "path": info.path.to_string_lossy(),
            "layout_version": info.version,
            "capacity": info.capacity,
            "max_payload": info.max_payload,
            "epoch": info.epoch,
            "producer_pid": info.producer_pid,
            "producer_alive": info.producer_alive,
            "created_unix_ns": info.created_unix_ns,
            "last_publish_unix_ns": info.last_publish_unix_ns,
            "next_seq": info.next_seq,
            "oldest_seq": info.oldest_seq,
            "head": info.head,
            "latest": info.latest,
            "intent": info.intent,
            "lossless": info.lossless,
            "gap_records": info.gap_records,
            "reader_slots": info.reader_slots,
            "max_block_ns": info.max_block.map(|d| d.as_nanos() as u64),
            "evictions": info.evictions,
            "readers": info.readers.iter().map(|r| serde_json::json!({
                "slot": r.slot,
                "pid": r.pid,
                "state": if r.evicted { "evicted" } else { "active" },
                "next_seq": r.next_seq,
                "position": r.position,
                "lag_messages": r.lag_messages,
                "lag_bytes": r.lag_bytes,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{value}")?;
    } else {
        let created = Duration::from_nanos(info.created_unix_ns);
        writeln!(out, "segment         {}", admin::escape_path(&info.path))?;
        writeln!(out, "layout version  {}", info.version)?;
        writeln!(
            out,
            "capacity        {} bytes (max payload {} bytes)",
            info.capacity, info.max_payload
        )?;
        writeln!(
            out,
            "producer        pid {}, {} (epoch {})",
            info.producer_pid,
            admin::alive_word(info.producer_alive),
            info.epoch
        )?;
        writeln!(
            out,
            "created         {:.3} s since the Unix epoch",
            created.as_secs_f64()
        )?;
        writeln!(
            out,
            "last publish    {}",
            info.last_publish_unix_ns.map_or_else(
                || "never".to_owned(),
                |ns| admin::time_and_age(admin::unix_now_ns(), ns)
            )
        )?;
        writeln!(out, "next seq        {}", info.next_seq)?;
        // The header's words as found: a damaged or hostile segment may hold any values, shown
        // as they are, and a range that cannot be is said to be impossible.
        let span = |oldest| {
            Some((
                info.next_seq.checked_sub(1)?,
                info.next_seq.checked_sub(oldest)?,
            ))
        };
        match info.oldest_seq {
            Some(oldest) => match span(oldest) {
                Some((newest, messages)) => writeln!(
                    out,
                    "retained        seq {oldest} ..= {newest} ({messages} messages)"
                )?,
                None => writeln!(
                    out,
                    "retained        impossible: oldest seq {oldest}, next seq {} (the segment \
                     is corrupt)",
                    info.next_seq
                )?,
            },
            None => writeln!(out, "retained        nothing published yet")?,
        }
        writeln!(
            out,
            "positions       head {} latest {} intent {}",
            info.head,
            info.latest.map_or("-".to_owned(), |l| l.to_string()),
            info.intent
        )?;
        if info.lossless {
            writeln!(
                out,
                "lossless        {} of {} reader slots registered, max block {}, {} evicted so far",
                info.readers.len(),
                info.reader_slots,
                info.max_block
                    .map_or("never".to_owned(), |d| format!("{} s", d.as_secs_f64())),
                info.evictions
            )?;
            for r in &info.readers {
                writeln!(
                    out,
                    "  slot {:<2}       pid {}, {}, next seq {}, {} messages ({} bytes) behind",
                    r.slot,
                    r.pid,
                    if r.evicted { "evicted" } else { "active" },
                    r.next_seq,
                    r.lag_messages,
                    r.lag_bytes
                )?;
            }
        }
        if info.gap_records {
            writeln!(
                out,
                "gap records     yes: losses before messages reached this segment are reported as lagged"
            )?;
        }
    }
    Ok(())
}

fn parse_max_block(s: &str) -> std::result::Result<MaxBlock, String> {
    if s == "never" {
        return Ok(MaxBlock(None));
    }
    parse_seconds(s).and_then(|d| {
        if d.is_zero() {
            Err("--max-block must be more than 0 seconds (or `never`)".to_owned())
        } else {
            Ok(MaxBlock(Some(d)))
        }
    })
}

/// `--mode`: permission bits only (`0` to `777`); set-user-ID, set-group-ID and sticky bits
/// have no business on a segment file.
fn parse_mode(s: &str) -> std::result::Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal file mode (example: 640)"))?;
    if mode > 0o777 {
        return Err(format!(
            "{s:?}: only the permission bits 0 to 777 may be set (no set-user-ID, \
             set-group-ID or sticky bit)"
        ));
    }
    Ok(mode)
}

fn parse_size_range(s: &str) -> std::result::Result<(usize, usize), String> {
    let parse = |v: &str| {
        parse_bytes(v)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{s:?} is not a size or MIN-MAX range"))
    };
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(s)?, parse(s)?),
    };
    if min > max {
        return Err(format!("{s:?}: MIN is larger than MAX"));
    }
    Ok((min, max))
}

/// `--rate`: messages per second, a finite number above 0.
fn parse_rate(s: &str) -> std::result::Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("{s:?} is not a rate: a number of messages per second above 0"))
}
