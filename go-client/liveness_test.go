package shmcast

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

func TestProducerAlive(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	r, err := OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := OpenPath(path, withReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if !r.ProducerAlive() || !ro.ProducerAlive() {
		t.Fatal("ProducerAlive() = false while the writer holds the lock")
	}
	w.Kill()
	if r.ProducerAlive() || ro.ProducerAlive() {
		t.Fatal("ProducerAlive() = true after the writer dropped the lock")
	}
	r.Close()
	if !r.ProducerAlive() {
		t.Error("a closed Reader should report true (unknown)")
	}
	// A Reader without a file (heap memory) cannot tell: alive.
	heap := mustOpenMem(t, segtest.NewHeap(4096), Oldest)
	if !heap.ProducerAlive() {
		t.Error("a Reader over memory reported a dead producer")
	}
}

// readers of every blocking form and wait strategy, as a function that
// reads until an error and returns the sequence numbers delivered.
type blockingForm struct {
	name string
	opts []Option
	read func(ctx context.Context, r *Reader, got *[]uint64) error
}

func blockingForms() []blockingForm {
	viaRead := func(ctx context.Context, r *Reader, got *[]uint64) error {
		buf := make([]byte, r.MaxPayload())
		for {
			m, err := r.Read(ctx, buf)
			if err != nil {
				return err
			}
			if !VerifyPattern(m.Seq, m.Data) {
				return errors.New("corrupt payload")
			}
			*got = append(*got, m.Seq)
		}
	}
	// The sequence ends without an error when the producer is gone; a read
	// after it returns the *ProducerGoneError at once, which this form
	// reports so that the callers see the same end from every form.
	viaMessages := func(ctx context.Context, r *Reader, got *[]uint64) error {
		for m, err := range r.Messages(ctx) {
			if err != nil {
				return err
			}
			*got = append(*got, m.Seq)
		}
		_, err := r.Read(ctx, nil)
		return err
	}
	var forms []blockingForm
	for _, s := range allStrategies {
		forms = append(forms, blockingForm{"Read/" + s.String(), []Option{WithWait(s)}, viaRead})
	}
	forms = append(forms,
		blockingForm{"Read/block-longpark", []Option{longPark}, viaRead},
		blockingForm{"Read/block-readonly", []Option{withReadOnly()}, viaRead},
		blockingForm{"ReadFunc/block", nil, func(ctx context.Context, r *Reader, got *[]uint64) error {
			for {
				var seq uint64
				if err := r.ReadFunc(ctx, func(s uint64, p []byte) { seq = s }); err != nil {
					return err
				}
				*got = append(*got, seq)
			}
		}},
		blockingForm{"Messages/block", nil, viaMessages},
		blockingForm{"Messages/backoff", []Option{WithWait(WaitBackoff)}, viaMessages},
	)
	return forms
}

// TestReadEndsWhenProducerDies: a read parked on an idle segment returns
// ErrProducerGone within a bounded time after the writer drops its lock,
// having first delivered every message published before, for every
// strategy and read form. A second read returns the error at once.
func TestReadEndsWhenProducerDies(t *testing.T) {
	for _, f := range blockingForms() {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			w, path := segtest.Temp(t, 4096)
			r, err := OpenPath(path, append([]Option{WithStart(Beginning)}, f.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for range 3 {
				w.PublishPattern(40)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var got []uint64
			done := make(chan error, 1)
			go func() { done <- f.read(ctx, r, &got) }()
			time.Sleep(250 * time.Millisecond) // idle: several liveness tests pass
			for range 2 {
				w.PublishPattern(700) // the last ones before death
			}
			w.Kill()
			killed := time.Now()
			err = <-done
			took := time.Since(killed)
			t.Logf("returned %v after the lock was dropped", took)
			var gone *ProducerGoneError
			if !errors.Is(err, ErrProducerGone) || !errors.As(err, &gone) || gone.Replaced {
				t.Fatalf("read ended with %v, want a *ProducerGoneError, not replaced", err)
			}
			if len(got) != 5 || got[0] != 1 || got[4] != 5 {
				t.Fatalf("delivered %v, want 1..5", got)
			}
			if took > 2*time.Second {
				t.Errorf("took %v to notice the dead producer (bound: about %v)", took, LivenessInterval)
			}
			start := time.Now()
			if err := f.read(ctx, r, &got); !errors.Is(err, ErrProducerGone) {
				t.Errorf("second read: %v", err)
			}
			if d := time.Since(start); d > 50*time.Millisecond {
				t.Errorf("second read took %v; the producer was already known to be gone", d)
			}
		})
	}
}

// TestProducerGoneLastMessage: a message committed just before death that
// the reader had not seen when it found the lock free is still delivered
// (the one more attempt after the liveness test).
func TestProducerGoneLastMessage(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	r, err := OpenPath(path, WithStart(Beginning), WithWait(WaitSpin), withLiveEvery(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.PublishPattern(8)
	w.Kill()
	r.dead = true // as if a liveness test had just found the lock free
	buf := make([]byte, r.MaxPayload())
	if m, err := r.Read(context.Background(), buf); err != nil || m.Seq != 1 {
		t.Fatalf("got %d, %v; want message 1", m.Seq, err)
	}
	if _, err := r.Read(context.Background(), buf); !errors.Is(err, ErrProducerGone) {
		t.Fatalf("got %v, want ErrProducerGone", err)
	}
}

// TestMessagesEndAtProducerExit: a producer that publishes n messages and
// exits is a clean end for the iterator: it yields the n messages (or the
// lap and the retained ones, when n overflows the ring), then ends without
// an error. A read after it returns the *ProducerGoneError at once, a new
// sequence ends at once, and once a new producer has replaced the segment
// the read says so.
func TestMessagesEndAtProducerExit(t *testing.T) {
	for _, n := range []uint64{0, 1, 50, 2000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			w, path := segtest.Temp(t, 4096)
			r, err := OpenPath(path, WithStart(Beginning))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for range n {
				w.PublishPattern(40)
			}
			w.Kill()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			var received, missed, want uint64 = 0, 0, 1
			for m, err := range r.Messages(ctx) {
				var lag *LaggedError
				switch {
				case errors.As(err, &lag):
					missed += lag.Missed
					want += lag.Missed
				case err != nil:
					t.Fatalf("yielded %v after %d messages; the producer's exit should end the sequence without an error", err, received)
				case m.Seq != want || !VerifyPattern(m.Seq, m.Data):
					t.Fatalf("message %d (%d bytes), want %d with its pattern", m.Seq, len(m.Data), want)
				default:
					received++
					want++
				}
			}
			if received+missed != n || (n <= 50) != (missed == 0) {
				t.Fatalf("received %d + missed %d, want %d (a lap only when the ring overflowed)", received, missed, n)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the sequence took %v to end (bound: about %v)", d, LivenessInterval)
			}
			start = time.Now()
			var gone *ProducerGoneError
			if _, err := r.Read(ctx, nil); !errors.As(err, &gone) || gone.Replaced {
				t.Fatalf("read after the sequence: %v, want a *ProducerGoneError, not replaced", err)
			}
			for _, err := range r.Messages(ctx) {
				t.Fatalf("a new sequence after the end yielded %v", err)
			}
			if d := time.Since(start); d > 50*time.Millisecond {
				t.Errorf("took %v; the producer was already known to be gone", d)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if _, unmap, err := segtest.Create(path, 4096); err != nil {
				t.Fatal(err)
			} else {
				defer unmap()
			}
			if _, err := r.Read(ctx, nil); !errors.As(err, &gone) || !gone.Replaced {
				t.Fatalf("read after a new producer replaced the segment: %v, want Replaced", err)
			}
		})
	}
}

// TestProducerGoneReplaced: Replaced is true only when another file now has
// the name; a removed name is not a replacement.
func TestProducerGoneReplaced(t *testing.T) {
	for _, replace := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "seg")
		w, unmap, err := segtest.Create(path, 4096)
		if err != nil {
			t.Fatal(err)
		}
		defer unmap()
		r, err := OpenPath(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		w.PublishPattern(1)
		w.Kill()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if replace {
			_, unmap2, err := segtest.Create(path, 8192)
			if err != nil {
				t.Fatal(err)
			}
			defer unmap2()
		}
		buf := make([]byte, r.MaxPayload())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := r.Read(ctx, buf); err != nil {
			t.Fatal(err)
		}
		_, err = r.Read(ctx, buf)
		var gone *ProducerGoneError
		if !errors.As(err, &gone) || gone.Replaced != replace {
			t.Fatalf("replace=%v: got %v", replace, err)
		}
		want := "shmcast: the producer has exited; no more messages will arrive"
		if replace {
			want = "shmcast: the producer has exited, and a new segment now exists under the same name: open it again to follow the new producer"
		}
		if err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	}
}

// TestTryReadMakesNoLivenessTest: the non-blocking reads keep reporting
// ErrNoMessage for a dead producer (they make no system call).
func TestTryReadMakesNoLivenessTest(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	r, err := OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Kill()
	if _, err := r.TryRead(make([]byte, 16)); err != ErrNoMessage {
		t.Fatalf("TryRead: %v", err)
	}
	if err := r.TryReadFunc(func(uint64, []byte) {}); err != ErrNoMessage {
		t.Fatalf("TryReadFunc: %v", err)
	}
}

// Any reader may take a read lock on the liveness byte; that must not make a
// dead producer look alive (docs/SECURITY.md).
func TestReadLockDoesNotFakeALiveProducer(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	r, err := OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Kill()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const fOFDSetLK = 37 // F_OFD_SETLK
	lk := syscall.Flock_t{Type: syscall.F_RDLCK, Whence: 0, Start: 0, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), fOFDSetLK, &lk); err != nil {
		t.Fatalf("take a read lock: %v", err)
	}
	if r.ProducerAlive() {
		t.Fatal("a reader's read lock passed for the producer's write lock")
	}
}
