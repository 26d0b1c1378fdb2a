//! Reads the announcements that `announce_publisher` publishes, from another process.
//!
//! Run the two as separate processes, in two terminals (either may start first):
//!
//! ```text
//! cargo run --example announce_publisher                  # terminal 1
//! cargo run --example announce_subscriber                 # terminal 2
//! ```
//!
//! Arguments: the segment name (default `/shmcast-announce`; a path such as `/tmp/announce` for
//! a segment file), `--count N` to stop after N announcements, and `--idle S` to stop once
//! nothing arrived for S seconds (default: wait as long as the publisher runs). It waits up to
//! 10 seconds for the segment to appear, starts with the oldest announcement still in the ring,
//! and ends, with a summary and exit status 0, once the publisher has finished and every
//! announcement it published was read (it notices within about 100 ms).

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shmcast::{RecvError, StartAt, Subscriber};

#[path = "common/announcement.rs"]
mod announcement;
use announcement::Announcement;

struct Args {
    name: String,
    count: Option<u64>,
    idle: Option<Duration>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        name: "/shmcast-announce".to_owned(),
        count: None,
        idle: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--count" => args.count = Some(value()?.parse()?),
            "--idle" => args.idle = Some(Duration::try_from_secs_f64(value()?.parse()?)?),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}").into()),
            name => args.name = name.to_owned(),
        }
    }
    Ok(args)
}

/// Opens the segment, waiting for the publisher to create it.
fn open(name: &str) -> Result<Subscriber, Box<dyn Error>> {
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut told = false;
    loop {
        match Subscriber::open(name, StartAt::Oldest) {
            Ok(subscriber) => return Ok(subscriber),
            // Not there yet, or being created right now: try again shortly.
            Err(shmcast::Error::NotFound { .. } | shmcast::Error::NotInitialized { .. })
                if Instant::now() < give_up =>
            {
                if !told {
                    println!("waiting for a publisher to create {name} ...");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let mut subscriber = open(&args.name)?;
    println!(
        "reading {} from message {}",
        subscriber.path().display(),
        subscriber.next_seq()
    );

    let (mut received, mut missed) = (0u64, 0u64);
    let limit = args.count.unwrap_or(u64::MAX);
    while received < limit {
        // The default wait strategy sleeps in the kernel until the publisher publishes: no CPU
        // while idle. It also notices by itself when the publisher has exited.
        let next = match args.idle {
            Some(idle) => subscriber.recv_pod_timeout::<Announcement>(idle),
            None => subscriber.recv_pod::<Announcement>(),
        };
        match next {
            Ok((seq, a)) => {
                received += 1;
                let age_us = now_ns().saturating_sub(a.timestamp_ns) / 1000;
                println!(
                    "seq {seq}: #{} {} at {:.3} ({age_us} µs after it was published)",
                    a.id,
                    String::from_utf8_lossy(&a.symbol).trim_end_matches('\0'),
                    a.price_micros as f64 / 1e6
                );
            }
            Err(RecvError::Lagged { missed: n }) => {
                // We fell a whole ring behind; carry on with the oldest retained message.
                missed += n;
                println!("lagged: {n} announcements were overwritten before we read them");
            }
            Err(RecvError::SizeMismatch { seq, actual, .. }) => {
                println!("seq {seq}: skipping a {actual}-byte message that is not an announcement");
            }
            // The publisher has exited and we have read everything it published: the normal
            // end. (`replaced`: a new publisher has created the segment again since.)
            Err(RecvError::ProducerGone { replaced }) => {
                println!(
                    "the publisher has finished{}",
                    if replaced {
                        "; a new one has started: run again to follow it"
                    } else {
                        ""
                    }
                );
                break;
            }
            Err(RecvError::Timeout) => {
                println!(
                    "nothing for {:?}; the publisher seems to be stuck",
                    args.idle.unwrap_or_default()
                );
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("received {received} announcements, missed {missed}");
    Ok(())
}
