//! `shmcast-bridge bench`: how fast the exporter moves messages from a segment to a NATS
//! server, against a plain async-nats publisher loop on the same server in the same run
//! (docs/BRIDGE.md, "Throughput"). Rounds alternate so that both see the same machine.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use clap::Args;
use shmcast::{pattern, Publisher, StartAt, Subscriber};

use crate::counters::Counters;
use crate::wire::Frame;
use crate::{export, log};

/// Options of the bench.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// NATS server URL, e.g. nats://127.0.0.1:4222 (a server of its own: the bench publishes
    /// on a subject nobody reads).
    #[arg(long = "nats", value_name = "URL")]
    url: String,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    sizes: Vec<usize>,
    /// Messages per measurement.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Rounds (each: plain loop, plain loop with the bridge's headers, bridge); medians are
    /// reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// One JSON object per size.
    #[arg(long)]
    json: bool,
}

/// Runs the bench; an error if no NATS server answers within 10 s.
pub async fn run(args: BenchArgs) -> ExitCode {
    match bench(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmcast-bridge bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: &BenchArgs) -> Result<(), String> {
    if args.count == 0 || args.rounds == 0 || args.sizes.is_empty() {
        return Err("--count, --rounds and --sizes must be above 0".into());
    }
    let (client, _) = crate::connect::connect(&args.url, "shmcast-bridge bench")
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        if Instant::now() > deadline {
            return Err(format!(
                "no NATS server answered at {} within 10 s",
                args.url
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subject = format!("shmcast.bench.{}", std::process::id());
    for &size in &args.sizes {
        let segment = format!("/shmcast-bridge-bench-{}", std::process::id());
        let _producer = fill_segment(&segment, size, args.count)?;
        let (mut plain, mut headers, mut bridge) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            plain.push(plain_loop(&client, &subject, size, args.count, false).await?);
            headers.push(plain_loop(&client, &subject, size, args.count, true).await?);
            bridge.push(bridge_run(&client, &segment, &subject, args.count).await?);
        }
        let (p, h, b) = (
            median(&mut plain),
            median(&mut headers),
            median(&mut bridge),
        );
        if args.json {
            println!(
                "{{\"size\":{size},\"count\":{},\"rounds\":{},\"plain_msgs_per_s\":{p:.0},\"plain_with_headers_msgs_per_s\":{h:.0},\"bridge_msgs_per_s\":{b:.0},\"bridge_vs_plain\":{:.3},\"bridge_vs_plain_with_headers\":{:.3}}}",
                args.count,
                args.rounds,
                b / p,
                b / h
            );
        } else {
            println!(
                "{size:>5} B  plain {:>9.0} msg/s  plain+headers {:>9.0} msg/s  bridge {:>9.0} msg/s  bridge/plain {:.2}  bridge/plain+headers {:.2}  (medians of {} rounds of {} messages)",
                p, h, b, b / p, b / h, args.rounds, args.count
            );
        }
    }
    Ok(())
}

/// A segment holding `count` generated messages of `size` bytes, all still in the ring.
fn fill_segment(name: &str, size: usize, count: u64) -> Result<Publisher, String> {
    let record = 16 + size.div_ceil(8) as u64 * 8;
    let capacity = (record * count + (count / 8) * record + 4096).next_power_of_two();
    let mut publisher = Publisher::options()
        .capacity(capacity)
        .create(name)
        .map_err(|e| format!("cannot create the bench segment {name:?}: {e}"))?;
    let mut buf = vec![0u8; size];
    for seq in 1..=count {
        pattern::fill(seq, &mut buf);
        publisher
            .publish(&buf)
            .map_err(|e| format!("cannot fill the bench segment: {e}"))?;
    }
    Ok(publisher)
}

/// Messages per second of a plain publisher loop: a copy of the payload into `Bytes` per
/// message (as the exporter makes), with or without the bridge's headers, then a flush.
async fn plain_loop(
    client: &Client,
    subject: &str,
    size: usize,
    count: u64,
    headers: bool,
) -> Result<f64, String> {
    let payload = vec![0x5au8; size];
    let subject = async_nats::Subject::from(subject);
    let stream: Arc<str> = "bench.1.1".into();
    let start = Instant::now();
    for seq in 1..=count {
        let body = Bytes::copy_from_slice(&payload);
        let sent = if headers {
            let frame = Frame {
                stream: Arc::clone(&stream),
                seq,
                lost: 0,
                heartbeat: false,
            };
            client
                .publish_with_headers(subject.clone(), frame.headers(false), body)
                .await
        } else {
            client.publish(subject.clone(), body).await
        };
        sent.map_err(|e| format!("publish: {e}"))?;
    }
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Messages per second of the exporter (its ring reader thread and publishing task, as
/// `export` runs them) from the segment's first message to its last, then a flush.
async fn bridge_run(
    client: &Client,
    segment: &str,
    subject: &str,
    count: u64,
) -> Result<f64, String> {
    let subscriber = Subscriber::open(segment, StartAt::Beginning).map_err(|e| e.to_string())?;
    let counters = Counters::new("export", export::COUNTERS);
    let start = Instant::now();
    let task = tokio::spawn(export::forward(
        client.clone(),
        subscriber,
        segment.to_owned(),
        subject.to_owned(),
        None,
        Arc::clone(&counters),
    ));
    while counters.get("sent") < count {
        if task.is_finished() {
            return Err("the exporter stopped".into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    let rate = count as f64 / start.elapsed().as_secs_f64();
    task.abort();
    let lost = counters.get("lost_upstream") + counters.get("oversize");
    if lost > 0 {
        log!("the exporter lost {lost} messages in a bench round (the ring should hold them all)");
    }
    Ok(rate)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
