//! Log lines on standard error: connection events, segment changes, warnings. Standard output
//! is left to the counters (text or `--json`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Writes one log line, prefixed with the Unix time in seconds (millisecond precision) so the
/// lines of an exporter and an importer can be merged in order.
pub fn line(args: std::fmt::Arguments<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "shmcast-bridge {}.{:03}: {args}",
        now.as_secs(),
        now.subsec_millis()
    );
}

/// `log!("...", args)`: one line on standard error (see [`fn@line`]).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
