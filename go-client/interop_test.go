package shmcast_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
)

// Live interop with the Rust CLI, whose path is in SHMCAST_BIN (CI sets it
// after building the crate). See README.md, "Testing".

func shmcastBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("SHMCAST_BIN")
	if bin == "" {
		t.Skip("SHMCAST_BIN not set: build the Rust CLI and point SHMCAST_BIN at it to run the interop tests")
	}
	return bin
}

// segmentName returns a fresh shared-memory name and removes the segment
// when the test ends (the publisher runs with --keep).
func segmentName(t *testing.T, tag string) string {
	name := fmt.Sprintf("shmcast-go-test-%d-%s", os.Getpid(), tag)
	path := filepath.Join(shmcast.ShmDir, name)
	os.Remove(path)
	t.Cleanup(func() { os.Remove(path) })
	return name
}

// startPublisher runs `shmcast publish NAME --keep ...` and returns a channel
// that receives its exit error.
func startPublisher(t *testing.T, bin, name string, args ...string) <-chan error {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"publish", name, "--keep"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%v: %v: %s", cmd.Args, err, stderr.Bytes())
		}
		done <- err
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	return done
}

// openWhenReady polls Open while the publisher is still creating the segment.
func openWhenReady(t *testing.T, name string, opts ...shmcast.Option) *shmcast.Reader {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := shmcast.Open(name, opts...)
		if err == nil {
			t.Cleanup(func() { r.Close() })
			return r
		}
		transient := errors.Is(err, os.ErrNotExist) || errors.Is(err, shmcast.ErrNotInitialized) ||
			errors.Is(err, shmcast.ErrTruncated)
		if !transient || time.Now().After(deadline) {
			t.Fatalf("open %s: %v", name, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestInteropLiveReaders has Go readers of every form follow a live Rust
// publisher on a 64 KiB ring: every delivered payload must match the
// generated pattern and length, received + missed must equal the number
// published, and the deliberately slow reader must be lapped.
func TestInteropLiveReaders(t *testing.T) {
	bin := shmcastBin(t)
	const published = 5000
	name := segmentName(t, "live")
	done := startPublisher(t, bin, name, "--capacity", "64K", "--count", strconv.Itoa(published),
		"--size", "1-1000", "--rate", "20000")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		name             string
		received, missed uint64
		err              error
	}
	results := make(chan result, 4)
	checkMsg := func(seq uint64, p []byte) error {
		if want := shmcast.PatternLen(seq, 1, 1000); len(p) != want || !shmcast.VerifyPattern(seq, p) {
			return fmt.Errorf("seq %d: payload of %d bytes (want %d) does not match the pattern", seq, len(p), want)
		}
		return nil
	}
	follow := func(label string, step func(r *shmcast.Reader, res *result) error) {
		r := openWhenReady(t, name, shmcast.WithStart(shmcast.Beginning), shmcast.WithPollInterval(200*time.Microsecond))
		go func() {
			res := result{name: label}
			for r.NextSeq() <= published && res.err == nil {
				err := step(r, &res)
				var lag *shmcast.LaggedError
				if errors.As(err, &lag) {
					res.missed += lag.Missed
					err = nil
				}
				res.err = err
			}
			results <- res
		}()
	}
	buf := make([]byte, 1000)
	follow("Read", func(r *shmcast.Reader, res *result) error {
		m, err := r.Read(ctx, buf)
		if err == nil {
			res.received++
			err = checkMsg(m.Seq, m.Data)
		}
		return err
	})
	follow("ReadFunc", func(r *shmcast.Reader, res *result) error {
		var cbErr error
		err := r.ReadFunc(ctx, func(seq uint64, p []byte) { cbErr = checkMsg(seq, p) })
		if err == nil {
			res.received++
			err = cbErr // only trusted when the read succeeded
		}
		return err
	})
	slowBuf := make([]byte, 1000)
	follow("slow", func(r *shmcast.Reader, res *result) error {
		m, err := r.Read(ctx, slowBuf)
		if err == nil {
			res.received++
			err = checkMsg(m.Seq, m.Data)
			time.Sleep(time.Millisecond)
		}
		return err
	})
	iterReader := openWhenReady(t, name, shmcast.WithStart(shmcast.Beginning))
	go func() {
		res := result{name: "Messages"}
		for m, err := range iterReader.Messages(ctx) {
			var lag *shmcast.LaggedError
			switch {
			case errors.As(err, &lag):
				res.missed += lag.Missed
			case err != nil:
				res.err = err
			default:
				res.received++
				res.err = checkMsg(m.Seq, m.Data)
			}
			if res.err != nil || iterReader.NextSeq() > published {
				break
			}
		}
		results <- res
	}()

	if err := <-done; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	for range 4 {
		res := <-results
		t.Logf("%s: received %d, missed %d", res.name, res.received, res.missed)
		if res.err != nil {
			t.Errorf("%s: %v", res.name, res.err)
		} else if res.received+res.missed != published {
			t.Errorf("%s: received %d + missed %d != published %d", res.name, res.received, res.missed, published)
		}
		if res.name == "slow" && res.missed == 0 {
			t.Errorf("slow reader was never lapped")
		}
	}
}

// TestInteropBlockingReaders has Go readers with the default WaitBlock
// follow a paced Rust publisher, so they park between messages and depend on
// the producer's FUTEX_WAKE (LAYOUT.md "Waiting and waking", step 9).
// Every payload must match the pattern, received + missed must equal the
// number published, the parkable readers must be able to park, and the
// producer must have woken them (wake_seq advanced). A forced read-only
// reader, which cannot park, must keep up too.
func TestInteropBlockingReaders(t *testing.T) {
	bin := shmcastBin(t)
	const published = 2000
	name := segmentName(t, "block")
	done := startPublisher(t, bin, name, "--capacity", "64K", "--count", strconv.Itoa(published),
		"--size", "1-1000", "--rate", "4000")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		name                      string
		received, missed, corrupt uint64
		err                       error
	}
	results := make(chan result, 4)
	follow := func(label string, opts ...shmcast.Option) {
		r := openWhenReady(t, name, append([]shmcast.Option{shmcast.WithStart(shmcast.Beginning)}, opts...)...)
		if want := len(opts) == 0; r.CanPark() != want {
			t.Errorf("%s: CanPark() = %v, want %v", label, r.CanPark(), want)
		}
		go func() {
			res := result{name: label}
			buf := make([]byte, r.MaxPayload())
			for r.NextSeq() <= published {
				m, err := r.Read(ctx, buf)
				var lag *shmcast.LaggedError
				switch {
				case errors.As(err, &lag):
					res.missed += lag.Missed
				case err != nil:
					res.err = err
				default:
					res.received++
					if len(m.Data) != shmcast.PatternLen(m.Seq, 1, 1000) || !shmcast.VerifyPattern(m.Seq, m.Data) {
						res.corrupt++
					}
				}
				if res.err != nil {
					break
				}
			}
			results <- res
		}()
	}
	for _, label := range []string{"block-1", "block-2", "block-3"} {
		follow(label)
	}
	follow("read-only", shmcast.WithReadOnly())

	if err := <-done; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	for range 4 {
		res := <-results
		t.Logf("%s: received %d, missed %d, corrupt %d", res.name, res.received, res.missed, res.corrupt)
		if res.err != nil {
			t.Errorf("%s: %v", res.name, res.err)
		} else if res.received+res.missed != published || res.corrupt != 0 {
			t.Errorf("%s: received %d + missed %d != published %d, or %d corrupt",
				res.name, res.received, res.missed, published, res.corrupt)
		}
	}
	f, err := os.Open(filepath.Join(shmcast.ShmDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var words [8]byte
	if _, err := f.ReadAt(words[:], 0x1000); err != nil {
		t.Fatal(err)
	}
	wakeSeq := uint32(words[0]) | uint32(words[1])<<8 | uint32(words[2])<<16 | uint32(words[3])<<24
	t.Logf("wake_seq after the run: %d (FUTEX_WAKE calls by the Rust producer)", wakeSeq)
	if wakeSeq == 0 {
		t.Error("the Rust producer never woke the parked Go readers (wake_seq is still 0)")
	}
}

// TestInteropTailDiff runs `shmcast tail` and the Go shmcast-tail on the same
// (finished) segment and requires byte-identical output and exit status.
func TestInteropTailDiff(t *testing.T) {
	bin := shmcastBin(t)
	goTail := buildGoTail(t)
	name := segmentName(t, "diff")
	if err := <-startPublisher(t, bin, name, "--capacity", "64K", "--count", "3000", "--size", "1-1000"); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	for _, args := range [][]string{
		{"--from", "oldest", "--json", "--timeout", "0.2"},
		{"--from", "beginning", "--json", "--timeout", "0.2"},
		{"--from", "newest", "--json", "--timeout", "0.2"},
		{"--from", "next", "--json", "--timeout", "0.2"},
		{"--from", "beginning", "--verify", "--timeout", "0.2"},
		{"--from", "beginning", "--json", "--verify", "--timeout", "0.2"},
		{"--from", "oldest", "--json", "--count", "7"},
		{"--from", "beginning", "--json", "--timeout", "0.2", "--wait", "spin"},
		{"--from", "oldest", "--verify", "--timeout", "0.1", "--wait", "backoff"},
		{"--from", "beginning", "--json", "--timeout", "0.1", "--wait", "yield"},
		{"--from", "oldest", "--json", "--timeout", "0.1", "--wait", "block"},
		// No --timeout: the producer has exited, so both end by themselves
		// (status 0), or with status 1 when --count is not reached.
		{"--from", "beginning", "--verify"},
		{"--from", "oldest", "--json", "--wait", "spin"},
		{"--from", "beginning", "--verify", "--count", "100000"},
		{"--from", "oldest", "--json", "--count", "100000", "--wait", "backoff"},
		{"--from", "beginning", "--json", "--count", "3000", "--timeout", "5"},
	} {
		rust, rustErr, rustCode := runCmdErr(t, bin, append([]string{"tail", name}, args...)...)
		gout, goErr, goCode := runCmdErr(t, goTail, append([]string{name}, args...)...)
		if rustCode != goCode || !bytes.Equal(rust, gout) {
			t.Errorf("%v: shmcast tail (status %d, %d bytes) and shmcast-tail (status %d, %d bytes) differ\n%s",
				args, rustCode, len(rust), goCode, len(gout), firstDiff(rust, gout))
		}
		// The producer's exit before --count: the same message after the
		// program's name.
		if bytes.Contains(rustErr, []byte("producer has exited")) || bytes.Contains(goErr, []byte("producer has exited")) {
			r := bytes.TrimPrefix(rustErr, []byte("shmcast: "))
			g := bytes.TrimPrefix(goErr, []byte("shmcast-tail: "))
			if !bytes.Equal(r, g) {
				t.Errorf("%v: standard error differs:\n  rust: %s  go:   %s", args, rustErr, goErr)
			}
		}
		if len(rust) == 0 && args[1] != "next" {
			t.Errorf("%v: no output", args)
		}
	}
}

// buildGoTail builds cmd/shmcast-tail into a temporary directory.
func buildGoTail(t *testing.T) string {
	t.Helper()
	goTail := filepath.Join(t.TempDir(), "shmcast-tail")
	if out, err := exec.Command("go", "build", "-o", goTail, "./cmd/shmcast-tail").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return goTail
}

func runCmdErr(t *testing.T, bin string, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return o.Bytes(), e.Bytes(), cmd.ProcessState.ExitCode()
}

func firstDiff(a, b []byte) string {
	al, bl := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y []byte
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if !bytes.Equal(x, y) {
			return fmt.Sprintf("line %d:\n  rust: %.200s\n  go:   %.200s", i+1, x, y)
		}
	}
	return "(same lines)"
}
