package shmcast

import (
	"sync/atomic"
	"time"
	"unsafe"
)

// offLastPublishNs is last_publish_ns in the producer header's index block
// (docs/LAYOUT.md): wall-clock nanoseconds of a recent publish, 0 = never.
const offLastPublishNs = 0x110

// Progress is where the producer is and how far behind a Reader is, read
// from the mapping without a system call (Rust: Subscriber::progress, with
// the same fields).
type Progress struct {
	// NextSeq is the sequence number the next message will get (1 if
	// nothing was published).
	NextSeq uint64
	// OldestSeq is the sequence number of the oldest retained message, 0
	// when nothing was published.
	OldestSeq uint64
	// Lag is how many published messages the Reader has not read: NextSeq
	// minus the Reader's NextSeq (0 when it is caught up), including any
	// already overwritten, which a read reports as a *LaggedError.
	Lag uint64
	// LastPublishUnixNano is when the producer last showed activity (a
	// recent publish or a heartbeat), 0 = never.
	LastPublishUnixNano uint64
}

// LastPublish is LastPublishUnixNano as a time; the zero Time if never.
func (p Progress) LastPublish() time.Time {
	if p.LastPublishUnixNano == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(p.LastPublishUnixNano))
}

// Progress reads the producer's position and this Reader's lag from the
// mapping: a few atomic loads, no system call, cheap enough to call per
// message. Call it from the goroutine that reads (Lag uses NextSeq). After
// Close it returns the zero Progress.
func (r *Reader) Progress() Progress {
	if !r.hold() {
		return Progress{}
	}
	defer r.dropWaker()
	p := r.indexSnapshot()
	if mine := r.NextSeq(); p.NextSeq > mine {
		p.Lag = p.NextSeq - mine
	}
	return p
}

// Lag is Progress().Lag: how many published messages this Reader has not
// read yet.
func (r *Reader) Lag() uint64 { return r.Progress().Lag }

// indexSnapshot is the Rust Ring::snapshot: latest, head and the commit
// words they point at, re-checked against intent (a live producer cannot
// make it report torn values; after maxResync overruns it reports what it
// saw last). The caller holds the mapping.
func (r *Reader) indexSnapshot() Progress {
	p := Progress{
		NextSeq:             1,
		LastPublishUnixNano: atomic.LoadUint64((*uint64)(unsafe.Add(r.headerBase(), offLastPublishNs))),
	}
	for range maxResync {
		l := atomic.LoadUint64(r.latestPtr)
		h := atomic.LoadUint64(r.headPtr)
		if l == noLatest {
			p.NextSeq, p.OldestSeq = 1, 0
			return p
		}
		oldest := r.ringWord(h) &^ padBit
		last := r.ringWord(l)
		in := r.intent()
		p.OldestSeq = oldest
		if _, after, ok := r.endOfRecord(l, last, in); ok {
			p.NextSeq = after
		} else {
			p.NextSeq = last&^padBit + 1
		}
		if !r.lappedAt(h, in) {
			return p
		}
	}
	return p
}

// headerBase is the start of the mapping (the producer header): the ring
// starts DataOffset bytes after it.
func (r *Reader) headerBase() unsafe.Pointer {
	return unsafe.Add(r.ringPtr, -int(r.hdr.DataOffset))
}
