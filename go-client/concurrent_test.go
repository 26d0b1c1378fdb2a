package shmcast

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// TestConcurrentWriter runs the test writer in a goroutine against readers
// of every form on a shared mapping, with a ring small enough that they are
// lapped, torn copies happen and must be caught. Every delivered payload
// must match the pattern and received + missed must equal published.
func TestConcurrentWriter(t *testing.T) {
	const published = 20000
	w, path := segtest.Temp(t, 4096)

	type result struct {
		name             string
		received, missed uint64
		err              error
	}
	results := make(chan result, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	reader := func(name string, read func(r *Reader) (delivered bool, missed uint64, err error)) {
		r, err := OpenPath(path, WithStart(Beginning), WithPollInterval(100*time.Microsecond))
		if err != nil {
			results <- result{name: name, err: err}
			return
		}
		go func() {
			defer r.Close()
			res := result{name: name}
			for r.NextSeq() <= published && res.err == nil {
				ok, missed, err := read(r)
				if ok {
					res.received++
				}
				res.missed += missed
				res.err = err
			}
			results <- res
		}()
	}
	lagOr := func(err error) (uint64, error) {
		var lag *LaggedError
		if errors.As(err, &lag) {
			return lag.Missed, nil
		}
		return 0, err
	}
	check := func(m Message) error {
		if !VerifyPattern(m.Seq, m.Data) {
			return errors.New("torn or wrong payload delivered")
		}
		return nil
	}
	buf1 := make([]byte, 1008)
	reader("Read", func(r *Reader) (bool, uint64, error) {
		m, err := r.Read(ctx, buf1)
		if err != nil {
			missed, err := lagOr(err)
			return false, missed, err
		}
		return true, 0, check(m)
	})
	buf2 := make([]byte, 1008)
	reader("TryRead-spin", func(r *Reader) (bool, uint64, error) {
		m, err := r.TryRead(buf2)
		if err == ErrNoMessage {
			return false, 0, ctx.Err()
		}
		if err != nil {
			missed, err := lagOr(err)
			return false, missed, err
		}
		return true, 0, check(m)
	})
	reader("ReadFunc", func(r *Reader) (bool, uint64, error) {
		good := false
		err := r.ReadFunc(ctx, func(seq uint64, p []byte) { good = VerifyPattern(seq, p) })
		if err != nil {
			missed, err := lagOr(err)
			return false, missed, err
		}
		if !good {
			return false, 0, errors.New("torn payload seen by a callback that was reported valid")
		}
		return true, 0, nil
	})
	// A callback that takes its time widens the window in which the writer
	// overwrites the record under it; the re-check must catch every case.
	reader("ReadFunc-slow-callback", func(r *Reader) (bool, uint64, error) {
		good := false
		err := r.ReadFunc(ctx, func(seq uint64, p []byte) {
			good = VerifyPattern(seq, p)
			time.Sleep(20 * time.Microsecond)
			good = good && VerifyPattern(seq, p)
		})
		if err != nil {
			missed, err := lagOr(err)
			return false, missed, err
		}
		if !good {
			return false, 0, errors.New("torn payload seen by a callback that was reported valid")
		}
		return true, 0, nil
	})
	buf3 := make([]byte, 1008)
	n := 0
	reader("slow", func(r *Reader) (bool, uint64, error) {
		m, err := r.Read(ctx, buf3)
		if err != nil {
			missed, err := lagOr(err)
			return false, missed, err
		}
		if n++; n%50 == 0 {
			time.Sleep(time.Millisecond)
		}
		return true, 0, check(m)
	})

	for i := range published {
		w.PublishPattern((i * 7919) % 1009)
		if i%20 == 0 { // mostly readable, but still fast enough to lap
			time.Sleep(50 * time.Microsecond)
		}
	}
	for range 5 {
		res := <-results
		if res.err != nil {
			t.Errorf("%s: %v", res.name, res.err)
			continue
		}
		t.Logf("%s: received %d, missed %d", res.name, res.received, res.missed)
		if res.received+res.missed != published {
			t.Errorf("%s: received %d + missed %d != %d", res.name, res.received, res.missed, published)
		}
		if res.name == "slow" && res.missed == 0 {
			t.Errorf("slow reader was never lapped")
		}
	}
}
