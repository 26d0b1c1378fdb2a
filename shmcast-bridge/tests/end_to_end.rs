//! End to end against a real nats-server: generated messages on segment A → export → server →
//! import → segment B, read and verified on B by a Rust and a Go reader, with the server (and
//! once the exporter) killed with SIGKILL mid-run. Every source sequence number must be
//! delivered exactly once or counted in exactly one loss bucket; JetStream loses nothing.

mod support;

use std::time::Duration;

use support::*;

/// One run of the pipeline.
struct Scenario {
    tag: &'static str,
    jetstream: bool,
    kill_server: bool,
    kill_exporter: bool,
    count: u64,
    rate: f64,
    source_capacity: u64,
}

/// The importer's final counters and what the readers saw.
struct Outcome {
    import: serde_json::Value,
    export: serde_json::Value,
    rust: Read,
    go: Read,
    /// The Go example consumer's summary (reading the subject with nats.go).
    consumer: serde_json::Value,
    /// The exporter's and importer's log lines.
    log: String,
}

fn run(s: &Scenario) -> Outcome {
    let dir = TempDir::new(s.tag);
    let js_dir = dir.0.join("js");
    let mut server = Server::start(
        s.jetstream.then_some(js_dir.as_path()),
        dir.0.join("nats.log"),
    );
    let url = server.url();
    let pid = std::process::id();
    let (a, b) = (
        format!("/shmcast-bridge-{}-{pid}-a", s.tag),
        format!("/shmcast-bridge-{}-{pid}-b", s.tag),
    );
    let subject = format!("shmcast.test.{}.{pid}", s.tag);
    let log = dir.0.join("bridge.log");
    let js: &[&str] = if s.jetstream { &["--jetstream"] } else { &[] };

    let mut import_args = vec![
        "import",
        "--nats",
        &url,
        "--subject",
        &subject,
        &b,
        "--capacity",
        "16777216",
    ];
    import_args.extend(js);
    let importer = Bridge::start(&import_args, &log);
    let reader_b = open_when_there(&b);
    let count = s.count;
    let rust = std::thread::spawn(move || verify_until(reader_b, count, Duration::from_secs(90)));
    let go = start_go_tail(&go_tail(), &b, s.count);

    let consumer = start_go_consumer(
        &go_consumer(),
        &url,
        &subject,
        s.count,
        &dir.0.join("go-consumer.log"),
    );
    // The consumer subscribes within this time; until then it would count messages as lost.
    std::thread::sleep(Duration::from_millis(300));
    let mut producer = Producer::start(&a, s.source_capacity, s.count, 64, s.rate);
    let mut export_args = vec!["export", &a, "--nats", &url, "--subject", &subject];
    export_args.extend(js);
    let mut exporter = Bridge::start(&export_args, &log);

    let run_time = Duration::from_secs_f64(s.count as f64 / s.rate);
    if s.kill_server {
        std::thread::sleep(run_time / 4);
        server.kill();
        std::thread::sleep(Duration::from_secs(1));
        server.restart();
    }
    if s.kill_exporter {
        std::thread::sleep(run_time / 4);
        exporter.kill();
        std::thread::sleep(Duration::from_millis(300));
        exporter = Bridge::start(&export_args, &log);
    }
    importer.wait_for("last_seq", s.count, Duration::from_secs(60));
    // The exporter's counters as of its end: a line printed after everything was accounted.
    exporter.wait_for("last_seq", s.count, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let rust = rust.join().expect("the Rust reader on B");
    let go = finish_go_tail(go);
    let consumer = finish_go_consumer(consumer);
    let outcome = Outcome {
        import: importer.counters(),
        export: exporter.counters(),
        rust,
        go,
        consumer,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    };
    eprintln!(
        "{}: import {} export {} rust {:?} go {:?} go-consumer {}",
        s.tag, outcome.import, outcome.export, outcome.rust, outcome.go, outcome.consumer
    );
    producer.stop();
    outcome
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no counter {k} in {v}"))
}

/// Every sequence number once: delivered on B (to both readers) or in one loss bucket.
fn assert_accounted(s: &Scenario, o: &Outcome) {
    let i = &o.import;
    let lost = n(i, "lost_upstream") + n(i, "lost_transit") + n(i, "oversize");
    assert_eq!(n(i, "received") + lost, s.count, "import counters {i}");
    assert_eq!(n(i, "last_seq"), s.count);
    for (who, r) in [("Rust", o.rust), ("Go", o.go)] {
        assert_eq!(
            r.received,
            n(i, "received"),
            "{who} reader on B: {r:?}, import {i}"
        );
        assert_eq!(r.lagged, lost, "{who} reader on B: {r:?}, import {i}");
    }
    assert_eq!(n(i, "not_bridge") + n(i, "stale"), 0, "{i}");
    assert_eq!(n(i, "incarnations"), 1, "{i}");
    // The Go example consumer's own subscription: its own losses, the same rule.
    let c = &o.consumer;
    assert_eq!(
        n(c, "received") + n(c, "lost_upstream") + n(c, "lost_transit"),
        s.count,
        "Go example consumer {c}"
    );
    assert_eq!(
        n(c, "corrupt") + n(c, "not_bridge") + n(c, "stale"),
        0,
        "{c}"
    );
}

#[test]
fn core_nats_counts_every_loss_across_a_server_kill() {
    let s = Scenario {
        tag: "core",
        jetstream: false,
        kill_server: true,
        kill_exporter: false,
        count: 60_000,
        rate: 20_000.0,
        source_capacity: 1 << 20,
    };
    let o = run(&s);
    assert_accounted(&s, &o);
    assert!(o.log.contains("disconnected from"), "{}", o.log);
    // The exporter's report of what it did not send travels on the next message; when that
    // message is lost too, its report counts as transit loss: the split can only move that way.
    let export_lost = n(&o.export, "lost_upstream") + n(&o.export, "oversize");
    let import = &o.import;
    assert!(
        n(import, "lost_upstream") <= export_lost,
        "export {} import {import}",
        o.export
    );
    assert!(
        n(import, "lost_upstream") + n(import, "lost_transit") >= export_lost,
        "export {} import {import}",
        o.export
    );
    assert_eq!(n(&o.import, "duplicates"), 0);
}

#[test]
fn a_restarted_exporter_sends_again_and_duplicates_are_dropped() {
    let s = Scenario {
        tag: "exporter",
        jetstream: false,
        kill_server: false,
        kill_exporter: true,
        count: 60_000,
        rate: 20_000.0,
        // Still holds what the killed exporter had sent when the new one starts.
        source_capacity: 16 << 20,
    };
    let o = run(&s);
    assert_accounted(&s, &o);
    // The new exporter starts at the ring's oldest message: the importer had some of them.
    assert!(n(&o.import, "duplicates") > 0, "{}", o.import);
}

#[test]
fn jetstream_loses_nothing_across_a_server_kill() {
    let s = Scenario {
        tag: "jetstream",
        jetstream: true,
        kill_server: true,
        kill_exporter: false,
        count: 30_000,
        rate: 10_000.0,
        // Holds the messages of the outage (and the failed acknowledgement's wait).
        source_capacity: 16 << 20,
    };
    let o = run(&s);
    assert_accounted(&s, &o);
    assert_eq!(n(&o.import, "received"), s.count, "{}", o.import);
    // The kill happened while both were connected (whether it caught a message unacknowledged,
    // and so a re-send, depends on timing: `resent` is often 4096, sometimes 0).
    assert!(o.log.contains("disconnected from"), "{}", o.log);
}
