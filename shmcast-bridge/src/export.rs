//! `shmcast-bridge export`: tails a local segment and publishes each message to a NATS
//! subject with the headers of docs/BRIDGE.md, "Wire format".
//!
//! A thread reads the ring (the library's reads block) and hands messages to the async side
//! through a bounded channel: when NATS is slow or away the thread stops reading, falls behind
//! the ring, and the library's exact `Lagged` count travels in the next `Shmcast-Lost`. The
//! producer is never slowed down.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::FutureExt;
use shmcast::{RecvError, StartAt, Subscriber};
use tokio::sync::mpsc;

use crate::counters::Counters;
use crate::js::JetStreamArgs;
use crate::log;
use crate::wire::{self, Frame};

/// How long the exporter waits for a message before it sends a heartbeat (and again while
/// idle), so an importer learns about a lost last message within this time.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// Room kept for the headers when deciding whether a payload fits the server's `max_payload`.
const HEADER_ROOM: usize = 256;

/// Counters of the exporter.
pub const COUNTERS: &[&str] = &[
    "sent",
    "lost_upstream",
    "oversize",
    "heartbeats",
    "last_seq",
    "acked",
    "ack_duplicates",
    "resent",
    "incarnations",
];

/// What the exporter was asked to do.
#[derive(Debug, Clone)]
pub struct ExportArgs {
    /// The segment to read.
    pub segment: String,
    /// NATS server URL.
    pub url: String,
    /// Subject to publish on.
    pub subject: String,
    /// JetStream: its options.
    pub jetstream: Option<JetStreamArgs>,
}

/// One step of the ring reader.
enum Item {
    /// A message to publish.
    Data(Frame, Bytes),
    /// Nothing new for a while: a heartbeat to send.
    Beat(Frame),
}

/// Why the exporter could not start.
#[derive(Debug)]
pub struct StartError(pub String);

/// Opens the segment (an error if it is missing), then runs until the process is stopped.
pub async fn run(args: ExportArgs, counters: Arc<Counters>) -> Result<(), StartError> {
    let subscriber = Subscriber::open(&args.segment, StartAt::Beginning).map_err(|e| {
        StartError(format!(
            "cannot open segment {:?}: {e} (start its producer first)",
            args.segment
        ))
    })?;
    let (client, _) = crate::connect::connect(&args.url, "shmcast-bridge export")
        .await
        .map_err(|e| StartError(e.to_string()))?;
    forward(
        client,
        subscriber,
        args.segment,
        args.subject,
        args.jetstream,
        counters,
    )
    .await
}

/// Reads `subscriber` (of segment `segment`) and publishes on `subject` through `client` until
/// the process is stopped (or the task dropped).
pub async fn forward(
    client: async_nats::Client,
    subscriber: Subscriber,
    segment: String,
    subject: String,
    jetstream: Option<JetStreamArgs>,
    counters: Arc<Counters>,
) -> Result<(), StartError> {
    // The server's limit, once connected; until then the default limit of nats-server.
    let max_payload = Arc::new(AtomicUsize::new(1 << 20));
    let (tx, rx) = mpsc::channel(1024);
    {
        let max_payload = Arc::clone(&max_payload);
        let counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("ring reader".into())
            .spawn(move || read_ring(subscriber, segment, tx, max_payload, counters))
            .map_err(|e| StartError(format!("cannot start the ring reader thread: {e}")))?;
    }
    {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let limit = client.server_info().max_payload;
                if limit > 0 {
                    max_payload.store(limit, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    match jetstream {
        None => publish_core(client, subject, rx, counters).await,
        Some(js) => publish_jetstream(client, subject, js, rx, counters).await,
    }
    Ok(())
}

/// The ring reader thread: turns the segment's messages into [`Item`]s, follows the segment
/// to a new producer when its producer is replaced.
fn read_ring(
    mut sub: Subscriber,
    segment: String,
    tx: mpsc::Sender<Item>,
    max_payload: Arc<AtomicUsize>,
    counters: Arc<Counters>,
) {
    let host = wire::host_name();
    let mut buf = Vec::new();
    loop {
        let info = sub.info();
        let stream: Arc<str> =
            wire::stream_id(&host, info.created_unix_ns, info.producer_pid).into();
        counters.add("incarnations", 1);
        log!("exporting segment {segment:?} as stream {stream}");
        // The last sequence number sent, and the last one read or skipped.
        let (mut sent, mut settled) = (0u64, 0u64);
        let beat = |sent: u64, settled: u64| {
            Item::Beat(Frame {
                stream: stream.clone(),
                seq: settled,
                lost: settled - sent,
                heartbeat: true,
            })
        };
        let replaced = loop {
            match sub.recv_timeout(&mut buf, HEARTBEAT) {
                Ok(seq) => {
                    settled = seq;
                    if buf.len() + HEADER_ROOM > max_payload.load(Ordering::Relaxed) {
                        counters.add("oversize", 1);
                        continue;
                    }
                    let frame = Frame {
                        stream: stream.clone(),
                        seq,
                        lost: seq - sent - 1,
                        heartbeat: false,
                    };
                    sent = seq;
                    if tx
                        .blocking_send(Item::Data(frame, Bytes::copy_from_slice(&buf)))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(RecvError::Lagged { missed }) => {
                    counters.add("lost_upstream", missed);
                    settled = sub.next_seq() - 1;
                }
                Err(RecvError::Timeout) => {
                    if tx.blocking_send(beat(sent, settled)).is_err() {
                        return;
                    }
                }
                Err(RecvError::ProducerGone { replaced }) => break replaced,
                Err(e) => {
                    log!("cannot read segment {segment:?}: {e}; following it again");
                    break false;
                }
            }
        };
        if !replaced {
            log!("the producer of {segment:?} is gone; waiting for a new one");
        }
        // Keep heartbeats going for the old stream until a new producer shows up, so the
        // importer settles its tail even if the last message was lost.
        sub = loop {
            if tx.blocking_send(beat(sent, settled)).is_err() {
                return;
            }
            match Subscriber::open(&segment, StartAt::Beginning) {
                Ok(new)
                    if new.info().created_unix_ns != info.created_unix_ns
                        || new.info().producer_pid != info.producer_pid =>
                {
                    break new
                }
                _ => std::thread::sleep(HEARTBEAT),
            }
        };
    }
}

/// Core NATS: publish and forget (at most once; the importer counts what vanished).
async fn publish_core(
    client: async_nats::Client,
    subject: String,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<Counters>,
) {
    let subject = async_nats::Subject::from(subject);
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for item in batch.drain(..) {
            let (frame, payload) = match item {
                Item::Data(frame, payload) => (frame, payload),
                Item::Beat(frame) => (frame, Bytes::new()),
            };
            let headers = frame.headers(false);
            if let Err(e) = client
                .publish_with_headers(subject.clone(), headers, payload)
                .await
            {
                log!("cannot publish: {e}; the NATS client has stopped");
                return;
            }
            count_published(&counters, &frame);
        }
    }
}

fn count_published(counters: &Counters, frame: &Frame) {
    if frame.heartbeat {
        counters.add("heartbeats", 1);
    } else {
        counters.add("sent", 1);
    }
    counters.set("last_seq", frame.seq);
}

type AckFuture = Pin<
    Box<
        dyn Future<
                Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
            > + Send,
    >,
>;

/// A message published to JetStream and not yet acknowledged.
struct Unacked {
    frame: Frame,
    payload: Bytes,
    ack: AckFuture,
}

/// JetStream: publish with `Nats-Msg-Id`, keep each message until its acknowledgement, and
/// after any failed acknowledgement publish every unacknowledged message again (the stream's
/// de-duplication drops the copies it already has).
async fn publish_jetstream(
    client: async_nats::Client,
    subject: String,
    args: JetStreamArgs,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<Counters>,
) {
    let max_unacked = args.max_unacked.max(1);
    // Room for the window and for as many dropped futures (after a failure) whose
    // acknowledgements the client still awaits.
    let js = jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .ack_timeout(ACK_TIMEOUT)
        .max_ack_inflight(2 * max_unacked + 1)
        .backpressure_on_inflight(true)
        .build(client.clone());
    crate::js::stream_ready(&client, &js, &subject, &args).await;
    let mut out = JsOut {
        client,
        js,
        subject,
        args,
        counters,
        window: VecDeque::new(),
    };
    let mut batch = Vec::with_capacity(256);
    loop {
        let received = if out.window.is_empty() {
            rx.recv_many(&mut batch, 256).await
        } else {
            // Wake up for acknowledgements too.
            match tokio::time::timeout(Duration::from_millis(5), rx.recv_many(&mut batch, 256))
                .await
            {
                Ok(n) => n,
                Err(_) => {
                    out.settle(false).await;
                    continue;
                }
            }
        };
        if received == 0 {
            return;
        }
        for item in batch.drain(..) {
            // Heartbeats go through the window too: stored in order with the data, so an
            // importer never settles a sequence number that a re-send is still to deliver.
            let (frame, payload) = match item {
                Item::Data(frame, payload) => (frame, payload),
                Item::Beat(frame) => (frame, Bytes::new()),
            };
            out.settle(out.window.len() >= max_unacked).await;
            let ack = publish_js(&out.js, &out.subject, &frame, payload.clone()).await;
            count_published(&out.counters, &frame);
            out.window.push_back(Unacked {
                frame,
                payload,
                ack,
            });
        }
        out.settle(false).await;
    }
}

/// How long a JetStream acknowledgement may take before the message is published again.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The JetStream publishing side of the exporter.
struct JsOut {
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
    args: JetStreamArgs,
    counters: Arc<Counters>,
    /// Published, not yet acknowledged, in sequence order.
    window: VecDeque<Unacked>,
}

impl JsOut {
    /// Takes the acknowledgements that have arrived, in order; with `block`, waits for the
    /// oldest first. After a failed one, waits for the server and the stream and publishes the
    /// whole window again (de-duplication drops what the stream already has).
    async fn settle(&mut self, mut block: bool) {
        while let Some(front) = self.window.front_mut() {
            let done = if block {
                Some((&mut front.ack).await)
            } else {
                (&mut front.ack).now_or_never()
            };
            block = false;
            match done {
                None => return,
                Some(Ok(ack)) => {
                    if !front.frame.heartbeat {
                        self.counters.add("acked", 1);
                        if ack.duplicate {
                            self.counters.add("ack_duplicates", 1);
                        }
                    }
                    self.window.pop_front();
                }
                Some(Err(e)) => {
                    let seq = front.frame.seq;
                    log!(
                        "JetStream did not acknowledge seq {seq}: {e}; publishing the {} unacknowledged messages again",
                        self.window.len()
                    );
                    crate::js::stream_ready(&self.client, &self.js, &self.subject, &self.args)
                        .await;
                    for u in self.window.iter_mut() {
                        u.ack =
                            publish_js(&self.js, &self.subject, &u.frame, u.payload.clone()).await;
                        self.counters.add("resent", 1);
                    }
                    block = true;
                }
            }
        }
    }
}

/// Publishes one message to JetStream; a failure to even send becomes a failed
/// acknowledgement, handled like any other.
async fn publish_js(
    js: &jetstream::Context,
    subject: &str,
    frame: &Frame,
    payload: Bytes,
) -> AckFuture {
    match js
        .publish_with_headers(subject.to_owned(), frame.headers(true), payload)
        .await
    {
        Ok(ack) => ack.into_future(),
        Err(e) => Box::pin(async move { Err(e) }),
    }
}
