package shmcast_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
)

// tailProc is a reader process (`shmcast tail` or the Go shmcast-tail)
// running in the background.
type tailProc struct {
	label          string
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

// startTail starts bin with args; it is killed when the test ends unless
// it has been waited for.
func startTail(t *testing.T, label, bin string, args ...string) *tailProc {
	t.Helper()
	p := &tailProc{label: label, cmd: exec.Command(bin, args...)}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

// TestInteropLosslessMixed: one Rust producer publishes 200 000 messages
// of 0 to 1000 bytes through a 64 KiB lossless ring (--max-block never),
// once five readers have registered: three Rust `shmcast tail --lossless
// --verify` processes (waiting with spin, block and backoff), the Go
// shmcast-tail --lossless --verify, and a Go Reader in this process opened
// WithLossless. Beside them read two lossy readers, a Rust tail and a Go
// Reader. Every registered reader must receive all 200 000 messages, in
// order, intact, with no lap; each lossy one must account for every
// message (received + lagged == 200 000) with none corrupt. At the end
// `shmcast inspect --json` must show no eviction and no registered reader
// left.
func TestInteropLosslessMixed(t *testing.T) {
	const total = 200000
	bin := shmcastBin(t)
	goTail := buildGoTail(t)
	name := segmentName(t, "mixed")
	done := startPublisher(t, bin, name, "--lossless", "--capacity", "64K", "--count", strconv.Itoa(total),
		"--size", "0-1000", "--wait-readers", "5", "--max-block", "never")

	// The in-process readers open first: nothing is published until the
	// last of the five registered readers has registered.
	lossy := openWhenReady(t, name, shmcast.WithStart(shmcast.Beginning))
	registered := openWhenReady(t, name, shmcast.WithLossless(), shmcast.WithStart(shmcast.Beginning))
	if slot, ok := registered.Slot(); !ok {
		t.Fatalf("not registered (slot %d)", slot)
	}
	tailArgs := []string{name, "--from", "beginning", "--verify", "--count", strconv.Itoa(total), "--timeout", "20"}
	rustTail := func(extra ...string) []string { return append(append([]string{"tail"}, tailArgs...), extra...) }
	lossyTail := startTail(t, "rust lossy", bin, rustTail()...)
	tails := []*tailProc{
		startTail(t, "rust spin", bin, rustTail("--lossless", "--wait", "spin")...),
		startTail(t, "rust block", bin, rustTail("--lossless", "--wait", "block")...),
		startTail(t, "rust backoff", bin, rustTail("--lossless", "--wait", "backoff")...),
		startTail(t, "go shmcast-tail", goTail, append(tailArgs, "--lossless")...),
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		label                     string
		received, lagged, corrupt uint64
		err                       error
	}
	results := make(chan result, 2)
	// follow reads r until it has accounted for every message, checking
	// each payload's length and pattern and that sequence numbers only
	// go up, gap-free but for the reported laps.
	follow := func(label string, r *shmcast.Reader) {
		res := result{label: label}
		for m, err := range r.Messages(ctx) {
			var lag *shmcast.LaggedError
			switch {
			case errors.As(err, &lag):
				res.lagged += lag.Missed
			case err != nil:
				res.err = err
			case m.Seq != res.received+res.lagged+1:
				res.err = fmt.Errorf("got seq %d after %d received + %d lagged", m.Seq, res.received, res.lagged)
			default:
				res.received++
				if len(m.Data) != shmcast.PatternLen(m.Seq, 0, 1000) || !shmcast.VerifyPattern(m.Seq, m.Data) {
					res.corrupt++
				}
			}
			if res.err != nil || res.received+res.lagged >= total {
				break
			}
		}
		r.Close() // gives the slot back
		results <- res
	}
	go follow("go registered", registered)
	go follow("go lossy", lossy)

	if err := <-done; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	for range 2 {
		res := <-results
		t.Logf("%s: received %d, lagged %d, corrupt %d", res.label, res.received, res.lagged, res.corrupt)
		switch {
		case res.err != nil:
			t.Errorf("%s: after %d received + %d lagged: %v", res.label, res.received, res.lagged, res.err)
		case res.label == "go registered" && (res.received != total || res.lagged != 0 || res.corrupt != 0):
			t.Errorf("%s: received %d, lagged %d, corrupt %d; want all %d, none lagged or corrupt",
				res.label, res.received, res.lagged, res.corrupt, total)
		case res.received+res.lagged != total || res.corrupt != 0:
			t.Errorf("%s: received %d + lagged %d != %d, or %d corrupt", res.label, res.received, res.lagged, total, res.corrupt)
		}
	}
	want := fmt.Sprintf("received=%d lagged=0 corrupt=0\n", total)
	for _, p := range tails {
		if err := p.cmd.Wait(); err != nil || p.stdout.String() != want || p.stderr.Len() != 0 {
			t.Errorf("%s: %v: stdout %q (want %q), stderr %q", p.label, err, p.stdout.String(), want, p.stderr.String())
		}
	}
	var received, lagged, corrupt uint64
	err := lossyTail.cmd.Wait()
	if _, scanErr := fmt.Sscanf(lossyTail.stdout.String(), "received=%d lagged=%d corrupt=%d\n", &received, &lagged, &corrupt); err != nil ||
		scanErr != nil || received+lagged != total || corrupt != 0 {
		t.Errorf("%s: %v: stdout %q, stderr %q", lossyTail.label, err, lossyTail.stdout.String(), lossyTail.stderr.String())
	}
	t.Logf("%s: received %d, lagged %d", lossyTail.label, received, lagged)

	// Nobody was evicted, and every registered reader has given its slot
	// back (the processes on exit, the in-process one on Close).
	if info, ok := inspect(t, bin, name); !ok || !info.Lossless || info.Evictions != 0 || len(info.Readers) != 0 {
		t.Fatalf("inspect: %+v, want lossless, no eviction, no registered reader", info)
	}
	if out, err := exec.Command(bin, "inspect", name, "--json").Output(); err != nil || !bytes.Contains(out, []byte(`"evictions":0`)) {
		t.Fatalf("inspect --json: %v: %s", err, out)
	}
}
