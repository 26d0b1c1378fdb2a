package shmcast

import (
	"sync/atomic"
	"time"
	"unsafe"
)

// Stat is one look at a segment: what `shmcast stat` prints per interval,
// from two of them (see Since). The Rust library has the same values in
// SegmentInfo (Subscriber::info).
type Stat struct {
	// Taken is when the snapshot was taken (monotonic clock included).
	Taken time.Time
	Progress
	// Position is the position of the newest record (ring bytes written so
	// far, record headers and padding included), 0 before the first publish.
	Position uint64
	// WakeSeq is the futex word wake_seq: how many times (wrapping at 2^32)
	// the producer woke parked readers or started a throttle.
	WakeSeq uint32
	// Parked reports whether some reader may be parked (the parked word is
	// not zero; it does not count them).
	Parked bool
	// WakeThrottled reports whether the producer throttles its wake-ups.
	WakeThrottled bool
	// ProducerAlive is the liveness lock test (one system call).
	ProducerAlive bool
	// Evictions counts registered readers the producer evicted or reclaimed.
	Evictions uint64
	// Readers are the registered readers of a lossless segment.
	Readers []RegisteredReader
}

// RegisteredReader is one occupied reader slot of a lossless segment (Rust:
// shmcast::RegisteredReader).
type RegisteredReader struct {
	Slot        int
	PID         uint64
	Evicted     bool   // the producer evicted it; it reads lossy now
	Position    uint64 // of the next record it will read
	NextSeq     uint64 // of the next message it will read
	LagMessages uint64 // published messages it has not read (as of its last progress report)
	LagBytes    uint64 // ring bytes it has not read (likewise)
}

// Rates is what happened between two Stats.
type Rates struct {
	Interval      time.Duration
	MsgsPerSec    float64
	BytesPerSec   float64 // ring bytes: records with their 16-byte headers
	WakeupsPerSec float64
	// RetainedMsgs is how many messages the ring holds now.
	RetainedMsgs uint64
	// RetainedFor is how long the ring keeps a message at the current
	// rate; 0 while nothing is published.
	RetainedFor time.Duration
}

// Stat takes a snapshot of the segment. It may be called from any goroutine,
// also while a read is in progress; after Close it returns a Stat with only
// Taken set. It makes one system call (the liveness test).
func (r *Reader) Stat() Stat {
	s := Stat{Taken: time.Now()}
	if !r.hold() {
		return s
	}
	defer r.dropWaker()
	s.Progress = r.indexSnapshot()
	s.ProducerAlive = r.fd < 0 || lockHeld(r.fd)
	base := r.headerBase()
	if l := atomic.LoadUint64(r.latestPtr); l != noLatest {
		s.Position = l
	}
	word32 := func(off uintptr) uint32 { return atomic.LoadUint32((*uint32)(unsafe.Add(base, off))) }
	s.WakeSeq = word32(offWakeSeq)
	s.Parked = word32(offParked) != 0
	s.WakeThrottled = word32(offWakeThrottle) != 0
	if !r.hdr.Lossless() {
		return s
	}
	s.Evictions = atomic.LoadUint64((*uint64)(unsafe.Add(base, offEvictions)))
	tail := uint64(0)
	if l := atomic.LoadUint64(r.latestPtr); l != noLatest {
		if end, _, ok := r.endOfRecord(l, r.ringWord(l), r.intent()); ok {
			tail = end
		}
	}
	for i := 0; i < int(r.hdr.ReaderSlots) && i < maxReaderSlots; i++ {
		slot := unsafe.Add(base, offSlots+uintptr(i)*slotSize)
		word := func(field uintptr) uint64 { return atomic.LoadUint64((*uint64)(unsafe.Add(slot, field))) }
		state := word(slotState) & 3
		if state != slotActive && state != slotEvicted {
			continue
		}
		rr := RegisteredReader{
			Slot:     i,
			PID:      word(slotPID),
			Evicted:  state == slotEvicted,
			Position: word(slotPos),
			NextSeq:  word(slotSeq),
		}
		if s.NextSeq > rr.NextSeq {
			rr.LagMessages = s.NextSeq - rr.NextSeq
		}
		if tail > rr.Position {
			rr.LagBytes = tail - rr.Position
		}
		s.Readers = append(s.Readers, rr)
	}
	return s
}

// Since computes the rates between an earlier Stat prev and s.
func (s Stat) Since(prev Stat) Rates {
	d := s.Taken.Sub(prev.Taken)
	secs := d.Seconds()
	if secs <= 0 {
		secs = 1e-9
	}
	per := func(n uint64) float64 { return float64(n) / secs }
	sub := func(a, b uint64) uint64 {
		if a > b {
			return a - b
		}
		return 0
	}
	rt := Rates{
		Interval:      d,
		MsgsPerSec:    per(sub(s.NextSeq, prev.NextSeq)),
		BytesPerSec:   per(sub(s.Position, prev.Position)),
		WakeupsPerSec: per(uint64(s.WakeSeq - prev.WakeSeq)),
	}
	if s.OldestSeq != 0 {
		rt.RetainedMsgs = sub(s.NextSeq, s.OldestSeq)
	}
	if rt.MsgsPerSec > 0 {
		rt.RetainedFor = time.Duration(float64(rt.RetainedMsgs) / rt.MsgsPerSec * float64(time.Second))
	}
	return rt
}
