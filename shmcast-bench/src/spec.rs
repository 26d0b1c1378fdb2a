//! What the harness asks a peer to do ([`PeerSpec`], one JSON object on the peer's command
//! line) and what the peer answers ([`PeerReport`], one JSON line on its standard output).
//!
//! The Rust peer (`shmcast-bench peer SPEC`) and the Go bench reader
//! (`shmcast-bench-reader SPEC`) read the same specification and speak the same handshake:
//! `ready` on standard output once the peer has opened what it reads and created what it
//! writes, then the report line when it is done; errors go to standard error with a non-zero
//! exit status. Unknown fields are refused, so the two sides cannot drift apart silently.

use serde::{Deserialize, Serialize};
use shmcast::WaitStrategy;

/// What a peer does.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Receives each ping and sends back a message of the same size.
    Pong,
    /// Receives `count` messages as fast as it can, checksumming every payload.
    Consume,
    /// Receives `count` messages and records, per message stamped with a time, now minus
    /// that time (`latencies_ns`).
    Timestamp,
    /// Waits in `recv_into_deadline` with `link.wait` on a segment where nothing is published
    /// for `interval_ms`, and reports the CPU time it used.
    Idle,
    /// `readers` threads, each a blocking subscriber that must receive `count` messages.
    Parked,
}

/// The transport a [`LinkSpec`] names.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// A shmcast segment (and a second one for replies).
    Shm,
    /// `socketpair(AF_UNIX, SOCK_STREAM)`.
    UdsStream,
    /// `socketpair(AF_UNIX, SOCK_SEQPACKET)`.
    UdsSeqpacket,
    /// Two pipes, one per direction.
    Pipe,
}

impl Transport {
    /// The socket and pipe baselines, in report order.
    pub const BASELINES: [Transport; 3] = [
        Transport::UdsStream,
        Transport::UdsSeqpacket,
        Transport::Pipe,
    ];

    /// The `"transport"` value of its rows.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::UdsStream => "uds-stream",
            Transport::UdsSeqpacket => "uds-seqpacket",
            Transport::Pipe => "pipe",
        }
    }
}

/// Where a peer receives (and, for `pong`, replies).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// `shm`: the segment to read (the harness created it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// `shm`, role `pong`: the segment to create for the replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// `shm`: wait in the library's blocking call with this strategy instead of busy-polling
    /// the non-blocking one.
    #[serde(default, with = "wait_name", skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitStrategy>,
    /// `shm`: read with an `AsyncSubscriber` awaited on a current-thread tokio runtime (the
    /// wait hub wakes it) instead of the blocking call; the `"wait":"async"` rows.
    #[serde(default, rename = "async", skip_serializing_if = "is_false")]
    pub asynch: bool,
    /// `shm`: register as a lossless reader (the segment must be lossless).
    #[serde(default, skip_serializing_if = "is_false")]
    pub lossless: bool,
    /// `shm`: receive up to this many messages per call of the batched receive API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u16>,
    /// Sockets and pipes: the inherited descriptor to read from…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// …and to write to (pipes; sockets use `fd` both ways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wfd: Option<i32>,
    /// Sockets and pipes: busy-poll non-blocking descriptors instead of blocking.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nonblocking: bool,
}

/// One peer's task.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    pub role: Role,
    pub transport: Transport,
    #[serde(default)]
    pub link: LinkSpec,
    /// Payload size in bytes (at least 8).
    pub size: usize,
    /// Messages to account for (received + lost).
    #[serde(default)]
    pub count: u64,
    /// CPU to pin to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<usize>,
    /// Give up after this long.
    pub timeout_ms: u64,
    /// Yield the CPU between polls (the harness has only one CPU).
    #[serde(default, skip_serializing_if = "is_false")]
    pub yield_idle: bool,
    /// Process id of the harness: a peer whose parent is another process refuses to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// Role `idle`: how long to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Role `parked`: subscriber threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers: Option<usize>,
}

impl PeerSpec {
    /// A task with no link yet, as the harness fills it in.
    pub fn new(role: Role, transport: Transport, size: usize, count: u64) -> PeerSpec {
        PeerSpec {
            role,
            transport,
            link: LinkSpec::default(),
            size,
            count,
            cpu: None,
            timeout_ms: 60_000,
            yield_idle: false,
            parent: None,
            interval_ms: None,
            readers: None,
        }
    }

    /// The segment to read, or an error naming the role.
    pub fn read_name(&self) -> crate::Result<&str> {
        self.link
            .read
            .as_deref()
            .ok_or_else(|| format!("peer: link.read is required for role {:?}", self.role).into())
    }
}

/// What a peer answers: the fields of its role, the others absent.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerReport {
    /// Messages received, and lost to laps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lagged: Option<u64>,
    /// Messages whose checksum, length or sequence was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad: Option<u64>,
    /// `consume`: received messages per second over the active interval (first receive to
    /// last), and bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgs_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_s: Option<f64>,
    /// `consume`: the wrapping sum of every payload's checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
    /// `consume` with a batch: messages per call that returned some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_mean: Option<f64>,
    /// Busy-polling readers: polls that found nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_polls: Option<u64>,
    /// `timestamp`: one sample per message stamped with a time, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latencies_ns: Option<Vec<u64>>,
    /// `idle`: CPU time used, wall time waited, context switches, and whether it could park.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_switches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_park: Option<bool>,
}

impl PeerReport {
    /// Field `value` named `key` of a report by `who`, or an error saying it is missing: a
    /// peer that leaves out a field its role owes has failed (never read as 0).
    pub fn need<T>(who: &str, key: &str, value: Option<T>) -> crate::Result<T> {
        value.ok_or_else(|| format!("{who} reported no {key:?}").into())
    }

    /// Fails if the peer saw a wrong payload.
    pub fn check_bad(&self, who: &str) -> crate::Result<()> {
        match PeerReport::need(who, "bad", self.bad)? {
            0 => Ok(()),
            bad => Err(format!("{who}: {bad} messages had a wrong checksum").into()),
        }
    }

    /// `(received, lagged)`, checked to account for every one of `count` messages.
    pub fn accounted(&self, who: &str, count: u64) -> crate::Result<(u64, u64)> {
        let received = PeerReport::need(who, "received", self.received)?;
        let lagged = PeerReport::need(who, "lagged", self.lagged)?;
        if received + lagged != count {
            return Err(format!(
                "{who} accounted for {received} received + {lagged} lagged of {count} messages"
            )
            .into());
        }
        Ok((received, lagged))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A [`WaitStrategy`] by its name (`spin`, `yield`, `backoff`, `block`).
mod wait_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use shmcast::WaitStrategy;

    pub fn serialize<S: Serializer>(w: &Option<WaitStrategy>, s: S) -> Result<S::Ok, S::Error> {
        match w {
            Some(w) => s.serialize_str(w.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WaitStrategy>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        name.map(|n| n.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_its_json_and_unknown_fields_are_refused() {
        let mut spec = PeerSpec::new(Role::Consume, Transport::Shm, 64, 1000);
        spec.link.read = Some("/x".into());
        spec.link.wait = Some(WaitStrategy::Block);
        spec.link.lossless = true;
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            json,
            r#"{"role":"consume","transport":"shm","link":{"read":"/x","wait":"block","lossless":true},"size":64,"count":1000,"timeout_ms":60000}"#
        );
        assert_eq!(serde_json::from_str::<PeerSpec>(&json).unwrap(), spec);
        let typo = json.replace("\"lossless\"", "\"losless\"");
        assert!(serde_json::from_str::<PeerSpec>(&typo).is_err());
        let bad_wait = json.replace("\"block\"", "\"sleep\"");
        assert!(serde_json::from_str::<PeerSpec>(&bad_wait).is_err());
    }

    #[test]
    fn a_missing_field_is_an_error_not_zero() {
        let r: PeerReport = serde_json::from_str(r#"{"received":3,"lagged":0}"#).unwrap();
        assert_eq!(r.accounted("p", 3).unwrap(), (3, 0));
        assert!(r.accounted("p", 4).is_err());
        let e = r.check_bad("the peer").unwrap_err().to_string();
        assert_eq!(e, "the peer reported no \"bad\"");
    }
}
