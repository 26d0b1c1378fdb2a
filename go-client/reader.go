package shmcast

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
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

func (r *Reader) tryRead(buf []byte) (Message, error) {
	if r.pending != nil {
		return Message{}, r.takePending()
	}
	off, n, err := r.peek()
	if err != nil {
		return Message{}, r.settle(err)
	}
	if n > uint64(len(buf)) {
		if err := r.confirm(n); err != nil { // n may be torn; report the lap instead
			return Message{}, r.settle(err)
		}
		return Message{}, &ShortBufferError{Need: int(n)}
	}
	dst := buf[:n]
	r.copyPayload(dst, off)
	if err := r.confirm(n); err != nil {
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

func (r *Reader) tryReadFunc(fn func(seq uint64, payload []byte)) error {
	if r.pending != nil {
		return r.takePending()
	}
	off, n, err := r.peek()
	if err != nil {
		return r.settle(err)
	}
	start := off + recordHead
	fn(r.seq, r.ring[start:start+n:start+n])
	if err := r.confirm(n); err != nil {
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
