package shmcast

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Start says where a new Reader begins (docs/LAYOUT.md, "Joining").
type Start int

const (
	// Oldest starts at the oldest message still retained in the ring.
	Oldest Start = iota
	// Beginning starts at the first message ever published; whatever was
	// already overwritten is reported as a lap by the first read, so that
	// received + missed counts every message.
	Beginning
	// Newest starts at the newest committed message, which is delivered.
	Newest
	// Next delivers only messages published after the Reader joined.
	Next
)

var startNames = [...]string{Oldest: "oldest", Beginning: "beginning", Newest: "newest", Next: "next"}

// String returns the name ParseStart accepts ("oldest", "beginning",
// "newest" or "next"), as the commands' --from flags spell it.
func (s Start) String() string {
	if s >= 0 && int(s) < len(startNames) {
		return startNames[s]
	}
	return fmt.Sprintf("Start(%d)", int(s))
}

// ParseStart parses "beginning", "oldest", "newest" or "next".
func ParseStart(s string) (Start, error) {
	for i, name := range startNames {
		if s == name {
			return Start(i), nil
		}
	}
	return 0, fmt.Errorf("shmcast: unknown start %q (want beginning, oldest, newest or next)", s)
}

// Message is one delivered message.
type Message struct {
	// Seq is the message's sequence number: 1 for the first message the
	// producer published, then consecutive. A gap between two delivered
	// messages was reported by a read in between as a [*LaggedError].
	Seq uint64
	// Data is the payload. It aliases the buffer passed to the read that
	// returned it (Messages: a buffer of the sequence), so the next read
	// overwrites it: copy it to keep it.
	Data []byte
}

// Reader reads messages from one segment, opened with [Open] or
// [OpenPath]. Each Reader has its own position in the stream; a producer
// does not know its readers and never waits for them, unless a Reader
// registered on a lossless segment ([WithLossless]). Close it when done:
// it holds a mapping of the segment and its file descriptor, and a
// registered Reader its reader slot.
//
// Concurrency: a Reader is used by one goroutine at a time. Close is the
// exception: it may be called from any goroutine, at any time, any number of
// times. It wakes a read blocked in Read, ReadFunc or a Messages loop, which
// then returns os.ErrClosed, and every later call returns os.ErrClosed. The
// mapping is never unmapped while a read is touching it: if Close runs during
// a read, the unmapping is left to that read, which does it as soon as it has
// finished with the mapping (after the payload copy or the callback).
type Reader struct {
	// Immutable after open.
	ring       []byte         // the ring, len == capacity; aliases the mapping
	ringPtr    unsafe.Pointer // &ring[0], 8-byte aligned
	intentPtr  *uint64
	headPtr    *uint64
	latestPtr  *uint64
	capacity   uint64
	mask       uint64
	maxPayload uint64
	hdr        Header
	path       string
	strategy   WaitStrategy
	pollMax    time.Duration  // cap of WaitBackoff's sleeps and of read-only futex waits
	parkSlice  time.Duration  // longest futex wait of a parked read (MaxParkSlice)
	wakeSeq    *uint32        // the futex word, through the writable page if there is one
	parked     *uint32        // nil: this Reader cannot register as parked
	sub        unsafe.Pointer // the writable subscriber page; nil if there is none
	registry   registry       // lossless words (WithLossless only)
	membarrier bool           // the producer relies on parking readers calling membarrier
	cancelWake func()         // r.wakeBusy, bound once so registering it does not allocate it
	unmap      func() error   // nil for readers over ordinary memory (tests)
	fd         int            // the segment file, for the liveness test; -1: none (always alive)
	guard      bool           // WithFaultRecovery: reads turn SIGBUS into ErrTruncated
	liveEvery  time.Duration  // how often an idle blocking read tests liveness (LivenessInterval)

	// Owned by the reading goroutine.
	pos   uint64 // position of the next record
	seq   uint64 // its expected sequence number
	timer *time.Timer
	dead  bool // a blocking read found the producer gone (it never comes back)
	// reg is the reader slot of a registered Reader (WithLossless); nil
	// when not registered, also after an eviction. Released with the
	// mapping (release), when nothing else uses the Reader.
	reg *registration
	// pending is an error the next read returns before it reads anything:
	// an eviction found after a message was delivered, the lap that
	// follows an eviction, or what a registration skipped.
	pending error

	slot atomic.Int32 // reg's slot + 1, 0 when not registered (Slot)

	state   atomic.Uint32 // stBusy | stClosed + n*stWaker
	closing chan struct{} // closed by Close, wakes blocked reads that are not parked
}

// The mapping is unmapped by whoever leaves state at exactly stClosed: Close
// when nothing else holds it, else the read or the last waker.
const (
	stBusy   = 1 // a read (or a parked wait) is touching the mapping
	stClosed = 2 // Close has been called
	stWaker  = 4 // added once per goroutine making a FUTEX_WAKE for Close or a cancellation

	// maxResync bounds every retry loop that a moving producer can force, so
	// that a static corrupt segment cannot make a reader spin for ever. A
	// live producer that overruns a reader this many times in a row, between
	// two of its loads, is in practice a reader that cannot keep up at all.
	maxResync = 1000
)

// newReader builds a Reader over mem, a whole segment whose header has been
// validated into hdr. mem must be 8-byte aligned and exactly
// hdr.DataOffset + hdr.Capacity bytes long. sub is a writable view of the
// subscriber area (offsets 0x1000 .. 0x2000) when the Reader may register as
// parked, else nil.
func newReader(mem []byte, hdr Header, path string, unmap func() error, o options, sub []byte) (*Reader, error) {
	if o.wait < 0 || int(o.wait) >= len(waitNames) {
		return nil, fmt.Errorf("shmcast: invalid wait strategy %v", o.wait)
	}
	base := unsafe.Pointer(unsafe.SliceData(mem))
	r := &Reader{
		ring:       mem[hdr.DataOffset : hdr.DataOffset+hdr.Capacity : hdr.DataOffset+hdr.Capacity],
		intentPtr:  (*uint64)(unsafe.Add(base, offIntent)),
		headPtr:    (*uint64)(unsafe.Add(base, offHead)),
		latestPtr:  (*uint64)(unsafe.Add(base, offLatest)),
		capacity:   hdr.Capacity,
		mask:       hdr.Capacity - 1,
		maxPayload: uint64(hdr.MaxPayload()),
		hdr:        hdr,
		path:       path,
		strategy:   o.wait,
		pollMax:    o.pollMax,
		parkSlice:  o.parkSlice,
		wakeSeq:    (*uint32)(unsafe.Add(base, offWakeSeq)),
		unmap:      unmap,
		fd:         -1,
		liveEvery:  o.liveEvery,
		guard:      o.faultRecovery,
		closing:    make(chan struct{}),
	}
	r.ringPtr = unsafe.Pointer(unsafe.SliceData(r.ring))
	r.cancelWake = r.wakeBusy
	if r.pollMax <= 0 {
		r.pollMax = defPollMax
	}
	if r.parkSlice <= 0 {
		r.parkSlice = MaxParkSlice
	}
	if r.liveEvery <= 0 {
		r.liveEvery = LivenessInterval
	}
	// A parking reader must be able to issue the barrier the producer relies on.
	barrier := loadWord(mem, offWakeBarrier)
	r.membarrier = barrier == wakeMembarrier
	barrierOK := barrier == wakeFence || (r.membarrier && membarrierAvailable())
	if sub != nil {
		r.sub = unsafe.Pointer(unsafe.SliceData(sub[:subSize:subSize]))
	}
	if r.sub != nil && futexSupported && o.wait == WaitBlock && barrierOK {
		r.wakeSeq = (*uint32)(unsafe.Add(r.sub, offWakeSeq-headerSize))
		r.parked = (*uint32)(unsafe.Add(r.sub, offParked-headerSize))
	}
	if o.lossless {
		// OpenPath registers once the Reader has its file (register joins).
		if !hdr.Lossless() || r.sub == nil {
			return nil, fmt.Errorf("shmcast: internal error: registering without a lossless segment's writable subscriber page")
		}
		r.registry = newRegistry(base, r.sub, int(hdr.ReaderSlots))
		return r, nil
	}
	if err := r.join(o.start); err != nil {
		return nil, err
	}
	return r, nil
}

// Header returns the segment's identity block as validated when it was opened.
func (r *Reader) Header() Header { return r.hdr }

// Path is the file the Reader mapped.
func (r *Reader) Path() string { return r.path }

// MaxPayload is the largest payload the segment can carry; a buffer of this
// size never gets a ShortBufferError.
func (r *Reader) MaxPayload() int { return int(r.maxPayload) }

// WaitStrategy is how the Reader's blocking reads wait (WithWait).
func (r *Reader) WaitStrategy() WaitStrategy { return r.strategy }

// CanPark reports whether a blocking read of r registers as parked, so that
// the producer wakes it as soon as it publishes: the strategy is WaitBlock,
// the platform has futexes (Linux), and the segment file could be opened
// for writing. A WaitBlock Reader that cannot park waits on the same futex
// word with timeouts of 20 µs growing to the poll interval (1 ms): it
// notices a message within about that long, or sooner when the producer
// wakes other, parked readers.
func (r *Reader) CanPark() bool { return r.parked != nil }

// ProducerAlive reports whether the segment's producer is still running:
// the producer holds a lock on the segment file for as long as it lives,
// which the kernel releases when it exits or is killed (docs/LAYOUT.md,
// "Producer liveness"). It costs one system call (fcntl F_OFD_GETLK on the
// Reader's own descriptor), acquires nothing, and so never disturbs the
// producer; a reused PID cannot fool it. Blocking reads make this test by
// themselves while idle (every LivenessInterval) and return
// ErrProducerGone once everything the producer published was read
// (Messages ends there).
//
// It may be called from any goroutine, also while a read is in progress.
// When the answer is unknown it reports true: if the test fails, after
// Close, on a platform without OFD locks (not Linux), and for a Reader that
// has no file.
func (r *Reader) ProducerAlive() bool {
	if !r.hold() {
		return true
	}
	alive := r.fd < 0 || lockHeld(r.fd)
	r.dropWaker()
	return alive
}

// producerGone tests liveness for a blocking read: nil while the producer
// is alive, else the error to report. The Reader is marked dead for good:
// a lock released by a dead producer is never taken again by it.
func (r *Reader) producerGone() error {
	if !r.hold() {
		return os.ErrClosed
	}
	var err error
	if r.fd >= 0 && (r.dead || !lockHeld(r.fd)) {
		r.dead = true
		err = &ProducerGoneError{Replaced: replacedName(r.fd, r.path)}
	}
	r.dropWaker()
	return err
}

// hold takes a reference on the mapping and the file (a stWaker count, as
// a FUTEX_WAKE for Close does), so that they cannot be released under the
// caller; false after Close. The caller drops it with dropWaker.
func (r *Reader) hold() bool {
	for {
		s := r.state.Load()
		if s&stClosed != 0 {
			return false
		}
		if r.state.CompareAndSwap(s, s+stWaker) {
			return true
		}
	}
}

// NextSeq is the sequence number the next delivered message is expected to
// have. After a lap it jumps past the missed messages, so for a Reader that
// started at Beginning, NextSeq()-1 == received + missed.
func (r *Reader) NextSeq() uint64 {
	if lag, ok := r.pending.(*LaggedError); ok {
		return r.seq - lag.Missed // not reported yet
	}
	return r.seq
}

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

// All loads below are sequentially consistent sync/atomic loads, which are
// at least the relaxed-load-plus-acquire-fence pairs docs/LAYOUT.md asks for;
// the only place that needs more is after a plain payload copy (loadFence).

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
		var n uint64
		if start == Next && off <= r.capacity-recordHead {
			// Loaded before the intent check, so a torn length is caught too.
			n = uint64(uint32(r.ringWord(p + 8)))
		}
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
		case start == Newest:
			r.pos, r.seq = p, w
			return nil
		}
		if off > r.capacity-recordHead || n > r.maxPayload || off+recordHead+align8(n) > r.capacity {
			return corrupt(p, fmt.Sprintf("length %d of the latest message is out of range", n))
		}
		r.pos, r.seq = p+recordHead+align8(n), w+1
		return nil
	}
	return corrupt(r.pos, "overrun by the producer while joining")
}

// badPosition reports whether a position loaded from the header breaks
// docs/LAYOUT.md's rule: a multiple of 8 below 2^63.
func badPosition(p uint64) bool { return p&7 != 0 || p >= maxPosition }

// resync handles a lap at r.pos ("Lapped" in docs/LAYOUT.md): it moves the
// reader to the oldest retained record and returns the *LaggedError to
// report. It returns nil when that record is the one the reader was waiting
// for (sameOK: the reader sat on a padding record whose message is still
// intact, so nothing was lost and the read should simply go on), and a
// *CorruptError when the control words are impossible.
func (r *Reader) resync(sameOK bool) error {
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
			missed := s - r.seq
			if h < r.pos || missed > (h-r.pos)/recordHead {
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

// locate runs steps 1 to 3 of the read algorithm up to the payload copy: it
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
func (r *Reader) locate() (off, n uint64, err error) {
	if r.seq >= padBit {
		return 0, 0, corrupt(r.pos, "sequence numbers reached 2^63, which no producer can publish")
	}
	hopped := false
	// At most: one padding hop, one lossless resync, one more hop.
	for range 4 {
		pos := r.pos
		off = pos & r.mask
		w := r.ringWord(pos)
		switch {
		case w == r.seq|padBit:
			// The lap check comes first, as in docs/LAYOUT.md: a padding word
			// seen at offset 0 may be an overwrite rather than corruption.
			if r.lappedAt(pos, r.intent()) {
				if err := r.resync(true); err != nil {
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
			if off <= r.capacity-recordHead {
				n = uint64(uint32(r.ringWord(pos + 8)))
			} else {
				n = ^uint64(0) // no room for a length word: impossible record
			}
			if n > r.maxPayload || off+recordHead+align8(n) > r.capacity {
				if r.lappedAt(pos, r.intent()) {
					if err := r.resync(true); err != nil {
						return 0, 0, err
					}
					continue
				}
				return 0, 0, corrupt(pos, "message length out of range")
			}
			return off, n, nil
		default:
			if r.lappedAt(pos, r.intent()) {
				if err := r.resync(true); err != nil {
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
			// reader does; docs/BENCHMARKS.md).
			_ = r.ringWord((pos | (cacheLine - 1)) + 1)
			return 0, 0, ErrNoMessage
		}
	}
	return 0, 0, corrupt(r.pos, "no message after repeated padding or resync")
}

// valid is the seqlock re-check after the payload at r.pos was read: it
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
func (r *Reader) valid(n uint64) error {
	loadFence()
	in := r.intent()
	if r.lappedAt(r.pos, in) {
		return r.resync(false) // never nil: a lapped message record is lost
	}
	if in-r.pos < recordHead+align8(n)+8 || in < r.pos {
		return corrupt(r.pos, fmt.Sprintf("intent %d is behind a committed record, so torn reads could not be detected", in))
	}
	return nil
}

// copyPayload copies the payload of the located record into dst.
//
// Plain memmove plus loadFence, rather than one atomic load per word
// (copyWordsAtomic): BenchmarkCopyStrategy on amd64 (2-vCPU VM, Go 1.26,
// copy + fence + intent load, medians) measured 64 B: 6 ns either way;
// 1 KiB: 21 ns plain vs 79 ns atomic; 4 KiB: 62 ns vs 353 ns, because
// memmove uses wide vector loads and the atomic copy cannot. The zero-copy
// callback needs loadFence anyway, so the faster copy adds no new mechanism.
func (r *Reader) copyPayload(dst []byte, off uint64) {
	start := off + recordHead
	copyPlain(dst, r.ring[start:start+uint64(len(dst))])
}

// enter marks a read as touching the mapping; exit unmarks it and, if Close
// ran meanwhile and no waker holds the mapping, does the unmapping Close left
// to it. The fast paths are one compare-and-swap each.
func (r *Reader) enter() error {
	if r.state.CompareAndSwap(0, stBusy) {
		return nil
	}
	for {
		s := r.state.Load()
		switch {
		case s&stClosed != 0:
			return os.ErrClosed
		case s&stBusy != 0:
			return errConcurrentUse
		case r.state.CompareAndSwap(s, s|stBusy): // a waker is still finishing
			return nil
		}
	}
}

func (r *Reader) exit() {
	if r.state.CompareAndSwap(stBusy, 0) {
		return
	}
	if r.state.Add(^uint32(stBusy-1)) == stClosed {
		r.release()
	}
}

// release unmaps and then drops every pointer into the mapping: the address
// range may later be reused for the Go heap, where a stale pointer could
// make the garbage collector fail on a "bad pointer". It runs once, when the
// state becomes exactly stClosed: nothing can use the mapping any more, and
// the atomic operations on state order every earlier use before it.
func (r *Reader) release() error {
	if r.reg != nil {
		r.unregister()
	}
	unmap := r.unmap
	r.unmap, r.ring, r.ringPtr, r.intentPtr, r.headPtr, r.latestPtr = nil, nil, nil, nil, nil, nil
	r.wakeSeq, r.parked, r.sub, r.registry = nil, nil, nil, registry{}
	if unmap == nil {
		return nil
	}
	return unmap()
}

// Close releases the mapping. It is idempotent and safe to call from any
// goroutine, including while another goroutine is blocked in a read, which
// it wakes with os.ErrClosed (a read parked in the kernel is woken with a
// FUTEX_WAKE on the segment's futex word, which other waiters on the segment
// see as a spurious wake-up). Slices handed to a ReadFunc callback must not
// be used after the callback returns, so nothing refers to the mapping
// afterwards. Close does not wait: if a read is in progress, the read (or
// the wake-up Close makes) unmaps when it is done.
func (r *Reader) Close() error {
	for {
		s := r.state.Load()
		if s&stClosed != 0 {
			return nil
		}
		if s&stBusy != 0 {
			// Close and take a waker reference in one step, so that the
			// mapping outlives the FUTEX_WAKE.
			if r.state.CompareAndSwap(s, (s|stClosed)+stWaker) {
				close(r.closing)
				futexWakeAll(r.wakeSeq)
				r.dropWaker()
				return nil
			}
			continue
		}
		if r.state.CompareAndSwap(s, s|stClosed) {
			close(r.closing)
			if s != 0 {
				return nil // a waker of a cancelled read still holds the mapping; it unmaps
			}
			return r.release()
		}
	}
}

// TryRead copies the next message into buf without blocking and returns it;
// Message.Data is buf[:len]. It returns ErrNoMessage when there is none yet,
// a *LaggedError (errors.Is ErrLagged) when messages were overwritten before
// they could be read (the next call returns the oldest retained one), a
// *ShortBufferError when buf is too small (the reader does not advance), an
// error wrapping ErrCorrupt for an impossible segment, and os.ErrClosed after
// Close. It does not allocate on success or for ErrNoMessage. On any error
// the contents of buf are unspecified: a torn copy is never delivered.
func (r *Reader) TryRead(buf []byte) (Message, error) {
	if err := r.enter(); err != nil {
		return Message{}, err
	}
	if r.guard {
		return r.tryReadGuarded(buf)
	}
	m, err := r.tryRead(buf)
	r.exit()
	return m, err
}

// tryReadGuarded is tryRead, then exit, with SIGBUS turned into an error
// (WithFaultRecovery).
func (r *Reader) tryReadGuarded(buf []byte) (m Message, err error) {
	old, done := debug.SetPanicOnFault(true), false
	defer func() {
		if !done {
			err = r.fault(recover())
		}
		debug.SetPanicOnFault(old)
		r.exit()
	}()
	m, err = r.tryRead(buf)
	done = true
	return m, err
}

// fault handles a panic p recovered by a read that was touching the
// mapping. With WithFaultRecovery, every such read runs with
// debug.SetPanicOnFault(true) (restoring
// the goroutine's previous setting afterwards): if the segment file was
// truncated under the mapping, touching a lost page raises SIGBUS, which
// then becomes a panic of this goroutine instead of the death of the
// process, and fault turns it into a *HeaderError wrapping ErrTruncated.
// Any other panic (from a ReadFunc callback, say) goes on, after the read
// has ended (the caller's deferred function, with the panic recovered, has
// re-raised it here: the traceback still shows where it began).
func (r *Reader) fault(p any) error {
	// A memory fault (a runtime.Error with an address) on the mapping, or a
	// runtime error once the file is shorter than the mapping: emulators
	// (qemu-user) report SIGBUS without the address, which the runtime then
	// raises as a plain nil-dereference error.
	if re, ok := p.(runtime.Error); ok {
		f, hasAddr := re.(interface{ Addr() uintptr })
		if size, known := r.fileSize(); hasAddr && r.inMapping(f.Addr()) || known && size < r.hdr.DataOffset+r.capacity {
			return &HeaderError{Path: r.path, Err: ErrTruncated, Field: "size", Got: size, Want: r.hdr.DataOffset + r.capacity}
		}
	}
	r.exit()
	panic(p)
}

// inMapping reports whether addr lies in the segment's mappings.
func (r *Reader) inMapping(addr uintptr) bool {
	base := uintptr(r.ringPtr) - uintptr(r.hdr.DataOffset)
	if addr-base < uintptr(r.hdr.DataOffset+r.capacity) {
		return true
	}
	return r.sub != nil && addr-uintptr(r.sub) < subSize
}

// fileSize is the current size of the segment file, if it can be known.
// Called while the Reader is in use, so the descriptor is open.
func (r *Reader) fileSize() (uint64, bool) {
	var st syscall.Stat_t
	if r.fd < 0 || syscall.Fstat(r.fd, &st) != nil {
		return 0, false
	}
	return uint64(st.Size), true
}

func (r *Reader) tryRead(buf []byte) (Message, error) {
	if r.pending != nil {
		return Message{}, r.takePending()
	}
	off, n, err := r.locate()
	if err != nil {
		return Message{}, r.settle(err)
	}
	if n > uint64(len(buf)) {
		if err := r.valid(n); err != nil { // n may be torn; report the lap instead
			return Message{}, r.settle(err)
		}
		return Message{}, &ShortBufferError{Need: int(n)}
	}
	dst := buf[:n]
	r.copyPayload(dst, off)
	if err := r.valid(n); err != nil {
		return Message{}, r.settle(err)
	}
	m := Message{Seq: r.seq, Data: dst}
	r.pos += recordHead + align8(n)
	r.seq++
	if r.reg != nil {
		r.afterRead()
	}
	return m, nil
}

// takePending returns the pending error and clears it.
func (r *Reader) takePending() error {
	err := r.pending
	r.pending = nil
	return err
}

// TryReadFunc is the zero-copy form of TryRead: it calls fn with the next
// message's payload in place in the shared mapping, without blocking.
//
// payload is valid only during the call and is read-only (writing to it
// faults). It may be torn: the producer can overwrite it while fn runs. That
// is detected after fn returns, and then TryReadFunc returns a *LaggedError
// and whatever fn derived from the payload must be discarded. When
// TryReadFunc returns nil, the bytes fn saw were exactly the ones published.
// fn must not call methods of r other than Close. Errors are as for TryRead;
// fn is not called when there is no message.
func (r *Reader) TryReadFunc(fn func(seq uint64, payload []byte)) error {
	if err := r.enter(); err != nil {
		return err
	}
	if r.guard {
		return r.tryReadFuncGuarded(fn)
	}
	err := r.tryReadFunc(fn)
	r.exit()
	return err
}

func (r *Reader) tryReadFuncGuarded(fn func(seq uint64, payload []byte)) error {
	return r.guarded(func() error { return r.tryReadFunc(fn) })
}

// guarded runs op, then exit, with SIGBUS turned into an error
// (WithFaultRecovery). op does not escape, so the closures passed here stay
// on the stack.
func (r *Reader) guarded(op func() error) (err error) {
	old, done := debug.SetPanicOnFault(true), false
	defer func() {
		if !done {
			err = r.fault(recover())
		}
		debug.SetPanicOnFault(old)
		r.exit()
	}()
	err = op()
	done = true
	return err
}

func (r *Reader) tryReadFunc(fn func(seq uint64, payload []byte)) error {
	if r.pending != nil {
		return r.takePending()
	}
	off, n, err := r.locate()
	if err != nil {
		return r.settle(err)
	}
	start := off + recordHead
	fn(r.seq, r.ring[start:start+n:start+n])
	if err := r.valid(n); err != nil {
		return r.settle(err)
	}
	r.pos += recordHead + align8(n)
	r.seq++
	if r.reg != nil {
		r.afterRead()
	}
	return nil
}

// Read is the blocking form of TryRead: it waits until a message (or a lap)
// is available, ctx is done (it returns ctx.Err()) or the Reader is closed
// (os.ErrClosed), in the way the Reader's WaitStrategy says (WithWait; the
// default, WaitBlock, sleeps in the kernel until the producer publishes).
//
// While it waits it tests every LivenessInterval (100 ms) whether the
// producer is alive. Once the producer has exited or was killed, Read
// delivers whatever it committed before dying, in order, and then returns
// a *ProducerGoneError (errors.Is ErrProducerGone), within about
// LivenessInterval of the death; later calls return it again, without
// waiting, as soon as nothing is left. That error is the normal end of the
// stream (Messages ends there without an error).
//
// Like TryRead it does not allocate when a message is delivered without
// sleeping. A read that sleeps in the kernel with a cancellable ctx
// registers a context.AfterFunc for the duration of the call, which
// allocates a few small objects once per such Read.
func (r *Reader) Read(ctx context.Context, buf []byte) (Message, error) {
	w := waiter{ctx: ctx}
	defer w.done()
	for {
		m, err := r.TryRead(buf)
		if err != ErrNoMessage {
			return m, err
		}
		if err := r.pause(&w); err != nil {
			if _, gone := err.(*ProducerGoneError); gone {
				// What the producer published before it died is still
				// delivered, in order: look once more now that it is known
				// to be gone.
				if m, err := r.TryRead(buf); err != ErrNoMessage {
					return m, err
				}
				if err := r.checkEndGuarded(); err != nil {
					return Message{}, err
				}
			}
			return Message{}, err
		}
	}
}

// ReadFunc is the blocking form of TryReadFunc, with the waiting of Read.
func (r *Reader) ReadFunc(ctx context.Context, fn func(seq uint64, payload []byte)) error {
	w := waiter{ctx: ctx}
	defer w.done()
	for {
		err := r.TryReadFunc(fn)
		if err != ErrNoMessage {
			return err
		}
		if err := r.pause(&w); err != nil {
			if _, gone := err.(*ProducerGoneError); gone {
				if err := r.TryReadFunc(fn); err != ErrNoMessage {
					return err
				}
				if err := r.checkEndGuarded(); err != nil {
					return err
				}
			}
			return err
		}
	}
}

// checkEndGuarded runs checkEnd on the mapping, as a read does: nil after
// Close (the caller reports that), and a SIGBUS from a truncated file
// becomes an error.
func (r *Reader) checkEndGuarded() error {
	if r.enter() != nil {
		return nil
	}
	if !r.guard {
		defer r.exit()
		return r.checkEnd()
	}
	return r.guarded(r.checkEnd)
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
	next, ok := r.endOfMessage(l, last, in)
	if !ok {
		return corrupt(l, "the producer is gone and latest does not point at a complete message")
	}
	if r.seq == last+1 && r.pos == next {
		return nil
	}
	if r.seq == last+2 {
		at := next
		if r.ringWord(at) == (last+1)|padBit && at&r.mask != 0 {
			at = at - at&r.mask + r.capacity
		}
		if w := r.ringWord(at); w == last+1 {
			if end, ok := r.endOfMessage(at, w, in); ok && end == r.pos {
				return nil
			}
		}
	}
	if r.seq <= last {
		return corrupt(r.pos, "the producer is gone, but the reader cannot reach the messages it published last")
	}
	return corrupt(r.pos, "the producer is gone, and the reader received records past the last one it published")
}

// endOfMessage returns where the message record at p with commit word seq
// ends, if it is a complete message the producer announced: a sequence
// number, a length that fits, and intent covering it and the word after it
// without having lapped it.
func (r *Reader) endOfMessage(p, seq, in uint64) (uint64, bool) {
	if seq == 0 || seq >= padBit {
		return 0, false
	}
	off := p & r.mask
	if off > r.capacity-recordHead {
		return 0, false
	}
	n := uint64(uint32(r.ringWord(p + 8)))
	if n > r.maxPayload || off+recordHead+align8(n) > r.capacity {
		return 0, false
	}
	end := p + recordHead + align8(n)
	return end, end+8 <= in && !r.lappedAt(p, in)
}
