package shmcast

import (
	"encoding/binary"
	"net"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// BenchmarkIPC compares the Go reader with a Go Unix-domain-socket reader
// for the same message sizes (the Rust side is benches/ipc.rs). One
// iteration, in one goroutine, moves one message:
//
//	memcpy         the floor: fill the payload, copy it into the receive
//	               buffer, checksum it; no IPC
//	shm            fill, publish into a mapped 4 MiB ring (benchPublisher),
//	               TryRead into a buffer, checksum
//	uds-stream     fill in place after a 4-byte length prefix, one Write of
//	               prefix + payload on a SOCK_STREAM socketpair, Read until
//	               the frame is in, checksum
//	uds-seqpacket  fill, one Write (one datagram) on a SOCK_SEQPACKET
//	               socketpair, one Read, checksum
//
// The payload changes on every iteration (word i is counter+i) and the
// receiver sums every byte it got and compares the sum with the expected
// one, so no transport skips the work. Both sides run in one goroutine
// (write, then read), so the figure is the CPU cost of one message through
// the transport, not a cross-core latency; `shmcast bench --consumer go`
// measures that across processes. The sockets are real kernel sockets
// (socketpair → os.NewFile → net.FileConn → *net.UnixConn, through the
// netpoller as any Go program would use them), with 1 MiB buffers.
//
// go test -run='^$' -bench=BenchmarkIPC -benchmem .
func BenchmarkIPC(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("memcpy/"+s.name, func(b *testing.B) { benchMemcpy(b, s.n) })
		b.Run("shm/"+s.name, func(b *testing.B) { benchShm(b, s.n) })
		b.Run("uds-stream/"+s.name, func(b *testing.B) { benchUDSStream(b, s.n) })
		b.Run("uds-seqpacket/"+s.name, func(b *testing.B) { benchUDSSeqpacket(b, s.n) })
	}
}

// fillPayload writes word i of p as counter+i (little-endian); a tail
// shorter than a word gets the low byte of counter. Reslicing instead of
// indexing lets the compiler drop the bounds checks.
func fillPayload(p []byte, counter uint64) {
	tail := byte(counter)
	for len(p) >= 32 {
		binary.LittleEndian.PutUint64(p[0:8], counter)
		binary.LittleEndian.PutUint64(p[8:16], counter+1)
		binary.LittleEndian.PutUint64(p[16:24], counter+2)
		binary.LittleEndian.PutUint64(p[24:32], counter+3)
		counter += 4
		p = p[32:]
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p[0:8], counter)
		counter++
		p = p[8:]
	}
	for i := range p {
		p[i] = tail
	}
}

// TestIPCChecksum checks the benchmark's fill and checksum on every length
// up to 100 (the benchmark sizes are all multiples of 32).
func TestIPCChecksum(t *testing.T) {
	for n := range 101 {
		p := make([]byte, n)
		fillPayload(p, 0xFFFF_FFFF_FFFF_FFF0+uint64(n))
		var naive uint64
		for i, b := range p {
			if i < n&^7 {
				naive += uint64(b) << (8 * (i % 8))
			} else {
				naive += uint64(b)
			}
		}
		if got, want := Checksum(p), expectedSum(n, 0xFFFF_FFFF_FFFF_FFF0+uint64(n)); got != naive || got != want {
			t.Fatalf("n=%d: checksum %#x, byte-wise %#x, expected %#x", n, got, naive, want)
		}
	}
}

// expectedSum is checksum of a payload of n bytes filled with counter.
func expectedSum(n int, counter uint64) uint64 {
	w := uint64(n / 8)
	return w*counter + w*(w-1)/2 + uint64(n%8)*uint64(byte(counter))
}

func checkSum(b *testing.B, got uint64, n int, counter uint64) {
	if want := expectedSum(n, counter); got != want {
		b.Fatalf("message %d: checksum %#x, want %#x", counter, got, want)
	}
	sinkU64 = got
}

func benchMemcpy(b *testing.B, n int) {
	src, dst := make([]byte, n), make([]byte, n)
	var counter uint64
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		counter++
		fillPayload(src, counter)
		copy(dst, src)
		checkSum(b, Checksum(dst), n, counter)
	}
}

func benchShm(b *testing.B, n int) {
	p, path := newBenchPublisher(b, 4<<20)
	r, err := OpenPath(path, WithStart(Next))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	payload, buf := make([]byte, n), make([]byte, n)
	var counter uint64
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		counter++
		fillPayload(payload, counter)
		p.publish(payload)
		m, err := r.TryRead(buf)
		if err != nil || len(m.Data) != n {
			b.Fatalf("TryRead: %v (%d bytes)", err, len(m.Data))
		}
		checkSum(b, Checksum(m.Data), n, counter)
	}
}

func benchUDSStream(b *testing.B, n int) {
	tx, rx := unixSocketPair(b, syscall.SOCK_STREAM)
	frame, rbuf := make([]byte, 4+n), make([]byte, 4+n)
	binary.LittleEndian.PutUint32(frame, uint32(n))
	var counter uint64
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		counter++
		fillPayload(frame[4:], counter)
		if _, err := tx.Write(frame); err != nil {
			b.Fatal(err)
		}
		payload := readFrame(b, rx, rbuf)
		if len(payload) != n {
			b.Fatalf("frame of %d bytes, want %d", len(payload), n)
		}
		checkSum(b, Checksum(payload), n, counter)
	}
}

// readFrame reads one length-prefixed frame into rbuf and returns its
// payload. Exactly one frame is in flight here, so a read never returns
// bytes of the next one (checked); a general reader would keep the leftover,
// as bufio.Reader does.
func readFrame(b *testing.B, rx *net.UnixConn, rbuf []byte) []byte {
	have, need := 0, 4
	for have < need {
		k, err := rx.Read(rbuf[have:])
		if err != nil {
			b.Fatal(err)
		}
		have += k
		if need == 4 && have >= 4 {
			need = 4 + int(binary.LittleEndian.Uint32(rbuf))
		}
	}
	if have != need {
		b.Fatalf("read %d bytes past the frame", have-need)
	}
	return rbuf[4:need]
}

func benchUDSSeqpacket(b *testing.B, n int) {
	tx, rx := unixSocketPair(b, syscall.SOCK_SEQPACKET)
	payload := make([]byte, n)
	rbuf := make([]byte, n+1) // one spare byte: an oversized datagram would show
	var counter uint64
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		counter++
		fillPayload(payload, counter)
		if _, err := tx.Write(payload); err != nil {
			b.Fatal(err)
		}
		k, err := rx.Read(rbuf)
		if err != nil || k != n {
			b.Fatalf("Read: %v (%d bytes, want %d)", err, k, n)
		}
		checkSum(b, Checksum(rbuf[:k]), n, counter)
	}
}

// unixSocketPair returns the two ends of a socketpair(AF_UNIX, typ) as
// *net.UnixConn, with 1 MiB send and receive buffers (capped by the
// kernel's wmem_max/rmem_max).
func unixSocketPair(b *testing.B, typ int) (*net.UnixConn, *net.UnixConn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // dups the descriptor
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		uc := c.(*net.UnixConn)
		b.Cleanup(func() { uc.Close() })
		if err := uc.SetWriteBuffer(1 << 20); err != nil {
			b.Fatal(err)
		}
		if err := uc.SetReadBuffer(1 << 20); err != nil {
			b.Fatal(err)
		}
		return uc
	}
	return conn(fds[0]), conn(fds[1])
}

// benchPublisher publishes into a mapped segment for BenchmarkIPC. It stands
// in for the Rust producer and follows docs/LAYOUT.md's publish algorithm,
// but only in the single goroutine that also reads: with nothing running
// concurrently there is nothing to order, so it uses plain stores, as the
// Rust producer's release stores are plain MOVs on x86-64. segtest.Writer,
// the test fixture, stores every payload word with an atomic XCHG and costs
// 10-30x a real publish (about 12 µs for 4 KiB on the 2-vCPU VM), which
// would swamp the reader being measured. Not a producer: never use it with
// a concurrent reader.
type benchPublisher struct {
	mem                             []byte
	ring                            []byte
	capacity, mask, tail, head, seq uint64
}

func newBenchPublisher(b *testing.B, capacity uint64) (*benchPublisher, string) {
	w, path := segtest.Temp(b, capacity) // header initialised, nothing published
	return &benchPublisher{
		mem:      w.Mem,
		ring:     w.Mem[segtest.DataOffset:],
		capacity: capacity,
		mask:     capacity - 1,
		seq:      1,
	}, path
}

func (p *benchPublisher) header(off uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(&p.mem[off]))
}

func (p *benchPublisher) at(pos uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(&p.ring[pos&p.mask]))
}

func (p *benchPublisher) publish(payload []byte) {
	n := uint64(len(payload))
	span := recordHead + align8(n)
	pos, padAt, padded := p.tail, uint64(0), false
	if off := p.tail & p.mask; off+span > p.capacity {
		padAt, padded = p.tail, true
		pos = p.tail + p.capacity - off
	}
	end := pos + span
	limit := end + 8
	if limit > p.capacity { // evict
		old := p.head
		for p.head < limit-p.capacity {
			if *p.at(p.head)&segtest.Pad != 0 {
				p.head = (p.head | p.mask) + 1
			} else {
				p.head += recordHead + align8(*p.at(p.head + 8)&0xFFFF_FFFF)
			}
		}
		if p.head != old {
			*p.header(segtest.OffHead) = p.head
		}
	}
	*p.header(segtest.OffIntent) = limit
	*p.at(pos + 8) = n
	start := pos&p.mask + recordHead
	copy(p.ring[start:start+n], payload)
	clear(p.ring[start+n : start+align8(n)])
	*p.at(end) = 0
	*p.at(pos) = p.seq // commit
	if padded {
		*p.at(padAt) = p.seq | segtest.Pad
	}
	*p.header(segtest.OffLatest) = pos
	p.tail = end
	p.seq++
}
