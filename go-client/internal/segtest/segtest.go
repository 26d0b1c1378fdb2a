// Package segtest is a TEST FIXTURE, not a producer: a minimal
// single-goroutine implementation of the publish algorithm of
// docs/LAYOUT.md over a byte slice, so that the Go reader can be tested
// (wrap-around, padding, laps, hostile mutations, fuzz seeds) without the
// Rust producer. It trusts its caller. A Writer made by Create holds the
// producer's liveness lock (docs/LAYOUT.md, "Producer liveness") until Kill
// or the returned release function drops it. On a lossless segment
// (InitLossless, CreateLossless; lossless.go) it is also a minimal gated
// producer: the refresh of gate_limit over the ACTIVE slots, never
// announcing past the gate (TryPublish, PublishWait, which waits on
// gate_wake with producer_blocked set), and Evict; it neither reclaims dead
// readers nor evicts by itself. The real producer is the Rust crate.
package segtest

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Layout constants, duplicated from docs/LAYOUT.md on purpose: the fixture
// must not share the reader's code, or a misreading of the document would
// cancel out in the tests.
const (
	Magic      = 0x00545341434D4853
	DataOffset = 8192
	OffVersion = 0x008
	OffDataOff = 0x010
	OffCap     = 0x018
	OffFlags   = 0x020
	OffEpoch   = 0x028
	OffPID     = 0x030
	OffCreated = 0x038
	OffIntent  = 0x080
	OffHead    = 0x100
	OffLatest  = 0x108
	OffWakeSeq = 0x1000 // u32 futex word
	OffParked  = 0x1004 // u32
	Pad        = uint64(1) << 63
)

// Writer publishes into Mem, a whole segment (DataOffset + Capacity bytes).
type Writer struct {
	Mem      []byte
	Capacity uint64
	tail     uint64
	nextSeq  uint64
	head     uint64
	wakes    atomic.Uint64 // FUTEX_WAKE calls made by step 9
	lock     *os.File      // holds the liveness lock (Create); nil for heap segments

	// Lossless mode (lossless.go).
	slots     int           // reader slots; 0: a lossy segment
	announced uint64        // the last value stored to intent
	gate      uint64        // the last gate_limit stored
	blocked   atomic.Uint64 // publishes of PublishWait that waited
}

// NewMem returns a zeroed, 8-byte aligned buffer of n bytes on the heap.
func NewMem(n int) []byte {
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), n)
}

// Init writes the header of a new segment into mem (zero-filled,
// DataOffset + capacity bytes) the way the producer does: identity fields
// and latest first, magic last.
func Init(mem []byte, capacity uint64) *Writer {
	w := &Writer{Mem: mem, Capacity: capacity, nextSeq: 1}
	w.init()
	return w
}

func (w *Writer) init() {
	capacity := w.Capacity
	w.Store(OffVersion, 1)
	w.Store(OffDataOff, DataOffset)
	w.Store(OffCap, capacity)
	w.Store(OffEpoch, 1)
	w.Store(OffPID, 4242) // fixed, so regenerated fixtures do not change
	w.Store(OffCreated, 1_700_000_000_000_000_000)
	w.Store(OffLatest, ^uint64(0))
	if w.slots > 0 {
		w.initLossless()
	}
	w.Store(0, Magic)
}

// NewHeap returns a Writer over a fresh heap segment.
func NewHeap(capacity uint64) *Writer {
	return Init(NewMem(int(DataOffset+capacity)), capacity)
}

// Create makes a segment file at path, maps it read-write and shared, and
// returns a Writer over the mapping and a function that unmaps it and
// drops the lock. Like the producer, it takes the liveness lock (an OFD
// write lock on byte 0) before it stores magic, and holds it until Kill or
// the returned function. An existing file at path is truncated and reused
// (not replaced: use os.Remove first for a new inode).
func Create(path string, capacity uint64) (*Writer, func(), error) {
	return create(path, capacity, 0)
}

func create(path string, capacity uint64, slots int) (*Writer, func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, err
	}
	size := int(DataOffset + capacity)
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, nil, err
	}
	// The lock is taken through an open file description of its own: the
	// mapping keeps the one it was made from alive (and a lock on it held)
	// until munmap, so closing that descriptor would not drop the lock.
	lf, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		err = lockFile(lf)
		if err != nil {
			lf.Close()
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("segtest: lock %s: %w", path, err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	f.Close()
	if err != nil {
		lf.Close()
		return nil, nil, err
	}
	w := &Writer{Mem: mem, Capacity: capacity, nextSeq: 1, lock: lf, slots: slots}
	w.init()
	return w, func() { w.Kill(); syscall.Munmap(mem) }, nil
}

// Kill drops the liveness lock, as the death of the producer process does;
// the mapping stays, so the Writer can still (wrongly) publish. Idempotent.
func (w *Writer) Kill() {
	if w.lock != nil {
		w.lock.Close()
		w.lock = nil
	}
}

// Locked reports whether this Writer still holds the liveness lock.
func (w *Writer) Locked() bool { return w.lock != nil }

func (w *Writer) word(off uint64) *uint64 {
	if off%8 != 0 || off+8 > uint64(len(w.Mem)) {
		panic(fmt.Sprintf("segtest: bad word offset %d", off))
	}
	return (*uint64)(unsafe.Pointer(&w.Mem[off]))
}

// Store atomically stores v at byte offset off of the segment.
func (w *Writer) Store(off, v uint64) { atomic.StoreUint64(w.word(off), v) }

// Load atomically loads the word at byte offset off of the segment.
func (w *Writer) Load(off uint64) uint64 { return atomic.LoadUint64(w.word(off)) }

// RingOff is the segment offset of stream position p.
func (w *Writer) RingOff(p uint64) uint64 { return DataOffset + p&(w.Capacity-1) }

// MaxPayload is capacity/4 - 16.
func (w *Writer) MaxPayload() int { return int(w.Capacity/4 - 16) }

// NextSeq is the sequence number the next Publish gets.
func (w *Writer) NextSeq() uint64 { return w.nextSeq }

// Tail is the next free position.
func (w *Writer) Tail() uint64 { return w.tail }

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

// Publish publishes payload and returns its sequence number and position,
// following the numbered steps of docs/LAYOUT.md.
func (w *Writer) Publish(payload []byte) (seq, pos uint64) {
	return w.publish(payload, uint64(len(payload)), 1)
}

// GapLengthWord is the length word of a gap record (docs/LAYOUT.md, "Gap
// records").
const GapLengthWord = uint64(1)<<32 | 8

// PublishGap publishes a gap record: missed messages, from the next sequence
// number on, never reached the segment. The segment's flags must allow gap
// records (Store(OffFlags, 2)) for readers to take it as one.
func (w *Writer) PublishGap(missed uint64) (seq, pos uint64) {
	var count [8]byte
	binary.LittleEndian.PutUint64(count[:], missed)
	return w.publish(count[:], GapLengthWord, missed)
}

// publish writes a record of payload with length word lenWord; the next
// sequence number is advance after this one's.
func (w *Writer) publish(payload []byte, lenWord, advance uint64) (seq, pos uint64) {
	n := uint64(len(payload))
	if n > uint64(w.MaxPayload()) {
		panic("segtest: payload too large")
	}
	capacity := w.Capacity
	// 1-3
	span := 16 + align8(n)
	off := w.tail & (capacity - 1)
	padAt, padded := uint64(0), false
	pos = w.tail
	if off+span > capacity {
		padAt, padded = w.tail, true
		pos = w.tail + (capacity - off)
	}
	end := pos + span
	limit := end + 8
	// 4. the gate of a lossless segment (lossless.go), then evict
	if !w.admit(limit) {
		panic(fmt.Sprintf("segtest: Publish held back by a registered reader (gate %d, limit %d): use TryPublish or PublishWait", w.gate, limit))
	}
	if limit > capacity {
		old := w.head
		for w.head < limit-capacity {
			c := w.Load(w.RingOff(w.head))
			if c&Pad != 0 {
				w.head = (w.head | (capacity - 1)) + 1
			} else {
				l := w.Load(w.RingOff(w.head+8)) & 0xFFFF_FFFF
				w.head += 16 + align8(l)
			}
		}
		if w.head != old {
			w.Store(OffHead, w.head)
		}
	}
	// 5. intent (Go atomics are sequentially consistent: the store is also
	// the fence)
	w.Store(OffIntent, limit)
	w.announced = limit
	// 6. length, payload, cleared next word
	w.Store(w.RingOff(pos+8), lenWord)
	var buf [8]byte
	for i := uint64(0); i < align8(n); i += 8 {
		clear(buf[:])
		copy(buf[:], payload[i:min(i+8, n)])
		w.Store(w.RingOff(pos+16+i), binary.LittleEndian.Uint64(buf[:]))
	}
	w.Store(w.RingOff(end), 0)
	// 7. commit
	seq = w.nextSeq
	w.Store(w.RingOff(pos), seq)
	// 8. padding
	if padded {
		w.Store(w.RingOff(padAt), seq|Pad)
	}
	// 9. latest
	w.Store(OffLatest, pos)
	w.tail = end
	w.nextSeq = seq + advance
	// Then "Waiting and waking", producer step 9. The store of latest just
	// above and the load of parked are sequentially consistent Go atomics,
	// which is the full fence between them.
	if atomic.LoadUint32(w.word32(OffParked)) != 0 {
		atomic.SwapUint32(w.word32(OffParked), 0)
		atomic.AddUint32(w.word32(OffWakeSeq), 1)
		futexWake(w.word32(OffWakeSeq))
		w.wakes.Add(1)
	}
	return seq, pos
}

func (w *Writer) word32(off uint64) *uint32 {
	if off%4 != 0 || off+4 > uint64(len(w.Mem)) {
		panic(fmt.Sprintf("segtest: bad u32 offset %d", off))
	}
	return (*uint32)(unsafe.Pointer(&w.Mem[off]))
}

// Wakes is the number of FUTEX_WAKE calls Publish has made: one per publish
// that found parked set. It may be read from any goroutine.
func (w *Writer) Wakes() uint64 { return w.wakes.Load() }

// Parked atomically loads the parked word of the subscriber area.
func (w *Writer) Parked() uint32 { return atomic.LoadUint32(w.word32(OffParked)) }

// WakeSeq atomically loads the wake_seq futex word.
func (w *Writer) WakeSeq() uint32 { return atomic.LoadUint32(w.word32(OffWakeSeq)) }

// Pattern is the generated payload of docs/LAYOUT.md, implemented here
// independently of the package under test.
func Pattern(seq uint64, n int) []byte {
	out := make([]byte, 0, n+8)
	state := seq ^ uint64(n)<<40
	for len(out) < n {
		state += 0x9E3779B97F4A7C15
		z := state
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		out = binary.LittleEndian.AppendUint64(out, z)
	}
	return out[:n]
}

// PublishPattern publishes the generated payload of n bytes for the next
// sequence number.
func (w *Writer) PublishPattern(n int) (seq, pos uint64) {
	return w.Publish(Pattern(w.nextSeq, n))
}
