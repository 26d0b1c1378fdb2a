//! Golden segment files: the byte layout pinned in `testdata/golden/`, read by this crate and by
//! the Go package (`go-client/golden_test.go`). See `testdata/golden/README.md`.
//!
//! The segments are rebuilt here with the real `Publisher` and compared byte for byte with the
//! committed files, so a layout change cannot go unnoticed; `SHMCAST_REGEN_GOLDEN=1` rewrites
//! them (then update `docs/LAYOUT.md` and the Go reader in the same commit). The committed files
//! are then read with every start position and compared with the committed expectations.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::json;
use shmcast::layout::{self, offset};
use shmcast::{pattern, PublisherOptions, RecvError, StartAt, Subscriber};

mod common;

const CAPACITY: u64 = 4096;
/// Fixed values patched over the fields that depend on when and by whom a file was made.
const GOLDEN_PID: u64 = 4242;
const GOLDEN_CREATED_NS: u64 = 1_700_000_000_000_000_000;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden")
}

fn put_word(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Builds a segment with the real publisher in a temporary file and returns its bytes, with the
/// pid and creation time fixed.
fn build(messages: &[Vec<u8>]) -> Vec<u8> {
    build_with(messages, PublisherOptions::new())
}

/// [`build`] with `options` (capacity and unlinking are set here).
fn build_with(messages: &[Vec<u8>], options: PublisherOptions) -> Vec<u8> {
    build_with_gaps(messages, &[], options)
}

/// [`build_with`], with gap records: `(i, missed)` publishes a gap of `missed` messages after
/// the `i`-th message (counted from 0).
fn build_with_gaps(
    messages: &[Vec<u8>],
    gaps: &[(usize, u64)],
    options: PublisherOptions,
) -> Vec<u8> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "shmcast-golden-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = fs::remove_file(&path);
    let mut publisher = options
        .capacity(CAPACITY)
        .unlink_on_drop(false)
        .create_path(&path)
        .expect("create golden segment");
    for (i, m) in messages.iter().enumerate() {
        publisher.publish(m).expect("publish");
        for &(_, missed) in gaps.iter().filter(|&&(at, _)| at == i) {
            publisher.publish_gap(missed).expect("publish_gap");
        }
    }
    drop(publisher);
    let mut bytes = fs::read(&path).expect("read golden segment");
    fs::remove_file(&path).unwrap();
    put_word(&mut bytes, offset::PRODUCER_PID, GOLDEN_PID);
    put_word(&mut bytes, offset::CREATED_UNIX_NS, GOLDEN_CREATED_NS);
    // Depends on whether this machine lets the producer register for membarrier.
    put_word(&mut bytes, offset::WAKE_BARRIER, layout::WAKE_MEMBARRIER);
    // A wall-clock time, set by the first publish (0 = never published).
    if get_word(&bytes, offset::LAST_PUBLISH_NS) != 0 {
        put_word(
            &mut bytes,
            offset::LAST_PUBLISH_NS,
            GOLDEN_CREATED_NS + 1_000_000,
        );
    }
    bytes
}

fn few() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        b"a".to_vec(),
        b"seven!!".to_vec(),
        b"eight!!!".to_vec(),
        (0u8..=99).collect(),
    ]
}

/// Enough generated messages of varied lengths to wrap a 4 KiB ring many times, with padding.
fn wrapped() -> Vec<Vec<u8>> {
    (1..=200u64)
        .map(|seq| {
            let mut m = vec![0u8; pattern::length(seq, 0, 300)];
            pattern::fill(seq, &mut m);
            m
        })
        .collect()
}

struct Golden {
    name: &'static str,
    bytes: Vec<u8>,
    /// `None` when opening succeeds, else the kind of error.
    expect: Option<&'static str>,
    read_error: Option<&'static str>,
}

fn goldens() -> Vec<Golden> {
    let few_bytes = build(&few());
    // Lossless (docs/LAYOUT.md, "Lossless mode"): 3 reader slots, max_block 2 s, none registered.
    let lossless_bytes = build_with(
        &wrapped(),
        PublisherOptions::new()
            .lossless(true)
            .reader_slots(3)
            .max_block(Some(std::time::Duration::from_secs(2))),
    );
    let wrapped_bytes = build(&wrapped());
    // Gap records (docs/LAYOUT.md, "Gap records"): among messages that wrap the ring, and last,
    // so that `newest` and `next` join at one. Payloads are generated from their position in
    // the list, not from their sequence number, which the gaps move on.
    let gap_list: Vec<(usize, u64)> = (0..200)
        .filter(|i| i % 13 == 5)
        .map(|i| (i, 1 + i as u64 % 4))
        .chain([(199, 7)])
        .collect();
    let gaps_bytes = build_with_gaps(
        &wrapped(),
        &gap_list,
        PublisherOptions::new().gap_records(true),
    );
    let patched = |base: &[u8], at: usize, value: u64| {
        let mut b = base.to_vec();
        put_word(&mut b, at, value);
        b
    };
    // The third record of `few` (seq 3) starts at 16 + 24 = 40: corrupt its length word.
    let data = layout::DATA_OFFSET as usize;
    let corrupt_record = patched(&few_bytes, data + 40 + 8, 0xFFFF_FFF0);
    let mut size_mismatch = few_bytes.clone();
    size_mismatch.extend_from_slice(&[0u8; 4096]);
    let ok = |name, bytes| Golden {
        name,
        bytes,
        expect: None,
        read_error: None,
    };
    let bad = |name, bytes, kind| Golden {
        name,
        bytes,
        expect: Some(kind),
        read_error: None,
    };
    vec![
        ok("empty", build(&[])),
        ok("few", few_bytes.clone()),
        ok("wrapped", wrapped_bytes.clone()),
        Golden {
            name: "corrupt_record",
            bytes: corrupt_record,
            expect: None,
            read_error: Some("corrupt"),
        },
        bad("truncated", few_bytes[..100].to_vec(), "truncated"),
        bad(
            "not_initialized",
            vec![0u8; few_bytes.len()],
            "not_initialized",
        ),
        bad(
            "bad_magic",
            patched(&few_bytes, offset::MAGIC, u64::from_le_bytes(*b"NOTSHMC\0")),
            "bad_magic",
        ),
        bad(
            "unsupported_version",
            patched(&few_bytes, offset::VERSION, 2),
            "unsupported_version",
        ),
        // Bit 0 is lossless mode, bit 1 gap records; bit 2 is unknown.
        bad(
            "unsupported_flags",
            patched(&few_bytes, offset::FLAGS, 4),
            "unsupported_flags",
        ),
        ok("gaps", gaps_bytes),
        ok("lossless", lossless_bytes.clone()),
        bad(
            "lossless_no_slots",
            patched(&lossless_bytes, offset::READER_SLOTS, 0),
            "invalid_header",
        ),
        bad(
            "lossless_too_many_slots",
            patched(&lossless_bytes, offset::READER_SLOTS, 32),
            "invalid_header",
        ),
        bad(
            "invalid_header",
            patched(&few_bytes, offset::CAPACITY, 4095),
            "invalid_header",
        ),
        bad("size_mismatch", size_mismatch, "size_mismatch"),
    ]
}

const STARTS: [(&str, StartAt); 4] = [
    ("beginning", StartAt::Beginning),
    ("oldest", StartAt::Oldest),
    ("newest", StartAt::Newest),
    ("next", StartAt::Next),
];

/// What `shmcast tail --json` prints for the segment at `path`, reading until no message is
/// left, and the kind of error reading ended with, if any.
fn read_all(path: &Path, start: StartAt) -> (String, Option<&'static str>) {
    let mut subscriber = Subscriber::open_path(path, start).expect("open");
    let mut out = String::new();
    let mut buf = vec![0u8; subscriber.max_payload()];
    loop {
        match subscriber.try_recv_into(&mut buf) {
            Ok(r) => {
                let data = base64::engine::general_purpose::STANDARD.encode(&buf[..r.len]);
                out += &format!(
                    "{{\"seq\":{},\"len\":{},\"data\":\"{data}\"}}\n",
                    r.seq, r.len
                );
            }
            Err(RecvError::Lagged { missed }) => out += &format!("{{\"lagged\":{missed}}}\n"),
            Err(RecvError::Empty) => return (out, None),
            Err(RecvError::Corrupt(_)) => return (out, Some("corrupt")),
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

fn manifest(goldens: &[Golden]) -> String {
    let segments: Vec<_> = goldens
        .iter()
        .map(|g| match g.expect {
            None => json!({
                "file": format!("{}.seg", g.name),
                "expect": "ok",
                "capacity": CAPACITY,
                "reads": STARTS.iter().map(|(s, _)| (s.to_string(), json!(format!("{}.{s}.jsonl", g.name)))).collect::<serde_json::Map<_, _>>(),
                "read_error": g.read_error,
            }),
            Some(kind) => json!({ "file": format!("{}.seg", g.name), "expect": kind }),
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&json!({
        "layout_version": layout::VERSION,
        "segments": segments,
    }))
    .unwrap();
    text.push('\n');
    text
}

#[test]
fn golden_files_match_the_layout_and_read_as_expected() {
    let dir = golden_dir();
    let regen = std::env::var_os("SHMCAST_REGEN_GOLDEN").is_some();
    let goldens = goldens();

    let check = |file: &str, expected: &[u8]| {
        let path = dir.join(file);
        if regen {
            fs::write(&path, expected).unwrap();
        } else {
            let committed = fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e}; run with SHMCAST_REGEN_GOLDEN=1", path.display())
            });
            assert!(
                committed == expected,
                "{} differs from what this crate writes: the layout changed. If that is intended, \
                 regenerate with SHMCAST_REGEN_GOLDEN=1 and update docs/LAYOUT.md and go-client.",
                path.display()
            );
        }
    };

    check("manifest.json", manifest(&goldens).as_bytes());
    for g in &goldens {
        let file = format!("{}.seg", g.name);
        check(&file, &g.bytes);
        let path = dir.join(&file);
        match g.expect {
            Some(expected_kind) => {
                let err = Subscriber::open_path(&path, StartAt::Beginning).unwrap_err();
                assert_eq!(common::error_kind(&err), expected_kind, "{file}: {err}");
            }
            None => {
                for (start_name, start) in STARTS {
                    let (lines, read_error) = read_all(&path, start);
                    let expected_error = if start == StartAt::Beginning {
                        g.read_error
                    } else {
                        None
                    };
                    if start == StartAt::Beginning {
                        assert_eq!(read_error, expected_error, "{file} from {start_name}");
                    }
                    check(&format!("{}.{start_name}.jsonl", g.name), lines.as_bytes());
                }
            }
        }
    }
}

#[test]
fn golden_contents_are_what_was_published() {
    // Independent of the committed expectations: the wrapped segment read from the beginning
    // accounts for all 200 messages and every payload verifies.
    let (lines, err) = read_all(&golden_dir().join("wrapped.seg"), StartAt::Beginning);
    assert_eq!(err, None);
    let mut received = 0;
    let mut missed = 0;
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(lagged) = v.get("lagged") {
            missed += lagged.as_u64().unwrap();
            continue;
        }
        let seq = v["seq"].as_u64().unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert!(pattern::matches(seq, &data), "seq {seq}");
        received += 1;
    }
    assert!(missed > 0 && received > 0);
    assert_eq!(received + missed, 200);

    let (lines, err) = read_all(&golden_dir().join("few.seg"), StartAt::Beginning);
    assert_eq!(err, None);
    assert_eq!(lines.lines().count(), 5);
    assert!(lines.contains(r#"{"seq":3,"len":7,"data":"c2V2ZW4hIQ=="}"#));
}
