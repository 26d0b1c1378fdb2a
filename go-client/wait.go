package shmcast

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unsafe"
)

// WaitStrategy is how a blocking read (Read, ReadFunc, Messages) waits while
// there is no new message. The non-blocking reads never wait.
type WaitStrategy int

const (
	// WaitBlock (the default) polls briefly, then sleeps in the kernel on the
	// segment's futex word until the producer publishes (docs/LAYOUT.md,
	// "Waiting and waking"). A parked read holds an OS thread and no CPU. It
	// needs write access to the segment file to register as parked (see
	// [Reader.CanPark]); without it, the futex wait uses timeouts growing from
	// 20 µs to the poll interval (1 ms), so a message is noticed within about
	// that long.
	WaitBlock WaitStrategy = iota
	// WaitSpin polls back to back: the lowest latency, one CPU fully busy.
	WaitSpin
	// WaitYield polls with runtime.Gosched between polls: a busy CPU, but
	// other goroutines get to run.
	WaitYield
	// WaitBackoff spins briefly, then yields, then sleeps 20 µs doubling up to
	// the poll interval (WithPollInterval, default 1 ms) between polls. It
	// never writes to the segment and makes no futex calls.
	WaitBackoff
)

var waitNames = [...]string{WaitBlock: "block", WaitSpin: "spin", WaitYield: "yield", WaitBackoff: "backoff"}

// String returns the name ParseWaitStrategy accepts ("block", "spin",
// "yield" or "backoff"), as the commands' --wait flags spell it.
func (s WaitStrategy) String() string {
	if s >= 0 && int(s) < len(waitNames) {
		return waitNames[s]
	}
	return fmt.Sprintf("WaitStrategy(%d)", int(s))
}

// ParseWaitStrategy parses "spin", "yield", "backoff" or "block".
func ParseWaitStrategy(s string) (WaitStrategy, error) {
	for i, name := range waitNames {
		if s == name {
			return WaitStrategy(i), nil
		}
	}
	return 0, fmt.Errorf("shmcast: unknown wait strategy %q (want spin, yield, backoff or block)", s)
}

const (
	// spinPolls: empty polls a blocking read makes before it yields
	// (WaitBackoff) or parks (WaitBlock). Together with the yields below it
	// is a few microseconds, less than a futex round trip.
	spinPolls = 64
	// yieldPolls: polls with runtime.Gosched in WaitBackoff and WaitBlock
	// before they sleep.
	yieldPolls = 64
	// spinCheckPolls: WaitSpin looks at ctx and Close every this many polls,
	// so the poll loop stays tight.
	spinCheckPolls = 64

	// parkedRelay is the bit a parking reader sets in parked: "a reader that
	// relays wake-ups may be parked" (the Rust reader's PARKED_RELAY).
	parkedRelay = 2
	// relayFanout: waiters a woken reader wakes in turn.
	relayFanout = 2
	// offWakeThrottle: u32, subscriber area; non-zero while the producer
	// makes no wake-up calls (docs/LAYOUT.md, "Waiting and waking").
	offWakeThrottle = 0x1010

	minSleep   = 20 * time.Microsecond // first sleep of WaitBackoff and of a read-only futex wait
	defPollMax = time.Millisecond      // longest such sleep, unless WithPollInterval
)

// Time bounds of the blocking reads.
const (
	// MaxParkSlice is the longest single futex wait of a parked read. A
	// parked read is woken at once by a publish, by Close and by the
	// cancellation of its context; this bound only matters when Close or the
	// cancellation races with the read entering the kernel (the wake-up then
	// comes too early to be seen), and it makes an idle parked read wake 20
	// times a second to look again.
	MaxParkSlice = 50 * time.Millisecond

	// LivenessInterval is how often a blocking read that finds no message
	// tests whether the producer is still alive (docs/LAYOUT.md, "Producer
	// liveness"; the Rust reader's LIVENESS_INTERVAL). An idle read returns
	// ErrProducerGone (a Messages loop ends) within about this long of the
	// producer's death (plus
	// one sleep of the wait strategy, at most 1 ms unless WithPollInterval
	// says more), once it has delivered everything published before it.
	LivenessInterval = 100 * time.Millisecond

	// ThrottledWait is the longest single futex wait of a parked read while
	// the producer has throttled its wake-up calls (the segment's
	// wake_throttle is non-zero: some process kept storing parked without
	// sleeping). A parked read then notices a message within about this long
	// without being woken. The Rust reader's THROTTLED_WAIT.
	ThrottledWait = time.Millisecond
)

// waiter is the state of one blocking read's wait, on the caller's stack.
type waiter struct {
	ctx    context.Context
	polls  int           // empty polls so far
	sleep  time.Duration // next sleep of WaitBackoff or of a read-only futex wait
	armed  bool          // wake_seq was loaded into v (and parked stored) since the last poll
	unsure bool          // the membarrier call of this arming failed: do not sleep long
	v      uint32
	stop   func() bool // unregisters the context.AfterFunc, once registered
	// nextCheck is when the next liveness test is due; zero until the
	// first empty poll that reads the clock.
	nextCheck time.Time
}

// done releases what the wait registered.
func (w *waiter) done() {
	if w.stop != nil {
		w.stop()
	}
}

// pause is called after an empty poll. It returns nil to poll again, or the
// error that ends the read: ctx.Err(), os.ErrClosed, or a
// *ProducerGoneError (the caller then polls once more before reporting it).
func (r *Reader) pause(w *waiter) error {
	w.polls++
	if r.fd >= 0 {
		// Reading the clock costs about as much as a poll: while polling
		// back to back, look only every spinCheckPolls polls.
		polling := r.strategy == WaitSpin || r.strategy == WaitYield || w.polls <= spinPolls+yieldPolls
		if !polling || w.polls%spinCheckPolls == 0 || r.dead {
			if err := r.checkLiveness(w); err != nil {
				return err
			}
		}
	}
	switch r.strategy {
	case WaitSpin:
		if w.polls%spinCheckPolls != 0 {
			return nil
		}
		return r.interrupted(w.ctx)
	case WaitYield:
		if err := r.interrupted(w.ctx); err != nil {
			return err
		}
		runtime.Gosched()
		return nil
	}
	if w.polls <= spinPolls {
		if w.polls%spinCheckPolls == 0 {
			return r.interrupted(w.ctx)
		}
		return nil
	}
	if w.polls <= spinPolls+yieldPolls {
		if err := r.interrupted(w.ctx); err != nil {
			return err
		}
		runtime.Gosched()
		return nil
	}
	if w.sleep == 0 {
		w.sleep = min(minSleep, r.pollMax)
	}
	if r.strategy == WaitBackoff {
		return r.sleepBackoff(w)
	}
	return r.park(w)
}

// checkLiveness tests the producer's lock when a test is due: every
// r.liveEvery (LivenessInterval) of an idle blocking read, the first one
// that long after the read found nothing, and at once when an earlier read
// already found the producer gone.
func (r *Reader) checkLiveness(w *waiter) error {
	if r.dead {
		return r.producerGone()
	}
	now := time.Now()
	if w.nextCheck.IsZero() {
		w.nextCheck = now.Add(r.liveEvery)
		return nil
	}
	if now.Before(w.nextCheck) {
		return nil
	}
	w.nextCheck = now.Add(r.liveEvery)
	return r.producerGone()
}

// untilCheck caps a sleep of d so that it does not outlast the next
// liveness test.
func (r *Reader) untilCheck(w *waiter, d time.Duration) time.Duration {
	if r.fd < 0 || w.nextCheck.IsZero() {
		return d
	}
	return max(min(d, time.Until(w.nextCheck)), time.Microsecond)
}

// interrupted reports a done context or a closed Reader without waiting.
func (r *Reader) interrupted(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.closing:
		return os.ErrClosed
	default:
		return nil
	}
}

// sleepBackoff sleeps on the Reader's reusable timer. It never touches the
// mapping.
func (r *Reader) sleepBackoff(w *waiter) error {
	d := r.untilCheck(w, w.sleep)
	w.sleep = min(2*w.sleep, r.pollMax)
	if r.timer == nil {
		r.timer = time.NewTimer(d)
	} else {
		r.timer.Reset(d) // Go ≥ 1.23: Reset also drops a stale expiry
	}
	select {
	case <-r.timer.C:
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	case <-r.closing:
		return os.ErrClosed
	}
}

// park runs the reader side of docs/LAYOUT.md "Waiting and waking", one
// step per empty poll. First call: load wake_seq into v and, if the Reader
// can park, store 1 to parked; the caller then polls again (step 4, the
// re-check that makes a lost wake-up impossible: Go's atomics are
// sequentially consistent, so the store and the poll's loads are the
// fence). Second call: FUTEX_WAIT(&wake_seq, v) with a bounded timeout; any
// return leads back to polling.
//
// Both steps touch the mapping, so they run marked busy, like a read: Close
// then leaves the unmapping to this goroutine and wakes it with a
// FUTEX_WAKE made while the mapping is still there (see wakeBusy).
func (r *Reader) park(w *waiter) (err error) {
	if err := r.enter(); err != nil {
		return err
	}
	old, done := debug.SetPanicOnFault(r.guard), false
	defer func() {
		if !done {
			err = r.fault(recover())
		}
		debug.SetPanicOnFault(old)
		r.exit()
	}()
	if !w.armed {
		w.v = atomic.LoadUint32(r.wakeSeq)
		w.unsure = false
		if r.parked != nil {
			// A relaying reader (step 2): the producer then wakes one waiter,
			// and each woken reader wakes relayFanout more (see relay).
			atomic.OrUint32(r.parked, parkedRelay)
			// wake_barrier = 1: the producer publishes without a fence; this
			// call runs it on the producer's CPU. If it fails, the producer may
			// miss parked, so the wait below is kept short.
			w.unsure = r.membarrier && !membarrierGlobal()
		}
		w.armed = true
		done = true
		return nil
	}
	w.armed = false
	d, err := r.parkTimeout(w)
	if err == nil && w.stop == nil && w.ctx.Done() != nil {
		// Cancellation must interrupt the futex wait: the AfterFunc makes a
		// FUTEX_WAKE on the word. It is registered here, once per Read that
		// really sleeps, so a Read that finds its message never pays for it.
		w.stop = context.AfterFunc(w.ctx, r.cancelWake)
	}
	// Checked after enter (busy is set): a Close or a cancellation that
	// comes later sees busy and wakes the futex. One that lands between this
	// check and the kernel's queueing of the wait is lost, which the timeout
	// (at most MaxParkSlice) bounds.
	if err == nil {
		err = r.interrupted(w.ctx)
	}
	if err == nil {
		// Loaded after v: a v that includes the producer's throttle
		// announcement sees the throttle (step 5).
		if atomic.LoadUint32(r.wakeThrottle()) != 0 {
			d = min(d, ThrottledWait)
		}
		futexWaitOn(r.wakeSeq, w.v, d)
		relay(r.wakeSeq, w.v)
	}
	done = true
	return err
}

// wakeThrottle is the segment's wake_throttle word, next to wake_seq in the
// same mapping.
func (r *Reader) wakeThrottle() *uint32 {
	return (*uint32)(unsafe.Add(unsafe.Pointer(r.wakeSeq), offWakeThrottle-offWakeSeq))
}

// relay is reader step 7 of docs/LAYOUT.md "Waiting and waking": after any
// return from a wait on wake_seq with value v, a reader that finds the word
// changed passes the wake-up on to relayFanout more waiters, before it
// reads. The producer wakes only one waiter of a segment where every
// parked reader relays, so the cost of waking N readers is spread over them
// instead of falling on the producer.
func relay(wakeSeq *uint32, v uint32) {
	if atomic.LoadUint32(wakeSeq) != v {
		futexWakeN(wakeSeq, relayFanout)
	}
}

// parkTimeout is the length of the next futex wait: MaxParkSlice for a
// parked reader, the growing backoff for one that cannot park, and never
// past ctx's deadline.
func (r *Reader) parkTimeout(w *waiter) (time.Duration, error) {
	d := r.parkSlice
	if w.unsure {
		d = r.pollMax
	}
	if r.parked == nil {
		d = w.sleep
		w.sleep = min(2*w.sleep, r.pollMax)
	}
	d = r.untilCheck(w, d)
	if dl, ok := w.ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			if err := w.ctx.Err(); err != nil {
				return 0, err
			}
			return 0, context.DeadlineExceeded // the context's own timer has not fired yet
		}
		d = min(d, left)
	}
	return d, nil
}

// wakeBusy makes a FUTEX_WAKE on wake_seq if a read (which may be parked)
// is in progress, holding a stWaker reference so that the mapping cannot be
// unmapped under the system call. It wakes every waiter on the segment,
// other processes' included; LAYOUT.md allows such spurious wake-ups.
func (r *Reader) wakeBusy() {
	for {
		s := r.state.Load()
		if s&stBusy == 0 {
			return // nothing is parked, and the mapping may already be gone
		}
		if r.state.CompareAndSwap(s, s+stWaker) {
			break
		}
	}
	futexWakeAll(r.wakeSeq)
	r.dropWaker()
}

// dropWaker releases a stWaker reference; the last user of a closed Reader
// unmaps.
func (r *Reader) dropWaker() {
	if r.state.Add(^uint32(stWaker-1)) == stClosed {
		r.release()
	}
}
