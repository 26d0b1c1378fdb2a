package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

func segment(t *testing.T, capacity uint64) (*segtest.Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seg")
	w, unmap, err := segtest.Create(path, capacity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unmap)
	return w, path
}

func runReader(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

var (
	latencyLine    = regexp.MustCompile(`^\{"received":\d+,"lagged":\d+,"p50_ns":-?\d+,"p99_ns":-?\d+,"p999_ns":-?\d+,"max_ns":-?\d+\}\n$`)
	throughputLine = regexp.MustCompile(`^\{"received":\d+,"lagged":\d+,"msgs_per_s":\d+\.\d,"bytes_per_s":\d+\.\d,"checksum":\d+\}\n$`)
)

type result struct {
	Received  uint64  `json:"received"`
	Lagged    uint64  `json:"lagged"`
	P50       int64   `json:"p50_ns"`
	P99       int64   `json:"p99_ns"`
	P999      int64   `json:"p999_ns"`
	Max       int64   `json:"max_ns"`
	MsgsPerS  float64 `json:"msgs_per_s"`
	BytesPerS float64 `json:"bytes_per_s"`
	Checksum  uint64  `json:"checksum"`
}

// parse checks that out is exactly one JSON line of the mode's shape, with
// the keys in the contract's order, and decodes it.
func parse(t *testing.T, mode, out string) result {
	t.Helper()
	shape := throughputLine
	if mode == "latency" {
		shape = latencyLine
	}
	if !shape.MatchString(out) {
		t.Fatalf("%s output %q does not have the expected shape %v", mode, out, shape)
	}
	var r result
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	return r
}

// wantSum is the throughput checksum of p, computed byte by byte (an
// independent formulation of "sum of the little-endian words plus the tail
// bytes").
func wantSum(p []byte) uint64 {
	var s uint64
	full := len(p) &^ 7
	for i, b := range p {
		if i < full {
			s += uint64(b) << (8 * (i % 8))
		} else {
			s += uint64(b)
		}
	}
	return s
}

// stamped is a latency-mode message: the current CLOCK_REALTIME in its
// first 8 bytes, then filler.
func stamped(n int) []byte {
	p := make([]byte, n)
	binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	for i := 8; i < n; i++ {
		p[i] = byte(i)
	}
	return p
}

func TestThroughput(t *testing.T) {
	w, path := segment(t, 1<<16)
	var sum, total uint64
	for i := range 50 {
		n := i*37 + i%8 // lengths with and without a tail shorter than a word
		seq, _ := w.PublishPattern(n)
		sum += wantSum(segtest.Pattern(seq, n))
		total += uint64(n)
	}
	code, out, errOut := runReader(path, "--mode", "throughput", "--count", "50", "--timeout", "1")
	if code != 0 || errOut != "" {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	r := parse(t, "throughput", out)
	if r.Received != 50 || r.Lagged != 0 || r.Checksum != sum || r.MsgsPerS <= 0 || r.BytesPerS <= 0 {
		t.Fatalf("got %+v, want 50 received, 0 lagged, checksum %d, positive rates", r, sum)
	}
	if ratio := r.BytesPerS / r.MsgsPerS; ratio < float64(total)/50*0.99 || ratio > float64(total)/50*1.01 {
		t.Fatalf("bytes_per_s / msgs_per_s = %f, want the mean length %f", ratio, float64(total)/50)
	}
}

// TestWaitStrategies: with every --wait, a reader that has to wait for a
// producer publishing in spells, pausing in between, prints the same
// counts and checksum.
func TestWaitStrategies(t *testing.T) {
	for _, wait := range []string{"spin", "yield", "backoff", "block"} {
		w, path := segment(t, 1<<16)
		var sum uint64
		var sums []uint64
		for i := range 60 {
			sums = append(sums, wantSum(segtest.Pattern(uint64(i+1), 100)))
			sum += sums[i]
		}
		go func() {
			for i := range 60 {
				if i%20 == 0 {
					time.Sleep(20 * time.Millisecond) // long enough to park
				}
				w.PublishPattern(100)
			}
		}()
		code, out, errOut := runReader(path, "--mode", "throughput", "--count", "60", "--timeout", "10", "--wait", wait)
		if code != 0 || errOut != "" {
			t.Fatalf("--wait %s: code %d, stderr %q", wait, code, errOut)
		}
		if r := parse(t, "throughput", out); r.Received != 60 || r.Lagged != 0 || r.Checksum != sum {
			t.Fatalf("--wait %s: got %+v, want 60 received, checksum %d", wait, r, sum)
		}
		if wait == "block" && w.Wakes() == 0 {
			t.Errorf("--wait block: the reader was never woken from a park")
		}
	}
}

func TestLaggedCounts(t *testing.T) {
	w, path := segment(t, 4096)
	sums := map[uint64]uint64{}
	for range 100 {
		seq, _ := w.PublishPattern(300)
		sums[seq] = wantSum(segtest.Pattern(seq, 300))
	}
	code, out, errOut := runReader("--mode=throughput", "--count=100", path)
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	r := parse(t, "throughput", out)
	// Reading from Beginning: the first read reports everything overwritten,
	// then every retained message (the last `received` ones) is delivered.
	var want uint64
	for seq := r.Lagged + 1; seq <= 100; seq++ {
		want += sums[seq]
	}
	if r.Lagged == 0 || r.Received+r.Lagged != 100 || r.Checksum != want {
		t.Fatalf("got %+v, want lagged > 0, received + lagged = 100, checksum %d", r, want)
	}
}

// TestLossless: with --lossless the reader registers in a reader slot of a
// lossless segment, so a producer that publishes far more than the ring
// holds, as fast as the gate lets it, never laps it: every message
// arrives, and the slot is given back at the end. (Whether the producer
// had to wait here depends on the goroutines' pace; TestBinaryLossless
// stops the reader to make it wait.)
func TestLossless(t *testing.T) {
	for _, wait := range []string{"spin", "block"} {
		path := filepath.Join(t.TempDir(), "seg")
		w, unmap, err := segtest.CreateLossless(path, 4096, 2)
		if err != nil {
			t.Fatal(err)
		}
		const count, size = 400, 300 // 30 laps of a 4 KiB ring
		type outcome struct {
			code           int
			stdout, stderr string
		}
		done := make(chan outcome, 1)
		go func() {
			code, out, errOut := runReader(path, "--mode", "throughput", "--count", strconv.Itoa(count),
				"--timeout", "10", "--wait", wait, "--lossless")
			done <- outcome{code, out, errOut}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for w.Slot(0).State != segtest.Active {
			if time.Now().After(deadline) {
				t.Fatalf("--wait %s: the reader did not register", wait)
			}
			time.Sleep(time.Millisecond)
		}
		var sum uint64
		for range count {
			seq, _, err := w.PublishPatternWait(size, time.Millisecond, 10*time.Second)
			if err != nil {
				t.Fatalf("--wait %s: %v", wait, err)
			}
			sum += wantSum(segtest.Pattern(seq, size))
		}
		o := <-done
		slot := w.Slot(0)
		unmap()
		if o.code != 0 || o.stderr != "" {
			t.Fatalf("--wait %s: code %d, stderr %q", wait, o.code, o.stderr)
		}
		if r := parse(t, "throughput", o.stdout); r.Received != count || r.Lagged != 0 || r.Checksum != sum {
			t.Fatalf("--wait %s: got %+v, want %d received, 0 lagged, checksum %d", wait, r, count, sum)
		}
		if slot.State != segtest.Free {
			t.Errorf("--wait %s: slot 0 is %+v after the reader closed, want it free", wait, slot)
		}
	}
}

func TestLatency(t *testing.T) {
	w, path := segment(t, 1<<16)
	for range 20 {
		w.Publish(stamped(64))
	}
	code, out, errOut := runReader(path, "--mode", "latency", "--count", "20")
	if code != 0 || errOut != "" {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	r := parse(t, "latency", out)
	if r.Received != 20 || r.Lagged != 0 || !(0 < r.P50 && r.P50 <= r.P99 && r.P99 <= r.P999 && r.P999 <= r.Max) || r.Max > int64(time.Minute) {
		t.Fatalf("got %+v", r)
	}
}

func TestPercentile(t *testing.T) {
	s := make([]int64, 1000)
	for i := range s {
		s[i] = int64(i + 1)
	}
	for _, c := range []struct {
		q    float64
		want int64
	}{{0.5, 500}, {0.99, 990}, {0.999, 999}, {1, 1000}} {
		if got := percentile(s, c.q); got != c.want {
			t.Errorf("percentile(1..1000, %v) = %d, want %d", c.q, got, c.want)
		}
	}
	if percentile([]int64{7}, 0.999) != 7 || percentile(nil, 0.5) != 0 {
		t.Error("percentile of one sample or none")
	}
}

// TestWaitsForSegment starts the reader before the segment exists; the
// segment is then created and filled while the reader spins on it.
func TestWaitsForSegment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	type res struct {
		code        int
		out, errOut string
	}
	done := make(chan res, 1)
	go func() {
		code, out, errOut := runReader(path, "--mode", "throughput", "--count", "1000", "--timeout", "10")
		done <- res{code, out, errOut}
	}()
	time.Sleep(50 * time.Millisecond)
	w, unmap, err := segtest.Create(path, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	var sum uint64
	for range 1000 {
		seq, _ := w.PublishPattern(64)
		sum += wantSum(segtest.Pattern(seq, 64))
	}
	got := <-done
	if got.code != 0 {
		t.Fatalf("code %d, stderr %q", got.code, got.errOut)
	}
	r := parse(t, "throughput", got.out)
	if r.Received+r.Lagged != 1000 || (r.Lagged == 0 && r.Checksum != sum) {
		t.Fatalf("got %+v, want received + lagged = 1000 (checksum %d if nothing lagged)", r, sum)
	}
}

func TestErrors(t *testing.T) {
	w, path := segment(t, 4096)
	w.PublishPattern(4)
	w.PublishPattern(16)
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, append([]byte("NOTSHMCA"), make([]byte, 8192+4096-8)...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{}, 2, "exactly one segment NAME"},
		{[]string{"a", "b", "--mode", "latency", "--count", "1"}, 2, "exactly one"},
		{[]string{"x", "--count", "1"}, 2, "--mode is required"},
		{[]string{"x", "--mode", "fast", "--count", "1"}, 2, "invalid --mode"},
		{[]string{"x", "--mode", "latency"}, 2, "--count is required"},
		{[]string{"x", "--mode", "latency", "--count", "0"}, 2, "invalid --count"},
		{[]string{"x", "--mode", "latency", "--count", "-3"}, 2, "invalid --count"},
		{[]string{"x", "--mode", "latency", "--count", "1", "--cpu", "-1"}, 2, "invalid --cpu"},
		{[]string{"x", "--mode", "latency", "--count", "1", "--cpu", "1024"}, 2, "invalid --cpu"},
		{[]string{"x", "--mode", "latency", "--count", "1", "--timeout", "soon"}, 2, "invalid --timeout"},
		{[]string{"x", "--mode", "latency", "--count", "1", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"x", "--mode", "latency", "--count", "1", "--wait", "sleep"}, 2, "invalid --wait"},
		{[]string{"x", "--mode", "latency", "--count", "1", "--lossless=maybe"}, 2, "invalid boolean value"},
		// --lossless needs a lossless segment: no falling back to reading lossy.
		{[]string{path, "--mode", "throughput", "--count", "2", "--lossless"}, 1, "it is not a lossless segment"},
		{[]string{"./no/such/segment", "--mode", "latency", "--count", "1", "--timeout", "0.05"}, 1, "timed out after 50ms waiting for the segment"},
		{[]string{bad, "--mode", "throughput", "--count", "1", "--timeout", "5"}, 1, "bad magic"},
		// Two messages, then nothing: the idle timeout ends the run.
		{[]string{path, "--mode", "throughput", "--count", "3", "--timeout", "0.05"}, 1, "timed out after 50ms without a message, with 2 of 3 messages"},
		{[]string{path, "--mode", "throughput", "--count", "3", "--timeout", "0.05", "--wait", "block"}, 1, "timed out after 50ms without a message, with 2 of 3 messages"},
		// Latency mode needs the 8-byte timestamp.
		{[]string{path, "--mode", "latency", "--count", "2"}, 1, "too short for the 8-byte timestamp"},
	} {
		code, out, errOut := runReader(c.args...)
		if code != c.code || out != "" || !strings.HasPrefix(errOut, prog+": error: ") || !strings.Contains(errOut, c.msg) {
			t.Errorf("%q: code %d (want %d), stdout %q, stderr %q (want %q)", c.args, code, c.code, out, errOut, c.msg)
		}
		if lines := strings.Count(errOut, "\n"); lines != c.code { // the error, then the usage line for a usage error
			t.Errorf("%q: stderr has %d lines, want %d: %q", c.args, lines, c.code, errOut)
		}
	}
}

// TestBinary builds the command and runs it as a separate process, pinned
// to CPU 0, in both modes, against segments written by the test writer
// after the process has started.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the command")
	}
	bin := filepath.Join(t.TempDir(), prog)
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("lossless", func(t *testing.T) { binaryLossless(t, bin) })
	for _, mode := range []string{"latency", "throughput"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seg")
			const count = 2000
			cmd := exec.Command(bin, path, "--mode", mode, "--count", strconv.Itoa(count), "--cpu", "0", "--timeout", "20")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // usually before the segment exists
			w, unmap, err := segtest.Create(path, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer unmap()
			var sum uint64
			for i := range count {
				p := stamped(64 + i%100)
				w.Publish(p)
				sum += wantSum(p)
				if i%100 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%v, stderr %q", err, stderr.String())
			}
			// Nothing but, where CPU 0 is outside this process's cpuset, the
			// pinning warning.
			if e := stderr.String(); e != "" && !strings.HasPrefix(e, prog+": warning: cannot pin to CPU 0") {
				t.Errorf("stderr %q", e)
			}
			r := parse(t, mode, stdout.String())
			// A 1 MiB ring holds all 2000 messages: nothing can be lost.
			if r.Received != count || r.Lagged != 0 {
				t.Fatalf("got %+v, want %d received, 0 lagged", r, count)
			}
			if mode == "latency" && !(0 < r.P50 && r.P50 <= r.P99 && r.P99 <= r.P999 && r.P999 <= r.Max && r.Max < int64(20*time.Second)) {
				t.Fatalf("percentiles %+v", r)
			}
			if mode == "throughput" && (r.Checksum != sum || r.MsgsPerS <= 0 || r.BytesPerS <= 0) {
				t.Fatalf("got %+v, want checksum %d and positive rates", r, sum)
			}
		})
	}
}

// binaryLossless runs the built command with --lossless against a lossless
// segment and stops it (SIGSTOP) once it has registered: the producer must
// then be held back within one ring, and once the reader goes on
// (SIGCONT) every message arrives.
func binaryLossless(t *testing.T, bin string) {
	path := filepath.Join(t.TempDir(), "seg")
	w, unmap, err := segtest.CreateLossless(path, 1<<14, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	const count, size = 2000, 200 // about 26 laps of a 16 KiB ring
	cmd := exec.Command(bin, path, "--mode", "throughput", "--count", strconv.Itoa(count), "--timeout", "20", "--lossless")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // a no-op once it has exited
	deadline := time.Now().Add(20 * time.Second)
	for w.Slot(0).State != segtest.Active {
		if time.Now().After(deadline) {
			t.Fatalf("the reader did not register; stderr %q", stderr.String())
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal is delivered asynchronously: wait until the reader is stopped.
	stat := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat"
	for {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		// "PID (COMM) STATE ...": the state follows the last ')'.
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) > 0 && f[0] == "T" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reader did not stop: %q", b)
		}
		time.Sleep(time.Millisecond)
	}
	var sum uint64
	published := 0
	for ; published < count; published++ {
		p := segtest.Pattern(w.NextSeq(), size)
		if _, _, ok := w.TryPublish(p); !ok {
			break
		}
		sum += wantSum(p)
	}
	if published == count || uint64(published*size) > 2*w.Capacity {
		t.Fatalf("a stopped registered reader let the producer publish %d messages of %d bytes into a %d-byte ring", published, size, w.Capacity)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for ; published < count; published++ {
		seq, _, err := w.PublishPatternWait(size, time.Millisecond, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		sum += wantSum(segtest.Pattern(seq, size))
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v, stderr %q", err, stderr.String())
	}
	if e := stderr.String(); e != "" {
		t.Errorf("stderr %q", e)
	}
	if r := parse(t, "throughput", stdout.String()); r.Received != count || r.Lagged != 0 || r.Checksum != sum {
		t.Fatalf("got %+v, want %d received, 0 lagged, checksum %d", r, count, sum)
	}
	if s := w.Slot(0); s.State != segtest.Free {
		t.Errorf("slot 0 is %+v after the reader exited, want it free", s)
	}
}
