package shmcast

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// TestConcurrentMutation: another process with write access may rewrite any
// word of the segment while a Reader reads. Here a goroutine rewrites random
// words (control words, subscriber page and ring; the identity block is
// read only by Open, so it is left alone, and so are reader_slots and
// max_block_ns) through a second, writable
// mapping while readers of every form read: each read must return a message
// that respects the reader's invariants, or a typed error, and return in
// bounded time; nothing may panic or fault. On a lossless segment the
// readers register, and the slots and lossless words are rewritten too.
func TestConcurrentMutation(t *testing.T) {
	t.Run("lossy", func(t *testing.T) { concurrentMutation(t, false) })
	t.Run("lossless", func(t *testing.T) { concurrentMutation(t, true) })
}

func concurrentMutation(t *testing.T, lossless bool) {
	var w *segtest.Writer
	var path string
	var opts []Option
	if lossless {
		w, path = losslessSegment(t, 4096, 4)
		opts = append(opts, WithLossless())
	} else {
		w, path = segtest.Temp(t, 4096)
	}
	for i := range 40 {
		w.TryPublish(segtest.Pattern(w.NextSeq(), i*13%900))
	}
	stop := make(chan struct{})
	var mutations atomic.Uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		const first = 0x80 / 8 // intent, the first word a Reader loads after Open
		words := uint64(len(w.Mem)/8) - first
		for {
			select {
			case <-stop:
				return
			default:
			}
			off := (first + rng.Uint64N(words)) * 8
			if off == 0x188 || off == 0x190 {
				continue // reader_slots, max_block_ns: identity, written before magic
			}
			var v uint64
			switch rng.IntN(4) {
			case 0:
				v = rng.Uint64()
			case 1:
				v = rng.Uint64N(64) // small: plausible seqs and lengths
			case 2:
				v = rng.Uint64N(1<<14) &^ 7 // plausible positions
			default:
				v = w.Load(off) + 1
			}
			w.Store(off, v)
			if rng.IntN(8) == 0 {
				// Held back by a registered reader's (perhaps rewritten)
				// position: nothing is published.
				w.TryPublish(segtest.Pattern(w.NextSeq(), rng.IntN(w.MaxPayload()+1)))
			}
			if mutations.Add(1)%256 == 0 {
				runtime.Gosched()
			}
		}
	}()

	deadline := time.Now().Add(1000 * time.Millisecond)
	var reads, delivered, typed, evicted atomic.Uint64
	forms := []string{"TryRead", "TryReadFunc", "Read", "ReadFunc"}
	for i, form := range forms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for time.Now().Before(deadline) {
				r, err := OpenPath(path, append(opts, WithStart(Start(i%4)), WithWait(allStrategies[i%len(allStrategies)]))...)
				if err != nil {
					// Registering reads gate_limit, which may be rewritten.
					if errors.Is(err, ErrCorrupt) {
						typed.Add(1)
						continue
					}
					t.Errorf("%s: open: %v", form, err)
					return
				}
				for n := 0; n < 200 && time.Now().Before(deadline); n++ {
					want := r.NextSeq()
					var seq uint64
					var size int
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
					start := time.Now()
					switch form {
					case "TryRead":
						var m Message
						m, err = r.TryRead(buf)
						seq, size = m.Seq, len(m.Data)
					case "TryReadFunc":
						err = r.TryReadFunc(func(s uint64, p []byte) { seq, size = s, len(p) })
					case "Read":
						var m Message
						m, err = r.Read(ctx, buf)
						seq, size = m.Seq, len(m.Data)
					case "ReadFunc":
						err = r.ReadFunc(ctx, func(s uint64, p []byte) { seq, size = s, len(p) })
					}
					cancel()
					reads.Add(1)
					if d := time.Since(start); d > 5*time.Second {
						t.Errorf("%s: a read took %v", form, d)
					}
					var lag *LaggedError
					switch {
					case err == nil:
						delivered.Add(1)
						if seq != want || size > r.MaxPayload() || r.NextSeq() != want+1 {
							t.Errorf("%s: delivered seq %d (%d bytes), expected seq %d", form, seq, size, want)
						}
						continue
					case errors.As(err, &lag):
						if lag.Missed == 0 || r.NextSeq() != want+lag.Missed {
							t.Errorf("%s: lagged %d from %d to %d", form, lag.Missed, want, r.NextSeq())
						}
						continue
					case err == ErrNoMessage, errors.Is(err, context.DeadlineExceeded):
						continue
					case err == ErrEvicted && lossless: // a rewritten state word
						evicted.Add(1)
						continue
					case errors.Is(err, ErrCorrupt):
						typed.Add(1)
					default:
						t.Errorf("%s: unexpected error %v", form, err)
					}
					break
				}
				r.Close()
			}
		}()
	}
	time.Sleep(time.Until(deadline))
	close(stop)
	wg.Wait()
	t.Logf("%d mutations; %d reads: %d delivered, %d corrupt reports, %d evictions", mutations.Load(), reads.Load(), delivered.Load(), typed.Load(), evicted.Load())
	if reads.Load() == 0 || mutations.Load() == 0 {
		t.Fatal("nothing ran")
	}
}

// TestTruncatedUnderReader: a segment file shrunk under a Reader's mapping
// (which a producer never does, but any process with write access can) is
// reported as ErrTruncated by a Reader opened WithFaultRecovery, instead of
// killing the process with SIGBUS.
func TestTruncatedUnderReader(t *testing.T) {
	if raceEnabled {
		t.Skip("under the race detector atomic loads fault inside its runtime, which cannot recover")
	}
	for _, form := range []string{"TryRead", "TryReadFunc", "Read", "ReadFunc"} {
		w, path := segtest.Temp(t, 1<<16)
		for range 10 {
			w.PublishPattern(500)
		}
		r, err := OpenPath(path, WithStart(Beginning), WithFaultRecovery())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		buf := make([]byte, r.MaxPayload())
		if _, err := r.TryRead(buf); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 4096); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		switch form {
		case "TryRead":
			_, err = r.TryRead(buf)
		case "TryReadFunc":
			err = r.TryReadFunc(func(uint64, []byte) {})
		case "Read":
			_, err = r.Read(ctx, buf)
		case "ReadFunc":
			err = r.ReadFunc(ctx, func(uint64, []byte) {})
		}
		var he *HeaderError
		if !errors.Is(err, ErrTruncated) || !errors.As(err, &he) || he.Got != 4096 {
			t.Fatalf("%s: got %v, want ErrTruncated (size 4096)", form, err)
		}
		t.Logf("%s: %v", form, err)
		// The Reader is still usable (and still reports it), and closes.
		if _, err := r.TryRead(buf); !errors.Is(err, ErrTruncated) {
			t.Errorf("%s: second read: %v", form, err)
		}
	}
	// A panic of a ReadFunc callback that is not a fault on the mapping is
	// passed on, and the Reader is not left busy.
	w, path := segtest.Temp(t, 4096)
	w.PublishPattern(10)
	w.PublishPattern(10)
	r, err := OpenPath(path, WithStart(Beginning), WithFaultRecovery())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the callback's panic", p)
			}
		}()
		r.TryReadFunc(func(uint64, []byte) { panic("boom") })
	}()
	if _, err := r.TryRead(make([]byte, 100)); err != nil {
		t.Errorf("read after the callback's panic: %v", err)
	}
}
