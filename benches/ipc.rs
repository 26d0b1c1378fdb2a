//! shmcast against the kernel transports a user would otherwise pick: a Unix domain socket
//! (`SOCK_STREAM` with a 4-byte length prefix, and `SOCK_SEQPACKET` with one message per
//! datagram) and a pipe (length-prefixed), for the same message sizes.
//!
//! `cargo bench --bench ipc`. Group `ipc/{size}`, one function per transport:
//!
//! | function | one iteration |
//! |---|---|
//! | `memcpy` | the floor: fill the payload, copy it into the receive buffer, checksum it; no IPC |
//! | `shm` | fill, `Publisher::publish`, `Subscriber::try_recv_into`, checksum |
//! | `uds-stream` | fill in place after the prefix, one `write_all` of prefix + payload, `read` until the frame is in, checksum |
//! | `uds-seqpacket` | fill, one `send`, one `recv`, checksum |
//! | `pipe` | as `uds-stream`, over a pipe |
//!
//! Every iteration runs in one thread: the sender writes a whole message, then the receiver
//! reads it, so the figure is the cost of moving one message through the transport (both
//! sides' CPU work: fill, copy in, copy out, checksum), not a cross-core latency. The payload is
//! filled with fresh words on every iteration (a counter, so it always changes), and the
//! receiver sums every byte it got and checks the sum against the expected one, so no
//! transport can skip the work. The cross-process, cross-core figures (latency percentiles,
//! streaming throughput) come from `shmcast bench`.
//!
//! Buffer sizes: the sockets' `SO_SNDBUF`/`SO_RCVBUF` are raised to 1 MiB (capped by
//! `net.core.wmem_max`/`rmem_max`) and the pipe to 1 MiB with `F_SETPIPE_SZ` (capped by
//! `fs.pipe-max-size`), so that a whole 64 KiB message plus its prefix fits and a write never
//! blocks waiting for the reader that runs after it in the same thread. (The kernel defaults,
//! 208 KiB for a socket and 64 KiB for a pipe, would already hold every size but the pipe's
//! 64 KiB + prefix.) The pipe's new size is checked, so a refused raise panics instead of
//! deadlocking.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::socket::{
    recv, send, setsockopt, socketpair, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
};
use shmcast::{Publisher, StartAt, Subscriber};

const SIZES: [(usize, &str); 5] = [
    (8, "8B"),
    (64, "64B"),
    (1024, "1KiB"),
    (4096, "4KiB"),
    (65536, "64KiB"),
];

/// Kernel buffer size asked for on every socket and the pipe.
const KERNEL_BUF: usize = 1 << 20;

// `fill` and `checksum` are never inlined, so every transport runs the same machine code for
// them.

/// Writes a fresh payload: word `i` is `counter + i` (little-endian), so the bytes change on
/// every iteration and the receiver's sum is predictable.
#[inline(never)]
fn fill(buf: &mut [u8], counter: u64) {
    let mut words = buf.chunks_exact_mut(8);
    for (i, w) in (&mut words).enumerate() {
        w.copy_from_slice(&counter.wrapping_add(i as u64).to_le_bytes());
    }
    for b in words.into_remainder() {
        *b = counter as u8;
    }
}

/// Wrapping sum of the little-endian 64-bit words, plus the tail bytes: touches every byte.
#[inline(never)]
fn checksum(buf: &[u8]) -> u64 {
    shmcast::pattern::checksum(buf)
}

/// What `checksum` returns for a payload of `size` bytes written by `fill(_, counter)`.
fn expected(size: usize, counter: u64) -> u64 {
    let n = (size / 8) as u64;
    let words = n
        .wrapping_mul(counter)
        .wrapping_add(n.wrapping_mul(n.wrapping_sub(1)) / 2);
    let tail = (size % 8) as u64 * u64::from(counter as u8);
    words.wrapping_add(tail)
}

/// Receives one length-prefixed frame from a byte stream into `rbuf` and returns its payload.
/// Exactly one frame is in flight in these benchmarks, so a read never returns bytes of the
/// next one (asserted); a general reader would keep the leftover, as a `BufReader` does.
fn read_frame<'a>(rx: &mut impl Read, rbuf: &'a mut [u8]) -> &'a [u8] {
    let mut have = 0;
    let mut need = 4;
    while have < need {
        let n = rx.read(&mut rbuf[have..]).expect("read");
        assert!(n > 0, "unexpected end of stream");
        have += n;
        if need == 4 && have >= 4 {
            need = 4 + u32::from_le_bytes(rbuf[..4].try_into().unwrap()) as usize;
        }
    }
    assert_eq!(have, need, "read past the end of the frame");
    &rbuf[4..need]
}

/// One message through a length-prefixed byte stream (UDS `SOCK_STREAM` or a pipe): the
/// payload is filled in place after the prefix and sent with one `write_all`.
fn stream_roundtrip(
    tx: &mut impl Write,
    rx: &mut impl Read,
    frame: &mut [u8],
    rbuf: &mut [u8],
    counter: u64,
) -> u64 {
    let size = frame.len() - 4;
    frame[..4].copy_from_slice(&(size as u32).to_le_bytes());
    fill(&mut frame[4..], counter);
    tx.write_all(frame).expect("write");
    let payload = read_frame(rx, rbuf);
    assert_eq!(payload.len(), size);
    checksum(payload)
}

fn raise_socket_buffers(fd: impl AsFd) {
    let fd = fd.as_fd();
    setsockopt(&fd, sockopt::SndBuf, &KERNEL_BUF).expect("SO_SNDBUF");
    setsockopt(&fd, sockopt::RcvBuf, &KERNEL_BUF).expect("SO_RCVBUF");
}

fn ipc(c: &mut Criterion) {
    for (size, label) in SIZES {
        let mut group = c.benchmark_group(format!("ipc/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut counter = 0u64;

        // The floor: the same fill, one copy and the checksum, with no transport. Source and
        // destination are placed half a page apart modulo 4 KiB: two `Vec`s allocated one after the
        // other can land 16 bytes apart modulo 4 KiB, and on the AMD EPYC VMs glibc's `rep movsb`
        // copy is then ~8x slower (4K aliasing: 4 KiB took 2.5 µs instead of 0.3 µs), which
        // would make the floor slower than the transports.
        let mut both = vec![0u8; 2 * size + 8192];
        let (src, rest) = both.split_at_mut(size);
        let gap = (4096 + 2048 - size % 4096) % 4096;
        let dst = &mut rest[gap..gap + size];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                counter = counter.wrapping_add(1);
                fill(src, counter);
                dst.copy_from_slice(black_box(&*src));
                let sum = checksum(black_box(&*dst));
                assert_eq!(sum, expected(size, counter));
                black_box(sum)
            })
        });

        // shmcast: a 4 MiB ring (a 64 KiB message is at most a quarter of it).
        let name = format!("/shmcast-bench-ipc-{size}-{}", std::process::id());
        let mut publisher = Publisher::options()
            .capacity(4 << 20)
            .create(&name)
            .expect("create bench segment");
        let mut subscriber = Subscriber::open(&name, StartAt::Next).expect("open bench segment");
        let mut payload = vec![0u8; size];
        let mut rbuf = vec![0u8; size];
        group.bench_function("shm", |b| {
            b.iter(|| {
                counter = counter.wrapping_add(1);
                fill(&mut payload, counter);
                publisher.publish(&payload).expect("publish");
                let got = subscriber.try_recv_into(&mut rbuf).expect("try_recv_into");
                assert_eq!(got.len, size);
                let sum = checksum(&rbuf[..got.len]);
                assert_eq!(sum, expected(size, counter));
                black_box(sum)
            })
        });
        drop((publisher, subscriber));

        // UDS SOCK_STREAM: 4-byte length prefix + payload.
        let (mut tx, mut rx) = UnixStream::pair().expect("socketpair(SOCK_STREAM)");
        raise_socket_buffers(&tx);
        raise_socket_buffers(&rx);
        let mut frame = vec![0u8; 4 + size];
        let mut rbuf = vec![0u8; 4 + size];
        group.bench_function("uds-stream", |b| {
            b.iter(|| {
                counter = counter.wrapping_add(1);
                let sum = stream_roundtrip(&mut tx, &mut rx, &mut frame, &mut rbuf, counter);
                assert_eq!(sum, expected(size, counter));
                black_box(sum)
            })
        });
        drop((tx, rx));

        // UDS SOCK_SEQPACKET: one message per send, boundaries kept by the kernel, no prefix.
        let (tx, rx) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::empty(),
        )
        .expect("socketpair(SOCK_SEQPACKET)");
        raise_socket_buffers(&tx);
        raise_socket_buffers(&rx);
        let mut payload = vec![0u8; size];
        // One byte more than a message, so a truncated or oversized datagram would show.
        let mut rbuf = vec![0u8; size + 1];
        group.bench_function("uds-seqpacket", |b| {
            b.iter(|| {
                counter = counter.wrapping_add(1);
                fill(&mut payload, counter);
                let sent = send(tx.as_raw_fd(), &payload, MsgFlags::empty()).expect("send");
                assert_eq!(sent, size);
                let n = recv(rx.as_raw_fd(), &mut rbuf, MsgFlags::empty()).expect("recv");
                assert_eq!(n, size);
                let sum = checksum(&rbuf[..n]);
                assert_eq!(sum, expected(size, counter));
                black_box(sum)
            })
        });
        drop((tx, rx));

        // Pipe: 4-byte length prefix + payload, as the stream socket.
        let (rfd, wfd): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
        let got = fcntl(wfd.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(KERNEL_BUF as i32))
            .expect("F_SETPIPE_SZ");
        assert!(got as usize >= 4 + size, "pipe buffer of {got} bytes");
        let mut tx = std::fs::File::from(wfd);
        let mut rx = std::fs::File::from(rfd);
        let mut frame = vec![0u8; 4 + size];
        let mut rbuf = vec![0u8; 4 + size];
        group.bench_function("pipe", |b| {
            b.iter(|| {
                counter = counter.wrapping_add(1);
                let sum = stream_roundtrip(&mut tx, &mut rx, &mut frame, &mut rbuf, counter);
                assert_eq!(sum, expected(size, counter));
                black_box(sum)
            })
        });
        drop((tx, rx));

        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = ipc
}
criterion_main!(benches);
