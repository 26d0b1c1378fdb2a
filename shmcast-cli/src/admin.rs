//! `shmcast list` and `shmcast clean` (docs/CLI.md): find the segments in a directory by
//! their header, and remove those whose producer is dead. Also the time formatting that
//! `inspect` shares with them.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use shmcast::{remove_stale_segment, Removal, SegmentInfo, StartAt, Subscriber};

use crate::Result;

/// Where shared-memory segments live on Linux.
const SHM_DIR: &str = "/dev/shm";

#[derive(clap::Args)]
pub struct ListArgs {
    /// One JSON object per segment, one per line.
    #[arg(long)]
    json: bool,
    /// Look in this directory instead of /dev/shm (segments are then named by their path).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct CleanArgs {
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Clean this directory instead of /dev/shm.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// A segment found in the directory.
struct Found {
    /// `/NAME` for /dev/shm, else the path.
    name: String,
    path: PathBuf,
    info: SegmentInfo,
}

/// What a scan found, besides segments.
struct Scan {
    segments: Vec<Found>,
    /// Regular files this process may not open: segments among them cannot be told apart.
    unreadable: u64,
    dir: PathBuf,
}

/// Every shmcast segment among the regular files of `dir` (default /dev/shm), recognised by
/// its header, sorted by name. Symbolic links, directories and anything else that is not a
/// regular file are skipped, and so are regular files that are not valid segments (foreign
/// files, or segments whose producer has not finished creating them).
fn scan(dir: Option<&Path>) -> Result<Scan> {
    let shm_names = dir.is_none();
    let dir = dir.map_or_else(|| PathBuf::from(SHM_DIR), Path::to_path_buf);
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
    let mut scan = Scan {
        segments: Vec::new(),
        unreadable: 0,
        dir: dir.clone(),
    };
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
        // The entry's own type: a symbolic link is not followed.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        match examine(&path) {
            Ok(Some(info)) => {
                let name = if shm_names {
                    format!("/{}", entry.file_name().to_string_lossy())
                } else {
                    path.display().to_string()
                };
                scan.segments.push(Found { name, path, info });
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => scan.unreadable += 1,
            // Removed meanwhile, replaced by a link, …: not a segment of this directory.
            Err(_) => {}
        }
    }
    scan.segments.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scan)
}

/// The header of the segment at `path`, `None` if it is not a (finished) segment. The file is
/// opened once, without following a symbolic link and without blocking (a FIFO swapped in
/// cannot hang the scan), and the library then opens that very file through
/// `/proc/self/fd`, so a name changed meanwhile cannot lead it out of the directory.
fn examine(path: &Path) -> io::Result<Option<SegmentInfo>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(None);
    }
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let subscriber = if by_fd.exists() {
        Subscriber::open_path(&by_fd, StartAt::Next)
    } else {
        // No /proc: open the name again and make sure it is still the file checked above.
        Subscriber::open_path(path, StartAt::Next).and_then(|s| {
            let again = std::fs::symlink_metadata(path);
            match again {
                Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => Ok(s),
                _ => Err(shmcast::Error::NotFound {
                    path: path.to_path_buf(),
                }),
            }
        })
    };
    match subscriber {
        Ok(subscriber) => Ok(Some(subscriber.info())),
        Err(shmcast::Error::PermissionDenied { .. }) => {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        }
        Err(_) => Ok(None),
    }
}

/// `O_NOFOLLOW | O_NONBLOCK`.
fn libc_flags() -> i32 {
    use nix::fcntl::OFlag;
    (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits()
}

/// Says on standard error that some files could not be examined.
fn note_unreadable(scan: &Scan) {
    if scan.unreadable > 0 {
        eprintln!(
            "shmcast: note: {} file{} in {} could not be opened (permission denied) and {} not \
             examined; run as their owner to include them",
            scan.unreadable,
            plural(scan.unreadable),
            scan.dir.display(),
            if scan.unreadable == 1 { "was" } else { "were" },
        );
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub fn list(args: ListArgs) -> Result<()> {
    let scan = scan(args.dir.as_deref())?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.json {
        for found in &scan.segments {
            let info = &found.info;
            let value = serde_json::json!({
                "name": found.name,
                "path": found.path,
                "capacity": info.capacity,
                "producer_pid": info.producer_pid,
                "producer_alive": info.producer_alive,
                "created_unix_ns": info.created_unix_ns,
                "last_publish_unix_ns": info.last_publish_unix_ns,
                "next_seq": info.next_seq,
            });
            writeln!(out, "{value}")?;
        }
    } else if scan.segments.is_empty() {
        writeln!(out, "no shmcast segments in {}", scan.dir.display())?;
    } else {
        let now = unix_now_ns();
        let header = [
            "NAME",
            "CAPACITY",
            "PID",
            "PRODUCER",
            "LAST PUBLISH",
            "NEXT SEQ",
        ];
        let rows: Vec<[String; 6]> = scan
            .segments
            .iter()
            .map(|found| {
                let info = &found.info;
                [
                    found.name.clone(),
                    bytes(info.capacity),
                    info.producer_pid.to_string(),
                    alive_word(info.producer_alive).to_owned(),
                    info.last_publish_unix_ns
                        .map_or_else(|| "never".to_owned(), |ns| age(now, ns)),
                    info.next_seq.to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            // Text left-aligned, numbers right-aligned; no trailing spaces.
            let right = [false, true, true, false, false, true];
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                if right[i] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    if i + 1 < cells.len() {
                        text.push_str(&" ".repeat(pad));
                    }
                }
            }
            text
        };
        writeln!(out, "{}", line(header))?;
        for row in &rows {
            writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
        }
    }
    out.flush()?;
    note_unreadable(&scan);
    Ok(())
}

pub fn clean(args: CleanArgs) -> Result<()> {
    let scan = scan(args.dir.as_deref())?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let now = unix_now_ns();
    let (mut stale, mut removed, mut live, mut failed) = (0u64, 0u64, 0u64, 0u64);
    for found in &scan.segments {
        let info = &found.info;
        if info.producer_alive {
            live += 1;
            continue;
        }
        stale += 1;
        let what = format!(
            "{} (producer pid {}, last publish {})",
            found.name,
            info.producer_pid,
            info.last_publish_unix_ns
                .map_or_else(|| "never".to_owned(), |ns| age(now, ns)),
        );
        if args.dry_run {
            writeln!(out, "would remove {what}")?;
            continue;
        }
        match remove_stale_segment(&found.path) {
            Ok(Removal::Removed { .. }) => {
                removed += 1;
                writeln!(out, "removed {what}")?;
            }
            Ok(Removal::ProducerAlive { .. }) => {
                live += 1;
                writeln!(
                    out,
                    "kept {}: a producer holds it now (it is being replaced or removed by \
                     another process)",
                    found.name
                )?;
            }
            Ok(Removal::Replaced) => {
                live += 1;
                writeln!(
                    out,
                    "kept {}: a new segment replaced it meanwhile",
                    found.name
                )?;
            }
            Ok(Removal::Gone) => {
                writeln!(out, "skipped {}: another process removed it", found.name)?;
            }
            // `Removal` may grow; anything new means "not removed".
            Ok(other) => writeln!(out, "kept {}: {other:?}", found.name)?,
            Err(e) => {
                failed += 1;
                writeln!(out, "failed {}: {e}", found.name)?;
            }
        }
    }
    if args.dry_run {
        writeln!(
            out,
            "would remove {stale} stale segment{}, keep {live} with a live producer",
            plural(stale)
        )?;
    } else {
        writeln!(
            out,
            "removed {removed} stale segment{}, kept {live} with a live producer",
            plural(removed)
        )?;
    }
    out.flush()?;
    note_unreadable(&scan);
    if failed > 0 {
        return Err(format!(
            "could not remove {failed} of {stale} stale segment{} (see above)",
            plural(stale)
        )
        .into());
    }
    Ok(())
}

pub fn alive_word(alive: bool) -> &'static str {
    if alive {
        "alive"
    } else {
        "dead"
    }
}

/// A capacity (a power of two) as `4K`, `1M`, `2G`, or bytes.
fn bytes(n: u64) -> String {
    for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How long before `now` the time `ns` was: `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
fn age(now: u64, ns: u64) -> String {
    let secs = now.saturating_sub(ns) / 1_000_000_000;
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        7200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// `2024-05-01 12:00:00.123 UTC (3.2 s ago)`.
pub fn time_and_age(now: u64, ns: u64) -> String {
    let ago = now.saturating_sub(ns) as f64 / 1e9;
    format!("{} ({ago:.1} s ago)", utc(ns))
}

/// Nanoseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns / 1_000_000) % 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03} UTC",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(951_782_400_123_000_000), "2000-02-29 00:00:00.123 UTC");
        assert_eq!(
            utc(1_700_000_000_000_000_000),
            "2023-11-14 22:13:20.000 UTC"
        );
    }

    #[test]
    fn capacities_and_ages_are_short() {
        assert_eq!(bytes(4096), "4K");
        assert_eq!(bytes(1 << 20), "1M");
        assert_eq!(bytes(3 << 30), "3G");
        assert_eq!(bytes(1000), "1000");
        let s = 1_000_000_000;
        assert_eq!(age(100 * s, 97 * s), "3 s ago");
        assert_eq!(age(1000 * s, 700 * s), "5 min ago");
        assert_eq!(age(3 * s, 5 * s), "0 s ago");
    }
}
