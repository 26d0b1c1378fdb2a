//! The baselines' link: a Unix domain stream socket, a Unix domain seqpacket socket or a pair
//! of pipes, carrying the same payloads as shmcast with the same framing.
//!
//! Every message is one frame: a 4-byte little-endian length, then the payload. A sender
//! writes a frame with one `write` (looping only on a short write); a receiver reads it with
//! `read_exact`-style loops (length, then payload) on the stream socket and the pipe, and with
//! one `read` per packet on the seqpacket socket. By default descriptors block, so a receiver
//! sleeps in the kernel and is woken by the sender (what an application using them does); with
//! `nonblocking` both sides run with `O_NONBLOCK`, retrying on `EAGAIN` (busy-polling,
//! comparable to shmcast's busy-spinning reader).
//!
//! The descriptors are created by the harness before the peer starts and inherited by it
//! (their numbers are in the peer's [`LinkSpec`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::{Got, Link};
use crate::payload::Payload;
use crate::spec::{LinkSpec, Transport};
use crate::sys::{self, Spinner};
use crate::Result;

/// One side's ends of a channel, with a frame to send and a buffer to receive into.
pub struct FdLink {
    seqpacket: bool,
    rd: File,
    wr: File,
    /// `[len: u32 LE][payload]`.
    frame: Vec<u8>,
    base: u64,
    size: usize,
    /// Receive buffer: a frame and 8 spare bytes (so an oversized packet shows).
    rx: Vec<u8>,
    spin: Spinner,
}

/// The peer's descriptors, before they are handed over.
pub struct PeerFds {
    rd: OwnedFd,
    /// A separate write descriptor (pipes); sockets use `rd` both ways.
    wr: Option<OwnedFd>,
}

impl PeerFds {
    /// Their numbers, for the peer's [`LinkSpec`].
    pub fn describe(&self, link: &mut LinkSpec) {
        link.fd = Some(self.rd.as_raw_fd());
        link.wfd = self.wr.as_ref().map(AsRawFd::as_raw_fd);
    }

    /// The descriptors to pass on.
    pub fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.rd.as_fd()];
        if let Some(wr) = &self.wr {
            fds.push(wr.as_fd());
        }
        fds
    }
}

impl FdLink {
    fn new(t: Transport, rd: File, wr: File, size: usize, spin: Spinner) -> Result<FdLink> {
        let payload = Payload::new(size);
        let len = u32::try_from(size).map_err(|_| "message size does not fit a 4-byte length")?;
        let mut frame = Vec::with_capacity(4 + size);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload.bytes());
        Ok(FdLink {
            seqpacket: t == Transport::UdsSeqpacket,
            rd,
            wr,
            frame,
            base: payload.base(),
            size,
            rx: vec![0u8; 4 + size + 8],
            spin,
        })
    }

    /// Creates a channel (close-on-exec descriptors): the harness's link and the peer's
    /// descriptors.
    pub fn pair(
        t: Transport,
        size: usize,
        nonblocking: bool,
        spin: Spinner,
    ) -> Result<(FdLink, PeerFds)> {
        let both = |a: OwnedFd| -> Result<(File, File)> {
            let wr = File::from(a);
            Ok((wr.try_clone()?, wr))
        };
        let ((rd, wr), fds) = match t {
            Transport::UdsStream => {
                let (a, b) = UnixStream::pair()?;
                let fds = PeerFds {
                    rd: OwnedFd::from(b),
                    wr: None,
                };
                (both(OwnedFd::from(a))?, fds)
            }
            Transport::UdsSeqpacket => {
                let (a, b) = socketpair(
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    None,
                    SockFlag::SOCK_CLOEXEC,
                )
                .map_err(|e| format!("socketpair(AF_UNIX, SOCK_SEQPACKET): {e}"))?;
                (both(a)?, PeerFds { rd: b, wr: None })
            }
            Transport::Pipe => {
                let (to_peer_rd, to_peer_wr) =
                    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
                let (to_us_rd, to_us_wr) =
                    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
                let fds = PeerFds {
                    rd: to_peer_rd,
                    wr: Some(to_us_wr),
                };
                ((File::from(to_us_rd), File::from(to_peer_wr)), fds)
            }
            Transport::Shm => return Err("shm is not a socket or pipe transport".into()),
        };
        let link = FdLink::new(t, rd, wr, size, spin)?;
        if nonblocking {
            link.set_nonblocking()?;
        }
        Ok((link, fds))
    }

    /// The peer's link, from the descriptors it inherited.
    pub fn adopt(t: Transport, spec: &LinkSpec, size: usize, spin: Spinner) -> Result<FdLink> {
        let rd = spec
            .fd
            .ok_or("peer: link.fd is required for this transport")?;
        let adopt = |fd: i32| -> Result<File> {
            if fd < 3 || fcntl(fd, FcntlArg::F_GETFD).is_err() {
                return Err(format!("peer: descriptor {fd} was not inherited").into());
            }
            // SAFETY: the harness created this descriptor for this process and passed its
            // number; it was checked open above, and nothing else in this process refers to it.
            Ok(unsafe { File::from_raw_fd(fd) })
        };
        let rd_file = adopt(rd)?;
        let wr_file = match spec.wfd {
            Some(wr) if wr != rd => adopt(wr)?,
            _ => rd_file.try_clone()?,
        };
        let link = FdLink::new(t, rd_file, wr_file, size, spin)?;
        if spec.nonblocking {
            link.set_nonblocking()?;
        }
        Ok(link)
    }

    fn set_nonblocking(&self) -> Result<()> {
        for f in [&self.rd, &self.wr] {
            let fd = f.as_raw_fd();
            let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fcntl(F_GETFL): {e}"))?;
            let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
            fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| format!("fcntl(F_SETFL): {e}"))?;
        }
        Ok(())
    }

    /// Receives one frame into the receive buffer; returns its payload length.
    #[inline(always)]
    fn recv_frame(&mut self) -> Result<usize> {
        if self.seqpacket {
            loop {
                match self.rd.read(&mut self.rx) {
                    Ok(0) => return Err(closed()),
                    Ok(n) => {
                        let len = frame_len(&self.rx);
                        if n < 4 || len != n - 4 || len > self.size {
                            return Err(format!("malformed {n}-byte packet").into());
                        }
                        return Ok(len);
                    }
                    Err(e) => retry(e, &mut self.spin)?,
                }
            }
        }
        read_full(&mut self.rd, &mut self.rx[..4], &mut self.spin)?;
        let len = frame_len(&self.rx);
        if len > self.size {
            return Err(format!("malformed frame: length {len}").into());
        }
        read_full(&mut self.rd, &mut self.rx[4..4 + len], &mut self.spin)?;
        Ok(len)
    }
}

impl Link for FdLink {
    #[inline(always)]
    fn send(&mut self, counter: u64) -> Result<()> {
        self.frame[4..12].copy_from_slice(&counter.to_le_bytes());
        write_full(&mut self.wr, &self.frame, &mut self.spin)
    }

    #[inline(always)]
    fn recv(&mut self) -> Result<Got<'_>> {
        let len = self.recv_frame()?;
        Ok(Got::Msg(None, &self.rx[4..4 + len]))
    }

    fn expected(&self, counter: u64) -> u64 {
        self.base.wrapping_add(counter)
    }
}

#[inline(always)]
fn frame_len(rx: &[u8]) -> usize {
    u32::from_le_bytes([rx[0], rx[1], rx[2], rx[3]]) as usize
}

fn closed() -> Box<dyn std::error::Error> {
    "the other side closed the connection".into()
}

/// What to do after a failed read or write: spin on `EAGAIN`, retry on `EINTR` unless the
/// harness was interrupted, fail otherwise.
#[inline(always)]
fn retry(e: io::Error, spin: &mut Spinner) -> Result<()> {
    match e.kind() {
        io::ErrorKind::WouldBlock => spin.idle(),
        io::ErrorKind::Interrupted if !sys::interrupted() => Ok(()),
        io::ErrorKind::Interrupted => Err("interrupted".into()),
        _ => Err(e.into()),
    }
}

/// Reads exactly `buf.len()` bytes (`read_exact`, also for non-blocking descriptors).
#[inline(always)]
fn read_full(rd: &mut File, mut buf: &mut [u8], spin: &mut Spinner) -> Result<()> {
    while !buf.is_empty() {
        match rd.read(buf) {
            Ok(0) => return Err(closed()),
            Ok(n) => buf = &mut std::mem::take(&mut buf)[n..],
            Err(e) => retry(e, spin)?,
        }
    }
    Ok(())
}

/// Writes all of `buf` (`write_all`, also for non-blocking descriptors).
#[inline(always)]
fn write_full(wr: &mut File, mut buf: &[u8], spin: &mut Spinner) -> Result<()> {
    while !buf.is_empty() {
        match wr.write(buf) {
            Ok(0) => return Err(closed()),
            Ok(n) => buf = &buf[n..],
            Err(e) => retry(e, spin)?,
        }
    }
    Ok(())
}
