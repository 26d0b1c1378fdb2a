package shmcast

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// Test hooks, as options.
func withReadOnly() Option                 { return func(o *options) { o.readOnly = true } }
func withParkSlice(d time.Duration) Option { return func(o *options) { o.parkSlice = d } }

// longPark makes a parked read wait for a minute per futex call, so that a
// test finishing in seconds proves the read was woken (by a publish, Close
// or a cancellation) rather than by its own timeout.
var longPark = withParkSlice(time.Minute)

var allStrategies = []WaitStrategy{WaitSpin, WaitYield, WaitBackoff, WaitBlock}

func TestWaitStrategyNames(t *testing.T) {
	for _, s := range allStrategies {
		got, err := ParseWaitStrategy(s.String())
		if err != nil || got != s {
			t.Errorf("%v: parsed back as %v, %v", s, got, err)
		}
	}
	if _, err := ParseWaitStrategy("sleep"); err == nil {
		t.Error("parsed an unknown strategy")
	}
	if s := WaitStrategy(9).String(); s != "WaitStrategy(9)" {
		t.Errorf("String of an invalid value: %q", s)
	}
	var zero options
	if zero.wait != WaitBlock {
		t.Error("the default strategy is not WaitBlock")
	}
	_, path := segtest.Temp(t, 4096)
	if _, err := OpenPath(path, WithWait(WaitStrategy(-1))); err == nil {
		t.Error("opened with an invalid strategy")
	}
}

// follow reads with Read until NextSeq passes last, checking that every
// message has the next sequence number and the generated payload.
func follow(ctx context.Context, r *Reader, last uint64) (received, missed uint64, err error) {
	buf := make([]byte, r.MaxPayload())
	for r.NextSeq() <= last {
		want := r.NextSeq()
		m, err := r.Read(ctx, buf)
		var lag *LaggedError
		switch {
		case errors.As(err, &lag):
			missed += lag.Missed
		case err != nil:
			return received, missed, err
		case m.Seq != want || !VerifyPattern(m.Seq, m.Data):
			return received, missed, fmt.Errorf("seq %d (want %d): %d bytes do not match the pattern", m.Seq, want, len(m.Data))
		default:
			received++
		}
	}
	return received, missed, nil
}

// publishWithPauses publishes n messages of 1-300 bytes, pausing now and
// then long enough for blocking readers to park.
func publishWithPauses(w *segtest.Writer, n int, rng *rand.Rand) {
	for i := range n {
		w.PublishPattern(1 + rng.IntN(300))
		switch {
		case i%100 == 99:
			time.Sleep(2 * time.Millisecond)
		case rng.IntN(8) == 0:
			time.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
		case rng.IntN(4) == 0:
			runtime.Gosched()
		}
	}
}

// TestEachStrategyDelivers: every strategy receives a whole checksummed
// stream with pauses. The ring holds the whole stream, so nothing may be
// missed. The parked reader must have been woken by the producer: its futex
// waits last a minute, and the producer made FUTEX_WAKE calls.
func TestEachStrategyDelivers(t *testing.T) {
	const n = 1500
	for _, s := range allStrategies {
		t.Run(s.String(), func(t *testing.T) {
			w, path := segtest.Temp(t, 1<<20)
			r, err := OpenPath(path, WithStart(Beginning), WithWait(s), longPark)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.WaitStrategy() != s || r.CanPark() != (s == WaitBlock) {
				t.Fatalf("WaitStrategy() %v, CanPark() %v", r.WaitStrategy(), r.CanPark())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			published := make(chan struct{})
			go func() {
				defer close(published)
				publishWithPauses(w, n, rand.New(rand.NewPCG(1, uint64(s))))
			}()
			received, missed, err := follow(ctx, r, n)
			<-published
			if err != nil || received != n || missed != 0 {
				t.Fatalf("received %d missed %d of %d: %v", received, missed, n, err)
			}
			if s == WaitBlock && w.Wakes() == 0 {
				t.Error("the parked reader was never woken by the producer")
			}
			if s != WaitBlock && (w.Wakes() != 0 || w.Parked() != 0) {
				t.Errorf("a %v reader registered as parked (wakes %d)", s, w.Wakes())
			}
			t.Logf("%v: producer FUTEX_WAKE calls: %d", s, w.Wakes())
		})
	}
}

// futexWaiter reports whether some thread of this process is blocked in
// futex(2) on addr, from /proc/self/task/*/syscall. ok is false when that
// cannot be told (no such files, or an emulator that shows the host's).
func futexWaiter(addr unsafe.Pointer) (found, ok bool) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return false, false
	}
	// Idle runtime threads sleep in futex(2) too: if no thread at all is
	// seen in it, the file shows something else (qemu: the host's calls).
	anyFutex := strconv.Itoa(syscall.SYS_FUTEX) + " "
	want := anyFutex + fmt.Sprintf("%#x", uintptr(addr)) + " "
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
		if err != nil {
			continue
		}
		ok = ok || strings.HasPrefix(string(b), anyFutex)
		if strings.HasPrefix(string(b), want) {
			return true, true
		}
	}
	return false, ok
}

// waitParked waits until r (whose read is running in another goroutine)
// has stored parked and, where /proc can tell, is asleep in FUTEX_WAIT.
func waitParked(t *testing.T, w *segtest.Writer, r *Reader, addr unsafe.Pointer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.CanPark() && w.Parked() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reader did not store parked within 5 s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	for time.Now().Before(deadline) {
		found, ok := futexWaiter(addr)
		if found {
			return
		}
		if !ok {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	// Under qemu /proc shows host system calls: settle for a pause.
	t.Logf("could not see the reader in FUTEX_WAIT; going on after 20 ms")
	time.Sleep(20 * time.Millisecond)
}

// TestBurstAfterIdleWakesAll: several parked readers, a long idle spell,
// then a burst: every reader must be woken (futex waits of a minute, so
// only the producer's wake-up can do it) and receive every message.
func TestBurstAfterIdleWakesAll(t *testing.T) {
	const readers, burst = 4, 400
	w, path := segtest.Temp(t, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct{ received, missed uint64 }
	results := make(chan result, readers)
	errs := make(chan error, readers)
	var first *Reader
	for i := range readers {
		r, err := OpenPath(path, WithStart(Beginning), longPark)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if !r.CanPark() {
			t.Fatal("a reader of a writable file cannot park")
		}
		if i == 0 {
			first = r
		}
		go func() {
			received, missed, err := follow(ctx, r, burst)
			if err != nil {
				errs <- err
				return
			}
			results <- result{received, missed}
		}()
	}
	waitParked(t, w, first, unsafe.Pointer(first.wakeSeq))
	time.Sleep(300 * time.Millisecond)
	if w.Wakes() != 0 {
		t.Fatalf("%d wake-ups before anything was published", w.Wakes())
	}
	start := time.Now()
	for range burst {
		w.PublishPattern(100)
	}
	for range readers {
		select {
		case res := <-results:
			if res.received != burst || res.missed != 0 {
				t.Errorf("received %d missed %d of %d", res.received, res.missed, burst)
			}
		case err := <-errs:
			t.Error(err)
		}
	}
	t.Logf("burst of %d read by %d parked readers in %v, %d FUTEX_WAKE calls", burst, readers, time.Since(start), w.Wakes())
	if w.Wakes() == 0 {
		t.Error("no FUTEX_WAKE although readers were parked")
	}
}

// TestNoWakeWithoutParkedReaders: the producer makes no futex call while
// no reader is parked, and does after one parked.
func TestNoWakeWithoutParkedReaders(t *testing.T) {
	w, path := segtest.Temp(t, 1<<16)
	spin, err := OpenPath(path, WithStart(Beginning), WithWait(WaitSpin))
	if err != nil {
		t.Fatal(err)
	}
	defer spin.Close()
	ro, err := OpenPath(path, WithStart(Beginning), withReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 2)
	for _, r := range []*Reader{spin, ro} {
		go func() { _, _, err := follow(ctx, r, 200); done <- err }()
	}
	for range 200 {
		w.PublishPattern(50)
		time.Sleep(20 * time.Microsecond)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if w.Wakes() != 0 || w.Parked() != 0 {
		t.Fatalf("%d wake-ups (parked %d) with no parked reader", w.Wakes(), w.Parked())
	}

	block, err := OpenPath(path, WithStart(Next), longPark)
	if err != nil {
		t.Fatal(err)
	}
	defer block.Close()
	go func() { _, _, err := follow(ctx, block, 201); done <- err }()
	waitParked(t, w, block, unsafe.Pointer(block.wakeSeq))
	v := w.WakeSeq()
	w.PublishPattern(50)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.Wakes() != 1 || w.WakeSeq() != v+1 || w.Parked() != 0 {
		t.Fatalf("after one publish to a parked reader: %d wake-ups, wake_seq %d -> %d, parked %d",
			w.Wakes(), v, w.WakeSeq(), w.Parked())
	}
}

// TestReadOnlyReaderBlock: a reader without write access to the file never
// writes parked, waits with bounded futex timeouts, and still receives
// every message.
func TestReadOnlyReaderBlock(t *testing.T) {
	const n = 500
	w, path := segtest.Temp(t, 1<<20)
	r, err := OpenPath(path, WithStart(Beginning), withReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.CanPark() || r.WaitStrategy() != WaitBlock {
		t.Fatalf("CanPark() %v, WaitStrategy() %v", r.CanPark(), r.WaitStrategy())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	published := make(chan struct{})
	go func() {
		defer close(published)
		publishWithPauses(w, n, rand.New(rand.NewPCG(2, 2)))
	}()
	received, missed, err := follow(ctx, r, n)
	<-published // the writer is used again below, from this goroutine
	if err != nil || received != n || missed != 0 {
		t.Fatalf("received %d missed %d of %d: %v", received, missed, n, err)
	}
	if w.Parked() != 0 || w.Wakes() != 0 {
		t.Fatalf("the read-only reader registered as parked (wakes %d)", w.Wakes())
	}
	// Idle latency: a message published while the reader sleeps is seen
	// after at most one capped futex timeout (1 ms), plus scheduling. Only
	// a generous bound is asserted; the figure is logged.
	var worst time.Duration
	buf := make([]byte, 100)
	for range 10 {
		got := make(chan time.Time, 1)
		go func() {
			if _, err := r.Read(ctx, buf); err == nil {
				got <- time.Now()
			}
			close(got)
		}()
		time.Sleep(5 * time.Millisecond) // past the spin, at the 1 ms cap
		sent := time.Now()
		w.PublishPattern(10)
		at, ok := <-got
		if !ok {
			t.Fatal("read failed")
		}
		worst = max(worst, at.Sub(sent))
	}
	t.Logf("read-only reader: worst of 10 idle wake-ups %v", worst)
	if worst > time.Second {
		t.Errorf("a read-only reader took %v to notice a message", worst)
	}
}

// TestReadDeadline: a deadline ends a parked read (and a read-only one)
// with DeadlineExceeded in bounded time, with minute-long futex waits.
func TestReadDeadline(t *testing.T) {
	_, path := segtest.Temp(t, 4096)
	for _, ro := range []bool{false, true} {
		opts := []Option{longPark}
		if ro {
			opts = append(opts, withReadOnly())
		}
		r, err := OpenPath(path, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		start := time.Now() // before the deadline is set, so elapsed >= 30 ms
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err = r.Read(ctx, make([]byte, 100))
		elapsed := time.Since(start)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read-only %v: got %v, want DeadlineExceeded", ro, err)
		}
		t.Logf("read-only %v: 30 ms deadline returned after %v", ro, elapsed)
		if elapsed < 30*time.Millisecond || elapsed > 2*time.Second {
			t.Errorf("read-only %v: 30 ms deadline returned after %v", ro, elapsed)
		}
	}
}

// TestCancelParkedRead: cancelling the context of a read asleep in the
// kernel returns context.Canceled promptly: the futex wait would last a
// minute, so this measures the AfterFunc's FUTEX_WAKE.
func TestCancelParkedRead(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	for _, ro := range []bool{false, true} {
		opts := []Option{longPark}
		if ro {
			opts = append(opts, withReadOnly())
		}
		r, err := OpenPath(path, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			err := r.ReadFunc(ctx, func(uint64, []byte) {})
			done <- err
		}()
		waitParked(t, w, r, unsafe.Pointer(r.wakeSeq))
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			t.Logf("read-only %v: cancellation returned after %v", ro, time.Since(start))
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
		case <-time.After(time.Second):
			t.Fatalf("read-only %v: cancelled read still blocked after 1 s", ro)
		}
	}
}

// TestCloseWakesParkedRead: Close while a read is asleep in the kernel wakes
// it with os.ErrClosed promptly, and both mappings are unmapped afterwards
// (by the woken read, not under it).
func TestCloseWakesParkedRead(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	r, err := OpenPath(path, longPark)
	if err != nil {
		t.Fatal(err)
	}
	countMaps := func() int {
		maps, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Skip(err)
		}
		return bytes.Count(maps, []byte(path))
	}
	if n := countMaps(); n != 3 { // the writer's, the reader's segment and subscriber page
		t.Logf("%d mappings of the segment before Close", n)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(context.Background(), make([]byte, 100))
		done <- err
	}()
	waitParked(t, w, r, unsafe.Pointer(r.wakeSeq))
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Logf("Close woke the parked read after %v", time.Since(start))
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("got %v, want os.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not wake the parked read within 1 s")
	}
	for range 100 {
		if countMaps() == 1 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d mappings of the segment remain after Close", countMaps())
}

// TestCloseAndCancelRace closes and cancels reads at random moments of
// their wait (spinning, storing parked, asleep), in random order: every
// read must end with os.ErrClosed or context.Canceled within the park
// slice, and the race detector and the unmapping must stay quiet.
func TestCloseAndCancelRace(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range 60 {
		r, err := OpenPath(path, WithStart(Next))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := r.Read(ctx, make([]byte, 100))
			done <- err
		}()
		time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); cancel() }()
		go func() { defer wg.Done(); r.Close() }()
		if i%5 == 0 {
			w.PublishPattern(10) // sometimes a message and a wake-up race in too
		}
		wg.Wait()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, context.Canceled) {
				t.Fatalf("iteration %d: %v", i, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("iteration %d: read still blocked 2 s after Close and cancel", i)
		}
	}
}

// TestNoLostWakeups: a writer publishes one message at a time, each after
// a random tiny pause, and then waits for every blocking reader to have
// read it, so that every publish is the last one a reader may be waiting
// for, landing anywhere in its spin, its store of parked, its re-check or
// its futex wait. The futex waits last a minute, so a lost wake-up leaves a
// reader asleep: the writer gives up after 2 s and the test fails. At the
// end received + missed == published for each reader (and nothing is
// missed: the ring holds far more than one message).
func TestNoLostWakeups(t *testing.T) {
	published := 3000
	switch {
	case testing.Short():
		published = 500
	case raceEnabled: // about 10 times slower
		published = 1000
	}
	const readers = 3
	w, path := segtest.Temp(t, 1<<16)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		received, missed uint64
		err              error
	}
	results := make(chan result, readers)
	var progress [readers]atomic.Uint64
	for i := range readers {
		r, err := OpenPath(path, WithStart(Beginning), longPark)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		go func() {
			var res result
			buf := make([]byte, r.MaxPayload())
			for r.NextSeq() <= uint64(published) {
				m, err := r.Read(ctx, buf)
				var lag *LaggedError
				switch {
				case errors.As(err, &lag):
					res.missed += lag.Missed
				case err != nil:
					res.err = err
				case !VerifyPattern(m.Seq, m.Data):
					res.err = fmt.Errorf("seq %d: payload does not match", m.Seq)
				default:
					res.received++
				}
				if res.err != nil {
					break
				}
				progress[i].Store(r.NextSeq() - 1)
			}
			results <- res
		}()
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for i := 1; i <= published; i++ {
		switch rng.IntN(8) {
		case 7:
			// Now and then, publish only once some reader has registered as
			// parked, so that the wake-up path is exercised however slow the
			// machine (under qemu the short pauses alone may never let a
			// reader get past its spin phase).
			for end := time.Now().Add(time.Second); w.Parked() == 0 && time.Now().Before(end); {
				time.Sleep(50 * time.Microsecond)
			}
		case 0:
			time.Sleep(time.Duration(rng.IntN(100)) * time.Microsecond)
		case 1:
			runtime.Gosched()
		default: // a busy pause of up to ~40 µs, across the readers' spin and park
			for end := time.Now().Add(time.Duration(rng.IntN(40_000))); time.Now().Before(end); {
			}
		}
		w.PublishPattern(1 + rng.IntN(200))
		deadline := time.Now().Add(2 * time.Second)
		for j := range readers {
			for progress[j].Load() < uint64(i) {
				if time.Now().After(deadline) {
					t.Fatalf("message %d: reader %d still asleep after 2 s: lost wake-up (%d FUTEX_WAKE calls so far)", i, j, w.Wakes())
				}
				runtime.Gosched()
			}
		}
	}
	for range readers {
		res := <-results
		if res.err != nil || res.received != uint64(published) || res.missed != 0 {
			t.Errorf("received %d + missed %d != %d: %v", res.received, res.missed, published, res.err)
		}
	}
	t.Logf("%d messages, %d FUTEX_WAKE calls", published, w.Wakes())
	if w.Wakes() == 0 {
		t.Error("the readers never parked: the test did not test anything")
	}
}

func procThreads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no Threads: line in /proc/self/status")
	return 0
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestParkedReadsHoldThreads checks the documented cost model: N goroutines
// parked in Read hold about N OS threads and no CPU; one publish wakes them
// all; cancellation releases them all promptly.
func TestParkedReadsHoldThreads(t *testing.T) {
	const n = 32
	w, path := segtest.Temp(t, 1<<16)
	before := procThreads(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		seq uint64
		err error
	}
	first := make(chan result, n)
	second := make(chan error, n)
	words := map[string]bool{} // "futex-number address " of each reader's wake_seq
	for range n {
		r, err := OpenPath(path, WithStart(Next))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		words[fmt.Sprintf("%d %#x ", syscall.SYS_FUTEX, uintptr(unsafe.Pointer(r.wakeSeq)))] = true
		go func() {
			buf := make([]byte, 100)
			m, err := r.Read(ctx, buf)
			first <- result{m.Seq, err}
			if err == nil {
				_, err = r.Read(ctx, buf)
			}
			second <- err
		}()
	}
	// Threads asleep in futex(2) on one of the readers' words, or -1 when
	// /proc cannot tell (qemu shows the host's system calls).
	blocked := func() int {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return -1
		}
		count, anyFutex := 0, false
		for _, task := range tasks {
			b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
			if err != nil {
				continue
			}
			f := strings.Fields(string(b))
			if len(f) < 2 || f[0] != strconv.Itoa(syscall.SYS_FUTEX) {
				continue
			}
			anyFutex = true
			if words[f[0]+" "+f[1]+" "] {
				count++
			}
		}
		if !anyFutex {
			return -1
		}
		return count
	}
	// Wait until all n are asleep, or nothing changed for 200 ms. Each
	// parked read must hold its own thread; at least n/2 is asserted so
	// that a slow start on a loaded machine does not fail the test. Where
	// /proc cannot tell, the process's thread count must have grown by n/2
	// instead (that undercounts when the runtime had idle threads to reuse).
	deadline := time.Now().Add(5 * time.Second)
	measure := func() int {
		if b := blocked(); b >= 0 {
			return b
		}
		return procThreads(t) - before
	}
	got, changed := measure(), time.Now()
	for got < n && time.Since(changed) < 200*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		if now := measure(); now != got {
			got, changed = now, time.Now()
		}
	}
	t.Logf("threads: %d before, %d with %d parked reads; %d threads seen in FUTEX_WAIT on the readers' words (-1: cannot tell)",
		before, procThreads(t), n, blocked())
	if got < n/2 {
		t.Fatalf("%d parked reads hold only %d threads", n, got)
	}
	time.Sleep(50 * time.Millisecond) // let them all settle in the kernel
	cpu0, wall0 := cpuTime(t), time.Now()
	time.Sleep(500 * time.Millisecond)
	cpu, wall := cpuTime(t)-cpu0, time.Since(wall0)
	t.Logf("CPU while %d reads were parked: %v in %v", n, cpu, wall)
	if cpu > wall/2 { // one spinning reader alone would use a whole CPU (= wall)
		t.Errorf("parked reads used %v of CPU in %v", cpu, wall)
	}
	start := time.Now()
	w.PublishPattern(10)
	for range n {
		select {
		case res := <-first:
			if res.err != nil || res.seq != 1 {
				t.Fatalf("got seq %d, %v", res.seq, res.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("not every parked read received the message within 5 s")
		}
	}
	t.Logf("one publish delivered to %d parked reads in %v (%d FUTEX_WAKE calls)", n, time.Since(start), w.Wakes())
	time.Sleep(20 * time.Millisecond) // let them park again
	start = time.Now()
	cancel()
	for range n {
		select {
		case err := <-second:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("cancellation did not release every parked read within 2 s")
		}
	}
	t.Logf("cancellation released %d parked reads in %v", n, time.Since(start))
}

// TestParkedReadAllocs measures allocations of a Read that sleeps in the
// kernel and is woken by a publish: none with a context that cannot be
// cancelled, a few (the context.AfterFunc registration) with one that can.
func TestParkedReadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	w, path := segtest.Temp(t, 1<<20)
	r, err := OpenPath(path, WithStart(Next), longPark)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	payload := segtest.Pattern(1, 64)
	kick := make(chan struct{})
	go func() {
		for range kick {
			for w.Parked() == 0 {
				time.Sleep(50 * time.Microsecond)
			}
			time.Sleep(200 * time.Microsecond) // into the kernel, usually
			w.Publish(payload)
		}
	}()
	defer close(kick)
	buf := make([]byte, 100)
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		max  float64
	}{{"Background", context.Background(), 0}, {"WithCancel", cctx, 10}} {
		var err error
		allocs := testing.AllocsPerRun(20, func() {
			kick <- struct{}{}
			if _, e := r.Read(tc.ctx, buf); e != nil {
				err = e
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %v allocations per parked Read", tc.name, allocs)
		if allocs > tc.max {
			t.Errorf("%s: %v allocations per parked Read, want at most %v", tc.name, allocs, tc.max)
		}
	}
}

// BenchmarkWakeLatency measures publish -> return of a Read parked in the
// kernel (futex wake-up and rescheduling of the reading thread), one
// message at a time; the p50 and p99 are reported.
func BenchmarkWakeLatency(b *testing.B) {
	w, path := segtest.Temp(b, 1<<20)
	r, err := OpenPath(path, WithStart(Next), longPark)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	got := make(chan time.Time)
	go func() {
		buf := make([]byte, 100)
		for {
			if _, err := r.Read(context.Background(), buf); err != nil {
				close(got)
				return
			}
			got <- time.Now()
		}
	}()
	payload := segtest.Pattern(1, 64)
	samples := make([]time.Duration, 0, b.N)
	for b.Loop() {
		for w.Parked() == 0 {
			time.Sleep(20 * time.Microsecond)
		}
		time.Sleep(200 * time.Microsecond) // let it reach FUTEX_WAIT
		sent := time.Now()
		w.Publish(payload)
		samples = append(samples, (<-got).Sub(sent))
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(0, "ns/op")
}

// TestParkSteps drives the reader side of "Waiting and waking" one step at
// a time (pause arms on one call and sleeps on the next) against publishes
// at the two moments the protocol must handle, so that each step's reason
// is checked deterministically rather than by chance in a stress test. The
// futex waits last a minute: a step that would sleep through a message
// shows as a pause that takes seconds.
func TestParkSteps(t *testing.T) {
	w, path := segtest.Temp(t, 1<<16)
	r, err := OpenPath(path, WithStart(Next), longPark)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	buf := make([]byte, 100)
	empty := func(step string) {
		t.Helper()
		if _, err := r.TryRead(buf); err != ErrNoMessage {
			t.Fatalf("%s: got %v, want ErrNoMessage", step, err)
		}
	}
	pause := func(step string, wt *waiter) {
		t.Helper()
		start := time.Now()
		if err := r.pause(wt); err != nil || time.Since(start) > time.Second {
			t.Fatalf("%s: pause returned %v after %v", step, err, time.Since(start))
		}
	}
	read := func(step string, seq uint64) {
		t.Helper()
		if m, err := r.TryRead(buf); err != nil || m.Seq != seq {
			t.Fatalf("%s: got seq %d, %v; want %d", step, m.Seq, err, seq)
		}
	}
	parkNow := func() *waiter { return &waiter{ctx: ctx, polls: spinPolls + yieldPolls} }

	// A publish between the empty poll and the store of parked: the
	// producer sees parked == 0 and wakes nobody, so the re-check after
	// arming (step 4) is what finds the message.
	wt := parkNow()
	empty("A")
	w.PublishPattern(10)
	pause("A: arm", wt)
	if !wt.armed || w.Parked() != parkedRelay || w.Wakes() != 0 {
		t.Fatalf("A: armed %v, parked %d, wakes %d", wt.armed, w.Parked(), w.Wakes())
	}
	read("A: re-check", 1)

	// A publish between the re-check and FUTEX_WAIT: the producer clears
	// parked and bumps wake_seq; the wait must use the value loaded before
	// parked was stored (step 1), so it returns at once.
	wt = parkNow()
	empty("B")
	pause("B: arm", wt)
	empty("B: re-check")
	w.PublishPattern(10)
	if w.Wakes() != 1 || w.Parked() != 0 {
		t.Fatalf("B: wakes %d, parked %d", w.Wakes(), w.Parked())
	}
	pause("B: wait", wt)
	read("B: after the wait", 2)

	// A publish while asleep in FUTEX_WAIT wakes the reader.
	wt = parkNow()
	empty("C")
	pause("C: arm", wt)
	empty("C: re-check")
	addr := unsafe.Pointer(r.wakeSeq)
	go func() {
		// Publish once the reader is seen in FUTEX_WAIT (or after 20 ms
		// where /proc cannot tell); waitParked cannot be used here, off
		// the test goroutine.
		for end := time.Now().Add(time.Second); time.Now().Before(end); {
			if found, ok := futexWaiter(addr); found || !ok {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(20 * time.Millisecond)
		w.PublishPattern(10)
	}()
	pause("C: wait", wt)
	read("C: after the wait", 3)
	wt.done()
}

func withLiveEvery(d time.Duration) Option { return func(o *options) { o.liveEvery = d } }

// TestRelayWakesEveryParkedReader: a producer that wakes only one waiter
// (FUTEX_WAKE nr=1, as the Rust producer does when every parked reader
// relays) still wakes every parked reader, because each woken reader passes
// the wake-up on (docs/LAYOUT.md, "Waiting and waking", reader step 7). The
// park slice is a minute, so a reader the relay missed would fail the test
// instead of waking on its own.
func TestRelayWakesEveryParkedReader(t *testing.T) {
	if !futexSupported {
		t.Skip("no futex")
	}
	const n = 12
	w, path := segtest.Temp(t, 1<<16)
	done := make(chan error, n)
	var readers []*Reader
	for i := 0; i < n; i++ {
		r, err := OpenPath(path, WithStart(Next), longPark)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		readers = append(readers, r)
		go func() {
			buf := make([]byte, 64)
			_, err := r.Read(context.Background(), buf)
			done <- err
		}()
	}
	// Every reader asleep in FUTEX_WAIT, where /proc can tell.
	seq := (*uint32)(unsafe.Pointer(&w.Mem[segtest.OffWakeSeq]))
	parked := (*uint32)(unsafe.Pointer(&w.Mem[segtest.OffParked]))
	deadline := time.Now().Add(5 * time.Second)
	for atomic.LoadUint32(parked) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(200 * time.Millisecond)
	if got := atomic.LoadUint32(parked); got != parkedRelay {
		t.Fatalf("parked = %d, want %d (relaying readers)", got, parkedRelay)
	}
	// Publish as a producer that wakes one waiter: clear parked first so
	// the test writer's own step 9 (a wake-all) does nothing.
	atomic.StoreUint32(parked, 0)
	w.PublishPattern(10)
	atomic.AddUint32(seq, 1)
	woken := futexWakeN(seq, 1)
	t.Logf("the producer's FUTEX_WAKE(1) woke %d", woken)
	timeout := time.After(20 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatalf("%d of %d parked readers were not woken (the relay stopped)", n-i, n)
		}
	}
}

// TestThrottledProducerBoundsTheWait: while wake_throttle is set, a parked
// read waits at most ThrottledWait at a time, so it notices a message the
// producer published without any wake-up call.
func TestThrottledProducerBoundsTheWait(t *testing.T) {
	if !futexSupported {
		t.Skip("no futex")
	}
	w, path := segtest.Temp(t, 1<<16)
	throttle := (*uint32)(unsafe.Pointer(&w.Mem[offWakeThrottle]))
	parked := (*uint32)(unsafe.Pointer(&w.Mem[segtest.OffParked]))
	atomic.StoreUint32(throttle, 1)
	r, err := OpenPath(path, WithStart(Next), longPark)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		_, err := r.Read(context.Background(), buf)
		done <- err
	}()
	for atomic.LoadUint32(parked) == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(50 * time.Millisecond)
	// A throttled producer publishes without looking at parked.
	atomic.StoreUint32(parked, 0)
	w.PublishPattern(10)
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("seen %v after the publish (bound %v + slack)", time.Since(start), ThrottledWait)
	case <-time.After(10 * time.Second):
		t.Fatal("a parked read slept through a throttled producer's publish")
	}
}
