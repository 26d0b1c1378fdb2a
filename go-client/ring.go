package shmcast

// The ring protocol of docs/LAYOUT.md on the reader's side, step for step as
// in the Rust reader (src/ring.rs): join ("Joining"), peek and confirm (the
// read algorithm's steps 1 to 3, before and after the payload copy), recover
// ("Lapped") and checkEnd ("End of stream").
//
// All loads here are sequentially consistent sync/atomic loads, which are at
// least the relaxed-load-plus-acquire-fence pairs docs/LAYOUT.md asks for;
// the only place that needs more is after a plain payload copy (loadFence).

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// ringWord loads the word at stream position p. Masking keeps the index
// inside the ring and 8-aligned whatever p is, so a garbage position read
// from the segment can never reach outside the mapping.
func (r *Reader) ringWord(p uint64) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Add(r.ringPtr, p&r.mask&^7)))
}

func (r *Reader) intent() uint64 { return atomic.LoadUint64(r.intentPtr) }

// lappedAt reports whether the producer has started overwriting position p
// (intent > p + capacity), without overflowing.
func (r *Reader) lappedAt(p, intent uint64) bool {
	return intent > r.capacity && intent-r.capacity > p
}

// join positions the reader as docs/LAYOUT.md "Joining" describes. The
// index words are loaded intent, head, latest, in that order, and checked
// against each other: head <= latest, neither more than a ring behind the
// first intent, both below the intent loaded after them. So a retry (the
// record overrun while it was looked at) happens only when intent moved
// between two loads: the producer is writing.
func (r *Reader) join(start Start) error {
	if start == Beginning {
		r.pos, r.seq = 0, 1
		return nil
	}
	if start != Oldest && start != Newest && start != Next {
		return fmt.Errorf("shmcast: invalid start %v", start)
	}
	for range maxResync {
		first := r.intent()
		h := atomic.LoadUint64(r.headPtr)
		l := atomic.LoadUint64(r.latestPtr)
		if l == noLatest {
			r.pos, r.seq = 0, 1
			return nil
		}
		switch {
		case badPosition(first):
			return corrupt(first, "intent is not a multiple of 8 or is beyond 2^63")
		case badPosition(h):
			return corrupt(h, "head is not a multiple of 8 or is beyond 2^63")
		case badPosition(l):
			return corrupt(l, "latest is not a multiple of 8 or is beyond 2^63")
		case h > l:
			return corrupt(h, fmt.Sprintf("head is after latest %d", l))
		case r.lappedAt(h, first):
			return corrupt(h, fmt.Sprintf("head is more than a ring behind intent %d", first))
		}
		p := l
		if start == Oldest {
			p = h
		}
		off := p & r.mask
		w := r.ringWord(p)
		var lw, count uint64
		if start != Oldest && off <= r.capacity-recordHead {
			// Loaded before the intent check, so a torn length (or gap
			// count) is caught too.
			lw = r.ringWord(p + 8)
			count = r.ringWord(p + recordHead)
		}
		n := uint64(uint32(lw))
		in := r.intent()
		if r.lappedAt(p, in) {
			continue // intent moved: the producer overran the record while we loaded it
		}
		if in < recordHead+8 || l > in-recordHead-8 {
			return corrupt(l, fmt.Sprintf("latest is not below intent %d: the index words disagree", in))
		}
		s := w &^ padBit
		switch {
		case s == 0:
			return corrupt(p, "the record a header position points at is empty")
		case start == Oldest:
			r.pos, r.seq = p, s
			return nil
		case w&padBit != 0:
			return corrupt(p, fmt.Sprintf("latest does not point at a committed message (commit word %#x)", w))
		}
		// At a gap record there is no newest message to deliver: Newest
		// starts after it, as Next does.
		gap := r.isGap(p, lw)
		if start == Newest && !gap {
			r.pos, r.seq = p, w
			return nil
		}
		if off > r.capacity-recordHead || n > r.maxPayload || off+recordHead+align8(n) > r.capacity {
			return corrupt(p, fmt.Sprintf("length %d of the latest message is out of range", n))
		}
		after := w + 1
		if gap {
			if count == 0 || count >= padBit-w {
				return corrupt(p, "a gap record's count is 0 or runs past sequence number 2^63")
			}
			after = w + count
		}
		r.pos, r.seq = p+recordHead+align8(n), after
		return nil
	}
	return corrupt(r.pos, "overrun by the producer while joining")
}

// badPosition reports whether a position loaded from the header breaks
// docs/LAYOUT.md's rule: a multiple of 8 below 2^63.
func badPosition(p uint64) bool { return p&7 != 0 || p >= maxPosition }

// recover handles a lap at r.pos ("Lapped" in docs/LAYOUT.md): it moves the
// reader to the oldest retained record and returns the *LaggedError to
// report. It returns nil when that record is the one the reader was waiting
// for (sameOK: the reader sat on a padding record whose message is still
// intact, so nothing was lost and the read should simply go on), and a
// *CorruptError when the control words are impossible.
func (r *Reader) recover(sameOK bool) error {
	for range maxResync {
		first := r.intent()
		h := atomic.LoadUint64(r.headPtr)
		switch {
		case badPosition(first):
			return corrupt(first, "intent is not a multiple of 8 or is beyond 2^63")
		case badPosition(h):
			return corrupt(h, "head is not a multiple of 8 or is beyond 2^63")
		case r.lappedAt(h, first):
			return corrupt(h, fmt.Sprintf("head is more than a ring behind intent %d", first))
		}
		w := r.ringWord(h)
		in := r.intent()
		if r.lappedAt(h, in) {
			runtime.Gosched() // intent moved: give the producer the CPU it is overrunning us with
			continue
		}
		if in < recordHead+8 || h > in-recordHead-8 {
			return corrupt(h, fmt.Sprintf("head is not below intent %d: the index words disagree", in))
		}
		s := w &^ padBit
		switch {
		case s > r.seq:
			// The missed messages lie between the reader and head, 16
			// bytes each at least: a garbage commit word at head cannot
			// make up an arbitrary count.
			// (Unless gap records lie between: one stands for any number.)
			missed := s - r.seq
			if h < r.pos || missed > (h-r.pos)/recordHead && !r.hdr.GapRecords() {
				return corrupt(h, fmt.Sprintf("oldest retained sequence %d is more than the ring could have held", s))
			}
			r.pos, r.seq = h, s
			return &LaggedError{Missed: missed}
		case s == r.seq && sameOK && h > r.pos:
			r.pos = h
			return nil
		default:
			return corrupt(h, fmt.Sprintf("oldest retained sequence %d is not after the expected %d", s, r.seq))
		}
	}
	return corrupt(r.pos, "overrun by the producer too many times in a row")
}

// peek runs steps 1 to 3 of the read algorithm up to the payload copy: it
// returns the ring offset and length of the committed message at r.pos,
// ErrNoMessage, a *LaggedError or a *CorruptError. The returned record lies
// inside the ring (offset + 16 + align8(n) <= capacity) whatever the segment
// holds.
//
// A commit word that was not overwritten (intent says so) and is neither
// 0, the expected sequence number, nor its padding form is corrupt: the
// reader only ever stands where the producer cleared the word, and until a
// later lap overwrites it, it holds one of those three. Right after a
// padding record it must be the message itself (committed before the
// padding), so 0 there is corrupt too.
func (r *Reader) peek() (off, n uint64, err error) {
	if r.seq >= padBit {
		return 0, 0, corrupt(r.pos, "sequence numbers reached 2^63, which no producer can publish")
	}
	hopped := false
	// At most: one padding hop, one lossless recover, one more hop.
	for range 4 {
		pos := r.pos
		off = pos & r.mask
		w := r.ringWord(pos)
		switch {
		case w == r.seq|padBit:
			// The lap check comes first, as in docs/LAYOUT.md: a padding word
			// seen at offset 0 may be an overwrite rather than corruption.
			if r.lappedAt(pos, r.intent()) {
				if err := r.recover(true); err != nil {
					return 0, 0, err
				}
				continue
			}
			if off == 0 || hopped {
				return 0, 0, corrupt(pos, "padding record at ring offset 0")
			}
			r.pos = pos - off + r.capacity // the message starts the next lap
			hopped = true
		case w == r.seq:
			// The whole length word is compared, so a set high half (a gap
			// record, or the reserved bits) takes the rare path below.
			if off <= r.capacity-recordHead {
				n = r.ringWord(pos + 8)
			} else {
				n = ^uint64(0) // no room for a length word: impossible record
			}
			if n > r.maxPayload || off+recordHead+align8(n) > r.capacity {
				if r.isGap(pos, n) {
					return 0, 0, r.passGap()
				}
				// The reserved high half is ignored.
				if n = uint64(uint32(n)); off <= r.capacity-recordHead && n <= r.maxPayload && off+recordHead+align8(n) <= r.capacity {
					return off, n, nil
				}
				if r.lappedAt(pos, r.intent()) {
					if err := r.recover(true); err != nil {
						return 0, 0, err
					}
					continue
				}
				return 0, 0, corrupt(pos, "message length out of range")
			}
			return off, n, nil
		default:
			if r.lappedAt(pos, r.intent()) {
				if err := r.recover(true); err != nil {
					return 0, 0, err
				}
				continue
			}
			if w != 0 {
				return 0, 0, corrupt(pos, fmt.Sprintf("commit word %#x is neither the expected sequence number %d, nor its padding, nor 0", w, r.seq))
			}
			if hopped {
				return 0, 0, corrupt(pos, "no message after the padding record that announced it")
			}
			// Load the next cache line too, so that a reader that has
			// caught up fetches the second line of a message while it
			// waits rather than after seeing the commit (as the Rust
			// reader does; docs/PERFORMANCE-LOG.md).
			_ = r.ringWord((pos | (cacheLine - 1)) + 1)
			return 0, 0, ErrNoMessage
		}
	}
	return 0, 0, corrupt(r.pos, "no message after repeated padding or recovery")
}

// isGap reports whether the record at p with length word lw is a gap record:
// the segment allows them, the word says so, and the 24-byte record fits in
// the lap.
func (r *Reader) isGap(p, lw uint64) bool {
	return lw == gapLengthWord && p&r.mask+recordHead+8 <= r.capacity && r.hdr.GapRecords()
}

// passGap reads the gap record at r.pos (docs/LAYOUT.md, "Gap records"): its
// count of messages, from r.seq on, never reached this segment. It is
// checked like a message (confirm proves the count was not torn), then
// reported as a *LaggedError with the reader moved past it; a lap over it is
// reported as the lap.
func (r *Reader) passGap() error {
	missed := r.ringWord(r.pos + recordHead)
	if err := r.confirm(8); err != nil {
		return err
	}
	if missed == 0 || missed >= padBit-r.seq {
		return corrupt(r.pos, "a gap record's count is 0 or runs past sequence number 2^63")
	}
	r.pos += recordHead + 8
	r.seq += missed
	return &LaggedError{Missed: missed}
}

// confirm is the seqlock re-check after the payload at r.pos was read: it
// returns nil when no byte of the record can have been overwritten during the
// read, else the lap to report.
//
// Ordering, the crux on arm64: the payload was read with plain loads
// (memmove, or whatever the zero-copy callback did). A sync/atomic load is
// LDAR on arm64, which keeps later accesses after it but lets earlier plain
// loads be satisfied after it, so the re-load of intent could be ordered
// before the last payload bytes and miss an overwrite. loadFence (DMB ISHLD,
// fence_arm64.s) completes every earlier load first; it is the acquire
// fence of docs/LAYOUT.md step 3. On amd64 loads are not reordered with
// older loads, and the compiler does not move loads across the atomic load
// or the call that did the copy (fence_amd64.go).
//
// The re-check is a range: intent must be at least the end of the record's
// announcement (the record of n payload bytes and the cleared word after
// it) and at most a ring past its start. Above, the record was overwritten;
// below, intent cannot be the producer's (it announces every record before
// committing it) and could not prove the copy intact.
func (r *Reader) confirm(n uint64) error {
	loadFence()
	in := r.intent()
	if r.lappedAt(r.pos, in) {
		return r.recover(false) // never nil: a lapped message record is lost
	}
	if in-r.pos < recordHead+align8(n)+8 || in < r.pos {
		return corrupt(r.pos, fmt.Sprintf("intent %d is behind a committed record, so torn reads could not be detected", in))
	}
	return nil
}

// copyPayload copies the payload of the located record into dst.
//
// Plain memmove plus loadFence, rather than one atomic load per word
// (copyWordsAtomic): memmove uses wide vector loads, which the atomic copy
// cannot, and is much faster from 1 KiB up (BenchmarkCopyStrategy;
// docs/PERFORMANCE-LOG.md). The zero-copy callback needs loadFence anyway, so the
// faster copy adds no new mechanism.
func (r *Reader) copyPayload(dst []byte, off uint64) {
	start := off + recordHead
	copyPlain(dst, r.ring[start:start+uint64(len(dst))])
}

// checkEnd is "End of stream" in docs/LAYOUT.md: once the producer is gone
// and nothing more can be read, the reader must stand where the producer's
// last record ends. The segment no longer changes, so latest says what was
// published: the reader must have reached the record after it, or (the one
// record a producer killed between its commit and its latest store leaves)
// the record after that one. Anything else means the stream stopped early or
// went past what was published, and is reported as corrupt rather than as
// a normal end, so that received + missed = published cannot fail silently.
func (r *Reader) checkEnd() error {
	l := atomic.LoadUint64(r.latestPtr)
	in := r.intent()
	if l == noLatest {
		if r.seq != 1 {
			return corrupt(r.pos, "the producer is gone and latest says it published nothing, but messages were read")
		}
		return nil
	}
	if badPosition(l) {
		return corrupt(l, "latest is not a multiple of 8 or is beyond 2^63")
	}
	last := r.ringWord(l)
	next, nextSeq, ok := r.endOfRecord(l, last, in)
	if !ok {
		return corrupt(l, "the producer is gone and latest does not point at a complete message")
	}
	if r.seq == nextSeq && r.pos == next {
		return nil
	}
	if r.seq > nextSeq {
		at := next
		if r.ringWord(at) == nextSeq|padBit && at&r.mask != 0 {
			at = at - at&r.mask + r.capacity
		}
		if w := r.ringWord(at); w == nextSeq {
			if end, after, ok := r.endOfRecord(at, w, in); ok && end == r.pos && after == r.seq {
				return nil
			}
		}
	}
	if r.seq <= last {
		return corrupt(r.pos, "the producer is gone, but the reader cannot reach the messages it published last")
	}
	return corrupt(r.pos, "the producer is gone, and the reader received records past the last one it published")
}

// endOfRecord returns where the record at p with commit word seq ends and
// the sequence number after it, if it is a complete record the producer
// announced: a sequence number, a length that fits (or a gap record's
// count), and intent covering it and the word after it without having
// lapped it.
func (r *Reader) endOfRecord(p, seq, in uint64) (end, after uint64, ok bool) {
	if seq == 0 || seq >= padBit {
		return 0, 0, false
	}
	off := p & r.mask
	if off > r.capacity-recordHead {
		return 0, 0, false
	}
	lw := r.ringWord(p + 8)
	after = seq + 1
	if r.isGap(p, lw) {
		count := r.ringWord(p + recordHead)
		if count == 0 || count >= padBit-seq {
			return 0, 0, false
		}
		after = seq + count
	}
	n := uint64(uint32(lw))
	if n > r.maxPayload || off+recordHead+align8(n) > r.capacity {
		return 0, 0, false
	}
	end = p + recordHead + align8(n)
	return end, after, end+8 <= in && !r.lappedAt(p, in)
}
