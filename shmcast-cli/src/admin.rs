//! `shmcast list` and `shmcast clean` (docs/CLI.md): print what the library's
//! [`shmcast::list_segments`] finds in a directory and what [`shmcast::clean_stale_segments`]
//! removes. Also the time formatting that `inspect` shares with them.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use shmcast::{
    clean_stale_segments, list_segments, Cleaned, DamagedSegment, Removal, SegmentEntry,
    SegmentInfo, SegmentStatus,
};

use crate::Result;
pub use shmcast_cli::unix_now_ns;

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

/// The directory a command looks in, and how it names what it finds there.
struct Place {
    dir: PathBuf,
    /// Whether it is /dev/shm by default, where a file `NAME` is called `/NAME`.
    shm_names: bool,
}

impl Place {
    fn new(dir: Option<&Path>) -> Self {
        Place {
            dir: dir.map_or_else(|| PathBuf::from(SHM_DIR), Path::to_path_buf),
            shm_names: dir.is_none(),
        }
    }

    /// `/NAME` for /dev/shm, else the path; escaped for a terminal ([`escape_os`]).
    fn name(&self, entry: &SegmentEntry) -> String {
        match entry.path.file_name() {
            Some(file) if self.shm_names => format!("/{}", escape_os(file)),
            _ => escape_path(&entry.path),
        }
    }

    /// The directory, escaped for a terminal.
    fn dir(&self) -> String {
        escape_path(&self.dir)
    }

    /// The library's error for the directory, as the commands report it.
    fn read_error(&self, e: io::Error) -> String {
        format!("cannot read the directory {}: {e}", self.dir())
    }

    /// Says on standard error that `unreadable` files could not be examined.
    fn note_unreadable(&self, unreadable: u64) {
        if unreadable > 0 {
            eprintln!(
                "shmcast: note: {} file{} in {} could not be opened (permission denied) and {} \
                 not examined; run as their owner to include them",
                unreadable,
                plural(unreadable),
                self.dir(),
                if unreadable == 1 { "was" } else { "were" },
            );
        }
    }
}

/// The listing's damaged segments: a valid header, but readers refuse them.
fn damaged_segments(
    entries: &[SegmentEntry],
) -> impl Iterator<Item = (&SegmentEntry, &DamagedSegment)> {
    entries.iter().filter_map(|entry| match &entry.status {
        SegmentStatus::Damaged(d) => Some((entry, d)),
        _ => None,
    })
}

/// How many entries the listing could not open.
fn count_unreadable<'a>(statuses: impl Iterator<Item = &'a SegmentStatus>) -> u64 {
    statuses
        .filter(|status| matches!(status, SegmentStatus::Unreadable))
        .count() as u64
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub fn list(args: ListArgs) -> Result<()> {
    let place = Place::new(args.dir.as_deref());
    let entries = list_segments(&place.dir).map_err(|e| place.read_error(e))?;
    let segments: Vec<(&Path, &SegmentInfo)> = entries
        .iter()
        .filter_map(|entry| Some((entry.path.as_path(), entry.status.info()?)))
        .collect();
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.json {
        for (path, info) in &segments {
            // JSON escapes control characters itself; bytes that are not UTF-8 become U+FFFD.
            let name = match path.file_name() {
                Some(file) if place.shm_names => format!("/{}", file.to_string_lossy()),
                _ => path.to_string_lossy().into_owned(),
            };
            let value = serde_json::json!({
                "name": name,
                "path": path.to_string_lossy(),
                "capacity": info.capacity,
                "producer_pid": info.producer_pid,
                "producer_alive": info.producer_alive,
                "created_unix_ns": info.created_unix_ns,
                "last_publish_unix_ns": info.last_publish_unix_ns,
                "next_seq": info.next_seq,
            });
            writeln!(out, "{value}")?;
        }
        for (entry, damaged) in damaged_segments(&entries) {
            let value = serde_json::json!({
                "name": place.name(entry),
                "path": entry.path.to_string_lossy(),
                "capacity": damaged.capacity,
                "producer_pid": damaged.producer_pid,
                "producer_alive": damaged.producer_alive,
                "created_unix_ns": damaged.created_unix_ns,
                "damaged": damaged.problem,
            });
            writeln!(out, "{value}")?;
        }
    } else if segments.is_empty() && damaged_segments(&entries).next().is_none() {
        writeln!(out, "no shmcast segments in {}", place.dir())?;
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
        let rows: Vec<[String; 6]> = entries
            .iter()
            .filter_map(|entry| Some((place.name(entry), entry.status.info()?)))
            .map(|(name, info)| {
                [
                    name,
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
        if !rows.is_empty() {
            writeln!(out, "{}", line(header))?;
        }
        for row in &rows {
            writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
        }
        // Segments readers refuse (grown, shrunk, a corrupt ring) are shown, not hidden.
        for (entry, damaged) in damaged_segments(&entries) {
            writeln!(
                out,
                "damaged {} (producer pid {}, {}): {}",
                place.name(entry),
                damaged.producer_pid,
                alive_word(damaged.producer_alive),
                escape(&damaged.problem)
            )?;
        }
    }
    out.flush()?;
    place.note_unreadable(count_unreadable(entries.iter().map(|e| &e.status)));
    Ok(())
}

pub fn clean(args: CleanArgs) -> Result<()> {
    let place = Place::new(args.dir.as_deref());
    let cleaned =
        clean_stale_segments(&place.dir, args.dry_run).map_err(|e| place.read_error(e))?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let now = unix_now_ns();
    let (mut stale, mut removed, mut live, mut failed) = (0u64, 0u64, 0u64, 0u64);
    for Cleaned { entry, removal, .. } in &cleaned {
        let name = place.name(entry);
        let what = match &entry.status {
            SegmentStatus::Stale(info) => format!(
                "{name} (producer pid {}, last publish {})",
                info.producer_pid,
                info.last_publish_unix_ns
                    .map_or_else(|| "never".to_owned(), |ns| age(now, ns)),
            ),
            SegmentStatus::Damaged(d) if !d.producer_alive => format!(
                "{name} (producer pid {}, damaged: {})",
                d.producer_pid,
                escape(&d.problem)
            ),
            SegmentStatus::Live(_) | SegmentStatus::Damaged(_) => {
                live += 1;
                continue;
            }
            _ => continue,
        };
        stale += 1;
        let Some(removal) = removal else {
            writeln!(out, "would remove {what}")?;
            continue;
        };
        match removal {
            Ok(Removal::Removed { .. }) => {
                removed += 1;
                writeln!(out, "removed {what}")?;
            }
            Ok(Removal::ProducerAlive { .. }) => {
                live += 1;
                writeln!(
                    out,
                    "kept {name}: a producer holds it now (it is being replaced or removed by \
                     another process)"
                )?;
            }
            Ok(Removal::Replaced) => {
                live += 1;
                writeln!(out, "kept {name}: a new segment replaced it meanwhile")?;
            }
            Ok(Removal::Gone) => {
                writeln!(out, "skipped {name}: another process removed it")?;
            }
            // `Removal` may grow; anything new means "not removed".
            Ok(other) => writeln!(out, "kept {name}: {other:?}")?,
            Err(e) => {
                failed += 1;
                writeln!(out, "failed {name}: {}", escape(&e.to_string()))?;
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
    place.note_unreadable(count_unreadable(cleaned.iter().map(|c| &c.entry.status)));
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

/// `text` with what a terminal would act on or hide shown as escapes: control characters
/// (`\n`, `\t`, `\x1b`, ...), other characters that are not printable (`\u{202e}`), and `\`
/// itself (`\\`), so that a name can neither forge lines nor move the cursor, and reads back
/// unambiguously.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\t' => escaped.push_str("\\t"),
            '\r' => escaped.push_str("\\r"),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_ascii_control() => escaped.push_str(&format!("\\x{:02x}", c as u32)),
            // Quotes are printable; `escape_debug` escapes them for Rust's literals only.
            '"' | '\'' => escaped.push(c),
            // Other control and format characters, unassigned ones, ...
            c => escaped.extend(c.escape_debug()),
        }
    }
    escaped
}

/// A file name as [`escape`] shows it, each byte that is not part of valid UTF-8 as `\xNN`.
pub fn escape_os(name: &OsStr) -> String {
    let mut escaped = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        escaped.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            escaped.push_str(&format!("\\x{b:02x}"));
        }
    }
    escaped
}

/// A path as [`escape_os`] shows it.
pub fn escape_path(path: &Path) -> String {
    escape_os(path.as_os_str())
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

    #[test]
    fn names_are_escaped_for_a_terminal() {
        assert_eq!(escape("plain name-1.seg"), "plain name-1.seg");
        assert_eq!(escape("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape("\x1b[2J\x07\x7f"), "\\x1b[2J\\x07\\x7f");
        assert_eq!(escape("back\\slash 'q' \"q\""), "back\\\\slash 'q' \"q\"");
        // Bidirectional overrides and C1 controls are not printable; other letters are.
        assert_eq!(escape("\u{202e}\u{85}é中"), "\\u{202e}\\u{85}é中");
        let name = OsStr::from_bytes(b"bad\xff\xfe\n.seg");
        assert_eq!(escape_os(name), "bad\\xff\\xfe\\n.seg");
    }
}
