//! One transport abstraction: a [`Link`] sends the pattern message stamped with a counter and
//! receives the next message, on either side; [`connect`] sets one up between the harness and
//! a new peer, and [`open`] is the peer's end of it.
//!
//! Adding a transport is a variant of [`Transport`], a `Link` implementation, and an arm in
//! [`connect`] and [`open`]; every measurement then runs over it unchanged.

mod fd;
mod shm;

use shmcast::{Publisher, WaitStrategy};

pub use fd::FdLink;
pub use shm::{create, ShmLink, Waiter};

use crate::process::{Peer, Program};
use crate::spec::{PeerSpec, Role, Transport};
use crate::sys::{self, Ctx, Spinner};
use crate::Result;

/// A received message, or a count of messages lost to a lap.
pub enum Got<'a> {
    /// The message's sequence number where the transport has one (shm), and its payload.
    Msg(Option<u64>, &'a [u8]),
    /// Messages overwritten before they were read (lossy shm readers only).
    Lost(u64),
}

/// One side of a channel between the harness and a peer.
pub trait Link {
    /// Sends the pattern message stamped with `counter`.
    fn send(&mut self, counter: u64) -> Result<()>;
    /// Waits for the next message.
    fn recv(&mut self) -> Result<Got<'_>>;
    /// The checksum of the pattern message stamped with `counter`.
    fn expected(&self, counter: u64) -> u64;
    /// Polls that found nothing, where the reader busy-polls.
    fn empty_polls(&self) -> Option<u64> {
        None
    }
    /// Calls of a batched receive API, where one is used.
    fn calls(&self) -> Option<u64> {
        None
    }
    /// `FUTEX_WAKE` calls of the publishing side, where it can make them.
    fn wakeups(&self) -> Option<u64> {
        None
    }
}

/// Either kind of link (dispatched with one predictable branch, so the loops of every
/// measurement inline the transport's calls).
// One per measurement, never moved in a loop: boxing the larger variant would only add an
// indirection to every send and receive.
#[allow(clippy::large_enum_variant)]
pub enum AnyLink {
    Shm(ShmLink),
    Fd(FdLink),
}

macro_rules! each {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            AnyLink::Shm($l) => $e,
            AnyLink::Fd($l) => $e,
        }
    };
}

impl Link for AnyLink {
    #[inline(always)]
    fn send(&mut self, counter: u64) -> Result<()> {
        each!(self, l => l.send(counter))
    }
    #[inline(always)]
    fn recv(&mut self) -> Result<Got<'_>> {
        each!(self, l => l.recv())
    }
    #[inline(always)]
    fn expected(&self, counter: u64) -> u64 {
        each!(self, l => l.expected(counter))
    }
    fn empty_polls(&self) -> Option<u64> {
        each!(self, l => l.empty_polls())
    }
    fn calls(&self) -> Option<u64> {
        each!(self, l => l.calls())
    }
    fn wakeups(&self) -> Option<u64> {
        each!(self, l => l.wakeups())
    }
}

impl AnyLink {
    /// The shm publisher of this side, if any.
    pub fn publisher(&self) -> Option<&Publisher> {
        match self {
            AnyLink::Shm(l) => l.publisher(),
            AnyLink::Fd(_) => None,
        }
    }
}

/// How a measurement's link is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Setup {
    pub transport: Transport,
    /// shm: how the readers wait (`None`: busy-poll `try_recv_into`).
    pub wait: Option<WaitStrategy>,
    /// shm: the capacity of the harness's segment.
    pub capacity: u64,
    /// shm: a lossless segment whose reader registers.
    pub lossless: bool,
    /// shm: the reader is an `AsyncSubscriber` (label `async`).
    pub asynch: bool,
    /// shm: the peer receives up to this many messages per batched call.
    pub batch: Option<u16>,
    /// Sockets and pipes: busy-poll non-blocking descriptors.
    pub nonblocking: bool,
}

impl Setup {
    /// A blocking socket or pipe, or a busy-polled shm segment of `capacity` bytes.
    pub fn new(transport: Transport, capacity: u64) -> Setup {
        Setup {
            transport,
            wait: None,
            capacity,
            lossless: false,
            asynch: false,
            batch: None,
            nonblocking: false,
        }
    }

    /// The `"wait"` label of its rows: the shm strategy (`spin` for the busy-poll), or `spin`
    /// / `block` for the descriptors.
    pub fn wait_label(&self) -> &'static str {
        match self.transport {
            Transport::Shm if self.asynch => "async",
            Transport::Shm => self.wait.map_or("spin", WaitStrategy::name),
            _ if self.nonblocking => "spin",
            _ => "block",
        }
    }
}

/// Starts a peer (`program`, on the first peer CPU) that does `role` with `size`-byte messages,
/// `count` of them, over a new link set up as `setup` says, and returns the harness's side.
/// For shm the harness creates the segment it publishes on; a `pong` peer creates the reply
/// segment, which the harness opens once the peer is ready.
pub fn connect(
    ctx: &Ctx,
    setup: &Setup,
    program: Program<'_>,
    label: &str,
    role: Role,
    size: usize,
    count: u64,
) -> Result<(AnyLink, Peer)> {
    let mut spec = PeerSpec::new(role, setup.transport, size, count);
    let spin = Spinner::new(ctx.deadline(), ctx.yield_idle, "the peer");
    if setup.transport != Transport::Shm {
        let (link, fds) = FdLink::pair(setup.transport, size, setup.nonblocking, spin)?;
        fds.describe(&mut spec.link);
        spec.link.nonblocking = setup.nonblocking;
        let peer = Peer::start(ctx, label, program, spec, ctx.peer_cpu(0), &fds.borrowed())?;
        // The harness's copies close here, so a peer that dies shows as the end of the stream.
        drop(fds);
        return Ok((AnyLink::Fd(link), peer));
    }
    let name = sys::segment_name(match (role, setup.lossless) {
        (Role::Pong, _) => "ping",
        (_, true) => "lossless",
        _ => "data",
    });
    let publisher = create(&name, setup.capacity, setup.lossless)?;
    spec.link.read = Some(name);
    spec.link.wait = setup.wait;
    spec.link.lossless = setup.lossless;
    spec.link.asynch = setup.asynch;
    spec.link.batch = setup.batch;
    let reply = (role == Role::Pong).then(|| sys::segment_name("pong"));
    spec.link.reply = reply.clone();
    let peer = Peer::start(ctx, label, program, spec, ctx.peer_cpu(0), &[])?;
    let rx = match reply {
        Some(name) => Some(ShmLink::open(&name, false, setup.wait, spin)?),
        None => None,
    };
    Ok((AnyLink::Shm(ShmLink::new(size, Some(publisher), rx)), peer))
}

/// The peer's end of the link its `spec` describes.
pub fn open(spec: &PeerSpec, spin: Spinner) -> Result<AnyLink> {
    if spec.transport != Transport::Shm {
        return Ok(AnyLink::Fd(FdLink::adopt(
            spec.transport,
            &spec.link,
            spec.size,
            spin,
        )?));
    }
    let rx = ShmLink::open(spec.read_name()?, spec.link.lossless, spec.link.wait, spin)?;
    let tx = match &spec.link.reply {
        Some(name) => Some(create(name, crate::measure::pingpong::CAPACITY, false)?),
        None => None,
    };
    let mut link = ShmLink::new(spec.size, tx, Some(rx));
    if spec.link.asynch {
        link = link.asynchronous()?;
    }
    Ok(AnyLink::Shm(match spec.link.batch {
        Some(batch) => link.batched(batch),
        None => link,
    }))
}
