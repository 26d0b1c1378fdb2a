//! Publishes fixed-size "announcements" (plain-old-data structs) on a shared-memory segment.
//!
//! Run it together with `announce_subscriber`, as two processes, in two terminals:
//!
//! ```text
//! cargo run --example announce_publisher                  # terminal 1
//! cargo run --example announce_subscriber                 # terminal 2
//! ```
//!
//! Either may start first: the subscriber waits a few seconds for the segment to appear. Both
//! take the segment name as their first argument (default `/shmcast-announce`). The publisher
//! also takes `--rate N` (announcements per second, default 5), `--seconds S` (default 10) and
//! `--count N` (stop after N announcements):
//!
//! ```text
//! cargo run --example announce_publisher -- /prices --rate 100 --count 500
//! cargo run --example announce_subscriber -- /prices
//! ```
//!
//! The name may also be a path with a '/' after its first character (`/tmp/announce`,
//! `./announce`): the segment is then that file.
//!
//! The segment is removed when the publisher ends normally; subscribers that already opened it
//! keep reading what was published, then end. If the publisher is killed (Ctrl-C), its segment
//! stays behind: the next run replaces it by itself (its producer is gone), and `shmcast clean`
//! removes such stale segments (`shmcast list` shows them as `dead`).

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shmcast::Publisher;

#[path = "common/announcement.rs"]
mod announcement;
use announcement::Announcement;

struct Args {
    name: String,
    rate: f64,
    seconds: f64,
    count: Option<u64>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        name: "/shmcast-announce".to_owned(),
        rate: 5.0,
        seconds: 10.0,
        count: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rate" => args.rate = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--count" => args.count = Some(value()?.parse()?),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}").into()),
            name => args.name = name.to_owned(),
        }
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err("--rate must be a positive number".into());
    }
    Ok(args)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    // A small ring is plenty for 32-byte messages: 64 KiB holds about 1300 of them, so a
    // subscriber that pauses for a while still finds the recent ones.
    let mut publisher = Publisher::options()
        .capacity(64 * 1024)
        .create(&args.name)?;
    println!(
        "publishing on {} ({} bytes per announcement, {}/s for {} s{})",
        publisher.path().display(),
        std::mem::size_of::<Announcement>(),
        args.rate,
        args.seconds,
        args.count
            .map_or(String::new(), |n| format!(", at most {n} announcements"))
    );

    let symbols = [*b"ACME\0\0\0\0", *b"GLOBEX\0\0", *b"INITECH\0"];
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let limit = args.count.unwrap_or(u64::MAX);
    let mut id = 0u64;
    while Instant::now() < end && id < limit {
        id += 1;
        let announcement = Announcement {
            id,
            // A deterministic wobble around 100.0.
            price_micros: 100_000_000 + ((id * 7919) % 2001) as i64 * 1000 - 1_000_000,
            timestamp_ns: now_ns(),
            symbol: symbols[id as usize % symbols.len()],
        };
        let seq = publisher.publish_pod(&announcement)?;
        println!(
            "seq {seq}: #{} {} at {:.3}",
            announcement.id,
            String::from_utf8_lossy(&announcement.symbol).trim_end_matches('\0'),
            announcement.price_micros as f64 / 1e6
        );
        // Pace by the schedule, not by the time each iteration took.
        let due = start + period.mul_f64(id as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    println!(
        "published {id} announcements; removing {}",
        publisher.path().display()
    );
    Ok(())
}
