package shmcast

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

var testSizes = []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 100, 255, 1000, 1008}

func TestReadInOrder(t *testing.T) {
	w := segtest.NewHeap(64 << 10)
	r := mustOpenMem(t, w, Beginning)
	buf := make([]byte, r.MaxPayload())
	if _, err := r.TryRead(buf); err != ErrNoMessage {
		t.Fatalf("empty segment: got %v, want ErrNoMessage", err)
	}
	for _, n := range testSizes {
		w.PublishPattern(n)
	}
	for i, n := range testSizes {
		m, err := r.TryRead(buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.Seq != uint64(i+1) || len(m.Data) != n || !bytes.Equal(m.Data, segtest.Pattern(m.Seq, n)) {
			t.Fatalf("message %d: got seq %d len %d", i, m.Seq, len(m.Data))
		}
	}
	if _, err := r.TryRead(buf); err != ErrNoMessage {
		t.Fatalf("after the last message: got %v, want ErrNoMessage", err)
	}
}

// TestWrapAndPadding reads in lock step with the writer across many laps of
// a small ring, so every padding record and wrap is crossed without a lap.
func TestWrapAndPadding(t *testing.T) {
	w := segtest.NewHeap(4096)
	for _, start := range []Start{Beginning, Oldest, Newest, Next} {
		r := mustOpenMem(t, w, start)
		if _, _, err := drain(t, r); err != nil { // what the previous round left
			t.Fatal(err)
		}
		buf := make([]byte, r.MaxPayload())
		pads := 0
		for i := range 2000 {
			n := (i*37 + 11) % (w.MaxPayload() + 1)
			before := w.Tail()
			seq, pos := w.PublishPattern(n)
			if pos != before {
				pads++
			}
			m, err := r.TryRead(buf)
			if err != nil {
				t.Fatalf("%v: seq %d (len %d): %v", start, seq, n, err)
			}
			if m.Seq != seq || !bytes.Equal(m.Data, segtest.Pattern(seq, n)) {
				t.Fatalf("%v: got seq %d len %d, want seq %d len %d", start, m.Seq, len(m.Data), seq, n)
			}
		}
		if pads == 0 {
			t.Fatal("no padding record was exercised")
		}
	}
}

func TestLapAccounting(t *testing.T) {
	w := segtest.NewHeap(4096)
	early := mustOpenMem(t, w, Oldest) // joins before anything is published
	for i := range 500 {
		w.PublishPattern(i % 300)
	}
	published := w.NextSeq() - 1
	for _, tc := range []struct {
		name string
		r    *Reader
	}{
		{"beginning", mustOpenMem(t, w, Beginning)},
		{"early-oldest", early},
	} {
		got, missed, err := drain(t, tc.r)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if missed == 0 {
			t.Fatalf("%s: expected a lap", tc.name)
		}
		if got+missed != published {
			t.Fatalf("%s: received %d + missed %d != published %d", tc.name, got, missed, published)
		}
	}
	// A reader joining at oldest now loses nothing.
	r := mustOpenMem(t, w, Oldest)
	first := r.NextSeq()
	got, missed, err := drain(t, r)
	if err != nil || missed != 0 || first+got != published+1 {
		t.Fatalf("oldest: first %d received %d missed %d err %v", first, got, missed, err)
	}
}

func TestLaggedErrorValue(t *testing.T) {
	w := segtest.NewHeap(4096)
	for range 100 {
		w.PublishPattern(200)
	}
	r := mustOpenMem(t, w, Beginning)
	_, err := r.TryRead(make([]byte, 2000))
	var lag *LaggedError
	if !errors.As(err, &lag) || !errors.Is(err, ErrLagged) {
		t.Fatalf("got %v, want a *LaggedError", err)
	}
	oldest := mustOpenMem(t, w, Oldest).NextSeq()
	if lag.Missed != oldest-1 || r.NextSeq() != oldest {
		t.Fatalf("missed %d, next %d; oldest retained is %d", lag.Missed, r.NextSeq(), oldest)
	}
}

func TestJoin(t *testing.T) {
	w := segtest.NewHeap(4096)
	for _, s := range []Start{Beginning, Oldest, Newest, Next} {
		if r := mustOpenMem(t, w, s); r.NextSeq() != 1 || r.pos != 0 {
			t.Fatalf("empty segment, %v: pos %d seq %d", s, r.pos, r.NextSeq())
		}
	}
	for range 50 {
		w.PublishPattern(100)
	}
	buf := make([]byte, 2000)
	newest := mustOpenMem(t, w, Newest)
	if m, err := newest.TryRead(buf); err != nil || m.Seq != 50 {
		t.Fatalf("newest: got seq %d, %v", m.Seq, err)
	}
	next := mustOpenMem(t, w, Next)
	if _, err := next.TryRead(buf); err != ErrNoMessage {
		t.Fatalf("next: got %v, want ErrNoMessage", err)
	}
	w.PublishPattern(3)
	if m, err := next.TryRead(buf); err != nil || m.Seq != 51 || !VerifyPattern(51, m.Data) {
		t.Fatalf("next: got seq %d, %v", m.Seq, err)
	}
	oldest := mustOpenMem(t, w, Oldest)
	if head := w.Load(segtest.OffHead); oldest.pos != head {
		t.Fatalf("oldest: pos %d, head %d", oldest.pos, head)
	}
}

// TestOldestAtPadding joins at a head that points at a padding record.
func TestOldestAtPadding(t *testing.T) {
	w := segtest.NewHeap(4096)
	found := false
	for i := 0; i < 3000 && !found; i++ {
		w.PublishPattern((i * 53) % 1009)
		head := w.Load(segtest.OffHead)
		found = w.Load(w.RingOff(head))&segtest.Pad != 0
	}
	if !found {
		t.Fatal("head never landed on a padding record")
	}
	r := mustOpenMem(t, w, Oldest)
	got, missed, err := drain(t, r)
	if err != nil || missed != 0 || got == 0 {
		t.Fatalf("received %d missed %d err %v", got, missed, err)
	}
}

// TestLappedOnPaddingLosesNothing covers a case docs/LAYOUT.md's "Lapped"
// step 3 gets wrong: a reader waiting at a padding record is lapped at that
// position while the message after the padding is still intact, so head's
// sequence equals the reader's. That is not corruption and nothing was
// missed; the reader must go on and deliver the message.
func TestLappedOnPaddingLosesNothing(t *testing.T) {
	const capacity = 4096
	w := segtest.NewHeap(capacity)
	// Fill the first lap to 24 bytes before its end.
	for w.Tail() < capacity-24-216 {
		w.PublishPattern(200)
	}
	w.PublishPattern(int(capacity - 24 - w.Tail() - 16))
	if w.Tail() != capacity-24 {
		t.Fatalf("tail %d", w.Tail())
	}
	r := mustOpenMem(t, w, Beginning)
	if _, missed, err := drain(t, r); err != nil || missed != 0 {
		t.Fatalf("missed %d, err %v", missed, err)
	}
	padPos := r.pos
	x, xpos := w.PublishPattern(100) // pads at padPos, starts at capacity
	if xpos != capacity {
		t.Fatalf("message at %d, want %d", xpos, capacity)
	}
	// Publish until intent is in (padPos+capacity, xpos+capacity].
	for 2*capacity-8-w.Tail() > 1024 {
		w.PublishPattern(200)
	}
	w.PublishPattern(int(2*capacity - 8 - w.Tail() - 16))
	intent := w.Load(segtest.OffIntent)
	if !(intent > padPos+capacity && intent <= xpos+capacity) || w.Load(segtest.OffHead) != xpos {
		t.Fatalf("setup: intent %d head %d", intent, w.Load(segtest.OffHead))
	}
	m, err := r.TryRead(make([]byte, 2000))
	if err != nil || m.Seq != x || !VerifyPattern(x, m.Data) {
		t.Fatalf("got seq %d, %v; want seq %d delivered", m.Seq, err, x)
	}
}

// TestZeroCopyTorn overwrites the record while the callback looks at it:
// the read must report a lap, not success.
func TestZeroCopyTorn(t *testing.T) {
	w := segtest.NewHeap(4096)
	r := mustOpenMem(t, w, Beginning)
	w.PublishPattern(500)
	calls := 0
	err := r.TryReadFunc(func(seq uint64, p []byte) {
		calls++
		for range 20 {
			w.PublishPattern(500)
		}
	})
	var lag *LaggedError
	if !errors.As(err, &lag) || calls != 1 {
		t.Fatalf("got %v after %d calls, want a lap", err, calls)
	}
	got, missed, err := drain(t, r)
	if err != nil || got+missed+lag.Missed != w.NextSeq()-1 {
		t.Fatalf("received %d missed %d+%d of %d, err %v", got, missed, lag.Missed, w.NextSeq()-1, err)
	}
}

func TestZeroCopy(t *testing.T) {
	w := segtest.NewHeap(4096)
	r := mustOpenMem(t, w, Beginning)
	for _, n := range testSizes {
		w.PublishPattern(n)
		var gotSeq uint64
		ok := false
		err := r.TryReadFunc(func(seq uint64, p []byte) {
			gotSeq, ok = seq, len(p) == n && VerifyPattern(seq, p)
		})
		if err != nil || !ok || gotSeq != w.NextSeq()-1 {
			t.Fatalf("len %d: seq %d ok %v err %v", n, gotSeq, ok, err)
		}
	}
	if err := r.TryReadFunc(func(uint64, []byte) { t.Fatal("called without a message") }); err != ErrNoMessage {
		t.Fatalf("got %v, want ErrNoMessage", err)
	}
}

func TestShortBuffer(t *testing.T) {
	w := segtest.NewHeap(4096)
	r := mustOpenMem(t, w, Beginning)
	w.PublishPattern(100)
	_, err := r.TryRead(make([]byte, 99))
	var sb *ShortBufferError
	if !errors.As(err, &sb) || sb.Need != 100 || !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("got %v, want ShortBufferError{100}", err)
	}
	if m, err := r.TryRead(make([]byte, 100)); err != nil || m.Seq != 1 {
		t.Fatalf("retry: seq %d, %v", m.Seq, err)
	}
}

func TestZeroAllocs(t *testing.T) {
	w := segtest.NewHeap(1 << 20)
	r := mustOpenMem(t, w, Beginning)
	buf := make([]byte, r.MaxPayload())
	ctx := context.Background()
	var sink uint64
	fn := func(seq uint64, p []byte) { sink += seq + uint64(len(p)) }
	for name, read := range map[string]func() error{
		"TryRead":     func() error { _, err := r.TryRead(buf); return err },
		"Read":        func() error { _, err := r.Read(ctx, buf); return err },
		"TryReadFunc": func() error { return r.TryReadFunc(fn) },
		"ReadFunc":    func() error { return r.ReadFunc(ctx, fn) },
	} {
		const runs = 200
		for range runs + 1 { // AllocsPerRun does one warm-up run
			w.PublishPattern(64)
		}
		var err error
		allocs := testing.AllocsPerRun(runs, func() {
			if e := read(); e != nil {
				err = e
			}
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if allocs != 0 {
			t.Errorf("%s: %v allocations per message, want 0", name, allocs)
		}
	}
	if _, err := r.TryRead(buf); err != ErrNoMessage {
		t.Fatalf("messages left over: %v", err)
	}
	if allocs := testing.AllocsPerRun(100, func() { r.TryRead(buf) }); allocs != 0 {
		t.Errorf("empty poll: %v allocations, want 0", allocs)
	}
}

func TestCloseIdempotent(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	w.PublishPattern(10)
	r, err := OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 100)
	if _, err := r.TryRead(buf); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("TryRead after Close: %v", err)
	}
	if _, err := r.Read(context.Background(), buf); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if err := r.TryReadFunc(func(uint64, []byte) {}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("TryReadFunc after Close: %v", err)
	}
	for _, err := range r.Messages(context.Background()) {
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Messages after Close: %v", err)
		}
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	_, path := segtest.Temp(t, 4096)
	r, err := OpenPath(path, WithPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := r.Read(context.Background(), make([]byte, 100))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("got %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

// TestCloseInsideCallback closes the Reader while the callback still holds
// a slice of the mapping: the unmapping must wait until the callback is done.
func TestCloseInsideCallback(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	w.PublishPattern(300)
	w.PublishPattern(300)
	r, err := OpenPath(path, WithStart(Beginning))
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	err = r.TryReadFunc(func(seq uint64, p []byte) {
		r.Close()
		ok = VerifyPattern(seq, p) // still mapped
	})
	if err != nil || !ok {
		t.Fatalf("err %v, payload ok %v", err, ok)
	}
	if err := r.TryReadFunc(func(uint64, []byte) {}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("got %v, want os.ErrClosed", err)
	}
}

func TestReadContext(t *testing.T) {
	w := segtest.NewHeap(4096)
	r := mustOpenMem(t, w, Next)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := r.Read(ctx, make([]byte, 100)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if err := r.ReadFunc(ctx, func(uint64, []byte) {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want Canceled", err)
	}
	// A message that is there is delivered whatever the context.
	w.PublishPattern(5)
	if m, err := r.Read(ctx, make([]byte, 100)); err != nil || m.Seq != 1 {
		t.Fatalf("got seq %d, %v", m.Seq, err)
	}
}

func TestMessages(t *testing.T) {
	w := segtest.NewHeap(4096)
	for range 100 {
		w.PublishPattern(300)
	}
	r := mustOpenMem(t, w, Beginning)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seq := r.Messages(ctx)
	var received, missed uint64
	for m, err := range seq {
		var lag *LaggedError
		if errors.As(err, &lag) {
			missed += lag.Missed
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !VerifyPattern(m.Seq, m.Data) {
			t.Fatalf("seq %d: bad payload", m.Seq)
		}
		received++
		if received+missed == 100 {
			break
		}
	}
	if missed == 0 || received+missed != 100 {
		t.Fatalf("received %d missed %d", received, missed)
	}
	for _, err := range seq {
		if err == nil || err != errIterReused {
			t.Fatalf("second range: got %v", err)
		}
	}
	cancel()
	for _, err := range r.Messages(ctx) {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want Canceled", err)
		}
	}
}

func TestStartNames(t *testing.T) {
	for _, s := range []Start{Beginning, Oldest, Newest, Next} {
		got, err := ParseStart(s.String())
		if err != nil || got != s {
			t.Fatalf("%v: %v %v", s, got, err)
		}
	}
	if _, err := ParseStart("latest"); err == nil {
		t.Fatal("ParseStart accepted latest")
	}
}

func TestCopyStrategiesAgree(t *testing.T) {
	src := segtest.NewMem(4096 + 8)
	for i := range src {
		src[i] = byte(i*7 + 3)
	}
	for n := range 200 {
		a, p := make([]byte, n), make([]byte, n)
		copyWordsAtomic(a, unsafe.Pointer(&src[8]))
		copyPlain(p, src[8:8+n])
		if !bytes.Equal(a, p) || !bytes.Equal(p, src[8:8+n]) {
			t.Fatalf("n=%d: copies differ", n)
		}
	}
}

// TestDroppedReaderIsUnmapped checks that a Reader that is never closed
// does not keep its mapping once it is garbage.
func TestDroppedReaderIsUnmapped(t *testing.T) {
	_, path := segtest.Temp(t, 4096)
	countMaps := func() int {
		maps, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Skip(err)
		}
		return bytes.Count(maps, []byte(path))
	}
	func() {
		r, err := OpenPath(path)
		if err != nil {
			t.Fatal(err)
		}
		_ = r.NextSeq()
	}()
	// The test writer's own mapping is read-write; the reader's is the other one.
	for range 50 {
		if countMaps() == 1 {
			return
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d mappings of the segment remain", countMaps())
}
