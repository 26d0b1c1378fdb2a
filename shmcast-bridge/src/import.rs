//! `shmcast-bridge import`: subscribes to a subject (core NATS, or a JetStream stream with an
//! ordered consumer) and publishes each source message into a local segment, accounting for
//! every source sequence number (docs/BRIDGE.md, "Loss accounting").

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::accounting::Tracker;
use crate::counters::Counters;
use crate::export::StartError;
use crate::js::JetStreamArgs;
use crate::local::{Delivered, LocalSegment};
use crate::log;
use crate::wire::Frame;

/// Counters of the importer.
pub const COUNTERS: &[&str] = &[
    "received",
    "lost_upstream",
    "lost_transit",
    "oversize",
    "duplicates",
    "heartbeats",
    "last_seq",
    "not_bridge",
    "stale",
    "incarnations",
];

/// Most frames held back waiting for a missing one (JetStream mode) before the gap is settled.
const MAX_PENDING: usize = 1 << 16;

/// What the importer was asked to do.
#[derive(Debug, Clone)]
pub struct ImportArgs {
    /// The segment to create.
    pub segment: String,
    /// Its capacity.
    pub capacity: u64,
    /// NATS server URL.
    pub url: String,
    /// Subject to subscribe to.
    pub subject: String,
    /// JetStream: read the stream through an ordered consumer.
    pub jetstream: Option<JetStreamArgs>,
    /// How long a gap may wait for re-sent messages before it counts as lost (JetStream mode:
    /// after a server restart the exporter's re-sends arrive after newer messages).
    pub reorder_wait: Duration,
}

/// Creates the segment, then runs until the process is stopped.
pub async fn run(args: ImportArgs, counters: Arc<Counters>) -> Result<(), StartError> {
    let local = LocalSegment::create(&args.segment, args.capacity).map_err(StartError)?;
    let (client, connections) = crate::connect::connect(&args.url, "shmcast-bridge import")
        .await
        .map_err(|e| StartError(e.to_string()))?;
    let (tx, mut rx) = mpsc::channel::<(Option<HeaderMap>, Bytes)>(4096);
    match args.jetstream.clone() {
        None => {
            let mut sub = client
                .subscribe(args.subject.clone())
                .await
                .map_err(|e| StartError(format!("cannot subscribe to {}: {e}", args.subject)))?;
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if tx.send((m.headers, m.payload)).await.is_err() {
                        return;
                    }
                }
            });
        }
        Some(js) => {
            tokio::spawn(consume_stream(
                client,
                connections,
                args.subject.clone(),
                js,
                tx,
            ));
        }
    }
    let mut importer = Importer {
        local,
        counters,
        current: None,
        retired: HashSet::new(),
        tracker: Tracker::default(),
        pending: BTreeMap::new(),
        gap_since: None,
        reorder_wait: if args.jetstream.is_some() {
            args.reorder_wait
        } else {
            Duration::ZERO
        },
        reported_not_bridge: false,
    };
    loop {
        let deadline = importer.gap_since.map(|t| t + importer.reorder_wait);
        tokio::select! {
            got = rx.recv() => match got {
                Some((headers, payload)) => importer.on_message(headers.as_ref(), payload),
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
        }
        importer.drain().map_err(StartError)?;
    }
}

/// How long the JetStream reader waits without a message while the stream has more, before
/// it reads again with a new consumer.
const STALL: Duration = Duration::from_secs(3);

/// Reads the JetStream stream in order, with a new ordered consumer from where the last one
/// stopped after an error, a reconnection, or a stall (an ordered consumer does not always
/// come back by itself after a server restart).
async fn consume_stream(
    client: async_nats::Client,
    mut connections: watch::Receiver<u64>,
    subject: String,
    args: JetStreamArgs,
    tx: mpsc::Sender<(Option<HeaderMap>, Bytes)>,
) {
    let js = jetstream::new(client.clone());
    let mut next = 1u64;
    loop {
        let mut stream = crate::js::stream_ready(&client, &js, &subject, &args).await;
        connections.mark_unchanged();
        let config = jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                log!("cannot read stream {}: {e}; retrying", args.stream);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        log!("reading stream {} from its message {next}", args.stream);
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(Ok(m)) => {
                        if let Ok(info) = m.info() {
                            next = info.stream_sequence + 1;
                        }
                        let m = m.split().0;
                        if tx.send((m.headers, m.payload)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        log!("reading stream {}: {e}; reading again from its message {next}", args.stream);
                        break;
                    }
                    None => break,
                },
                _ = connections.changed() => {
                    log!("reconnected: reading stream {} again from its message {next}", args.stream);
                    break;
                }
                _ = tokio::time::sleep(STALL) => {
                    let last = stream.info().await.map(|i| i.state.last_sequence).unwrap_or(0);
                    if last >= next {
                        log!("stream {} has messages up to {last} but none came for {STALL:?}: reading again from {next}", args.stream);
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The state of the import: the current source incarnation and its frames waiting for their turn.
struct Importer {
    local: LocalSegment,
    counters: Arc<Counters>,
    current: Option<Arc<str>>,
    /// Earlier incarnations: their late frames are dropped (counted as stale).
    retired: HashSet<Arc<str>>,
    tracker: Tracker,
    /// Frames after a gap, by `2 * seq` (data) or `2 * seq + 1` (heartbeat, which settles
    /// `seq` itself and so comes after the data message `seq`).
    pending: BTreeMap<u64, (Frame, Bytes)>,
    /// Since when the first pending frame waits for a missing one.
    gap_since: Option<Instant>,
    reorder_wait: Duration,
    reported_not_bridge: bool,
}

impl Importer {
    fn on_message(&mut self, headers: Option<&HeaderMap>, payload: Bytes) {
        let frame = match Frame::parse(headers) {
            Ok(f) => f,
            Err(why) => {
                self.counters.add("not_bridge", 1);
                if !self.reported_not_bridge {
                    log!("ignoring a message that is not from an exporter ({why}); counted as not_bridge");
                    self.reported_not_bridge = true;
                }
                return;
            }
        };
        if self.retired.contains(&frame.stream) {
            self.counters.add("stale", 1);
            return;
        }
        if self.current.as_deref() != Some(&*frame.stream) {
            if let Some(old) = self.current.take() {
                self.settle_all();
                self.retired.insert(old);
                if let Err(e) = self.local.restart() {
                    log!("{e}");
                }
            }
            log!("importing source stream {}", frame.stream);
            self.counters.add("incarnations", 1);
            self.current = Some(frame.stream.clone());
            self.tracker = Tracker::default();
        }
        if frame.seq < self.tracker.expected() && !frame.heartbeat {
            self.counters.add("duplicates", 1);
            return;
        }
        let key = 2 * frame.seq + u64::from(frame.heartbeat);
        if self.pending.insert(key, (frame, payload)).is_some() {
            self.counters.add("duplicates", 1);
        }
    }

    /// Whether the first pending frame follows what was settled with no unexplained hole.
    fn in_order(&self, frame: &Frame) -> bool {
        let first_not_sent = if frame.heartbeat {
            frame.seq + 1 - frame.lost
        } else {
            frame.seq - frame.lost
        };
        first_not_sent <= self.tracker.expected()
    }

    /// Settles pending frames in order; one that follows a hole waits up to `reorder_wait`
    /// (none in core NATS mode) for the missing ones, then the hole counts as lost.
    fn drain(&mut self) -> Result<(), String> {
        let now = Instant::now();
        while let Some((_, (frame, _))) = self.pending.first_key_value() {
            if !self.in_order(frame) {
                let since = *self.gap_since.get_or_insert(now);
                if now < since + self.reorder_wait && self.pending.len() < MAX_PENDING {
                    return Ok(());
                }
            }
            self.gap_since = None;
            let (_, (frame, payload)) = self.pending.pop_first().expect("checked above");
            self.apply(&frame, &payload)?;
        }
        self.gap_since = None;
        Ok(())
    }

    /// Settles everything pending (the incarnation is over).
    fn settle_all(&mut self) {
        while let Some((_, (frame, payload))) = self.pending.pop_first() {
            if let Err(e) = self.apply(&frame, &payload) {
                log!("{e}");
            }
        }
        self.gap_since = None;
    }

    fn apply(&mut self, frame: &Frame, payload: &[u8]) -> Result<(), String> {
        let step = self.tracker.step(frame);
        let c = &self.counters;
        c.add("lost_upstream", step.lost_upstream);
        c.add("lost_transit", step.lost_transit);
        if frame.heartbeat {
            c.add("heartbeats", 1);
        }
        if step.duplicate {
            c.add("duplicates", 1);
        }
        self.local.gap(step.gap)?;
        if step.deliver {
            match self.local.deliver(frame.seq, payload)? {
                Delivered::Yes => c.add("received", 1),
                Delivered::Oversize => c.add("oversize", 1),
            }
        }
        c.set("last_seq", self.tracker.expected() - 1);
        Ok(())
    }
}
