//! # shmcast
//!
//! A lock-free single-producer, multi-consumer broadcast ring over POSIX shared memory.
//!
//! One [`Publisher`] creates a named segment and publishes variable-length messages; any number
//! of [`Subscriber`]s, in any process on the host (Rust here, Go through the `go-client`
//! package), read every message in order or learn exactly how many they missed.
//!
//! - Publishing never blocks and does not depend on the number of subscribers.
//! - A subscriber that falls a whole ring behind gets [`RecvError::Lagged`] with the exact
//!   number of lost messages, then continues with the oldest message still intact.
//! - A message that was overwritten while being read is never returned.
//! - Subscribers map the segment read-only. An idle subscriber can sleep in the kernel
//!   ([`WaitStrategy::Block`], the default) and is woken by the producer with one futex call per
//!   publish; while nobody sleeps, publishing makes no system call.
//!
//! A segment is named like a shared-memory object, `/prices` or `prices` (the file
//! `/dev/shm/prices` on Linux), or by a file path: any name with a '/' after its first
//! character, such as `/run/app/prices` or `./prices`. [`Subscriber::open`] and
//! [`PublisherOptions::create`] take either, as do the `shmcast` tool and the Go reader.
//!
//! Reading comes in three forms (into a `Vec`, into a slice, as a [`bytemuck::Pod`] value),
//! each non-blocking (`try_recv*`), blocking (`recv*`), with a timeout (`*_timeout`) or with a
//! deadline (`*_deadline`); see [`Subscriber`]. [`Subscriber::messages`] iterates until the
//! producer has exited and everything it published was delivered. [`RecvError`] converts into
//! [`Error`], so `?` passes on the errors of opening and of reading alike.
//!
//! Segments left behind by producers that died are found by [`list_segments`] and removed by
//! [`clean_stale_segments`] (what `shmcast list` and `shmcast clean` print); a producer that
//! restarts replaces its dead predecessor's segment by itself.
//!
//! The byte layout and the publish/read algorithms are specified in `docs/LAYOUT.md`; the
//! protocol lives in the `ring` module, file handling in `segment`, waiting in `wait`, stale
//! segments in `stale`.
//!
//! ```
//! # fn main() -> Result<(), shmcast::Error> {
//! use shmcast::{Publisher, StartAt, Subscriber};
//!
//! let name = format!("/shmcast-doc-{}", std::process::id());
//! let mut publisher = Publisher::options().capacity(1 << 16).create(&name)?;
//! let mut subscriber = Subscriber::open(&name, StartAt::Next)?;
//!
//! publisher.publish(b"price update: 42")?;
//! let mut buf = Vec::new();
//! let seq = subscriber.recv(&mut buf)?;
//! assert_eq!((seq, buf.as_slice()), (1, &b"price update: 42"[..]));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
// Under `--cfg loom` only the protocol is built (no mapping, publisher or subscriber), so the
// helpers those use are expectedly dead there.
#![cfg_attr(loom, allow(dead_code))]

mod copy;
mod error;
pub mod layout;
pub mod pattern;
mod registry;
mod ring;
mod sync;

#[cfg(all(feature = "async", not(loom)))]
mod async_subscriber;
#[cfg(not(loom))]
mod cancel;
#[cfg(not(loom))]
mod gate;
#[cfg(not(loom))]
mod liveness;
#[cfg(not(loom))]
mod publisher;
#[cfg(not(loom))]
mod registration;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod stale;
#[cfg(not(loom))]
mod subscriber;
pub mod wait;
#[cfg(all(feature = "async", not(loom)))]
mod wait_hub;
#[cfg(not(loom))]
mod waitv;

pub use error::{Error, RecvError};
pub use ring::{ParseStartAtError, StartAt};
pub use wait::WaitStrategy;

#[cfg(all(feature = "async", not(loom)))]
pub use async_subscriber::{AsyncSubscriber, Recv};
#[cfg(not(loom))]
pub use cancel::{Canceller, CANCEL_POLL};

#[cfg(not(loom))]
pub use gate::{DEFAULT_MAX_BLOCK, DEFAULT_PROBE_INTERVAL, DEFAULT_READER_SLOTS};
#[cfg(not(loom))]
pub use publisher::{Claim, Publisher, PublisherOptions, DEFAULT_CAPACITY, DEFAULT_MODE};
pub use registry::RegisteredReader;
#[cfg(not(loom))]
pub use stale::{
    clean_stale_segments, list_segments, remove_stale_segment, Cleaned, DamagedSegment, Removal,
    SegmentEntry, SegmentStatus,
};
#[cfg(not(loom))]
pub use subscriber::{
    MessageRef, Messages, Progress, Received, SegmentInfo, Subscriber, SubscriberOptions,
};
