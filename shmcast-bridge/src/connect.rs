//! Connecting to NATS: forever, with back-off, logging every connection event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tokio::sync::watch;

use crate::log;

/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why the bridge cannot start talking to NATS.
#[derive(Debug)]
pub enum ConnectError {
    /// `--nats` is not a NATS URL.
    BadUrl(String, String),
    /// The client refused its options (not a network problem: those are retried).
    Client(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::BadUrl(url, why) => write!(
                f,
                "--nats {url:?} is not a NATS server address ({why}); expected e.g. nats://127.0.0.1:4222"
            ),
            ConnectError::Client(why) => write!(f, "cannot set up the NATS client: {why}"),
        }
    }
}

/// Wait before reconnection attempt `attempt` (1, 2, …): 10 ms doubling up to [`MAX_BACKOFF`].
fn backoff(attempt: usize) -> Duration {
    let exp = attempt.saturating_sub(1).min(16) as u32;
    Duration::from_millis(10u64.saturating_mul(1 << exp)).min(MAX_BACKOFF)
}

/// Connects to `url` as `name`: returns at once, the client connecting (and reconnecting after
/// any loss of the server) in the background for as long as the process runs. Messages are not
/// echoed back to the connection that published them. The receiver counts the connections
/// made (it changes on every reconnection).
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<(Client, watch::Receiver<u64>), ConnectError> {
    url.parse::<ServerAddr>()
        .map_err(|e| ConnectError::BadUrl(url.to_owned(), e.to_string()))?;
    let shown = url.to_owned();
    let (connections, watcher) = watch::channel(0u64);
    let connections = Arc::new(connections);
    let quiet = Arc::new(AtomicBool::new(false));
    let client = ConnectOptions::new()
        .name(name)
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(backoff)
        .event_callback(move |event| {
            let url = shown.clone();
            let connections = Arc::clone(&connections);
            let quiet = Arc::clone(&quiet);
            async move {
                match event {
                    Event::Connected => {
                        log!("connected to {url}");
                        quiet.store(false, Ordering::Relaxed);
                        connections.send_modify(|n| *n += 1);
                    }
                    Event::Disconnected => log!("disconnected from {url}; reconnecting"),
                    // Every failed attempt of a reconnection reports one: the first is enough.
                    Event::ClientError(e) => {
                        if !quiet.swap(true, Ordering::Relaxed) {
                            log!(
                                "NATS client error with {url}: {e} (not repeated until connected)"
                            );
                        }
                    }
                    other => log!("NATS event from {url}: {other}"),
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| ConnectError::Client(e.to_string()))?;
    let watched = client.clone();
    let url = url.to_owned();
    tokio::spawn(async move {
        // The client says nothing while its first connection keeps failing: say it here.
        let mut waited = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if watched.connection_state() == async_nats::connection::State::Connected {
                return;
            }
            waited += 1;
            if waited.is_power_of_two() {
                log!("cannot reach a NATS server at {url} ({waited} s); still trying");
            }
        }
    });
    Ok((client, watcher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
