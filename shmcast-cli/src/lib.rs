//! What the `shmcast` command and the `shmcast-bench` harness (`shmcast-bench/`) share: the
//! parsers of sizes and durations (one rule for every flag), the wall clock in the header's
//! unit, and the signal handler installation. Not a public API: the crate is not published.

use std::ffi::c_int;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors of the commands: shown as `PROGRAM: error: …`.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A byte count: digits with an optional `K`, `M` or `G` suffix (powers of 1024) and an
/// optional `B` or `iB` after it (`65536`, `64K`, `1MiB`).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 65536, 64K, 1M)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The longest duration a flag may give, in seconds (about 31 years; the Go commands' limit
/// too): longer ones would overflow a deadline.
pub const MAX_SECONDS: f64 = 1e9;

/// A decimal number of seconds, `0` to [`MAX_SECONDS`].
pub fn parse_seconds(s: &str) -> std::result::Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=MAX_SECONDS).contains(v))
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds from 0 to 1e9"))
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch (0 before 1970, saturating in 2554):
/// the unit of the header's `last_publish_ns`, and the clock both sides of a timestamp
/// measurement read.
#[inline]
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Installs `handler` for SIGINT, SIGTERM and SIGHUP, without `SA_RESTART`: a blocked read
/// ends with `EINTR`. The handler must be async-signal-safe (store to an atomic, no more).
pub fn catch_signals(handler: extern "C" fn(c_int)) -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the caller's handler is async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| format!("cannot install a {signal} handler: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_overflow() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("4g"), Ok(4 << 30));
        assert!(parse_bytes("1.5K").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }

    #[test]
    fn seconds_are_from_0_to_1e9() {
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("2e9").is_err());
    }
}
