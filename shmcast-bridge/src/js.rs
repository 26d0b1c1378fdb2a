//! The JetStream stream both directions use: created on demand, with file storage.

use std::time::Duration;

use async_nats::jetstream;

use crate::log;

/// The JetStream options of the exporter (and importer).
#[derive(Debug, Clone)]
pub struct JetStreamArgs {
    /// Name of the JetStream stream holding the subject.
    pub stream: String,
    /// Most messages the stream keeps (older ones are discarded).
    pub max_msgs: i64,
    /// Most messages published and not yet acknowledged.
    pub max_unacked: usize,
}

/// Waits until the client is connected and the stream exists (creating it: file storage, the
/// subject, at most `max_msgs` messages, the oldest discarded), logging why not now and then.
pub async fn stream_ready(
    client: &async_nats::Client,
    js: &jetstream::Context,
    subject: &str,
    args: &JetStreamArgs,
) -> jetstream::stream::Stream {
    let mut tries = 0u64;
    loop {
        if client.connection_state() == async_nats::connection::State::Connected {
            let created = js
                .get_or_create_stream(jetstream::stream::Config {
                    name: args.stream.clone(),
                    subjects: vec![subject.to_owned()],
                    storage: jetstream::stream::StorageType::File,
                    max_messages: args.max_msgs,
                    discard: jetstream::stream::DiscardPolicy::Old,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(stream) => return stream,
                Err(e) if tries.is_multiple_of(20) => {
                    log!("JetStream stream {} not ready: {e}; retrying", args.stream)
                }
                Err(_) => {}
            }
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
