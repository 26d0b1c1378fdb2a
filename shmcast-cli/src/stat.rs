//! `shmcast stat NAME`: a live view of a segment, one line (or JSON object) per interval, like
//! AeronStat or `iox2 service hz` (docs/CLI.md).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use shmcast::{SegmentInfo, StartAt, Subscriber};

use crate::admin;
use crate::Result;
use shmcast_cli::{parse_seconds, MAX_SECONDS};

#[derive(clap::Args)]
pub struct StatArgs {
    /// Segment to watch.
    name: String,
    /// Seconds between lines (a fraction is fine).
    #[arg(long, default_value = "1", value_parser = parse_interval)]
    interval: Duration,
    /// Print N lines, then exit (default: until interrupted).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `--interval`: as `parse_seconds`, but at least a millisecond (rates over less are noise).
fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let d = parse_seconds(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!(
            "{s:?} is too short: the interval is 0.001 to {MAX_SECONDS} seconds"
        ));
    }
    Ok(d)
}

/// One look at the segment, and when it was taken.
struct Sample {
    at: Instant,
    info: SegmentInfo,
}

impl Sample {
    fn take(subscriber: &Subscriber) -> Self {
        Sample {
            at: Instant::now(),
            info: subscriber.info(),
        }
    }

    /// Ring bytes written so far: the position of the newest record (records with their
    /// 16-byte headers, padding included).
    fn bytes(&self) -> u64 {
        self.info.latest.unwrap_or(0)
    }
}

/// What one interval's line says.
struct Line<'a> {
    now: &'a Sample,
    seconds: f64,
    msgs_per_s: f64,
    bytes_per_s: f64,
    wakeups_per_s: f64,
    retained: u64,
    retained_s: Option<f64>,
}

impl<'a> Line<'a> {
    fn between(before: &Sample, now: &'a Sample) -> Self {
        let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let per_s = |n: u64| n as f64 / seconds;
        let msgs_per_s = per_s(now.info.next_seq.saturating_sub(before.info.next_seq));
        let retained = now
            .info
            .oldest_seq
            .map_or(0, |oldest| now.info.next_seq.saturating_sub(oldest));
        Line {
            now,
            seconds,
            msgs_per_s,
            bytes_per_s: per_s(now.bytes().saturating_sub(before.bytes())),
            wakeups_per_s: per_s(u64::from(
                now.info.wake_seq.wrapping_sub(before.info.wake_seq),
            )),
            retained,
            // At the current rate, how long the ring keeps a message: unknown while idle.
            retained_s: (msgs_per_s > 0.0).then(|| retained as f64 / msgs_per_s),
        }
    }

    fn json(&self) -> serde_json::Value {
        let info = &self.now.info;
        serde_json::json!({
            "unix_ns": admin::unix_now_ns(),
            "interval_s": self.seconds,
            "msgs_per_s": self.msgs_per_s,
            "bytes_per_s": self.bytes_per_s,
            "next_seq": info.next_seq,
            "oldest_seq": info.oldest_seq,
            "retained_msgs": self.retained,
            "retained_s": self.retained_s,
            "parked": info.parked,
            "wakeups_per_s": self.wakeups_per_s,
            "wake_throttled": info.wake_throttled,
            "producer_alive": info.producer_alive,
            "last_publish_unix_ns": info.last_publish_unix_ns,
            "evictions": info.evictions,
            "readers": info.readers.iter().map(|r| serde_json::json!({
                "slot": r.slot,
                "pid": r.pid,
                "state": if r.evicted { "evicted" } else { "active" },
                "next_seq": r.next_seq,
                "lag_messages": r.lag_messages,
                "lag_bytes": r.lag_bytes,
            })).collect::<Vec<_>>(),
        })
    }

    fn text(&self) -> String {
        let info = &self.now.info;
        let retained_s = self
            .retained_s
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.3} s"));
        let last = info.last_publish_unix_ns.map_or_else(
            || "never".to_owned(),
            |ns| admin::time_and_age(admin::unix_now_ns(), ns),
        );
        let mut line = format!(
            "{}  {}  next {}  retained {} msgs ({retained_s})  parked {}  wakeups {}{}  producer {}  last publish {last}",
            si(self.msgs_per_s, "msg/s"),
            si(self.bytes_per_s, "B/s"),
            info.next_seq,
            self.retained,
            if info.parked { "yes" } else { "no" },
            si(self.wakeups_per_s, "/s"),
            if info.wake_throttled { " (throttled)" } else { "" },
            admin::alive_word(info.producer_alive),
        );
        for r in &info.readers {
            let state = if r.evicted { "evicted" } else { "active" };
            line.push_str(&format!(
                "  [slot {} pid {} {state} lag {} msgs]",
                r.slot, r.pid, r.lag_messages
            ));
        }
        line
    }
}

/// A rate with an SI prefix and its unit: `950 msg/s`, `12.3 kmsg/s`, `4.56 MB/s`.
fn si(x: f64, unit: &str) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2} G{unit}", x / 1e9),
        x if x >= 1e6 => format!("{:.2} M{unit}", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k{unit}", x / 1e3),
        x => format!("{x:.0} {unit}"),
    }
}

pub fn stat(args: StatArgs) -> Result<()> {
    // A lossy reader that never reads: it only looks at the header and the subscriber area.
    let subscriber = Subscriber::open(&args.name, StartAt::Next)?;
    let mut out = io::stdout().lock();
    let mut before = Sample::take(&subscriber);
    let mut next = before.at;
    let mut printed = 0;
    while args.count.is_none_or(|n| printed < n) {
        // Fixed ticks, so lines do not drift by the time each one takes.
        next += args.interval;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let now = Sample::take(&subscriber);
        let line = Line::between(&before, &now);
        if args.json {
            writeln!(out, "{}", line.json())?;
        } else {
            writeln!(out, "{}", line.text())?;
        }
        out.flush()?;
        printed += 1;
        before = now;
    }
    Ok(())
}
