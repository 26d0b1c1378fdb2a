//! The shmcast benchmark harness (`shmcast-bench`, docs/CLI.md "shmcast-bench"): shmcast
//! against Unix domain sockets and pipes, between two real processes, with the hardware floor
//! measured in the same run.
//!
//! The harness re-executes itself (`shmcast-bench peer SPEC`) for the other side of every
//! measurement, pinned to another CPU; the Go bench reader (`go-client/cmd/shmcast-bench-reader`)
//! speaks the same [`spec::PeerSpec`] and the same handshake. Every payload is written by its
//! sender and copied out and checksummed by its receiver.
//!
//! The layers, each using only those above it:
//!
//! - [`sys`] (CPUs, deadlines, interruption, segment names, clocks, host), [`payload`], [`floor`];
//! - [`spec`]: what a peer is asked to do and what it answers (serde types);
//! - [`process`]: the peer processes and their watchdog;
//! - [`link`]: one transport abstraction (shm, UDS stream, UDS seqpacket, pipe): send and
//!   receive a message, on either side;
//! - [`measure`]: one generic measurement per kind, harness and peer sides;
//! - [`report`]: result rows (serde) and tables; [`run`]: the plan of a whole run.

pub mod floor;
pub mod go_reader;
pub mod link;
pub mod measure;
pub mod payload;
pub mod process;
pub mod report;
pub mod run;
pub mod spec;
pub mod sys;

/// Errors of the harness: shown as `shmcast-bench: error: …`.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
