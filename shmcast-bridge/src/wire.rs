//! The wire format on NATS (docs/BRIDGE.md, "Wire format"): header names and how their values
//! are written and read. Exporter and importer use only these helpers, so the two cannot
//! disagree.

use std::sync::Arc;

use async_nats::header::HeaderName;
use async_nats::HeaderMap;

/// Which producer incarnation a message comes from (a restarted producer restarts its
/// sequence numbers at 1, so the sequence number alone does not identify a message).
pub const STREAM: &str = "Shmcast-Stream";
/// The message's sequence number in the source segment.
pub const SEQ: &str = "Shmcast-Seq";
/// How many sequence numbers just before this one the exporter did not send (it lagged
/// behind the ring, dropped an oversize message, or started after them). Absent means 0.
pub const LOST: &str = "Shmcast-Lost";
/// Present on heartbeats (empty payload): the exporter has sent or counted every sequence
/// number up to the one in `Shmcast-Seq`.
pub const HEARTBEAT: &str = "Shmcast-Heartbeat";
/// JetStream's de-duplication key.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// What one bridge message says about the source's sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The source incarnation.
    pub stream: Arc<str>,
    /// A data message: its sequence number. A heartbeat: the last sequence number the exporter
    /// accounted for (sent or counted as lost).
    pub seq: u64,
    /// The `lost` sequence numbers just before `seq` (data), or ending at `seq` (heartbeat),
    /// the exporter did not send.
    pub lost: u64,
    /// Whether this is a heartbeat (no payload to deliver).
    pub heartbeat: bool,
}

/// Why a NATS message on the subject is not a bridge message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAFrame(pub &'static str);

impl std::fmt::Display for NotAFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Frame {
    /// The headers of this frame; with `jetstream`, also `Nats-Msg-Id`: `<stream>:<seq>` for a
    /// data message, `<stream>:hb:<seq>` for a heartbeat (so the idle repeats of one heartbeat
    /// are stored once).
    pub fn headers(&self, jetstream: bool) -> HeaderMap {
        // Names made once, values moved in: the exporter builds these for every message.
        const STREAM_NAME: HeaderName = HeaderName::from_static(STREAM);
        const SEQ_NAME: HeaderName = HeaderName::from_static(SEQ);
        const LOST_NAME: HeaderName = HeaderName::from_static(LOST);
        const HEARTBEAT_NAME: HeaderName = HeaderName::from_static(HEARTBEAT);
        const MSG_ID_NAME: HeaderName = HeaderName::from_static(MSG_ID);
        let mut h = HeaderMap::new();
        h.insert(STREAM_NAME, &*self.stream);
        h.insert(SEQ_NAME, self.seq.to_string());
        if self.lost > 0 {
            h.insert(LOST_NAME, self.lost.to_string());
        }
        if self.heartbeat {
            h.insert(HEARTBEAT_NAME, "1");
        }
        if jetstream {
            h.insert(MSG_ID_NAME, self.msg_id());
        }
        h
    }

    /// JetStream's de-duplication key of this frame.
    pub fn msg_id(&self) -> String {
        if self.heartbeat {
            format!("{}:hb:{}", self.stream, self.seq)
        } else {
            format!("{}:{}", self.stream, self.seq)
        }
    }

    /// Reads a frame from a message's headers.
    pub fn parse(headers: Option<&HeaderMap>) -> Result<Frame, NotAFrame> {
        let h = headers.ok_or(NotAFrame("no headers"))?;
        let stream: Arc<str> = h
            .get(STREAM)
            .ok_or(NotAFrame("no Shmcast-Stream header"))?
            .as_str()
            .into();
        if stream.is_empty() {
            return Err(NotAFrame("empty Shmcast-Stream header"));
        }
        let number =
            |name: &'static str, missing: &'static str, bad: &'static str| match h.get(name) {
                None => Err(NotAFrame(missing)),
                Some(v) => v.as_str().parse::<u64>().map_err(|_| NotAFrame(bad)),
            };
        let seq = number(SEQ, "no Shmcast-Seq header", "Shmcast-Seq is not a number")?;
        let lost = match number(LOST, "", "Shmcast-Lost is not a number") {
            Err(NotAFrame("")) => 0,
            other => other?,
        };
        let heartbeat = h.get(HEARTBEAT).is_some();
        if !heartbeat && seq == 0 {
            return Err(NotAFrame("Shmcast-Seq is 0 (sequence numbers start at 1)"));
        }
        if lost > seq {
            return Err(NotAFrame("Shmcast-Lost is larger than Shmcast-Seq"));
        }
        Ok(Frame {
            stream,
            seq,
            lost,
            heartbeat,
        })
    }
}

/// The identity of a source incarnation: host, the segment's creation time and its producer's
/// process id (what `shmcast inspect` shows). Letters, digits, `.`, `-` and `_` only, so it is a
/// valid header value and NATS subject token.
pub fn stream_id(host: &str, created_unix_ns: u64, producer_pid: u64) -> String {
    format!("{}.{created_unix_ns}.{producer_pid}", token(host))
}

/// `s` with every character other than an ASCII letter, digit, `-` or `_` as `_`: one NATS
/// subject token, a JetStream stream name, a header value.
pub fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// This machine's host name (the kernel's), or `localhost` if it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_headers() {
        for frame in [
            Frame {
                stream: "h.1.2".into(),
                seq: 7,
                lost: 0,
                heartbeat: false,
            },
            Frame {
                stream: "h.1.2".into(),
                seq: 7,
                lost: 3,
                heartbeat: false,
            },
            Frame {
                stream: "h.1.2".into(),
                seq: 0,
                lost: 0,
                heartbeat: true,
            },
            Frame {
                stream: "h.1.2".into(),
                seq: 9,
                lost: 2,
                heartbeat: true,
            },
        ] {
            for js in [false, true] {
                let h = frame.headers(js);
                assert_eq!(Frame::parse(Some(&h)).unwrap(), frame);
                let has_id = h.get(MSG_ID).map(|v| v.as_str().to_owned());
                let want = js.then(|| frame.msg_id());
                assert_eq!(has_id, want);
            }
        }
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        assert_eq!(Frame::parse(None), Err(NotAFrame("no headers")));
        let mut h = HeaderMap::new();
        h.insert(SEQ, "1");
        assert!(Frame::parse(Some(&h)).is_err());
        h.insert(STREAM, "s");
        assert!(Frame::parse(Some(&h)).is_ok());
        h.insert(SEQ, "x");
        assert_eq!(
            Frame::parse(Some(&h)),
            Err(NotAFrame("Shmcast-Seq is not a number"))
        );
        h.insert(SEQ, "0");
        assert!(Frame::parse(Some(&h)).is_err());
        h.insert(SEQ, "2");
        h.insert(LOST, "3");
        assert!(Frame::parse(Some(&h)).is_err());
    }

    #[test]
    fn stream_ids_are_header_safe() {
        assert_eq!(stream_id("a b.c\r\n", 5, 6), "a_b_c__.5.6");
    }
}
