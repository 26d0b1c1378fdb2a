package shmcast_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
)

// requireLosslessCLI skips the test when the Rust CLI at bin predates
// lossless mode (`shmcast publish --lossless`).
func requireLosslessCLI(t *testing.T, bin string) {
	t.Helper()
	out, _ := exec.Command(bin, "publish", "--help").CombinedOutput()
	if !bytes.Contains(out, []byte("--wait-readers")) {
		t.Skipf("%s has no `publish --lossless --wait-readers`: rebuild the Rust CLI", bin)
	}
}

// losslessInfo is what `shmcast inspect --json` says of a lossless segment.
type losslessInfo struct {
	Lossless  bool   `json:"lossless"`
	Evictions uint64 `json:"evictions"`
	Readers   []any  `json:"readers"` // the registered readers
}

// inspect runs `shmcast inspect NAME --json`; ok is false when it fails.
func inspect(t *testing.T, bin, name string) (info losslessInfo, ok bool) {
	t.Helper()
	out, err := exec.Command(bin, "inspect", name, "--json").Output()
	if err == nil {
		err = json.Unmarshal(out, &info)
	}
	if err != nil {
		t.Logf("inspect %s: %v: %s", name, err, out)
	}
	return info, err == nil
}

// startLossless runs `shmcast publish NAME --lossless --capacity 64K
// --count total --size 16-1024 --wait-readers readers --max-block
// maxBlock` and registers a Go reader from the beginning; the producer
// publishes once readers readers (this one included) have registered.
func startLossless(t *testing.T, tag string, total, readers int, maxBlock string) (bin, name string, done <-chan error, r *shmcast.Reader) {
	t.Helper()
	bin = shmcastBin(t)
	requireLosslessCLI(t, bin)
	name = segmentName(t, tag)
	done = startPublisher(t, bin, name, "--lossless", "--capacity", "64K", "--count", fmt.Sprint(total),
		"--size", "16-1024", "--wait-readers", fmt.Sprint(readers), "--max-block", maxBlock)
	r = openWhenReady(t, name, shmcast.WithLossless(), shmcast.WithStart(shmcast.Beginning))
	if slot, ok := r.Slot(); !ok {
		t.Fatalf("not registered (slot %d)", slot)
	}
	return bin, name, done, r
}

// TestInteropLossless: a Rust producer publishes 200 000 messages of 16 to
// 1024 bytes through a 64 KiB lossless ring, waiting for two registered Go
// readers (one in this process, one the shmcast-tail command) before the
// first. Each must receive every message, in order and intact, with no
// lap, also across pauses of the in-process reader that would cost a lossy
// reader thousands of messages: the producer is held back by them instead,
// and evicts nobody.
func TestInteropLossless(t *testing.T) {
	const total = 200000
	bin, name, done, r := startLossless(t, "lossless", total, 2, "20")
	goTail := buildGoTail(t)
	tail := exec.Command(goTail, name, "--lossless", "--from", "beginning", "--verify", "--timeout", "60")
	var tailOut, tailErr bytes.Buffer
	tail.Stdout, tail.Stderr = &tailOut, &tailErr
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tail.Process.Kill() })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var received uint64
	for m, err := range r.Messages(ctx) {
		if err != nil {
			t.Fatalf("after %d messages: %v", received, err)
		}
		want := received + 1
		if m.Seq != want || len(m.Data) != shmcast.PatternLen(m.Seq, 16, 1024) || !shmcast.VerifyPattern(m.Seq, m.Data) {
			t.Fatalf("got seq %d (%d bytes), want seq %d", m.Seq, len(m.Data), want)
		}
		received++
		if received%50000 == 0 {
			// Stop reading for a while: a lossy reader would be lapped many
			// times over (the producer fills 64 KiB in microseconds); a
			// registered one holds the producer back instead.
			time.Sleep(200 * time.Millisecond)
		}
	}
	if _, err := r.Read(ctx, nil); !errors.Is(err, shmcast.ErrProducerGone) {
		t.Fatalf("the loop ended with %d messages, and then: %v", received, err)
	}
	if received != total {
		t.Fatalf("received %d of %d", received, total)
	}
	if err := <-done; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	if err := tail.Wait(); err != nil {
		t.Fatalf("shmcast-tail: %v: %s", err, tailErr.Bytes())
	}
	// It ends with the producer, and says so (docs/CLI.md).
	const gone = "shmcast-tail: the producer has exited; no more messages will arrive\n"
	if want := fmt.Sprintf("received=%d lagged=0 corrupt=0\n", total); tailOut.String() != want || tailErr.String() != gone {
		t.Fatalf("shmcast-tail: stdout %q (want %q), stderr %q", tailOut.String(), want, tailErr.String())
	}

	// The producer saw two readers and cut none loose. This Reader is
	// still registered (until Close); the tail has unregistered.
	if info, ok := inspect(t, bin, name); !ok || !info.Lossless || info.Evictions != 0 || len(info.Readers) != 1 {
		t.Fatalf("inspect: %+v", info)
	}
	r.Close()
	if info, ok := inspect(t, bin, name); !ok || len(info.Readers) != 0 {
		t.Fatalf("inspect after Close: %+v", info)
	}
}

// TestInteropLosslessEviction: a registered Go reader that stops reading
// for longer than the producer's --max-block is evicted by the Rust
// producer: it gets ErrEvicted once, gives its slot back, and reads on as
// a lossy reader, told exactly what it lost (received + missed ==
// published).
func TestInteropLosslessEviction(t *testing.T) {
	const total = 50000
	_, _, done, r := startLossless(t, "evict", total, 1, "0.2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var received, missed, evictions uint64
	for m, err := range r.Messages(ctx) {
		var lag *shmcast.LaggedError
		switch {
		case errors.Is(err, shmcast.ErrEvicted):
			evictions++
			if _, ok := r.Slot(); ok {
				t.Fatal("still registered after ErrEvicted")
			}
			continue
		case errors.As(err, &lag):
			if evictions == 0 {
				t.Fatal("lapped while registered, before the eviction was reported")
			}
			missed += lag.Missed
			continue
		case err != nil:
			t.Fatalf("after %d messages: %v", received, err)
		}
		if m.Seq != received+missed+1 || !shmcast.VerifyPattern(m.Seq, m.Data) {
			t.Fatalf("got seq %d (%d bytes) after %d received, %d missed", m.Seq, len(m.Data), received, missed)
		}
		received++
		if received == 1000 {
			time.Sleep(time.Second) // five times --max-block
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	if evictions != 1 || missed == 0 || received+missed != total {
		t.Fatalf("evicted %d times; received %d + missed %d of %d", evictions, received, missed, total)
	}
	t.Logf("received %d, missed %d after the eviction", received, missed)
}

// TestInteropLosslessKilledReader: a registered reader process that is
// stopped while it holds the producer back and then killed (kill -9) does
// not hold the Rust producer for ever, even without --max-block: the kernel
// releases its slot lock, the producer frees the slot, and the other
// registered Go reader still receives every message.
func TestInteropLosslessKilledReader(t *testing.T) {
	const total = 20000
	bin, name, done, r := startLossless(t, "killed", total, 2, "never")
	goTail := buildGoTail(t)
	tail := exec.Command(goTail, name, "--lossless", "--from", "beginning", "--verify")
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tail.Process.Kill(); tail.Wait() })
	// Once the tail has registered, stop it: the producer, held back by
	// this reader (which has not read yet), cannot have published more
	// than a ring, and the tail holds it back from then on.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if info, ok := inspect(t, bin, name); ok && len(info.Readers) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tail did not register")
		}
	}
	tail.Process.Signal(syscall.SIGSTOP)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var received uint64
	killed := false
	for m, err := range r.Messages(ctx) {
		if err != nil {
			t.Fatalf("after %d messages: %v", received, err)
		}
		if m.Seq != received+1 || !shmcast.VerifyPattern(m.Seq, m.Data) {
			t.Fatalf("got seq %d, want %d", m.Seq, received+1)
		}
		received++
		if !killed && received == 10 {
			time.Sleep(200 * time.Millisecond) // the producer is surely held back now
			tail.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	if received != total {
		t.Fatalf("received %d of %d", received, total)
	}
	if info, ok := inspect(t, bin, name); !ok || info.Evictions != 1 {
		t.Fatalf("inspect: %+v, want one reclaimed reader", info)
	}
}
