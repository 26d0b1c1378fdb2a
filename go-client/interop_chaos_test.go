package shmcast_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
)

// TestInteropChaos kills a live Rust producer (SIGKILL, at a random moment)
// under three Go readers of different forms and wait strategies, three
// rounds in a row on the same name. Every reader must end with
// ErrProducerGone (not replaced: the next producer has not started yet; the
// Messages loop must end without an error, and a read after it returns it),
// having accounted for every committed message (received + missed ==
// committed, read back by a fresh reader joining at the newest message),
// with no corrupt payload. From the second round on, the new producer
// replaces the dead one's segment, and a reader of the old segment must
// then report Replaced.
func TestInteropChaos(t *testing.T) {
	bin := shmcastBin(t)
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	name := segmentName(t, "chaos")
	path := filepath.Join(shmcast.ShmDir, name)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var stale *shmcast.Reader // a reader of the previous round's (dead) segment
	var prevIno uint64
	for round := 1; round <= 3; round++ {
		cmd := exec.Command(bin, "publish", name, "--count", "100000000", "--size", "0-512",
			"--rate", "200000", "--keep")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		reaped := false
		t.Cleanup(func() {
			if !reaped {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		// Wait for this round's segment: a new file (another inode) with a
		// valid header.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var st syscall.Stat_t
			if syscall.Stat(path, &st) == nil && st.Ino != prevIno {
				prevIno = st.Ino
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no new segment at %s", round, path)
			}
			time.Sleep(time.Millisecond)
		}
		if stale != nil {
			// It drains what the dead producer left, then learns the news.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			buf := make([]byte, stale.MaxPayload())
			var err error
			for err == nil || errors.Is(err, shmcast.ErrLagged) {
				_, err = stale.Read(ctx, buf)
			}
			cancel()
			var gone *shmcast.ProducerGoneError
			if !errors.As(err, &gone) || !gone.Replaced {
				t.Errorf("round %d: reader of the replaced segment got %v, want a replaced ProducerGoneError", round, err)
			}
			stale.Close()
		}

		type result struct {
			name                      string
			received, missed, corrupt uint64
			err                       error
			ended                     time.Time
		}
		results := make(chan result, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		check := func(res *result, seq uint64, p []byte) {
			res.received++
			if len(p) != shmcast.PatternLen(seq, 0, 512) || !shmcast.VerifyPattern(seq, p) {
				res.corrupt++
			}
		}
		start := func(label string, wait shmcast.WaitStrategy, loop func(r *shmcast.Reader, res *result) error) {
			r := openWhenReady(t, name, shmcast.WithStart(shmcast.Beginning), shmcast.WithWait(wait))
			go func() {
				res := result{name: label}
				res.err = loop(r, &res)
				res.ended = time.Now()
				results <- res
			}()
		}
		start("Read/block", shmcast.WaitBlock, func(r *shmcast.Reader, res *result) error {
			buf := make([]byte, r.MaxPayload())
			for {
				m, err := r.Read(ctx, buf)
				var lag *shmcast.LaggedError
				switch {
				case errors.As(err, &lag):
					res.missed += lag.Missed
				case err != nil:
					return err
				default:
					check(res, m.Seq, m.Data)
				}
			}
		})
		start("ReadFunc/yield", shmcast.WaitYield, func(r *shmcast.Reader, res *result) error {
			for {
				var ok bool
				var s uint64
				err := r.ReadFunc(ctx, func(seq uint64, p []byte) {
					s = seq
					ok = len(p) == shmcast.PatternLen(seq, 0, 512) && shmcast.VerifyPattern(seq, p)
				})
				var lag *shmcast.LaggedError
				switch {
				case errors.As(err, &lag):
					res.missed += lag.Missed
				case err != nil:
					return err
				default:
					res.received++
					if !ok {
						res.corrupt++
						t.Logf("ReadFunc: seq %d corrupt", s)
					}
				}
			}
		})
		start("Messages/backoff", shmcast.WaitBackoff, func(r *shmcast.Reader, res *result) error {
			for m, err := range r.Messages(ctx) {
				var lag *shmcast.LaggedError
				switch {
				case errors.As(err, &lag):
					res.missed += lag.Missed
				case err != nil:
					return err
				default:
					check(res, m.Seq, m.Data)
				}
			}
			// The sequence ends without an error when the producer is gone;
			// a read after it returns the *ProducerGoneError at once.
			_, err := r.Read(ctx, nil)
			return err
		})
		stale = openWhenReady(t, name, shmcast.WithStart(shmcast.Next))
		if !stale.ProducerAlive() {
			t.Fatalf("round %d: ProducerAlive() = false under a running producer", round)
		}

		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		reaped = true
		killed := time.Now()

		// Read from the newest message on: a kill between a commit and the
		// producer's `latest` store leaves a committed message after `latest`,
		// which the readers do receive.
		var committed uint64
		fresh := openWhenReady(t, name, shmcast.WithStart(shmcast.Newest))
		for buf := make([]byte, fresh.MaxPayload()); ; {
			m, err := fresh.TryRead(buf)
			if err == shmcast.ErrNoMessage {
				break
			}
			if err != nil {
				t.Fatalf("round %d: reading the newest messages: %v", round, err)
			}
			committed = m.Seq
		}
		if fresh.ProducerAlive() {
			t.Errorf("round %d: ProducerAlive() = true after the producer was killed", round)
		}
		fresh.Close()

		for range 3 {
			res := <-results
			t.Logf("round %d, %s: received %d, missed %d of %d committed, corrupt %d; returned %v after the kill: %v",
				round, res.name, res.received, res.missed, committed, res.corrupt, res.ended.Sub(killed).Round(time.Millisecond), res.err)
			var gone *shmcast.ProducerGoneError
			switch {
			case !errors.As(res.err, &gone) || gone.Replaced:
				t.Errorf("round %d, %s: ended with %v, want ErrProducerGone (not replaced)", round, res.name, res.err)
			case res.received+res.missed != committed || res.corrupt != 0:
				t.Errorf("round %d, %s: received %d + missed %d != committed %d, or %d corrupt",
					round, res.name, res.received, res.missed, committed, res.corrupt)
			}
		}
		cancel()
		if committed == 0 {
			t.Errorf("round %d: the producer published nothing before it was killed", round)
		}
	}
	if stale != nil {
		stale.Close()
	}
	os.Remove(path)
}
